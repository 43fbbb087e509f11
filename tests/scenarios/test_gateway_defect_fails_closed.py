"""A defect inside the gateway (an exception no code path expects; injected here) fails closed and is audited.
While it asks one holder: no 500, nothing of that holder disclosed, the other holders' answers stand, and the
log says which holder failed and how. Anywhere else: a 500 that says nothing was disclosed, and the request in
the log as denied with reason `gateway-error`. Never the exception's text (which may name a person)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from audit.tables import audit_entries
from connectors.protocol import DiscoveryAnswer, HolderAnswer, HolderDiscovery, HolderQuery
from gateway.errors import ServiceUnavailable, Unprocessable
from gateway.exchange.setup import exchange_service
from gateway.exchange.tables import exchange_claims
from tests.stack import Stack, inserts_refused, running_stack

BSN = "111222333"
BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-201",
         "signal": {"type": "bibob-application", "reference": "BIBOB-2026-78"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("defect"))) as running:
        yield running


@pytest.fixture(params=["defect", "refusal"])
def broken_connectors(stack: Stack, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The gateway's connectors to the police (query) and the KvK (discover) raise what no code path expects
    there (fault injection): a defect, or one of the gateway's own refusals, which once escaped the holder
    calls and left the others running unobserved. Yields the error type logged per holder."""
    police = stack.container.services["connectors"].get("politie-bvh")
    kvk = stack.container.services["connectors"].get("kvk-handelsregister")
    defect = request.param == "defect"

    async def query(_: HolderQuery) -> HolderAnswer:
        if defect:
            raise RuntimeError(f"unexpected defect while reading the answer about BSN {BSN}")
        raise ServiceUnavailable(f"out of order for BSN {BSN}")

    async def discover(_: HolderDiscovery) -> DiscoveryAnswer:
        raise KeyError(f"BSN {BSN}") if defect else Unprocessable(f"BSN {BSN}")

    police.query = query
    kvk.discover = discover
    try:
        yield ({"politie": "RuntimeError", "kvk": "KeyError"} if defect
               else {"politie": "ServiceUnavailable", "kvk": "Unprocessable"})
    finally:
        del police.query, kvk.discover  # the class's methods again


def _entries_after(stack: Stack, before: int) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).where(audit_entries.c.log_index >= before)
                                  .order_by(audit_entries.c.log_index)).scalars().all()
    return [json.loads(row)["event"] for row in rows]  # the logged event inside each entry's envelope


def _next_index(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        last = connection.execute(select(audit_entries.c.log_index).order_by(audit_entries.c.log_index.desc())
                                  .limit(1)).scalar()
    return 0 if last is None else int(last) + 1


def test_a_defect_asking_one_holder_fails_that_holder_closed_and_is_audited(
        stack: Stack, broken_connectors: dict[str, str]) -> None:
    before = _next_index(stack)
    body = BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"]],
                    "holders": ["politie", "kvk"],
                    "categories": ["company_registration", "directorships", "police_incidents"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert response.status_code == 200, response.text
    targets = {t["holder"]: t for t in response.json()["targets"]}
    police = targets["politie"]
    assert police["outcome"] == "holder-unavailable"
    assert police["records"] == []
    assert police["obligations"] is None
    assert "gateway-error" in [r["code"] for r in police["reasons"]]
    assert targets["kvk"]["outcome"] == "allowed"  # the other holder's answer stands
    assert targets["kvk"]["records"]
    assert BSN not in response.text

    entries = _entries_after(stack, before)
    failed = [e for e in entries if e.get("event_type") == "holder.unavailable" and e.get("holder") == "politie"]
    assert len(failed) == 1
    assert failed[0]["status"] == "error"
    assert failed[0]["reasons"] == ["gateway-error"]
    assert failed[0]["extra"]["error_type"] == broken_connectors["politie"]
    assert not [e for e in entries if e.get("event_type") == "disclosure" and e.get("holder") == "politie"]
    assert BSN not in json.dumps(entries)


def test_a_defect_asking_one_holder_in_discovery_answers_it_unavailable_and_is_audited(
        stack: Stack, broken_connectors: dict[str, str]) -> None:
    before = _next_index(stack)
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
                    "categories": ["company_registration", "tax_debts", "ongoing_investigation"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body)
    assert response.status_code == 200, response.text
    targets = {t["holder"]: t["outcome"] for t in response.json()["targets"]}
    assert targets["kvk"] == "holder-unavailable"
    assert targets["fiod"] == "hit"  # the others are answered
    assert BSN not in response.text
    entries = _entries_after(stack, before)
    failed = [e for e in entries if e.get("event_type") == "holder.unavailable"]
    assert [(e["holder"], e["reasons"], e["extra"]["error_type"]) for e in failed] == [
        ("kvk", ["gateway-error"], broken_connectors["kvk"])]
    assert BSN not in json.dumps(entries)


def test_without_the_defect_the_same_request_is_answered_by_both(stack: Stack) -> None:
    """The control: the failure above is the injected defect's, not the request's."""
    body = BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"]],
                    "holders": ["politie", "kvk"],
                    "categories": ["company_registration", "directorships", "police_incidents"]}
    targets = {t["holder"]: t for t in stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).json()["targets"]}
    assert targets["politie"]["outcome"] == "allowed"
    assert targets["kvk"]["outcome"] == "allowed"
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
                    "categories": ["company_registration"]}
    discovered = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body).json()["targets"]
    assert {t["outcome"] for t in discovered if t["holder"] == "kvk"} == {"hit"}


def _police_body(stack: Stack) -> dict[str, Any]:
    return BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][1]}], "holders": ["politie"],
                    "categories": ["police_incidents"]}


def _assert_500_nothing_disclosed(response: Any) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "nothing was disclosed" in response.json()["detail"]
    assert BSN not in response.text


@pytest.fixture
def defect_before_any_holder(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 6's count, read before the policy decides, fails with what no code path expects."""
    async def defect(*_: Any) -> int:
        raise ZeroDivisionError(f"BSN {BSN}")

    monkeypatch.setattr(exchange_service(stack.container), "_requests_today", defect)


@pytest.mark.usefixtures("defect_before_any_holder")
def test_a_defect_before_any_holder_is_asked_is_a_logged_denial(stack: Stack) -> None:
    before = _next_index(stack)
    _assert_500_nothing_disclosed(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _police_body(stack)))
    entries = _entries_after(stack, before)
    assert [(e["event_type"], e["status"], e["decision"], e["reasons"], e["extra"]["error_type"])
            for e in entries] == [("exchange.requested", "error", "deny", ["gateway-error"], "ZeroDivisionError")]
    assert entries[0]["extra"]["case_reference"] == BIBOB["case_reference"]
    assert BSN not in json.dumps(entries)


@pytest.mark.parametrize("failure", [LookupError(f"BSN {BSN}"), ServiceUnavailable("the keys are unusable")],
                         ids=["defect", "refusal"])
def test_a_defect_after_the_write_ahead_is_a_failure_entry_under_the_same_exchange(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """Also one of the gateway's own refusals (a 503): once the request is logged ahead, the log must say it
    ended without disclosure (found by a review: a refusal there left the request logged as if pending)."""
    async def fail() -> str | None:
        raise failure

    monkeypatch.setattr(exchange_service(stack.container), "_checkpoint", fail)  # read after the holders answered
    before = _next_index(stack)
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _police_body(stack))
    if isinstance(failure, ServiceUnavailable):
        assert response.status_code == 503, response.text
        assert response.json()["detail"] == "the keys are unusable"
    else:
        _assert_500_nothing_disclosed(response)
    entries = _entries_after(stack, before)
    # the request is logged once (statistics count it once); the failure follows it, with the same id
    assert [e["event_type"] for e in entries] == ["exchange.requested", "policy.decided", "request.failed"]
    assert len({e["exchange_id"] for e in entries}) == 1
    failed = entries[-1]
    assert (failed["status"], failed["decision"], failed["reasons"], failed["extra"]["error_type"]) == (
        "error", None, ["gateway-error"], type(failure).__name__)


def test_a_defect_after_disclosures_were_logged_leaves_them_and_adds_the_failure(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The escalation branch: the police refuses (a case would open), the KvK's disclosure commits first; then
    opening the case fails. The log keeps the disclosure and says the exchange failed; nothing is answered."""
    async def defect(*_: Any) -> str:
        raise RuntimeError(f"BSN {BSN}")

    desk = exchange_service(stack.container).deps.escalations
    monkeypatch.setattr(desk, "case_opening", defect)
    before = _next_index(stack)
    body = BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()["police-confidential"]],
                    "holders": ["politie", "kvk"], "categories": ["police_incidents", "company_registration"]}
    _assert_500_nothing_disclosed(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))
    entries = _entries_after(stack, before)
    types = [e["event_type"] for e in entries]
    assert types.count("exchange.requested") == 1
    assert "holder.refused" in types
    assert [e["holder"] for e in entries if e["event_type"] == "disclosure"] == ["kvk"]
    assert types[-1] == "request.failed"
    assert BSN not in json.dumps(entries)


def test_an_outcome_that_could_not_be_stored_after_disclosures_were_logged_adds_the_failure(stack: Stack) -> None:
    """Found by a review: on the escalation branch the outcome row is stored after the disclosures are logged;
    when storing it failed (500 `outcome-not-stored`, nothing answered), the log kept the KvK's disclosure as
    if the requester had the records, and nothing after it said the exchange ended unanswered."""
    before = _next_index(stack)
    body = BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()["police-confidential"]],
                    "holders": ["politie", "kvk"], "categories": ["police_incidents", "company_registration"]}
    with inserts_refused(stack, "refuse_outcomes", "exchanges"):
        response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert response.status_code == 500, response.text  # not a 503: a client's retry would ask the holders again
    assert response.json()["type"].endswith("/outcome-not-stored")
    assert "do not retry" in response.json()["detail"]
    assert "company_registration" not in response.text
    entries = _entries_after(stack, before)
    types = [e["event_type"] for e in entries]
    assert [e["holder"] for e in entries if e["event_type"] == "disclosure"] == ["kvk"]
    assert types[-1] == "request.failed"
    failed = entries[-1]
    assert (failed["exchange_id"], failed["reasons"], failed["extra"]["error_type"]) == (
        entries[0]["exchange_id"], ["gateway-error"], "OutcomeNotStored")


def test_an_outcome_that_could_not_be_stored_when_no_holder_was_asked_is_a_503_to_retry(stack: Stack) -> None:
    """Found by a review: every holder denied by policy, so no holder was asked, and the outcome row could not be
    stored: the requester got the 500 meant for asked holders ("do not retry it", holders asked twice), though
    a retry asks no one and is harmless. Now a 503 that says so, which clients retry; the retry is answered."""
    headers = {"Idempotency-Key": "all-denied-not-stored-0001"}
    body = _police_body(stack) | {"legal_basis": "WGS (RIEC) with the wrong law"}
    before = _next_index(stack)
    with inserts_refused(stack, "refuse_outcomes", "exchanges"):
        response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body, headers)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/outcome-not-stored")
    detail = response.json()["detail"]
    assert "no holder was asked" in detail
    assert "do not retry" not in detail
    entries = _entries_after(stack, before)
    assert [e["event_type"] for e in entries] == ["exchange.requested", "policy.decided", "request.failed"]
    assert entries[-1]["extra"]["error_type"] == "OutcomeNotStored"
    again = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body, headers)
    assert again.status_code == 200, again.text
    assert [t["outcome"] for t in again.json()["targets"]] == ["denied"]


def _s2_with_provided(stack: Stack, case: str) -> dict[str, Any]:
    subject = stack.world.scenarios()["malafide-dissolution"][0]
    return {"partnership": BIBOB["partnership"], "purpose": "malafide-company-dissolution",
            "legal_basis": "WGS (RIEC) with BW 2:19a", "case_reference": case,
            "signal": {"type": "missing-returns", "reference": "BD-SIG-78"}, "subjects": [{"ref": subject}],
            "holders": ["kvk"], "categories": ["company_registration", "directorships"],
            "provide": [{"subject": subject, "category": "tax_compliance", "fields": {"missing_returns": ["2024"]}}]}


@pytest.mark.parametrize("failure", [ValueError(f"BSN {BSN}"),
                                     OperationalError("SELECT", {}, Exception("server closed the connection"))],
                         ids=["defect", "database"])
def test_records_already_handed_to_the_holder_stay_logged_when_a_failure_follows(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """S2's provided record reaches the KvK; a defect, or the database failing, while reading its answer must
    not drop that disclosure (nor become a 503 that says nothing was disclosed)."""
    def fail(**_: Any) -> None:
        raise failure

    monkeypatch.setattr("gateway.exchange.service.Record", fail)  # building the records for the requester
    before = _next_index(stack)
    response = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2_with_provided(stack, "BD-2026-10"))
    assert response.status_code == 200, response.text
    target = response.json()["targets"][0]
    assert (target["outcome"], target["records"]) == ("holder-unavailable", [])
    entries = _entries_after(stack, before)
    handed = [e for e in entries if e["event_type"] == "disclosure"]
    assert [(e["holder"], e["extra"]["direction"], e["categories"]) for e in handed] == [
        ("kvk", "requester-to-holder", ["tax_compliance"])]
    failed = [e for e in entries if e["event_type"] == "holder.unavailable"]
    assert [(e["reasons"], e["extra"]["error_type"]) for e in failed] == [(["gateway-error"], type(failure).__name__)]


def test_a_database_failure_is_503_and_no_defect(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database unavailable is an answer of its own (503, retried by clients), not a defect to log."""
    async def locked(*_: Any) -> int:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(exchange_service(stack.container), "_requests_today", locked)
    before = _next_index(stack)
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _police_body(stack))
    assert response.status_code == 503, response.text
    assert _entries_after(stack, before) == []


@pytest.mark.usefixtures("defect_before_any_holder")
def test_a_defect_in_discovery_before_any_holder_is_asked_is_a_logged_denial(stack: Stack) -> None:
    before = _next_index(stack)
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
                    "categories": ["company_registration"]}
    _assert_500_nothing_disclosed(stack.post("gemeente-amsterdam-vth", "/v1/discovery", body))
    entries = _entries_after(stack, before)
    assert [(e["event_type"], e["status"], e["reasons"]) for e in entries] == [
        ("discovery.queried", "error", ["gateway-error"])]


async def _cancelled_inside(*_: Any) -> Any:
    """A cancellation nobody asked for, raised from inside the request's work (a library raising it, a task of
    its own cancelled by something inside): the request itself is not being cancelled."""
    raise asyncio.CancelledError


@pytest.mark.parametrize("path", ["/v1/exchanges", "/v1/discovery"])
def test_a_cancellation_raised_inside_a_holder_call_is_a_defect_failed_closed_and_audited(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Found by a review: a ``CancelledError`` escaping a holder call passed every ``except Exception`` that
    audits defects: the request ended with its write-ahead entries and nothing after them (and the client got
    whatever the server makes of a cancelled task). Now it is a defect like any other."""
    connectors = stack.container.services["connectors"]
    monkeypatch.setattr(connectors.get("politie-bvh"), "query", _cancelled_inside)
    monkeypatch.setattr(connectors.get("kvk-handelsregister"), "discover", _cancelled_inside)
    body = (_police_body(stack) if path == "/v1/exchanges" else BIBOB | {
        "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}], "categories": ["company_registration"]})
    before = _next_index(stack)
    _assert_500_nothing_disclosed(stack.post("gemeente-amsterdam-vth", path, body))
    entries = _entries_after(stack, before)
    assert len({e["exchange_id"] for e in entries}) == 1
    assert entries[-1]["event_type"] == "request.failed"
    assert (entries[-1]["status"], entries[-1]["reasons"], entries[-1]["extra"]["error_type"]) == (
        "error", ["gateway-error"], "CancelledError")
    assert "disclosure" not in [e["event_type"] for e in entries]


def test_a_cancellation_raised_before_any_holder_is_asked_is_a_logged_denial(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exchange_service(stack.container), "_requests_today", _cancelled_inside)
    before = _next_index(stack)
    _assert_500_nothing_disclosed(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _police_body(stack)))
    assert [(e["event_type"], e["status"], e["decision"], e["reasons"], e["extra"]["error_type"])
            for e in _entries_after(stack, before)] == [
        ("exchange.requested", "error", "deny", ["gateway-error"], "CancelledError")]


def test_a_request_that_is_cancelled_itself_is_not_taken_for_a_defect_and_still_ends(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's own task cancelled (as when its client goes away) while its holder is asked: the
    cancellation goes on (no ``gateway-error`` for a defect that did not happen; the log ends the request with
    ``request-cancelled``, ``tests/scenarios/test_request_cancelled_ending.py``), and the attempt's ending
    still runs: rule 6's count given back, the Idempotency-Key's claim given up, the attempt's state dropped."""
    async def request_cancelled(*_: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)  # the cancellation arrives here

    service = exchange_service(stack.container)
    monkeypatch.setattr(stack.container.services["connectors"].get("politie-bvh"), "query", request_cancelled)
    before = _next_index(stack)
    try:
        response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _police_body(stack),
                              {"Idempotency-Key": "cancelled-request-0001"})
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        pass
    else:
        assert response.status_code >= 500, response.text
    assert [(e["event_type"], e["reasons"]) for e in _entries_after(stack, before)] == [
        ("exchange.requested", []), ("policy.decided", []), ("request.failed", ["request-cancelled"])]
    with stack.container.engine.connect() as connection:
        assert list(connection.execute(select(exchange_claims))) == []
    assert (service._counted_in, service._logged_ahead) == ({}, set())
