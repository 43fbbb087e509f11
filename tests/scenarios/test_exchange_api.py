"""Exchange API behaviour beyond the scenarios: idempotency, who may see an outcome, minimisation of an
over-sharing holder, discovery, bad input, and failing closed when policy or audit fail."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from audit.tables import audit_entries
from escalation.tables import escalation_cases
from gateway.app import create_app
from gateway.auth.principal import Principal
from gateway.client.models import ExchangeRequest
from gateway.container import Container, build_container
from gateway.exchange.examples import EXCHANGE_PROBLEMS
from gateway.exchange.lease import longest_holder_call
from gateway.exchange.service import CLAIM_ABANDONED_AFTER, fingerprint
from gateway.exchange.tables import exchange_claims, exchanges
from gateway.policy.errors import PolicyUnavailable
from gateway.settings import POLICIES_DIR
from tests.auth_helpers import person_token
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app
from tests.stack import Stack, running_stack

BIBOB: dict[str, Any] = {  # a request body's common fields (JSON)
    "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
    "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-200",
    "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("api"), over_share={"politie-bvh"}) as running:
        yield running


def _audit_count(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _body(stack: Stack, scenario: str = "bibob-applicant", **extra: Any) -> dict[str, Any]:
    return BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()[scenario][1:2]],
                    "holders": ["politie"], "categories": ["police_incidents"]} | extra


def test_over_sharing_holder_is_filtered_and_logged(stack: Stack) -> None:
    target = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack)).json()["targets"][0]
    assert target["outcome"] == "allowed"
    assert target["records"]
    assert {r["category"] for r in target["records"]} == {"police_incidents"}  # CIE note dropped by the gateway
    with stack.container.engine.connect() as connection:
        overshared = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.canonical.contains('"dropped_overshared":1'))).all()
    assert overshared


def test_idempotent_retry_returns_the_first_answer_without_new_log_entries(stack: Stack) -> None:
    headers = {"Idempotency-Key": "retry-key-0001"}
    first = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack), headers)
    entries_after_first = _audit_count(stack)
    second = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack), headers)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert _audit_count(stack) == entries_after_first
    clash = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack, categories=["police_incidents",
                                                                                          "convictions"]), headers)
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")


def test_a_key_reused_for_a_re_run_citing_a_decision_is_another_request(stack: Stack) -> None:
    """A re-run citing an escalation decision is not the run it re-runs: with that run's key it gets 409, not
    the stored answer and its records (a review found the decision left out of what the key binds to)."""
    headers = {"Idempotency-Key": "rerun-key-00001"}
    first = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack), headers)
    assert first.status_code == 200, first.text
    entries = _audit_count(stack)
    citing = _body(stack) | {"escalation_decision": "01234567-89ab-7def-8123-456789abcdef"}
    clash = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", citing, headers)
    assert clash.status_code == 409, clash.text
    assert "Retry-After" not in clash.headers
    assert _audit_count(stack) == entries
    again = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack), headers)
    assert again.json() == first.json()  # the key still replays the request it was first used for


def test_a_keyed_request_every_holder_denies_is_answered_and_replayed(stack: Stack) -> None:
    """Nothing is disclosed, so no entry follows the write-ahead: the outcome is stored on its own and the claim
    given up after it (what partner systems using ``gateway.client``, which always sends a key, meet on S12)."""
    headers = {"Idempotency-Key": "all-denied-key-0001"}
    body = _body(stack, legal_basis="WGS (RIEC) with the wrong law")
    first = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body, headers)
    assert first.status_code == 200, first.text
    assert {t["outcome"] for t in first.json()["targets"]} == {"denied"}
    assert _claims(stack) == []
    again = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body, headers)
    assert again.json() == first.json()


def test_a_retry_of_an_answered_request_gets_its_answer_even_when_deciding_it_now_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stored answer is looked up while the request is decided again; it wins over a policy engine that is
    down now (no 503, no deny entries logged for a request that was answered)."""
    with running_stack(tmp_path) as s:
        headers = {"Idempotency-Key": "answered-key-0001"}
        first = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), headers)
        assert first.status_code == 200
        monkeypatch.setattr(s.container.services["exchange"].deps.policy, "decide_many", _policy_engine_down)
        before = _audit_count(s)
        again = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), headers)
        assert again.status_code == 200
        assert again.json() == first.json()
        assert _audit_count(s) == before
        fresh = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": "fresh-key-00001"})
        assert fresh.status_code == 503
        assert fresh.json()["outcome"] == "denied"
        assert _audit_count(s) > before  # the refusal of a new request is logged


@contextmanager
def held_holder(answer: dict[str, object] | None = None
                ) -> Iterator[tuple[str, threading.Event, threading.Event, list[str]]]:
    """A holder that answers a query (with no records, or ``answer``) only once ``release`` is set;
    ``arrived`` is set when a query reaches it and ``calls`` lists their request ids: the test decides how
    long an exchange stays in flight, and sees how often the holder was asked."""
    arrived, release, calls = threading.Event(), threading.Event(), list[str]()
    slow = FastAPI()

    @slow.post("/holder/v1/query")
    async def query(body: dict[str, Any]) -> dict[str, object]:
        calls.append(str(body.get("request_id")))
        arrived.set()
        await asyncio.to_thread(release.wait, 20)
        return answer or {"status": "answered", "records": []}

    with serve_app(slow) as url:
        yield url, arrived, release, calls


def _in_flight(stack: Stack, headers: dict[str, str], arrived: threading.Event
               ) -> tuple[threading.Thread, list[httpx.Response]]:
    """The usual request sent from a thread, returned once it has reached the held holder: the caller thread
    and the list its answer will be in."""
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(stack.post("gemeente-amsterdam-vth", "/v1/exchanges",
                                                                       _body(stack), headers)))
    caller.start()
    assert arrived.wait(20), "the request never reached the holder"
    return caller, answers


async def _policy_engine_down(*_args: object, **_kwargs: object) -> None:
    """In place of a policy engine's ``decide_many``: the engine is down."""
    raise PolicyUnavailable("the policy engine is down")


@contextmanager
def other_gateway_process(stack: Stack) -> Iterator[tuple[str, Container]]:
    """A second gateway on the same database, key store and partners, as a second worker process is: its
    in-flight guard and caches are its own; only the database is shared."""
    container = build_container(stack.container.settings, stack.clock)
    try:
        with serve_app(create_app(container=container)) as url:
            yield url, container
    finally:
        container.close()


def test_a_retry_while_the_first_attempt_is_in_flight_gets_409_and_nothing_runs_twice(tmp_path: Path) -> None:
    headers = {"Idempotency-Key": "in-flight-key-0001"}
    with held_holder() as (holder_url, arrived, release, _), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        caller, first = _in_flight(s, headers, arrived)
        before = _audit_count(s)
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), headers)
        assert retry.status_code == 409
        assert retry.headers["content-type"].startswith("application/problem+json")
        assert retry.headers["retry-after"] == "1"
        assert _audit_count(s) == before  # the retry wrote nothing and asked no holder
        release.set()
        caller.join(20)
        assert first[0].status_code == 200
        again = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), headers)  # now a plain replay
        assert again.json() == first[0].json()
        other_key = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": "other-key-0002"})
        assert other_key.status_code == 200  # the guard is per key, not per client


def test_a_key_another_process_answered_meanwhile_is_409_with_nothing_disclosed_and_a_retry_replays(
        tmp_path: Path) -> None:
    key = "clashing-key-0001"
    with held_holder() as (holder_url, arrived, release, _), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        release.set()
        done = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": "first-key-0001"})
        assert done.status_code == 200
        release.clear()
        arrived.clear()
        caller, answers = _in_flight(s, {"Idempotency-Key": key}, arrived)
        # Meanwhile an answer to the same request appears under the same key. The claim makes this
        # impossible for another gateway process that plays by the rules; the outcome row's unique key is the
        # second line of defence, and this is what it does.
        with s.container.engine.begin() as connection:
            stored = connection.execute(select(exchanges).where(exchanges.c.id == done.json()["exchange_id"])).one()
            connection.execute(exchanges.insert().values(stored._asdict() | {
                "id": "other-process-exchange", "idempotency_key": key, "sealed_records": None}))
        before = _audit_count(s)
        release.set()
        caller.join(20)
        [answer] = answers
        assert answer.status_code == 409  # gateway.client waits (Retry-After) and asks again
        assert answer.headers["retry-after"] == "1"
        assert "nothing of this one was disclosed" in answer.json()["detail"]
        assert _audit_count(s) == before  # its disclosure shared the refused outcome row's transaction
        assert _claims(s) == []  # and its claim was given up
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": key})
        assert retry.status_code == 200
        assert retry.json()["targets"][0]["outcome"] == "allowed"
        assert retry.json()["receipt"] == done.json()["receipt"]  # the other process's answer, replayed


def _claims(stack: Stack) -> list[Any]:
    with stack.container.engine.connect() as connection:
        return list(connection.execute(select(exchange_claims)))


def test_a_retry_reaching_another_gateway_process_while_the_first_is_in_flight_runs_nothing(tmp_path: Path) -> None:
    """The key's claim commits with the first attempt's write-ahead entries, so a second gateway (its own app,
    container and in-flight guard on the same database, as a second worker has; in this test process) neither
    logs nor asks the holder; after the answer it replays it."""
    headers = {"Idempotency-Key": "cross-process-key-1"}
    with held_holder() as (holder_url, arrived, release, calls), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s, \
            other_gateway_process(s) as (other, _):
        caller, first = _in_flight(s, headers, arrived)
        [claim] = _claims(s)
        assert claim.idempotency_key == "cross-process-key-1"
        before = _audit_count(s)
        token = {"Authorization": f"Bearer {s.token('gemeente-amsterdam-vth')}"}
        retry = httpx.post(f"{other}/v1/exchanges", json=_body(s), headers=headers | token, timeout=30)
        assert retry.status_code == 409, retry.text
        assert retry.headers["content-type"].startswith("application/problem+json")
        assert retry.headers["retry-after"] == "1"
        assert _audit_count(s) == before  # nothing logged ...
        assert len(calls) == 1  # ... and the holder was asked once
        release.set()
        caller.join(20)
        assert first[0].status_code == 200
        assert _claims(s) == []  # given up in the outcome's commit
        replay = httpx.post(f"{other}/v1/exchanges", json=_body(s), headers=headers | token, timeout=30)
        assert replay.status_code == 200
        assert replay.json() == first[0].json()
        assert len(calls) == 1
        assert _audit_count(s) == before + 1  # the first attempt's disclosure, nothing of the retries


def test_a_duplicate_that_cannot_be_decided_elsewhere_is_409_and_logs_no_denial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other gateway's policy engine is down while the first attempt is in flight: the duplicate is told the
    key is still being answered (409), not denied with a 503 and logged as a refusal of its own."""
    headers = {"Idempotency-Key": "duplicate-key-0001"}
    with held_holder() as (holder_url, arrived, release, calls), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s, \
            other_gateway_process(s) as (other, other_container):
        caller, _ = _in_flight(s, headers, arrived)
        monkeypatch.setattr(other_container.services["exchange"].deps.policy, "decide_many", _policy_engine_down)
        before = _audit_count(s)
        token = {"Authorization": f"Bearer {s.token('gemeente-amsterdam-vth')}"}
        duplicate = httpx.post(f"{other}/v1/exchanges", json=_body(s), headers=headers | token, timeout=30)
        assert duplicate.status_code == 409
        assert duplicate.headers["retry-after"] == "1"
        assert _audit_count(s) == before
        fresh = httpx.post(f"{other}/v1/exchanges", json=_body(s), headers={"Idempotency-Key": "fresh-key-00002"}
                           | token, timeout=30)
        assert fresh.status_code == 503  # a request of its own is refused and logged, as ever
        assert _audit_count(s) > before
        release.set()
        caller.join(20)
        assert len(calls) == 1


def test_an_abandoned_claim_is_taken_over_and_a_live_one_is_not(tmp_path: Path) -> None:
    """A claim whose attempt died (its process crashed after the write-ahead) stops retries only until it is
    CLAIM_ABANDONED_AFTER old; then a retry takes the key over and is answered."""
    with running_stack(tmp_path) as s:
        principal = Principal(kind="system", subject="gemeente-amsterdam-vth", organisation="gemeente-amsterdam")
        body = _body(s)
        sha = fingerprint(principal, ExchangeRequest.model_validate(body))
        now = s.clock.now()
        with s.container.engine.begin() as connection:
            for key, age in (("dead-attempt-key-1", CLAIM_ABANDONED_AFTER + timedelta(seconds=1)),
                             ("live-attempt-key-1", CLAIM_ABANDONED_AFTER - timedelta(seconds=30))):
                connection.execute(exchange_claims.insert().values(
                    requester_system="gemeente-amsterdam-vth", idempotency_key=key, exchange_id=f"attempt-{key}",
                    request_sha256=sha, claimed_at=now - age))
        before = _audit_count(s)
        live = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": "live-attempt-key-1"})
        assert live.status_code == 409
        assert live.headers["retry-after"] == "1"
        assert _audit_count(s) == before
        taken = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": "dead-attempt-key-1"})
        assert taken.status_code == 200, taken.text
        assert [c.idempotency_key for c in _claims(s)] == ["live-attempt-key-1"]  # the dead claim is gone
        again = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": "dead-attempt-key-1"})
        assert again.json() == taken.json()
        other = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s, categories=["police_incidents",
                                                                                       "convictions"]),
                       {"Idempotency-Key": "live-attempt-key-1"})
        assert other.status_code == 409
        assert "different request" in other.json()["detail"]


def test_a_failed_attempt_frees_its_key_at_once(tmp_path: Path) -> None:
    """The attempt's disclosure commit fails (a real fault: the outcome table is gone): 503, and its claim is
    given up, so the retry runs at once instead of waiting for the claim to count as abandoned."""
    key = "failing-attempt-key-1"
    with held_holder() as (holder_url, arrived, release, calls), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        caller, answers = _in_flight(s, {"Idempotency-Key": key}, arrived)
        assert len(_claims(s)) == 1
        with s.container.engine.begin() as connection:
            connection.execute(text("ALTER TABLE exchanges RENAME TO exchanges_gone"))
        release.set()
        caller.join(20)
        assert answers[0].status_code == 503
        assert _claims(s) == []
        with s.container.engine.begin() as connection:
            connection.execute(text("ALTER TABLE exchanges_gone RENAME TO exchanges"))
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": key})
        assert retry.status_code == 200
        assert len(calls) == 2  # nothing was disclosed the first time: the retry asks again
        assert _claims(s) == []


def test_a_taken_over_attempt_that_would_escalate_logs_and_opens_nothing(tmp_path: Path) -> None:
    """The escalation path (here: the holder refuses) commits its entries only while the attempt holds its
    claim, as the plain path does: a taken-over attempt logs no refusal and opens no case."""
    refusal: dict[str, object] = {"status": "refused", "records": [],
                                  "refusal_reason": "investigation-confidentiality"}
    with held_holder(refusal) as (holder_url, arrived, release, _), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        caller, answers = _in_flight(s, {"Idempotency-Key": "refused-key-0001"}, arrived)
        with s.container.engine.begin() as connection:
            connection.execute(exchange_claims.update().values(exchange_id="the-taker"))
        before, cases = _audit_count(s), _count(s, escalation_cases)
        release.set()
        caller.join(20)
        assert answers[0].status_code == 409
        assert (_audit_count(s), _count(s, escalation_cases)) == (before, cases)
        refused = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s))  # without a key: the usual path
        assert refused.json()["targets"][0]["outcome"] == "refused-by-holder"
        assert _count(s, escalation_cases) == cases + 1  # (so the path above would have opened one)


def _count(stack: Stack, table: Any) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize("scenario", ["allowed", "bulk-escalated"])
def test_an_attempt_that_outlives_its_lease_writes_nothing_more_under_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str) -> None:
    """While the holders are asked the clock passes the claim's lease (as if the attempt had stalled): its
    disclosure commit (allowed) or, with nothing to log, the check before its escalation case (every target
    escalated by policy, S7) refuses with 409; nothing more is logged and no case is opened."""
    with running_stack(tmp_path) as s:
        body = _body(s) if scenario == "allowed" else BIBOB | {
            "subjects": [{"ref": p.subject_ref} for p in s.world.persons[:40]], "holders": ["politie"],
            "categories": ["police_incidents"]}
        service = s.container.services["exchange"]
        serve_target = type(service)._serve_target

        async def stalled(self: Any, *args: Any) -> Any:
            served = await serve_target(self, *args)
            s.clock.advance(CLAIM_ABANDONED_AFTER)
            return served

        monkeypatch.setattr(type(service), "_serve_target", stalled)
        before, cases = _audit_count(s), _count(s, escalation_cases)
        late = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": f"late-{scenario}-1"})
        assert late.status_code == 409, late.text
        assert late.headers["retry-after"] == "1"
        assert _audit_count(s) == before + 1 + 1  # the request and its one decision, written ahead; nothing more
        assert _count(s, escalation_cases) == cases
        assert _claims(s) == []  # given up, so the retry runs at once
        monkeypatch.undo()
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": f"late-{scenario}-1"})
        assert retry.status_code == 200
        assert retry.json()["targets"][0]["outcome"] == ("allowed" if scenario == "allowed" else "escalated")


def test_no_holder_is_asked_when_the_write_ahead_left_too_little_of_the_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write-ahead's commit waits for the audit writer, which has no timeout of its own. If it took so long
    that what is left of the claim's lease is shorter than the longest holder call, a retry could take the key
    over as abandoned while the holders still answer, and ask them a second time. So the attempt is refused
    before any holder is asked (503, Retry-After), its end is logged, and the key is free at once; with
    enough of the lease left the holder is asked as usual."""
    key = {"Idempotency-Key": "stalled-write-ahead-1"}
    with held_holder() as (holder_url, _, release, calls), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        release.set()  # the holder answers at once: only the lease left when it is asked matters here
        service = s.container.services["exchange"]
        connectors = service.deps.connectors
        longest = timedelta(seconds=longest_holder_call(connectors.timeout, connectors.retries, connectors.backoff))
        write_ahead = type(service)._write_ahead_claiming
        stall = [CLAIM_ABANDONED_AFTER - longest + timedelta(seconds=5)]

        async def stalled(self: Any, *args: Any) -> Any:
            receipts = await write_ahead(self, *args)
            s.clock.advance(stall[0])
            return receipts

        monkeypatch.setattr(type(service), "_write_ahead_claiming", stalled)
        before = _audit_count(s)
        late = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), key)
        assert late.status_code == 503, late.text
        assert late.headers["content-type"].startswith("application/problem+json")
        assert late.headers["retry-after"] == "1"
        assert "no holder was asked" in late.json()["detail"]
        assert calls == []
        assert _audit_count(s) == before + 3  # the request and its decision, written ahead, and its failure
        assert _claims(s) == []  # given up: the retry runs at once
        stall[0] = CLAIM_ABANDONED_AFTER - longest - timedelta(seconds=5)
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), key)
        assert retry.status_code == 200, retry.text
        assert len(calls) == 1


def test_an_attempt_whose_claim_was_taken_over_discloses_nothing(tmp_path: Path) -> None:
    """If an attempt is so slow that a retry took its key over as abandoned, the slow attempt's disclosure
    commit finds its claim gone: 409, nothing of it logged; the retry's answer is the one that counts."""
    key = "slow-attempt-key-1"
    with held_holder() as (holder_url, arrived, release, _), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        caller, slow = _in_flight(s, {"Idempotency-Key": key}, arrived)
        with s.container.engine.begin() as connection:  # another process took the key over meanwhile
            connection.execute(exchange_claims.update().values(exchange_id="the-taker"))
        before = _audit_count(s)
        release.set()
        caller.join(20)
        assert slow[0].status_code == 409
        assert "nothing of this one was disclosed" in slow[0].json()["detail"]
        assert _audit_count(s) == before
        assert [c.exchange_id for c in _claims(s)] == ["the-taker"]  # not ours to release
        with s.container.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(exchanges).where(
                exchanges.c.idempotency_key == key)).scalar_one() == 0


def test_outcome_is_visible_to_the_requester_and_its_privacy_officer_only(stack: Stack) -> None:
    answer = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack)).json()
    exchange_id = answer["exchange_id"]
    own = stack.get("gemeente-amsterdam-vth", f"/v1/exchanges/{exchange_id}")
    assert own.status_code == 200
    assert own.json()["targets"][0]["outcome"] == "allowed"
    # The stored outcome cites the same audit entries as the answer did: all of this exchange, request
    # and decision (written ahead) and disclosure (written with the outcome row).
    assert own.json()["receipt"] == answer["receipt"]
    with stack.container.engine.connect() as connection:
        cited = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.log_index.in_(answer["receipt"]["audit_indices"]))).scalars().all()
    assert len(cited) == len(answer["receipt"]["audit_indices"]) >= 3
    assert all(exchange_id in entry for entry in cited)
    assert any('"event_type":"disclosure"' in entry for entry in cited)
    assert own.json()["targets"][0]["records"] == []  # the outcome, not the data again
    assert stack.get("politie-bvh", f"/v1/exchanges/{exchange_id}").status_code == 404
    own_officer = _person(stack, "po-amsterdam", "gemeente-amsterdam")
    other_officer = _person(stack, "po-politie", "politie")
    assert httpx.get(f"{stack.gateway_url}/v1/exchanges/{exchange_id}",
                     headers={"Authorization": f"Bearer {own_officer}"}).status_code == 200
    assert httpx.get(f"{stack.gateway_url}/v1/exchanges/{exchange_id}",
                     headers={"Authorization": f"Bearer {other_officer}"}).status_code == 404


def _person(stack: Stack, username: str, organisation: str) -> str:
    client = httpx.Client(base_url=stack.gateway_url)
    try:
        return person_token(client, stack.container, username, organisation,  # type: ignore[arg-type]
                            ["privacy-officer"])
    finally:
        client.close()


def test_discovery_answers_hit_or_no_hit_and_never_data(stack: Stack) -> None:
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
                    "categories": ["company_registration", "tax_debts", "ongoing_investigation"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body)
    assert response.status_code == 200, response.text
    targets = {t["holder"]: t["outcome"] for t in response.json()["targets"]}
    assert targets["kvk"] == "hit"
    assert targets["fiod"] == "hit"
    assert "records" not in response.text
    nobody = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["no-records"][0]}],
                      "categories": ["company_registration"]}
    assert {t["outcome"] for t in stack.post("gemeente-amsterdam-vth", "/v1/discovery", nobody).json()["targets"]
            if t["holder"] == "kvk"} == {"no-hit"}


def test_discovery_in_bulk_is_escalated_not_answered(stack: Stack) -> None:
    """Rule 6 applies to discovery too: more than 25 subjects asks no holder; the answer says `escalated`
    with the reason, where the holder would otherwise have been asked (rule 3's denials stay denials)."""
    body = BIBOB | {"subjects": [{"ref": f"subj-bulk-{n:04d}-7f3a9c"} for n in range(30)],
                    "categories": ["company_registration"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body)
    assert response.status_code == 200, response.text
    targets = {t["holder"]: t for t in response.json()["targets"]}
    assert targets["kvk"]["outcome"] == "escalated"
    assert "bulk-request" in {r["code"] for r in targets["kvk"]["reasons"]}
    assert not {t["outcome"] for t in targets.values()} & {"hit", "no-hit"}


def _nested(depth: int) -> dict[str, Any]:
    """An object nested ``depth`` levels deep."""
    nested: dict[str, Any] = {"n": 1}
    for _ in range(depth - 1):
        nested = {"n": nested}
    return nested


@pytest.mark.parametrize(("mutate", "status"), [
    (lambda b: b | {"surprise": 1}, 422),
    (lambda b: b | {"subjects": []}, 422),
    (lambda b: b | {"subjects": [{"ref": "123456782"}]}, 422),  # a BSN-shaped ref is not a pseudonym
    (lambda b: b | {"holders": ["no-such-org"]}, 422),
    (lambda b: b | {"holders": []}, 422),  # no one to ask: was an unaudited 500
    # unknown provided categories are refused (with many holders they ran past the RVM limit: a 503)
    (lambda b: b | {"provide": [{"subject": b["subjects"][0]["ref"], "category": f"made_up_{chr(97 + n)}",
                                 "fields": {}} for n in range(26)]}, 422),
    # a provided record about someone the request is not about (it reached the holder untranslated)
    (lambda b: b | {"provide": [{"subject": "subj-someone-else-0001", "category": "tax_compliance",
                                 "fields": {}}]}, 422),
    (lambda b: b | {"partnership": "riec-utrecht"}, 422),
    (lambda b: b | {"partnership": "Robert'); DROP TABLE exchanges;--"}, 422),
    # categories no register could name: were a 500 with not even the failure in the audit log
    (lambda b: b | {"categories": [""]}, 422),
    (lambda b: b | {"categories": ["police\tincidents"]}, 422),
    (lambda b: b | {"categories": ["a" * 201]}, 422),
    # a subject named twice: one disclosure would be logged as two
    (lambda b: b | {"subjects": b["subjects"] * 2}, 422),
    # a category named twice: was asked for, and logged in `exchange.requested`, twice
    (lambda b: b | {"categories": ["police_incidents", "convictions", "police_incidents"]}, 422),
    # provided fields nested past what the gateway serialises: was a 500 (logged as the gateway's defect)
    (lambda b: b | {"provide": [{"subject": b["subjects"][0]["ref"], "category": "tax_compliance",
                                 "fields": _nested(300)}]}, 422),
    (lambda b: b | {"provide": [{"subject": b["subjects"][0]["ref"], "category": "tax_compliance",
                                 "fields": {"list": [_nested(40)]}}]}, 422),
    # no JSON numbers (RFC 8259): the holder got null where the log's payload hash covered NaN or Infinity
    (lambda b: b | {"provide": [{"subject": b["subjects"][0]["ref"], "category": "tax_compliance",
                                 "fields": {"amount": float("nan")}}]}, 422),
    (lambda b: b | {"provide": [{"subject": b["subjects"][0]["ref"], "category": "tax_compliance",
                                 "fields": {"amounts": [1, {"due": float("-inf")}]}}]}, 422),
])
def test_bad_input_is_a_problem_and_writes_nothing(stack: Stack, mutate: Any, status: int) -> None:
    before = _audit_count(stack)
    response = httpx.post(  # json.dumps, not httpx's encoder: it writes NaN and Infinity as a partner's might
        f"{stack.gateway_url}/v1/exchanges", content=json.dumps(mutate(_body(stack))), timeout=30,
        headers={"Authorization": f"Bearer {stack.token('gemeente-amsterdam-vth')}",
                 "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "123456782" not in response.text
    assert _audit_count(stack) == before


@pytest.mark.parametrize("change", [{"holders": ["politie", "Jan Jansen"]}, {"escalation_decision": "Jan Jansen"}])
def test_free_text_where_an_id_belongs_is_refused_without_repeating_it(
        stack: Stack, capfd: pytest.CaptureFixture[str], change: dict[str, Any]) -> None:
    """Found by a review: `holders` and `escalation_decision` took any text, and the 422 for an unknown one
    quoted it in its detail, which the gateway also logs: a name typed there reached the operator's log."""
    capfd.readouterr()
    before = _audit_count(stack)
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack) | change)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    logs = capfd.readouterr()
    for said in (response.text, logs.out, logs.err):
        assert "jansen" not in said.lower()
    assert _audit_count(stack) == before


def test_a_category_named_twice_is_refused_by_exchange_and_discovery_with_nothing_written(stack: Stack) -> None:
    """Found by a review: the request's entry listed the category twice. Refused like a subject named twice
    (the list is what the requester asked for; the docs never call it a set), before anything is logged."""
    body = _body(stack) | {"categories": ["police_incidents", "police_incidents"]}
    before = _audit_count(stack)
    for path, request in (("/v1/exchanges", body), ("/v1/discovery", {k: v for k, v in body.items()
                                                                      if k != "holders"})):
        response = stack.post("gemeente-amsterdam-vth", path, request)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "each category may be named only once" in response.json()["detail"]
    assert _audit_count(stack) == before


def test_a_category_the_register_does_not_know_is_refused_not_dropped_without_a_word(stack: Stack) -> None:
    """The policy leaves a category outside a holder's domain alone, so a typo vanished from the answer: the
    outcome said `allowed` with no reason, and the requester never learned that the category was not asked."""
    body = _body(stack)
    before = _audit_count(stack)
    version = stack.container.services["register"].current().version
    for path, request in (("/v1/exchanges", body), ("/v1/discovery", {k: v for k, v in body.items()
                                                                      if k != "holders"})):
        response = stack.post("gemeente-amsterdam-vth", path,
                              request | {"categories": [*body["categories"], "compnay_registration"]})
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        detail = response.json()["detail"]
        assert "compnay_registration" in detail
        assert f"register {version}" in detail
    assert _audit_count(stack) == before


def test_malformed_json_and_oversized_body(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token('gemeente-amsterdam-vth')}",
               "Content-Type": "application/json"}
    broken = httpx.post(f"{stack.gateway_url}/v1/exchanges", content=b'{"partnership": ', headers=headers)
    assert broken.status_code == 422
    huge = httpx.post(f"{stack.gateway_url}/v1/exchanges", content=b"[" + b"1," * 700_000 + b"1]", headers=headers)
    assert huge.status_code == 413
    assert huge.json()["status"] == 413


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_discovery_with_a_holder_down_answers_it_unavailable_and_audits_which_holder(tmp_path: Path) -> None:
    """A holder that cannot be reached is answered `holder-unavailable` and, like in an exchange, lands in the
    log as `holder.unavailable` with the failure's kind (a privacy officer sees which holders were asked and
    what came of it), cited by the receipt next to the other holders' entries, which still stand."""
    down = {"kvk-handelsregister": f"http://127.0.0.1:{_closed_port()}"}
    with running_stack(tmp_path, holder_overrides=down) as s:
        before = _audit_count(s)
        body = BIBOB | {"subjects": [{"ref": s.world.scenarios()["bibob-applicant"][0]}],
                        "categories": ["company_registration", "tax_debts", "ongoing_investigation"]}
        response = s.post("gemeente-amsterdam-vth", "/v1/discovery", body)
        assert response.status_code == 200, response.text
        answer = response.json()
        with s.container.engine.connect() as connection:
            rows = connection.execute(select(audit_entries.c.log_index, audit_entries.c.canonical)
                                      .where(audit_entries.c.log_index >= before)).all()
    targets = {t["holder"]: t["outcome"] for t in answer["targets"]}
    assert targets["kvk"] == "holder-unavailable"
    assert targets["fiod"] == "hit"  # the others are answered
    kvk = next(t for t in answer["targets"] if t["holder"] == "kvk")
    assert [r["code"] for r in kvk["reasons"]] == ["holder-unavailable"]  # the reason an exchange gives
    assert down["kvk-handelsregister"] not in json.dumps(kvk)
    events = {index: json.loads(canonical)["event"] for index, canonical in rows}
    failed = [e for e in events.values() if e["event_type"] == "holder.unavailable"]
    assert [(e["holder"], e["status"], e["reasons"], e["extra"]["error_type"]) for e in failed] == [
        ("kvk", "error", ["holder-unavailable"], "HolderUnavailable")]
    assert failed[0]["categories"] == ["company_registration"]  # what it was asked about, as in an exchange
    assert failed[0]["data_subject"] is None  # no subject, and the failure's kind rather than its text:
    assert body["subjects"][0]["ref"] not in json.dumps(failed)
    assert down["kvk-handelsregister"] not in json.dumps(failed)
    answered = {e["holder"] for e in events.values() if e["event_type"] == "disclosure"}
    assert "fiod" in answered
    assert "kvk" not in answered
    cited = {index for index, event in events.items() if event["event_type"] in {"holder.unavailable", "disclosure"}}
    assert cited <= set(answer["receipt"]["audit_indices"])


def test_policy_engine_down_denies_with_503_and_is_audited(tmp_path: Path) -> None:
    overrides = {"policy_engine": "opa", "opa_url": f"http://127.0.0.1:{_closed_port()}", "opa_timeout_seconds": 0.5}
    with running_stack(tmp_path, settings_overrides=overrides) as down:
        response = down.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(down))
        assert response.status_code == 503
        assert response.json()["outcome"] == "denied"
        with down.container.engine.connect() as connection:
            denied = connection.execute(select(audit_entries.c.canonical).where(
                audit_entries.c.canonical.contains("policy-engine-unavailable"))).all()
        assert denied


def _rival_register(stack: Stack) -> dict[str, Any]:
    """Another gateway's register on a shared OPA server: another version, every partnership retired."""
    rival: dict[str, Any] = json.loads(json.dumps(stack.container.services["register"].as_opa_data()))
    rival["version"] = f"{rival['version']}-rival"
    for partnership in rival["partnerships"].values():
        partnership["status"] = "retired"
    return rival


def _policy_decisions(stack: Stack) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical)).scalars()
        return [e for e in (json.loads(r)["event"] for r in rows) if e["event_type"] == "policy.decided"]


def test_a_register_another_gateway_pushed_to_the_opa_server_decides_nothing(tmp_path: Path) -> None:
    """A shared OPA server holds one register, whichever gateway pushed last: the gateway decides under its
    own (pushed again when the server answers under another) and records the version it decided under."""
    with serve_app(create_opa_test_app(POLICIES_DIR)) as opa_url, running_stack(
            tmp_path, settings_overrides={"policy_engine": "opa", "opa_url": opa_url, "opa_timeout_seconds": 5.0}) as s:
        ours = s.container.services["register"].version
        assert s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s)).status_code == 200
        pushed = httpx.put(f"{opa_url}/v1/data/register", json=_rival_register(s))  # another gateway's push
        assert pushed.status_code == 204
        response = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s))
        assert response.status_code == 200, response.text
        assert [t["outcome"] for t in response.json()["targets"]] != ["denied"]  # the rival register retires it
        decided = _policy_decisions(s)
        assert len(decided) == 2
        assert {(e["register_version"], e["decision"]) for e in decided} == {(ours, "allow")}


def test_an_opa_server_that_keeps_another_register_denies_with_503_and_is_audited(tmp_path: Path) -> None:
    behaviour = Behaviour()
    with serve_app(create_opa_test_app(POLICIES_DIR, behaviour)) as opa_url, running_stack(
            tmp_path, settings_overrides={"policy_engine": "opa", "opa_url": opa_url, "opa_timeout_seconds": 5.0}) as s:
        behaviour.rival_register = _rival_register(s)  # another gateway pushes its own over every one of ours
        response = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s))
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["outcome"] == "denied"
        assert "police_incidents" not in response.text
        assert behaviour.register_pushes == 2  # the first push and one re-push
        assert [(e["decision"], e["reasons"]) for e in _policy_decisions(s)] == [
            ("deny", ["policy-engine-unavailable"])]


def test_audit_log_unwritable_means_nothing_is_disclosed(tmp_path: Path) -> None:
    with running_stack(tmp_path) as broken:
        with broken.container.engine.begin() as connection:  # a real fault: the log table disappears
            connection.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_gone"))
        response = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert response.status_code == 503
        assert "nothing was disclosed" in response.json()["detail"]
        assert "police_incidents" not in response.text


def test_outcome_row_unwritable_means_no_disclosure_is_logged_or_answered(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def logged(broken: Stack) -> list[str]:
        with broken.container.engine.connect() as connection:
            return list(connection.execute(select(audit_entries.c.event_type)).scalars())

    with running_stack(tmp_path) as broken:
        first = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert first.status_code == 200
        before = logged(broken)
        with broken.container.engine.begin() as connection:  # the outcome table disappears
            connection.execute(text("ALTER TABLE exchanges RENAME TO exchanges_gone"))
        response = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "police_incidents" not in response.text
        after = logged(broken)
        # Reading an outcome again meets the fault in a plain query: 503, and the operator's log says which.
        capfd.readouterr()
        read = broken.get("gemeente-amsterdam-vth", f"/v1/exchanges/{first.json()['exchange_id']}")
        assert read.status_code == 503
        assert read.headers["content-type"].startswith("application/problem+json")
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
        [unavailable] = [line for line in lines if line["event"] == "database_unavailable"]
        assert "no such table: exchanges" in unavailable["reason"]
        # The request and its decision were written ahead; the disclosure shared the outcome row's fate.
        assert after.count("exchange.requested") == before.count("exchange.requested") + 1
        assert after.count("disclosure") == before.count("disclosure")
        # Once the count of today's requests (rule 6) is gone too: 503 too, never a 500. (Below the limit the
        # process decides on the count it knows; the write-ahead's transaction, which counts the request in,
        # meets the fault and is not written.)
        with broken.container.engine.begin() as connection:
            connection.execute(text("ALTER TABLE daily_request_counts RENAME TO daily_request_counts_gone"))
        capfd.readouterr()
        again = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert again.status_code == 503
        logged_lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
        [failed] = [line for line in logged_lines if line["event"] == "audit_write_failed"]
        assert failed["error_type"] == "OperationalError"
        assert "no such table: daily_request_counts" in failed["reason"]  # which fault, for the operator
        assert logged(broken).count("exchange.requested") == after.count("exchange.requested")  # nothing written
        assert again.headers["content-type"].startswith("application/problem+json")
        assert logged(broken).count("disclosure") == before.count("disclosure")


def test_logs_carry_no_personal_data(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    body = BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"]], "holders": "all",
                    "categories": ["company_registration", "directorships", "tax_debts", "police_incidents",
                                   "convictions"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert response.status_code == 200
    assert any(t["records"] for t in response.json()["targets"])  # personal data did flow, to the requester
    logs = capfd.readouterr().err
    assert "exchange_completed" in logs
    company, *directors = stack.world.scenarios()["bibob-applicant"]
    secrets = [stack.world.company(company).trade_name, stack.world.company(company).kvk_number]
    for ref in directors:
        person = stack.world.person(ref)
        secrets += [person.name, person.bsn, person.address]
    leaked = [value for value in secrets if value in logs]
    assert leaked == []


def _entries_of(stack: Stack, exchange_id: str) -> list[str]:
    """The event types of the audit entries of exchange ``exchange_id``, in log order."""
    with stack.container.engine.connect() as connection:
        return list(connection.execute(select(audit_entries.c.event_type).where(
            audit_entries.c.canonical.contains(f'"exchange_id":"{exchange_id}"')).order_by(
            audit_entries.c.log_index)).scalars())


def test_an_attempt_whose_escalation_outlives_its_lease_keeps_its_answer_and_the_key_is_not_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Politie refuses (a case is opened), the Belastingdienst discloses; the escalation step is so slow that the
    claim's lease runs out after the answers were logged. A retry reaching another gateway process then does
    not take the key over (it would ask both holders again): 409, nothing logged. The slow attempt still stores
    its outcome (its marked claim cannot have been taken over) and answers; later retries get that answer."""
    key = "slow-escalation-key-1"
    refusal: dict[str, object] = {"status": "refused", "records": [],
                                  "refusal_reason": "investigation-confidentiality"}
    with held_holder(refusal) as (holder_url, _, release, calls), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s, \
            other_gateway_process(s) as (other, _):
        release.set()
        body = _body(s, holders=["politie", "belastingdienst"], categories=["police_incidents", "tax_debts"])
        token = {"Authorization": f"Bearer {s.token('gemeente-amsterdam-vth')}"}
        service = s.container.services["exchange"]
        escalate = type(service)._escalate
        during: list[httpx.Response] = []
        entries: list[int] = []

        async def slow_escalation(self: Any, *args: Any, **kwargs: Any) -> None:
            await escalate(self, *args, **kwargs)
            if during:
                return
            s.clock.advance(CLAIM_ABANDONED_AFTER)  # the case's webhook, say, took this long
            entries.append(_audit_count(s))
            during.append(await asyncio.to_thread(httpx.post, f"{other}/v1/exchanges", json=body,
                                                  headers={"Idempotency-Key": key} | token, timeout=30))
            entries.append(_audit_count(s))

        monkeypatch.setattr(type(service), "_escalate", slow_escalation)
        late = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": key})
        assert late.status_code == 200, late.text
        assert {t["holder"]: t["outcome"] for t in late.json()["targets"]} == {
            "politie": "refused-by-holder", "belastingdienst": "allowed"}
        [retry] = during
        assert retry.status_code == 409, retry.text
        assert "retry-after" not in retry.headers
        assert retry.json()["detail"] == EXCHANGE_PROBLEMS[409]["content"]["application/problem+json"]["examples"][
            "answers_not_stored"]["value"]["detail"]  # as the API's description shows it
        assert entries[0] == entries[1]  # the retry logged nothing ...
        assert len(calls) == 1  # ... and asked no holder again
        exchange_id = late.json()["exchange_id"]
        assert _entries_of(s, exchange_id) == [  # each holder's answer once
            "exchange.requested", "policy.decided", "policy.decided", "holder.refused", "disclosure",
            "escalation.step"]
        with s.container.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(exchanges).where(
                exchanges.c.idempotency_key == key)).scalar_one() == 1
        assert _claims(s) == []  # the outcome's commit gave the claim up
        monkeypatch.undo()
        before = _audit_count(s)
        for gateway in (s.gateway_url, other):
            again = httpx.post(f"{gateway}/v1/exchanges", json=body, headers={"Idempotency-Key": key} | token,
                               timeout=30)
            assert again.status_code == 200, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json()["exchange_id"] == exchange_id
        assert (_audit_count(s), len(calls)) == (before, 1)


def test_an_attempt_whose_marked_claim_was_taken_by_code_ignoring_the_mark_stores_no_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During an upgrade a process of older code (which ignores ``answers_logged``) may take an abandoned marked
    claim over: the slow attempt's outcome then does not commit (two answers under one key); it answers
    outcome-not-stored and logs request.failed after its answers, which never reached the requester. The police's
    case, which commits with the outcome, is not opened either (no case for a request nobody was answered)."""
    key = "slow-escalation-key-2"
    refusal: dict[str, object] = {"status": "refused", "records": [],
                                  "refusal_reason": "investigation-confidentiality"}
    with held_holder(refusal) as (holder_url, _, release, _calls), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        release.set()
        body = _body(s, holders=["politie", "belastingdienst"], categories=["police_incidents", "tax_debts"])
        service = s.container.services["exchange"]
        escalate = type(service)._escalate

        async def escalation_meanwhile_taken_over(self: Any, *args: Any, **kwargs: Any) -> None:
            await escalate(self, *args, **kwargs)
            with s.container.engine.begin() as connection:  # what the older code's takeover leaves
                connection.execute(exchange_claims.update().where(exchange_claims.c.idempotency_key == key).values(
                    exchange_id="older-code-attempt", answers_logged=False))

        monkeypatch.setattr(type(service), "_escalate", escalation_meanwhile_taken_over)
        late = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": key})
        assert late.status_code == 500, late.text
        assert late.headers["content-type"].startswith("application/problem+json")
        assert late.json()["type"].endswith("outcome-not-stored")
        assert "lost its claim" in late.json()["detail"]
        exchange_id = late.json()["detail"].split("`")[1]
        assert _entries_of(s, exchange_id) == [
            "exchange.requested", "policy.decided", "policy.decided", "holder.refused", "disclosure",
            "request.failed"]
        with s.container.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(exchanges).where(
                exchanges.c.idempotency_key == key)).scalar_one() == 0
            assert connection.execute(select(func.count()).select_from(escalation_cases).where(
                escalation_cases.c.exchange_id == exchange_id)).scalar_one() == 0
        assert [c.exchange_id for c in _claims(s)] == ["older-code-attempt"]  # the other attempt's, left alone


def test_an_attempt_with_nothing_logged_whose_escalation_outlives_its_lease_stores_no_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every target escalated by policy (S7: no holder asked, nothing logged after the write-ahead); the lease
    runs out before the outcome row is stored: it is not stored (a retry could have taken the key over meanwhile
    and stored its own), 409 as when the claim is lost earlier, and the key is free. Nor is the case, which
    commits with the outcome: the retry opens the request's one case (there were two, one never answered)."""
    key = "slow-bulk-escalation-1"
    with running_stack(tmp_path) as s:
        body = BIBOB | {"subjects": [{"ref": p.subject_ref} for p in s.world.persons[:40]], "holders": ["politie"],
                        "categories": ["police_incidents"]}
        service = s.container.services["exchange"]
        escalate = type(service)._escalate

        async def slow_escalation(self: Any, *args: Any, **kwargs: Any) -> None:
            await escalate(self, *args, **kwargs)
            s.clock.advance(CLAIM_ABANDONED_AFTER)

        monkeypatch.setattr(type(service), "_escalate", slow_escalation)
        late = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": key})
        assert late.status_code == 409, late.text
        assert late.headers["retry-after"] == "1"
        assert "nothing of this one was disclosed" in late.json()["detail"]
        with s.container.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(exchanges).where(
                exchanges.c.idempotency_key == key)).scalar_one() == 0
        assert _claims(s) == []  # given up: no holder was asked, so the retry may run
        monkeypatch.undo()
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": key})
        assert retry.status_code == 200
        assert retry.json()["targets"][0]["outcome"] == "escalated"
        with s.container.engine.connect() as connection:
            cases = connection.execute(select(escalation_cases.c.id, escalation_cases.c.exchange_id).where(
                escalation_cases.c.holder_org == "politie")).all()
        assert [tuple(c) for c in cases] == [(retry.json()["targets"][0]["escalation_id"], retry.json()["exchange_id"])]


def test_a_claim_left_by_an_attempt_that_logged_answers_and_died_is_not_taken_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its process crashed after the holders' answers were logged, before the outcome: long past the lease a
    retry still gets 409 and runs nothing, also when the request could not be decided now (no denial logged)."""
    key = "answers-logged-key-1"
    with running_stack(tmp_path) as s:
        principal = Principal(kind="system", subject="gemeente-amsterdam-vth", organisation="gemeente-amsterdam")
        body = _body(s)
        with s.container.engine.begin() as connection:
            connection.execute(exchange_claims.insert().values(
                requester_system="gemeente-amsterdam-vth", idempotency_key=key, exchange_id="attempt-that-died",
                request_sha256=fingerprint(principal, ExchangeRequest.model_validate(body)),
                claimed_at=s.clock.now() - timedelta(days=1), answers_logged=True))
        before = _audit_count(s)
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": key})
        assert retry.status_code == 409, retry.text
        assert "not run again" in retry.json()["detail"]
        monkeypatch.setattr(s.container.services["exchange"].deps.policy, "decide_many", _policy_engine_down)
        undecided = s.post("gemeente-amsterdam-vth", "/v1/exchanges", body, {"Idempotency-Key": key})
        assert undecided.status_code == 409, undecided.text
        assert "not run again" in undecided.json()["detail"]
        assert _audit_count(s) == before
        assert [(c.exchange_id, c.answers_logged) for c in _claims(s)] == [("attempt-that-died", True)]
