"""An exchange that opens an escalation case and then fails to store its outcome leaves no case behind.

The gap, from earlier sessions' notes: the case was opened in a transaction of its own before the outcome row,
so when the outcome's commit failed (the requester got a 5xx and never saw the outcome, nor the case id), the
case stayed open in the administrators' queue for a request nobody was answered about, and a retry of the
request opened a second case for the same request. Now the case and its ``opened`` entry commit with the
outcome row that reports it: both or neither.

The failure is injected in the real database (SQLite refuses the outcome row by a trigger), so it does not
matter which code path writes the row."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from escalation.tables import escalation_cases
from gateway.exchange.setup import exchange_service
from tests.stack import Stack, inserts_refused, running_stack

BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "signal": {"type": "bibob-application", "reference": "B-78"}}
REQUESTER = "gemeente-amsterdam-vth"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("escalation-failure"))) as running:
        yield running


@pytest.fixture
def outcome_rows_refused(stack: Stack) -> Iterator[None]:
    """The database refuses every outcome row (as a full disk or a lost connection would) until the test ends."""
    with inserts_refused(stack, "refuse_outcomes", "exchanges"):
        yield


def allow_outcome_rows(stack: Stack) -> None:
    with stack.container.engine.begin() as connection:
        connection.execute(text("DROP TRIGGER IF EXISTS refuse_outcomes"))


def _refused_by_police(stack: Stack, case: str) -> dict[str, Any]:
    """The police refuses (a case opens, ``holder-refused``); the KvK discloses (entries follow the write-ahead)."""
    return BIBOB | {"case_reference": case, "holders": ["politie", "kvk"],
                    "categories": ["police_incidents", "company_registration"],
                    "subjects": [{"ref": r} for r in stack.world.scenarios()["police-confidential"]]}


def _bulk(stack: Stack, case: str) -> dict[str, Any]:
    """Policy escalates every target (bulk request): nothing follows the write-ahead but the cases."""
    return BIBOB | {"case_reference": case, "holders": "all", "categories": ["police_incidents", "tax_debts"],
                    "subjects": [{"ref": p.subject_ref} for p in stack.world.persons[:40]]}


def _cases(stack: Stack, case_reference: str) -> list[dict[str, Any]]:
    """The cases of the exchanges logged under ``case_reference`` (its requests' ids, from the audit log)."""
    ids = {e["exchange_id"] for e in stack.events() if (e.get("extra") or {}).get("case_reference") == case_reference}
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(escalation_cases).where(escalation_cases.c.exchange_id.in_(ids)))
        return [dict(row._mapping) for row in rows]


def _opened_entries(stack: Stack, exchange_ids: set[str]) -> list[dict[str, Any]]:
    return [e for e in stack.events() if e["event_type"] == "escalation.step"
            and e["exchange_id"] in exchange_ids and e["extra"]["action"] == "opened"]


def _outcome_count(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM exchanges")).scalar_one())


def _failed_ids(stack: Stack, case_reference: str) -> set[str]:
    return {e["exchange_id"] for e in stack.events() if e["event_type"] == "request.failed"
            and (e.get("extra") or {}).get("case_reference") == case_reference}


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "idempotency-key"])
def test_a_holders_refusal_whose_outcome_is_not_stored_leaves_no_open_case(
        stack: Stack, outcome_rows_refused: None, keyed: bool) -> None:
    """The police refuses, the KvK's disclosure is logged, then the outcome row cannot be stored: the requester
    gets 500 ``outcome-not-stored``; no case is open for that request, and no entry says one was opened."""
    reference = f"RIEC-AA-2026-F1{int(keyed)}"
    headers = {"Idempotency-Key": f"refused-failing-{int(keyed)}"} if keyed else None
    outcomes = _outcome_count(stack)
    response = stack.post(REQUESTER, "/v1/exchanges", _refused_by_police(stack, reference), headers)
    assert response.status_code == 500, response.text  # the holders were asked: not to be retried
    assert response.json()["type"].endswith("/outcome-not-stored")
    assert "do not retry" in response.json()["detail"]
    assert _outcome_count(stack) == outcomes
    failed = _failed_ids(stack, reference)
    assert len(failed) == 1  # the log says the request ended unanswered
    assert _cases(stack, reference) == []  # before the fix: an open `holder-refused` case for the police
    assert _opened_entries(stack, failed) == []

    allow_outcome_rows(stack)
    again = stack.post(REQUESTER, "/v1/exchanges", _refused_by_police(stack, reference))
    assert again.status_code == 200, again.text
    police = next(t for t in again.json()["targets"] if t["holder"] == "politie")
    cases = _cases(stack, reference)
    assert [(c["id"], c["state"], c["exchange_id"]) for c in cases] == [
        (police["escalation_id"], "open", again.json()["exchange_id"])]  # one case, for the answered request
    assert len(_opened_entries(stack, {again.json()["exchange_id"]})) == 1  # its opening is audited


def test_a_policy_escalation_whose_outcome_is_not_stored_leaves_no_case_and_its_retry_opens_them_once(
        stack: Stack, outcome_rows_refused: None) -> None:
    """Policy escalates every target (nothing logged after the write-ahead), the outcome row cannot be stored:
    503 ``outcome-not-stored``, since no holder was asked and a retry is harmless (a 500 told the requester
    not to retry); the retry with the same Idempotency-Key runs the request again and is answered. Before the
    fix the first attempt's cases stayed open beside the retry's: two cases per holder for one request."""
    reference = "RIEC-AA-2026-F20"
    headers = {"Idempotency-Key": "bulk-failing-0001"}
    response = stack.post(REQUESTER, "/v1/exchanges", _bulk(stack, reference), headers)
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("/outcome-not-stored")
    assert "no holder was asked" in response.json()["detail"]
    assert _cases(stack, reference) == []
    assert _opened_entries(stack, _failed_ids(stack, reference)) == []

    allow_outcome_rows(stack)
    again = stack.post(REQUESTER, "/v1/exchanges", _bulk(stack, reference), headers)
    assert again.status_code == 200, again.text
    targets = again.json()["targets"]
    assert targets
    assert all(t["outcome"] == "escalated" for t in targets)
    cases = _cases(stack, reference)
    assert sorted(c["id"] for c in cases) == sorted(t["escalation_id"] for t in targets)
    assert {c["exchange_id"] for c in cases} == {again.json()["exchange_id"]}
    with stack.container.engine.connect() as connection:  # no holder has two active cases for this request
        per_holder = connection.execute(
            select(escalation_cases.c.holder_org, func.count()).where(
                escalation_cases.c.request_fingerprint == cases[0]["request_fingerprint"],
                escalation_cases.c.state == "open").group_by(escalation_cases.c.holder_org)).all()
    assert {count for _, count in per_holder} == {1}
    replay = stack.post(REQUESTER, "/v1/exchanges", _bulk(stack, reference), headers)
    assert replay.json() == again.json()  # the stored answer names the cases that exist


def test_a_request_cancelled_after_its_cases_were_prepared_leaves_no_open_case(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request is cancelled (its client went away) after the holders answered and before the outcome is
    stored: before the fix the police's case was open by then and stayed open, unanswered; now it is not."""
    async def cancelled() -> str | None:
        task = asyncio.current_task()  # the request's own: cancelled as when its client goes away
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)  # where the request awaits, between the escalation and its outcome
        return None

    monkeypatch.setattr(exchange_service(stack.container), "_checkpoint", cancelled)
    reference = "RIEC-AA-2026-F30"
    outcomes = _outcome_count(stack)
    try:
        response = stack.post(REQUESTER, "/v1/exchanges", _refused_by_police(stack, reference))
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        pass
    else:
        assert response.status_code >= 500, response.text
    assert _outcome_count(stack) == outcomes
    assert _cases(stack, reference) == []


@pytest.fixture
def case_openings_refused(stack: Stack) -> Iterator[None]:
    """The audit log refuses the cases' ``opened`` entries (it is down just when the outcome's commit, which
    opens the cases, is written), and takes every other entry."""
    with inserts_refused(stack, "refuse_case_openings", "audit_entries", "NEW.event_type = 'escalation.step'"):
        yield


@pytest.mark.usefixtures("case_openings_refused")
@pytest.mark.parametrize(("asked", "status", "says"), [
    ("none", 503, "no holder was asked"), ("holders", 500, "do not retry")])
def test_an_audit_log_down_when_the_cases_open_answers_as_the_outcome_row_failing_does(
        stack: Stack, asked: str, status: int, says: str) -> None:
    """Before the cases committed with the outcome row, the audit log down while one was opened was a 503 (the
    entry was logged on its own); since then it was the 500 of an outcome not stored, whether or not a holder had
    been asked. A request escalated by policy asks no holder (nothing is logged after the write-ahead), so its
    retry is harmless: 503, as the outcome row failing is then. A holder that refused was asked, and its answer is
    logged: 500, not to be retried (it would be asked again)."""
    reference = f"RIEC-AA-2026-F4{status}"
    body = _bulk(stack, reference) if asked == "none" else _refused_by_police(stack, reference)
    headers = {"Idempotency-Key": f"case-opening-down-{status}"}
    response = stack.post(REQUESTER, "/v1/exchanges", body, headers)
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith("/outcome-not-stored")
    assert says in response.json()["detail"]
    failed = _failed_ids(stack, reference)
    assert len(failed) == 1  # the log says the request ended unanswered
    assert _cases(stack, reference) == []
    types = [e["event_type"] for e in stack.events() if e["exchange_id"] in failed]
    assert ("holder.refused" in types) is (asked == "holders")  # a holder was asked, or none
