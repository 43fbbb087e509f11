"""A real person with very long names encodes a filter the gateway refuses as a wildcard (more than 75 % of its
bits set). Before: the client sent it, and the gateway refused the whole batch of up to 1,000 records — a
``replace`` included, so the holder's index stayed stale — and a fuzzy discovery about such a person came back
as a bare 422. Now the client leaves such records out of an enrolment (enrolling the others, reporting each by
reference and reason) and refuses such a subject before anything is sent."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import httpx
import pytest

from gateway.client.fuzzy import MAX_FILTER_BATCH, FuzzySubject
from gateway.client.fuzzy_requests import (
    FilterRecordToEnrol,
    Implausibility,
    LeftOutRecord,
    RefusedSubject,
    UnsearchableSubjects,
    enrolment_plan,
    fuzzy_request,
)
from gateway.client.models import Signal
from gateway.matching.schema import shipped_schema
from tests.fuzzy_questions import FuzzyQuestion
from tests.unit.client.test_api_retries import Recorder, _client

SECRET = b"long-names-test-partnership-key!"
LONG_NAMED = {"given_name": "Johannes Cornelis Maria", "surname": "van Oldenbarnevelt-Schimmelpenninck",
              "date_of_birth": "19620417", "address_1": "Burgemeester van Karnebeeklaan", "street_number": "112",
              "postcode": "2585BE", "suburb": "s-Gravenhage"}
LONG_REF = "dossier/2026/long-00001"


def _people(count: int) -> list[FilterRecordToEnrol]:
    return [FilterRecordToEnrol(f"dossier/new-{n:05d}", {"given_name": "michaela", "surname": f"neumann{n}",
                                                         "date_of_birth": "19151111"}, ["police_incidents"])
            for n in range(count)]


class Gateway:
    """A fake gateway that takes every batch and keeps what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        stored = len(body["records"])
        return httpx.Response(200, json={"record_type": "person", "stored": stored, "removed": 0,
                                         "enrolled": sum(len(b["records"]) for b in self.bodies)})


async def test_a_long_named_record_is_left_out_and_the_others_enrolled(caplog: pytest.LogCaptureFixture) -> None:
    seen, gateway = Recorder(), Gateway()
    records = _people(5)
    records.insert(2, FilterRecordToEnrol(LONG_REF, LONG_NAMED, ["police_incidents"]))
    async with _client(seen, gateway) as client:
        with caplog.at_level(logging.WARNING, logger="gateway.client"):
            result = await client.enrol_filters("riec-x", "person", SECRET, records, replace=True)
    assert result.left_out == [LeftOutRecord(LONG_REF, Implausibility.TOO_DENSE)]
    assert (result.stored, result.enrolled) == (5, 5)
    [body] = gateway.bodies
    assert [r["ref"] for r in body["records"]] == [r.ref for r in records if r.ref != LONG_REF]
    assert body["replace"] is True
    logged = caplog.text
    assert "1 of 6 record(s) left out" in logged
    assert LONG_REF not in logged
    assert "Oldenbarnevelt" not in logged


async def test_when_every_record_is_left_out_nothing_is_sent() -> None:
    seen, gateway = Recorder(), Gateway()
    async with _client(seen, gateway) as client:
        result = await client.enrol_filters("riec-x", "person", SECRET,
                                            [FilterRecordToEnrol(LONG_REF, LONG_NAMED, ["police_incidents"])])
    assert gateway.bodies == []
    assert "/v1/enrolments/filters" not in seen.paths
    assert (result.stored, result.removed, result.enrolled) == (0, 0, None)
    assert result.left_out == [LeftOutRecord(LONG_REF, Implausibility.TOO_DENSE)]


def test_a_replacement_counts_only_the_records_it_sends() -> None:
    """A replacement's ``total`` is what the gateway must find kept aside at its last batch: a left-out record
    counted there would fail the replacement (409) every night."""
    records = [*_people(MAX_FILTER_BATCH + 1), FilterRecordToEnrol(LONG_REF, LONG_NAMED, ["police_incidents"]),
               FilterRecordToEnrol("dossier/empty-00001", {}, ["police_incidents"])]
    plan = enrolment_plan("riec-x", "person", SECRET, records, replace=True)
    assert plan.left_out == [LeftOutRecord(LONG_REF, Implausibility.TOO_DENSE),
                             LeftOutRecord("dossier/empty-00001", Implausibility.EMPTY)]
    assert len(plan.bodies) == 2
    assert plan.bodies[-1]["total"] == MAX_FILTER_BATCH + 1
    assert sum(len(b["records"]) for b in plan.bodies) == MAX_FILTER_BATCH + 1


BIBOB: FuzzyQuestion = {
    "partnership": "riec-x", "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-700", "signal": Signal(type="bibob-application", reference="BIBOB-2026-1"),
    "categories": ["police_incidents"], "record_type": "person"}


def test_a_discovery_about_a_long_named_subject_is_refused_before_it_is_built() -> None:
    other = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111"}
    with pytest.raises(UnsearchableSubjects) as raised:
        fuzzy_request(secret=SECRET, subjects=[other, LONG_NAMED], **BIBOB)
    assert raised.value.subjects == (RefusedSubject(1, Implausibility.TOO_DENSE),)
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert "subject 1 (too-dense)" in message
    assert "Oldenbarnevelt" not in message
    assert "Johannes" not in message


async def test_a_request_built_by_hand_with_a_saturated_subject_is_not_sent() -> None:
    seen, gateway = Recorder(), Gateway()
    request = fuzzy_request(secret=SECRET, subjects=[{"given_name": "michaela", "surname": "neumann"}],
                            **BIBOB)
    bits = shipped_schema("person").filter_bits
    full = base64.urlsafe_b64encode(b"\xff" * (bits // 8)).rstrip(b"=").decode()
    request.subjects.append(FuzzySubject(clk=full))
    async with _client(seen, gateway) as client:
        with pytest.raises(UnsearchableSubjects) as raised:
            await client.fuzzy_discovery(request)
    assert raised.value.subjects == (RefusedSubject(1, Implausibility.TOO_DENSE),)
    assert "/v1/discovery/fuzzy" not in seen.paths
