"""The partner side's enrolment batches (``gateway.client.fuzzy_requests.enrolment_batches``): each within the
gateway's per-batch limits, ``replace`` only on the first (or, for a larger replacement, on each with its id),
a reference never both sent and removed, and (``enrol_filters``) every batch checked before the first is sent."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from gateway.client import api
from gateway.client.fuzzy import MAX_FILTER_BATCH, FilterEnrolment, FuzzyDiscoveryRequest
from gateway.client.fuzzy_requests import (
    EnrolmentPlan,
    FilterRecordToEnrol,
    enrolment_batches,
    enrolment_plan,
    fuzzy_request,
)
from gateway.client.matching import clk_key_id
from gateway.client.models import Signal
from tests.unit.client.test_api_retries import Recorder, _client

SECRET = b"batches-test-partnership-secret!"
PERSON = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111"}


def test_removals_are_split_like_records_and_every_body_is_valid() -> None:
    removals = [f"dossier/old-{n:05d}" for n in range(2 * MAX_FILTER_BATCH + 1)]
    records = [FilterRecordToEnrol("dossier/new-00001", PERSON, ["police_incidents"])]
    bodies = list(enrolment_batches("riec-x", "person", SECRET, records, remove=removals, replace=True))
    assert len(bodies) == 3
    assert [len(b["remove"]) for b in bodies] == [MAX_FILTER_BATCH, MAX_FILTER_BATCH, 1]
    assert [b["replace"] for b in bodies] == [True, False, False]
    assert [r for b in bodies for r in b["remove"]] == removals
    assert [r["ref"] for b in bodies for r in b["records"]] == ["dossier/new-00001"]
    for body in bodies:
        FilterEnrolment.model_validate(body)  # what the gateway accepts


def test_a_reference_both_sent_and_removed_is_refused_before_anything_is_sent() -> None:
    records = [FilterRecordToEnrol("dossier/new-00001", PERSON, ["police_incidents"])]
    with pytest.raises(ValueError, match="both sent and removed"):
        list(enrolment_batches("riec-x", "person", SECRET, records, remove=["dossier/new-00001"]))


def _people(count: int) -> list[FilterRecordToEnrol]:
    return [FilterRecordToEnrol(f"dossier/new-{n:05d}", PERSON | {"surname": f"neumann{n}"}, ["police_incidents"])
            for n in range(count)]


def test_a_replace_larger_than_one_batch_is_one_replacement_that_ends_with_its_total() -> None:
    """Before: ``replace`` went with the first batch only, which withdrew the old set at once; a later batch
    that failed left the index half-replaced. Now every batch names the same replacement, and the last says how
    many records it holds in all: the gateway swaps them in together."""
    records = _people(MAX_FILTER_BATCH + 2)
    bodies = list(enrolment_batches("riec-x", "person", SECRET, records, replace=True))
    assert len(bodies) == 2
    assert all(b["replace"] for b in bodies)
    assert bodies[0]["replacement"] == bodies[1]["replacement"]
    assert ("total" not in bodies[0], bodies[1]["total"]) == (True, MAX_FILTER_BATCH + 2)
    for body in bodies:
        FilterEnrolment.model_validate(body)
    again = list(enrolment_batches("riec-x", "person", SECRET, records, replace=True))
    assert again[0]["replacement"] != bodies[0]["replacement"]  # a new replacement each time
    named = list(enrolment_batches("riec-x", "person", SECRET, records, replace=True, replacement="nightly-2026"))
    assert {b["replacement"] for b in named} == {"nightly-2026"}


def test_a_replace_that_fits_one_batch_is_sent_as_before() -> None:
    [body] = enrolment_batches("riec-x", "person", SECRET, _people(3), replace=True)
    assert body["replace"] is True
    assert "replacement" not in body
    assert "total" not in body


def test_a_replacement_takes_no_removals_nor_a_reference_twice() -> None:
    records = _people(MAX_FILTER_BATCH + 1)
    with pytest.raises(ValueError, match="takes no `remove`"):
        list(enrolment_batches("riec-x", "person", SECRET, records, replace=True, remove=["dossier/old-1"]))
    with pytest.raises(ValueError, match="sent twice"):
        list(enrolment_batches("riec-x", "person", SECRET, [*records, records[0]], replace=True))


async def test_a_record_the_gateway_would_refuse_in_a_later_batch_is_refused_before_the_first_is_sent() -> None:
    """Each batch is stored whole or not at all, so a reference that looks like a plain number in the second
    batch used to leave the first enrolled (or, in a replacement, staged) and the call failed half-way with a
    422: bad input made a partial write. The batches are checked as the gateway checks them before any is sent."""
    seen = Recorder()
    records = [*_people(MAX_FILTER_BATCH), FilterRecordToEnrol("123456782", PERSON, ["police_incidents"])]

    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"record_type": "person", "stored": MAX_FILTER_BATCH, "removed": 0,
                                         "enrolled": MAX_FILTER_BATCH})
    async with _client(seen, api) as client:
        with pytest.raises(ValueError, match="looks like a plain identifier") as raised:
            await client.enrol_filters("riec-x", "person", SECRET, records)
    assert "/v1/enrolments/filters" not in seen.paths
    assert "123456782" not in str(raised.value)
    assert "batch 2" in str(raised.value)


async def test_the_records_are_encoded_while_the_event_loop_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding and checking take about 50 µs a record (5 s for a file of 100,000), and the client is shared by
    all of a process's tasks: done on the event loop, they held up every other call (whose timeouts and
    deadlines then ran out while nothing could run). The encoding waits here until the loop has run a callback
    scheduled before the call; on the loop itself it would wait in vain."""
    loop_ran = threading.Event()
    ran_meanwhile: list[bool] = []
    encode = enrolment_plan  # the real one, which `api` looks up by this name

    def slow_encoding(*args: Any, **kwargs: Any) -> EnrolmentPlan:
        ran_meanwhile.append(loop_ran.wait(2))
        return encode(*args, **kwargs)

    monkeypatch.setattr(api, "enrolment_plan", slow_encoding)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"record_type": "person", "stored": 3, "removed": 0, "enrolled": 3})
    async with _client(Recorder(), answer) as client:
        asyncio.get_running_loop().call_soon(loop_ran.set)
        result = await client.enrol_filters("riec-x", "person", SECRET, _people(3))
    assert ran_meanwhile == [True]
    assert (result.stored, result.enrolled) == (3, 3)


def test_every_body_carries_the_key_id_of_its_secret() -> None:
    """Beside `schema_version`: the gateway tells filters of another (rotated, mistyped) secret from a no-hit."""
    removals = [f"dossier/old-{n:05d}" for n in range(MAX_FILTER_BATCH + 1)]
    bodies = list(enrolment_batches("riec-x", "person", SECRET, [], remove=removals))
    assert [b["clk_key_id"] for b in bodies] == [clk_key_id(SECRET)] * 2
    request = fuzzy_request(partnership="riec-x", purpose="bibob", legal_basis="WGS", case_reference="CASE-1",
                            signal=Signal(type="bibob-application", reference="B-1"), categories=["tax_debts"],
                            record_type="person", secret=SECRET, subjects=[PERSON])
    assert request.clk_key_id == clk_key_id(SECRET) != clk_key_id(SECRET[::-1])
    old_client = request.model_dump(mode="json") | {"clk_key_id": None}  # optional for one version
    assert FuzzyDiscoveryRequest.model_validate(old_client).clk_key_id is None
    with pytest.raises(ValueError, match="clk_key_id"):
        FuzzyDiscoveryRequest.model_validate(old_client | {"clk_key_id": SECRET.decode()})  # not a key id
