"""Claims on Idempotency-Keys on both databases, through the real audit writer: the claim commits with its
attempt's write-ahead entries or not at all (not once the key is answered), an abandoned claim is taken over
only as it was seen, and a later commit of the attempt writes only while it holds the claim within its lease;
the outcome's commit gives the claim up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit.errors import AuditWriteError
from audit.log import AuditLog, CheckpointPolicy, Receipt
from audit.tables import audit_entries
from audit.writer import AsyncAuditWriter
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.db.engine import make_engine
from gateway.exchange import repository
from gateway.exchange.service import CLAIM_ABANDONED_AFTER
from gateway.exchange.tables import exchange_claims, exchanges
from gateway.settings import Settings
from tests.audit_support import log_signer, make_event
from tests.statements import statements_run

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=2)


def _claim(exchange_id: str, key: str = "key-0001") -> repository.Claim:
    return repository.Claim("gemeente-amsterdam-vth", key, exchange_id, "f" * 64, NOW)


def _outcome(exchange_id: str, key: str = "key-0001") -> Callable[[list[Receipt]], dict[str, Any]]:
    def build(receipts: list[Receipt]) -> dict[str, Any]:
        return {"id": exchange_id, "kind": "exchange", "created_at": NOW, "requester_org": "gemeente-amsterdam",
                "requester_system": "gemeente-amsterdam-vth", "partnership": "p", "purpose": "q",
                "case_reference": "C-1", "register_version": "r", "policy_version": "v", "request_sha256": "f" * 64,
                "idempotency_key": key, "outcome": {"first_index": receipts[0].index}}
    return build


def _rows(engine: Engine) -> tuple[list[str], int, int]:
    with engine.connect() as connection:
        return (list(connection.execute(select(exchange_claims.c.exchange_id)).scalars()),
                int(connection.execute(select(func.count()).select_from(exchanges)).scalar_one()),
                int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one()))


async def test_one_claim_per_key_and_only_the_holder_of_the_claim_stores_the_outcome(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    async with AsyncAuditWriter(log) as writer:
        first, second = await asyncio.gather(
            writer.record([make_event(0)], repository.claim_companion(_claim("a1"), None)),
            writer.record([make_event(1)], repository.claim_companion(_claim("a2"), None)), return_exceptions=True)
        assert isinstance(first, list)
        assert isinstance(second, AuditWriteError)  # the key was claimed: nothing of the second attempt written
        assert IntegrityError in _causes(second)
        assert _rows(engine) == (["a1"], 0, 1)
        with pytest.raises(AuditWriteError) as lost:  # an attempt that does not hold the claim stores nothing
            await writer.record([make_event(2)], repository.outcome_companion(_outcome("a2"), _held("a2")))
        assert repository.ClaimLost in _causes(lost.value)
        assert _rows(engine) == (["a1"], 0, 1)
        await writer.record([make_event(3)], repository.outcome_companion(_outcome("a1"), _held("a1")))
        assert _rows(engine) == ([], 1, 2)  # outcome stored, claim given up, in one commit
        with pytest.raises(AuditWriteError) as answered:  # a late attempt that missed the claim: key answered
            await writer.record([make_event(4)], repository.claim_companion(_claim("late"), None))
        assert repository.ClaimLost in _causes(answered.value)
        assert _rows(engine) == ([], 1, 2)


async def test_an_attempt_writes_under_its_key_only_while_it_holds_the_claim_within_its_lease(
        engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    clock = [NOW]
    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], repository.claim_companion(_claim("mine"), None))
        still = repository.only_if(repository.claim_held(_claim("mine"), LEASE, lambda: clock[0], release=False))
        await writer.record([make_event(1)], still)  # e.g. disclosures before an escalation: claim kept
        assert _rows(engine) == (["mine"], 0, 2)
        clock[0] = LEASE  # the lease ran out: a retry may take the key over at any moment
        for companion in (still, repository.outcome_companion(_outcome("mine"), repository.claim_held(
                _claim("mine"), LEASE, lambda: clock[0], release=True))):
            with pytest.raises(AuditWriteError) as expired:
                await writer.record([make_event(2)], companion)
            assert repository.ClaimLost in _causes(expired.value)
        assert _rows(engine) == (["mine"], 0, 2)


async def test_an_abandoned_claim_is_taken_over_only_as_it_was_seen(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], repository.claim_companion(_claim("dead"), None))
        with pytest.raises(AuditWriteError) as late:  # it saw a claim that another taker has replaced since
            await writer.record([make_event(1)], repository.claim_companion(_claim("late"), _claim("gone")))
        assert repository.ClaimLost in _causes(late.value)
        assert _rows(engine) == (["dead"], 0, 1)
        await writer.record([make_event(2)], repository.claim_companion(_claim("taker"), _claim("dead")))
        assert _rows(engine) == (["taker"], 0, 2)


def _causes(error: BaseException) -> list[type[BaseException]]:
    """The kinds of error in ``error``'s chain of causes (the writer and the log each wrap the driver's)."""
    kinds: list[type[BaseException]] = []
    cause = error.__cause__
    while cause is not None:
        kinds.append(type(cause))
        cause = cause.__cause__
    return kinds


def _held(exchange_id: str) -> Callable[[Any], None]:
    return repository.claim_held(_claim(exchange_id), LEASE, lambda: NOW, release=True)


def test_release_leaves_a_claim_another_attempt_holds(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(exchange_claims.insert().values(
            requester_system="gemeente-amsterdam-vth", idempotency_key="key-0001", exchange_id="other",
            request_sha256="f" * 64, claimed_at=NOW))
    with Session(engine) as session, session.begin():
        repository.release_claim(session.connection(), _claim("mine"))
    assert _rows(engine)[0] == ["other"]
    with Session(engine) as session, session.begin():
        repository.release_claim(session.connection(), _claim("other"))
    assert _rows(engine)[0] == []


def test_claims_of_dead_attempts_are_removed_at_start_up_and_live_ones_stay(tmp_path: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as connection:
        for exchange_id, age in (("dead", CLAIM_ABANDONED_AFTER + timedelta(seconds=1)),
                                 ("live", CLAIM_ABANDONED_AFTER - timedelta(seconds=1))):
            connection.execute(exchange_claims.insert().values(
                requester_system="gemeente-amsterdam-vth", idempotency_key=f"key-{exchange_id}",
                exchange_id=exchange_id, request_sha256="f" * 64, claimed_at=NOW - age))
    with TestClient(create_app(Settings(data_dir=tmp_path, database_url=db_url), clock=FixedClock(NOW))) as client:
        assert client.get("/health/live").status_code == 200
        assert _rows(engine)[0] == ["live"]
    engine.dispose()


def _marked(engine: Engine) -> list[tuple[str, bool]]:
    with engine.connect() as connection:
        return [(row.exchange_id, row.answers_logged) for row in connection.execute(
            select(exchange_claims.c.exchange_id, exchange_claims.c.answers_logged))]


async def test_a_claim_whose_attempt_logged_answers_is_never_taken_over_released_or_removed(
        engine: Engine) -> None:
    """The commit of an attempt's holders' answers before an escalation marks its claim: from then on no taker
    removes it (even long past its lease), giving it up after a failure leaves it, and a gateway starting up
    keeps it; only the commit of that attempt's outcome gives it up. A claim without the mark is taken over."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    async with AsyncAuditWriter(log) as writer:
        for attempt, key in (("logged", "key-0001"), ("asked-nothing", "key-0002")):
            await writer.record([make_event(0)], repository.claim_companion(_claim(attempt, key), None))
        await writer.record([make_event(1)], repository.only_if(repository.claim_held(
            _claim("logged"), LEASE, lambda: NOW, release=False, answers_logged=True)))
        assert sorted(_marked(engine)) == [("asked-nothing", False), ("logged", True)]
        with pytest.raises(AuditWriteError) as refused:  # a retry long after the lease: not taken over
            await writer.record([make_event(2)], repository.claim_companion(_claim("taker"), _claim("logged")))
        assert repository.ClaimLost in _causes(refused.value)
        with Session(engine) as session, session.begin():
            repository.release_claim(session.connection(), _claim("logged"))
        assert repository.remove_abandoned_claims(engine, LEASE + timedelta(days=2)) == 1  # the unmarked one
        assert _marked(engine) == [("logged", True)]
        await writer.record([make_event(3)], repository.claim_companion(_claim("taker", "key-0002"), None))
        with pytest.raises(AuditWriteError) as expired:  # past its lease the attempt itself marks nothing more
            await writer.record([make_event(4)], repository.only_if(repository.claim_held(
                _claim("taker", "key-0002"), LEASE, lambda: LEASE, release=False, answers_logged=True)))
        assert repository.ClaimLost in _causes(expired.value)
        assert sorted(_marked(engine)) == [("logged", True), ("taker", False)]
        await writer.record([make_event(5)], repository.outcome_companion(_outcome("logged"), _held("logged")))
        assert _marked(engine) == [("taker", False)]  # the outcome's commit gave the marked claim up


async def test_a_retry_of_an_answered_key_is_refused_alone_in_its_batch_and_the_others_commit_once(
        engine: Engine) -> None:
    """A retry of an answered key always has its write-ahead refused (its claim's INSERT finds the answer). In a
    group commit with other attempts, only it is left out: the others' claims, the outcome and its claim's
    release commit in that one transaction, nothing of the retry is written (no second claim, no entry), and
    the retry's refusal says the key was answered (the service then answers from the store). Another attempt
    clashing with a held claim (the database's unique key) is left out the same way."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    held, go = threading.Event(), threading.Event()

    def hold(_connection: Any) -> None:
        held.set()
        go.wait(10)

    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], repository.claim_companion(_claim("answered", "key-done"), None))
        await writer.record([make_event(1)], repository.outcome_companion(_outcome("answered", "key-done"),
                                                                          _held_key("answered", "key-done")))
        await writer.record([make_event(2)], repository.claim_companion(_claim("running", "key-live"), None))
        assert _rows(engine) == (["running"], 1, 3)
        first = asyncio.ensure_future(writer.record([make_event(98)], repository.only_if(hold)))
        assert await asyncio.to_thread(held.wait, 10)
        batch = [asyncio.ensure_future(call) for call in (
            writer.record([make_event(3)], repository.claim_companion(_claim("new-1", "key-new-1"), None)),
            writer.record([make_event(4)], repository.claim_companion(_claim("retry", "key-done"), None)),
            writer.record([make_event(5)], repository.claim_companion(_claim("duplicate", "key-live"), None)),
            writer.record([make_event(6)], repository.outcome_companion(_outcome("running", "key-live"),
                                                                        _held_key("running", "key-live"))),
            writer.record([make_event(7)], repository.claim_companion(_claim("new-2", "key-new-2"), None)))]
        await asyncio.sleep(0)
        transactions = writer.stats.transactions
        go.set()
        await first
        new_1, retry, duplicate, outcome, new_2 = await asyncio.gather(*batch, return_exceptions=True)
        assert writer.stats.transactions - transactions == 2  # the holder's and the batch's: one commit for all
        assert (writer.stats.failed_transactions, writer.stats.refused_callers) == (0, 2)
    assert isinstance(retry, AuditWriteError)
    assert repository.ClaimLost in _causes(retry)
    assert isinstance(duplicate, AuditWriteError)
    assert IntegrityError in _causes(duplicate)
    committed = [receipts for receipts in (new_1, outcome, new_2) if isinstance(receipts, list)]
    assert [[r.index for r in receipts] for receipts in committed] == [[4], [5], [6]]
    claims, stored, entries = _rows(engine)
    # "running" gave its claim up with its outcome in the batch, so "duplicate" clashed with a claim given up in
    # the same transaction: it ran first (the batch's order) and found the claim held
    assert (sorted(claims), stored, entries) == (["new-1", "new-2"], 2, 7)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(exchanges).where(
            exchanges.c.idempotency_key == "key-done")).scalar_one() == 1


def _held_key(exchange_id: str, key: str) -> Callable[[Any], None]:
    return repository.claim_held(_claim(exchange_id, key), LEASE, lambda: NOW, release=True)


async def test_the_claim_of_every_keyed_request_goes_to_the_driver_as_sqlalchemy_would_send_it(
        engine: Engine) -> None:
    """The claim's INSERT (write-ahead) and its DELETE (outcome) skip SQLAlchemy's execution, as rule 6's count
    and the outcome row do; the claim stored reads back as written through SQLAlchemy (its time included)."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    async with AsyncAuditWriter(log) as writer:
        with statements_run(engine, lambda statement: "exchange_claims" in statement) as seen:
            await writer.record([make_event(0)], repository.claim_companion(_claim("a1"), None))
            with Session(engine) as session:
                found = repository.find_claim(session, "gemeente-amsterdam-vth", "key-0001")
            await writer.record([make_event(1)], repository.outcome_companion(_outcome("a1"), _held("a1")))
        assert found == _claim("a1")
        assert len(seen) == 1  # find_claim's SELECT only
        assert _rows(engine) == ([], 1, 2)
        with pytest.raises(AuditWriteError) as answered:  # RETURNING nothing: refused as before
            await writer.record([make_event(2)], repository.claim_companion(_claim("late"), None))
        assert repository.ClaimLost in _causes(answered.value)
