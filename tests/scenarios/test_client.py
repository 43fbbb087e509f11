"""The typed partner client against the running stack: tokens by private_key_jwt, typed outcomes,
idempotent retries, problem documents as errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.client.api import GatewayClient, GatewayClientError
from gateway.client.models import ExchangeRequest, Outcome
from tests.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("client")) as running:
        yield running


def _request(stack: Stack, **extra: object) -> ExchangeRequest:
    return ExchangeRequest.model_validate({
        "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-300",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-300"},
        "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}], "holders": ["kvk"],
        "categories": ["company_registration"], **extra})


async def test_client_exchanges_and_replays_with_the_same_key(stack: Stack) -> None:
    keys = stack.clients["gemeente-amsterdam-vth"]
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                             clock=lambda: stack.clock.now().timestamp()) as client:
        first = await client.exchange(_request(stack), idempotency_key="client-test-key-1")
        again = await client.exchange(_request(stack), idempotency_key="client-test-key-1")
        seen = await client.get_exchange(first.exchange_id)
    assert first.targets[0].outcome is Outcome.ALLOWED
    assert first.targets[0].records
    assert again == first
    assert seen.exchange_id == first.exchange_id
    assert seen.targets[0].records == []


async def test_client_raises_the_problem_document(stack: Stack) -> None:
    keys = stack.clients["gemeente-amsterdam-vth"]
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                             clock=lambda: stack.clock.now().timestamp()) as client:
        with pytest.raises(GatewayClientError) as refused:
            await client.exchange(_request(stack, partnership="riec-utrecht"))
    assert refused.value.status == 422
    assert "unknown partnership" in str(refused.value.problem["detail"])
