"""An allow decision that nobody re-ran within its validity, through the real app (SQLite and PostgreSQL).

It used to stay `decided` for ever: the requester's feed kept offering it for a re-run, lists showed it
as a usable decision, and only the re-run itself said it had expired. Now the feed stops offering it the
moment its validity ends, the scan (the gateway's timer, or `wgs-gateway escalations scan`) moves the case
to `expired` with one audited step, and a re-run citing it gets 422 saying it expired — nothing asked,
nothing logged. A decision a live re-run holds is left to that re-run; one a re-run used but could not
close is closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from escalation import cases as case_store
from gateway.db.engine import transaction
from gateway.errors import ServiceUnavailable
from gateway.escalations.service import ScanResult
from gateway.escalations.setup import escalation_service
from gateway.exchange.service import CLAIM_ABANDONED_AFTER
from gateway.settings import Settings
from tests.integration.escalation.test_api import BIBOB, ENGINES, MOTIVATION, RIEC, Env, migrated_url, running_env

SYSTEM = "gemeente-amsterdam-vth"  # the requester's partner system: it re-runs
RERUN = {"partnership": RIEC, "purpose": BIBOB, "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-901", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"},
         "subjects": [{"ref": "subject-0001"}], "holders": ["politie"], "categories": ["police_incidents"]}


@pytest.fixture(params=ENGINES)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    with running_env(tmp_path, migrated_url(str(request.param), tmp_path, request)) as the_env:
        yield the_env


def _at(env: Env, moment: datetime) -> None:
    env.clock.set(moment)
    env.tokens = {}  # a month later every token, people's and systems', has long expired


def _allowed(env: Env) -> tuple[str, str, datetime]:
    """A case the holder's officer allowed: its id, the decision's id and the end of its validity."""
    case_id = env.open_case()
    decided = env.decide("po-politie", case_id, "allow", ["police_incidents"])
    assert decided.status_code == 200, decided.text
    decision = decided.json()["decision"]
    return case_id, decision["id"], datetime.fromisoformat(decision["valid_until"])


def _scan(env: Env) -> ScanResult:
    portal = env.client.portal
    assert portal is not None
    return portal.call(escalation_service(env.container).scan)


def _steps(env: Env, case_id: str, action: str) -> list[dict[str, Any]]:
    return [s for s in env.audit_steps(case_id) if s["extra"]["action"] == action]


def _feed(env: Env) -> list[tuple[str, str]]:
    response = env.get(SYSTEM, "/v1/escalations/feed")
    assert response.status_code == 200, response.text
    return [(item["case"]["id"], item["awaiting"]) for item in response.json()]


def test_an_unused_allow_expires_when_its_validity_ends(env: Env) -> None:
    case_id, decision_id, valid_until = _allowed(env)
    assert (case_id, "rerun") in _feed(env)
    _at(env, valid_until - timedelta(minutes=1))
    assert (case_id, "rerun") in _feed(env)
    assert _scan(env).expired == []  # still valid: nothing expires early
    assert env.detail("desk-riec", case_id)["state"] == "decided"

    _at(env, valid_until + timedelta(minutes=1))
    assert (case_id, "rerun") not in _feed(env), "an expired decision is no longer offered for a re-run"

    done = _scan(env)
    assert [(c.id, c.state.value) for c in done.expired] == [(case_id, "expired")]
    detail = env.detail("desk-riec", case_id)
    assert (detail["state"], detail["decision"]["id"]) == ("expired", decision_id)  # the decision stays on record
    assert detail["history"][-1]["action"] == "expire"
    [step] = _steps(env, case_id, "expire")
    assert (step["status"], step["extra"]["state_before"], step["extra"]["state"]) == ("ok", "decided", "expired")
    assert step["extra"]["decision_id"] == decision_id
    assert step["requester"] == {"org": "wgs-gateway", "system": "escalation-scheduler", "user": None}
    assert _scan(env).expired == []  # audited once
    assert len(_steps(env, case_id, "expire")) == 1

    assert case_id not in env.listed("desk-riec", state="decided")
    assert case_id in env.listed("desk-riec", state="expired")
    assert env.get("desk-riec", "/v1/escalations/metrics").json()["by_state"].get("expired") == 1

    logged = len(env.audit_events())
    rerun = env.post(SYSTEM, "/v1/exchanges", RERUN | {"escalation_decision": decision_id})
    assert rerun.status_code == 422, rerun.text
    assert rerun.headers["content-type"].startswith("application/problem+json")
    assert "expired" in rerun.json()["detail"]
    assert len(env.audit_events()) == logged  # nothing asked, no step logged


def test_an_allow_with_an_earlier_deletion_date_is_valid_until_that_day_ends(env: Env) -> None:
    """An allow may set an earlier deletion date (``retain_until``) than the purpose's; the policy gives the
    re-run the earlier of the two. The decision stayed valid for its full 30 days all the same, so a re-run
    after that date disclosed data whose deletion date had passed before it arrived. Its validity now ends
    with that day in Amsterdam: the feed stops offering it, a re-run citing it gets 422, the scan expires it."""
    case_id = env.open_case()  # Wednesday 25 November 2026; without the date the decision runs to 25 December
    decided = env.post("po-politie", f"/v1/escalations/{case_id}/decision", {
        "expected_version": env.version(case_id), "outcome": "allow", "motivation": MOTIVATION,
        "permitted_categories": ["police_incidents"], "obligations": {"retain_until": "2026-11-30"}})
    assert decided.status_code == 200, decided.text
    decision = decided.json()["decision"]
    day_ends = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # midnight in Amsterdam (CET) after 30 November
    assert datetime.fromisoformat(decision["valid_until"]) == day_ends
    assert decision["obligations"] == {"retain_until": "2026-11-30"}
    _at(env, day_ends - timedelta(minutes=1))  # the deletion day itself, late in the evening: still usable
    assert (case_id, "rerun") in _feed(env)
    assert _scan(env).expired == []

    _at(env, day_ends + timedelta(minutes=1))  # 1 December in Amsterdam: the data would be due for deletion
    assert (case_id, "rerun") not in _feed(env)
    logged = len(env.audit_events())
    rerun = env.post(SYSTEM, "/v1/exchanges", RERUN | {"escalation_decision": decision["id"]})
    assert rerun.status_code == 422, rerun.text
    assert "expired" in rerun.json()["detail"]
    assert len(env.audit_events()) == logged
    assert [(c.id, c.state.value) for c in _scan(env).expired] == [(case_id, "expired")]


def test_a_decision_held_by_a_live_rerun_is_left_to_it_until_the_claim_is_abandoned(env: Env) -> None:
    case_id, _decision_id, valid_until = _allowed(env)
    _at(env, valid_until + timedelta(seconds=1))
    with transaction(env.container.sessions) as session:  # a re-run claimed it just before it ended
        case_store.claim_decision(session, case_id, "c" * 32, now=valid_until - timedelta(seconds=1),
                                  stale_before=valid_until - CLAIM_ABANDONED_AFTER)
    assert _scan(env).expired == []
    assert env.case(case_id).state.value == "decided"
    assert _steps(env, case_id, "expire") == []  # not logged and retracted either
    _at(env, valid_until + CLAIM_ABANDONED_AFTER + timedelta(seconds=1))  # the re-run died with its claim
    assert [c.id for c in _scan(env).expired] == [case_id]


def test_a_used_decision_whose_close_failed_is_closed_by_the_scan(env: Env) -> None:
    case_id, _decision_id, valid_until = _allowed(env)
    claim = "d" * 32
    with transaction(env.container.sessions) as session:
        case_store.claim_decision(session, case_id, claim, now=env.clock.now(),
                                  stale_before=env.clock.now() - CLAIM_ABANDONED_AFTER)
    with env.container.engine.begin() as connection:  # the re-run disclosed; closing the case then failed
        case_store.use_decision(connection, case_id, claim, "e0000000-0000-7000-8000-000000000001")
    _at(env, valid_until + timedelta(minutes=1))
    assert _scan(env).expired == []  # used, so not expired: closed, citing the exchange that used it
    assert env.case(case_id).state.value == "closed"
    [close] = _steps(env, case_id, "close")
    assert close["extra"]["rerun_exchange_id"] == "e0000000-0000-7000-8000-000000000001"
    assert close["requester"] == {"org": "wgs-gateway", "system": "escalation-scheduler", "user": None}


def test_a_used_decision_whose_close_failed_is_closed_once_its_rerun_is_over_not_when_its_validity_ends(
        env: Env) -> None:
    """The re-run disclosed under the decision (marked used), then closing the case failed. The scan closed such
    a case only with the unused ones, once the decision's validity had ended: for up to a month (a year with
    ``WGS_ESCALATION_DECISION_VALID_DAYS``) the case read ``decided`` and still took comments, though its
    decision was spent and no re-run could use it. While the re-run may still be closing it itself (its claim
    is live) the scan leaves it; after that, the next scan closes it."""
    case_id, _decision_id, valid_until = _allowed(env)
    claim, used_at = "d" * 32, env.clock.now()
    with transaction(env.container.sessions) as session:
        case_store.claim_decision(session, case_id, claim, now=used_at, stale_before=used_at - CLAIM_ABANDONED_AFTER)
    with env.container.engine.begin() as connection:  # the re-run disclosed; closing the case then failed
        case_store.use_decision(connection, case_id, claim, "e0000000-0000-7000-8000-000000000002")
    assert _scan(env).failed == []
    assert env.case(case_id).state.value == "decided"  # its re-run may be closing it right now
    _at(env, used_at + CLAIM_ABANDONED_AFTER + timedelta(seconds=1))
    assert used_at + CLAIM_ABANDONED_AFTER < valid_until - timedelta(days=29)

    assert _scan(env).failed == []

    assert env.case(case_id).state.value == "closed"
    [close] = _steps(env, case_id, "close")
    assert close["extra"]["rerun_exchange_id"] == "e0000000-0000-7000-8000-000000000002"
    assert close["requester"] == {"org": "wgs-gateway", "system": "escalation-scheduler", "user": None}


def test_a_close_the_scan_could_not_write_is_counted_as_failed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's close of a used decision swallowed a refusal (here: the audit log unwritable, a 503) like the
    re-run's close does, so the scan said nothing had failed. It is counted, and the next scan closes it."""
    case_id, _decision_id, valid_until = _allowed(env)
    claim = "d" * 32
    with transaction(env.container.sessions) as session:
        case_store.claim_decision(session, case_id, claim, now=env.clock.now(),
                                  stale_before=env.clock.now() - CLAIM_ABANDONED_AFTER)
    with env.container.engine.begin() as connection:
        case_store.use_decision(connection, case_id, claim, "e0000000-0000-7000-8000-000000000001")
    _at(env, valid_until + timedelta(minutes=1))
    service = escalation_service(env.container)

    async def unwritable(*_args: Any) -> Any:
        raise ServiceUnavailable("the audit log could not be written; nothing was changed")

    with monkeypatch.context() as patch:
        patch.setattr(service, "_logged", unwritable)
        assert _scan(env).failed == [case_id]
    assert env.case(case_id).state.value == "decided"
    assert _scan(env).failed == []
    assert env.case(case_id).state.value == "closed"


def test_the_gateways_timer_expires_decisions(tmp_path: Path, sqlite_db_url: str) -> None:
    """The scan runs on the gateway's own timer too, not only from the CLI."""
    settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True, escalation_scan_seconds=0.1)
    with running_env(tmp_path, sqlite_db_url, settings) as env:
        case_id, _decision_id, valid_until = _allowed(env)
        _at(env, valid_until + timedelta(minutes=1))
        deadline = time.monotonic() + 15
        while env.case(case_id).state.value != "expired" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert env.case(case_id).state.value == "expired"


def test_an_expiring_decision_is_told_to_the_deciders_who_took_it(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tier-2 allow nobody re-ran expires: the legal desk that took it hears so, as the parties do (and as
    for a re-run the holder did not follow). Only the parties were told: the case is no longer active, so
    the default step notification left out every decider."""
    case_id = env.open_case()
    env.move_up(case_id, 2)
    decided = env.decide("desk-riec", case_id, "allow", ["police_incidents"])
    assert decided.status_code == 200, decided.text
    valid_until = datetime.fromisoformat(decided.json()["decision"]["valid_until"])
    told: list[tuple[set[str], dict[str, Any]]] = []
    monkeypatch.setattr(escalation_service(env.container).notifier, "notify",
                        lambda orgs, payload: told.append((set(orgs), payload)))
    _at(env, valid_until + timedelta(minutes=1))
    assert [c.id for c in _scan(env).expired] == [case_id]
    [(recipients, payload)] = told
    assert recipients == {"gemeente-amsterdam", "politie", "riec-aa", "landelijk-steunpunt"}  # + tier 2
    assert (payload["case_id"], payload["state"], payload["tier"]) == (case_id, "expired", 2)


def test_one_case_failing_does_not_stop_the_scan_for_the_others(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A case whose step raises something other than a 409 (here a defect in taking it) used to end the whole
    scan, on every run: the decisions and overdue cases listed after it never expired or moved up. Now each
    case is on its own: the failure is logged (the case's id and the kind of failure, not the error's text)
    and the others are expired and moved up; the failed ones are tried again on the next run."""
    allowed = [_allowed(env) for _ in range(2)]
    late = [env.open_case(opened_at=env.clock.now() - timedelta(days=60)) for _ in range(2)]
    failing = {allowed[0][0], late[0]}  # listed first (ids are time-ordered): without the fix nothing follows
    _at(env, max(until for _, _, until in allowed) + timedelta(minutes=1))
    act = case_store.act

    def act_failing(*args: Any, **kwargs: Any) -> Any:
        if args[1] in failing:
            raise RuntimeError("a defect naming J. de Vries")
        return act(*args, **kwargs)

    monkeypatch.setattr(case_store, "act", act_failing)
    with capture_logs() as logs:
        done = _scan(env)
    assert [c.id for c in done.moved] == [late[1]]
    assert [c.id for c in done.expired] == [allowed[1][0]]
    assert env.detail("desk-riec", allowed[0][0])["state"] == "decided"
    assert env.detail("desk-riec", late[0])["tier"] == 1
    failures = sorted((e["case_id"], e["action"], e["error_type"]) for e in logs
                      if e["event"] == "escalation_scan_case_failed")
    assert failures == sorted([(allowed[0][0], "expire", "RuntimeError"), (late[0], "deadline_missed", "RuntimeError")])
    assert "de Vries" not in repr(logs)

    monkeypatch.setattr(case_store, "act", act)  # the defect is fixed: the next run takes the two it left
    again = _scan(env)
    assert [c.id for c in again.moved] == [late[0]]
    assert [c.id for c in again.expired] == [allowed[0][0]]


def test_the_feed_offers_the_rerun_whose_decision_expires_first_first(env: Env) -> None:
    """Re-runs were sorted by the deadline of the tier that decided them, which says nothing once a case is
    decided: a decision expiring tomorrow (its `retain_until`) came after one valid for a month because its
    case happened to be opened later. They are sorted by when their decision expires."""
    opened_first, _, valid_long = _allowed(env)  # the usual validity: a month
    opened_later = env.open_case(opened_at=env.clock.now() + timedelta(days=2))  # a later tier-1 deadline
    tomorrow = escalation_service(env.container).today() + timedelta(days=1)
    decided = env.post("po-politie", f"/v1/escalations/{opened_later}/decision", {
        "expected_version": env.version(opened_later), "outcome": "allow", "motivation": MOTIVATION,
        "permitted_categories": ["police_incidents"], "obligations": {"retain_until": tomorrow.isoformat()}})
    assert decided.status_code == 200, decided.text
    assert datetime.fromisoformat(decided.json()["decision"]["valid_until"]) < valid_long
    assert env.detail("desk-riec", opened_later)["deadline"] > env.detail("desk-riec", opened_first)["deadline"]
    assert [i for i in _feed(env) if i[0] in {opened_first, opened_later}] == [
        (opened_later, "rerun"), (opened_first, "rerun")]
