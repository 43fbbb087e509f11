"""``Decision.checked`` and ``Decision.answering`` are written for few interpreter steps (they run for every
decision): they must refuse exactly what the checks refused as first written, one by one, and with the same
message (the first check that fails names the fault). The reference copies below are those checks; every
combination of the fields the checks read is given to both."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from gateway.policy.errors import MalformedDecision
from gateway.policy.model import Decision, PolicyInput, RegisterFacts, _is_policy_date


def _checked_reference(d: Decision, requires_obligations: bool) -> None:
    allowed = d.outcome in {"allowed", "allowed-narrowed"}
    if d.allow != allowed:
        raise MalformedDecision("decision `allow` contradicts its outcome")
    if d.escalate != (d.outcome == "escalated"):
        raise MalformedDecision("decision `escalate` contradicts its outcome")
    if d.allow and not d.permitted_categories:
        raise MalformedDecision("an allow must permit at least one category")
    if not d.allow and d.permitted_categories:
        raise MalformedDecision("a denial or escalation permits no category")
    if not d.allow and (d.obligations is not None or not d.reasons):
        raise MalformedDecision("a denial or escalation carries reasons and no obligations")
    if requires_obligations and d.allow and d.obligations is None:
        raise MalformedDecision("an allow must carry obligations")
    permitted, removed = set(d.permitted_categories), set(d.removed_categories)
    if (len(permitted) != len(d.permitted_categories) or len(removed) != len(d.removed_categories)
            or permitted & removed):
        raise MalformedDecision("a category is permitted or removed, once, never both")
    if d.allow and (d.outcome == "allowed-narrowed") != bool(removed):
        raise MalformedDecision("decision `removed_categories` contradicts its outcome")
    explained = {r.category for r in d.reasons}
    if d.allow and not explained <= removed:
        raise MalformedDecision("an allow carries a reason that is no removed category's")
    if not removed <= explained:
        raise MalformedDecision("a removed category has no reason")
    if not (d.holder.strip() and d.policy_version.strip() and d.register_sha256.strip()):
        raise MalformedDecision("the decision names no holder, policy version or register digest")
    if d.obligations is not None:
        if d.obligations.onward_sharing:
            raise MalformedDecision("obligations must forbid onward sharing")
        if not _is_policy_date(d.obligations.retain_until):
            raise MalformedDecision("obligation `retain_until` is not a date")


def _answering_reference(d: Decision, policy_input: PolicyInput, register: RegisterFacts,
                         register_sha256: str) -> None:
    if d.register_sha256 != register_sha256:
        raise MalformedDecision("the decision was made under another register than the gateway's (digest)")
    if d.holder != policy_input.request.holder.organisation:
        raise MalformedDecision("the decision is for another holder than the request's")
    requested = set(policy_input.request.categories)
    permitted = d.permitted_categories
    partnership = policy_input.request.partnership
    if not register.known.issuperset(permitted) or not (d.hit_only or requested.issuperset(permitted)):
        raise MalformedDecision("the decision permits a category that was not requested or is not registered")
    if not (register.never_shared.isdisjoint(permitted)
            and register.never_disclosed.get(partnership, frozenset()).isdisjoint(permitted)):
        raise MalformedDecision("the decision permits a category the partnership never discloses")
    if not d.hit_only and not register.hit_only.isdisjoint(permitted):
        raise MalformedDecision("the decision permits a hit/no-hit-only category as records")
    if (d.obligations is not None and not d.obligations.results_only
            and (partnership, policy_input.request.purpose) in register.results_only):
        raise MalformedDecision("the decision's obligations lift the purpose's results only")
    if not requested.issuperset(d.removed_categories):
        raise MalformedDecision("the decision removes a category that was not requested")
    brought = policy_input.context.escalation_decision
    if d.escalation_decision is not None and (
            brought is None or brought.id != d.escalation_decision
            or brought.holder != policy_input.request.holder.organisation):
        raise MalformedDecision("the decision applies an escalation decision the request did not bring")


def _refusal(check: Any, *args: Any) -> str | None:
    """The message ``check`` refuses with, None when it accepts."""
    try:
        check(*args)
    except MalformedDecision as exc:
        return str(exc)
    return None


OBLIGATIONS = {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}
BASE: dict[str, Any] = {
    "allow": True, "escalate": False, "outcome": "allowed", "reasons": [], "permitted_categories": ["a"],
    "removed_categories": [], "hit_only": False, "escalation_decision": None, "holder": "h",
    "policy_version": "wgs-1", "register_sha256": "ab" * 32, "obligations": OBLIGATIONS}


def _reason(category: str | None) -> dict[str, Any]:
    return {"code": "x", "message": "y"} | ({} if category is None else {"category": category})


CHECKED_VARIANTS = list(itertools.product(
    ["allowed", "allowed-narrowed", "denied", "escalated"],  # outcome
    [True, False],  # allow
    [True, False],  # escalate
    [[], ["a"], ["a", "a"], ["a", "b"]],  # permitted
    [[], ["b"], ["b", "b"], ["a"], ["b", "c"]],  # removed
    [[], [_reason("b")], [_reason(None)], [_reason("c")], [_reason("b"), _reason(None)], [_reason("b"), _reason("c")]],
    [None, OBLIGATIONS, OBLIGATIONS | {"onward_sharing": True}, OBLIGATIONS | {"retain_until": "2028-W47-6"}],
    [{}, {"holder": " "}, {"register_sha256": " "}],
))


def test_checked_refuses_what_the_checks_one_by_one_refuse() -> None:
    compared = refused = 0
    for outcome, allow, escalate, permitted, removed, reasons, obligations, blanks in CHECKED_VARIANTS:
        decision = Decision.model_validate(BASE | {
            "outcome": outcome, "allow": allow, "escalate": escalate, "permitted_categories": permitted,
            "removed_categories": removed, "reasons": reasons, "obligations": obligations} | blanks)
        for requires_obligations in (True, False):
            expected = _refusal(_checked_reference, decision, requires_obligations)
            assert _refusal(decision.checked, requires_obligations) == expected, (decision, requires_obligations)
            compared += 1
            refused += expected is not None
    assert refused < compared  # both kinds were compared: accepted documents ...
    assert compared - refused > 20  # ... and a good number of them


REGISTER = RegisterFacts(
    known=frozenset({"a", "b", "never", "here", "hit"}), never_shared=frozenset({"never"}),
    never_disclosed={"p": frozenset({"here"})}, hit_only=frozenset({"hit"}), results_only=frozenset({("p", "q")}))


def _input(holder: str, categories: list[str], partnership: str, brought: dict[str, Any] | None) -> PolicyInput:
    return PolicyInput.model_validate({
        "request": {"partnership": partnership, "purpose": "q", "legal_basis": "b", "case_reference": "c",
                    "signal": {"type": "t", "reference": "r"}, "categories": categories,
                    "subject_count": 1, "subjects_minor": False, "requester": {"organisation": "r"},
                    "holder": {"organisation": holder}, "requested_at": "2026-01-05T10:00:00Z"},
        "context": {} if brought is None else {"escalation_decision": {
            "request_fingerprint": "f", "valid_until": "2026-01-06T00:00:00Z", "permitted_categories": []} | brought},
        "request_fingerprint": "f"})


INPUTS = [_input(holder, categories, partnership, brought)
          for holder, categories, partnership, brought in itertools.product(
              ["h", "other"], [["a"], ["a", "b", "hit"], ["never", "here", "hit", "a"]], ["p", "elsewhere"],
              [None, {"id": "e1", "holder": "h"}, {"id": "e2", "holder": "h"}, {"id": "e1", "holder": "other"}])]

ANSWERING_VARIANTS = list(itertools.product(
    [[], ["a"], ["b"], ["a", "unknown"], ["never"], ["here"], ["hit"]],  # permitted
    [[], ["b"], ["hit"], ["unasked"]],  # removed
    [False, True],  # hit_only
    [None, OBLIGATIONS, OBLIGATIONS | {"results_only": True}],
    [None, "e1"],  # escalation decision applied
    [{}, {"register_sha256": "cd" * 32}],
))


def test_answering_refuses_what_the_checks_one_by_one_refuse() -> None:
    compared = refused = 0
    for permitted, removed, hit_only, obligations, applied, other in ANSWERING_VARIANTS:
        decision = Decision.model_validate(BASE | {
            "permitted_categories": permitted, "removed_categories": removed, "hit_only": hit_only,
            "obligations": obligations, "escalation_decision": applied} | other)
        for policy_input in INPUTS:
            expected = _refusal(_answering_reference, decision, policy_input, REGISTER, "ab" * 32)
            assert _refusal(decision.answering, policy_input, REGISTER, "ab" * 32) == expected, (
                decision, policy_input)
            compared += 1
            refused += expected is not None
    assert 100 < compared - refused < compared


@pytest.mark.parametrize(("change", "message"), [
    ({"outcome": "allowed-narrowed", "removed_categories": ["b"], "reasons": [_reason("b")],
      "permitted_categories": ["a", "b"]}, "permitted or removed, once"),
    ({"outcome": "denied", "allow": False, "permitted_categories": [], "obligations": None, "reasons": [],
      "removed_categories": []}, "carries reasons and no obligations"),
    ({"outcome": "denied", "allow": False, "permitted_categories": [], "obligations": None,
      "reasons": [_reason(None)], "removed_categories": ["b"]}, "removed category has no reason"),
])
def test_a_refusal_names_its_fault(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedDecision, match=message):
        Decision.parse(BASE | change)
