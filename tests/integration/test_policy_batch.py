"""decide_many over the OPA-server client (real HTTP, the OPA-REST-compatible test server): one query of
the ``decisions`` rule per request, the same decisions as one query per target, and as the embedded engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.policy.engine import EmbeddedPolicyEngine, OpaServerPolicyEngine
from gateway.policy.errors import MalformedDecision
from gateway.policy.model import PolicyKind
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app
from tests.unit.policy.test_policy_batch import REGISTER, requests

REQUESTS = requests(seed=11, count=25)


@pytest.fixture(scope="module")
def opa_url() -> Iterator[str]:
    with serve_app(create_opa_test_app(POLICIES_DIR)) as url:
        yield url


@pytest.mark.parametrize("kind", ["exchange", "discovery"])
async def test_opa_server_batches_equal_single_queries_and_the_embedded_engine(opa_url: str,
                                                                                kind: PolicyKind) -> None:
    opa = OpaServerPolicyEngine(opa_url, REGISTER, register_digest(REGISTER), timeout=5.0)
    embedded = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER))
    try:
        for inputs in REQUESTS:
            batched = await opa.decide_many(kind, inputs)
            assert batched == [await opa.decide(kind, i) for i in inputs]
            assert batched == await embedded.decide_many(kind, inputs)
        assert await opa.decide_many(kind, []) == []
    finally:
        await opa.aclose()
        await embedded.aclose()


async def test_a_malformed_batch_is_refused() -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR, Behaviour(malformed=True))) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=2.0)
        with pytest.raises(MalformedDecision):
            await engine.decide_many("exchange", REQUESTS[0])
        await engine.aclose()
