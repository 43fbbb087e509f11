"""The batched rule (``decisions``) and the register index (``data.register_index``) are optimisations
only: every decision must be exactly the one the single-target rule gives, with or without the index.

Checked on a seeded spread of inputs over the shipped register (every partnership, purpose, participant,
outsiders, retired parties, bad signals, minors, bulk, night, escalation decisions, provided data)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.policy.engine import MAX_HOLDERS_PER_EVALUATION, RULES, EmbeddedPolicyEngine, batch_inputs
from gateway.policy.model import (
    Decision,
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
from tests.rego_harness import engine_with_tests

REGISTER = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
TIMES = ["2026-11-25T10:00:00Z", "2026-11-25T21:00:00Z", "2026-11-28T10:00:00Z", "2026-03-30T05:00:00Z",
         "2026-03-27T05:30:00Z", "2026-11-25T17:59:00Z", "2026-11-25T18:00:00Z"]


def requests(seed: int, count: int) -> list[list[PolicyInput]]:
    """``count`` requests, each as its per-holder inputs (1-5 holders)."""
    rnd = random.Random(seed)
    categories = [*REGISTER["categories"], "unknown_category"]
    organisations = [*REGISTER["organisations"], "stranger"]
    out = []
    for _ in range(count):
        well_formed = rnd.random() < 0.7
        partnership_id = rnd.choice([*REGISTER["partnerships"], "riec-utrecht"])
        partnership = REGISTER["partnerships"].get(partnership_id)
        if partnership and (well_formed or rnd.random() < 0.8):
            purpose_id = rnd.choice(list(partnership["purposes"]))
            purpose = partnership["purposes"][purpose_id]
            legal_basis = purpose["legal_basis"] if well_formed or rnd.random() < 0.8 else "x"
            allowed = [p for p in partnership["participants"] if p["role"] in purpose["requesters"]]
            participant = rnd.choice(allowed if allowed and well_formed else partnership["participants"])
            requester = Party(organisation=participant["organisation"],
                              system=rnd.choice(participant["systems"] or ["ghost"]))
            pool = sorted({c for supplied in purpose["supplies"].values() for c in supplied})
            asked = rnd.sample(pool, rnd.randint(1, len(pool))) + rnd.sample(categories, rnd.randint(0, 2))
            holders = [p["organisation"] for p in partnership["participants"]]
        else:
            purpose_id, legal_basis = "youth-prevention", "WGS (ZVH)"
            requester = Party(organisation=rnd.choice(organisations), system="ghost")
            asked = rnd.sample(categories, rnd.randint(0, 5))
            holders = organisations
        targets = rnd.sample(holders, rnd.randint(1, min(5, len(holders))))
        escalation = None
        if rnd.random() < 0.25:
            escalation = EscalationDecisionInput(
                id="dec-1", request_fingerprint=rnd.choice(["fp-1", "fp-1", "other"]), holder=rnd.choice(targets),
                valid_until=rnd.choice(["2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z"]),
                permitted_categories=rnd.sample(asked, rnd.randint(0, len(asked))),
                obligations=rnd.choice([{}, {"note": "tier-2"}]))
        fields: dict[str, Any] = {
            "partnership": partnership_id, "purpose": purpose_id, "legal_basis": legal_basis,
            "case_reference": "C-1" if well_formed else rnd.choice(["C-1", " "]),
            "signal": {"type": "s", "reference": "r"} if well_formed else rnd.choice(
                [{"type": "s", "reference": "r"}, {"type": "", "reference": "r"}]),
            "categories": list(dict.fromkeys(asked)),
            "subject_count": rnd.choice([1, 3, 25] if well_formed else [1, 26, 40]),
            "subjects_minor": rnd.random() < (0.05 if well_formed else 0.3), "requester": requester,
            "requested_at": rnd.choice(TIMES[:1] * 4 + TIMES),
            "provided_categories": rnd.sample(categories, rnd.randint(0, 2)) if rnd.random() < 0.2 else []}
        context = PolicyContext(requests_today=rnd.choice([0, 5, 199, 200] if not well_formed else [0, 5]),
                                escalation_decision=escalation)
        out.append([PolicyInput(request=PolicyRequest(holder=Party(organisation=o), **fields), context=context,
                                request_fingerprint="fp-1") for o in targets])
    return out


REQUESTS = requests(seed=3, count=150)
KINDS: list[PolicyKind] = ["exchange", "discovery"]


@pytest.fixture(scope="module")
def engine() -> Iterator[EmbeddedPolicyEngine]:
    chosen = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER))
    yield chosen
    chosen.release_thread_engine()  # this thread's engine (the *_sync calls ran here)
    asyncio.run(chosen.aclose())  # the worker thread's engine, dropped on its own thread


@pytest.mark.parametrize("kind", KINDS)
def test_batched_decisions_equal_single_decisions(engine: EmbeddedPolicyEngine, kind: PolicyKind) -> None:
    for inputs in REQUESTS:
        assert engine.decide_many_sync(kind, inputs) == [engine.decide_sync(kind, i) for i in inputs]


@pytest.mark.parametrize("kind", KINDS)
def test_the_register_index_changes_no_decision(engine: EmbeddedPolicyEngine, kind: PolicyKind) -> None:
    """Without data.register_index (as the OPA server and the Rego unit tests run) every fact is computed
    per evaluation; the documents are the same."""
    plain = engine_with_tests([POLICIES_DIR], REGISTER)
    for inputs in REQUESTS:
        for policy_input in inputs:
            plain.set_input_json(json.dumps(policy_input.document()))
            document = plain.eval_rule(RULES[kind])
            assert Decision.parse(document, requires_obligations=kind == "exchange") == engine.decide_sync(
                kind, policy_input)


def test_the_spread_covers_every_outcome_and_reason(engine: EmbeddedPolicyEngine) -> None:
    decisions = [d for inputs in REQUESTS for d in engine.decide_many_sync("exchange", inputs)]
    assert {d.outcome for d in decisions} == {"allowed", "allowed-narrowed", "denied", "escalated"}
    codes = {r.code for d in decisions for r in d.reasons}
    assert {"never-disclosed", "category-not-supplied", "holder-not-participant", "requester-not-participant",
            "provision-not-allowed", "no-permitted-categories", "bulk-request", "outside-office-hours",
            "minors-not-allowed", "legal-basis-mismatch", "narrowed-by-escalation-decision"} <= codes
    assert any(d.hit_only for d in decisions)
    assert any(d.escalation_decision for d in decisions)


def test_inputs_that_differ_beyond_the_holder_are_batched_apart(engine: EmbeddedPolicyEngine) -> None:
    first, second = REQUESTS[0], REQUESTS[1]
    mixed = [*first, *second, first[0]]
    groups = batch_inputs(mixed)
    assert [positions for positions, _ in groups] == [
        [*range(len(first)), len(mixed) - 1], list(range(len(first), len(first) + len(second)))]
    assert all("holder" not in document["request"] for _, document in groups)
    assert engine.decide_many_sync("exchange", mixed) == [engine.decide_sync("exchange", i) for i in mixed]


@pytest.mark.parametrize("provided", [[], ["income"]])
def test_a_large_batch_is_split_and_decided(engine: EmbeddedPolicyEngine, provided: list[str]) -> None:
    """More holders than one RVM evaluation can decide within its instruction limit (a plain request and
    one taking the general path): split into several evaluations, each decision still the single one."""
    first = REQUESTS[0][0]
    request = first.request.model_copy(update={"provided_categories": provided})
    holders = [*REGISTER["organisations"], "stranger"] * 20
    inputs = [first.model_copy(update={"request": request.model_copy(update={"holder": Party(organisation=h)})})
              for h in holders]
    assert len(inputs) > 2 * MAX_HOLDERS_PER_EVALUATION
    assert len(batch_inputs(inputs)) == -(-len(inputs) // MAX_HOLDERS_PER_EVALUATION)
    singles = {h: engine.decide_sync("exchange", i) for h, i in zip(holders, inputs, strict=True)}
    assert engine.decide_many_sync("exchange", inputs) == [singles[h] for h in holders]


def test_no_inputs_no_decisions(engine: EmbeddedPolicyEngine) -> None:
    assert engine.decide_many_sync("exchange", []) == []
