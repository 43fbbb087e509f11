"""A participant's match filters replaced in several batches take effect whole, with the last batch; and no
participant enrols more records than the gateway's limit (over real HTTP, gateway app, real database).

Before: ``enrol_filters(replace=True)`` sent ``replace`` with its first batch only, which withdrew the whole
earlier set at once. A later batch that failed left the index half-replaced: the records of the batches not
stored answered no-hit at this holder, and the earlier set was gone. And a participant could enroll records
without end, into every gateway process's memory and every fuzzy discovery's comparison."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from audit.tables import audit_entries
from gateway.client import fuzzy_requests
from gateway.client.errors import GatewayClientError
from gateway.client.fuzzy_requests import FilterRecordToEnrol, enrolment_batches
from gateway.enrolment import filters
from gateway.enrolment.audited import IndexMoved
from gateway.enrolment.setup import filter_service
from gateway.enrolment.tables import match_filter_staged, match_filters
from gateway.matching.schema import shipped_schema
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
POLICE, ORGANISATION = "politie-bvh", "politie"
SECRET = b"riec-aa-clk-secret-for-the-tests"
PERSON = shipped_schema("person")
GIVEN = ["Jan", "Piet", "Klaas", "Anna", "Marieke", "Sanne", "Daan", "Fleur", "Bram", "Lotte", "Ruben", "Eva",
         "Thijs", "Noor", "Lars", "Iris", "Joost", "Femke", "Sem", "Roos", "Wouter", "Lieke", "Koen", "Maud"]
SURNAME = ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos",
           "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker", "Brouwer", "de Wit", "Dijkstra", "Smits",
           "de Graaf", "van der Meer", "van Dijk", "Kok", "Jacobs"]
LIMIT = 30  # the stack's WGS_MATCH_FILTER_LIMIT
BATCH = 5  # records per batch in these tests (the client's MAX_FILTER_BATCH is 1000)


def _record(n: int, prefix: str, category: str = "police_incidents") -> FilterRecordToEnrol:
    fields = {"given_name": GIVEN[n % len(GIVEN)], "surname": SURNAME[(n * 7) % len(SURNAME)],
              "date_of_birth": f"19{50 + n % 40:02d}{1 + n % 12:02d}{1 + n % 28:02d}",
              "address_1": f"{SURNAME[n % len(SURNAME)].split()[-1]}straat", "street_number": str(1 + n),
              "postcode": f"{1000 + 37 * n}AB", "suburb": "Amsterdam"}
    return FilterRecordToEnrol(f"{prefix}/{n:05d}", fields, [category])


OLD = [_record(n, "old") for n in range(12)]
NEW = [_record(n + 100, "new") for n in range(12)]


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setattr(fuzzy_requests, "MAX_FILTER_BATCH", BATCH)
    with running_stack(tmp_path_factory.mktemp("replacement"),
                       settings_overrides={"match_filter_limit": LIMIT}) as running:
        answer = asyncio.run(_enrol(running, OLD, replace=True))  # one batch: as before
        assert (answer.stored, answer.enrolled) == (len(OLD), len(OLD))
        yield running


async def _enrol(stack: Stack, records: list[FilterRecordToEnrol], **options: Any) -> Any:
    async with stack.client(POLICE) as client:
        return await client.enrol_filters(RIEC, "person", SECRET, records, **options)


def _answering(stack: Stack) -> list[str]:
    """The references fuzzy discovery compares with at this holder now (what a fresh read of the index gives)."""
    held = filter_service(stack.container).held(RIEC, PERSON, [ORGANISATION]).get(ORGANISATION)
    return [] if held is None else list(held.refs)


def _refs(records: list[FilterRecordToEnrol]) -> list[str]:
    return sorted(r.ref for r in records)


def _count(stack: Stack, table: Any) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _bodies(records: list[FilterRecordToEnrol], replacement: str = "replacement-0001") -> list[dict[str, Any]]:
    return list(enrolment_batches(RIEC, "person", SECRET, records, replace=True, replacement=replacement))


def _problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    return dict(answer.json())


def test_a_failure_in_a_later_batch_leaves_the_earlier_set_answering_whole(stack: Stack) -> None:
    broken = [*NEW[:-1], NEW[-1]._replace(categories=["no_such_category"])]  # the third batch is refused
    with pytest.raises(GatewayClientError) as refused:
        asyncio.run(_enrol(stack, broken, replace=True))
    assert refused.value.status == 422
    assert _answering(stack) == _refs(OLD)  # before: only the first batch's records were left
    answer = asyncio.run(_enrol(stack, NEW, replace=True))  # called again: replaced whole
    assert (answer.stored, answer.removed, answer.enrolled) == (len(NEW), len(OLD), len(NEW))
    assert _answering(stack) == _refs(NEW)


def test_a_replacement_answers_from_the_earlier_set_until_its_last_batch(stack: Stack) -> None:
    first, second, last = _bodies(NEW)
    assert [("total" in body, body["replace"]) for body in (first, second, last)] == [
        (False, True), (False, True), (True, True)]
    for n, body in enumerate((first, second, first), start=1):  # a batch sent again is harmless
        answer = stack.post(POLICE, "/v1/enrolments/filters", body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["enrolled"] == len(OLD)
        assert answer.json()["staged"] == min(n, 2) * BATCH
        assert _answering(stack) == _refs(OLD)
    answer = stack.post(POLICE, "/v1/enrolments/filters", last)
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"record_type": "person"} == {"record_type": "person", "stored": 2, "removed": len(OLD),
                                                         "enrolled": len(NEW), "staged": None}
    assert _answering(stack) == _refs(NEW)
    assert _count(stack, match_filter_staged) == 0  # nothing kept aside once swapped in
    with stack.container.engine.connect() as connection:
        entries = [json.loads(canonical)["event"]["extra"] for canonical in connection.execute(
            select(audit_entries.c.canonical).where(audit_entries.c.event_type == "index.enrolment")
            .order_by(audit_entries.c.log_index)).scalars()]
    assert [entry.get("replacement") for entry in entries[-4:]] == ["staged", "staged", "staged", "completed"]
    assert (entries[-1]["added"], entries[-1]["removed"]) == (len(NEW), len(OLD))


def test_a_last_batch_without_all_the_others_changes_nothing(stack: Stack) -> None:
    first, _, last = _bodies(NEW)
    assert stack.post(POLICE, "/v1/enrolments/filters", first).status_code == 200
    problem = _problem(stack.post(POLICE, "/v1/enrolments/filters", last), 409)
    assert "holds 7 records with this batch, not the 12" in problem["detail"]
    assert _answering(stack) == _refs(OLD)


def test_an_abandoned_replacement_is_removed_and_cannot_be_completed(stack: Stack) -> None:
    first, second, last = _bodies(NEW)
    assert stack.post(POLICE, "/v1/enrolments/filters", first).status_code == 200
    assert _count(stack, match_filter_staged) == BATCH
    stack.clock.advance(timedelta(hours=1, seconds=1))  # the default time for the next batch, passed
    stack.forget_tokens()
    other = _bodies(NEW[:BATCH + 1], replacement="replacement-0002")[0]
    assert stack.post(POLICE, "/v1/enrolments/filters", other).status_code == 200
    assert _count(stack, match_filter_staged) == BATCH  # the abandoned one's went; the new one's are kept
    assert stack.post(POLICE, "/v1/enrolments/filters", second).status_code == 200  # starts it again, partly
    _problem(stack.post(POLICE, "/v1/enrolments/filters", last), 409)
    assert _answering(stack) == _refs(OLD)


@pytest.mark.parametrize(("change", "refusal"), [
    ({"replace": False}, "carries `replace: true`"),
    ({"remove": ["old/00001"]}, "takes no `remove`"),
    ({"replacement": None}, "`total` ends a `replacement`"),
    ({"replacement": "short"}, ""),
    ({"replacement": "123456782"}, "`replacement` looks like personal data (bsn)"),  # kept aside for an hour
])
def test_a_malformed_replacement_batch_is_refused_and_changes_nothing(stack: Stack, change: dict[str, Any],
                                                                     refusal: str) -> None:
    body = _bodies(NEW)[-1] | change
    problem = _problem(stack.post(POLICE, "/v1/enrolments/filters", body), 422)
    assert refusal in str(problem)
    assert _answering(stack) == _refs(OLD)
    assert _count(stack, match_filter_staged) == 0


def test_no_participant_enrols_more_records_than_the_limit(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused whole (422, saying the limit) when a batch would pass it — an added batch, a replace, a
    replacement's kept records; a batch that does not grow the set is taken."""
    more = [_record(n + 200, "more") for n in range(LIMIT - len(OLD))]
    asyncio.run(_enrol(stack, more[:-2]))
    assert _count(stack, match_filters) == LIMIT - 2
    with pytest.raises(GatewayClientError) as refused:
        asyncio.run(_enrol(stack, [*more[-2:], _record(300, "more")]))
    assert refused.value.status == 422
    assert "at most 30 match-filter records" in str(refused.value)
    assert _count(stack, match_filters) == LIMIT - 2  # nothing of the batch
    problem = _problem(stack.post(POLICE, "/v1/enrolments/filters", next(enrolment_batches(
        RIEC, "person", SECRET, [*more[-2:], _record(300, "more")]))), 422)
    assert problem["limit"] == LIMIT
    assert "this batch would make 31" in problem["detail"]
    asyncio.run(_enrol(stack, more[-2:]))  # up to the limit itself
    asyncio.run(_enrol(stack, [OLD[0]._replace(minor=True)]))  # an update at the limit
    asyncio.run(_enrol(stack, [_record(301, "more")], remove=[OLD[1].ref]))  # one in, one out
    assert _count(stack, match_filters) == LIMIT
    too_many = [_record(n + 400, "next") for n in range(LIMIT + 1)]
    with pytest.raises(GatewayClientError, match="at most 30"):
        asyncio.run(_enrol(stack, too_many, replace=True))  # a replacement in 7 batches: its sixth is refused
    monkeypatch.setattr(fuzzy_requests, "MAX_FILTER_BATCH", 1000)
    with pytest.raises(GatewayClientError, match="at most 30"):
        asyncio.run(_enrol(stack, too_many, replace=True))  # in one batch
    assert _count(stack, match_filters) == LIMIT
    assert len(_answering(stack)) == LIMIT


def test_a_batch_the_index_moved_under_is_counted_and_tried_again_not_a_500(stack: Stack,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``FilterBatch.apply`` refuses a batch when others got in between its count and its write (the limit would
    be passed, the replacement changed: ``IndexMoved``); the batch is then counted again and tried again, as
    for a count that moved. Before, that refusal was taken for a defect: a 500 and a failed-batch entry."""
    original = filters.FilterBatch.apply
    moved: list[int] = []

    def moved_once(self: filters.FilterBatch, connection: Connection) -> Any:
        if not moved:
            moved.append(1)
            raise IndexMoved("the limit would be passed with the batches that got in meanwhile")
        return original(self, connection)

    monkeypatch.setattr(filters.FilterBatch, "apply", moved_once)
    before = _count(stack, audit_entries)
    answer = asyncio.run(_enrol(stack, NEW[:2]))
    assert moved == [1]
    assert (answer.stored, answer.enrolled) == (2, len(OLD) + 2)
    assert sorted(_answering(stack)) == sorted(_refs(OLD) + _refs(NEW[:2]))
    with stack.container.engine.connect() as connection:
        written = connection.execute(select(audit_entries.c.event_type)
                                     .where(audit_entries.c.log_index >= before)).scalars().all()
    assert written == ["index.enrolment"]  # the batch's entry once, no failed-batch entry
