"""A decision document that contradicts itself is an engine failure (deny), never read optimistically:
the checks ``Decision.parse`` makes beyond the schema (found missing by a review)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from gateway.policy.errors import MalformedDecision
from gateway.policy.model import Decision, PolicyInput, RegisterFacts

OBLIGATIONS = {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}
ALLOWED: dict[str, Any] = {
    "allow": True, "escalate": False, "outcome": "allowed", "reasons": [], "permitted_categories": ["police_incidents"],
    "removed_categories": [], "hit_only": False, "escalation_decision": None, "holder": "h", "policy_version": "wgs-1",
    "register_sha256": "ab" * 32, "obligations": OBLIGATIONS}
DENIED = ALLOWED | {"allow": False, "outcome": "denied", "permitted_categories": [], "obligations": None,
                    "reasons": [{"code": "legal-basis-mismatch", "message": "wrong legal basis"}]}
ESCALATED = DENIED | {"escalate": True, "outcome": "escalated",
                      "reasons": [{"code": "outside-office-hours", "message": "outside office hours"}]}


@pytest.mark.parametrize("document", [ALLOWED, DENIED, ESCALATED])
def test_consistent_documents_are_accepted(document: dict[str, Any]) -> None:
    assert Decision.parse(document).outcome == document["outcome"]


@pytest.mark.parametrize("document", [
    ALLOWED | {"escalate": True},  # allowed and escalated at once
    ESCALATED | {"escalate": False},  # an escalation the flag denies
    ALLOWED | {"permitted_categories": []},  # an allow of nothing
    DENIED | {"permitted_categories": ["police_incidents"]},  # a denial that permits something
    ALLOWED | {"obligations": OBLIGATIONS | {"onward_sharing": True}},  # rule 9 says never
    ALLOWED | {"obligations": OBLIGATIONS | {"retain_until": "forever"}},  # not a date
    ALLOWED | {"obligations": None},  # an allow without obligations
], ids=["allow-and-escalate", "escalated-flag-false", "allow-nothing", "deny-permits", "onward-sharing",
        "retain-until-not-a-date", "allow-without-obligations"])
def test_contradictory_documents_are_malformed(document: dict[str, Any]) -> None:
    with pytest.raises(MalformedDecision):
        Decision.parse(document)


NARROWED = ALLOWED | {"outcome": "allowed-narrowed", "removed_categories": ["criminal_intelligence"], "reasons": [
    {"code": "never-disclosed", "message": "never disclosed", "category": "criminal_intelligence"}]}

# Each was accepted (a second review): a value of another JSON type read as a boolean, an allow that also
# denies or escalates, categories both permitted and removed, a refusal without reason or with obligations.
MALFORMED: dict[str, dict[str, Any]] = {
    "allow-as-string": ALLOWED | {"allow": "true"},
    "allow-as-number": ALLOWED | {"allow": 1},
    "hit-only-as-string": ALLOWED | {"hit_only": "no"},  # would ask for records instead of hit/no-hit
    "onward-sharing-as-string": ALLOWED | {"obligations": OBLIGATIONS | {"onward_sharing": "off"}},
    "results-only-as-number": ALLOWED | {"obligations": OBLIGATIONS | {"results_only": 0}},
    "allow-with-a-denial-reason": ALLOWED | {"reasons": DENIED["reasons"]},
    "allow-with-an-escalation-reason": ALLOWED | {"reasons": ESCALATED["reasons"]},
    "allow-with-a-reason-for-a-category-not-removed": NARROWED | {"reasons": [
        {"code": "never-disclosed", "message": "never disclosed", "category": "police_incidents"}]},
    "permitted-and-removed": NARROWED | {"removed_categories": ["police_incidents"], "reasons": [
        {"code": "never-disclosed", "message": "x", "category": "police_incidents"}]},
    "permitted-twice": ALLOWED | {"permitted_categories": ["police_incidents", "police_incidents"]},
    "allowed-but-removed": NARROWED | {"outcome": "allowed"},
    "narrowed-but-nothing-removed": ALLOWED | {"outcome": "allowed-narrowed"},
    "denial-without-reason": DENIED | {"reasons": []},
    "escalation-without-reason": ESCALATED | {"reasons": []},
    "denial-with-obligations": DENIED | {"obligations": OBLIGATIONS},
    "blank-policy-version": ALLOWED | {"policy_version": " "},
    # a decision of the policies before wgs-policy-2026.12.4, which named the register's version too: no
    # decision of this contract (an OPA server still serving them is not ready, and decides nothing)
    "register-version-of-older-policies": ALLOWED | {"register_version": "2026.11.1"},
    "no-holder": {k: v for k, v in ALLOWED.items() if k != "holder"},
    "blank-holder": ALLOWED | {"holder": " "},
    "holder-as-object": ALLOWED | {"holder": {"organisation": "h"}},
    "no-register-digest": {k: v for k, v in ALLOWED.items() if k != "register_sha256"},
    "blank-register-digest": ALLOWED | {"register_sha256": " "},
    "retain-until-basic-format": ALLOWED | {"obligations": OBLIGATIONS | {"retain_until": "20281125"}},
    "retain-until-week-date": ALLOWED | {"obligations": OBLIGATIONS | {"retain_until": "2028-W47-6"}},
    # Rule 3: a reason per removed category, whatever the outcome (a policy review found an input under which a
    # category was removed without one; the requester and the log would not learn why).
    "narrowed-without-reasons": NARROWED | {"reasons": []},
    "narrowed-with-one-reason-of-two": NARROWED | {"removed_categories": ["criminal_intelligence", "income"]},
    "denial-removing-without-a-reason": DENIED | {"removed_categories": ["income"]},
    "escalation-removing-without-a-reason": ESCALATED | {"removed_categories": ["income"]},
}


def test_a_narrowed_allow_with_its_reasons_is_accepted() -> None:
    assert Decision.parse(NARROWED).removed_categories == ["criminal_intelligence"]


@pytest.mark.parametrize("document", MALFORMED.values(), ids=MALFORMED.keys())
def test_documents_that_should_fail_closed_are_malformed(document: dict[str, Any]) -> None:
    with pytest.raises(MalformedDecision):
        Decision.parse(document)
    with pytest.raises(MalformedDecision):  # the embedded engine's path: the JSON text
        Decision.parse_json(json.dumps(document))


# The register's categories as ``answering`` reads them: police_incidents only, in partnership "p".
POLICE_ONLY = RegisterFacts(known=frozenset({"police_incidents"}), never_shared=frozenset(), never_disclosed={},
                            hit_only=frozenset(), results_only=frozenset())


def _input_for(holder: str, categories: tuple[str, ...] = ("police_incidents",), partnership: str = "p"
               ) -> PolicyInput:
    return PolicyInput.model_validate({
        "request": {"partnership": partnership, "purpose": "q", "legal_basis": "b", "case_reference": "c",
                    "signal": {"type": "t", "reference": "r"}, "categories": list(categories),
                    "subject_count": 1, "subjects_minor": False, "requester": {"organisation": "a"},
                    "holder": {"organisation": holder}, "requested_at": "2026-01-05T10:00:00Z"},
        "context": {}, "request_fingerprint": "f"})


def test_a_decision_made_under_another_register_answers_no_request() -> None:
    """The gateway records its own register's version with a decision: one that cites another register
    by its digest (an OPA server holding another gateway's, of another version or of the same version
    and other content) is refused, whatever else it says."""
    policy_input = _input_for("h")
    decision = Decision.parse(ALLOWED)
    assert decision.answering(policy_input, POLICE_ONLY, "ab" * 32) is decision
    with pytest.raises(MalformedDecision, match="another register"):
        decision.answering(policy_input, POLICE_ONLY, "cd" * 32)


def test_a_decision_for_another_holder_answers_no_request() -> None:
    """A batch is matched to its holders by position: a decision naming another holder (a batch answered
    out of order, or one holder's decision twice) is refused, also when it is otherwise a valid answer."""
    decision = Decision.parse(ALLOWED)
    assert decision.answering(_input_for("h"), POLICE_ONLY, "ab" * 32) is decision
    with pytest.raises(MalformedDecision, match="another holder"):
        decision.answering(_input_for("h2"), POLICE_ONLY, "ab" * 32)


# What the register says of categories, whatever the policy (an OPA server may serve an altered bundle, which
# names the gateway's policy version all the same; only another version is refused): rule 4, never disclosed,
# not even as hit/no-hit (whether the police hold CIE information on a person is itself that information);
# rule 3, a hit/no-hit-only category never as records. Each such decision was accepted.
REGISTERED = RegisterFacts(
    known=frozenset({"police_incidents", "criminal_intelligence", "bank_accounts", "ongoing_investigation"}),
    never_shared=frozenset({"criminal_intelligence"}), never_disclosed={"p": frozenset({"bank_accounts"})},
    hit_only=frozenset({"ongoing_investigation"}), results_only=frozenset())
EVERY_CATEGORY = ("police_incidents", "criminal_intelligence", "bank_accounts", "ongoing_investigation")


@pytest.mark.parametrize(("permitted", "hit_only"), [
    (["criminal_intelligence"], False), (["criminal_intelligence"], True),  # never shared anywhere
    (["bank_accounts"], False), (["bank_accounts"], True),  # never disclosed in partnership "p"
    (["ongoing_investigation"], False),  # hit/no-hit only, as records
], ids=["never-shared", "never-shared-hit-only", "never-disclosed-here", "never-disclosed-here-hit-only",
        "hit-only-category-as-records"])
def test_a_decision_permitting_what_the_register_never_discloses_answers_no_request(
        permitted: list[str], hit_only: bool) -> None:
    decision = Decision.parse(ALLOWED | {"permitted_categories": permitted, "hit_only": hit_only})
    with pytest.raises(MalformedDecision, match=r"never discloses|hit/no-hit-only category as records"):
        decision.answering(_input_for("h", EVERY_CATEGORY), REGISTERED, "ab" * 32)


def test_what_a_partnership_never_discloses_binds_that_partnership_only() -> None:
    """``bank_accounts`` is never disclosed in "p" (as in the RIEC): in another partnership (as the FEC's
    money-laundering taskforce, where banks supply it) a decision may permit it; and a hit/no-hit-only category
    may be permitted to a hit/no-hit answer."""
    elsewhere = _input_for("h", EVERY_CATEGORY, partnership="fec")
    banks = Decision.parse(ALLOWED | {"permitted_categories": ["bank_accounts"]})
    assert banks.answering(elsewhere, REGISTERED, "ab" * 32) is banks
    hit = Decision.parse(ALLOWED | {"permitted_categories": ["ongoing_investigation"], "hit_only": True})
    assert hit.answering(_input_for("h", EVERY_CATEGORY), REGISTERED, "ab" * 32) is hit


# Rule 9: where the purpose says results only (youth prevention: only results leave the partnership), every
# allow says so, whatever policy made it; an allow without it was accepted and its obligations passed on.
RESULTS_ONLY = dataclasses.replace(POLICE_ONLY, results_only=frozenset({("p", "q")}))


def test_an_allow_lifting_the_purposes_results_only_answers_no_request() -> None:
    lifted = Decision.parse(ALLOWED)
    with pytest.raises(MalformedDecision, match="results only"):
        lifted.answering(_input_for("h"), RESULTS_ONLY, "ab" * 32)
    kept = Decision.parse(ALLOWED | {"obligations": OBLIGATIONS | {"results_only": True}})
    assert kept.answering(_input_for("h"), RESULTS_ONLY, "ab" * 32) is kept
    elsewhere = _input_for("h", partnership="fec")  # another partnership's purpose of the same name
    assert lifted.answering(elsewhere, RESULTS_ONLY, "ab" * 32) is lifted
    assert Decision.parse(DENIED).answering(_input_for("h"), RESULTS_ONLY, "ab" * 32).outcome == "denied"
