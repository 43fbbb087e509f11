"""The escalation API (`/v1/escalations`) through the real app, on SQLite and PostgreSQL: who sees a case
(from the register), every transition allowed and refused, four eyes, tier-3 votes, objections, comments,
the audit entry of every step, the feed and the metrics.

One gateway per database engine serves the whole module (tokens are issued once); every test opens its own
cases, so tests do not depend on each other. Cases the gateway opens itself (policy escalated, holder
refused) are covered end to end by tests/scenarios/test_escalation_s9.py; here most cases are opened
directly in the case store, and objections through the API against stored exchanges.

The helpers of this module (``Env``, ``running_env``, ``migrated_url``) are shared with test_legal_gaps.py
and test_webhooks.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit.tables import audit_entries
from escalation import cases as case_store
from escalation.states import Action
from escalation.tables import escalation_cases
from gateway.app import create_app
from gateway.client.models import ExchangeResult, Outcome, Reason, Receipt, TargetOutcome
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import transaction
from gateway.escalations.setup import escalation_service
from gateway.exchange.service import decision_fingerprint
from gateway.exchange.tables import exchanges
from gateway.settings import Settings
from tests.auth_helpers import account_id, bearer, issued_person_token, system_token
from tests.migrated import migrated_postgres, migrated_sqlite
from tests.statements import reads_accounts, statements_run

RIEC = "riec-amsterdam-amstelland"
BIBOB = "bibob-integrity-check"
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday, within office hours
MOTIVATION = "Incidents are necessary for the Bibob advice; intelligence stays out."
S9_CATEGORIES = ("criminal_intelligence", "police_incidents")

# People: username -> (organisation, roles). Cases below are mostly gemeente-amsterdam (requester) against
# politie (holder) in the RIEC partnership.
PEOPLE: dict[str, tuple[str, list[str]]] = {
    "po-gemeente": ("gemeente-amsterdam", ["privacy-officer"]),  # requester's officer; tier-3 decider too
    "po-politie": ("politie", ["privacy-officer"]),  # holder's officer: tier-1 decider
    "po-politie-2": ("politie", ["privacy-officer"]),
    "admin-politie": ("politie", ["administrator"]),  # the holder's administrator: not its privacy officer
    "desk-riec": ("riec-aa", ["coordinating-privacy-officer"]),  # coordinating; tier 2 and 3
    "desk-riec-2": ("riec-aa", ["administrator"]),
    "desk-lsp": ("landelijk-steunpunt", ["administrator"]),  # tier 2 and 3, not coordinating
    "po-om": ("om-amsterdam", ["privacy-officer"]),  # tier 3 only (and a RIEC participant)
    "po-fiod": ("fiod", ["privacy-officer"]),  # RIEC participant; decides only in the FEC (tier 3)
    "po-fiod-2": ("fiod", ["privacy-officer"]),
    "po-abn": ("abn-amro", ["privacy-officer"]),  # not in the RIEC at all
    "desk-zvh": ("zvh-aa", ["privacy-officer"]),  # tier 2 and coordinating of the ZVH
    "coord-zvh": ("zvh-aa", ["coordinating-privacy-officer"]),  # reviews the ZVH's entries, not the RIEC's
    "desk-fec": ("fec-bureau", ["privacy-officer"]),  # tier 2 and coordinating of the FEC
    "cp-politie": ("politie", ["contact-point"]),  # no escalation scope
}
SYSTEMS: dict[str, list[str]] = {
    "gemeente-amsterdam-vth": ["exchange"],
    "politie-bvh": ["exchange"],
    "abn-amro-fec": ["exchange"],
    "kvk-handelsregister": ["discovery"],  # no exchange scope
}


@dataclass
class Env:
    """One running gateway (TestClient with its lifespan) and helpers to act as the people and systems."""

    client: TestClient
    container: Container
    clock: FixedClock
    tokens: dict[str, str] = field(default_factory=dict)

    # -- identities --------------------------------------------------------------------------------
    def token(self, who: str) -> str:
        if who not in self.tokens:
            if who in SYSTEMS:
                self.tokens[who] = system_token(self.client, self.container, who, SYSTEMS[who])
            else:
                self.tokens[who] = self._person_token(who)
        return self.tokens[who]

    def _person_token(self, who: str) -> str:
        """The token `POST /v1/auth/login` issues for this person's account: the same service, claims and
        scopes (``scopes_for_roles``). The account is stored without a password: sign-in (two argon2 hashes,
        ~1 s here per person) is tested in tests/integration/auth and tests/scenarios."""
        organisation, roles = PEOPLE[who]
        return issued_person_token(self.container, who, organisation, roles)

    def forget_people(self) -> None:
        """After the clock moved past the tokens' lifetime: people sign in again on next use."""
        self.tokens = {k: v for k, v in self.tokens.items() if k in SYSTEMS}

    # -- HTTP --------------------------------------------------------------------------------------
    def get(self, who: str, path: str, **params: Any) -> httpx.Response:
        response: httpx.Response = self.client.get(path, params=params or None, headers=bearer(self.token(who)))
        return response

    def post(self, who: str, path: str, body: dict[str, Any]) -> httpx.Response:
        response: httpx.Response = self.client.post(path, json=body, headers=bearer(self.token(who)))
        return response

    def detail(self, who: str, case_id: str) -> dict[str, Any]:
        response = self.get(who, f"/v1/escalations/{case_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def listed(self, who: str, **filters: Any) -> list[str]:
        response = self.get(who, "/v1/escalations", limit=200, **filters)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["cases"]]

    def review(self, who: str, case_id: str, version: int | None = None) -> httpx.Response:
        return self.post(who, f"/v1/escalations/{case_id}/review",
                         {"expected_version": version or self.version(case_id)})

    def decide(self, who: str, case_id: str, outcome: str, categories: tuple[str, ...] | list[str] = (), *,
               motivation: str = MOTIVATION, version: int | None = None) -> httpx.Response:
        return self.post(who, f"/v1/escalations/{case_id}/decision", {
            "expected_version": version or self.version(case_id), "outcome": outcome, "motivation": motivation,
            "permitted_categories": list(categories)})

    def withdraw(self, who: str, case_id: str, version: int | None = None) -> httpx.Response:
        return self.post(who, f"/v1/escalations/{case_id}/withdraw",
                         {"expected_version": version or self.version(case_id), "motivation": "no longer needed"})

    # -- the stores, directly ------------------------------------------------------------------------
    def case(self, case_id: str) -> case_store.Case:
        with transaction(self.container.sessions) as session:
            return case_store.get_case(session, case_id)

    def version(self, case_id: str) -> int:
        return self.case(case_id).version

    def open_case(self, *, requester: str = "gemeente-amsterdam", holder: str = "politie", partnership: str = RIEC,
                  purpose: str = BIBOB, categories: tuple[str, ...] = S9_CATEGORIES,
                  opened_at: datetime | None = None) -> str:
        """A case as the gateway opens it when a holder refuses (without the partner simulators)."""
        service = escalation_service(self.container)
        with transaction(self.container.sessions) as session:
            case = case_store.open_case(
                session, partnership=partnership, purpose=purpose, requester_org=requester, holder_org=holder,
                trigger="holder-refused", register_version=service.register.version,
                policy_reasons=["refused-by-holder"], deadlines=service.deadlines,
                now=opened_at or self.clock.now(), timezone=service.timezone, exchange_id=str(uuid.uuid4()),
                request_fingerprint="f" * 64,
                requested_categories=list(categories))
        return case.id

    def move_up(self, case_id: str, tier: int, *, at: datetime | None = None) -> None:
        """Refer the case up to ``tier`` in the store (set-up only: these steps are not audited)."""
        service = escalation_service(self.container)
        actor = case_store.Actor("riec-aa", "set-up")
        with transaction(self.container.sessions) as session:
            case = case_store.get_case(session, case_id)
            while case.tier < tier:
                for action in (Action.START_REVIEW, Action.REFER_UP):
                    case = case_store.act(session, case_id, case.version, action, actor,
                                          now=at or self.clock.now(), deadlines=service.deadlines,
                                          timezone=service.timezone)

    def insert_exchange(self, targets: list[TargetOutcome], *, requester: str = "gemeente-amsterdam",
                        system: str = "gemeente-amsterdam-vth", partnership: str = RIEC,
                        purpose: str = BIBOB, request_sha256: str | None = None,
                        request_fingerprint: str | None = None, escalation_decision: str | None = None) -> str:
        """An exchange row as ExchangeService._outcome_row writes it (outcome per target, no records); without
        ``request_fingerprint``, as rows from before migration 0031 are."""
        exchange_id = str(uuid.uuid4())
        now = self.clock.now()
        register_version = escalation_service(self.container).register.version
        result = ExchangeResult(exchange_id=exchange_id, created_at=now, requester=requester,
                                partnership=partnership, purpose=purpose, case_reference="RIEC-AA-2026-501",
                                register_version=register_version, policy_version="test", targets=targets,
                                receipt=Receipt(exchange_id=exchange_id))
        outcome = result.model_dump(mode="json")
        for stored in outcome["targets"]:
            stored.pop("records")
        with transaction(self.container.sessions) as session:
            session.execute(exchanges.insert().values({
                "id": exchange_id, "kind": "exchange", "created_at": now, "requester_org": requester,
                "requester_system": system, "partnership": partnership, "purpose": purpose,
                "case_reference": "RIEC-AA-2026-501", "register_version": register_version,
                "policy_version": "test",
                "request_sha256": request_sha256 or hashlib.sha256(exchange_id.encode()).hexdigest(),
                "request_fingerprint": request_fingerprint, "escalation_decision": escalation_decision,
                "idempotency_key": None, "outcome": outcome, "sealed_records": None, "sealed_until": None}))
        return exchange_id

    def audit_events(self) -> list[dict[str, Any]]:
        """Every `escalation.step` entry of the audit log, oldest first (the canonical event)."""
        with self.container.engine.connect() as connection:
            rows = connection.execute(select(audit_entries.c.canonical).where(
                audit_entries.c.event_type == "escalation.step").order_by(audit_entries.c.log_index)).all()
        return [json.loads(row.canonical)["event"] for row in rows]

    def audit_steps(self, case_id: str) -> list[dict[str, Any]]:
        return [e for e in self.audit_events() if e["extra"].get("case_id") == case_id]

    def run_overdue_job(self) -> list[case_store.Case]:
        """The scheduler's job, on the app's own event loop (the audit writer answers on that loop)."""
        portal = self.client.portal
        assert portal is not None, "the TestClient must be running (inside `with`)"
        return portal.call(escalation_service(self.container).escalate_overdue)


def target(holder: str, system: str, outcome: Outcome, permitted: list[str],
           removed: list[str] | None = None) -> TargetOutcome:
    reasons = [Reason(code="category-not-supplied", message="narrowed", category=c) for c in removed or []]
    return TargetOutcome(holder=holder, system=system, outcome=outcome, reasons=reasons,
                         permitted_categories=permitted, removed_categories=removed or [])


def migrated_url(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database of ``kind`` ("sqlite" or "postgres"), migrated to head with Alembic (``tests.migrated``)."""
    if kind == "sqlite":
        return migrated_sqlite(tmp)
    return migrated_postgres(request.getfixturevalue("postgres_admin_url"), f"wgs_esc_{uuid.uuid4().hex[:16]}")


@contextmanager
def running_env(tmp: Path, database_url: str, settings: Settings | None = None) -> Iterator[Env]:
    clock = FixedClock(START)
    the_settings = settings or Settings(data_dir=tmp, database_url=database_url, log_json=True)
    container = build_container(the_settings, clock)
    try:
        with TestClient(create_app(container=container)) as client:
            yield Env(client, container, clock)
    finally:
        container.close()


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=ENGINES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("escalation-api")
    with running_env(tmp, migrated_url(str(request.param), tmp, request)) as the_env:
        yield the_env


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- visibility ------------------------------------------------------------------------------------------


def test_parties_and_deciders_see_a_tier_1_case_others_get_404(env: Env) -> None:
    case_id = env.open_case()
    for who in ("po-gemeente", "po-politie", "desk-riec"):  # both parties and the coordinating officer
        assert env.detail(who, case_id)["id"] == case_id
        assert case_id in env.listed(who)
    # An unrelated organisation; the tier-2/3-only organisations of this partnership (not coordinating);
    # the tier-2 desks of other partnerships: none of them learns that the case exists.
    for who in ("po-abn", "desk-lsp", "po-om", "desk-zvh", "desk-fec", "po-fiod"):
        response = env.get(who, f"/v1/escalations/{case_id}")
        assert response.status_code == 404, (who, response.text)
        assert case_id not in env.listed(who), who
        assert case_id not in env.listed(who, partnership=RIEC), who

    view = env.detail("po-politie", case_id)
    assert view["deciders"] == ["gemeente-amsterdam", "politie"]
    assert view["may_decide"] is True
    assert env.detail("po-gemeente", case_id)["may_decide"] is False  # four eyes: not its own request
    assert env.detail("desk-riec", case_id)["may_decide"] is False  # sees it, but tier 1 is the parties'


def test_higher_tiers_become_visible_to_their_deciders_only(env: Env) -> None:
    case_id = env.open_case()
    assert env.decide("po-politie", case_id, "refer-up").status_code == 200
    assert (env.detail("desk-lsp", case_id)["tier"], env.detail("desk-lsp", case_id)["may_decide"]) == (2, True)
    for who in ("po-om", "desk-zvh", "desk-fec", "po-abn"):
        assert env.get(who, f"/v1/escalations/{case_id}").status_code == 404, who

    assert env.decide("desk-riec", case_id, "refer-up").status_code == 200
    tier_3 = env.detail("po-om", case_id)
    assert (tier_3["tier"], tier_3["state"], tier_3["may_decide"]) == (3, "escalated", True)
    assert tier_3["deciders"] == ["gemeente-amsterdam", "landelijk-steunpunt", "om-amsterdam", "riec-aa"]
    # FIOD decides at tier 3 of the FEC, not of the RIEC; the other partnerships' desks never see it.
    for who in ("po-fiod", "desk-zvh", "desk-fec", "po-abn"):
        assert env.get(who, f"/v1/escalations/{case_id}").status_code == 404, who


def test_partner_systems_see_their_own_organisations_cases_only(env: Env) -> None:
    ours = env.open_case()
    others = env.open_case(requester="belastingdienst", holder="kvk", purpose="malafide-company-dissolution")
    assert ours in env.listed("gemeente-amsterdam-vth")
    assert others not in env.listed("gemeente-amsterdam-vth")
    assert env.get("gemeente-amsterdam-vth", f"/v1/escalations/{others}").status_code == 404
    assert env.detail("politie-bvh", ours)["holder_org"] == "politie"  # the holder's system sees its cases too
    assert env.get("abn-amro-fec", f"/v1/escalations/{ours}").status_code == 404
    assert ours not in env.listed("abn-amro-fec")
    assert env.get("kvk-handelsregister", "/v1/escalations").status_code == 403  # no exchange scope
    # Systems read; they do not work cases.
    assert env.decide("politie-bvh", ours, "allow", ["police_incidents"]).status_code == 403
    assert env.review("politie-bvh", ours).status_code == 403
    assert env.post("gemeente-amsterdam-vth", f"/v1/escalations/{ours}/comments", {"text": "hi"}).status_code == 403
    assert env.case(ours).version == 1


def test_a_contact_point_has_no_access_to_escalations(env: Env) -> None:
    case_id = env.open_case()
    for path in ("/v1/escalations", f"/v1/escalations/{case_id}", "/v1/escalations/feed",
                 "/v1/escalations/metrics", "/v1/legal-gaps"):
        response = env.get("cp-politie", path)
        assert response.status_code == 403, (path, response.text)
    assert env.review("cp-politie", case_id).status_code == 403
    assert env.decide("cp-politie", case_id, "deny").status_code == 403
    assert env.withdraw("cp-politie", case_id).status_code == 403
    assert env.get("po-politie", "/v1/escalations").status_code == 200
    assert env.client.get("/v1/escalations").status_code == 401  # and no token at all


def test_id_filters_are_bounded_and_never_repeated(env: Env) -> None:
    """A partnership or organisation filter takes the register's id pattern and length, as the audit
    review's do: an over-long or malformed value is a 422 problem+json that does not repeat it, never a
    query on it (nor a 200 with an empty list)."""
    for path, name in (("/v1/escalations", "partnership"), ("/v1/escalations", "organisation"),
                       ("/v1/legal-gaps", "partnership"), ("/v1/legal-gaps/export", "partnership")):
        for wrong in ("x" * 8000, "<script>alert(1)</script>", "RIEC-AA", "r"):
            refused = env.get("desk-riec", path, **{name: wrong})
            assert refused.status_code == 422, (path, name, wrong[:20])
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert len(wrong) == 1 or wrong not in refused.text
        assert env.get("desk-riec", path, **{name: "riec-amsterdam-amstelland"}).status_code == 200


def test_list_filters_and_cursor(env: Env) -> None:
    first, second, third = (env.open_case(requester="belastingdienst", holder="kvk",
                                          purpose="malafide-company-dissolution") for _ in range(3))
    env.move_up(third, 2)
    mine = env.listed("desk-riec", organisation="kvk")
    assert [first, second, third] == [c for c in mine if c in {first, second, third}]
    assert third in env.listed("desk-riec", organisation="kvk", tier=2, state="escalated")
    assert first not in env.listed("desk-riec", organisation="kvk", tier=2)
    assert first in env.listed("desk-riec", organisation="kvk", trigger="holder-refused", legal_gap=False)
    assert first not in env.listed("desk-riec", trigger="requester-objection")
    page = env.get("desk-riec", "/v1/escalations", organisation="kvk", limit=1).json()
    assert len(page["cases"]) == 1
    assert page["next_cursor"] == page["cases"][0]["id"]
    following = env.get("desk-riec", "/v1/escalations", organisation="kvk", limit=1,
                        cursor=page["next_cursor"]).json()
    assert following["cases"][0]["id"] > page["cases"][0]["id"]
    assert env.get("desk-riec", "/v1/escalations", tier=4).status_code == 422
    # A state or trigger that does not exist is a mistake to say, as the console says it, not an empty list.
    for wrong in ({"state": "decidedd"}, {"trigger": "objection"}):
        refused = env.get("desk-riec", "/v1/escalations", **wrong)
        assert refused.status_code == 422, wrong
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_a_gap_id_longer_than_any_gap_id_is_refused_without_echoing_it(env: Env) -> None:
    case_id = env.open_case()
    long_id = "g" * 5000
    refused = env.post("po-politie", f"/v1/escalations/{case_id}/legal-gap", {"gap_id": long_id})
    assert refused.status_code == 422
    assert long_id not in refused.text
    assert not [s for s in env.audit_steps(case_id) if s["extra"]["action"] == "legal_gap_flagged"]


# -- transitions -----------------------------------------------------------------------------------------


def test_review_then_a_narrowed_allow_by_the_holders_officer(env: Env) -> None:
    case_id = env.open_case()
    reviewed = env.review("po-politie", case_id, 1)
    assert reviewed.status_code == 200, reviewed.text
    assert (reviewed.json()["state"], reviewed.json()["version"]) == ("in_review", 2)
    assert env.review("po-politie", case_id, 2).status_code == 409  # already in review: no such transition

    decided = env.decide("po-politie", case_id, "allow", ["police_incidents"], version=2)
    assert decided.status_code == 200, decided.text
    case = decided.json()
    assert case["state"] == "decided"
    assert case["decision"]["outcome"] == "allow"
    assert case["decision"]["permitted_categories"] == ["police_incidents"]
    assert case["decision"]["deciders"] == ["politie/po-politie"]
    assert case["decision"]["tier"] == 1
    assert case["decision"]["id"]
    assert [h["action"] for h in case["history"]] == ["opened", "start_review", "decide"]
    assert case["history"][-1]["motivation"] == MOTIVATION

    # A decided case takes no further decision, review or referral.
    assert env.decide("po-politie", case_id, "deny").status_code == 409
    assert env.decide("po-politie", case_id, "refer-up").status_code == 409
    assert env.review("po-politie", case_id).status_code == 409
    assert env.case(case_id).decision == case["decision"]


def test_deciding_implies_review_and_a_deny_closes_the_case(env: Env) -> None:
    case_id = env.open_case()
    denied = env.decide("po-politie", case_id, "deny", version=1)  # straight from `open`
    assert denied.status_code == 200, denied.text
    case = denied.json()
    assert case["state"] == "closed"
    assert case["decision"]["outcome"] == "deny"
    assert case["decision"]["permitted_categories"] == []
    assert [h["action"] for h in case["history"]] == ["opened", "start_review", "decide", "close"]
    assert env.decide("po-politie", case_id, "allow", ["police_incidents"]).status_code == 409
    assert env.withdraw("po-gemeente", case_id).status_code == 409  # nothing left to withdraw
    assert env.case(case_id).state.value == "closed"


def test_a_denys_audit_entry_names_no_categories_or_obligations_the_deny_does_not_hold(env: Env) -> None:
    """A deny permits nothing and adds no obligation: the stored decision drops what the body carried
    besides. Its audit entry listed the body's categories and obligations all the same, so the log said
    "deny, police_incidents, results-only" where the case file says "deny" — and the log is what privacy
    officers verify."""
    case_id = env.open_case()
    denied = env.post("po-politie", f"/v1/escalations/{case_id}/decision", {
        "expected_version": 1, "outcome": "deny", "motivation": MOTIVATION,
        "permitted_categories": ["police_incidents"], "obligations": {"results_only": True}})
    assert denied.status_code == 200, denied.text
    decision = denied.json()["decision"]
    assert (decision["permitted_categories"], decision["obligations"]) == ([], {})
    [step] = [s for s in env.audit_steps(case_id) if s["extra"]["action"] == "decide"]
    assert (step["decision"], step["categories"]) == ("deny", [])
    assert "obligations" not in step["extra"]


def test_only_the_current_tiers_deciders_decide(env: Env) -> None:
    case_id = env.open_case()
    assert env.decide("desk-riec", case_id, "allow", ["police_incidents"]).status_code == 403  # sees, not tier 1
    assert env.review("desk-riec", case_id).status_code == 403
    assert env.decide("desk-lsp", case_id, "deny").status_code == 404  # does not even see tier 1
    assert env.decide("po-abn", case_id, "deny").status_code == 404
    assert env.case(case_id).version == 1
    env.move_up(case_id, 2)
    assert env.decide("po-politie", case_id, "allow", ["police_incidents"]).status_code == 403  # tier 1 is past
    allowed = env.decide("desk-lsp", case_id, "allow", ["police_incidents"])
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["decision"]["tier"] == 2


def test_tier_1_is_decided_by_the_parties_privacy_officers_not_their_administrators(env: Env) -> None:
    """The register's tier 1 is `parties-privacy-officers`: a party's administrator works cases (sees them,
    comments) but does not take the tier-1 decision, nor start its review or refer it up."""
    case_id = env.open_case()
    view = env.detail("admin-politie", case_id)  # a party: it sees the case
    assert view["may_decide"] is False
    for refused in (env.decide("admin-politie", case_id, "allow", ["police_incidents"]),
                    env.decide("admin-politie", case_id, "refer-up"), env.review("admin-politie", case_id)):
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert case_id not in [i["case"]["id"] for i in env.get("admin-politie", "/v1/escalations/feed").json()]
    assert env.case(case_id).version == 1
    assert env.audit_steps(case_id) == []  # refused before anything was logged
    assert env.post("admin-politie", f"/v1/escalations/{case_id}/comments", {"text": "For the officer."}
                    ).status_code == 200
    assert env.detail("po-politie", case_id)["may_decide"] is True  # the holder's privacy officer decides
    # From tier 2 on the register names organisations: their administrators decide (the legal desk).
    env.move_up(case_id, 2)
    allowed = env.decide("desk-riec-2", case_id, "allow", ["police_incidents"])
    assert allowed.status_code == 200, allowed.text


def test_a_tier_past_its_deadline_no_longer_decides_the_case_it_only_refers_it_up(env: Env) -> None:
    """A missed deadline escalates the case: the tier that let it pass decided it all the same until the scan
    (every few minutes, or cron) had moved it up, and that decision stood for good. Below tier 3 a review or a
    vote past the deadline is a 409 (nothing written); referring up still works, and tier 3, the last, decides
    past its deadline too."""
    on_time = env.open_case(opened_at=START - timedelta(days=7))  # Wednesday 18 Nov: due today, 25 Nov
    late = env.open_case(opened_at=START - timedelta(days=20))  # due 12 Nov
    assert env.detail("po-politie", late)["may_decide"] is False
    assert env.detail("po-politie", on_time)["may_decide"] is True
    feed = {i["case"]["id"] for i in env.get("po-politie", "/v1/escalations/feed").json()}
    assert (late in feed, on_time in feed) == (False, True)
    for refused in (env.review("po-politie", late), env.decide("po-politie", late, "allow", ["police_incidents"]),
                    env.decide("po-politie", late, "deny")):
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "deadline of tier 1 passed on 2026-11-12" in refused.json()["detail"]
    assert (env.case(late).state.value, env.case(late).version, env.audit_steps(late)) == ("open", 1, [])

    assert env.decide("po-politie", on_time, "deny").status_code == 200  # on its deadline day: in time
    referred = env.decide("po-gemeente", late, "refer-up")
    assert referred.status_code == 200, referred.text
    assert (referred.json()["tier"], referred.json()["overdue"]) == (2, False)
    assert env.decide("desk-lsp", late, "allow", ["police_incidents"]).status_code == 200

    last = env.open_case(opened_at=START - timedelta(days=60))
    env.move_up(last, 3, at=START - timedelta(days=60))
    assert env.detail("po-om", last)["overdue"] is True
    voted = env.decide("po-om", last, "deny")
    assert voted.status_code == 200, voted.text
    assert voted.json()["pending_votes"] == [{"organisation": "om-amsterdam", "outcome": "deny",
                                              "permitted_categories": []}]


def test_four_eyes_the_requesters_officer_may_not_decide_its_own_request(env: Env) -> None:
    case_id = env.open_case()
    for outcome, categories in (("allow", ["police_incidents"]), ("deny", [])):
        refused = env.decide("po-gemeente", case_id, outcome, categories)
        assert refused.status_code == 403, refused.text
    assert env.case(case_id).version == 1
    # It may take the case up (its way out when the holder's officer does not move).
    referred = env.decide("po-gemeente", case_id, "refer-up")
    assert referred.status_code == 200, referred.text
    assert (referred.json()["tier"], referred.json()["state"]) == (2, "escalated")


def test_an_allow_names_requested_categories_and_every_decision_a_motivation(env: Env) -> None:
    case_id = env.open_case()
    not_requested = env.decide("po-politie", case_id, "allow", ["police_incidents", "bank_accounts"])
    assert not_requested.status_code == 422
    assert "bank_accounts" in not_requested.json()["detail"]
    assert env.decide("po-politie", case_id, "allow", []).status_code == 422  # an allow must name categories
    assert env.decide("po-politie", case_id, "deny", motivation="too short").status_code == 422  # 9 characters
    no_motivation = env.post("po-politie", f"/v1/escalations/{case_id}/decision",
                             {"expected_version": 1, "outcome": "deny"})
    assert no_motivation.status_code == 422
    assert env.decide("po-politie", case_id, "maybe").status_code == 422
    assert env.case(case_id).version == 1  # nothing happened


def test_a_category_is_a_category_name_so_no_typed_text_is_repeated_in_the_problem_or_the_log(env: Env) -> None:
    """Categories the service refuses are named in the problem and in the refusal's log line ("not requested:
    ..."). Anything else than a category's name — a person's name, typed where a category belongs — is
    refused by its shape, like the exchange API's categories, and repeated nowhere."""
    from structlog.testing import capture_logs

    name = "Jan de Vries"
    case_id = env.open_case()
    exchange_id = _denied_exchange(env, ["police_incidents"])
    with capture_logs() as logs:
        decided = env.decide("po-politie", case_id, "allow", ["police_incidents", name])
        objected = env.post("po-gemeente", "/v1/escalations", {
            "exchange_id": exchange_id, "holder": "politie", "categories": [name],
            "motivation": "The legal basis covers this; please review it."})
    for refused in (decided, objected):
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert name not in refused.text
    assert name not in json.dumps(logs, default=str)
    assert (env.case(case_id).state.value, env.case(case_id).version) == ("open", 1)
    assert [e for e in env.audit_events() if e["exchange_id"] == exchange_id] == []


def test_an_allow_cannot_permit_what_the_partnership_never_discloses(env: Env) -> None:
    """A holder's refusal puts the categories policy removed among those requested (criminal intelligence,
    in S9). An allow naming one would be a binding decision the re-run can never carry out (rule 4: never
    disclosed, whatever a decision says): it is refused, and nothing is decided or logged."""
    case_id = env.open_case()  # requested: criminal_intelligence, police_incidents
    refused = env.decide("po-politie", case_id, "allow", ["criminal_intelligence", "police_incidents"])
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "criminal_intelligence" in refused.json()["detail"]
    assert (env.case(case_id).state.value, env.case(case_id).decision) == ("open", None)
    assert [s for s in env.audit_steps(case_id) if "not_applied" not in s["extra"]] == []
    # A category named twice is one category: the decision lists it once.
    allowed = env.decide("po-politie", case_id, "allow", ["police_incidents", "police_incidents"])
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["decision"]["permitted_categories"] == ["police_incidents"]
    assert env.audit_steps(case_id)[-1]["categories"] == ["police_incidents"]


def test_an_allow_cannot_permit_what_the_register_never_lets_this_holder_disclose_to_this_requester(
        env: Env) -> None:
    """Rule 3 bounds every re-run: a category is disclosed only if the holder's role supplies it for the
    purpose and the requester's role may receive it; a decision narrows that, never widens it. An objection
    to a narrowing carries the removed categories among those requested (the municipality may not receive
    income for unexplained wealth). An allow naming one was taken: the re-run dropped it again, the decision
    counted as applied and the case closed, with a decision on record that promised what nobody got. It is
    refused, and nothing is decided or logged; an allow within the register's bounds is taken."""
    exchange_id = env.insert_exchange([target("belastingdienst", "belastingdienst-bvr", Outcome.ALLOWED_NARROWED,
                                              ["assets"], ["income"])], purpose="unexplained-wealth")
    objected = _object(env, "po-gemeente", exchange_id, holder="belastingdienst")
    assert objected.status_code == 201, objected.text
    case_id = objected.json()["id"]
    assert objected.json()["requested_categories"] == ["assets", "income"]
    env.move_up(case_id, 2)  # the tier-2 desk decides (tier 1's holder officer is not among the test's people)
    steps = len(env.audit_steps(case_id))
    version = env.version(case_id)
    refused = env.decide("desk-riec", case_id, "allow", ["assets", "income"])
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "cannot permit income:" in refused.json()["detail"]  # income only: assets is this holder's to give
    assert (env.case(case_id).state.value, env.case(case_id).version, env.case(case_id).decision) == (
        "escalated", version, None)
    assert len(env.audit_steps(case_id)) == steps
    allowed = env.decide("desk-riec", case_id, "allow", ["assets"])
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["decision"]["permitted_categories"] == ["assets"]


def test_a_stale_expected_version_gets_409_and_changes_nothing(env: Env) -> None:
    case_id = env.open_case()
    assert env.review("po-politie", case_id, 1).status_code == 200
    assert env.review("po-politie-2", case_id, 1).status_code == 409
    stale = env.decide("po-politie-2", case_id, "deny", version=1)
    assert stale.status_code == 409, stale.text
    assert env.decide("po-politie-2", case_id, "refer-up", version=1).status_code == 409
    assert env.withdraw("po-gemeente", case_id, version=1).status_code == 409
    case = env.case(case_id)
    assert (case.state.value, case.version, case.decision) == ("in_review", 2, None)
    assert env.decide("po-politie", case_id, "refer-up", version=2).status_code == 200  # tier 2, version 3
    assert env.review("desk-lsp", case_id, 2).status_code == 409  # read before the referral
    assert (env.case(case_id).state.value, env.case(case_id).version) == ("escalated", 3)
    # A refused step leaves no entry (nor one taken back): the log holds exactly the steps taken.
    steps = [(s["extra"]["action"], s["status"]) for s in env.audit_steps(case_id)]
    assert steps == [("start_review", "ok"), ("refer_up", "ok")]


def test_withdraw_only_by_the_organisation_that_asked(env: Env) -> None:
    case_id = env.open_case()
    assert env.withdraw("po-politie", case_id).status_code == 403  # the holder may not drop the request
    assert env.withdraw("po-abn", case_id).status_code == 404
    assert env.withdraw("desk-riec", case_id).status_code == 403
    withdrawn = env.withdraw("po-gemeente", case_id)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["state"] == "withdrawn"
    assert env.withdraw("po-gemeente", case_id).status_code == 409
    assert env.decide("po-politie", case_id, "allow", ["police_incidents"]).status_code == 409
    assert env.review("po-politie", case_id).status_code == 409
    # The requesting system may withdraw its own request's case as well.
    other = env.open_case()
    env.move_up(other, 2)
    assert env.withdraw("politie-bvh", other).status_code == 403
    assert env.withdraw("gemeente-amsterdam-vth", other).status_code == 200


def test_no_referral_beyond_tier_3(env: Env) -> None:
    case_id = env.open_case()
    env.move_up(case_id, 3)
    refused = env.decide("desk-riec", case_id, "refer-up")
    assert refused.status_code == 409, refused.text
    assert env.case(case_id).tier == 3


# -- tier 3: two deciders --------------------------------------------------------------------------------


def test_tier_3_needs_two_different_deciders_who_agree(env: Env) -> None:
    case_id = env.open_case()
    env.move_up(case_id, 3)
    first = env.decide("desk-riec", case_id, "allow", ["police_incidents"])
    assert first.status_code == 200, first.text
    case = first.json()
    assert (case["state"], case["decision"]) == ("in_review", None)
    assert case["pending_votes"] == [{"organisation": "riec-aa", "outcome": "allow",
                                      "permitted_categories": ["police_incidents"]}]

    again = env.decide("desk-riec", case_id, "allow", ["police_incidents"])  # the same person once more
    assert again.status_code == 200, again.text
    assert (again.json()["state"], again.json()["decision"]) == ("in_review", None)
    assert len(again.json()["pending_votes"]) == 1

    # The requester's organisation sits in the steering group, but four eyes keep it out of this decision.
    assert env.decide("po-gemeente", case_id, "allow", ["police_incidents"]).status_code == 403

    other = env.decide("desk-lsp", case_id, "deny")  # a different proposal replaces the pending vote
    assert other.status_code == 200, other.text
    assert (other.json()["state"], other.json()["decision"]) == ("in_review", None)
    assert other.json()["pending_votes"] == [{"organisation": "landelijk-steunpunt", "outcome": "deny",
                                              "permitted_categories": []}]

    decided = env.decide("po-om", case_id, "deny")  # a second, different decider agrees: decided
    assert decided.status_code == 200, decided.text
    case = decided.json()
    assert case["state"] == "closed"  # a deny has nothing to re-run
    assert case["decision"]["outcome"] == "deny"
    assert sorted(case["decision"]["deciders"]) == ["landelijk-steunpunt/desk-lsp", "om-amsterdam/po-om"]
    assert case["decision"]["tier"] == 3
    assert case["pending_votes"] == []
    history = [(h["action"], h["actor_org"], h["state"]) for h in case["history"] if h["tier"] == 3]
    assert history[:5] == [("refer_up", "riec-aa", "escalated"), ("start_review", "riec-aa", "in_review"),
                           ("vote", "riec-aa", "in_review"), ("vote", "riec-aa", "in_review"),
                           ("vote", "landelijk-steunpunt", "in_review")]
    assert [(action, state) for action, _, state in history[5:]] == [("decide", "decided"), ("close", "closed")]
    logged = [(s["extra"]["action"], s["requester"]["org"], s["extra"]["state"]) for s in env.audit_steps(case_id)]
    assert logged == [("start_review", "riec-aa", "in_review"), ("vote", "riec-aa", "in_review"),
                      ("vote", "riec-aa", "in_review"), ("vote", "landelijk-steunpunt", "in_review"),
                      ("decide", "om-amsterdam", "decided"), ("close", "om-amsterdam", "closed")]
    # (the set-up referrals were not through the API; a deny closes the case at once, and says so)
    assert env.decide("desk-riec", case_id, "allow", ["police_incidents"]).status_code == 409  # closed


def test_the_deciding_vote_is_in_the_history_under_its_caster(env: Env) -> None:
    case_id = env.open_case()
    env.move_up(case_id, 3)
    assert env.decide("desk-lsp", case_id, "deny").status_code == 200
    decided = env.decide("po-om", case_id, "deny").json()
    assert decided["decision"]["outcome"] == "deny"
    assert "om-amsterdam" in {h["actor_org"] for h in decided["history"]}


# -- objections ------------------------------------------------------------------------------------------


def _denied_exchange(env: Env, categories: list[str]) -> str:
    """A real exchange the policy denies (legal basis mismatch) before any holder is asked."""
    response = env.post("gemeente-amsterdam-vth", "/v1/exchanges", {
        "partnership": RIEC, "purpose": BIBOB, "legal_basis": "WGS (RIEC)", "case_reference": "RIEC-AA-2026-777",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"},
        "subjects": [{"ref": f"subj-{uuid.uuid4().hex[:24]}", "minor": False}], "holders": ["politie"],
        "categories": categories})
    assert response.status_code == 200, response.text
    assert response.json()["targets"][0]["outcome"] == "denied"
    return str(response.json()["exchange_id"])


def _object(env: Env, who: str, exchange_id: str, holder: str = "politie") -> httpx.Response:
    return env.post(who, "/v1/escalations", {"exchange_id": exchange_id, "holder": holder,
                                             "motivation": "The legal basis covers this; please review it."})


def test_the_requester_objects_to_a_denial(env: Env) -> None:
    exchange_id = _denied_exchange(env, ["police_incidents"])
    assert _object(env, "po-abn", exchange_id).status_code == 404  # not a party of that exchange
    assert _object(env, "po-gemeente", str(uuid.uuid4())).status_code == 404
    assert _object(env, "po-gemeente", exchange_id, holder="kvk").status_code == 404  # no such target
    assert _object(env, "po-politie", exchange_id).status_code == 422  # a holder objects to disclosures only
    assert _object(env, "cp-politie", exchange_id).status_code == 403
    short = env.post("po-gemeente", "/v1/escalations", {"exchange_id": exchange_id, "holder": "politie",
                                                         "motivation": "why?"})
    assert short.status_code == 422

    opened = _object(env, "po-gemeente", exchange_id)
    assert opened.status_code == 201, opened.text
    case = opened.json()
    assert (case["trigger"], case["state"], case["tier"]) == ("requester-objection", "open", 1)
    assert (case["requester_org"], case["holder_org"], case["exchange_id"]) == (
        "gemeente-amsterdam", "politie", exchange_id)
    assert case["policy_reasons"] == ["legal-basis-mismatch"]
    assert case["deadline"] == "2026-12-02"  # five working days
    assert (case["history"][0]["action"], case["history"][0]["actor_org"]) == ("opened", "gemeente-amsterdam")
    # One open case per exchange and holder, whoever of the requester asks.
    assert _object(env, "po-gemeente", exchange_id).status_code == 409
    assert _object(env, "gemeente-amsterdam-vth", exchange_id).status_code == 409
    # Once that case is withdrawn, a new objection may be made (by the requesting system, too).
    assert env.withdraw("po-gemeente", case["id"]).status_code == 200
    assert _object(env, "gemeente-amsterdam-vth", exchange_id).status_code == 201


def test_written_texts_must_say_something_blank_ones_get_422_and_change_nothing(env: Env) -> None:
    """A motivation, a comment or an attachment's title of only spaces and line breaks passes a length check
    but says nothing: the console refuses it (it strips what was typed), and so must the API."""
    exchange_id = _denied_exchange(env, ["police_incidents"])
    blank = " \n\t " * 5  # 20 characters, none of them written
    objection = env.post("po-gemeente", "/v1/escalations", {"exchange_id": exchange_id, "holder": "politie",
                                                            "motivation": blank})
    assert objection.status_code == 422, objection.text
    assert objection.headers["content-type"].startswith("application/problem+json")
    assert [e for e in env.audit_events() if e["exchange_id"] == exchange_id] == []  # nothing opened or logged
    case_id = env.open_case()
    comments = f"/v1/escalations/{case_id}/comments"
    for body in ({"text": blank}, {"text": "See the memo.", "attachments": [
            {"reference": "dms://politie/2026/4711", "title": "   "}]}):
        refused = env.post("po-politie", comments, body)
        assert refused.status_code == 422, (body, refused.text)
    withdrawal = env.post("po-gemeente", f"/v1/escalations/{case_id}/withdraw",
                          {"expected_version": 1, "motivation": blank})
    assert withdrawal.status_code == 422, withdrawal.text
    assert env.detail("po-politie", case_id)["comments"] == []
    assert env.case(case_id).state.value == "open"
    assert env.audit_steps(case_id) == []  # no step was claimed, so none had to be retracted


def test_a_nul_character_in_any_written_text_is_a_422_on_both_engines_and_changes_nothing(env: Env) -> None:
    """PostgreSQL text cannot hold a NUL character (SQLite stores it). In a motivation, a comment, a title or
    a note it failed the step inside the audit log's transaction: a 503 "the audit log could not be written"
    on PostgreSQL, and stored as typed on SQLite. It is the caller's input: a 422 on both, nothing written."""
    nul = "Incidents are needed\x00 for the Bibob advice."
    exchange_id = _denied_exchange(env, ["police_incidents"])
    objection = env.post("po-gemeente", "/v1/escalations", {"exchange_id": exchange_id, "holder": "politie",
                                                            "motivation": nul})
    assert objection.status_code == 422, objection.text
    assert [e for e in env.audit_events() if e["exchange_id"] == exchange_id] == []

    case_id = env.open_case()
    gap = env.post("po-politie", f"/v1/escalations/{case_id}/legal-gap",
                   {"title": "Bibob cooperation", "description": "No basis for sharing between municipalities."})
    assert gap.status_code == 200, gap.text
    steps = len(env.audit_steps(case_id))
    attachment = {"reference": "dms://politie/2026/4711", "title": "Memo\x00"}
    for path, body in (
            ("comments", {"text": nul}),
            ("comments", {"text": "See the memo.", "attachments": [attachment]}),
            ("decision", {"expected_version": 1, "outcome": "deny", "motivation": nul}),
            ("withdraw", {"expected_version": 1, "motivation": nul}),
            ("legal-gap", {"title": "Bibob\x00", "description": "No basis for sharing."}),
            ("legal-gap", {"title": "Bibob cooperation", "description": nul})):
        who = "po-gemeente" if path == "withdraw" else "po-politie"
        refused = env.post(who, f"/v1/escalations/{case_id}/{path}", body)
        assert refused.status_code == 422, (path, body, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    note = env.post("desk-riec", f"/v1/legal-gaps/{gap.json()['id']}/status",
                    {"expected_version": 1, "status": "on-agenda", "note": nul})
    assert note.status_code == 422, note.text

    case = env.detail("po-politie", case_id)
    assert (case["state"], case["version"], case["comments"]) == ("open", 1, [])
    assert len(env.audit_steps(case_id)) == steps
    assert [g["title"] for g in env.get("po-politie", "/v1/legal-gaps").json()
            if case_id in g["case_ids"]] == ["Bibob cooperation"]
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap.json()['id']}").json()["status"] == "identified"


def test_a_lone_surrogate_in_a_gaps_title_description_or_note_is_a_422_and_changes_nothing(env: Env) -> None:
    """JSON may escape half of a surrogate pair (``"\\ud800"``), which Python's reader turns into a string
    no UTF-8 text holds. A gap's title and description (optional, so ``str | None``) and a status change's
    note took it past validation: the step then failed in the audit log's transaction, a 500 with a
    "not applied" error entry per attempt. It is the caller's input, refused like a NUL character: a 422
    problem+json before anything is logged or stored."""
    case_id = env.open_case()
    gap = env.post("po-politie", f"/v1/escalations/{case_id}/legal-gap",
                   {"title": "Bibob cooperation", "description": "No basis for sharing between municipalities."})
    assert gap.status_code == 200, gap.text
    steps = len(env.audit_steps(case_id))

    def raw(who: str, path: str, body: str) -> httpx.Response:
        response: httpx.Response = env.client.post(path, content=body.encode(), headers={
            **bearer(env.token(who)), "content-type": "application/json"})
        return response

    for body in ('{"title": "Bibob \\ud800", "description": "No basis for sharing."}',
                 '{"title": "Bibob cooperation", "description": "No basis \\udfff for sharing."}'):
        refused = raw("po-politie", f"/v1/escalations/{case_id}/legal-gap", body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    note = raw("desk-riec", f"/v1/legal-gaps/{gap.json()['id']}/status",
               '{"expected_version": 1, "status": "on-agenda", "note": "On the agenda \\ud83d of the 9th."}')
    assert note.status_code == 422, note.text
    assert note.headers["content-type"].startswith("application/problem+json")

    assert len(env.audit_steps(case_id)) == steps  # no step claimed, none failed
    assert not [e for e in env.audit_events() if e["extra"].get("gap_id") == gap.json()["id"]
                and e["extra"].get("action") == "legal_gap_status"]
    assert [g["title"] for g in env.get("po-politie", "/v1/legal-gaps").json()
            if case_id in g["case_ids"]] == ["Bibob cooperation"]
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap.json()['id']}").json()["status"] == "identified"


def test_an_objection_to_a_denial_can_be_allowed(env: Env) -> None:
    exchange_id = _denied_exchange(env, ["police_incidents", "criminal_intelligence"])
    case = _object(env, "po-gemeente", exchange_id).json()
    allowed = env.decide("po-politie", case["id"], "allow", ["police_incidents"])
    assert allowed.status_code == 200, allowed.text


def test_objections_to_allowed_and_narrowed_outcomes(env: Env) -> None:
    exchange_id = env.insert_exchange([
        target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"]),
        target("kvk", "kvk-handelsregister", Outcome.ALLOWED_NARROWED, ["identity"], ["directorships"])])
    # The requester got everything from the police: nothing to object to.
    refused = _object(env, "po-gemeente", exchange_id)
    assert refused.status_code == 422, refused.text
    # The holder's system may not object; its privacy officer may.
    assert _object(env, "politie-bvh", exchange_id).status_code == 403
    assert _object(env, "po-abn", exchange_id).status_code == 404
    opened = _object(env, "po-politie", exchange_id)
    assert opened.status_code == 201, opened.text
    holder_case = opened.json()
    assert (holder_case["trigger"], holder_case["requester_org"], holder_case["holder_org"]) == (
        "holder-objection", "gemeente-amsterdam", "politie")
    assert holder_case["requested_categories"] == ["police_incidents"]
    assert _object(env, "po-politie-2", exchange_id).status_code == 409
    # The requester objects to the KvK's narrowing (through its system).
    narrowed = _object(env, "gemeente-amsterdam-vth", exchange_id, holder="kvk")
    assert narrowed.status_code == 201, narrowed.text
    assert narrowed.json()["trigger"] == "requester-objection"
    assert narrowed.json()["requested_categories"] == ["directorships", "identity"]
    # The holder withdraws its own objection; the other party cannot see it go.
    assert env.withdraw("po-politie", holder_case["id"]).status_code == 200


def test_an_allow_on_a_holders_objection_closes_the_case_and_grants_no_rerun(env: Env) -> None:
    """A holder objects to a disclosure that happened; an allow says the disclosure stands. It used to leave the
    case ``decided`` with a re-runnable decision: the requester's feed asked it to re-run, and a re-run citing
    it would disclose the same again, with the bulk and office-hours rules overridden (rule 8)."""
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    case_id = _object(env, "po-politie", exchange_id).json()["id"]
    assert env.decide("po-politie-2", case_id, "allow", ["police_incidents"]).status_code == 200  # a vote
    decided = env.decide("po-gemeente", case_id, "allow", ["police_incidents"])  # the other party agrees
    assert decided.status_code == 200, decided.text
    assert (decided.json()["state"], decided.json()["decision"]["outcome"]) == ("closed", "allow")
    assert [s["extra"]["action"] for s in env.audit_steps(case_id)] == [
        "opened", "start_review", "vote", "decide", "close"]
    assert case_id not in {i["case"]["id"] for i in env.get("gemeente-amsterdam-vth", "/v1/escalations/feed").json()}
    rerun = env.post("gemeente-amsterdam-vth", "/v1/exchanges", _rerun_body(decided.json()["decision"]["id"]))
    assert rerun.status_code == 422, rerun.text
    assert "allows no re-run" in rerun.json()["detail"]

    # One decided before such cases closed with their decision is no re-run grant either.
    older = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    older_id = _object(env, "po-politie", older).json()["id"]
    service = escalation_service(env.container)
    with transaction(env.container.sessions) as session:
        case_store.act(session, older_id, 1, Action.START_REVIEW, case_store.Actor("politie", "set-up"),
                       now=env.clock.now(), deadlines=service.deadlines, timezone=service.timezone)
        old = case_store.decide(session, older_id, 2, [case_store.Actor("politie", "set-up"),
                                                       case_store.Actor("gemeente-amsterdam", "set-up")], MOTIVATION,
                                outcome="allow", permitted_categories=["police_incidents"], now=env.clock.now(),
                                deadlines=service.deadlines, timezone=service.timezone)
    assert old.state.value == "decided"
    assert older_id not in {i["case"]["id"] for i in env.get("gemeente-amsterdam-vth", "/v1/escalations/feed").json()}
    refused = env.post("gemeente-amsterdam-vth", "/v1/exchanges", _rerun_body(old.decision_id))
    assert refused.status_code == 422, refused.text
    assert env.case(older_id).rerun_claim is None


def test_the_objecting_holder_does_not_decide_its_own_objection_alone(env: Env) -> None:
    """Tier 1 is the privacy officers of both organisations. On a holder's objection the holder is the party
    that objects: its officers' votes — however many of them — decide nothing until the requester's officer
    agrees to the same decision (and the requester's alone decides nothing either). Above tier 1 the tier's
    deciders, who are neither party here, decide as for any case."""
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    case_id = _object(env, "po-politie", exchange_id).json()["id"]
    view = env.detail("po-gemeente", case_id)
    assert (view["deciders"], view["may_decide"]) == (["gemeente-amsterdam", "politie"], True)

    for who in ("po-politie", "po-politie-2"):  # two officers of the objecting holder: still one party
        voted = env.decide(who, case_id, "deny")
        assert voted.status_code == 200, voted.text
        assert (voted.json()["state"], voted.json()["decision"]) == ("in_review", None), who
    assert [v["organisation"] for v in env.detail("po-politie", case_id)["pending_votes"]] == ["politie", "politie"]
    assert env.case(case_id).decision_id is None
    assert "decide" not in [s["extra"]["action"] for s in env.audit_steps(case_id)]

    decided = env.decide("po-gemeente", case_id, "deny")
    assert decided.status_code == 200, decided.text
    assert (decided.json()["state"], decided.json()["decision"]["outcome"]) == ("closed", "deny")
    assert sorted(d.split("/")[0] for d in decided.json()["decision"]["deciders"]) == [
        "gemeente-amsterdam", "politie", "politie"]

    # The requester's officer alone decides nothing either: its vote waits for the holder's.
    other = _object(env, "po-politie", env.insert_exchange([
        target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])).json()["id"]
    voted = env.decide("po-gemeente", other, "allow", ["police_incidents"])
    assert voted.status_code == 200, voted.text
    assert (voted.json()["state"], voted.json()["decision"]) == ("in_review", None)
    # Referred up by the objecting holder, the tier-2 desk (neither party) decides on its own.
    assert env.decide("po-politie", other, "refer-up").status_code == 200
    decided = env.decide("desk-riec", other, "deny")
    assert decided.status_code == 200, decided.text
    assert (decided.json()["state"], decided.json()["decision"]["deciders"][0].split("/")[0]) == (
        "closed", "riec-aa")


def test_above_tier_1_a_party_that_sits_on_the_tier_does_not_decide_its_own_case_alone(env: Env) -> None:
    """FIOD holds and refused the bank's check; the case reached the FEC board (tier 3, two deciders), on which
    FIOD sits. Two FIOD officers agreeing is still the refusing party deciding its own refusal: their votes
    wait until a board member who is neither party (the FEC bureau) agrees."""
    case_id = env.open_case(requester="abn-amro", holder="fiod", partnership="fec",
                            purpose="taskforce-subject-check", categories=("ongoing_investigation",))
    env.move_up(case_id, 3)
    assert env.detail("po-fiod", case_id)["may_decide"] is True
    for who in ("po-fiod", "po-fiod-2"):
        voted = env.decide(who, case_id, "deny")
        assert voted.status_code == 200, voted.text
        assert (voted.json()["state"], voted.json()["decision"]) == ("in_review", None), who
    decided = env.decide("desk-fec", case_id, "deny")
    assert decided.status_code == 200, decided.text
    assert decided.json()["state"] == "closed"
    assert sorted(d.split("/")[0] for d in decided.json()["decision"]["deciders"]) == ["fec-bureau", "fiod", "fiod"]


def test_the_case_store_refuses_a_holders_objection_decided_by_one_party(env: Env) -> None:
    """The rule holds below the API too: ``case_store.decide`` (which ``vote`` calls) refuses a decision
    on a holder's objection whose deciders are all of one party, and changes nothing."""
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    case_id = _object(env, "po-politie", exchange_id).json()["id"]
    assert env.review("po-politie", case_id).status_code == 200
    service = escalation_service(env.container)
    for deciders in ([case_store.Actor("politie", "a"), case_store.Actor("politie", "b")],
                     [case_store.Actor("gemeente-amsterdam", "a")]):
        with pytest.raises(case_store.FourEyesViolation), transaction(env.container.sessions) as session:
            case_store.decide(session, case_id, 2, deciders, MOTIVATION, outcome="deny", permitted_categories=[],
                              now=env.clock.now(), deadlines=service.deadlines, timezone=service.timezone)
    assert (env.case(case_id).state.value, env.case(case_id).version) == ("in_review", 2)


def test_the_requester_cannot_withdraw_the_holders_objection(env: Env) -> None:
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    case = _object(env, "po-politie", exchange_id).json()
    assert case["trigger"] == "holder-objection"
    assert env.withdraw("po-gemeente", case["id"]).status_code == 403
    assert env.withdraw("gemeente-amsterdam-vth", case["id"]).status_code == 403


def test_the_holders_system_cannot_withdraw_its_officers_objection(env: Env) -> None:
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    assert _object(env, "politie-bvh", exchange_id).status_code == 403  # a system may not make one ...
    case = _object(env, "po-politie", exchange_id).json()
    assert env.withdraw("politie-bvh", case["id"]).status_code == 403  # ... nor drop the officer's
    assert env.case(case["id"]).state.value == "open"
    assert env.withdraw("po-politie-2", case["id"]).status_code == 200  # the holder's officers may


def test_a_holders_objection_is_made_by_its_privacy_officer_not_its_administrator(env: Env) -> None:
    """docs/escalations.md: "a holder's privacy officer" objects to a disclosure. The holder's administrator
    works cases (sees, comments) but opens no objection: 403 problem+json, no case, no audit entry."""
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    before = len(env.audit_events())
    refused = _object(env, "admin-politie", exchange_id)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "privacy officer" in refused.json()["detail"]
    assert len(env.audit_events()) == before  # refused before anything was logged
    with env.container.engine.connect() as connection:
        assert connection.execute(select(escalation_cases.c.id).where(
            escalation_cases.c.exchange_id == exchange_id)).all() == []
    # The other party's administrator is no holder: it is the requester's to object to (here: nothing to).
    assert _object(env, "desk-riec-2", exchange_id).status_code == 404  # not a party of the exchange
    opened = _object(env, "po-politie", exchange_id)  # the holder's privacy officer may
    assert opened.status_code == 201, opened.text
    assert opened.json()["trigger"] == "holder-objection"


# -- comments and the audit log --------------------------------------------------------------------------


def test_comments_with_attachments_and_an_audit_entry_per_step_without_free_text(env: Env) -> None:
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED_NARROWED,
                                              ["police_incidents"], ["criminal_intelligence"])])
    case_id = _object(env, "po-gemeente", exchange_id).json()["id"]
    note = "Memo of officer J. de Vries: the investigation is not hampered by sharing incidents."
    attachment = {"reference": "dms://politie/2026/4711", "title": "Memo investigation confidentiality",
                  "sha256": "ab" * 32}
    commented = env.post("po-politie", f"/v1/escalations/{case_id}/comments",
                         {"text": note, "attachments": [attachment]})
    assert commented.status_code == 200, commented.text
    assert commented.json()["comments"] == [commented.json()["comments"][0] | {
        "author_org": "politie", "author": "po-politie", "text": note, "attachments": [attachment]}]
    # Attachments are references only: no document content, no other fields; outsiders cannot comment.
    assert env.post("po-politie", f"/v1/escalations/{case_id}/comments", {"text": "x", "attachments": [
        attachment | {"content": "JVBERi0xLjQK"}]}).status_code == 422
    assert env.post("po-politie", f"/v1/escalations/{case_id}/comments", {"text": "x", "attachments": [
        {"reference": "file:///etc/passwd x", "title": "t"}]}).status_code == 422
    assert env.post("po-abn", f"/v1/escalations/{case_id}/comments", {"text": "hello"}).status_code == 404
    assert len(env.detail("po-gemeente", case_id)["comments"]) == 1

    assert env.review("po-politie", case_id).status_code == 200
    decision = "Incidents only: the criminal intelligence of officer J. de Vries stays with the police."
    decided = env.decide("po-politie", case_id, "allow", ["police_incidents"], motivation=decision)
    assert decided.status_code == 200, decided.text
    assert decided.json()["state"] == "decided"

    steps = env.audit_steps(case_id)
    assert [(s["extra"]["action"], s["extra"]["state"], s["requester"]["org"]) for s in steps] == [
        ("opened", "open", "gemeente-amsterdam"), ("comment", "open", "politie"),
        ("start_review", "in_review", "politie"), ("decide", "decided", "politie")]
    history = [h["action"] for h in env.detail("po-politie", case_id)["history"]]
    assert history == ["opened", "start_review", "decide"]
    assert all(s["processing_activity"] == {"partnership": RIEC, "purpose": BIBOB} for s in steps)
    assert all(s["exchange_id"] == exchange_id and s["holder"] == "politie" for s in steps)
    assert steps[0]["extra"]["motivation_sha256"] == _sha256("The legal basis covers this; please review it.")
    assert steps[1]["extra"]["comment_sha256"] == _sha256(note)
    assert steps[1]["extra"]["attachment_sha256"] == [_sha256("dms://politie/2026/4711")]
    assert steps[3]["extra"]["motivation_sha256"] == _sha256(decision)
    assert (steps[3]["decision"], steps[3]["categories"]) == ("narrowed", ["police_incidents"])
    # The entry names the decider by account id (a reference), never by username.
    assert steps[3]["requester"] == {"org": "politie", "system": None, "user": account_id(env.container, "po-politie")}
    logged = json.dumps(steps)
    for free_text in ("J. de Vries", "Memo investigation", "legal basis covers", "stays with the police"):
        assert free_text not in logged


def test_attachment_references_reach_the_audit_log_only_as_digests(env: Env) -> None:
    """An attachment reference is typed by a person: a document path may name someone (``jdevries-memo``), a
    document number may be shaped like a BSN. The log named references as typed (its guard then refused the
    BSN- and IBAN-shaped ones with a 422, and let names through); now each is named by its SHA-256, as the
    comment is, and the case file keeps the reference for the case's parties."""
    case_id = env.open_case()
    references = ["dms://politie/2026/111222333", "NL91ABNA0417164300", "dms://politie/jdevries-memo"]
    commented = env.post("po-politie", f"/v1/escalations/{case_id}/comments", {
        "text": "See the memos.", "attachments": [{"reference": r, "title": "Memo"} for r in references]})
    assert commented.status_code == 200, commented.text
    [comment] = env.detail("po-politie", case_id)["comments"]
    assert [a["reference"] for a in comment["attachments"]] == references
    step = env.audit_steps(case_id)[-1]
    assert step["extra"]["attachment_sha256"] == [_sha256(r) for r in references]
    logged = json.dumps(step)
    assert not any(part in logged for part in ("111222333", "NL91ABNA", "jdevries"))


def test_a_persons_step_reads_the_account_once_and_its_entry_names_it(env: Env) -> None:
    """The token check reads the person's account; the audit entries of the steps they take name it by the id
    read then, not by a second read of the same row per action (nor per step of a decision)."""
    case_id = env.open_case()
    env.token("po-politie")  # the token is issued before counting: only the request is counted
    with statements_run(env.container.engine, reads_accounts) as commented:
        assert env.post("po-politie", f"/v1/escalations/{case_id}/comments", {"text": "A note."}).status_code == 200
    with statements_run(env.container.engine, reads_accounts) as decided:
        assert env.decide("po-politie", case_id, "deny").status_code == 200  # three steps: review, decide, close
    assert (len(commented), len(decided)) == (1, 1)
    steps = env.audit_steps(case_id)
    assert [s["extra"]["action"] for s in steps] == ["comment", "start_review", "decide", "close"]
    person = {"org": "politie", "system": None, "user": account_id(env.container, "po-politie")}
    assert all(s["requester"] == person for s in steps)


def test_every_step_of_a_denied_case_is_in_the_audit_log(env: Env) -> None:
    exchange_id = _denied_exchange(env, ["police_incidents"])
    case_id = _object(env, "po-gemeente", exchange_id).json()["id"]
    assert env.decide("po-politie", case_id, "deny").json()["state"] == "closed"
    history = [(h["action"], h["state"]) for h in env.detail("po-politie", case_id)["history"]]
    logged = [(s["extra"]["action"], s["extra"]["state"]) for s in env.audit_steps(case_id)]
    assert logged == history


def test_a_refused_decision_leaves_no_unretracted_audit_entry(env: Env) -> None:
    case_id = env.open_case()
    blank = env.decide("po-politie", case_id, "deny", motivation=" " * 12)
    assert blank.status_code == 422, blank.text
    assert env.case(case_id).state.value == "open"
    claimed = [s for s in env.audit_steps(case_id) if "not_applied" not in s["extra"]]
    assert claimed == []


# -- feed ------------------------------------------------------------------------------------------------


def test_the_feed_lists_cases_awaiting_a_decision_most_urgent_first(env: Env) -> None:
    later = env.open_case(opened_at=START)  # deadline 2 December
    sooner = env.open_case(opened_at=START - timedelta(days=2))  # opened on the Monday: 30 November
    decided = env.open_case()
    assert env.decide("po-politie", decided, "deny").status_code == 200

    feed = env.get("po-politie", "/v1/escalations/feed")
    assert feed.status_code == 200, feed.text
    items = feed.json()
    ours = [(i["case"]["id"], i["awaiting"]) for i in items if i["case"]["id"] in {later, sooner, decided}]
    assert ours == [(sooner, "decision"), (later, "decision")]
    deadlines = [date.fromisoformat(i["case"]["deadline"]) for i in items]
    assert deadlines == sorted(deadlines)
    assert all(i["awaiting"] == "decision" and i["case"]["tier"] == 1 for i in items)

    # The coordinating officer and the tier-2 desk see the cases but are not awaited at tier 1.
    for who in ("desk-riec", "desk-lsp", "po-abn"):
        ids = {i["case"]["id"] for i in env.get(who, "/v1/escalations/feed").json()}
        assert not ids & {later, sooner}, who
    env.move_up(later, 2)
    assert later in {i["case"]["id"] for i in env.get("desk-lsp", "/v1/escalations/feed").json()}
    assert later not in {i["case"]["id"] for i in env.get("po-politie", "/v1/escalations/feed").json()}


def test_the_feed_does_not_ask_the_requester_to_decide_its_own_request(env: Env) -> None:
    case_id = env.open_case()
    items = env.get("po-gemeente", "/v1/escalations/feed").json()
    assert all(i["case"]["may_decide"] for i in items if i["awaiting"] == "decision")
    assert case_id not in {i["case"]["id"] for i in items}


def test_the_feed_is_not_crowded_out_by_years_of_closed_cases(fresh: Env) -> None:
    """The feed reads an organisation's cases in opening order up to a bound (10,000). With closed and
    withdrawn cases among them, years of settled cases filled the bound and the newest cases — the ones
    awaiting a decision — were left out without a word. Only cases that can await anyone are read."""
    env = fresh
    service = escalation_service(env.container)
    settled_at = START - timedelta(days=400)
    settled: list[dict[str, Any]]  # rows of the cases table
    settled = [{"id": str(uuid.UUID(int=n)), "seq": n, "exchange_id": None, "request_fingerprint": None,
                "partnership": RIEC, "purpose": BIBOB, "requester_org": "gemeente-amsterdam", "holder_org": "politie",
                "trigger": "holder-refused", "state": state, "tier": 1, "version": 3, "deadline": date(2025, 10, 1),
                "opened_at": settled_at, "updated_at": settled_at, "register_version": service.register.version,
                "policy_reasons": [], "decision": None, "legal_gap": False, "requested_categories": [], "votes": []}
               for n, state in enumerate(["closed", "withdrawn", "expired"] * 3334, start=1)]
    with transaction(env.container.sessions) as session:  # ids below every UUIDv7: all of them older
        session.execute(escalation_cases.insert(), settled)
    awaiting = env.open_case()

    feed = env.get("po-politie", "/v1/escalations/feed")
    assert feed.status_code == 200, feed.text
    assert [(i["case"]["id"], i["awaiting"]) for i in feed.json()] == [(awaiting, "decision")]


# -- metrics (own gateway: the clock moves) -------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path, sqlite_db_url: str) -> Iterator[Env]:
    with running_env(tmp_path, sqlite_db_url) as the_env:
        yield the_env


def test_metrics_time_to_decision_per_tier_and_open_past_deadline(fresh: Env) -> None:
    env = fresh
    tier_1 = env.open_case(opened_at=START - timedelta(hours=48))
    assert env.decide("po-politie", tier_1, "allow", ["police_incidents"]).status_code == 200
    tier_2 = env.open_case(opened_at=START - timedelta(hours=72))
    env.move_up(tier_2, 2, at=START - timedelta(hours=72))
    assert env.decide("desk-riec", tier_2, "deny").status_code == 200
    waiting = env.open_case()  # deadline 2 December
    stuck = env.open_case(opened_at=START - timedelta(days=60))
    env.move_up(stuck, 3, at=START - timedelta(days=60))  # tier 3's deadline passed long ago

    metrics = env.get("desk-riec", "/v1/escalations/metrics").json()
    assert metrics["cases"] == 4
    assert metrics["time_to_decision_hours"] == {
        "1": {"decided": 1, "mean": 48.0, "median": 48.0, "max": 48.0},
        "2": {"decided": 1, "mean": 72.0, "median": 72.0, "max": 72.0}}
    assert (metrics["open_past_deadline"], metrics["open_past_deadline_by_tier"]) == (1, {"3": 1})
    assert env.get("po-abn", "/v1/escalations/metrics").json()["cases"] == 0  # scoped like the list
    assert env.get("gemeente-amsterdam-vth", "/v1/escalations/metrics").status_code == 403

    env.clock.advance(timedelta(days=8))  # Thursday 3 December: tier 1 of `waiting` missed its deadline
    env.forget_people()
    metrics = env.get("desk-riec", "/v1/escalations/metrics").json()
    assert (metrics["open_past_deadline"], metrics["open_past_deadline_by_tier"]) == (2, {"1": 1, "3": 1})
    assert waiting in env.listed("desk-riec", overdue=True)

    moved = env.run_overdue_job()
    assert [(c.id, c.tier, c.state.value) for c in moved] == [(waiting, 2, "escalated")]
    metrics = env.get("desk-riec", "/v1/escalations/metrics").json()
    assert (metrics["open_past_deadline"], metrics["open_past_deadline_by_tier"]) == (1, {"3": 1})
    case = env.detail("desk-riec", waiting)
    assert (case["tier"], case["state"], case["overdue"], case["deadline"]) == (2, "escalated", False, "2026-12-17")
    assert (case["history"][-1]["action"], case["history"][-1]["actor_org"]) == ("deadline_missed", None)
    step = env.audit_steps(waiting)[-1]
    assert step["extra"]["action"] == "deadline_missed"
    assert step["requester"] == {"org": "wgs-gateway", "system": "escalation-scheduler", "user": None}
    assert env.run_overdue_job() == []  # nothing left below tier 3


# -- a decision's obligations ------------------------------------------------------------------------------


def _decide_with(env: Env, case_id: str, **obligations: Any) -> httpx.Response:
    return env.post("po-politie", f"/v1/escalations/{case_id}/decision", {
        "expected_version": env.version(case_id), "outcome": "allow", "motivation": MOTIVATION,
        "permitted_categories": ["police_incidents"], "obligations": obligations})


def test_a_decisions_deletion_date_is_neither_past_nor_beyond_the_purposes_retention(env: Env) -> None:
    """The decision is stored and shown as written, and the policy keeps the earlier of its date and the
    purpose's: a date in the past, or later than the purpose's retention from today (24 months for the Bibob
    check), would make the decision on record say what no re-run does. Refused (422, saying why), nothing
    written."""
    case_id = env.open_case()
    today = escalation_service(env.container).today()
    latest = date(today.year + 2, today.month, today.day)  # 24 months; the test's days are no 29 February
    version = env.version(case_id)
    for retain_until, why in ((today - timedelta(days=1), "in the past"),
                              (latest + timedelta(days=1), "later than the retention"),
                              (date.max, "later than the retention"), (date.min, "in the past")):
        refused = _decide_with(env, case_id, retain_until=retain_until.isoformat())
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert why in refused.json()["detail"], refused.text
        assert env.version(case_id) == version
        assert env.audit_steps(case_id) == []

    decided = _decide_with(env, case_id, retain_until=latest.isoformat(), results_only=True)
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"]["obligations"] == {"retain_until": latest.isoformat(), "results_only": True}



def test_a_deny_ignores_a_deletion_date_as_it_ignores_every_obligation(env: Env) -> None:
    """A deny holds no obligations (the stored decision and its entry drop them), yet a past `retain_until`
    on one was a 422 "in the past" for a date nothing would keep. It is ignored, like `results_only` on a
    deny: the deny is taken, and neither the decision nor its entry names the date."""
    case_id = env.open_case()
    yesterday = escalation_service(env.container).today() - timedelta(days=1)
    denied = env.post("po-politie", f"/v1/escalations/{case_id}/decision", {
        "expected_version": env.version(case_id), "outcome": "deny", "motivation": MOTIVATION,
        "obligations": {"retain_until": yesterday.isoformat(), "results_only": True}})
    assert denied.status_code == 200, denied.text
    assert (denied.json()["state"], denied.json()["decision"]["obligations"]) == ("closed", {})
    [decide] = [s for s in env.audit_steps(case_id) if s["extra"]["action"] == "decide"]
    assert "obligations" not in decide["extra"]
    assert yesterday.isoformat() not in json.dumps(env.audit_steps(case_id))


def test_a_version_is_an_integer_not_a_flag_or_a_string(env: Env) -> None:
    """`expected_version: true` was read as 1: a client sending a flag acted on version 1 of the case. A
    version is a JSON integer: `true`, `"1"` and `1.0`-like text are a 422 that changes nothing, for a case's
    steps and a gap's status change alike."""
    case_id = env.open_case()
    assert env.version(case_id) == 1
    gap = env.post("desk-riec", f"/v1/escalations/{case_id}/legal-gap",
                   {"title": "Version flag gap", "description": "The WGS does not say."})
    assert gap.status_code == 200, gap.text
    steps = len(env.audit_steps(case_id))
    for wrong in (True, "1"):
        for path, body in ((f"/v1/escalations/{case_id}/review", {}),
                           (f"/v1/escalations/{case_id}/withdraw", {"motivation": "no longer needed"}),
                           (f"/v1/escalations/{case_id}/decision", {"outcome": "refer-up", "motivation": MOTIVATION}),
                           (f"/v1/legal-gaps/{gap.json()['id']}/status", {"status": "on-agenda"})):
            who = "po-gemeente" if path.endswith("withdraw") else "desk-riec" if "legal-gaps" in path else "po-politie"
            refused = env.post(who, path, body | {"expected_version": wrong})
            assert refused.status_code == 422, (path, wrong, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
    assert (env.case(case_id).version, env.case(case_id).state.value) == (1, "open")
    assert len(env.audit_steps(case_id)) == steps
    assert env.get("desk-riec", f"/v1/legal-gaps/{gap.json()['id']}").json()["status"] == "identified"


def test_a_nul_in_a_cursor_or_filter_is_a_422_on_both_engines(env: Env) -> None:
    """`cursor=%00` was a 200 on SQLite (which compares it with the ids) and a 422 on PostgreSQL (whose text
    holds no NUL). A cursor is what `next_cursor` gives — a case id — and anything else is a 422 on both,
    as a NUL in a filter is."""
    env.open_case()
    for params in ({"cursor": "\x00"}, {"cursor": "0190\x00"}, {"cursor": "' OR 1=1 --"}, {"cursor": "c" * 65},
                   {"partnership": "\x00"}, {"organisation": "politie\x00"}, {"state": "open\x00"},
                   {"trigger": "\x00"}):
        refused = env.get("desk-riec", "/v1/escalations", **params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    for params in ({"partnership": "\x00"}, {"status": "identified\x00"}):
        for path in ("/v1/legal-gaps", "/v1/legal-gaps/export"):
            assert env.get("desk-riec", path, **params).status_code == 422, (path, params)
    page = env.get("desk-riec", "/v1/escalations", limit=1).json()
    assert env.get("desk-riec", "/v1/escalations", cursor=page["next_cursor"]).status_code == 200



def test_a_cursor_naming_no_case_the_caller_may_see_is_a_422_whether_the_case_exists_or_not(env: Env) -> None:
    """Pages go in commit order (``seq``), from after the case the cursor names. A cursor naming no case was an
    empty last page (a client stopped there, with cases after it never listed), and one naming a case the caller
    may not see listed the caller's cases committed after that one: that it exists, and about when it was
    opened, told to an organisation that gets a 404 for it. Both are the same 422 now."""
    env.open_case()
    unseen = env.open_case(requester="belastingdienst", holder="kvk", purpose="malafide-company-dissolution")
    env.open_case()  # one the caller sees, committed after the unseen one
    assert env.get("po-politie", f"/v1/escalations/{unseen}").status_code == 404
    refused = [env.get("po-politie", "/v1/escalations", cursor=cursor) for cursor in (unseen, str(uuid.uuid4()))]
    for answer in refused:
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert unseen not in answer.text
    assert refused[0].json() == refused[1].json()  # nothing tells an unseen case from none
    page = env.get("po-politie", "/v1/escalations", limit=1).json()
    assert env.get("po-politie", "/v1/escalations", limit=1, cursor=page["next_cursor"]).status_code == 200

# -- objecting to a re-run's outcome ------------------------------------------------------------------------


def test_a_case_about_a_reruns_outcome_binds_to_the_request_not_to_the_cited_decision(env: Env) -> None:
    """A re-run's row stores the fingerprint with the decision it cited (what its Idempotency-Key binds to); a
    case copying it bound its allow to a request no re-run ever is, so the policy never honoured it. The case
    about a re-run's outcome binds to the request the re-run ran, as the first case did. Rows written before
    migration 0031, which store no plain fingerprint (as here), are recognised by the decided cases."""
    first = env.open_case()  # the request's fingerprint is "f" * 64
    decided = env.decide("po-politie", first, "allow", ["police_incidents"])
    assert decided.status_code == 200, decided.text
    decision_id = decided.json()["decision"]["id"]
    rerun = env.insert_exchange(
        [target("politie", "politie-bvh", Outcome.ALLOWED_NARROWED, ["police_incidents"], ["criminal_intelligence"]),
         target("kvk", "kvk-handelsregister", Outcome.ALLOWED_NARROWED, ["identity"], ["directorships"])],
        request_sha256=decision_fingerprint("f" * 64, decision_id))

    for holder in ("politie", "kvk"):  # the decision's holder, and another target of the same re-run
        opened = _object(env, "gemeente-amsterdam-vth", rerun, holder=holder)
        assert opened.status_code == 201, opened.text
        assert env.case(opened.json()["id"]).request_fingerprint == "f" * 64, holder

    # An exchange that is no re-run of a decided request keeps its own fingerprint.
    plain = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED_NARROWED, ["police_incidents"],
                                        ["criminal_intelligence"])], request_sha256="a" * 64)
    opened = _object(env, "gemeente-amsterdam-vth", plain)
    assert opened.status_code == 201, opened.text
    assert env.case(opened.json()["id"]).request_fingerprint == "a" * 64


def _rerun_body(decision_id: str | None) -> dict[str, Any]:
    """A request the policy denies before any holder is asked (legal basis mismatch), citing ``decision_id``."""
    body: dict[str, Any] = {
        "partnership": RIEC, "purpose": BIBOB, "legal_basis": "WGS (RIEC)", "case_reference": "RIEC-AA-2026-778",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-78"},
        "subjects": [{"ref": "subj-rerun-of-another-request", "minor": False}], "holders": ["politie"],
        "categories": ["police_incidents"]}
    return body | ({"escalation_decision": decision_id} if decision_id else {})


def _stored_exchange(env: Env, exchange_id: str) -> Any:
    with env.container.engine.connect() as connection:
        return connection.execute(select(exchanges).where(exchanges.c.id == exchange_id)).one()


def test_a_case_about_a_rerun_that_cited_a_decision_for_another_request_binds_to_the_request_it_ran(
        env: Env) -> None:
    """A re-run citing a decision made for another request (the policy ignores the citation) was not recognised
    by the decided cases: its case kept the fingerprint with the citation, to which no allow can ever bind.
    The re-run's row now stores the request alone and the decision it cited; the case binds to the request,
    as the case about a plain run of it does, and is found without reading the requester's decided cases."""
    decided = env.decide("po-politie", env.open_case(), "allow", ["police_incidents"])  # for request "f" * 64
    assert decided.status_code == 200, decided.text
    decision_id = decided.json()["decision"]["id"]
    plain = env.post("gemeente-amsterdam-vth", "/v1/exchanges", _rerun_body(None))
    rerun = env.post("gemeente-amsterdam-vth", "/v1/exchanges", _rerun_body(decision_id))
    assert rerun.status_code == 200, rerun.text
    assert [t["outcome"] for t in rerun.json()["targets"]] == ["denied"]
    plain_row, rerun_row = (_stored_exchange(env, r.json()["exchange_id"]) for r in (plain, rerun))
    request = plain_row.request_sha256  # the request alone, as a run without a citation keys it
    assert (plain_row.request_fingerprint, plain_row.escalation_decision) == (request, None)
    assert (rerun_row.request_fingerprint, rerun_row.escalation_decision) == (request, decision_id)
    assert rerun_row.request_sha256 == decision_fingerprint(request, decision_id)  # the key binds the citation

    with statements_run(env.container.engine, lambda sql: "escalation_cases.decision_id IS NOT NULL" in sql) as scans:
        opened = _object(env, "po-gemeente", rerun.json()["exchange_id"])
    assert opened.status_code == 201, opened.text
    assert env.case(opened.json()["id"]).request_fingerprint == request
    assert scans == []  # the row says it: no scan of the requester's decided cases


def _comment(env: Env, who: str, case_id: str, text: str = "For the record, after the fact.") -> httpx.Response:
    return env.post(who, f"/v1/escalations/{case_id}/comments", {"text": text})


def test_a_rerun_whose_decision_the_policy_did_not_apply_opens_a_case_for_its_escalation(env: Env) -> None:
    """A re-run citing a decision the policy does not apply (made for another request: a changed reference, other
    subjects) is answered as any request is — here escalated, 30 subjects being a bulk request (rule 6). It was
    answered ``escalated`` with no case (``escalation_id`` null), and the requester cannot object to an escalation
    either: a dispute nobody would ever be asked to decide. Its escalation opens a case like any other, bound to
    the request it ran; the decision it cited is left as it was, usable by the request it was made for."""
    decided_case = env.open_case()  # for request "f" * 64
    decided = env.decide("po-politie", decided_case, "allow", ["police_incidents"])
    assert decided.status_code == 200, decided.text
    decision_id = decided.json()["decision"]["id"]
    bulk = _rerun_body(decision_id) | {"legal_basis": "WGS (RIEC) with Wet Bibob", "subjects": [
        {"ref": f"subj-bulk-{n:04d}", "minor": False} for n in range(30)]}

    rerun = env.post("gemeente-amsterdam-vth", "/v1/exchanges", bulk)

    assert rerun.status_code == 200, rerun.text
    police = rerun.json()["targets"][0]
    assert (police["outcome"], police["escalation_decision_applied"]) == ("escalated", False)
    assert police["escalation_id"] is not None
    case = env.case(police["escalation_id"])
    assert (case.exchange_id, case.holder_org, case.trigger, case.state.value) == (
        rerun.json()["exchange_id"], "politie", "policy-escalated", "open")
    assert case.request_fingerprint == _stored_exchange(env, rerun.json()["exchange_id"]).request_fingerprint
    assert [s["extra"]["action"] for s in env.audit_steps(case.id)] == ["opened"]
    cited = env.case(decided_case)  # not used, and given back: its own request may still re-run with it
    assert (cited.state.value, cited.rerun_claim, cited.rerun_exchange_id) == ("decided", None, None)


@pytest.mark.parametrize("ending", ["withdrawn", "closed", "expired"])
def test_a_closed_or_withdrawn_case_takes_no_more_comments(env: Env, ending: str) -> None:
    """The docs are silent on comments after the end, so the case file ends with the case: a comment on a
    withdrawn, closed or expired (an allow nobody re-ran in time: no way on from there) case is a 409
    problem+json pointing to a new escalation or an objection, and nothing of it is written (no comment, no
    audit entry)."""
    case_id = env.open_case()
    assert _comment(env, "po-politie", case_id).status_code == 200  # while active: yes
    if ending == "withdrawn":
        assert env.withdraw("po-gemeente", case_id).status_code == 200
    else:
        decided = env.decide("po-politie", case_id, "allow", ["police_incidents"])
        assert decided.json()["state"] == "decided", decided.text
        # An allow awaiting its re-run is still being worked: only the end of a case closes its file.
        assert _comment(env, "po-gemeente", case_id).status_code == 200
        service = escalation_service(env.container)
        with transaction(env.container.sessions) as session:  # a re-run that used it closes it, or its time passes
            case_store.act(session, case_id, env.version(case_id), Action.CLOSE if ending == "closed" else
                           Action.EXPIRE, None, now=env.clock.now(), deadlines=service.deadlines,
                           timezone=service.timezone, motivation="re-run" if ending == "closed" else "unused")
    assert env.case(case_id).state.value == ending
    kept = len(env.detail("po-politie", case_id)["comments"])
    steps = len(env.audit_steps(case_id))
    for who in ("po-politie", "po-gemeente", "desk-riec"):
        refused = _comment(env, who, case_id)
        assert refused.status_code == 409, (who, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "open a new escalation or object" in refused.json()["detail"]
    assert len(env.detail("po-politie", case_id)["comments"]) == kept
    assert len(env.audit_steps(case_id)) == steps


def test_a_case_closed_while_a_comment_was_on_its_way_takes_it_not(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is repeated in the transaction that writes the comment: a case withdrawn between the
    service's read and the write refuses the comment (409), and neither it nor its audit entry is kept."""
    case_id = env.open_case()
    service = escalation_service(env.container)
    real = service._requester

    async def withdraw_meanwhile(principal: Any) -> Any:
        with transaction(env.container.sessions) as session:
            case_store.act(session, case_id, env.version(case_id), Action.WITHDRAW,
                           case_store.Actor("gemeente-amsterdam", "set-up"), now=env.clock.now(),
                           deadlines=service.deadlines, timezone=service.timezone, motivation="meanwhile")
        monkeypatch.setattr(service, "_requester", real)
        return await real(principal)

    monkeypatch.setattr(service, "_requester", withdraw_meanwhile)
    steps = len(env.audit_steps(case_id))
    refused = _comment(env, "po-politie", case_id)
    assert refused.status_code == 409, refused.text
    assert "open a new escalation or object" in refused.json()["detail"]
    assert env.detail("po-politie", case_id)["comments"] == []
    assert [s["extra"]["action"] for s in env.audit_steps(case_id)][steps:] == []
