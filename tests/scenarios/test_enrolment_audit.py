"""Enrolments are in the audit log, over real HTTP (gateway app, real database, tokens from the token endpoint).

A participant's enrolment batch changes what the discovery index says about which participant holds data on
which subjects — the gateway's processing of personal data, which a privacy officer must account for. Each
batch (pseudonyms, ``POST /v1/enrolments``; match filters, ``POST /v1/enrolments/filters``; additions,
updates, withdrawals and replacements alike) is one ``index.enrolment`` entry with counts and codes, never a
subject, filter or reference; the enrolling organisation's privacy officer (and the partnership's
coordinating officer) sees it, another organisation's does not, and the statistics do not count it as a
request. When the log cannot be written the batch is refused (503) and the index stays as it was."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from audit.tables import audit_entries
from gateway.client.errors import GatewayClientError
from gateway.client.fuzzy_requests import FilterRecordToEnrol
from gateway.client.pseudonyms import PseudonymClient
from gateway.enrolment.tables import enrolments, match_filters, pseudonyms_made
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
KVK = "kvk-handelsregister"
POLICE = "politie-bvh"
SECRET = b"riec-aa-clk-secret-for-the-tests"
PEOPLE = [{"given_name": given, "surname": surname, "date_of_birth": born, "suburb": "zaandam"}
          for given, surname, born in (("jan", "de vries", "19800101"), ("fatima", "el amrani", "19920314"),
                                       ("pieter", "bakker", "19751130"))]
REFS = ["bvh/2026/90001", "bvh/2026/90002", "bvh/2026/90003"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("enrolment-audit")) as running:
        yield running


def _companies(stack: Stack, count: int) -> list[Any]:
    return stack.world.companies[:count]


async def _kvk_items(stack: Stack, companies: list[Any], **fields: Any) -> list[dict[str, Any]]:
    """One enrolment item per company as the KvK sends it (a fresh polymorphic pseudonym each)."""
    async with stack.client(KVK) as client:
        pseudonyms: PseudonymClient = await client.pseudonym_client(RIEC)
    return [{"type": "kvk", "polymorphic": pseudonyms.polymorphic("kvk", company.kvk_number),
             "record_types": ["trade-name"], "categories": ["company_registration"]} | fields
            for company in companies]


def _entries(stack: Stack) -> list[tuple[str, dict[str, Any]]]:
    """Every ``index.enrolment`` entry: its canonical text and its event, in log order."""
    with stack.container.engine.connect() as connection:
        texts = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == "index.enrolment").order_by(audit_entries.c.log_index)).scalars().all()
    return [(canonical, json.loads(canonical)["event"]) for canonical in texts]


def _counts(event: dict[str, Any]) -> dict[str, Any]:
    return {key: event["extra"][key] for key in ("added", "updated", "removed", "confidential", "minor")}


def _index(stack: Stack, table: Any = enrolments) -> list[Any]:
    with stack.container.engine.connect() as connection:
        return sorted((tuple(row) for row in connection.execute(select(table)).all()), key=repr)


def _made(stack: Stack) -> int:
    """How many pseudonyms the systems were counted for today (the daily quota)."""
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.coalesce(func.sum(pseudonyms_made.c.made), 0))).scalar_one())


def _enrol(stack: Stack, subjects: list[dict[str, Any]]) -> httpx.Response:
    return stack.post(KVK, "/v1/enrolments", {"partnership": RIEC, "subjects": subjects})


def _enrol_filters(stack: Stack, records: list[FilterRecordToEnrol], **options: Any) -> Any:
    async def run() -> Any:
        async with stack.client(POLICE) as client:
            return await client.enrol_filters(RIEC, "person", SECRET, records, **options)
    return asyncio.run(run())


def _reviewer(stack: Stack, username: str, organisation: str, role: str = "privacy-officer") -> str:
    return stack.person(username, organisation, [role])


def _visible(stack: Stack, token: str, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.gateway_url}/v1/audit/entries", params={"event_type": "index.enrolment"} | query,
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return [view["entry"]["event"] for view in response.json()["entries"]]


def test_a_pseudonym_enrolment_batch_is_one_entry_with_its_counts_and_no_subject(stack: Stack) -> None:
    companies = _companies(stack, 3)
    first, second, third = asyncio.run(_kvk_items(stack, companies))
    before = len(_entries(stack))
    answer = _enrol(stack, [first | {"confidential": True}, second | {"minor": True}, third])
    assert answer.status_code == 200, answer.text
    logged = _entries(stack)[before:]
    assert len(logged) == 1  # one entry for the batch, not one per subject
    canonical, event = logged[0]
    assert event["requester"] == {"org": "kvk", "system": KVK, "user": None}
    assert event["processing_activity"]["partnership"] == RIEC
    assert event["categories"] == ["company_registration"]
    assert event["data_subject"] is None
    assert event["extra"]["index"] == "pseudonyms"
    assert event["extra"]["record_types"] == ["trade-name"]
    assert event["extra"]["subjects"] == 3
    assert _counts(event) == {"added": 3, "updated": 0, "removed": 0, "confidential": 1, "minor": 1}

    # Again: one subject with other records (an update), one withdrawn (no records), one not held (nothing).
    again = asyncio.run(_kvk_items(stack, companies[:2]))
    fresh = asyncio.run(_kvk_items(stack, _companies(stack, 4)[3:], record_types=[], categories=[]))
    answer = _enrol(stack, [again[0] | {"record_types": ["trade-name", "director"]},
                            again[1] | {"record_types": [], "categories": []}, *fresh])
    assert answer.status_code == 200, answer.text
    [(second_text, event)] = _entries(stack)[before + 1:]
    assert _counts(event) == {"added": 0, "updated": 1, "removed": 1, "confidential": 0, "minor": 0}
    assert event["extra"]["subjects"] == 3

    # No identifier, name, polymorphic pseudonym, own pseudonym or index pseudonym in either entry.
    index_pseudonyms = [row[2] for row in _index(stack) if row[1] == "kvk"]
    secrets = [value for company in _companies(stack, 4) for value in (company.kvk_number, company.rsin,
                                                                       company.trade_name)]
    secrets += [item["polymorphic"] for item in (first, second, third, *again, *fresh)]
    secrets += answer.json()["pseudonyms"] + index_pseudonyms
    assert index_pseudonyms
    assert [value for value in secrets if value in canonical or value in second_text] == []


def test_a_filter_enrolment_batch_is_one_entry_without_references_or_filters(stack: Stack) -> None:
    records = [FilterRecordToEnrol(ref, fields, ["police_incidents"], minor=n == 2)
               for n, (ref, fields) in enumerate(zip(REFS, PEOPLE, strict=True))]
    before = len(_entries(stack))
    assert _enrol_filters(stack, records).stored == 3
    assert _enrol_filters(stack, [records[0]._replace(confidential=True)], remove=[REFS[1]]).removed == 1
    assert _enrol_filters(stack, records[1:], replace=True).removed == 2
    logged = _entries(stack)[before:]
    assert [_counts(event) for _, event in logged] == [
        {"added": 3, "updated": 0, "removed": 0, "confidential": 0, "minor": 1},
        {"added": 0, "updated": 1, "removed": 1, "confidential": 1, "minor": 0},
        {"added": 2, "updated": 0, "removed": 2, "confidential": 0, "minor": 1},  # replace: all out, these in
    ]
    assert [event["extra"]["replace"] for _, event in logged] == [False, False, True]
    for canonical, event in logged:
        assert event["requester"] == {"org": "politie", "system": POLICE, "user": None}
        assert event["processing_activity"]["partnership"] == RIEC
        assert event["extra"]["index"] == "filters"
        assert event["extra"]["record_types"] == ["person"]
        with stack.container.engine.connect() as connection:
            clks = connection.execute(select(match_filters.c.clk)).scalars().all()
        filters = [form for clk in clks for form in (clk.hex(), base64.b64encode(clk).decode()[:40],
                                                      base64.urlsafe_b64encode(clk).decode()[:40])]
        assert filters
        leaked = [value for value in (*REFS, *filters, *(v for person in PEOPLE for v in person.values()))
                  if value in canonical]
        assert leaked == []


def test_the_enrolling_organisations_officer_sees_its_entries_and_no_other_organisations(stack: Stack) -> None:
    if not any(event["requester"]["org"] == "kvk" for _, event in _entries(stack)):
        assert _enrol(stack, asyncio.run(_kvk_items(stack, _companies(stack, 1)))).status_code == 200
    if not any(event["requester"]["org"] == "politie" for _, event in _entries(stack)):
        _enrol_filters(stack, [FilterRecordToEnrol(REFS[0], PEOPLE[0], ["police_incidents"])])
    kvk_officer = _visible(stack, _reviewer(stack, "po-kvk", "kvk"))
    police_officer = _visible(stack, _reviewer(stack, "po-politie", "politie"))
    municipal_officer = _visible(stack, _reviewer(stack, "po-gemeente", "gemeente-amsterdam"))
    assert kvk_officer
    assert {event["requester"]["org"] for event in kvk_officer} == {"kvk"}
    assert {event["requester"]["org"] for event in police_officer} == {"politie"}
    assert municipal_officer == []  # enrolled nothing: sees none of the others' enrolments
    everything = [event for _, event in _entries(stack)]
    assert len(kvk_officer) == sum(1 for event in everything if event["requester"]["org"] == "kvk")
    # The partnership filter finds them; the partnership's coordinating officer sees every participant's.
    assert _visible(stack, _reviewer(stack, "po-kvk", "kvk"), partnership=RIEC) == kvk_officer
    coordinator = _visible(stack, _reviewer(stack, "fg-riec", "riec-aa", "coordinating-privacy-officer"))
    assert len(coordinator) == len(everything)


def test_statistics_do_not_count_enrolments_as_requests(stack: Stack) -> None:
    assert _enrol(stack, asyncio.run(_kvk_items(stack, _companies(stack, 2)))).status_code == 200
    for token in (_reviewer(stack, "po-kvk", "kvk"),
                  _reviewer(stack, "fg-riec", "riec-aa", "coordinating-privacy-officer")):
        response = httpx.get(f"{stack.gateway_url}/v1/audit/statistics", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert [row for row in response.json() if row["purpose"] == "discovery-index"] == []
        assert sum(row["requests"] for row in response.json()) == 0  # this module asks for nothing


def test_an_enrolment_the_log_cannot_record_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with running_stack(tmp_path) as broken:
        companies = _companies(broken, 2)
        assert _enrol(broken, asyncio.run(_kvk_items(broken, companies[:1]))).status_code == 200
        _enrol_filters(broken, [FilterRecordToEnrol(REFS[0], PEOPLE[0], ["police_incidents"])])
        index, filters, made = _index(broken), _index(broken, match_filters), _made(broken)
        with broken.container.engine.begin() as connection:  # a real fault: the log table disappears
            connection.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_gone"))
        items = asyncio.run(_kvk_items(broken, companies))  # one update, one addition
        refused = _enrol(broken, [items[0] | {"minor": True}, items[1]])
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "nothing was enrolled" in refused.json()["detail"]
        withdrawal = _enrol(broken, [items[0] | {"record_types": [], "categories": []}])
        assert withdrawal.status_code == 503
        with pytest.raises(GatewayClientError) as failed:
            _enrol_filters(broken, [FilterRecordToEnrol(REFS[1], PEOPLE[1], ["police_incidents"])],
                           remove=[REFS[0]])
        assert failed.value.status == 503
        assert "nothing was enrolled" in str(failed.value.detail)
        with pytest.raises(GatewayClientError) as failed:
            _enrol_filters(broken, [], replace=True)
        assert failed.value.status == 503
        assert (_index(broken), _index(broken, match_filters)) == (index, filters)  # the index as it was
        assert _made(broken) == made  # nor did the refused batches take any of the day's pseudonym quota


@pytest.mark.parametrize("index", ["pseudonyms", "filters"])
def test_a_defect_in_the_index_writes_is_a_500_logged_once_and_audited_with_the_index_unchanged(
        stack: Stack, index: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found by a review: an exception no code path expects (a bug, injected here) inside a batch's index writes
    was answered "503, the audit log could not be written" — a client retries a 503, and it was no outage — and
    went into the gateway's log as a failure of the audit log. It is now, as an exchange's defect is: a 500
    problem+json that says nothing was enrolled, one error line with the exception's type (never its text,
    which may name a person), and an `index.enrolment` entry of the failed batch (status error, counts 0)."""
    from structlog.testing import capture_logs

    from gateway.enrolment.filters import FilterBatch
    from gateway.enrolment.service import PseudonymBatch

    secret = "Jan de Vries 19800101"  # what the exception says: never to be logged or answered

    def broken(self: Any, connection: Any) -> Any:
        raise KeyError(secret)

    monkeypatch.setattr(PseudonymBatch if index == "pseudonyms" else FilterBatch, "apply", broken)
    before, entries = (_index(stack), _index(stack, match_filters)), len(_entries(stack))
    with capture_logs() as logs, caplog.at_level("INFO"):
        if index == "pseudonyms":
            answer = _enrol(stack, asyncio.run(_kvk_items(stack, _companies(stack, 2))))
            status, problem = answer.status_code, answer.json()
            assert answer.headers["content-type"].startswith("application/problem+json")
        else:
            with pytest.raises(GatewayClientError) as failed:
                _enrol_filters(stack, [FilterRecordToEnrol(REFS[2], PEOPLE[2], ["police_incidents"])])
            status, problem = failed.value.status, {"detail": failed.value.detail}
    assert status == 500
    assert "nothing was enrolled" in problem["detail"]
    assert (_index(stack), _index(stack, match_filters)) == before
    errors = [line for line in logs if line["log_level"] == "error"]
    assert [(line["event"], line["error_type"]) for line in errors] == [("enrolment_failed_by_defect", "KeyError")]
    assert not [record for record in caplog.records if record.levelno >= 40]  # not also as a fault of the log
    assert secret not in json.dumps(logs, default=str) + caplog.text + json.dumps(problem)
    (canonical, event), = _entries(stack)[entries:]
    assert event["status"] == "error"
    assert event["extra"]["error_type"] == "KeyError"
    assert (event["extra"]["index"], event["extra"]["added"], event["extra"]["updated"],
            event["extra"]["removed"]) == (index, 0, 0, 0)
    assert secret not in canonical
