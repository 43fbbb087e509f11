"""A real person with very long names, over real HTTP (gateway app, real database, the partner client).

The gateway refuses a filter with more than 75 % of its bits set: such a filter would match almost anyone, so a
requester could use it as a wildcard probe. Real records can encode that densely (``Johannes Cornelis Maria van
Oldenbarnevelt-Schimmelpenninck`` with an address: 79 %). Before, one such record made the gateway refuse its
whole batch of up to 1,000 with a 422 that said no record encodes like that and named only the first filter by
position; the client sent it anyway, so a partner's nightly ``replace`` failed and its index stayed stale. Now
the 422 names every refused filter (position, reason, the record's reference) under a type of its own, the
client leaves such records out and enrols the others, and a discovery about such a subject is refused by the
client before it is sent. The bound itself still holds: a saturated filter sent by hand is refused."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audit.tables import audit_entries
from gateway.client.fuzzy import FuzzySubject
from gateway.client.fuzzy_requests import (
    FilterRecordToEnrol,
    Implausibility,
    LeftOutRecord,
    RefusedSubject,
    UnsearchableSubjects,
    fuzzy_request,
)
from gateway.client.models import Signal
from gateway.enrolment.tables import match_filters
from gateway.matching.encoding import CLKEncoder, dataset_to_wire
from gateway.matching.schema import shipped_schema
from tests.fuzzy_questions import FuzzyQuestion
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
POLICE = "politie-bvh"
SECRET = b"riec-aa-clk-secret-long-names-01"
LONG_NAMED = {"given_name": "Johannes Cornelis Maria", "surname": "van Oldenbarnevelt-Schimmelpenninck",
              "date_of_birth": "19620417", "address_1": "Burgemeester van Karnebeeklaan", "street_number": "112",
              "postcode": "2585BE", "suburb": "s-Gravenhage"}
PEOPLE = [{"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111", "suburb": "utrecht"},
          {"given_name": "pieter", "surname": "de vries", "date_of_birth": "19820302", "suburb": "zwolle"},
          {"given_name": "fatima", "surname": "el amrani", "date_of_birth": "19990714", "suburb": "almere"}]
REFS = ["bvh/2026/long-0000", "bvh/2026/long-0001", "bvh/2026/long-0002"]
LONG_REF = "bvh/2026/long-9999"
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-880", "signal": Signal(type="bibob-application", reference="BIBOB-2026-880"),
    "categories": ["police_incidents"], "record_type": "person"}
NAMES = ("Johannes", "Oldenbarnevelt", "Schimmelpenninck", "Karnebeeklaan")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("fuzzy-long-names")) as running:
        yield running


def _held_refs(stack: Stack) -> list[str]:
    with stack.container.engine.connect() as connection:
        return sorted(connection.execute(select(match_filters.c.local_ref).where(
            match_filters.c.organisation == "politie")).scalars())


def _logged(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _wire(people: list[dict[str, str]]) -> list[dict[str, Any]]:
    return dataset_to_wire(CLKEncoder(shipped_schema("person"), SECRET).encode_dataset(people))


def _full() -> str:
    bits = shipped_schema("person").filter_bits
    return base64.urlsafe_b64encode(b"\xff" * (bits // 8)).rstrip(b"=").decode()


def _refusal(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = answer.json()
    assert problem["type"].endswith("/implausible-filter")
    assert "no encoding of a record" not in problem["detail"]
    assert not any(name in answer.text for name in NAMES)
    return problem


def test_the_client_enrols_the_others_of_a_batch_and_reports_the_long_named_record(stack: Stack) -> None:
    records = [FilterRecordToEnrol(ref, fields, ["police_incidents"]) for ref, fields in zip(REFS, PEOPLE, strict=True)]
    records.insert(1, FilterRecordToEnrol(LONG_REF, LONG_NAMED, ["police_incidents"]))

    async def enrol() -> Any:
        async with stack.client(POLICE) as police:
            return await police.enrol_filters(RIEC, "person", SECRET, records, replace=True)
    result = asyncio.run(enrol())
    assert result.left_out == [LeftOutRecord(LONG_REF, Implausibility.TOO_DENSE)]
    assert (result.stored, result.enrolled) == (3, 3)
    assert _held_refs(stack) == REFS
    answer = stack.post(MUNICIPALITY, "/v1/discovery/fuzzy", fuzzy_request(
        secret=SECRET, subjects=PEOPLE[1:2], **BIBOB).model_dump(mode="json"))
    assert answer.status_code == 200, answer.text
    police = next(t for t in answer.json()["targets"] if t["holder"] == "politie")
    assert police["subjects"] == ["hit"]


def test_the_gateways_422_names_every_implausible_record_and_writes_nothing(stack: Stack) -> None:
    before = _held_refs(stack)
    refs = ["bvh/2026/hand-0000", "bvh/2026/hand-0001", "bvh/2026/hand-0002", "bvh/2026/hand-0003"]
    items = _wire([PEOPLE[0], LONG_NAMED, PEOPLE[2], {}])
    body = {"partnership": RIEC, "record_type": "person", "schema_version": shipped_schema("person").version,
            "replace": True, "records": [{"ref": ref, "categories": ["police_incidents"]} | item
                                         for ref, item in zip(refs, items, strict=True)]}
    problem = _refusal(stack.post(POLICE, "/v1/enrolments/filters", body))
    assert problem["refused"] == [{"position": 1, "reason": "too-dense", "ref": refs[1]},
                                  {"position": 3, "reason": "empty", "ref": refs[3]}]
    assert "position 1 (too-dense), 3 (empty)" in problem["detail"]
    assert _held_refs(stack) == before  # the replace did not happen: nothing of the batch was written


def test_a_saturated_filter_sent_by_hand_is_still_refused(stack: Stack) -> None:
    """The guard against a wildcard probe holds: the client's leaving-out is a convenience, not the check."""
    before = _held_refs(stack)
    [item] = _wire(PEOPLE[:1])
    body = {"partnership": RIEC, "record_type": "person", "schema_version": shipped_schema("person").version,
            "records": [{"ref": "bvh/2026/probe-0001", "categories": ["police_incidents"], **item, "clk": _full()}]}
    problem = _refusal(stack.post(POLICE, "/v1/enrolments/filters", body))
    assert problem["refused"] == [{"position": 0, "reason": "too-dense", "ref": "bvh/2026/probe-0001"}]
    assert _held_refs(stack) == before

    logged = _logged(stack)
    asked = json.loads(fuzzy_request(secret=SECRET, subjects=PEOPLE[:2], **BIBOB).model_dump_json())
    asked["subjects"][1] = {"clk": _full()}
    problem = _refusal(stack.post(MUNICIPALITY, "/v1/discovery/fuzzy", asked))
    assert problem["refused"] == [{"position": 1, "reason": "too-dense"}]  # a subject has no reference
    [long_named] = _wire([LONG_NAMED])
    asked["subjects"][1] = long_named
    assert _refusal(stack.post(MUNICIPALITY, "/v1/discovery/fuzzy", asked))["refused"] == [
        {"position": 1, "reason": "too-dense"}]
    assert _logged(stack) == logged  # refused before anything was decided or logged


def test_the_client_refuses_a_discovery_about_a_long_named_subject_before_sending(stack: Stack) -> None:
    with pytest.raises(UnsearchableSubjects) as raised:
        fuzzy_request(secret=SECRET, subjects=[PEOPLE[0], LONG_NAMED], **BIBOB)
    assert raised.value.subjects == (RefusedSubject(1, Implausibility.TOO_DENSE),)

    request = fuzzy_request(secret=SECRET, subjects=PEOPLE[:1], **BIBOB)  # a request built otherwise
    request.subjects.append(FuzzySubject(**_wire([LONG_NAMED])[0]))
    logged = _logged(stack)

    async def discover() -> Any:
        async with stack.client(MUNICIPALITY) as municipality:
            return await municipality.fuzzy_discovery(request)
    with pytest.raises(UnsearchableSubjects) as raised:
        asyncio.run(discover())
    assert raised.value.subjects == (RefusedSubject(1, Implausibility.TOO_DENSE),)
    assert _logged(stack) == logged  # nothing reached the gateway's log
