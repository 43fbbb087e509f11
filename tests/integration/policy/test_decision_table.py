"""One decision table, two real engines: regorus in-process, and the OPA-server client over real HTTP.
Plus failing closed on the server path: down, slow, malformed."""

from __future__ import annotations

import copy
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway.policy.engine import EmbeddedPolicyEngine, OpaServerPolicyEngine, PolicyEngine
from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import Decision, EscalationDecisionInput, Party, PolicyContext, PolicyInput, PolicyRequest
from gateway.register.loader import load_register
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app

REGISTER = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
MUNICIPALITY = Party(organisation="gemeente-amsterdam", system="gemeente-amsterdam-vth")
BANK = Party(organisation="abn-amro", system="abn-amro-fec")
TAX = Party(organisation="belastingdienst", system="belastingdienst-ivs")
POLICE = Party(organisation="politie", system="politie-bvh")
BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob"}
S1 = ["company_registration", "directorships", "tax_debts", "income", "police_incidents", "convictions"]


def _input(requester: Party, holder: str, categories: list[str], *, context: PolicyContext | None = None,
           **request: Any) -> PolicyInput:
    fields: dict[str, Any] = BIBOB | {"case_reference": "C-1", "signal": {"type": "s", "reference": "r"},
                                      "subject_count": 1, "subjects_minor": False,
                                      "requested_at": "2026-11-25T10:00:00Z"} | request
    return PolicyInput(request=PolicyRequest(requester=requester, holder=Party(organisation=holder),
                                             categories=categories, **fields),
                       context=context or PolicyContext(), request_fingerprint="fp-1")


# (case id, input, outcome, permitted categories, reason codes that must appear, hit_only)
TABLE: list[tuple[str, PolicyInput, str, list[str], set[str], bool]] = [
    ("S1-registry", _input(MUNICIPALITY, "kvk", S1), "allowed", ["company_registration", "directorships"], set(),
     False),
    ("S1-tax", _input(MUNICIPALITY, "belastingdienst", S1), "allowed-narrowed", ["tax_debts"],
     {"category-not-supplied"}, False),
    ("S1-police", _input(MUNICIPALITY, "politie", S1), "allowed", ["police_incidents"], set(), False),
    ("S1-prosecution", _input(MUNICIPALITY, "om-amsterdam", S1), "allowed", ["convictions"], set(), False),
    ("S1-investigation", _input(MUNICIPALITY, "fiod", S1), "allowed", ["ongoing_investigation"], set(), True),
    ("S2", _input(TAX, "kvk", ["company_registration", "directorships"], purpose="malafide-company-dissolution",
                  legal_basis="WGS (RIEC) with BW 2:19a", provided_categories=["tax_compliance"]),
     "allowed", ["company_registration", "directorships"], set(), False),
    ("S3", _input(BANK, "politie", ["police_incidents"]), "denied", [], {"requester-not-participant"}, False),
    ("S4", _input(MUNICIPALITY, "politie", ["police_incidents"], partnership="zvh-amsterdam",
                  purpose="youth-prevention", legal_basis="WGS (ZVH)", subjects_minor=True),
     "allowed", ["police_incidents"], set(), False),
    ("S5", _input(MUNICIPALITY, "politie", ["police_incidents"], subjects_minor=True), "denied", [],
     {"minors-not-allowed"}, False),
    ("S6", _input(TAX, "politie", ["police_incidents"], partnership="nsoc", purpose="undermining-analysis",
                  legal_basis="WGS (NSOC)"), "denied", [], {"partnership-retired"}, False),
    ("S7", _input(MUNICIPALITY, "politie", ["police_incidents"], subject_count=40), "escalated", [],
     {"bulk-request"}, False),
    ("S8", _input(POLICE, "kvk", ["company_registration"]), "denied", [], {"requester-role-not-allowed"}, False),
    ("S10", _input(BANK, "fiod", ["ongoing_investigation"], partnership="fec", purpose="taskforce-subject-check",
                   legal_basis="WGS (FEC) with covenant"), "allowed", ["ongoing_investigation"], set(), True),
    ("S11", _input(MUNICIPALITY, "politie", ["police_incidents", "criminal_intelligence"]), "allowed-narrowed",
     ["police_incidents"], {"never-disclosed"}, False),
    ("S12", _input(MUNICIPALITY, "kvk", ["company_registration"], legal_basis="WGS (RIEC)"), "denied", [],
     {"legal-basis-mismatch"}, False),
    ("night", _input(MUNICIPALITY, "politie", ["police_incidents"], requested_at="2026-11-25T21:00:00Z"),
     "escalated", [], {"outside-office-hours"}, False),
    ("daily-limit", _input(MUNICIPALITY, "politie", ["police_incidents"],
                           context=PolicyContext(requests_today=200)), "escalated", [], {"daily-limit"}, False),
    ("decision-overrides-bulk", _input(
        MUNICIPALITY, "belastingdienst", ["tax_debts", "tax_compliance"], subject_count=40,
        context=PolicyContext(escalation_decision=EscalationDecisionInput(
            id="dec-1", request_fingerprint="fp-1", holder="belastingdienst", valid_until="2026-12-01T00:00:00Z",
            permitted_categories=["tax_debts"]))),
     "allowed-narrowed", ["tax_debts"], {"narrowed-by-escalation-decision"}, False),
]


@pytest.fixture(scope="module")
def opa_url() -> Iterator[str]:
    with serve_app(create_opa_test_app(POLICIES_DIR)) as url:
        yield url


@pytest.fixture(params=["embedded", "opa-server"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[PolicyEngine]:
    if request.param == "embedded":
        chosen: PolicyEngine = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER))
    else:
        chosen = OpaServerPolicyEngine(request.getfixturevalue("opa_url"), REGISTER, register_digest(REGISTER),
                                       timeout=5.0)
    yield chosen
    await chosen.aclose()


@pytest.mark.parametrize(("case", "policy_input", "outcome", "permitted", "codes", "hit_only"), TABLE,
                         ids=[row[0] for row in TABLE])
async def test_decision_table(engine: PolicyEngine, case: str, policy_input: PolicyInput, outcome: str,
                              permitted: list[str], codes: set[str], hit_only: bool) -> None:
    decision = await engine.decide("exchange", policy_input)
    assert decision.outcome == outcome, (case, decision.reasons)
    assert decision.permitted_categories == permitted
    assert codes <= {r.code for r in decision.reasons}
    assert decision.hit_only is hit_only
    assert decision.policy_version.startswith("wgs-policy-")


def _decided(obligations: dict[str, Any], **request: Any) -> PolicyInput:
    """A bulk request to the police, allowed by an escalation decision with ``obligations``."""
    return _input(MUNICIPALITY, "politie", ["police_incidents"], subject_count=40, **request,
                  context=PolicyContext(escalation_decision=EscalationDecisionInput(
                      id="dec-9", request_fingerprint="fp-1", holder="politie", valid_until="2026-12-01T00:00:00Z",
                      permitted_categories=["police_incidents"], obligations=obligations)))


YOUTH = {"partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)",
         "subjects_minor": True}

# (case id, input, obligations of the decision: None when the escalation decision is no valid one)
OBLIGATIONS: list[tuple[str, PolicyInput, dict[str, Any] | None]] = [
    ("later-retain-until-ignored", _decided({"retain_until": "2099-12-31"}),
     {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}),
    ("earlier-retain-until-kept", _decided({"retain_until": "2027-01-31"}),
     {"retain_until": "2027-01-31", "onward_sharing": False, "results_only": False}),
    ("results-only-not-lifted", _decided({"results_only": False, "retain_until": "2099-12-31"}, **YOUTH),
     {"retain_until": "2027-11-25", "onward_sharing": False, "results_only": True}),
    ("results-only-added", _decided({"results_only": True}),
     {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": True}),
    ("unknown-obligation-dropped", _decided({"note": "tier-2"}),
     {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}),
    ("onward-sharing-invalidates", _decided({"onward_sharing": True}), None),
    ("malformed-date-invalidates", _decided({"retain_until": "31-12-2099"}), None),
]


@pytest.mark.parametrize(("case", "policy_input", "obligations"), OBLIGATIONS, ids=[row[0] for row in OBLIGATIONS])
async def test_escalation_decision_only_tightens_obligations(engine: PolicyEngine, case: str,
                                                             policy_input: PolicyInput,
                                                             obligations: dict[str, Any] | None) -> None:
    decision = await engine.decide("exchange", policy_input)
    if obligations is None:
        assert (decision.outcome, decision.escalation_decision, decision.obligations) == ("escalated", None, None)
        assert "bulk-request" in {r.code for r in decision.reasons}
    else:
        assert decision.outcome == "allowed", (case, decision.reasons)
        assert decision.escalation_decision == "dec-9"
        assert decision.obligations is not None
        assert decision.obligations.model_dump() == obligations


KVK_DECISION = PolicyContext(requests_today=500, escalation_decision=EscalationDecisionInput(
    id="dec-7", request_fingerprint="fp-1", holder="kvk", valid_until="2026-12-01T00:00:00Z",
    permitted_categories=["company_registration"]))

# Discovery answers to rules 6-8 as an exchange does: (case id, input, outcome, permitted, reason codes,
# escalation decision)
DISCOVERY: list[tuple[str, PolicyInput, str, list[str], set[str], str | None]] = [
    ("discovery-allowed", _input(MUNICIPALITY, "kvk", ["company_registration"]), "allowed",
     ["company_registration"], set(), None),
    ("discovery-bulk", _input(MUNICIPALITY, "kvk", ["company_registration"], subject_count=26), "escalated", [],
     {"bulk-request"}, None),
    ("discovery-daily-limit", _input(MUNICIPALITY, "kvk", ["company_registration"],
                                     context=PolicyContext(requests_today=200)), "escalated", [], {"daily-limit"},
     None),
    ("discovery-night", _input(MUNICIPALITY, "kvk", ["company_registration"], requested_at="2026-11-29T02:00:00Z"),
     "escalated", [], {"outside-office-hours"}, None),
    ("discovery-denial-beats-escalation", _input(MUNICIPALITY, "kvk", ["company_registration"], subject_count=40,
                                                 subjects_minor=True),
     "denied", [], {"minors-not-allowed", "bulk-request"}, None),
    ("discovery-decision-overrides", _input(MUNICIPALITY, "kvk", ["company_registration", "directorships"],
                                            subject_count=40, requested_at="2026-11-29T02:00:00Z",
                                            context=KVK_DECISION),
     "allowed-narrowed", ["company_registration"], {"narrowed-by-escalation-decision"}, "dec-7"),
    # Rules 3 and 4 as for an exchange: what is not searched is removed with its reason (S1, S11)
    ("discovery-S11", _input(MUNICIPALITY, "politie", ["police_incidents", "criminal_intelligence"]),
     "allowed-narrowed", ["police_incidents"], {"never-disclosed"}, None),
    ("discovery-S1-tax", _input(MUNICIPALITY, "belastingdienst", S1), "allowed-narrowed", ["tax_debts"],
     {"category-not-supplied"}, None),
    ("discovery-decision-for-another-holder", _input(MUNICIPALITY, "politie", ["police_incidents"], subject_count=40,
                                                     context=KVK_DECISION),
     "escalated", [], {"bulk-request", "daily-limit"}, None),
]


@pytest.mark.parametrize(("case", "policy_input", "outcome", "permitted", "codes", "escalation_decision"),
                         DISCOVERY, ids=[row[0] for row in DISCOVERY])
async def test_discovery_decision_table(engine: PolicyEngine, case: str, policy_input: PolicyInput, outcome: str,
                                        permitted: list[str], codes: set[str],
                                        escalation_decision: str | None) -> None:
    decision = await engine.decide("discovery", policy_input)
    assert decision.outcome == outcome, (case, decision.reasons)
    assert decision.escalate is (outcome == "escalated")
    assert decision.permitted_categories == permitted
    assert {r.code for r in decision.reasons} == codes
    assert decision.escalation_decision == escalation_decision
    assert decision.hit_only is True


def _police_supplies_investigation() -> dict[str, Any]:
    """The shipped register with the police also supplying the hit-only `ongoing_investigation` for Bibob,
    although it answers with records there (the loader refuses this; the policy must hold regardless)."""
    register = copy.deepcopy(REGISTER)
    bibob = register["partnerships"]["riec-amsterdam-amstelland"]["purposes"]["bibob-integrity-check"]
    bibob["supplies"]["police"] = [*bibob["supplies"]["police"], "ongoing_investigation"]
    return register


@pytest.mark.parametrize("kind", ["embedded", "opa-server"])
async def test_hit_only_category_never_comes_as_records(kind: str) -> None:
    register = _police_supplies_investigation()
    with serve_app(create_opa_test_app(POLICIES_DIR)) as url:
        digest = register_digest(register)
        engine: PolicyEngine = (EmbeddedPolicyEngine(POLICIES_DIR, register, digest) if kind == "embedded" else
                                OpaServerPolicyEngine(url, register, digest, timeout=5.0))
        try:
            mixed, only, fiod = await engine.decide_many("exchange", [
                _input(MUNICIPALITY, "politie", ["police_incidents", "ongoing_investigation"]),
                _input(MUNICIPALITY, "politie", ["ongoing_investigation"]),
                _input(MUNICIPALITY, "fiod", ["ongoing_investigation"])])
            alone = await engine.decide("exchange", _input(MUNICIPALITY, "politie",
                                                           ["police_incidents", "ongoing_investigation"]))
        finally:
            await engine.aclose()
    for decision in (mixed, alone):
        assert (decision.outcome, decision.permitted_categories, decision.removed_categories, decision.hit_only) == (
            "allowed-narrowed", ["police_incidents"], ["ongoing_investigation"], False)
        assert [(r.code, r.category) for r in decision.reasons] == [("hit-only-category", "ongoing_investigation")]
    assert (only.outcome, only.permitted_categories) == ("denied", [])
    assert {r.code for r in only.reasons} == {"no-permitted-categories", "hit-only-category"}
    assert (fiod.outcome, fiod.permitted_categories, fiod.hit_only) == ("allowed", ["ongoing_investigation"], True)


def _police_records_to_banks() -> dict[str, Any]:
    """The shipped register with the banks' subject check answered by the police with records of
    `police_incidents` (the loader refuses this: a private participant gets police, tax and prosecution data
    as hit/no-hit only; the policy must hold regardless)."""
    register = copy.deepcopy(REGISTER)
    check = register["partnerships"]["fec"]["purposes"]["taskforce-subject-check"]
    check["supplies"]["police"] = ["police_incidents"]
    check["receives"]["bank"] = ["ongoing_investigation", "police_incidents"]
    check["hit_only_holders"] = ["investigation"]
    return register


FEC_CHECK: dict[str, Any] = {"partnership": "fec", "purpose": "taskforce-subject-check",
                             "legal_basis": "WGS (FEC) with covenant"}

# (case id, register sector of the banks, holder, outcome, permitted, reason codes, hit_only)
COVENANT: list[tuple[str, str, str, str, list[str], set[str], bool]] = [
    ("private-bank-police-records-barred", "private", "politie", "denied", [],
     {"no-permitted-categories", "private-participant-hit-only"}, False),
    ("private-bank-fiod-hit-only", "private", "fiod", "allowed", ["ongoing_investigation"], set(), True),
    ("public-bank-police-records", "public", "politie", "allowed", ["police_incidents"], set(), False),
]


@pytest.mark.parametrize("kind", ["embedded", "opa-server"])
@pytest.mark.parametrize(("case", "sector", "holder", "outcome", "permitted", "codes", "hit_only"), COVENANT,
                         ids=[row[0] for row in COVENANT])
async def test_a_private_participant_gets_police_data_as_hit_no_hit_only(
        kind: str, case: str, sector: str, holder: str, outcome: str, permitted: list[str], codes: set[str],
        hit_only: bool) -> None:
    register = _police_records_to_banks()
    for bank in ("abn-amro", "rabobank"):
        register["organisations"][bank]["sector"] = sector
    with serve_app(create_opa_test_app(POLICIES_DIR)) as url:
        digest = register_digest(register)
        engine: PolicyEngine = (EmbeddedPolicyEngine(POLICIES_DIR, register, digest) if kind == "embedded" else
                                OpaServerPolicyEngine(url, register, digest, timeout=5.0))
        try:
            decision = await engine.decide("exchange", _input(BANK, holder, ["ongoing_investigation",
                                                                             "police_incidents"], **FEC_CHECK))
        finally:
            await engine.aclose()
    assert (decision.outcome, decision.permitted_categories, decision.hit_only) == (outcome, permitted, hit_only), \
        (case, decision.reasons)
    assert {r.code for r in decision.reasons} - {"category-not-supplied", "hit-only-category"} == codes
    if "private-participant-hit-only" in codes:
        assert [r.category for r in decision.reasons if r.code == "private-participant-hit-only"] == [
            "police_incidents"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_opa_server_down_is_policy_unavailable() -> None:
    engine = OpaServerPolicyEngine(f"http://127.0.0.1:{_closed_port()}", REGISTER, register_digest(REGISTER),
                                   timeout=0.5)
    with pytest.raises(PolicyUnavailable):
        await engine.decide("exchange", TABLE[0][1])
    with pytest.raises(PolicyUnavailable):
        await engine.check()
    await engine.aclose()


async def test_opa_server_slower_than_the_timeout_is_policy_unavailable() -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR, Behaviour(delay_seconds=2.0))) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=0.3)
        slow = r"OPA server unavailable \(no answer within 0.3 s, WGS_OPA_TIMEOUT_SECONDS\)"
        with pytest.raises(PolicyUnavailable, match=slow):  # slow, not down: said so, and which setting
            await engine.decide("exchange", TABLE[0][1])
        with pytest.raises(PolicyUnavailable, match=slow):
            await engine.check()
        await engine.aclose()


async def test_malformed_decision_is_refused() -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR, Behaviour(malformed=True))) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=2.0)
        with pytest.raises(MalformedDecision):
            await engine.decide("exchange", TABLE[0][1])
        await engine.aclose()


def test_decision_contradicting_itself_is_malformed() -> None:
    document = {"allow": True, "escalate": False, "outcome": "denied", "reasons": [], "permitted_categories": [],
                "removed_categories": [], "hit_only": False, "obligations": None, "escalation_decision": None,
                "holder": "h", "policy_version": "v", "register_sha256": "r"}
    with pytest.raises(MalformedDecision):
        Decision.parse(document)
    with pytest.raises(MalformedDecision):
        Decision.parse(document | {"outcome": "allowed"})  # an allow without obligations
