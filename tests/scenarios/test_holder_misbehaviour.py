"""A holder that answers with more than it should cannot leak through the gateway (found by a review):
free-text refusal reasons and error details that could name a person stay out of the answer and the log,
hit/no-hit counts only subjects that were asked about, and record identifiers must be identifiers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.client.models import MAX_FIELD_DEPTH, ExchangeResult
from gateway.exchange import service as service_module
from tests.stack import Stack, stack_with_holder

BSN = "111222333"
NAME = "Jan Jansen"
NOT_FINITE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 400 + ".5")
"""Numbers no double holds: no JSON at all (RFC 8259), or beyond the largest double, which JSON parsers read as
infinity."""
OTHER_EXCHANGE = "01938a2b-0000-7000-8000-000000000000"
"""An exchange id the gateway never gave: a holder's answer echoing it answers another request."""
UNASKED = "subj-nobody-asked-about-0001"
BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-200",
         "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"}}


class _Holder:
    """Answers every query as ``mode`` says, and every discovery as ``discovery_mode`` says (by default with
    a hit for a subject nobody asked about)."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.discovery_mode = "overshare"
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)
        self.app.post("/holder/v1/discover")(self.discover)

    async def query(self, request: Request) -> Any:
        asked = await request.json()
        subject = asked["subjects"][0]
        one: dict[str, Any] = {"record_id": "r-1", "record_type": "incident", "subject": subject,
                               "category": "police_incidents", "fields": {"n": 1}}
        if self.mode == "echo-own":
            return {"request_id": asked["request_id"], "status": "answered", "records": [one]}
        if self.mode == "echo-other":  # another request's answer about the same subject and category
            return {"request_id": f"{OTHER_EXCHANGE}:politie", "status": "answered", "records": [one]}
        if self.mode == "echo-other-refusal":
            return {"request_id": f"{OTHER_EXCHANGE}:politie", "status": "refused",
                    "refusal_reason": "investigation-confidentiality"}
        if self.mode == "unasked-only":  # records, none of them about the subject asked
            return {"status": "answered", "records": [one | {"subject": UNASKED},
                                                      one | {"record_id": "r-2", "subject": UNASKED}]}
        if self.mode == "asked-and-unasked":
            return {"status": "answered", "records": [one, one | {"record_id": "r-2", "subject": UNASKED}]}
        if self.mode == "refuse-in-words":
            return {"status": "refused", "refusal_reason": f"{NAME} (BSN {BSN}) is an informant"}
        if self.mode == "refuse-code-and-newline":
            return {"status": "refused", "refusal_reason": "investigation-confidentiality\n"}
        if self.mode.startswith("refuse-code-"):  # a "code" of the code's shape that is a person's number
            return {"status": "refused", "refusal_reason": self.mode.removeprefix("refuse-code-")}
        if self.mode == "reject-in-words":
            return JSONResponse({"detail": f"no such person BSN {BSN} ({NAME})"}, status_code=404)
        if self.mode == "text-in-identifiers":
            return {"status": "answered", "records": [
                {"record_id": f"BSN {BSN} {NAME}", "record_type": "incident", "subject": subject,
                 "category": "police_incidents", "fields": {"n": 1}}]}
        if self.mode.startswith("nested-"):  # fields nesting objects and lists this many levels, itself included
            levels = int(self.mode.removeprefix("nested-"))
            fields = "{\"a\": " + "[" * (levels - 1) + "]" * (levels - 1) + "}"
            record = (f'{{"record_id": "r-1", "record_type": "incident", "subject": "{subject}", '
                      f'"category": "police_incidents", "fields": {fields}}}')
            return Response(f'{{"status": "answered", "records": [{record}]}}', media_type="application/json")
        if self.mode in NOT_FINITE:
            record = (f'{{"record_id": "r-1", "record_type": "incident", "subject": "{subject}", '
                      f'"category": "police_incidents", "fields": {{"amount": {self.mode}}}}}')
            return Response(f'{{"status": "answered", "records": [{record}]}}', media_type="application/json")
        return {"status": "answered", "records": []}

    async def discover(self, request: Request) -> Any:
        asked = await request.json()
        subject = asked["subjects"][0]
        if self.discovery_mode == "echo-other":
            return {"request_id": f"{OTHER_EXCHANGE}:politie", "hits": {subject: ["incident"]}}
        if self.discovery_mode == "echo-own":
            return {"request_id": asked["request_id"], "hits": {subject: ["incident"]}}
        if self.discovery_mode == "refuse-in-words":
            return {"status": "refused", "refusal_reason": f"{NAME} (BSN {BSN}) is under investigation"}
        if self.discovery_mode == "refuse-code-and-newline":
            return {"status": "refused", "refusal_reason": "investigation-confidentiality\n"}
        if self.discovery_mode.startswith("refuse-code-"):
            return {"status": "refused", "refusal_reason": self.discovery_mode.removeprefix("refuse-code-")}
        if self.discovery_mode == "reject-in-words":
            return JSONResponse({"detail": f"no such person BSN {BSN} ({NAME})"}, status_code=404)
        if self.discovery_mode == "malformed":
            return {"hits": f"BSN {BSN} ({NAME})"}
        if self.discovery_mode == "refuse-with-hits":
            return {"status": "refused", "refusal_reason": "investigation-confidentiality",
                    "hits": {subject: ["investigation"]}}
        return {"hits": {"subj-nobody-asked-about-0001": ["investigation"]}}


@pytest.fixture(scope="module")
def holder() -> _Holder:
    return _Holder()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, holder: _Holder) -> Iterator[Stack]:
    with stack_with_holder(Path(tmp_path_factory.mktemp("misbehaving")), holder.app,
                           ["politie-bvh", "fiod-ois"]) as running:
        yield running


def _exchange(stack: Stack, **changes: Any) -> dict[str, Any]:
    """The exchange's only target; neither the answer nor the audit entries it wrote name the person."""
    with stack.container.engine.connect() as connection:
        before = len(connection.execute(select(audit_entries.c.log_index)).all())
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][1]}], "holders": ["politie"],
                    "categories": ["police_incidents"]} | changes
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert response.status_code == 200, response.text
    ExchangeResult.model_validate_json(response.content)  # as the partner client reads it
    with stack.container.engine.connect() as connection:
        written = [dict(row) for row in connection.execute(select(audit_entries)).mappings().all()][before:]
    logged = json.dumps(written, default=str)
    for personal in (BSN, NAME):
        assert personal not in response.text
        assert personal not in logged
    return dict(response.json()["targets"][0])


def test_a_refusal_in_free_text_is_a_refusal_without_the_text(stack: Stack, holder: _Holder) -> None:
    holder.mode = "refuse-in-words"
    target = _exchange(stack)
    assert target["outcome"] == "refused-by-holder"
    assert target["escalation_id"]  # still an escalation trigger
    assert "unspecified" in target["reasons"][0]["message"]


def test_a_refusal_code_with_a_line_break_is_unspecified_not_a_failed_exchange(stack: Stack,
                                                                              holder: _Holder) -> None:
    """Found by a review: ``re.match`` lets ``$`` match before a final line break, so a code followed by one
    passed as a code, and the audit entry (no control characters) refused it: a 500 for the whole exchange,
    every other holder's answer lost with it, whenever one holder wrote its reason with a line break."""
    holder.mode = "refuse-code-and-newline"
    target = _exchange(stack)
    assert target["outcome"] == "refused-by-holder"
    assert [r["message"] for r in target["reasons"]] == ["the holder refused: unspecified"]


@pytest.mark.parametrize("code", [BSN, "111-222-333"])
def test_a_refusal_code_that_is_a_person_s_number_is_unspecified_not_the_requester_s_fault(
        stack: Stack, holder: _Holder, code: str) -> None:
    """Found by a review: a refusal reason of a code's shape (lower case, digits, dashes) that is a BSN passed
    as a code, and the holder's refusal entry (``holder:111222333``) tripped the audit log's personal-data
    guard after the holder was asked: the requester got 422 "a reference in the request looks like personal
    data" for the holder's words, the other holders' answers were lost with it, and the log kept the request's
    write-ahead entries with no ending after them."""
    holder.mode = f"refuse-code-{code}"
    try:
        target = _exchange(stack)
    finally:
        holder.mode = "answer"
    assert target["outcome"] == "refused-by-holder"
    assert target["escalation_id"]  # still an escalation trigger
    assert [r["message"] for r in target["reasons"]] == ["the holder refused: unspecified"]
    assert code not in json.dumps(target)


def test_a_holder_s_error_detail_does_not_reach_the_requester(stack: Stack, holder: _Holder) -> None:
    holder.mode = "reject-in-words"
    target = _exchange(stack)
    assert target["outcome"] == "holder-unavailable"
    assert "404" in target["reasons"][0]["message"]


def test_text_in_a_record_identifier_is_a_protocol_error_not_a_disclosure(stack: Stack, holder: _Holder) -> None:
    holder.mode = "text-in-identifiers"
    target = _exchange(stack)
    assert target["outcome"] == "holder-unavailable"
    assert target["records"] == []


_ANSWERED = {"disclosure", "holder.refused", "holder.unavailable"}
"""The event types of what came of asking a holder (its decision's entry aside)."""


def _entries_since(stack: Stack, before: int) -> list[dict[str, Any]]:
    """The audit entries (their events) written after the first ``before``."""
    with stack.container.engine.connect() as connection:
        return [json.loads(row)["event"] for row in connection.execute(
            select(audit_entries.c.canonical).order_by(audit_entries.c.log_index)).scalars().all()][before:]


def test_hits_for_subjects_nobody_asked_about_are_no_hits_and_audited_as_over_sharing(stack: Stack,
                                                                                      holder: _Holder) -> None:
    """Hits about a subject nobody asked about say that the holder has a file on that person: ignored (no hit),
    and — found by a review — counted in the holder's audit entry as over-sharing (``unasked_hits``), as
    over-shared records are (``dropped_overshared``); they were only in the application log, which the
    privacy officers reviewing a holder's conduct do not read."""
    before = len(_entries_since(stack, 0))
    hit_only = _exchange(stack, holders=["fiod"], categories=["ongoing_investigation"])
    assert hit_only["outcome"] == "allowed"
    assert hit_only["hit"] is False
    exchanged = [e for e in _entries_since(stack, before) if e["event_type"] == "disclosure"]
    assert [(e["holder"], e["extra"]) for e in exchanged] == [
        ("fiod", {"hit_only": True, "hit": False, "unasked_hits": 1})]
    before = len(_entries_since(stack, 0))
    discovery = stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | {
        "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][1]}],
        "categories": ["ongoing_investigation", "police_incidents"]})
    assert discovery.status_code == 200, discovery.text
    outcomes = {t["holder"]: t["outcome"] for t in discovery.json()["targets"]}
    assert outcomes["fiod"] == "no-hit"
    assert outcomes["politie"] == "no-hit"
    discovered = {e["holder"]: e["extra"] for e in _entries_since(stack, before) if e["event_type"] == "disclosure"}
    assert discovered["fiod"] == discovered["politie"] == {"hit_only": True, "outcome": "no-hit", "unasked_hits": 1}


@pytest.mark.parametrize("number", NOT_FINITE, ids=["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "400-digits"])
def test_a_non_finite_number_is_a_protocol_error_not_a_changed_disclosure(stack: Stack, holder: _Holder,
                                                                         number: str) -> None:
    """Found by a review: the record was disclosed with the value turned into null, while the audit entry's
    payload hash covered the holder's NaN — what was logged was not what was disclosed. Found again by a later
    review: a number too large for a double (``1e400``, or 400 digits) is JSON, and is read as infinity, with
    the same result; the check for the words ``NaN`` and ``Infinity`` did not see it."""
    holder.mode = number
    target = _exchange(stack)
    assert target["outcome"] == "holder-unavailable"
    assert "malformed answer" in target["reasons"][0]["message"]
    assert target["records"] == []


@pytest.mark.parametrize(("levels", "outcome"), [
    (MAX_FIELD_DEPTH, "allowed"), (MAX_FIELD_DEPTH + 1, "holder-unavailable"), (197, "holder-unavailable")])
def test_fields_nested_deeper_than_a_provided_record_may_are_no_answer(stack: Stack, holder: _Holder, levels: int,
                                                                       outcome: str) -> None:
    """Found by a review: a holder's record could nest its fields as deeply as the gateway's JSON parser reads
    (197 levels), and the exchange's answer, which puts them two levels deeper, was then past what the partner
    client's parser reads: the requester could not read any of the exchange's answer — every holder's records
    lost, though logged as disclosed — because of one holder. A holder's fields nest at most as deeply as a
    provided record's (``MAX_FIELD_DEPTH``); deeper is no answer, and the exchange's answer stays readable."""
    holder.mode = f"nested-{levels}"
    target = _exchange(stack)
    assert target["outcome"] == outcome
    if outcome == "holder-unavailable":
        assert "malformed answer" in target["reasons"][0]["message"]
        assert target["records"] == []
    else:
        assert len(target["records"]) == 1


@pytest.mark.parametrize(("mode", "outcome", "reason"), [
    ("refuse-in-words", "refused-by-holder", "the holder refused: unspecified"),
    ("refuse-code-and-newline", "refused-by-holder", "the holder refused: unspecified"),
    (f"refuse-code-{BSN}", "refused-by-holder", "the holder refused: unspecified"),  # a number as its "code"
    ("refuse-with-hits", "holder-unavailable", None),  # a refusal that answers anyway is no answer at all
])
def test_a_discovery_refusal_discloses_neither_words_nor_hits(stack: Stack, holder: _Holder, mode: str,
                                                              outcome: str, reason: str | None) -> None:
    """A holder's refusal in discovery reaches the requester and the log as a code only, and one that still
    carries hits is a protocol error: the gateway never reads a hit out of a refusal."""
    holder.discovery_mode = mode
    try:
        with stack.container.engine.connect() as connection:
            before = len(connection.execute(select(audit_entries.c.log_index)).all())
        response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | {
            "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][1]}],
            "categories": ["police_incidents"]})
        with stack.container.engine.connect() as connection:
            written = json.dumps([dict(row) for row in connection.execute(select(audit_entries)).mappings().all()
                                  ][before:], default=str)
    finally:
        holder.discovery_mode = "overshare"
    assert response.status_code == 200, response.text
    politie = next(t for t in response.json()["targets"] if t["holder"] == "politie")
    assert politie["outcome"] == outcome
    if reason is not None:
        assert [r["message"] for r in politie["reasons"]] == [reason]
        assert "holder:unspecified" in written
    for personal in (BSN, NAME):
        assert personal not in response.text
        assert personal not in written


@pytest.mark.parametrize(("mode", "error_type"), [("reject-in-words", "HolderRejectedRequest"),
                                                  ("malformed", "HolderProtocolError")])
def test_a_holder_failing_a_discovery_is_audited_by_the_kind_of_failure_without_its_words(
        stack: Stack, holder: _Holder, mode: str, error_type: str) -> None:
    """A holder that rejects the discovery call or answers outside the protocol is `holder-unavailable` for
    the requester, and the log says so for that holder (which failure, never the holder's text); the holders
    that answered keep their entries."""
    holder.discovery_mode = mode
    try:
        with stack.container.engine.connect() as connection:
            before = len(connection.execute(select(audit_entries.c.log_index)).all())
        response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | {
            "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
            "categories": ["police_incidents", "company_registration"]})
        with stack.container.engine.connect() as connection:
            written = [json.loads(row)["event"] for row in connection.execute(
                select(audit_entries.c.canonical).order_by(audit_entries.c.log_index)).scalars().all()][before:]
    finally:
        holder.discovery_mode = "overshare"
    assert response.status_code == 200, response.text
    outcomes = {t["holder"]: t["outcome"] for t in response.json()["targets"]}
    assert outcomes["politie"] == "holder-unavailable"  # served by this holder
    assert outcomes["kvk"] in {"hit", "no-hit"}  # a simulator, answering
    failed = {e["holder"]: e for e in written if e["event_type"] == "holder.unavailable"}
    assert (failed["politie"]["reasons"], failed["politie"]["extra"]) == (["holder-unavailable"],
                                                                          {"error_type": error_type})
    assert set(failed) == {h for h, o in outcomes.items() if o == "holder-unavailable"}
    assert "kvk" in {e["holder"] for e in written if e["event_type"] == "disclosure"}
    logged = json.dumps(written)
    for personal in (BSN, NAME):
        assert personal not in response.text
        assert personal not in logged


@pytest.mark.parametrize(("mode", "outcome", "reason", "records"), [
    ("echo-own", "allowed", None, 1),
    ("echo-other", "holder-unavailable", "answer-mismatch", 0),
    ("echo-other-refusal", "holder-unavailable", "answer-mismatch", 0),  # not the holder's refusal: no case
])
def test_an_answer_echoing_another_request_id_is_no_answer(stack: Stack, holder: _Holder, mode: str, outcome: str,
                                                           reason: str | None, records: int) -> None:
    """The attack: an answer to another request about the same subject and categories (a holder's cached or
    replayed answer, a proxy mixing up responses) was disclosed as this one's, nothing could tell. An answer that
    echoes a request id must echo this request's; one that echoes another's discloses nothing, and is logged as
    the holder's misbehaviour (``answer-mismatch``, by the failure's type, never the holder's text), not as a
    refusal that would open an escalation case. An answer echoing its own request id is answered as before."""
    holder.mode = mode
    before = len(_entries_since(stack, 0))
    target = _exchange(stack)
    written = [e for e in _entries_since(stack, before) if e["holder"] == "politie" and e["event_type"] in _ANSWERED]
    assert (target["outcome"], len(target["records"])) == (outcome, records)
    if reason is None:
        assert [e["event_type"] for e in written] == ["disclosure"]
        return
    assert [r["code"] for r in target["reasons"]] == [reason]
    assert target["escalation_id"] is None
    assert OTHER_EXCHANGE not in json.dumps(target)  # the holder's id is its own text: not passed on
    assert [(e["event_type"], e["reasons"], e["extra"]) for e in written] == [
        ("holder.unavailable", [reason], {"error_type": "HolderAnswerMismatch"})]


@pytest.mark.parametrize(("mode", "outcome", "hit"), [("echo-own", "allowed", True),
                                                      ("echo-other", "holder-unavailable", None)])
def test_a_hit_echoing_another_request_id_is_no_hit(stack: Stack, holder: _Holder, mode: str, outcome: str,
                                                    hit: bool | None) -> None:
    """As for records: a hit/no-hit answer to another request is not read as this one's, in an exchange with a
    hit-only holder and in a discovery."""
    holder.discovery_mode = mode
    try:
        hit_only = _exchange(stack, holders=["fiod"], categories=["ongoing_investigation"])
        discovery = stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | {
            "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][1]}],
            "categories": ["ongoing_investigation", "police_incidents"]})
    finally:
        holder.discovery_mode = "overshare"
    assert (hit_only["outcome"], hit_only["hit"]) == (outcome, hit)
    assert discovery.status_code == 200, discovery.text
    fiod = next(t for t in discovery.json()["targets"] if t["holder"] == "fiod")
    if hit is None:
        assert [r["code"] for r in hit_only["reasons"]] == ["answer-mismatch"]
        assert (fiod["outcome"], [r["code"] for r in fiod["reasons"]]) == ("holder-unavailable", ["answer-mismatch"])
    else:
        assert fiod["outcome"] == "hit"


@pytest.mark.parametrize(("mode", "outcome", "records", "logged"), [
    ("unasked-only", "holder-unavailable", 0, ("holder.unavailable", ["holder-answered-unasked-subjects"],
                                               {"dropped_overshared": 2})),
    ("asked-and-unasked", "allowed", 1, ("disclosure", [], {"records": 1, "dropped_overshared": 1})),
])
def test_records_about_none_of_the_subjects_asked_are_no_answer(stack: Stack, holder: _Holder, mode: str,
                                                                outcome: str, records: int,
                                                                logged: tuple[str, list[str], dict[str, Any]]
                                                                ) -> None:
    """An answer whose records are all about subjects nobody asked about answers another question (another
    request's answer, from a holder that echoes no request id). Its records were dropped as over-shared and the
    target left ``allowed`` with none, which reads as "nothing held": now it is ``holder-unavailable`` with its
    own reason, and its holder's entry counts the records as over-shared, as dropped records are
    (``dropped_overshared``). An answer with records about the subject asked besides is answered as before,
    the others dropped and counted."""
    holder.mode = mode
    before = len(_entries_since(stack, 0))
    target = _exchange(stack)
    written = [e for e in _entries_since(stack, before) if e["holder"] == "politie" and e["event_type"] in _ANSWERED]
    assert (target["outcome"], len(target["records"])) == (outcome, records)
    assert UNASKED not in json.dumps(target)
    if outcome == "holder-unavailable":
        assert [r["code"] for r in target["reasons"]] == ["holder-answered-unasked-subjects"]
        assert target["escalation_id"] is None
    over_shared = [(e["event_type"], e["reasons"], e["extra"]) for e in written if e["data_subject"] is None]
    assert over_shared == [logged]


def test_an_entry_past_the_write_ahead_that_names_a_person_ends_the_request_as_a_defect(
        stack: Stack, holder: _Holder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should any entry the gateway builds after the write-ahead trip the audit log's personal-data guard (here
    a refusal code let through as it was before the code check above), that is the gateway's defect: the
    requester gets the generic 500 (nothing disclosed), not a 422 blaming its request's references, and the log
    ends the request with ``request.failed`` (the guard's error type, never the value) instead of keeping its
    write-ahead with nothing after it. Found by a review: every personal-data refusal became that 422."""
    monkeypatch.setattr(service_module, "_refusal_code", lambda reason, holder: reason or "unspecified")
    holder.mode = f"refuse-code-{BSN}"
    case = "RIEC-AA-2026-pd-after-write-ahead"
    try:
        response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", BIBOB | {
            "case_reference": case, "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][1]}],
            "holders": ["politie"], "categories": ["police_incidents"]})
    finally:
        holder.mode = "answer"
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert BSN not in response.text
    entries = stack.logged_for_case(case)
    assert [e["event_type"] for e in entries] == ["exchange.requested", "policy.decided", "request.failed"]
    assert (entries[-1]["reasons"], entries[-1]["extra"]["error_type"]) == (["gateway-error"], "PersonalDataError")
    assert BSN not in json.dumps(entries)
