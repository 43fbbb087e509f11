"""Filters encoded with another CLK secret are told apart from a no-hit (over real HTTP, gateway app, real
database): every enrolment batch and fuzzy discovery carries the secret's key id beside ``schema_version``.

Before: nothing said which secret a filter was made with. A participant with a rotated or mistyped secret
enrolled filters that never matched anyone, and its discoveries answered no-hit everywhere — silently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from audit.tables import audit_entries
from gateway.client.fuzzy_requests import FilterRecordToEnrol, enrolment_batches, fuzzy_request
from gateway.client.models import Signal
from gateway.enrolment.tables import match_filter_generations, match_filters
from gateway.matching.encoding import clk_key_id
from tests.fuzzy_questions import FuzzyQuestion
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY, POLICE, TAX = "gemeente-amsterdam-vth", "politie-bvh", "belastingdienst-ivs"
SECRET_A = b"riec-aa-clk-secret-for-the-tests"
SECRET_B = b"riec-aa-clk-secret-rotated-2027!"
SECRET_C = b"riec-aa-clk-secret-mistyped-here"
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-701", "signal": Signal(type="bibob-application", reference="BIBOB-2026-701"),
    "categories": ["police_incidents", "tax_debts"], "record_type": "person"}
PEOPLE = [{"given_name": given, "surname": surname, "date_of_birth": born, "address_1": street,
           "street_number": number, "postcode": postcode, "suburb": "Amsterdam"}
          for given, surname, born, street, number, postcode in (
              ("Jan", "de Vries", "19700101", "Keizersgracht", "12", "1015CJ"),
              ("Anna", "Bakker", "19851224", "Prinsengracht", "263", "1016GV"),
              ("Klaas", "Visser", "19620615", "Damrak", "1", "1012LG"),
              ("Fleur", "Mulder", "19990330", "Overtoom", "45", "1054HB"))]


def _records(prefix: str, category: str) -> list[FilterRecordToEnrol]:
    return [FilterRecordToEnrol(f"{prefix}/{n:05d}", fields, [category]) for n, fields in enumerate(PEOPLE)]


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("clk-key")) as running:
        yield running


def _enrol(stack: Stack, system: str, secret: bytes, records: list[FilterRecordToEnrol],
           **options: Any) -> list[httpx.Response]:
    return [stack.post(system, "/v1/enrolments/filters", body)
            for body in enrolment_batches(RIEC, "person", secret, records, **options)]


def _count(stack: Stack, table: Any) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _problem(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = dict(answer.json())
    assert problem["type"].endswith("/clk-key-mismatch")
    return problem


def _discover(stack: Stack, secret: bytes, subjects: list[dict[str, Any]], **changes: Any) -> httpx.Response:
    body = fuzzy_request(secret=secret, subjects=subjects, **BIBOB).model_dump(mode="json") | changes
    return stack.post(MUNICIPALITY, "/v1/discovery/fuzzy", body)


def _by_holder(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {t["holder"]: t for t in answer.json()["targets"]}


def test_a_batch_of_another_secret_is_refused_until_a_full_replace(stack: Stack) -> None:
    assert [a.status_code for a in _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"),
                                          replace=True)] == [200]
    stored, entries = _count(stack, match_filters), _count(stack, audit_entries)
    added = [FilterRecordToEnrol("bvh/new/00001", PEOPLE[0] | {"given_name": "Piet"}, ["police_incidents"])]
    [refused] = _enrol(stack, POLICE, SECRET_B, added)
    problem = _problem(refused)
    assert problem["clk_key_id"] == clk_key_id(SECRET_A)  # which secret the enrolled filters carry: not secret
    assert (_count(stack, match_filters), _count(stack, audit_entries)) == (stored, entries)  # nothing written
    assert SECRET_B.decode() not in refused.text
    assert SECRET_A.decode() not in refused.text
    # the same secret still adds; withdrawals need none
    assert [a.status_code for a in _enrol(stack, POLICE, SECRET_A, added)] == [200]
    assert [a.status_code for a in _enrol(stack, POLICE, SECRET_B, [], remove=["bvh/new/00001"])] == [200]
    # a rotation: the full replace with B re-enrols everything, and from then on B's batches are the ones taken
    replaced = _enrol(stack, POLICE, SECRET_B, _records("bvh", "police_incidents"), replace=True)
    assert [a.status_code for a in replaced] == [200], replaced[0].text
    assert [a.status_code for a in _enrol(stack, POLICE, SECRET_B, added)] == [200]
    _problem(_enrol(stack, POLICE, SECRET_A, added)[0])
    entry = json.dumps(stack.logged({"receipt": {"audit_indices": [_count(stack, audit_entries) - 1]}}))
    assert SECRET_A.decode() not in entry
    assert SECRET_B.decode() not in entry


def test_a_replacement_in_several_batches_takes_one_secret(stack: Stack) -> None:
    _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"), replace=True)
    records = _records("bvh", "police_incidents")

    def batch(secret: bytes, part: list[FilterRecordToEnrol], **extra: Any) -> dict[str, Any]:
        body = next(enrolment_batches(RIEC, "person", secret, part, replace=True))
        return body | {"replacement": "rotation-0001"} | extra

    kept = stack.post(POLICE, "/v1/enrolments/filters", batch(SECRET_B, records[:2]))
    assert kept.status_code == 200, kept.text
    _problem(stack.post(POLICE, "/v1/enrolments/filters", batch(SECRET_C, records[2:], total=4)))  # C after B
    done = stack.post(POLICE, "/v1/enrolments/filters", batch(SECRET_B, records[2:], total=4))
    assert done.status_code == 200, done.text
    assert done.json()["enrolled"] == 4
    _problem(_enrol(stack, POLICE, SECRET_A, records[:1])[0])  # the set swapped in is B's now


def test_discovery_reports_a_holder_of_another_secret_as_not_comparable(stack: Stack) -> None:
    _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"), replace=True)
    _enrol(stack, TAX, SECRET_B, _records("ivs", "tax_debts"), replace=True)
    asked = PEOPLE[:2]
    for secret, same, other in ((SECRET_A, "politie", "belastingdienst"), (SECRET_B, "belastingdienst", "politie")):
        answer = _discover(stack, secret, asked)
        targets = _by_holder(answer)
        assert targets[same]["outcome"] == "hit"  # the same secret: as before
        assert targets[same]["subjects"] == ["hit", "hit"]
        assert targets[other]["outcome"] == "not-comparable"  # not a no-hit
        assert targets[other]["subjects"] == []
        assert targets[other]["match_handles"] == []
        assert [r["code"] for r in targets[other]["reasons"]] == ["clk-key-mismatch"]
        logged = stack.logged(answer.json())
        assert logged[0]["extra"]["fuzzy"]["clk_key_id"] == clk_key_id(secret)
        assert [e["reasons"] for e in logged if e["event_type"] == "holder.unavailable"
                and e["holder"] == other] == [["clk-key-mismatch"]]
        assert all(s.decode() not in json.dumps(logged) for s in (SECRET_A, SECRET_B))


def test_discovery_is_refused_when_no_holder_can_be_compared(stack: Stack) -> None:
    _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"), replace=True)
    _enrol(stack, TAX, SECRET_A, _records("ivs", "tax_debts"), replace=True)
    entries = _count(stack, audit_entries)
    _problem(_discover(stack, SECRET_C, PEOPLE[:1]))
    assert _count(stack, audit_entries) == entries  # refused before anything was logged or compared


def test_a_request_without_a_key_id_is_compared_as_before(stack: Stack) -> None:
    _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"), replace=True)
    old_client = {"clk_key_id": None}
    targets = _by_holder(_discover(stack, SECRET_A, PEOPLE[:1], **old_client))
    assert targets["politie"]["outcome"] == "hit"
    targets = _by_holder(_discover(stack, SECRET_C, PEOPLE[:1], **old_client))  # unknown: as today, a no-hit
    assert targets["politie"]["outcome"] == "no-hit"


def test_filters_enrolled_before_the_key_id_are_compared_as_before(stack: Stack) -> None:
    """Counter rows from before migration 0038 read null: unknown, so neither refused nor `not-comparable`."""
    _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"), replace=True)
    with stack.container.engine.begin() as connection:  # as the migration leaves an existing row
        connection.execute(update(match_filter_generations).values(clk_key_id=None))
    targets = _by_holder(_discover(stack, SECRET_C, PEOPLE[:1]))
    assert targets["politie"]["outcome"] == "no-hit"  # compared, as today
    added = [FilterRecordToEnrol("bvh/new/00001", PEOPLE[0], ["police_incidents"])]
    assert [a.status_code for a in _enrol(stack, POLICE, SECRET_B, added)] == [200]
    with stack.container.engine.connect() as connection:  # a set of unknown rows stays unknown
        assert connection.execute(select(match_filter_generations.c.clk_key_id)).scalars().all() == [None]


def test_a_requester_the_policy_denies_learns_nothing_of_the_holders_secrets(stack: Stack) -> None:
    """Whether no holder can be compared (422 ``clk-key-mismatch``) is told only of holders the policy lets the
    requester ask. Decided before the policy, the 422 told a non-participant (or a requester of a purpose that
    does not allow it) which participants hold filters of a record type and under a known secret — one
    category at a time, one holder at a time — by a question that the log did not even record."""
    _enrol(stack, POLICE, SECRET_A, _records("bvh", "police_incidents"), replace=True)
    _enrol(stack, TAX, SECRET_A, _records("ivs", "tax_debts"), replace=True)
    outsider = "abn-amro-fec"  # takes part in other partnerships, not in the RIEC
    answers = []
    for secret in (SECRET_A, SECRET_C):
        body = fuzzy_request(secret=secret, subjects=PEOPLE[:1], **BIBOB).model_dump(mode="json")
        entries = _count(stack, audit_entries)
        answer = stack.post(outsider, "/v1/discovery/fuzzy", body)
        answers.append(answer)
        targets = _by_holder(answer)  # denied everywhere, whichever secret: as for any question of a non-participant
        assert {t["outcome"] for t in targets.values()} == {"denied"}
        assert _count(stack, audit_entries) > entries  # and logged as such
    denied_purpose = {"purpose": "malafide-company-dissolution", "legal_basis": "WGS (RIEC) with BW 2:19a"}
    targets = _by_holder(_discover(stack, SECRET_C, PEOPLE[:1], **denied_purpose))
    assert {t["outcome"] for t in targets.values()} == {"denied"}
    _problem(_discover(stack, SECRET_C, PEOPLE[:1]))  # a requester the policy lets ask: told, as before
