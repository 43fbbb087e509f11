"""Escalation steps that race each other, on SQLite and PostgreSQL: the database, not a read before the
write, decides which one takes effect, the other gets 409 (or is a no-op), and nothing answers 500.

The races are made deterministic instead of left to timing: ``_paused_before`` stops the first request on
its worker thread right before its first write (after every check it makes), the test then runs the
competing request to its end, and only then lets the first one write. That is the interleaving in which a
check-then-write is wrong; the database has to refuse (or absorb) the late write. A step and its audit
entry commit together (on the audit writer's thread), so for a step ``_paused_before_its_entry`` holds the
request instead, after its checks and before it hands entry and change to the writer.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from audit import EventType
from audit.tables import audit_entries
from escalation import cases as case_store
from escalation import legal_gaps as gap_store
from escalation.tables import escalation_cases, legal_gaps
from gateway.auditing.setup import audit_services
from gateway.auth.principal import Principal
from gateway.db.engine import transaction
from gateway.errors import Conflict
from gateway.escalations.setup import escalation_service
from gateway.exchange.service import CLAIM_ABANDONED_AFTER, DecisionLost, RerunGrant, Trace
from tests.integration.escalation.test_api import (
    ENGINES,
    Env,
    _denied_exchange,
    _object,
    migrated_url,
    running_env,
)

REQUESTER_SYSTEM = Principal(kind="system", subject="gemeente-amsterdam-vth", organisation="gemeente-amsterdam",
                             scopes=frozenset({"exchange"}))


@pytest.fixture(scope="module", params=ENGINES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("escalation-races")
    with running_env(tmp, migrated_url(str(request.param), tmp, request)) as the_env:
        yield the_env


@contextmanager
def _paused_before_its_entry(env: Env, monkeypatch: pytest.MonkeyPatch
                             ) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The first escalation step handed to the audit writer (entries with the change as companion) waits,
    without blocking the event loop, until ``go`` is set; ``reached`` says it got there. Its checks are made
    by then: what the database does with it once it goes on is what the test is about."""
    writer = escalation_service(env.container).writer
    record = writer.record
    reached, go = threading.Event(), threading.Event()

    async def held(events: Any, companion: Any = None) -> Any:
        if companion is not None and not reached.is_set() and any(
                e.event_type == EventType.ESCALATION_STEP for e in events):
            reached.set()
            await asyncio.to_thread(go.wait, 30)
        return await record(events, companion)

    with monkeypatch.context() as patch:
        patch.setattr(writer, "record", held)
        try:
            yield reached, go
        finally:
            go.set()


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    """``call()`` on a thread; its result, or the exception the TestClient re-raises for a 500, lands in the list."""
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(call())
        except Exception as exc:  # the server raised: that request was a 500
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def _trace() -> Trace:
    return Trace(uuid.uuid4().hex, uuid.uuid4().hex[:16], None)


def _active_cases(env: Env, exchange_id: str) -> list[str]:
    with env.container.engine.connect() as connection:
        return [r.id for r in connection.execute(select(escalation_cases.c.id).where(
            escalation_cases.c.exchange_id == exchange_id, escalation_cases.c.holder_org == "politie",
            escalation_cases.c.state.in_(["open", "in_review", "escalated"])))]


def _disclosed(env: Env, grant: RerunGrant, exchange_id: str) -> None:
    """What the exchange does when the holder disclosed under ``grant`` in the re-run ``exchange_id``: the
    decision is marked used in the transaction that logs the disclosure (here one of its own)."""
    with env.container.engine.begin() as connection:
        grant.mark_used(connection, exchange_id)


def _decided(env: Env) -> tuple[str, str]:
    """A case the holder's officer decided to allow (narrowed): its id and the decision's id."""
    case_id = env.open_case()
    decided = env.decide("po-politie", case_id, "allow", ["police_incidents"])
    assert decided.status_code == 200, decided.text
    return case_id, decided.json()["decision"]["id"]


# -- two objections at the same moment -------------------------------------------------------------------


def test_two_objections_at_the_same_moment_open_one_case_the_other_gets_409(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange_id = _denied_exchange(env, ["police_incidents"])
    env.token("po-gemeente"), env.token("gemeente-amsterdam-vth")
    with _paused_before_its_entry(env, monkeypatch) as (reached, go):
        first, results = _in_thread(lambda: _object(env, "po-gemeente", exchange_id))
        assert reached.wait(30), "the first objection never got to its insert"
        second = _object(env, "gemeente-amsterdam-vth", exchange_id)  # it checked too: no case yet
        assert second.status_code == 201, second.text
        go.set()
        first.join(30)
    late = results[0]
    assert isinstance(late, httpx.Response), late
    assert late.status_code == 409, late.text
    assert late.headers["content-type"].startswith("application/problem+json")
    assert _active_cases(env, exchange_id) == [second.json()["id"]]
    # Nothing of the late objection was written: no case, no case event, and no entry claiming it opened one.
    openings = [e for e in env.audit_events() if e["exchange_id"] == exchange_id]
    assert [(e["extra"]["action"], e["status"], e["extra"]["case_id"]) for e in openings] == [
        ("opened", "ok", second.json()["id"])]


# -- two deciders at once --------------------------------------------------------------------------------


def test_two_deciders_at_once_the_loser_gets_409_and_none_of_its_steps_is_on_record(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser's plan had three steps (start_review, decide, close — a deny closes the case), checked
    against the case as it was; none of them, nor its entries, may be written once the winner decided."""
    case_id = env.open_case()
    env.move_up(case_id, 2)
    version = env.version(case_id)
    env.token("desk-riec"), env.token("desk-lsp")
    with _paused_before_its_entry(env, monkeypatch) as (reached, go):
        late, results = _in_thread(lambda: env.decide("desk-riec", case_id, "deny", version=version))
        assert reached.wait(30), "the first decision never got to its write"
        first = env.decide("desk-lsp", case_id, "allow", ["police_incidents"], version=version)
        assert first.status_code == 200, first.text
        go.set()
        late.join(30)
    lost = results[0]
    assert isinstance(lost, httpx.Response), lost
    assert lost.status_code == 409, lost.text
    assert lost.headers["content-type"].startswith("application/problem+json")
    case = env.case(case_id)
    assert (case.state.value, case.decision["outcome"] if case.decision else None) == ("decided", "allow")
    # The loser's steps and their entries went together: none is on record as taken (nor taken back).
    # People act here with tokens of no stored account (entries name no username): desk-riec is riec-aa.
    assert [s for s in env.audit_steps(case_id) if s["requester"].get("org") == "riec-aa"] == []
    assert [(s["extra"]["action"], s["status"]) for s in env.audit_steps(case_id)] == [
        ("start_review", "ok"), ("decide", "ok")]


# -- linking a case to a legal gap twice at once ---------------------------------------------------------


def test_two_links_of_a_case_to_one_gap_at_once_link_it_once_without_a_500(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = env.open_case(), env.open_case()
    flagged = env.post("po-politie", f"/v1/escalations/{first}/legal-gap",
                       {"title": "No basis", "description": "The WGS names no ground for this."})
    assert flagged.status_code == 200, flagged.text
    gap_id = flagged.json()["id"]
    link = {"gap_id": gap_id}
    env.token("po-politie"), env.token("desk-riec")
    # The first link, checked, waits before the audit writer applies it until the other link has committed.
    with _paused_before_its_entry(env, monkeypatch) as (reached, go):
        late, results = _in_thread(lambda: env.post("po-politie", f"/v1/escalations/{second}/legal-gap", link))
        assert reached.wait(30), "the first link never got to the audit writer"
        other = env.post("desk-riec", f"/v1/escalations/{second}/legal-gap", link)
        assert other.status_code == 200, other.text
        go.set()
        late.join(30)
    answer = results[0]
    assert isinstance(answer, httpx.Response), f"the late link failed: {answer!r}"
    assert answer.status_code == 200, answer.text
    assert answer.json()["case_ids"] == [first, second]
    with env.container.sessions() as session:
        assert gap_store.get_gap(session, gap_id).case_ids == [first, second]
    # One link was made, so one flag of the second case is in the log (the late one changed nothing).
    flags = [e for e in env.audit_events() if e["extra"].get("case_id") == second
             and e["extra"].get("action") == "legal_gap_flagged"]
    assert [(e["status"], e["requester"]["org"]) for e in flags] == [("ok", "riec-aa")]


def test_a_step_that_fails_unexpectedly_is_logged_as_tried_and_not_applied(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    case_id = env.open_case()

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr(gap_store, "flag_case", broken)
    with pytest.raises(RuntimeError):  # the TestClient re-raises what became the 500
        env.post("po-politie", f"/v1/escalations/{case_id}/legal-gap",
                 {"title": "No basis", "description": "The WGS names no ground for this."})
    steps = [(s["extra"]["action"], s["status"], s["extra"].get("not_applied")) for s in env.audit_steps(case_id)]
    assert steps == [("legal_gap_flagged", "error", "runtimeerror")]  # no entry claims it was flagged


# -- re-runs citing one decision -------------------------------------------------------------------------


def test_concurrent_reruns_get_the_decision_once_and_a_rerun_that_applied_nothing_gives_it_back(env: Env) -> None:
    case_id, decision_id = _decided(env)
    service = escalation_service(env.container)
    portal = env.client.portal
    assert portal is not None

    async def both() -> tuple[RerunGrant | BaseException, ...]:
        return await asyncio.gather(service.grant_for_rerun(REQUESTER_SYSTEM, decision_id),
                                    service.grant_for_rerun(REQUESTER_SYSTEM, decision_id), return_exceptions=True)

    results = portal.call(both)
    grants = [r for r in results if isinstance(r, RerunGrant)]
    refused = [r for r in results if not isinstance(r, RerunGrant)]
    assert len(grants) == 1, results
    assert [type(r) for r in refused] == [Conflict], refused
    # The holder was unavailable: nothing used, the decision is given back and can be cited again.
    portal.call(service.rerun_ended, grants[0])
    assert env.case(case_id).state.value == "decided"
    again = portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)
    _disclosed(env, again, "ex-applied")
    portal.call(service.rerun_completed, again, "ex-applied", _trace())
    portal.call(service.rerun_ended, again)
    assert env.case(case_id).state.value == "closed"
    with pytest.raises(Conflict, match="used"):
        portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)


def test_a_rerun_completed_again_on_a_closed_case_raises_nothing(env: Env) -> None:
    case_id, decision_id = _decided(env)
    service = escalation_service(env.container)
    portal = env.client.portal
    assert portal is not None
    grant = portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)
    _disclosed(env, grant, "ex-1")
    portal.call(service.rerun_completed, grant, "ex-1", _trace())
    assert env.case(case_id).state.value == "closed"
    portal.call(service.rerun_completed, grant, "ex-2", _trace())  # refused and logged, not raised
    closes = [s for s in env.audit_steps(case_id) if s["extra"]["action"] == "close"]
    assert [s["extra"].get("rerun_exchange_id") for s in closes] == ["ex-1"]


def test_a_reservation_left_by_a_rerun_that_died_is_taken_over_once_stale(env: Env) -> None:
    case_id, decision_id = _decided(env)
    service = escalation_service(env.container)
    portal = env.client.portal
    assert portal is not None
    dead = portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)  # never ends
    with pytest.raises(Conflict):
        portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)
    before = env.clock.now()
    env.clock.advance(CLAIM_ABANDONED_AFTER + timedelta(seconds=1))
    try:
        taken = portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)
        with pytest.raises(DecisionLost):  # it lost the decision: its disclosure is refused, nothing written
            _disclosed(env, dead, "ex-dead")
        portal.call(service.rerun_completed, dead, "ex-dead", _trace())  # (not called then; refused anyway)
        assert (env.case(case_id).state.value, env.case(case_id).rerun_exchange_id) == ("decided", None)
        _disclosed(env, taken, "ex-live")
        portal.call(service.rerun_completed, taken, "ex-live", _trace())
        assert env.case(case_id).state.value == "closed"
    finally:
        env.clock.set(before)


def test_a_decision_used_by_a_rerun_whose_close_failed_is_never_given_back_nor_taken_over(env: Env) -> None:
    """The holder disclosed in a re-run, and closing the case then failed (here: was never tried). The
    decision is used all the same: the re-run's end does not give it back, a re-run long after its
    reservation went stale is refused, and that refusal finishes the close, in the log."""
    case_id, decision_id = _decided(env)
    service = escalation_service(env.container)
    portal = env.client.portal
    assert portal is not None
    grant = portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)
    _disclosed(env, grant, "ex-used")
    portal.call(service.rerun_ended, grant)
    assert (env.case(case_id).state.value, env.case(case_id).rerun_claim) == ("decided", grant.claim)
    before = env.clock.now()
    env.clock.advance(CLAIM_ABANDONED_AFTER + timedelta(seconds=1))
    try:
        with pytest.raises(Conflict, match="used already"):
            portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)
    finally:
        env.clock.set(before)
    assert env.case(case_id).state.value == "closed"
    closes = [(s["status"], s["extra"].get("rerun_exchange_id")) for s in env.audit_steps(case_id)
              if s["extra"]["action"] == "close"]
    assert closes == [("ok", "ex-used")]
    with pytest.raises(Conflict, match="used already"):
        portal.call(service.grant_for_rerun, REQUESTER_SYSTEM, decision_id)


# -- a crash between a step's entry and the step ---------------------------------------------------------


def test_a_steps_entry_is_never_durable_before_the_step(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that dies between writing a step's audit entry and applying the step leaves an entry that
    claims a step nobody took, and no retraction (the process that would write it is gone). So while the
    step is applied, its entry must not be durable yet: another connection — what survives a crash — must
    not see it. Then they commit together; and a step that fails leaves no entry claiming it."""
    case_id = env.open_case()
    act = case_store.act
    seen_while_applying: list[int] = []

    def observed(*args: Any, **kwargs: Any) -> Any:
        with env.container.engine.connect() as connection:  # not the step's own: what a crash would leave
            seen_while_applying.append(len([
                row for row in connection.execute(select(audit_entries.c.canonical).where(
                    audit_entries.c.event_type == "escalation.step")) if case_id in row.canonical]))
        return act(*args, **kwargs)

    monkeypatch.setattr(case_store, "act", observed)
    assert env.review("po-politie", case_id).status_code == 200
    assert seen_while_applying == [0], "the entry was durable before its step: a crash now would leave it"
    assert [(s["extra"]["action"], s["status"]) for s in env.audit_steps(case_id)] == [("start_review", "ok")]
    assert env.case(case_id).state.value == "in_review"


def test_when_the_log_cannot_commit_the_step_is_not_taken_either(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other half: the step ran in the log's transaction, then its commit failed (a full disk, a lost
    connection). Neither is kept — 503, the case as it was, no entry — and the next try succeeds."""
    case_id = env.open_case()
    log = audit_services(env.container).log
    append = log.append_prepared

    def failing_commit(prepared: Any, within: Any = None) -> Any:
        def then_fail(connection: Any, receipts: Any) -> None:
            if within is not None:
                within(connection, receipts)  # the step is applied in the transaction ...
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))  # ... which then fails

        return append(prepared, then_fail)

    with monkeypatch.context() as patch:
        patch.setattr(log, "append_prepared", failing_commit)
        refused = env.review("po-politie", case_id)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (env.case(case_id).state.value, env.case(case_id).version) == ("open", 1)
    assert env.audit_steps(case_id) == []
    assert env.review("po-politie", case_id).status_code == 200
    assert [(s["extra"]["action"], s["status"]) for s in env.audit_steps(case_id)] == [("start_review", "ok")]


@pytest.mark.parametrize(("column", "value"), [("tier", 4), ("tier", 0), ("state", "reopened"), ("version", 0)])
def test_the_database_refuses_a_case_state_the_workflow_has_not(env: Env, column: str, value: object) -> None:
    """The state machine (escalation/states.py) never takes a case past tier 3, into a state it does not
    list, or below version 1; the database refuses such a row too, so a defect in a code path that writes the
    case row (or a hand-made fix in SQL) cannot leave a case no step can be taken on — the migrated schema,
    on both engines."""
    case_id = env.open_case()
    with pytest.raises(IntegrityError), transaction(env.container.sessions) as session:
        session.execute(update(escalation_cases).where(escalation_cases.c.id == case_id).values({column: value}))
    assert (env.case(case_id).tier, env.case(case_id).state.value, env.case(case_id).version) == (1, "open", 1)


def test_the_database_refuses_a_legal_gap_status_the_register_has_not(env: Env) -> None:
    case_id = env.open_case()
    gap = env.post("po-politie", f"/v1/escalations/{case_id}/legal-gap",
                   {"title": "Bibob cooperation", "description": "Can municipalities share Bibob files?"})
    assert gap.status_code == 200, gap.text
    with pytest.raises(IntegrityError), transaction(env.container.sessions) as session:
        session.execute(update(legal_gaps).where(legal_gaps.c.id == gap.json()["id"]).values(status="reopened"))
