"""Scenario S9 end to end over real HTTP (issue 6): the police refuses → the gateway opens a case → tier 1
misses its deadline and the scheduler moves it up → tier 2 allows `police_incidents` only (one of two
concurrent decisions wins, the other gets 409) → the requester re-runs citing the decision and receives
exactly the narrowed data; the holder learns of the binding decision through a statement the gateway signs;
the audit log shows every step."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from audit import AuditEvent, EventType, Receipt
from audit.tables import audit_entries
from connectors.errors import HolderUnavailable
from connectors.protocol import HolderAnswer
from escalation import cases as case_store
from escalation.cases import ConcurrentUpdate
from escalation.states import Action
from gateway.clock import FixedClock
from gateway.escalations.setup import escalation_service
from gateway.exchange.service import CLAIM_ABANDONED_AFTER
from gateway.exchange.setup import exchange_service
from tests.auth_helpers import account_id
from tests.request_cancellation import cancel_request, noting_request_tasks, written_late
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-901", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"}}


def _wait_for(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _steps(stack: Stack, case_id: str) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == "escalation.step").order_by(audit_entries.c.log_index)).all()
    entries = [json.loads(r.canonical)["event"] for r in rows]
    return [e for e in entries if e["extra"].get("case_id") == case_id]


def test_s9_refusal_case_deadline_tier_2_narrowed_allow_and_rerun(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    with running_stack(tmp_path, clock=clock, settings_overrides={"escalation_scan_seconds": 0.2}) as stack:
        subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["police-confidential"]]
        body = BIBOB | {"subjects": subjects, "holders": ["politie"],
                        "categories": ["police_incidents", "criminal_intelligence"]}
        first = stack.post(MUNICIPALITY, "/v1/exchanges", body)
        assert first.status_code == 200, first.text
        target = first.json()["targets"][0]
        assert target["outcome"] == "refused-by-holder"
        case_id = target["escalation_id"]
        assert case_id

        police_po = stack.person("po-politie", "politie", ["privacy-officer"])
        bank_po = stack.person("po-abn", "abn-amro", ["privacy-officer"])
        case = stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()
        assert (case["state"], case["tier"], case["trigger"]) == ("open", 1, "holder-refused")
        assert case["requested_categories"] == ["criminal_intelligence", "police_incidents"]
        assert case["deadline"] == "2026-12-02"  # five working days
        assert stack.call(bank_po, "GET", f"/v1/escalations/{case_id}").status_code == 404  # not a party

        reviewed = stack.call(police_po, "POST", f"/v1/escalations/{case_id}/review",
                              {"expected_version": case["version"]})
        assert reviewed.status_code == 200, reviewed.text
        assert reviewed.json()["state"] == "in_review"

        # Tier 1 lets its deadline pass; the gateway's scheduler moves the case to tier 2 by itself.
        clock.advance(timedelta(days=8))
        stack.forget_tokens()
        police_po = stack.person("po-politie", "politie", ["privacy-officer"])

        def at_tier_2() -> bool:
            return bool(stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()["tier"] == 2)

        _wait_for(at_tier_2)
        case = stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()
        assert case["state"] == "escalated"
        assert case["deciders"] == ["landelijk-steunpunt", "riec-aa"]
        refused = stack.call(police_po, "POST", f"/v1/escalations/{case_id}/decision", {
            "expected_version": case["version"], "outcome": "allow", "motivation": "tier 1 may not decide now",
            "permitted_categories": ["police_incidents"]})
        assert refused.status_code == 403  # tier 1's party is no decider at tier 2

        desk = stack.person("desk-riec", "riec-aa", ["administrator"])
        steunpunt = stack.person("desk-lsp", "landelijk-steunpunt", ["administrator"])
        decision = {"expected_version": case["version"], "outcome": "allow",
                    "motivation": "Incidents are necessary for the Bibob advice; intelligence stays out.",
                    "permitted_categories": ["police_incidents"]}
        won = stack.call(desk, "POST", f"/v1/escalations/{case_id}/decision", decision)
        assert won.status_code == 200, won.text
        lost = stack.call(steunpunt, "POST", f"/v1/escalations/{case_id}/decision", decision | {"outcome": "deny"})
        assert lost.status_code == 409  # decided on a stale version: the first decision stands
        decided = won.json()
        assert decided["state"] == "decided"
        assert decided["decision"]["permitted_categories"] == ["police_incidents"]
        decision_id = decided["decision"]["id"]

        feed = stack.get(MUNICIPALITY, "/v1/escalations/feed").json()
        assert [(i["case"]["id"], i["awaiting"]) for i in feed] == [(case_id, "rerun")]

        rerun = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"escalation_decision": decision_id})
        assert rerun.status_code == 200, rerun.text
        police = rerun.json()["targets"][0]
        assert police["outcome"] == "allowed-narrowed"
        assert police["escalation_decision_applied"] is True
        assert police["permitted_categories"] == ["police_incidents"]
        assert police["removed_categories"] == ["criminal_intelligence"]
        assert police["records"], "the holder answered under the binding decision"
        assert {r["category"] for r in police["records"]} == {"police_incidents"}

        again = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"escalation_decision": decision_id})
        assert again.status_code == 409  # a decision is used once
        closed = stack.call(desk, "GET", f"/v1/escalations/{case_id}").json()
        assert closed["state"] == "closed"

        steps = _steps(stack, case_id)
        assert [(s["extra"]["action"], s["extra"]["tier"], s["extra"]["state"]) for s in steps] == [
            ("opened", 1, "open"), ("start_review", 1, "in_review"), ("deadline_missed", 2, "escalated"),
            ("start_review", 2, "in_review"), ("decide", 2, "decided"), ("close", 2, "closed")]
        decide_entry = steps[4]
        assert decide_entry["decision"] == "narrowed"
        assert decide_entry["categories"] == ["police_incidents"]
        assert decide_entry["requester"] == {"org": "riec-aa", "system": None,
                                             "user": account_id(stack.container, "desk-riec")}
        assert "motivation_sha256" in decide_entry["extra"]
        assert "Bibob advice" not in json.dumps(steps)  # free text stays out of the log


def _events(stack: Stack) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index)).all()
    return [json.loads(r.canonical)["event"] for r in rows]


def _event_types(stack: Stack) -> list[tuple[str, str | None]]:
    return [(e["event_type"], e["holder"]) for e in _events(stack)]


def _allowed(stack: Stack) -> tuple[str, dict[str, Any], str]:
    """The police refuses, its officer allows `police_incidents`: the case, the re-run citing the decision,
    and the officer's token."""
    subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["police-confidential"]]
    body = BIBOB | {"subjects": subjects, "holders": ["politie"],
                    "categories": ["police_incidents", "criminal_intelligence"]}
    case_id = stack.post(MUNICIPALITY, "/v1/exchanges", body).json()["targets"][0]["escalation_id"]
    police_po = stack.person("po-politie", "politie", ["privacy-officer"])
    decision_id = stack.allow(police_po, case_id, ["police_incidents"],
                              "Incidents are necessary for the Bibob advice; intelligence stays out.")
    return case_id, body | {"escalation_decision": decision_id}, police_po


def test_a_decision_is_used_once_even_by_concurrent_reruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run that applied nothing gives the decision back; of two re-runs at once the second is refused
    (409) while the first still holds it, and the holder is asked, and discloses, once."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        case_id, rerun, police_po = _allowed(stack)

        with monkeypatch.context() as patch:  # the holder cannot be reached: the re-run applies nothing
            patch.setattr(exchange_service(stack.container).deps.connectors, "get", lambda _system: None)
            failed = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert failed.status_code == 200, failed.text
        assert failed.json()["targets"][0]["outcome"] == "holder-unavailable"

        # The next re-run is held after the holder answered, before it closes the case, until another
        # re-run citing the same decision has had its answer.
        desk = escalation_service(stack.container)
        inside, finish = threading.Event(), threading.Event()
        close = desk.rerun_completed

        async def held(*args: Any) -> None:
            if not inside.is_set():
                inside.set()
                await asyncio.to_thread(finish.wait, 30)
            await close(*args)

        monkeypatch.setattr(desk, "rerun_completed", held)
        answers: list[httpx.Response] = []
        first = threading.Thread(target=lambda: answers.append(stack.post(MUNICIPALITY, "/v1/exchanges", rerun)))
        first.start()
        assert inside.wait(30), "the first re-run never got an answer from the holder"
        second = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        finish.set()
        first.join(30)

        assert second.status_code == 409, second.text
        assert second.headers["content-type"].startswith("application/problem+json")
        assert answers[0].status_code == 200, answers[0].text
        police = answers[0].json()["targets"][0]
        assert police["escalation_decision_applied"] is True
        assert {r["category"] for r in police["records"]} == {"police_incidents"}
        assert stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()["state"] == "closed"
        logged = _event_types(stack)
        assert logged.count(("disclosure", "politie")) == 1  # the second re-run asked no holder
        assert logged.count(("exchange.requested", None)) == 3  # the first run, the failed re-run, the winner


@pytest.mark.parametrize("failure", [ConcurrentUpdate("the close lost a race"), RuntimeError("a defect")],
                         ids=["refused", "defect"])
def test_a_decision_disclosed_under_stays_used_when_closing_its_case_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """The holder disclosed in a re-run, then closing the case failed (a refusal: the re-run is answered; a
    defect: it is a 500, but its disclosure is logged). The decision is used all the same, for good: a re-run
    citing it after the first one's reservation went stale is refused (409) and asks no holder, and it
    finishes the close, in the audit log, citing the exchange that used the decision."""
    clock = FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    with running_stack(tmp_path, clock=clock) as stack:
        case_id, rerun, police_po = _allowed(stack)
        act = case_store.act

        def failing_close(*args: Any, **kwargs: Any) -> Any:
            if args[3] is Action.CLOSE:
                raise failure
            return act(*args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(case_store, "act", failing_close)
            first = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        if isinstance(failure, ConcurrentUpdate):
            assert first.status_code == 200, first.text
            assert {r["category"] for r in first.json()["targets"][0]["records"]} == {"police_incidents"}
        else:
            assert first.status_code == 500, first.text
        assert stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()["state"] == "decided"
        [disclosed] = [e for e in _events(stack) if (e["event_type"], e["holder"]) == ("disclosure", "politie")]

        clock.advance(CLAIM_ABANDONED_AFTER + timedelta(seconds=1))  # the first re-run's reservation is stale
        second = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert second.status_code == 409, second.text
        assert second.headers["content-type"].startswith("application/problem+json")
        assert "used" in second.json()["detail"]
        logged = _event_types(stack)
        assert logged.count(("disclosure", "politie")) == 1  # the holder was asked, and disclosed, once
        assert logged.count(("exchange.requested", None)) == 2  # the first run and the re-run that disclosed
        assert stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()["state"] == "closed"
        closes = [(s["status"], s["extra"].get("not_applied"), s["extra"].get("rerun_exchange_id"))
                  for s in _steps(stack, case_id) if s["extra"]["action"] == "close"]
        # The failed close wrote no entry claiming it (a step and its entry commit together); a defect is on
        # record as tried and not applied. The close the second re-run finished is the one on record.
        tried = [] if isinstance(failure, ConcurrentUpdate) else [("error", "runtimeerror", None)]
        assert closes == [*tried, ("ok", None, disclosed["exchange_id"])]
        third = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)  # and once closed, as before
        assert third.status_code == 409, third.text


def test_a_rerun_that_outlived_its_reservation_discloses_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run whose holder answers only after the re-run's reservation went stale, and another re-run took
    the decision over and used it: its disclosure is refused (409, nothing answered or logged as disclosed),
    so the decision is used once, not once per re-run that got to its holder."""
    clock = FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    with running_stack(tmp_path, clock=clock) as stack:
        case_id, rerun, police_po = _allowed(stack)
        connectors = exchange_service(stack.container).deps.connectors
        real_get = connectors.get
        answered, finish = threading.Event(), threading.Event()

        class _SlowFirst:
            """The holder's connector; the first answer reaches the gateway only once ``finish`` is set."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner

            async def query(self, query: Any) -> Any:
                answer = await self.inner.query(query)
                if not answered.is_set():
                    answered.set()
                    await asyncio.to_thread(finish.wait, 30)
                return answer

        monkeypatch.setattr(connectors, "get", lambda system: _SlowFirst(real_get(system)))
        answers: list[httpx.Response] = []
        late = threading.Thread(target=lambda: answers.append(stack.post(MUNICIPALITY, "/v1/exchanges", rerun)))
        late.start()
        assert answered.wait(30), "the first re-run never got an answer from the holder"
        clock.advance(CLAIM_ABANDONED_AFTER + timedelta(seconds=1))  # its reservation is stale: taken over
        taken_over = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        finish.set()
        late.join(30)

        assert taken_over.status_code == 200, taken_over.text
        assert taken_over.json()["targets"][0]["records"]
        assert answers[0].status_code == 409, answers[0].text
        assert answers[0].headers["content-type"].startswith("application/problem+json")
        assert "nothing of this one was disclosed" in answers[0].json()["detail"]
        assert "police_incidents" not in answers[0].text
        assert _event_types(stack).count(("disclosure", "politie")) == 1
        closed = stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()
        assert closed["state"] == "closed"
        closes = [s["extra"].get("rerun_exchange_id") for s in _steps(stack, case_id)
                  if s["extra"]["action"] == "close"]
        assert closes == [taken_over.json()["exchange_id"]]


def _cancelled_as_disclosed(stack: Stack, monkeypatch: pytest.MonkeyPatch, *, early: bool = False) -> None:
    """The request's own task is cancelled (as by a stopping server) as the request hands the audit writer its
    ``disclosure`` entries, and again as it hands the ``request.failed`` entry that ends it (the cancellation
    arrives a second time while the request ends) — with ``early``, also 0.2 s after the first, while the
    request's end still waits for the disclosures' commit; the writer begins the disclosures' transaction half a second
    late (busy with other batches, holding no lock meanwhile), so both cancellations arrive while those wait to
    be committed, which they are all the same. (They may be handed in a task of their own: the request's task is
    the one that entered ``_failing_closed``, as uvicorn's task of the request does.)"""
    service = exchange_service(stack.container)
    recording = service._record

    async def cancelled(events: list[AuditEvent], *args: Any) -> list[Receipt]:
        if any(e.event_type in {EventType.DISCLOSURE, EventType.REQUEST_FAILED} for e in events):
            cancel_request()
            if early and any(e.event_type == EventType.DISCLOSURE for e in events):
                asyncio.get_running_loop().call_later(0.2, cancel_request)
        return await recording(events, *args)

    monkeypatch.setattr(service, "_record", cancelled)
    noting_request_tasks(service, monkeypatch)
    written_late(stack, monkeypatch, EventType.DISCLOSURE)


@pytest.mark.parametrize("early", [False, True])
def test_a_rerun_cancelled_while_its_disclosure_is_logged_keeps_the_decision_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, early: bool) -> None:
    """The commit that logs a re-run's disclosure marks its decision used (``RerunGrant.mark_used``), provided the
    re-run still holds the decision's reservation. Handed to the audit writer, that commit is made whether or not
    the re-run waits for it. Found while hunting the race of the Idempotency-Key's claim (same shape): a re-run
    without a key, cancelled meanwhile, gave the reservation back at once (``rerun_ended``), before that commit,
    which then failed (``DecisionLost``): the police's answer was not logged, and the decision could be used
    again, the police asked once more. (Cancelled once, the re-run's ending, ``request.failed``, was handed to
    the writer after that commit and waited for, which hid the race; cancelled again meanwhile, as the attempt's
    end allows for, it did not wait.) Now the re-run waits for that commit before it ends: the disclosure is
    logged, then the request's ending (``request-cancelled``: the answer never reached the requester), and the
    decision stays used (the next re-run citing it is refused and the case closed). Cancelled once more while
    it waited for that commit (``early``), the re-run gave the reservation back before it all the same; now that
    give-back waits for the commit in a shielded task of its own."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        case_id, rerun, police_po = _allowed(stack)
        with monkeypatch.context() as patch:
            _cancelled_as_disclosed(stack, patch, early=early)
            with contextlib.suppress(httpx.HTTPError):  # the server may drop the connection of a cancelled request
                cancelled = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
                assert cancelled.status_code == 500, cancelled.text
            deadline = time.monotonic() + 10  # not waited for by the cancelled request: it may answer before
            while ("request.failed", None) not in _event_types(stack) and time.monotonic() < deadline:
                time.sleep(0.02)
        rerun_id = next(e["exchange_id"] for e in reversed(_events(stack)) if e["event_type"] == "exchange.requested")
        assert [(e["event_type"], e["holder"], e["reasons"]) for e in _events(stack)
                if e["exchange_id"] == rerun_id][-2:] == [("disclosure", "politie", []),
                                                         ("request.failed", None, ["request-cancelled"])]
        again = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert again.status_code == 409, again.text
        assert "has been used already" in again.json()["detail"]
        assert _event_types(stack).count(("disclosure", "politie")) == 1  # the police was asked once
        assert stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()["state"] == "closed"


def test_a_holder_refuses_a_forged_or_misdirected_decision(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        tokens = stack.container.services["auth"].tokens
        url = f"{stack.partner_urls['politie-bvh']}/holder/v1/query"
        subject = stack.world.scenarios()["police-confidential"][0]
        query = {"request_id": "x-1:politie", "partnership": RIEC, "purpose": "bibob-integrity-check",
                 "requester_organisation": "gemeente-amsterdam", "categories": ["police_incidents"],
                 "subjects": [subject]}
        access = tokens.issue(subject="wgs-gateway", organisation="wgs-gateway", scopes=["holder"],
                              audience="politie-bvh").access_token
        bearer = {"Authorization": f"Bearer {access}"}

        def statement(**claims: Any) -> str:
            return str(tokens.sign_statement(typ=claims.pop("typ", "wgs-decision+jwt"),
                                             audience=claims.pop("aud", "politie-bvh"), ttl_seconds=60,
                                             claims={"decision_id": "d-1", "request_id": "x-1:politie",
                                                     "categories": ["police_incidents"]} | claims))

        plain = httpx.post(url, json=query, headers=bearer).json()
        assert plain["status"] == "refused"
        for forged in (statement(aud="kvk-handelsregister"), statement(request_id="other:politie"),
                       statement(categories=["identity"]), statement(typ="JWT"), access):
            response = httpx.post(url, json=query | {"escalation_decision": forged}, headers=bearer)
            assert response.status_code == 422, response.text
        fresh = query | {"request_id": "x-2:politie"}  # a request id answered once stays answered (409 otherwise)
        bound = httpx.post(url, json=fresh | {"escalation_decision": statement(request_id="x-2:politie")},
                           headers=bearer).json()
        assert bound["status"] == "answered"
        assert {r["category"] for r in bound["records"]} == {"police_incidents"}

        # discovery (a hit/no-hit-only holder) checks the same way, and a decision covers named categories only
        discover = f"{stack.partner_urls['politie-bvh']}/holder/v1/discover"
        discovery = {k: query[k] for k in ("partnership", "purpose", "subjects", "categories")} | {
            "request_id": "x-3:politie"}
        assert httpx.post(discover, json=discovery, headers=bearer).json()["status"] == "refused"
        for forged in (statement(request_id="x-1:politie"),
                       statement(request_id="x-3:politie", aud="kvk-handelsregister")):
            response = httpx.post(discover, json=discovery | {"escalation_decision": forged}, headers=bearer)
            assert response.status_code == 422, response.text
        decided = statement(request_id="x-3:politie")
        every_category = discovery | {"categories": [], "escalation_decision": decided}
        assert httpx.post(discover, json=every_category, headers=bearer).status_code == 422
        found = httpx.post(discover, json=discovery | {"escalation_decision": decided}, headers=bearer).json()
        assert (found["status"], list(found["hits"])) == ("answered", [subject])


def test_an_escalation_decision_does_not_lift_rule_5_at_the_holder(tmp_path: Path) -> None:
    """Rule 8 overrides rules 6-7 only, never rule 5 (minors only where the purpose allows them). The police
    refuse an undeclared minor under Bibob (`minor-not-allowed`); a case opens like for any refusal, and even
    when a decider allows it, the re-run's signed decision must not make the holder disclose the minor's
    records: only the holder's own objection can be overruled, not the law."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["minor"]]
        body = BIBOB | {"subjects": subjects, "holders": ["politie"], "categories": ["police_incidents"]}
        first = stack.post(MUNICIPALITY, "/v1/exchanges", body).json()["targets"][0]
        assert first["outcome"] == "refused-by-holder"
        assert "minor-not-allowed" in first["reasons"][-1]["message"]
        police_po = stack.person("po-politie", "politie", ["privacy-officer"])
        decision_id = stack.allow(police_po, first["escalation_id"], ["police_incidents"],
                                  "The incident matters for the Bibob advice.")
        rerun = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"escalation_decision": decision_id})
        assert rerun.status_code == 200, rerun.text
        police = rerun.json()["targets"][0]
        assert police["escalation_decision_applied"] is True  # the holder was told of the decision ...
        assert police["outcome"] == "refused-by-holder"  # ... and still refused: rule 5 stands
        assert "minor-not-allowed" in police["reasons"][-1]["message"]
        assert police["records"] == []
        assert ("disclosure", "politie") not in _event_types(stack)


def test_a_hit_only_holder_s_refusal_is_settled_like_any_other(tmp_path: Path) -> None:
    """A hit/no-hit-only holder refuses for the subject it keeps confidential (its discovery refusal); the case
    that opens can be decided, and the re-run tells the holder of the decision in its discovery call, which
    it then answers (a hit) instead of refusing again — the decision is used, the case settled."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["police-confidential"]]
        body = {"partnership": "fec", "purpose": "taskforce-subject-check",
                "legal_basis": "WGS (FEC) with covenant", "case_reference": "FEC-TF-10",
                "signal": {"type": "unusual-transaction", "reference": "MOT-2026-3"}, "subjects": subjects,
                "holders": ["politie"], "categories": ["ongoing_investigation"]}
        first = stack.post("abn-amro-fec", "/v1/exchanges", body).json()["targets"][0]
        assert (first["outcome"], first["hit"]) == ("refused-by-holder", None)
        police_po = stack.person("po-politie", "politie", ["privacy-officer"])
        decision_id = stack.allow(police_po, first["escalation_id"], ["ongoing_investigation"],
                                  "The bank may learn that the customer is known, to freeze the account.")
        rerun = stack.post("abn-amro-fec", "/v1/exchanges",
                           body | {"escalation_decision": decision_id})
        assert rerun.status_code == 200, rerun.text
        police = rerun.json()["targets"][0]
        assert (police["outcome"], police["hit"], police["escalation_decision_applied"]) == ("allowed", True, True)
        assert police["records"] == []
        assert stack.call(police_po, "GET", f"/v1/escalations/{first['escalation_id']}").json()["state"] == "closed"
        again = stack.post("abn-amro-fec", "/v1/exchanges", body | {"escalation_decision": decision_id})
        assert again.status_code == 409  # used once


def test_an_allow_on_an_objection_to_a_reruns_outcome_is_honoured_by_the_next_rerun(tmp_path: Path) -> None:
    """The requester objects to what a re-run brought (narrowed); the police's officer allows on the new case;
    re-running the same request citing that decision gets it honoured. The new case used to copy the re-run's
    row fingerprint, which includes the decision it cited, so the policy never matched a re-run to it and the
    police refused again."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        _case_id, rerun, police_po = _allowed(stack)
        ran = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert ran.status_code == 200, ran.text
        assert ran.json()["targets"][0]["outcome"] == "allowed-narrowed"

        objected = stack.post(MUNICIPALITY, "/v1/escalations", {
            "exchange_id": ran.json()["exchange_id"], "holder": "politie",
            "motivation": "The incidents of the second year are needed as well; please review the narrowing."})
        assert objected.status_code == 201, objected.text
        case = objected.json()
        decided = stack.call(police_po, "POST", f"/v1/escalations/{case['id']}/decision", {
            "expected_version": case["version"], "outcome": "allow", "permitted_categories": ["police_incidents"],
            "motivation": "Incidents are necessary for the Bibob advice; intelligence stays out."})
        assert decided.status_code == 200, decided.text

        again = stack.post(MUNICIPALITY, "/v1/exchanges",
                           rerun | {"escalation_decision": decided.json()["decision"]["id"]})
        assert again.status_code == 200, again.text
        police = again.json()["targets"][0]
        assert police["escalation_decision_applied"] is True
        assert {r["category"] for r in police["records"]} == {"police_incidents"}
        assert stack.call(police_po, "GET", f"/v1/escalations/{case['id']}").json()["state"] == "closed"


class _Refusing:
    """The holder's connector, refusing every query (whatever the signed decision says)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def query(self, query: Any) -> Any:
        return HolderAnswer(status="refused", refusal_reason="investigation-confidentiality")


@pytest.mark.parametrize(("failure", "action", "reason"), [
    ("refused", "decision_refused_by_holder", "holder:investigation-confidentiality"),
    ("unavailable", "decision_holder_unavailable", "holder-not-connected")])
def test_a_holder_that_does_not_follow_a_binding_allow_is_on_the_case(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str, action: str, reason: str) -> None:
    """The police refuses (or cannot be asked in) the re-run citing an allow. That used to leave no trace on
    the case: the decision was given back and later expired quietly, its deciders never told. Now the case
    has a step naming the re-run and the reason's code (no free text), in its history and the audit log, the
    parties and the deciding tier are notified, and the decision stays usable: the next re-run discloses."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        case_id, rerun, police_po = _allowed(stack)
        desk = escalation_service(stack.container)
        told: list[tuple[set[str], dict[str, Any]]] = []
        monkeypatch.setattr(desk.notifier, "notify", lambda orgs, payload: told.append((set(orgs), payload)))
        connectors = exchange_service(stack.container).deps.connectors
        real_get = connectors.get
        with monkeypatch.context() as patch:
            patch.setattr(connectors, "get", (lambda system: _Refusing(real_get(system))) if failure == "refused"
                          else (lambda _system: None))
            ignored = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert ignored.status_code == 200, ignored.text
        police = ignored.json()["targets"][0]
        assert police["outcome"] == ("refused-by-holder" if failure == "refused" else "holder-unavailable")
        assert police["escalation_decision_applied"] is True
        assert police.get("escalation_id") is None  # a re-run opens no new case

        case = stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()
        assert case["state"] == "decided"  # the decision stays usable until it expires
        step = case["history"][-1]
        assert (step["action"], step["state"], step["actor_org"]) == (action, "decided", None)
        assert ignored.json()["exchange_id"] in step["motivation"]
        assert reason in step["motivation"]
        [entry] = [s for s in _steps(stack, case_id) if s["extra"]["action"] == action]
        assert entry["extra"]["holder_reason"] == reason
        assert entry["extra"]["rerun_exchange_id"] == ignored.json()["exchange_id"]
        assert entry["extra"]["decision_id"] == rerun["escalation_decision"]
        assert entry["extra"]["state"] == "decided"
        # The gateway's exchange took the step: not the deadline scheduler (which it
        # was named as), nor the requester's system (whose re-run's entries name it, and the holder's answer).
        assert entry["requester"] == {"org": "wgs-gateway", "system": "exchange", "user": None}
        [(recipients, payload)] = [(r, p) for r, p in told if p["event"] == f"escalation.{action}"]
        assert recipients == {"gemeente-amsterdam", "politie"}  # the parties; tier 1's deciders are the parties
        assert (payload["case_id"], payload["holder_reason"]) == (case_id, reason)
        feed = stack.get(MUNICIPALITY, "/v1/escalations/feed").json()
        assert [(i["case"]["id"], i["awaiting"]) for i in feed] == [(case_id, "rerun")]

        again = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)  # the holder follows the decision now
        assert again.status_code == 200, again.text
        assert {r["category"] for r in again.json()["targets"][0]["records"]} == {"police_incidents"}
        assert stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()["state"] == "closed"
        [close] = [s for s in _steps(stack, case_id) if s["extra"]["action"] == "close"]
        assert close["extra"]["rerun_exchange_id"] == again.json()["exchange_id"]
        assert close["requester"] == {"org": "wgs-gateway", "system": "exchange", "user": None}


def _entries(stack: Stack) -> list[tuple[int, dict[str, Any]]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.log_index, audit_entries.c.canonical)
                                  .order_by(audit_entries.c.log_index)).all()
    return [(r.log_index, json.loads(r.canonical)["event"]) for r in rows]


def test_a_holders_refusal_of_a_binding_allow_is_on_the_case_in_the_same_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-run's `holder.refused` entry committed first and the case's `decision_refused_by_holder` step
    after it, in a transaction of its own: a gateway that died in between left the refusal in the log, not on
    the case, and the deciders never heard. The step now commits with the refusal. Here the separate step
    never runs (as if the process died after the re-run's entries): the case has the step all the same, its
    entry right after the refusal's, and the requester's receipt does not cite it (the entry is the case's)."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        case_id, rerun, police_po = _allowed(stack)
        desk = escalation_service(stack.container)
        told: list[dict[str, Any]] = []
        monkeypatch.setattr(desk.notifier, "notify", lambda _orgs, payload: told.append(payload))

        async def died_before_it(*_args: Any) -> None:
            return None

        monkeypatch.setattr(desk, "rerun_not_applied", died_before_it)
        connectors = exchange_service(stack.container).deps.connectors
        real_get = connectors.get
        with monkeypatch.context() as patch:
            patch.setattr(connectors, "get", lambda system: _Refusing(real_get(system)))
            refused = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert refused.status_code == 200, refused.text
        exchange_id = refused.json()["exchange_id"]
        assert refused.json()["targets"][0]["outcome"] == "refused-by-holder"

        case = stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()
        assert (case["state"], case["history"][-1]["action"]) == ("decided", "decision_refused_by_holder")
        logged = _entries(stack)
        [(refusal_index, _)] = [(i, e) for i, e in logged
                                if e["event_type"] == "holder.refused" and e["exchange_id"] == exchange_id]
        [(step_index, step)] = [(i, e) for i, e in logged if e["event_type"] == "escalation.step"
                                and e["extra"]["action"] == "decision_refused_by_holder"]
        assert step_index == refusal_index + 1
        assert (step["status"], step["extra"]["rerun_exchange_id"]) == ("ok", exchange_id)
        assert step["requester"] == {"org": "wgs-gateway", "system": "exchange", "user": None}
        receipt = refused.json()["receipt"]["audit_indices"]
        assert refusal_index in receipt
        assert step_index not in receipt
        assert [p["event"] for p in told] == ["escalation.decision_refused_by_holder"]


def test_a_step_that_cannot_commit_with_the_refusal_costs_the_refusal_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step failing inside the refusal's transaction (here: a defect in taking it) must not take the
    holder's refusal out of the log with it: the refusal is logged on its own, the step is tried on its own
    after it and, failing again, is on record as tried and not applied; the re-run is answered as usual."""
    with running_stack(tmp_path, clock=FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))) as stack:
        case_id, rerun, police_po = _allowed(stack)
        act = case_store.act

        def act_failing(*args: Any, **kwargs: Any) -> Any:
            if args[3] is Action.DECISION_REFUSED_BY_HOLDER:
                raise RuntimeError("a defect")
            return act(*args, **kwargs)

        connectors = exchange_service(stack.container).deps.connectors
        real_get = connectors.get
        with monkeypatch.context() as patch:
            patch.setattr(case_store, "act", act_failing)
            patch.setattr(connectors, "get", lambda system: _Refusing(real_get(system)))
            refused = stack.post(MUNICIPALITY, "/v1/exchanges", rerun)
        assert refused.status_code == 200, refused.text
        exchange_id = refused.json()["exchange_id"]
        logged = [e for _, e in _entries(stack)]
        assert [e["event_type"] for e in logged if e["exchange_id"] == exchange_id].count("holder.refused") == 1
        steps = [e for e in logged if e["event_type"] == "escalation.step"
                 and e["extra"]["action"] == "decision_refused_by_holder"]
        assert [(e["status"], e["extra"].get("not_applied")) for e in steps] == [("error", "runtimeerror")]
        case = stack.call(police_po, "GET", f"/v1/escalations/{case_id}").json()
        assert (case["state"], case["history"][-1]["action"]) == ("decided", "decide")


def test_a_rerun_cancelled_while_its_case_step_is_prepared_still_logs_the_records_it_handed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: a re-run whose holder did not follow the decision prepares its case step (a read of the
    case) before it logs the holders' answers with it; cancelled during that read (a stopping server), the
    records the requester provided, which had reached the holder, were dropped as if their commit had been handed
    to the writer, and the log ended the request (``request-cancelled``) without them. Now they go before it.

    S2's provision (the Belastingdienst hands the KvK the dissolution grounds): the KvK refuses, its officer
    allows, and at the re-run the grounds reach it but its answer does not."""
    with running_stack(tmp_path) as stack:
        subject = stack.world.scenarios()["malafide-dissolution"][0]
        body = {"partnership": RIEC, "purpose": "malafide-company-dissolution",
                "legal_basis": "WGS (RIEC) with BW 2:19a", "case_reference": "BD-2026-rerun-cut",
                "signal": {"type": "missing-returns", "reference": "BD-SIG-91"},
                "subjects": [{"ref": subject}], "holders": ["kvk"], "categories": ["company_registration"],
                "provide": [{"subject": subject, "category": "tax_compliance",
                             "fields": {"missing_returns": ["2024"]}}]}
        service = exchange_service(stack.container)
        connectors = service.deps.connectors
        real_get = connectors.get
        calls: list[str] = []

        class _RefusesThenFailsAfterSending:
            """The KvK's connector: it refuses the first question; the re-run's (and the records) reach it, its
            answer does not."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner

            async def query(self, query: Any) -> Any:
                calls.append(query.request_id)
                if len(calls) == 1:
                    return HolderAnswer(status="refused", refusal_reason="investigation-confidentiality")
                await self.inner.query(query)
                raise HolderUnavailable("kvk-handelsregister", "no answer in time")

        monkeypatch.setattr(connectors, "get", lambda system: _RefusesThenFailsAfterSending(real_get(system)))
        first = stack.post("belastingdienst-ivs", "/v1/exchanges", body)
        assert first.status_code == 200, first.text
        case_id = first.json()["targets"][0]["escalation_id"]
        kvk_po = stack.person("po-kvk", "kvk", ["privacy-officer"])
        rerun = body | {"escalation_decision": stack.allow(
            kvk_po, case_id, ["company_registration"], "The registration is necessary to assess the dissolution.")}

        desk = escalation_service(stack.container)
        prepare = desk.rerun_not_applied_step

        async def cancelled_while_prepared(*args: Any) -> Any:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # arrives while the step's case is read
            return await prepare(*args)

        monkeypatch.setattr(desk, "rerun_not_applied_step", cancelled_while_prepared)
        try:
            response: httpx.Response | None = stack.post("belastingdienst-ivs", "/v1/exchanges", rerun)
        except httpx.HTTPError:  # the server may drop the connection of a cancelled request
            response = None
        assert response is None or response.status_code == 500
        assert len(calls) == 2  # the re-run asked the KvK
        with stack.container.engine.connect() as connection:
            rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
            events = [json.loads(row)["event"] for row in rows.scalars()]
        rerun_id = next(e["exchange_id"] for e in reversed(events) if e["event_type"] == "exchange.requested")
        mine = [(e["event_type"], e.get("extra", {}).get("direction"), e["reasons"])
                for e in events if e["exchange_id"] == rerun_id]
        assert mine[-2:] == [("disclosure", "requester-to-holder", []),
                             ("request.failed", None, ["request-cancelled"])]
        assert (service._provisions, service._counted_in) == ({}, {})
