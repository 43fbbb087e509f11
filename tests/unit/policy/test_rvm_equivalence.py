"""The embedded engine's two evaluators must give identical decision documents: the compiled RVM (what the
gateway uses) and regorus's interpreter (the reference, and what runs the Rego unit tests).

The RVM departs from OPA in a few corners (policies/common.rego says which and how the policies avoid
them); this is the check that they do. Compared, document for document (the JSON each evaluator returns,
not parsed decisions):

* the decision table that both engines are tested with (tests/integration/policy/test_decision_table.py);
* an exhaustive product, over the shipped register and over a variant with a retired participant, an
  urgent purpose, other office days and a partnership not yet established: every partnership (and an
  unknown one) x each of its purposes (and a foreign one) x every requester system (and an outsider,
  and a participant's wrong system) x two category sets (all the purpose's; one of them with a
  never-disclosed and an unknown category) x minors x in/outside office hours x escalation decision
  absent / valid / expired / for another request / for another holder, each decided for every
  participant plus an outsider organisation and an unknown one in one batch; legal basis, case
  reference, signal, bulk, daily volume and provided data vary along;
* a sample of the same inputs one holder at a time (the ``decision`` rules).

Where the interpreter fails (PolicyError), the RVM must fail too; and an RVM that fails or leaves a value
undefined raises exactly the errors the caller denies on.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.engine import BATCH_RULES, RULES, EmbeddedPolicyEngine, batch_inputs
from gateway.policy.errors import MalformedDecision, PolicyError, PolicyUnavailable
from gateway.policy.model import (
    EscalationDecisionInput,
    Party,
    PolicyContext,
    PolicyInput,
    PolicyKind,
    PolicyRequest,
)
from gateway.register.loader import load_register
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER
from tests.integration.policy.test_decision_table import TABLE

SHIPPED = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
KINDS: list[PolicyKind] = ["exchange", "discovery"]
IN_HOURS, WEEKEND = "2026-11-25T10:00:00Z", "2026-11-28T10:00:00Z"
ESCALATIONS = ["none", "valid", "expired", "other-request", "other-holder"]


def variant_register() -> dict[str, Any]:
    """The shipped register with a retired participant (a holder and a requester), an urgent purpose,
    office days that are no run (the reason lists them), a partnership established only after the
    requests, and the banks' subject check configured to give them police and tax records (answered, and
    handed over with a request; the loader refuses that, the policy bars it): the paths the shipped
    register does not reach."""
    register = copy.deepcopy(SHIPPED)
    check = register["partnerships"]["fec"]["purposes"]["taskforce-subject-check"]
    check["requesters"] = ["bank", "tax"]
    check["supplies"] |= {"police": ["police_incidents"], "tax": ["tax_compliance"], "bank": ["bank_accounts"]}
    check["receives"] |= {"bank": ["ongoing_investigation", "police_incidents", "tax_compliance"],
                          "tax": ["bank_accounts"]}
    check["hit_only_holders"] = ["investigation", "tax"]
    register["office_hours"]["weekdays"] = [1, 3, 5]
    register["partnerships"]["zvh-amsterdam"]["established"] = "2026-11-30"
    riec = register["partnerships"]["riec-amsterdam-amstelland"]
    for participant in riec["participants"]:
        if participant["organisation"] in {"politie", "belastingdienst"}:
            participant["status"] = "retired"
    riec["purposes"]["bibob-integrity-check"]["urgent"] = True
    return register


def _evaluate(engine: EmbeddedPolicyEngine, rule: str, document: dict[str, Any]) -> Any:
    """The evaluator's answer, or the kind of error it raised (compared like a document)."""
    try:
        return engine.evaluate_sync(rule, document)
    except PolicyError as exc:
        return f"error: {type(exc).__name__}"


def _inputs(register: dict[str, Any], *, escalations: list[str], minors: list[bool]) -> Iterator[list[PolicyInput]]:
    """The product, one list of per-holder inputs per request (see the module docstring)."""
    categories = sorted(register["categories"])
    organisations = sorted(register["organisations"])
    partnerships = {**register["partnerships"], "riec-utrecht": None}
    variation = itertools.count()
    for partnership_id, partnership in partnerships.items():
        participants = partnership["participants"] if partnership else []
        purposes = dict(partnership["purposes"]) if partnership else {}
        foreign = "youth-prevention" if "youth-prevention" not in purposes else "bibob-integrity-check"
        purposes[foreign] = None
        members = {p["organisation"] for p in participants}
        outsider = next(o for o in organisations if o not in members)
        requesters = [Party(organisation=p["organisation"], system=p["systems"][0]) for p in participants
                      if p["systems"]]
        requesters += [Party(organisation=outsider, system=register["organisations"][outsider]["systems"][0])]
        if participants:
            requesters += [Party(organisation=participants[0]["organisation"], system="politie-bvh-wrong")]
        holders = [p["organisation"] for p in participants] + [outsider, "stranger"]
        for purpose_id, purpose in purposes.items():
            pool = sorted({c for supplied in (purpose or {}).get("supplies", {}).values() for c in supplied})
            pool = pool or categories[:3]
            # all the purpose's categories; one of them with a never-disclosed and an unknown category
            category_sets = [pool, [pool[-1], "criminal_intelligence", "unknown_category"]]
            suppliers = [p["organisation"] for p in participants
                         if purpose and purpose["supplies"].get(p["role"])] or holders
            legal_basis = purpose["legal_basis"] if purpose else "WGS (ZVH)"
            for requester, asked, minor, at, escalation in itertools.product(
                    requesters, category_sets, minors, [IN_HOURS, WEEKEND], escalations):
                n = next(variation)
                decision = None
                if escalation != "none":
                    decision = EscalationDecisionInput(
                        id=f"dec-{n}", request_fingerprint="other" if escalation == "other-request" else "fp",
                        holder=suppliers[-1] if escalation == "other-holder" else suppliers[0],
                        valid_until="2026-11-01T00:00:00Z" if escalation == "expired" else "2026-12-01T00:00:00Z",
                        permitted_categories=asked[: n % 3], obligations={"note": "tier-2"} if n % 2 else {})
                request = {
                    "partnership": partnership_id, "purpose": purpose_id,
                    "legal_basis": "WGS (RIEC)" if n % 7 == 3 else legal_basis,
                    "case_reference": " " if n % 11 == 5 else "C-1",
                    "signal": {"type": "" if n % 13 == 6 else "s", "reference": "r"},
                    "categories": asked, "subject_count": 40 if n % 5 == 2 else 3, "subjects_minor": minor,
                    "requester": requester, "requested_at": at,
                    "provided_categories": [["tax_compliance"], ["income"], ["unknown_category"], []][n % 4]
                    if n % 3 == 0 else []}
                context = PolicyContext(requests_today=200 if n % 6 == 1 else n % 6, escalation_decision=decision)
                yield [PolicyInput(request=PolicyRequest(holder=Party(organisation=h), **request), context=context,
                                   request_fingerprint="fp") for h in holders]


Engines = tuple[dict[str, Any], EmbeddedPolicyEngine, EmbeddedPolicyEngine]


@pytest.fixture(scope="module", params=["shipped", "variant"])
def engines(request: pytest.FixtureRequest) -> Iterator[Engines]:
    """(register, RVM engine, interpreter engine) for the shipped register and for the variant."""
    register = SHIPPED if request.param == "shipped" else variant_register()
    rvm = EmbeddedPolicyEngine(POLICIES_DIR, register, register_digest(register), evaluator="rvm")
    interpreter = EmbeddedPolicyEngine(POLICIES_DIR, register, register_digest(register), evaluator="interpreter")
    yield register, rvm, interpreter
    for engine in (rvm, interpreter):
        engine.release_thread_engine()  # this thread's evaluator (the *_sync calls ran here)
        asyncio.run(engine.aclose())


@pytest.mark.parametrize("kind", KINDS)
def test_the_decision_table_is_decided_identically(engines: Engines, kind: PolicyKind) -> None:
    _, rvm, interpreter = engines
    for case, policy_input, *_ in TABLE:
        document = policy_input.document()
        assert _evaluate(rvm, RULES[kind], document) == _evaluate(interpreter, RULES[kind], document), case
    (_, batch), = batch_inputs([row[1] for row in TABLE[:5]])
    assert _evaluate(rvm, BATCH_RULES[kind], batch) == _evaluate(interpreter, BATCH_RULES[kind], batch)


def test_the_product_is_decided_identically(engines: Engines) -> None:
    """The full product over the shipped register; over the variant (whose differences are in the
    participants and the purposes) without minors and with escalation decisions absent or valid only,
    to stay within the test-suite budget (about 20 s and 5 s)."""
    register, rvm, interpreter = engines
    shipped = register is SHIPPED
    requests = list(_inputs(register, escalations=ESCALATIONS if shipped else ["none", "valid"],
                            minors=[False, True] if shipped else [False]))
    compared = 0
    outcomes: set[str] = set()
    codes: set[str] = set()
    for number, inputs in enumerate(requests):
        kinds: list[PolicyKind] = ["exchange", "discovery"] if number % 4 == 0 else ["exchange"]
        for kind in kinds:
            (_, batch), = batch_inputs(inputs)
            expected = _evaluate(interpreter, BATCH_RULES[kind], batch)
            assert _evaluate(rvm, BATCH_RULES[kind], batch) == expected, (kind, batch)
            compared += len(inputs)
            if isinstance(expected, list):
                outcomes |= {d["outcome"] for d in expected}
                codes |= {r["code"] for d in expected for r in d["reasons"]}
                _assert_every_removal_has_its_reason(expected)
            if number % 25 == 0:  # one holder at a time, the `decision` rules
                for policy_input in inputs:
                    document = policy_input.document()
                    assert _evaluate(rvm, RULES[kind], document) == _evaluate(interpreter, RULES[kind], document)
    assert compared > (20_000 if shipped else 4_000)
    assert outcomes == {"allowed", "allowed-narrowed", "denied", "escalated"}
    if not shipped:  # the banks' records were barred (answered and handed over), and decided alike
        assert {"private-participant-hit-only", "provision-not-allowed"} <= codes


def _assert_every_removal_has_its_reason(decisions: list[dict[str, Any]]) -> None:
    """A removed category always comes with a reason naming it, in a denial too (rules 3 and 4; the client
    contract says so): a denial of a requester that is no participant once listed categories without one."""
    for decision in decisions:
        explained = {r.get("category") for r in decision["reasons"]}
        assert set(decision["removed_categories"]) <= explained, decision


# Counts the gateway never sends (PolicyInput types them), as another client of the policies might: each
# must deny, with `input-incomplete`, and the two evaluators must agree (regorus's interpreter once failed
# on a fractional subject count while the RVM allowed the request).
_BAD_COUNTS = [("request", "subject_count", value) for value in (None, "40", -1, 30.5, 2.5)] + [
    ("context", "requests_today", value) for value in (None, "300", -5, 199.5, 250.5)]


def _both_evaluators_on(engines: Engines, kind: PolicyKind,
                        mutate: Callable[[dict[str, Any]], None]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """For the one-target and the batched rule of ``kind``: a table input changed by ``mutate``, and what the
    interpreter decides on it, once the RVM was checked to decide the same."""
    _, rvm, interpreter = engines
    document = TABLE[0][1].document()
    (_, batch), = batch_inputs([row[1] for row in TABLE[:3]])
    for rule, doc in ((RULES[kind], document), (BATCH_RULES[kind], batch)):
        doc = copy.deepcopy(doc)
        mutate(doc)
        expected = _evaluate(interpreter, rule, doc)
        assert _evaluate(rvm, rule, doc) == expected, (rule, doc)
        yield rule, doc, expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("part", "field", "value"), _BAD_COUNTS)
def test_incomplete_counts_deny_identically(engines: Engines, kind: PolicyKind, part: str, field: str,
                                            value: Any) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        if value is None:
            del doc[part][field]
        else:
            doc[part][field] = value

    for rule, doc, expected in _both_evaluators_on(engines, kind, mutate):
        for decision in expected if isinstance(expected, list) else [expected]:
            assert decision["outcome"] == "denied", (rule, doc)
            assert "input-incomplete" in {r["code"] for r in decision["reasons"]}, (rule, doc)


# A request time and data handed over that the gateway never sends (it types both), as another client of the
# policies might: each must deny with `input-incomplete` in both evaluators. A missing or unparsable
# `requested_at` once escalated under the interpreter (or failed it) while the RVM made no decision; a
# `provided_categories` that is no list of names was read as none by the RVM (rules 3 and 4 skipped) while
# the interpreter failed. Categories asked that are no non-empty list of names: the interpreter failed and
# the RVM read them as none (and allowed a hit/no-hit holder, asked about all it supplies).
_BAD_FIELDS = [("requested_at", value) for value in (None, 5, "", "2026-11-25", "2026-02-30T10:00:00Z",
                                                     "2026-11-25 10:00:00Z", "2026-11-25T24:00:00Z")] + [
    ("provided_categories", value) for value in ("company_registration", {"company_registration": True}, 5,
                                                 [5], ["company_registration", None])] + [
    ("categories", value) for value in (None, "police_incidents", {"police_incidents": True}, 5, [5],
                                        ["police_incidents", None], [], ["police_incidents", True],
                                        ["police_incidents", ["income"]], ["police_incidents", {}])]
_ABSENT = object()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("field", "value"), [("requested_at", _ABSENT), *_BAD_FIELDS,
                                              ("provided_categories", None), ("categories", _ABSENT)])
def test_a_malformed_time_or_provided_data_denies_identically(engines: Engines, kind: PolicyKind, field: str,
                                                              value: Any) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        if value is _ABSENT:
            del doc["request"][field]
        else:
            doc["request"][field] = value

    for rule, doc, expected in _both_evaluators_on(engines, kind, mutate):
        assert isinstance(expected, (list, dict)), (rule, doc, expected)  # a decision, not an error
        for decision in expected if isinstance(expected, list) else [expected]:
            assert decision["outcome"] == "denied", (rule, doc)
            [incomplete] = [r for r in decision["reasons"] if r["code"] == "input-incomplete"]
            assert f"request.{field}" in incomplete["message"], (rule, doc)


# Rules 1 and 2 on parts of the request the gateway always sends (PolicyRequest requires them): a request
# without a legal basis was allowed by both evaluators, and one whose requester names no organisation or no
# system was denied without rule 1's reason (in discovery under the RVM, without any reason).
_ABSENT_PARTS = [(("legal_basis",), "legal-basis-mismatch"), (("requester",), "requester-not-participant"),
                 (("requester", "system"), "requester-not-participant"),
                 (("requester", "organisation"), "requester-not-participant")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("path", "code"), _ABSENT_PARTS, ids=[".".join(p) for p, _ in _ABSENT_PARTS])
def test_an_absent_legal_basis_or_requester_denies_identically(engines: Engines, kind: PolicyKind,
                                                               path: tuple[str, ...], code: str) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        part = doc["request"]
        for key in path[:-1]:
            part = part[key]
        del part[path[-1]]

    for rule, doc, expected in _both_evaluators_on(engines, kind, mutate):
        for decision in expected if isinstance(expected, list) else [expected]:
            assert decision["outcome"] == "denied", (rule, doc)
            assert code in {r["code"] for r in decision["reasons"]}, (rule, doc)


# The usual request is recognised in fewer steps than the rules it stands for (policies/common.rego
# `request_deny`, `_usual_texts`, `_categories_ok`; wgs.exchange `_plain_request`): by the order of Rego's
# values across types instead of is_string/trim_space, and by the absence of an escalation decision. Texts at
# the edges of those bounds, and escalation decisions that are none, must be decided as the rules say.
_BLANK, _SAME = "blank", "same"
_TEXTS = [("\u3000", _BLANK), ("\u0085", _BLANK), ("\t", _BLANK), (" ", _BLANK), (5, _BLANK), (["C-1"], _BLANK),
          ("\u3000C-1", _SAME), ("\u00c9-1", _SAME), (" C-1", _SAME), ("~", _SAME), ("!", _SAME), ("\u0084", _SAME)]
_TEXT_FIELDS = [(("case_reference",), "case-reference-missing"), (("signal", "type"), "signal-missing"),
                (("signal", "reference"), "signal-missing")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("path", "code"), _TEXT_FIELDS, ids=[".".join(p) for p, _ in _TEXT_FIELDS])
@pytest.mark.parametrize(("value", "expected"), _TEXTS, ids=[repr(v) for v, _ in _TEXTS])
def test_rule_2_texts_at_the_bounds_of_the_usual_request_decide_as_the_rules_say(
        engines: Engines, kind: PolicyKind, path: tuple[str, ...], code: str, value: Any, expected: str) -> None:
    """White space only (also Unicode's, which sorts above "!") or no string: denied for rule 2; any other
    string: decided as the usual request is (a leading space or accented letter is no blank text)."""
    def mutate(doc: dict[str, Any]) -> None:
        part = doc["request"]
        for key in path[:-1]:
            part = part[key]
        part[path[-1]] = value

    usual = {rule: decided for rule, _, decided in _both_evaluators_on(engines, kind, _nothing)}
    for rule, doc, decided in _both_evaluators_on(engines, kind, mutate):
        if expected == _SAME:
            assert decided == usual[rule], (rule, doc)
            continue
        for decision in decided if isinstance(decided, list) else [decided]:
            assert decision["outcome"] == "denied", (rule, doc)
            assert code in {r["code"] for r in decision["reasons"]}, (rule, doc)


def _nothing(doc: dict[str, Any]) -> None:
    """The table's input unchanged."""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("brought", [None, False, {}, "dec-1", []])
def test_an_escalation_decision_that_is_none_decides_as_none(engines: Engines, kind: PolicyKind,
                                                             brought: Any) -> None:
    """An ``escalation_decision`` that is null, false or no decision document takes the general rules
    (wgs.exchange `_decision`), not the usual request's: the same documents as without one."""
    def mutate(doc: dict[str, Any]) -> None:
        doc["context"]["escalation_decision"] = brought

    usual = {rule: decided for rule, _, decided in _both_evaluators_on(engines, kind, _nothing)}
    for rule, doc, decided in _both_evaluators_on(engines, kind, mutate):
        assert decided == usual[rule], (rule, doc)


# --- failing closed ----------------------------------------------------------------------------------------

_INDEX = "package wgs.index\n\nimport rego.v1\n\ntables := {}\n"


def _broken_engine(tmp_path: Path, rules: str) -> EmbeddedPolicyEngine:
    """The RVM engine over policies whose `decision` and `decisions` rules are ``rules``."""
    (tmp_path / "index.rego").write_text(_INDEX)
    for kind in KINDS:
        (tmp_path / f"{kind}.rego").write_text(f"package wgs.{kind}\n\nimport rego.v1\n\n{rules}")
    return EmbeddedPolicyEngine(tmp_path, SHIPPED, register_digest(SHIPPED), evaluator="rvm")


def _decide_both_ways(engine: EmbeddedPolicyEngine) -> list[type[PolicyError]]:
    raised: list[type[PolicyError]] = []
    policy_input = TABLE[0][1]
    for decide in (lambda: engine.decide_sync("exchange", policy_input),
                   lambda: engine.decide_many_sync("exchange", [policy_input, policy_input])):
        with pytest.raises(PolicyError) as caught:
            decide()
        raised.append(type(caught.value))
    engine.release_thread_engine()
    asyncio.run(engine.aclose())
    return raised


def test_an_undefined_rvm_result_is_a_malformed_decision(tmp_path: Path) -> None:
    engine = _broken_engine(tmp_path, "decision := input.nothing\n\ndecisions := input.nothing\n")
    assert _decide_both_ways(engine) == [MalformedDecision, MalformedDecision]


def test_an_undefined_value_inside_an_rvm_result_is_a_malformed_decision(tmp_path: Path) -> None:
    """The RVM writes an undefined comprehension element or member as the string "<undefined>" where OPA
    drops the element: that must never pass for a (shorter, or half-filled) decision."""
    engine = _broken_engine(tmp_path, "decision := [input.nothing.x | true][0]\n\n"
                                      "decisions := [input.nothing[h.organisation] | some h in input.holders]\n")
    assert _decide_both_ways(engine) == [MalformedDecision, MalformedDecision]


def test_an_rvm_error_is_policy_unavailable(tmp_path: Path) -> None:
    """The RVM stops a runaway evaluation (its instruction limit): no decision, the engine failed."""
    runaway = "count([1 | some i in numbers.range(1, 1000000)])"
    engine = _broken_engine(tmp_path, f"decision := {runaway}\n\ndecisions := [{runaway}]\n")
    assert _decide_both_ways(engine) == [PolicyUnavailable, PolicyUnavailable]


def test_a_policy_the_rvm_cannot_compile_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(PolicyUnavailable):
        _broken_engine(tmp_path, "decision := data\n")
