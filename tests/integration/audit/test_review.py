"""The review API (/v1/audit/entries, /statistics, /anomalies) on SQLite and on a PostgreSQL server whose
time zone is not UTC: time bounds with offsets, UTC months and days, and anomaly flags kept to the
officer's scope."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from audit.events import AuditEvent, Decision, EventType, ProcessingActivity, Requester
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.enrolment.rekey import rotation_entry
from gateway.settings import Settings
from tests.audit_support import span_id, trace_id
from tests.auth_helpers import bearer, person_token

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

RIEC = "riec-amsterdam-amstelland"


@pytest.fixture
def review(db_url: str, tmp_path: Path, clock: FixedClock,
           request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, Container]]:
    """The app on each database; PostgreSQL's sessions default to Europe/Amsterdam, as a Dutch server's may."""
    if db_url.startswith("postgresql"):
        admin: str = request.getfixturevalue("postgres_admin_url")
        name = db_url.rsplit("/", 1)[1]
        with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as server:
            server.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Europe/Amsterdam'")  # generated name
    container = build_container(Settings(data_dir=tmp_path, database_url=db_url, log_json=True), clock)
    with TestClient(create_app(container=container)) as client:
        yield client, container
    container.close()


_numbers = iter(range(1, 10**6))


def _decide(container: Container, count: int, org: str, system: str, partnership: str = RIEC,
            decision: Decision = Decision.ALLOW) -> None:
    container.services["audit"].log.append([
        AuditEvent(event_type=EventType.POLICY_DECIDED, trace_id=trace_id(n), span_id=span_id(n),
                   processing_activity=ProcessingActivity(partnership=partnership, purpose="bibob-integrity-check"),
                   requester=Requester(org=org, system=system), holder="kvk", decision=decision)
        for n in (next(_numbers) for _ in range(count))])


def _officer(client: TestClient, container: Container, organisation: str, role: str = "privacy-officer") -> dict[
        str, str]:
    return bearer(person_token(client, container, f"po-{organisation}", organisation, [role]))


def test_time_bounds_are_read_in_utc_whatever_their_offset(review: tuple[TestClient, Container]) -> None:
    client, container = review
    _decide(container, 1, "gemeente-amsterdam", "gemeente-amsterdam-vth")  # at the clock: 2026-11-25T10:00Z
    officer = _officer(client, container, "gemeente-amsterdam")

    def listed(**bounds: str) -> int:
        response = client.get("/v1/audit/entries", params={"event_type": "policy.decided", **bounds}, headers=officer)
        assert response.status_code == 200, response.text
        return len(response.json()["entries"])

    def counted(**bounds: str) -> int:
        response = client.get("/v1/audit/statistics", params=bounds, headers=officer)
        assert response.status_code == 200, response.text
        return sum(row["allows"] for row in response.json())

    assert listed(since="2026-11-25T10:30:00+01:00") == 1  # 09:30Z
    assert listed(since="2026-11-25T11:30:00+01:00") == 0  # 10:30Z
    assert listed(until="2026-11-25T10:30:00+01:00") == 0
    assert listed(until="2026-11-25T06:30:00-04:00") == 1  # 10:30Z
    assert listed(since="2026-11-25T09:30:00") == 1  # naive: UTC, not the database server's zone
    assert listed(since="2026-11-25T10:30:00") == 0
    assert counted(since="2026-11-25T10:30:00+01:00") == 1
    assert counted(until="2026-11-25T10:30:00+01:00") == 0
    # Bounds with no UTC equivalent lie beyond every entry; they are not an overflow (500).
    assert listed(since="9999-12-31T23:59:59-14:00") == 0
    assert listed(until="0001-01-01T00:00:00+14:00") == 0
    assert counted(since="0001-01-01T00:00:00+14:00") == 1


def test_months_and_days_are_utc_on_any_server(review: tuple[TestClient, Container], clock: FixedClock) -> None:
    """Late on 30 November UTC is 1 December in Amsterdam; the figures and flags still say 30 November."""
    client, container = review
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    for days_ago in (3, 2, 1):
        clock.set(late - timedelta(days=days_ago))
        _decide(container, 10, "gemeente-amsterdam", "gemeente-amsterdam-vth")
    clock.set(late)
    _decide(container, 40, "gemeente-amsterdam", "gemeente-amsterdam-vth", decision=Decision.DENY)
    officer = _officer(client, container, "gemeente-amsterdam")
    months = client.get("/v1/audit/statistics", headers=officer).json()
    assert {(row["month"], row["allows"], row["denials"]) for row in months} == {("2026-11", 30, 40)}
    flags = client.get("/v1/audit/anomalies", params={"day": "2026-11-30"}, headers=officer).json()
    assert {(f["metric"], f["day"], f["observed"]) for f in flags} == {
        ("volume", "2026-11-30", "40"), ("denial-rate", "2026-11-30", "1.00")}
    assert client.get("/v1/audit/anomalies", params={"day": "2026-12-01"}, headers=officer).json() == []


def test_coordinating_officer_flags_come_only_from_the_coordinated_partnership(
        review: tuple[TestClient, Container], clock: FixedClock) -> None:
    """riec-aa coordinates the RIEC partnership, not fec; politie takes part in both."""
    client, container = review
    today = clock.now()
    for days_ago in (3, 2, 1):
        clock.set(today - timedelta(days=days_ago))
        _decide(container, 1, "politie", "politie-fec-desk", "fec")
        _decide(container, 10, "politie", "politie-desk")
        _decide(container, 10, "politie", "politie-riec-desk")
    clock.set(today)
    _decide(container, 20, "politie", "politie-fec-desk", "fec")  # a spike, but in fec
    _decide(container, 12, "politie", "politie-desk")  # its usual volume in the RIEC partnership ...
    _decide(container, 100, "politie", "politie-desk", "fec")  # ... and a lot in fec
    _decide(container, 40, "politie", "politie-riec-desk")  # a spike in the RIEC partnership
    coordinator = _officer(client, container, "riec-aa", "coordinating-privacy-officer")
    assert client.get("/v1/audit/entries", params={"partnership": "fec"}, headers=coordinator).json()["entries"] == []
    flags = client.get("/v1/audit/anomalies", headers=coordinator).json()
    assert [(f["actor"], f["metric"], f["observed"]) for f in flags] == [("politie-riec-desk", "volume", "40")]
    # politie's own officer sees all of politie's actors, in every partnership.
    own = client.get("/v1/audit/anomalies", headers=_officer(client, container, "politie")).json()
    assert {(f["actor"], f["metric"]) for f in own} == {
        ("politie-desk", "volume"), ("politie-fec-desk", "volume"), ("politie-riec-desk", "volume")}


def test_quiet_days_count_as_zero_in_the_baseline(review: tuple[TestClient, Container], clock: FixedClock) -> None:
    client, container = review
    today = clock.now()
    for days_ago in (10, 9, 8):  # busy three days, then a quiet week
        clock.set(today - timedelta(days=days_ago))
        _decide(container, 10, "gemeente-amsterdam", "gemeente-amsterdam-vth")
    clock.set(today - timedelta(days=1))  # first seen yesterday: too little history to judge
    _decide(container, 10, "gemeente-amsterdam", "gemeente-amsterdam-bibob")
    clock.set(today)
    _decide(container, 25, "gemeente-amsterdam", "gemeente-amsterdam-vth")
    _decide(container, 50, "gemeente-amsterdam", "gemeente-amsterdam-bibob")
    flags = client.get("/v1/audit/anomalies", headers=_officer(client, container, "gemeente-amsterdam")).json()
    assert [(f["actor"], f["metric"], f["baseline"]) for f in flags] == [
        ("gemeente-amsterdam-vth", "volume", "3.0/day")]  # 30 decisions over 10 days


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_anomalies_at_the_ends_of_the_calendar_are_answered(review: tuple[TestClient, Container], day: str) -> None:
    client, container = review
    response = client.get("/v1/audit/anomalies", params={"day": day},
                          headers=_officer(client, container, "gemeente-amsterdam"))
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_a_case_step_is_visible_to_the_cases_requester_and_cannot_be_made_visible_by_its_text(
        review: tuple[TestClient, Container]) -> None:
    """A step the holder took on a case about gemeente-amsterdam's request is gemeente-amsterdam's to review; a
    reason that spells out another organisation as the case's requester (text in a string, escaped in the
    entry) shows that organisation nothing, and neither does an organisation whose id only begins alike."""
    client, container = review
    spoof = '"requester_org":"abn-amro"'
    container.services["audit"].log.append([AuditEvent(
        event_type=EventType.ESCALATION_STEP, trace_id=trace_id(n), span_id=span_id(n),
        processing_activity=ProcessingActivity(partnership=RIEC, purpose="bibob-integrity-check"),
        requester=Requester(org="politie", user="po-politie"), holder="politie", reasons=(spoof,),
        extra={"case_id": f"case-{n}", "action": "start_review", "requester_org": "gemeente-amsterdam"})
        for n in (next(_numbers),)])

    officers = {org: _officer(client, container, org)
                for org in ("gemeente-amsterdam", "politie", "abn-amro", "gemeente-amsterdam-noord")}

    def steps(organisation: str) -> list[str]:
        response = client.get("/v1/audit/entries", params={"event_type": "escalation.step"},
                              headers=officers[organisation])
        assert response.status_code == 200, response.text
        return [e["entry"]["event"]["extra"]["action"] for e in response.json()["entries"]]

    assert steps("gemeente-amsterdam") == ["start_review"]
    assert steps("politie") == ["start_review"]
    # The `organisation` filter means the same by "a party": the coordinating officer filtering on the
    # requester finds the step too.
    coordinator = _officer(client, container, "riec-aa", "coordinating-privacy-officer")
    filtered = client.get("/v1/audit/entries", headers=coordinator, params={
        "event_type": "escalation.step", "organisation": "gemeente-amsterdam"}).json()["entries"]
    assert [e["entry"]["event"]["extra"]["action"] for e in filtered] == ["start_review"]
    assert client.get("/v1/audit/entries", headers=coordinator, params={
        "event_type": "escalation.step", "organisation": "abn-amro"}).json()["entries"] == []
    assert steps("abn-amro") == []
    assert steps("gemeente-amsterdam-noord") == []
    # Anomaly flags stay about the organisation's own actors: a case's step is not one of its decisions.
    assert client.get("/v1/audit/anomalies", headers=officers["gemeente-amsterdam"]).json() == []


def test_gateway_wide_entries_reach_the_officers_they_concern_and_nothing_else_does(
        review: tuple[TestClient, Container]) -> None:
    """Entries that name no organisation and no partnership were visible to no officer at all, since scope is
    by organisation. Two kinds concern officers all the same:

    * ``register.changed``: the register is what every participant's processing rests on, so every privacy
      officer of a participating organisation sees its changes (they may read the register itself anyway);
    * a failed sign-in on a username that is no account names nobody: password guessing against the gateway,
      whose monitoring falls to the coordinating privacy officers (of a partnership they coordinate);
    * the rotation of the pseudonym key (``index.rekeyed`` of zero rows, no partnership): the key is every
      partnership's, and the coordinating privacy officers see the re-keyed batches of their partnerships.

    Nothing else without a party is shown (another kind of event), and a failed sign-in on an account stays
    its organisation's, not the coordinators'."""
    client, container = review
    assert client.post("/v1/auth/login", json={"username": "nobody-at-all", "password": "guess"}).status_code == 401
    bank = _officer(client, container, "abn-amro")  # an account of abn-amro, and its officer
    assert client.post("/v1/auth/login", json={"username": "po-abn-amro", "password": "guess"}).status_code == 401
    n = next(_numbers)
    container.services["audit"].log.append([AuditEvent(event_type=EventType.AUTH_REJECTED, trace_id=trace_id(n),
                                                       span_id=span_id(n), reasons=("no-party",)),
                                            rotation_entry(1, 2)])  # what `wgs-gateway pseudonyms rotate` writes
    officer = _officer(client, container, "gemeente-amsterdam")
    coordinator = _officer(client, container, "riec-aa", "coordinating-privacy-officer")
    outsider = _officer(client, container, "gemeente-elders")  # an officer of no participating organisation
    idle = _officer(client, container, "kvk", "coordinating-privacy-officer")  # coordinates no partnership

    def seen(headers: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
        response = client.get("/v1/audit/entries", params={"limit": 500}, headers=headers)
        assert response.status_code == 200, response.text
        found: dict[str, list[dict[str, Any]]] = {}
        for item in response.json()["entries"]:
            event = item["entry"]["event"]
            found.setdefault(event["event_type"], []).append(event)
        return found

    def nobodys(headers: dict[str, str]) -> set[str]:
        """The kinds of entry seen that name no party (no requester organisation, holder or partnership)."""
        return {kind for kind, events in seen(headers).items() for e in events
                if not (e["requester"] or {}).get("org") and not e["holder"] and not e["processing_activity"]}

    assert nobodys(officer) == {"register.changed"}
    assert nobodys(coordinator) == {"register.changed", "console.action", "index.rekeyed"}
    assert nobodys(outsider) == set()
    assert nobodys(idle) == {"register.changed"}  # kvk takes part, but coordinates nothing
    sign_ins = [e["extra"] for e in seen(coordinator)["console.action"] if not (e["requester"] or {}).get("org")]
    assert sign_ins == [{"action": "sign-in", "channel": "api", "reason": "wrong-credentials"}]
    # The failed sign-in on abn-amro's account is abn-amro's: not the coordinators', nor anyone else's.
    def bank_sign_ins(headers: dict[str, str]) -> list[dict[str, Any]]:
        return [e for e in seen(headers).get("console.action", [])
                if (e["requester"] or {}).get("org") == "abn-amro" and e["status"] == "error"]

    assert len(bank_sign_ins(bank)) == 1
    assert [bank_sign_ins(headers) for headers in (officer, coordinator, outsider, idle)] == [[], [], [], []]
    # The filters apply to them as to any entry; statistics and anomaly flags do not count them.
    changes = client.get("/v1/audit/entries", params={"event_type": "register.changed"}, headers=officer).json()
    assert {e["entry"]["event"]["event_type"] for e in changes["entries"]} == {"register.changed"}
    assert client.get("/v1/audit/entries", params={"organisation": "riec-aa", "event_type": "register.changed"},
                      headers=coordinator).json()["entries"] == []
    assert client.get("/v1/audit/anomalies", headers=coordinator).json() == []


_MALFORMED = ["x" * 8_000, "a" * 65, "<script>alert(1)</script>", "RIEC-Amsterdam", "a", "riec amsterdam", "-riec"]


@pytest.mark.parametrize(("path", "name"), [
    ("/v1/audit/entries", "partnership"), ("/v1/audit/entries", "purpose"), ("/v1/audit/entries", "organisation"),
    ("/v1/audit/entries", "event_type"), ("/v1/audit/entries", "decision"),
    ("/v1/audit/statistics", "partnership"), ("/v1/audit/statistics", "purpose")])
def test_an_over_long_or_malformed_filter_is_refused_and_not_repeated(
        review: tuple[TestClient, Container], path: str, name: str) -> None:
    """The filters are ids of the register (or words of the log's vocabulary): anything else is a 422
    problem that names the parameter and never repeats the value, not a query on it."""
    client, container = review
    _decide(container, 1, "gemeente-amsterdam", "gemeente-amsterdam-vth")
    officer = _officer(client, container, "gemeente-amsterdam")
    for value in _MALFORMED:
        for extra in ({}, {"format": "csv"}) if path.endswith("statistics") else ({},):
            refused = client.get(path, params={name: value, **extra}, headers=officer)
            assert refused.status_code == 422, (name, value[:40])
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert name in refused.json()["detail"]
            assert len(value) < 8 or value not in refused.text  # (a short one may be a word of the message)
    fine = {"partnership": RIEC, "purpose": "bibob-integrity-check", "organisation": "gemeente-amsterdam",
            "event_type": "policy.decided", "decision": "allow"}[name]
    found = client.get(path, params={name: fine}, headers=officer)
    assert found.status_code == 200, found.text
    assert found.json()  # the well-formed value still finds the entry


def _a_volume_flag_today(container: Container, clock: FixedClock) -> datetime:
    """Three quiet days of the municipality's system, then a busy one (today, which it returns): a volume flag."""
    today = clock.now()
    for days_ago in (3, 2, 1):
        clock.set(today - timedelta(days=days_ago))
        _decide(container, 10, "gemeente-amsterdam", "gemeente-amsterdam-vth")
    clock.set(today)
    _decide(container, 40, "gemeente-amsterdam", "gemeente-amsterdam-vth")
    return today


def test_a_flag_is_logged_once_whichever_gateway_process_computes_it(
        review: tuple[TestClient, Container], clock: FixedClock, db_url: str, tmp_path: Path) -> None:
    """Found by a review: the flags already logged were remembered in one process's memory only, so another
    gateway process (or the same one after a restart) logged every flag of the day once more — the log said
    an actor had been flagged twice, against the documented once per actor, day and metric."""
    client, container = review
    today = _a_volume_flag_today(container, clock)
    officer = _officer(client, container, "gemeente-amsterdam")

    def logged_flags() -> list[tuple[str, str, str]]:
        entries = client.get("/v1/audit/entries", params={"event_type": "anomaly.flagged"}, headers=officer).json()
        return sorted((e["entry"]["event"]["extra"]["actor"], e["entry"]["event"]["extra"]["day"],
                       e["entry"]["event"]["reasons"][0]) for e in entries["entries"])

    assert [f["metric"] for f in client.get("/v1/audit/anomalies", headers=officer).json()] == ["volume"]
    assert logged_flags() == [("gemeente-amsterdam-vth", today.date().isoformat(), "volume")]
    other = build_container(Settings(data_dir=tmp_path, database_url=db_url, log_json=True), clock)
    try:
        with TestClient(create_app(container=other)) as second:
            again = second.get("/v1/audit/anomalies", headers=officer)
            assert again.status_code == 200, again.text
            assert [f["metric"] for f in again.json()] == ["volume"]
    finally:
        other.close()
    assert logged_flags() == [("gemeente-amsterdam-vth", today.date().isoformat(), "volume")]


def test_a_flag_whose_entry_could_not_be_written_is_logged_by_the_next_listing(
        review: tuple[TestClient, Container], clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags were remembered as logged before their entries were written: one write that failed (the log
    unavailable for a moment) left the flag out of the log for good in that process."""
    from audit import AuditWriteError
    from gateway.auditing.setup import AuditServices

    client, container = review
    _a_volume_flag_today(container, clock)
    officer = _officer(client, container, "gemeente-amsterdam")
    writer = container.service("audit", AuditServices).writer
    record = writer.record

    async def unavailable(*_args: object, **_kwargs: object) -> object:
        raise AuditWriteError("audit log write failed (OperationalError); deny the request")

    monkeypatch.setattr(writer, "record", unavailable)
    assert client.get("/v1/audit/anomalies", headers=officer).status_code == 503
    monkeypatch.setattr(writer, "record", record)
    assert [f["metric"] for f in client.get("/v1/audit/anomalies", headers=officer).json()] == ["volume"]
    entries = client.get("/v1/audit/entries", params={"event_type": "anomaly.flagged"}, headers=officer).json()
    assert [e["entry"]["event"]["extra"]["actor"] for e in entries["entries"]] == ["gemeente-amsterdam-vth"]


def test_two_processes_listing_a_flag_at_once_log_it_once_and_both_answer(
        review: tuple[TestClient, Container], clock: FixedClock, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process looked the flag up in the log, found nothing, and wrote it: two processes listing at once
    both did, and the log said the actor was flagged twice. Here the second process lists (and logs) the flag
    after the first looked it up and before the first writes, the window two listings at once share; the first
    must then not log it again, and still answer (no 500, no 503)."""
    import asyncio

    from gateway.auditing.setup import AuditServices

    client, container = review
    today = _a_volume_flag_today(container, clock)
    officer = _officer(client, container, "gemeente-amsterdam")
    other = build_container(Settings(data_dir=tmp_path, database_url=db_url, log_json=True), clock)
    writer = container.service("audit", AuditServices).writer
    record = writer.record
    second_answers: list[int] = []

    async def after_the_other_process(*args: object, **kwargs: object) -> object:
        if not second_answers:  # only the first write: the other process lists meanwhile
            with TestClient(create_app(container=other)) as second:
                answer = await asyncio.to_thread(second.get, "/v1/audit/anomalies", headers=officer)
            second_answers.append(answer.status_code)
            assert [f["metric"] for f in answer.json()] == ["volume"]
        return await record(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "record", after_the_other_process)
    try:
        first = client.get("/v1/audit/anomalies", headers=officer)
    finally:
        other.close()
    assert second_answers == [200]
    assert first.status_code == 200, first.text
    assert [f["metric"] for f in first.json()] == ["volume"]
    entries = client.get("/v1/audit/entries", params={"event_type": "anomaly.flagged"}, headers=officer).json()
    assert [(e["entry"]["event"]["extra"]["actor"], e["entry"]["event"]["extra"]["day"])
            for e in entries["entries"]] == [("gemeente-amsterdam-vth", today.date().isoformat())]
    monkeypatch.setattr(writer, "record", record)
    assert client.get("/v1/audit/anomalies", headers=officer).status_code == 200  # and later listings too
    again = client.get("/v1/audit/entries", params={"event_type": "anomaly.flagged"}, headers=officer).json()
    assert len(again["entries"]) == 1
