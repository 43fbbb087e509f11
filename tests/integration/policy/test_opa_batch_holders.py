"""A batch of decisions (``decide_many``: one request naming several holders) is matched to its holders
by position, so every decision names the holder it is for and the gateway refuses one for another (a
review finding): an OPA server (or a proxy in front of it) that answers a batch reordered, or with one
holder's decision twice, must give a denial, not one holder's permissions applied to another. Over real
HTTP, against the OPA-REST-compatible test server with the shipped policies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.policy.engine import EmbeddedPolicyEngine, OpaServerPolicyEngine
from gateway.policy.errors import MalformedDecision
from gateway.policy.model import PolicyKind
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_decision_table import MUNICIPALITY, REGISTER, S1, _input
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app

# One request to two holders that may disclose different categories of it (police incidents, convictions):
# either's decision, given to the other, is a valid answer to the same request in every other respect.
INPUTS = [_input(MUNICIPALITY, "politie", S1), _input(MUNICIPALITY, "om-amsterdam", S1)]
KINDS: tuple[PolicyKind, ...] = ("exchange", "discovery")

REARRANGEMENTS: dict[str, Callable[[list[Any]], list[Any]]] = {
    "reversed": lambda decisions: decisions[::-1],
    "first-twice": lambda decisions: [decisions[0]] * len(decisions),
    "last-twice": lambda decisions: [decisions[-1]] * len(decisions),
}


@pytest.mark.parametrize("kind", KINDS)
async def test_each_decision_names_its_holder_and_a_faithful_batch_is_accepted(kind: PolicyKind) -> None:
    expected = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER))
    with serve_app(create_opa_test_app(POLICIES_DIR, Behaviour(rearrange_batches=lambda d: list(d)))) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        try:
            wanted = await expected.decide_many(kind, INPUTS)
            assert [d.holder for d in wanted] == ["politie", "om-amsterdam"]
            assert await engine.decide_many(kind, INPUTS) == wanted
            assert (await engine.decide(kind, INPUTS[1])).holder == "om-amsterdam"
            # the two decisions differ: one given to the other holder would change what is asked of it
            assert wanted[0].permitted_categories != wanted[1].permitted_categories
        finally:
            await engine.aclose()
            await expected.aclose()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rearrange", REARRANGEMENTS.values(), ids=REARRANGEMENTS.keys())
async def test_a_batch_answered_out_of_order_gives_no_decision(kind: PolicyKind,
                                                               rearrange: Callable[[list[Any]], list[Any]]) -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR, Behaviour(rearrange_batches=rearrange))) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        try:
            with pytest.raises(MalformedDecision, match="another holder"):
                await engine.decide_many(kind, INPUTS)
            # a batch of one cannot be reordered: still decided
            assert (await engine.decide_many(kind, INPUTS[:1]))[0].holder == "politie"
        finally:
            await engine.aclose()
