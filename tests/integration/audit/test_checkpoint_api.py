"""``GET /v1/audit/checkpoint``: a fresh receipt is verifiable at once, and a checkpoint that does not verify is
never served.

1. The checkpoint policy signs after 100 entries or 60 s, so the entries an exchange's receipt cites were in no
   checkpoint for up to a minute: an officer checking the receipt at once got a checkpoint that did not cover
   it and could not tell whether it was logged. ``?covering=N`` asks for a checkpoint of at least N entries,
   signed on demand when none covers them yet — at most one such signature per second on the database (by all
   gateway processes together; it was per process), shared by everyone who asked meanwhile, so asking cannot
   keep the gateway signing (the checkpoint table growing).
2. The gateway handed out whatever its checkpoint table held: a note with a broken signature or a root that
   is not the tree's was served as the log's word (200), and a row no checkpoint row can be was a 500. Now
   the checkpoint is checked against the log's own key and tree first; failing that the answer is a 503
   problem saying so, logged and audited once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, insert, select
from structlog.testing import capture_logs

from audit import Checkpoint, NoteVerifier, VerificationError, claimed_checkpoint, open_checkpoint, sign_checkpoint
from audit.events import EventType
from audit.merkle import verify_inclusion
from audit.tables import audit_checkpoints, audit_entries
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.audit_support import forge_entry, log_signer, make_event, triggers_disabled
from tests.auth_helpers import bearer, person_token

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

PROBLEM = "application/problem+json"


@pytest.fixture
def app(sqlite_db_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[tuple[TestClient, Container]]:
    container = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True), clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield client, container
    container.close()


@pytest.fixture
def officer(app: tuple[TestClient, Container]) -> dict[str, str]:
    client, container = app
    return bearer(person_token(client, container, "po-gemeente-0", "gemeente-0", ["privacy-officer"]))


def _append(container: Container, count: int = 1) -> list[int]:
    return [receipt.index for receipt in container.services["audit"].log.append(
        [make_event(n) for n in range(count)])]


def _checkpoints(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_checkpoints)).scalar_one())


def _pin_clock(container: Container) -> list[float]:
    """Freeze the on-demand limiter's clock (a list, so that a test can move it)."""
    moment = [1000.0]
    container.services["audit"].on_demand.clock = lambda: moment[0]
    return moment


def test_a_fresh_receipt_verifies_at_once_against_a_signed_checkpoint(
        app: tuple[TestClient, Container], officer: dict[str, str]) -> None:
    client, container = app
    indices = _append(container, 3)
    verifier = NoteVerifier.from_vkey(client.get("/v1/audit/key", headers=officer).text)
    latest = open_checkpoint(client.get("/v1/audit/checkpoint", headers=officer).text, verifier)
    assert latest.tree_size <= max(indices), "the policy has not signed these entries yet"
    answer = client.get("/v1/audit/checkpoint", params={"covering": max(indices) + 1}, headers=officer)
    assert answer.status_code == 200, answer.text
    checkpoint = open_checkpoint(answer.text, verifier)
    assert checkpoint.tree_size >= max(indices) + 1
    for index in indices:
        proof = client.get(f"/v1/audit/entries/{index}/proof", params={"size": checkpoint.tree_size},
                           headers=officer).json()
        verify_inclusion(index, checkpoint.tree_size, bytes.fromhex(proof["leaf_hash"]),
                         [bytes.fromhex(h) for h in proof["hashes"]], checkpoint.root_hash)
    # Asking again signs nothing new: the checkpoint just made covers it.
    before = _checkpoints(container.engine)
    again = client.get("/v1/audit/checkpoint", params={"covering": max(indices) + 1}, headers=officer)
    assert again.text == answer.text
    assert _checkpoints(container.engine) == before


def test_asking_cannot_keep_the_gateway_signing(app: tuple[TestClient, Container], officer: dict[str, str]) -> None:
    """Each new entry followed by a request for a checkpoint covering it: within one interval only the first
    is signed; the others are told when to come back (503, Retry-After), and nothing is written for them."""
    client, container = app
    moment = _pin_clock(container)
    container.services["audit"].on_demand.min_interval = 0.2  # the wait before each refusal: keep the test short
    first = _append(container)[0]
    assert client.get("/v1/audit/checkpoint", params={"covering": first + 1}, headers=officer).status_code == 200
    signed = _checkpoints(container.engine)
    for _ in range(3):
        index = _append(container)[0]
        refused = client.get("/v1/audit/checkpoint", params={"covering": index + 1}, headers=officer)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == PROBLEM
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["type"].endswith("/checkpoint-pending")
    assert _checkpoints(container.engine) == signed
    moment[0] += container.services["audit"].on_demand.min_interval
    later = client.get("/v1/audit/checkpoint", params={"covering": index + 1}, headers=officer)
    assert later.status_code == 200
    assert _checkpoints(container.engine) == signed + 1  # one signature for all that waited


def test_callers_waiting_for_the_same_interval_share_one_signature(
        app: tuple[TestClient, Container], officer: dict[str, str]) -> None:
    """A request that arrives within the interval is held until the interval ends (not refused) when that is
    soon; all such requests are answered from the one checkpoint signed then."""
    client, container = app
    on_demand = container.services["audit"].on_demand
    on_demand.min_interval = 0.3
    first = _append(container)[0]
    assert client.get("/v1/audit/checkpoint", params={"covering": first + 1}, headers=officer).status_code == 200
    signed = _checkpoints(container.engine)
    fresh = _append(container, 4)
    answers = [client.get("/v1/audit/checkpoint", params={"covering": index + 1}, headers=officer)
               for index in fresh]
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.text for a in answers}) == 1
    assert _checkpoints(container.engine) == signed + 1


def test_two_gateway_processes_on_one_database_sign_once_a_second_between_them(
        app: tuple[TestClient, Container], officer: dict[str, str], sqlite_db_url: str, tmp_path: Path,
        clock: FixedClock) -> None:
    """A second app instance on the same database file and data directory (another worker process): once the
    first has signed on demand, the second refuses to sign within the interval (503, Retry-After) instead of
    signing a checkpoint of its own; a request it can answer from the first's checkpoint it answers."""
    client, container = app
    other = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True), clock)
    try:
        with TestClient(create_app(container=other), raise_server_exceptions=False) as second:
            moment = _pin_clock(container)
            other.services["audit"].on_demand.clock = lambda: moment[0]  # one machine, one clock
            for on_demand in (container.services["audit"].on_demand, other.services["audit"].on_demand):
                on_demand.min_interval = 0.2  # the wait before each refusal: keep the test short
            first = _append(container)[0]
            signed = client.get("/v1/audit/checkpoint", params={"covering": first + 1}, headers=officer)
            assert signed.status_code == 200, signed.text
            count = _checkpoints(container.engine)
            index = _append(other)[0]
            refused = second.get("/v1/audit/checkpoint", params={"covering": index + 1}, headers=officer)
            assert refused.status_code == 503, refused.text
            assert refused.json()["type"].endswith("/checkpoint-pending")
            assert int(refused.headers["retry-after"]) >= 1
            assert _checkpoints(container.engine) == count  # nothing signed by the second process
            answered = second.get("/v1/audit/checkpoint", params={"covering": first + 1}, headers=officer)
            assert answered.text == signed.text  # the first's checkpoint serves the second's readers
            moment[0] += 0.2
            later = second.get("/v1/audit/checkpoint", params={"covering": index + 1}, headers=officer)
            assert later.status_code == 200, later.text
            assert _checkpoints(container.engine) == count + 1
    finally:
        other.close()


@pytest.mark.parametrize(("covering", "status"), [(0, 422), (-1, 422), (10**6, 404), (2**63, 422)])
def test_a_size_the_log_does_not_have_is_refused(app: tuple[TestClient, Container], officer: dict[str, str],
                                                covering: int, status: int) -> None:
    client, container = app
    before = _checkpoints(container.engine)
    answer = client.get("/v1/audit/checkpoint", params={"covering": covering}, headers=officer)
    assert answer.status_code == status
    assert answer.headers["content-type"] == PROBLEM
    assert _checkpoints(container.engine) == before


def test_partner_systems_cannot_make_the_gateway_sign(app: tuple[TestClient, Container]) -> None:
    client, container = app
    index = _append(container)[0]
    before = _checkpoints(container.engine)
    assert client.get("/v1/audit/checkpoint", params={"covering": index + 1}).status_code == 401
    assert _checkpoints(container.engine) == before


# -- a checkpoint that does not verify ----------------------------------------------------------------------------


def _forged_root(container: Container, size: int) -> str:
    """A checkpoint properly signed by the log's key, over a root that is not the tree's (a key that leaked,
    or a bug): the note alone verifies, the tree does not."""
    signer = container.services["audit"].signer
    return sign_checkpoint(Checkpoint(signer.name, size, b"\x07" * 32), signer)


def _other_key(container: Container, size: int) -> str:
    signer = container.services["audit"].signer
    impostor = log_signer("impostor", name=signer.name)
    return sign_checkpoint(Checkpoint(signer.name, size, container.services["audit"].log.root(size)), impostor)


def _bad_base64(container: Container, size: int) -> str:
    """The log's honest checkpoint with its signature's base64 garbled."""
    signer = container.services["audit"].signer
    honest = sign_checkpoint(Checkpoint(signer.name, size, container.services["audit"].log.root(size)), signer)
    head, _blob = honest.rstrip("\n").rsplit(" ", 1)
    return f"{head} not*base64\n"


def _honest(container: Container, size: int) -> str:
    signer = container.services["audit"].signer
    return sign_checkpoint(Checkpoint(signer.name, size, container.services["audit"].log.root(size)), signer)


_NOTES = {"signature base64": _bad_base64, "another key": _other_key, "root not the tree's": _forged_root,
          "no note": lambda container, size: "garbage", "row's root not its note's": _honest}


def _column_root(container: Container, size: int, note: str) -> bytes:
    """The root the row states: its note's where the note has one (so that only the check named is what
    fails), the tree's otherwise, and another for the one case about a row that disagrees with its note."""
    if note == _honest(container, size):
        return b"\x09" * 32
    try:
        return claimed_checkpoint(note).root_hash
    except VerificationError:
        root: bytes = container.services["audit"].log.root(size)
        return root


@pytest.mark.parametrize("note", list(_NOTES))
def test_a_checkpoint_that_does_not_verify_is_not_served(
        app: tuple[TestClient, Container], officer: dict[str, str], note: str) -> None:
    client, container = app
    _append(container, 2)
    size = container.services["audit"].log.size()
    text = _NOTES[note](container, size)
    with container.engine.begin() as connection:  # an INSERT: the append-only triggers allow it
        connection.execute(insert(audit_checkpoints).values(
            tree_size=size, root_hash=_column_root(container, size, text), note=text,
            issued_at=container.clock.now()))
    with capture_logs() as logs:
        answers = [client.get("/v1/audit/checkpoint", headers=officer) for _ in range(3)]
    for answer in answers:
        _assert_unverified(answer)
    assert len([entry for entry in logs if entry["event"] == "audit_checkpoint_unverified"]) == 1
    recorded = _failure_entries(container.engine)
    assert len(recorded) == 1, "audited once, not per request"
    assert recorded[0]["status"] == "error"
    assert recorded[0]["extra"]["tree_size"] == size


@pytest.mark.parametrize("row", [
    "INSERT INTO audit_checkpoints VALUES (5, x'00', 'n', 'not a time')",
    "INSERT INTO audit_checkpoints VALUES ('abc', x'00', 'n', '2026-11-25 10:00:00.000000')",
])
def test_a_malformed_checkpoint_row_fails_closed(app: tuple[TestClient, Container], officer: dict[str, str],
                                                 row: str) -> None:
    client, container = app
    _append(container, 5)
    with container.engine.begin() as connection:
        connection.exec_driver_sql(row)
    with capture_logs() as logs:
        answers = [client.get("/v1/audit/checkpoint", headers=officer) for _ in range(2)]
        covering = client.get("/v1/audit/checkpoint", params={"covering": 1}, headers=officer)
    for answer in [*answers, covering]:
        _assert_unverified(answer)
    assert len([entry for entry in logs if entry["event"] == "audit_checkpoint_unverified"]) == 1
    assert not [entry for entry in logs if entry["event"] == "unexpected_error"]


def test_a_garbled_row_at_a_size_beyond_json_s_exact_integers_is_a_503_and_audited(
        app: tuple[TestClient, Container], officer: dict[str, str]) -> None:
    """A row planted at a size above 2**53 (an INSERT, which the triggers allow): its check failed, and the entry
    reporting it named the size as a JSON integer, which the log refuses beyond 2**53 - 1. That refusal escaped
    as a 500, the failure unaudited. The size is recorded as its decimal digits."""
    client, container = app
    _append(container, 2)
    huge = 2**62
    with container.engine.begin() as connection:
        connection.execute(insert(audit_checkpoints).values(
            tree_size=huge, root_hash=bytes(32), note="garbage", issued_at=container.clock.now()))
    for _ in range(2):
        _assert_unverified(client.get("/v1/audit/checkpoint", headers=officer))
    recorded = _failure_entries(container.engine)
    assert len(recorded) == 1, "audited once"
    assert recorded[0]["extra"]["tree_size"] == str(huge)


def _assert_unverified(answer: object) -> None:
    from httpx import Response

    assert isinstance(answer, Response)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["type"].endswith("/audit-checkpoint-unverified")
    assert "failed verification" in problem["detail"]
    assert "Traceback" not in answer.text


def _failure_entries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        texts = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == EventType.CONSOLE_ACTION.value)).scalars().all()
    events = [json.loads(text)["event"] for text in texts]
    return [event for event in events if event["extra"].get("action") == "checkpoint-check"]


# -- a tree that forks from the signed one ------------------------------------------------------------------------


def _fork(container: Container) -> int:
    """Entries under a signed checkpoint, one of them rewritten with the subtree cache rebuilt over it (as an
    attacker with the database would), and one entry no checkpoint covers; the number of checkpoints."""
    log = container.services["audit"].log
    target = _append(container, 4)[1]
    log.issue_checkpoint()
    _append(container, 1)
    with triggers_disabled(container.engine) as connection:
        forge_entry(connection, target)
    return _checkpoints(container.engine)


def _audit_log_readiness(client: TestClient) -> tuple[int, str]:
    answer = client.get("/health/ready")
    return answer.status_code, answer.json()["checks"]["audit_log"]


def test_a_forked_tree_is_not_signed_on_demand_and_the_gateway_is_not_ready(
        app: tuple[TestClient, Container], officer: dict[str, str]) -> None:
    client, container = app
    assert _audit_log_readiness(client) == (200, "ok")
    signed = _fork(container)
    size = container.services["audit"].log.size()
    with capture_logs() as logs:
        answer = client.get("/v1/audit/checkpoint", params={"covering": size}, headers=officer)
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert "Traceback" not in answer.text
    assert not [entry for entry in logs if entry["event"] == "unexpected_error"]
    assert _checkpoints(container.engine) == signed, "nothing signed"
    status, check = _audit_log_readiness(client)
    assert status == 503
    assert check.startswith("failed: the audit tree forks from a checkpoint the log signed")


def _readiness_once_the_idle_loop_tried(client: TestClient, clock: FixedClock) -> tuple[int, str]:
    """The ``audit_log`` readiness after the checkpoint policy's time limit has passed (the writer's idle loop
    tries to sign within a second): polled until it fails, for at most 15 s."""
    clock.advance(timedelta(seconds=61))
    deadline = time.monotonic() + 15
    while _audit_log_readiness(client)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    return _audit_log_readiness(client)


def test_the_periodic_checkpoint_refuses_a_fork_and_readiness_shows_it(
        app: tuple[TestClient, Container], clock: FixedClock) -> None:
    client, container = app
    signed = _fork(container)
    status, check = _readiness_once_the_idle_loop_tried(client, clock)
    assert status == 503, "the idle loop tried to sign and refused"
    assert "forks" in check
    assert _checkpoints(container.engine) == signed


def test_a_fork_with_every_checkpoint_deleted_is_refused_and_readiness_shows_it(
        app: tuple[TestClient, Container], clock: FixedClock) -> None:
    """The attacker also deletes every checkpoint row, so nothing stored is left to check the tree against: the
    gateway process still holds the checkpoint it signed, its idle loop refuses to sign the rewritten tree, and
    readiness says so."""
    client, container = app
    _fork(container)
    with triggers_disabled(container.engine) as connection:
        connection.execute(delete(audit_checkpoints))
    status, check = _readiness_once_the_idle_loop_tried(client, clock)
    assert status == 503, "the idle loop tried to sign and refused"
    assert "forks" in check
    assert _checkpoints(container.engine) == 0, "nothing signed"
    assert "this process signed or verified" in str(container.services["audit"].log.signing_refused)
