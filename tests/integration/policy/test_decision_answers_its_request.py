"""A decision must be one the request can have: both engines refuse (deny, fail closed) a well-formed
decision that permits a category the request did not ask for (the holder would be asked for it, and the
gateway's filter keeps what is permitted) or one the partnership never discloses (even as hit/no-hit),
removes one it did not ask for, or applies an escalation decision the request did not bring. The policies
here are the shipped ones with ``wgs.exchange`` replaced by a stub that answers one fixed document, so each
engine is shown the defect as a faulty policy (or OPA bundle) would produce it."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.engine import EmbeddedPolicyEngine, OpaServerPolicyEngine, PolicyEngine, read_policy_version
from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import EscalationDecisionInput, PolicyContext
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_decision_table import MUNICIPALITY, REGISTER, _input
from tests.opa_test_server import create_opa_test_app
from tests.servers import serve_app

OBLIGATIONS = {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}
ALLOWED: dict[str, Any] = {
    "allow": True, "escalate": False, "outcome": "allowed", "reasons": [], "permitted_categories": ["police_incidents"],
    "removed_categories": [], "hit_only": False, "obligations": OBLIGATIONS, "escalation_decision": None,
    "policy_version": read_policy_version(POLICIES_DIR)}
NARROWED = ALLOWED | {"outcome": "allowed-narrowed", "removed_categories": ["convictions"], "reasons": [
    {"code": "category-not-supplied", "message": "not supplied", "category": "convictions"}]}

# (case id, the stub's decision, holder, outcome when the decision answers the request, else None)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("answers-the-request", ALLOWED, "allowed"),
    ("permits-an-unrequested-category", ALLOWED | {"permitted_categories": ["police_incidents", "bank_accounts"]},
     None),
    ("permits-an-unregistered-category", ALLOWED | {"permitted_categories": ["police_incidents", "dna_profiles"]},
     None),
    ("hit-only-permits-a-registered-category-unasked", ALLOWED | {
        "permitted_categories": ["ongoing_investigation"], "hit_only": True}, "allowed"),
    ("hit-only-permits-an-unregistered-category", ALLOWED | {
        "permitted_categories": ["dna_profiles"], "hit_only": True}, None),
    # rule 4, whatever the policy (an OPA bundle other than the gateway's): not even hit/no-hit on CIE
    # information, nor on what the RIEC never discloses
    ("hit-only-permits-a-never-shared-category", ALLOWED | {
        "permitted_categories": ["criminal_intelligence"], "hit_only": True}, None),
    ("hit-only-permits-a-category-the-partnership-never-discloses", ALLOWED | {
        "permitted_categories": ["bank_accounts"], "hit_only": True}, None),
    ("removes-an-unrequested-category", NARROWED, None),
    ("applies-an-escalation-decision-not-brought", ALLOWED | {"escalation_decision": "dec-1"}, None),
    ("names-another-holder", ALLOWED | {"holder": "om-amsterdam"}, None),
]


def _stub_policies(directory: Path, decision: dict[str, Any]) -> Path:
    """The shipped policies, ``wgs.exchange`` answering ``decision`` for every target, named the target's
    (``holder``) and made under the register loaded (``register_sha256``) unless ``decision`` says other."""
    for source in POLICIES_DIR.glob("*.rego"):
        if not source.name.endswith("_test.rego"):
            shutil.copy(source, directory / source.name)
    (directory / "exchange.rego").write_text(
        "package wgs.exchange\n\nimport rego.v1\n\n"
        f"_stub := {json.dumps(decision)}\n\n"
        "_made := object.union({\"register_sha256\": object.get(data.register, \"sha256\", \"\")}, _stub)\n\n"
        "decision := object.union({\"holder\": input.request.holder.organisation}, _made)\n\n"
        "decisions := [object.union({\"holder\": h.organisation}, _made) | some h in input.holders]\n",
        encoding="utf-8")
    return directory


@asynccontextmanager
async def _engine(kind: str, policies: Path) -> AsyncIterator[PolicyEngine]:
    """The engine of ``kind`` over ``policies``: embedded, or an OPA server's client against the test server
    serving them (the same decision test table runs through both)."""
    with serve_app(create_opa_test_app(policies)) as url:
        digest = register_digest(REGISTER)
        engine: PolicyEngine = (EmbeddedPolicyEngine(policies, REGISTER, digest) if kind == "embedded"
                                else OpaServerPolicyEngine(url, REGISTER, digest, timeout=5.0))
        try:
            yield engine
        finally:
            await engine.aclose()


async def _decisions(engine: PolicyEngine) -> None:
    asked = _input(MUNICIPALITY, "politie", ["police_incidents"])
    one = await engine.decide("exchange", asked)
    many = await engine.decide_many("exchange", [asked, _input(MUNICIPALITY, "om-amsterdam", ["police_incidents"])])
    assert [d.outcome for d in (one, *many)] == [one.outcome] * 3


@pytest.mark.parametrize("kind", ["embedded", "opa-server"])
@pytest.mark.parametrize(("case", "decision", "outcome"), CASES, ids=[row[0] for row in CASES])
async def test_a_decision_the_request_cannot_have_is_malformed(tmp_path: Path, kind: str, case: str,
                                                               decision: dict[str, Any], outcome: str | None) -> None:
    policies = _stub_policies(tmp_path, decision)
    async with _engine(kind, policies) as engine:
        if outcome is None:
            with pytest.raises(MalformedDecision):
                await engine.decide("exchange", _input(MUNICIPALITY, "politie", ["police_incidents"]))
            with pytest.raises(MalformedDecision):
                await engine.decide_many("exchange", [_input(MUNICIPALITY, "politie", ["police_incidents"])])
        else:
            await _decisions(engine)


@pytest.mark.parametrize("kind", ["embedded", "opa-server"])
@pytest.mark.parametrize("results_only", [True, False])
async def test_an_allow_keeps_the_purposes_results_only(tmp_path: Path, kind: str, results_only: bool) -> None:
    """Rule 9: youth prevention is results-only; an allow whose obligations say otherwise is refused."""
    policies = _stub_policies(tmp_path, ALLOWED | {"obligations": OBLIGATIONS | {"results_only": results_only}})
    asked = _input(MUNICIPALITY, "politie", ["police_incidents"], partnership="zvh-amsterdam",
                   purpose="youth-prevention", legal_basis="WGS (ZVH)")
    async with _engine(kind, policies) as engine:
        if results_only:
            assert (await engine.decide("exchange", asked)).obligations.results_only  # type: ignore[union-attr]
        else:
            with pytest.raises(MalformedDecision, match="results only"):
                await engine.decide("exchange", asked)
            with pytest.raises(MalformedDecision, match="results only"):
                await engine.decide_many("exchange", [asked])


@pytest.mark.parametrize("kind", ["embedded", "opa-server"])
@pytest.mark.parametrize(("holder", "accepted"), [("politie", True), ("om-amsterdam", False)])
async def test_an_escalation_decision_applies_only_to_its_own_holder(tmp_path: Path, kind: str, holder: str,
                                                                     accepted: bool) -> None:
    policies = _stub_policies(tmp_path, ALLOWED | {"escalation_decision": "dec-1"})
    brought = PolicyContext(escalation_decision=EscalationDecisionInput(
        id="dec-1", request_fingerprint="fp-1", holder="politie", valid_until="2026-12-01T00:00:00Z",
        permitted_categories=["police_incidents"]))
    asked = _input(MUNICIPALITY, holder, ["police_incidents"], context=brought)
    async with _engine(kind, policies) as engine:
        if accepted:
            assert (await engine.decide("exchange", asked)).escalation_decision == "dec-1"
        else:
            with pytest.raises(MalformedDecision):
                await engine.decide("exchange", asked)


async def test_an_opa_server_serving_older_policies_is_not_ready(tmp_path: Path) -> None:
    """An OPA server whose policies predate the gateway's (decisions without the holder and the register's
    digest) gives no decision the gateway accepts: readiness says so instead of passing while every exchange
    is refused."""
    older = {key: value for key, value in ALLOWED.items() if key not in {"holder", "register_sha256"}}
    policies = _stub_policies(tmp_path, older)
    (policies / "exchange.rego").write_text(
        "package wgs.exchange\n\nimport rego.v1\n\n"
        f"decision := {json.dumps(older)}\n\n"
        f"decisions := [{json.dumps(older)} | some _ in input.holders]\n", encoding="utf-8")
    with serve_app(create_opa_test_app(policies)) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        try:
            with pytest.raises(PolicyUnavailable, match="policy version"):
                await engine.check()
            with pytest.raises(MalformedDecision):
                await engine.decide("exchange", _input(MUNICIPALITY, "politie", ["police_incidents"]))
        finally:
            await engine.aclose()
