"""Follow-ups of the partner client's review (httpx.MockTransport, a recorded fake sleep): a closed client is a
typed error that keeps an exchange's key; a replayed exchange and ``enrol``'s counts are visible; a per-subject
fuzzy answer a newer gateway added is kept, not fatal; only a 422 about the keys makes the client fetch them
again; a 5xx's Retry-After is honoured up to the call's deadline."""

from __future__ import annotations

import pickle
from typing import Any

import httpx
import pytest

from gateway.client.api import ClientClosed, Enrolled, GatewayClientError, GatewayUnavailable
from gateway.client.fuzzy import SubjectMatch
from gateway.client.fuzzy_requests import fuzzy_request
from tests.unit.client.test_api_answers import GOOD_TOKEN, FakePseudonymService, _gateway, _own
from tests.unit.client.test_api_retries import RESULT, Recorder, _client, _request, _sequence
from tests.unit.client.test_fuzzy_long_names import BIBOB, SECRET

PROBLEMS = "https://wgs-gateway.example/problems/"


# -- (a) a closed client ------------------------------------------------------------------------------------
async def test_a_call_on_a_closed_client_is_a_typed_error() -> None:
    seen = Recorder()
    client = _client(seen, _sequence(httpx.Response(200, json=RESULT)))
    await client.aclose()
    with pytest.raises(ClientClosed) as raised:
        await client.get_exchange("ex-1")
    assert isinstance(raised.value, GatewayClientError)
    assert raised.value.status == 0
    assert "closed" in str(raised.value)
    with pytest.raises(ClientClosed):
        await client.token()
    assert seen.paths == []
    assert isinstance(pickle.loads(pickle.dumps(raised.value)), ClientClosed)


async def test_an_exchange_retry_that_meets_the_closed_client_keeps_its_key() -> None:
    """The first attempt timed out (it may have reached the gateway); the client was closed during the pause
    before the retry: the caller must get the key to resume with, on a new client — not httpx's RuntimeError."""
    seen = Recorder()
    client = _client(seen, _sequence(httpx.ReadTimeout))

    async def close_while_pausing(_seconds: float) -> None:
        await client.aclose()
    client._sleep = close_while_pausing
    with pytest.raises(ClientClosed) as raised:
        await client.exchange(_request())
    assert seen.keys == [raised.value.idempotency_key]
    assert raised.value.idempotency_key is not None


# -- (b) what the answers say beside their body ---------------------------------------------------------------
@pytest.mark.parametrize(("headers", "replayed"), [({"Idempotent-Replayed": "true"}, True), ({}, False)])
async def test_an_exchange_result_says_whether_it_was_replayed(headers: dict[str, str], replayed: bool) -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(200, json=RESULT, headers=headers))) as client:
        result = await client.exchange(_request(), idempotency_key="sys-a:replayed-1")
        assert result.replayed is replayed
        assert (await client.get_exchange(result.exchange_id)).replayed is False
    assert "replayed" not in result.model_dump()  # not a field of the shared contract


async def test_enrol_gives_the_gateways_counts_with_the_pseudonyms() -> None:
    seen, gateway = Recorder(), FakePseudonymService()
    mine = gateway.for_(gateway.recipient)

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/enrolments":
            return httpx.Response(200, json={"pseudonyms": [mine, mine], "indexed": 1, "removed": 1})
        return gateway(request)
    async with _gateway(seen, GOOD_TOKEN, api) as client:
        enrolled = await client.enrol("riec-aa", [("bsn", "111222333", ["t"], ["c"]), ("bsn", "111222333", [], [])])
    assert isinstance(enrolled, Enrolled)
    assert isinstance(enrolled, list)
    assert len(enrolled) == 2
    assert (enrolled.indexed, enrolled.removed) == (1, 1)


# -- (c) a per-subject fuzzy answer of a newer gateway --------------------------------------------------------
async def test_a_per_subject_value_a_newer_gateway_added_is_kept_as_unknown() -> None:
    request = fuzzy_request(secret=SECRET, subjects=[{"given_name": "michaela", "surname": "neumann"},
                                                     {"given_name": "pieter", "surname": "jansen"}], **BIBOB)
    answer = {"discovery_id": "d-1", "partnership": "riec-x", "purpose": "bibob-integrity-check",
              "record_type": "person", "policy_version": "p", "register_version": "r",
              "receipt": {"exchange_id": "d-1"},
              "targets": [{"holder": "kvk", "outcome": "hit", "subjects": ["hit", "maybe-hit"],
                           "match_handles": ["match:" + "a" * 43, None]}]}
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(200, json=answer))) as client:
        result = await client.fuzzy_discovery(request)
    hit, newer = result.targets[0].subjects
    assert hit is SubjectMatch.HIT
    assert isinstance(newer, SubjectMatch)
    assert not newer.known
    assert newer.value == "maybe-hit"
    assert newer not in (SubjectMatch.HIT, SubjectMatch.NO_HIT)
    assert pickle.loads(pickle.dumps(newer)).value == "maybe-hit"
    assert result.targets[0].handles() == ["match:" + "a" * 43]


# -- (d) only a 422 about the keys fetches them again ---------------------------------------------------------
async def _refused_with(how: str, problem: dict[str, Any]) -> tuple[GatewayClientError, FakePseudonymService, Recorder]:
    """Own one pseudonym (``how``) against a gateway that answers the call with ``problem``."""
    seen, gateway = Recorder(), FakePseudonymService()

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path in {"/v1/pseudonyms", "/v1/enrolments"}:
            return httpx.Response(422, json=problem)
        return gateway(request)
    async with _gateway(seen, GOOD_TOKEN, api) as client:
        with pytest.raises(GatewayClientError) as raised:
            await _own(client, how, 1)
    return raised.value, gateway, seen


@pytest.mark.parametrize("how", ["own_pseudonyms", "enrol"])
@pytest.mark.parametrize("problem", [
    {"type": PROBLEMS + "validation-error", "status": 422, "detail": "subjects.0.categories: too short"},
    {"type": PROBLEMS + "unprocessable", "status": 422,
     "detail": "item 0: categories the register does not know: c"},
])
async def test_a_422_about_something_else_fetches_no_keys(how: str, problem: dict[str, Any]) -> None:
    refused, gateway, seen = await _refused_with(how, problem)
    assert refused.status == 422
    assert gateway.key_fetches == 1, "the keys fetched for the call, and no second look"
    assert seen.paths.count("/v1/pseudonyms/key") == 1


@pytest.mark.parametrize("how", ["own_pseudonyms", "enrol"])
@pytest.mark.parametrize("problem", [
    {"type": PROBLEMS + "pseudonym-key-unknown", "status": 422,
     "detail": "item 0: not a polymorphic pseudonym under the gateway's key (WrongKey)"},
    {"type": PROBLEMS + "unprocessable", "status": 422,  # a gateway from before the type of its own
     "detail": "item 0: not a polymorphic pseudonym under the gateway's key (WrongKey)"},
])
async def test_a_422_about_the_key_fetches_the_keys_again(how: str, problem: dict[str, Any]) -> None:
    refused, gateway, _ = await _refused_with(how, problem)
    assert refused.status == 422  # the keys did not change: the refusal is the caller's
    assert gateway.key_fetches == 2


# -- (e) a 5xx's Retry-After, up to the deadline --------------------------------------------------------------
async def test_a_5xx_retry_after_longer_than_max_delay_is_honoured_within_the_deadline() -> None:
    seen = Recorder()
    unavailable = httpx.Response(503, json={"status": 503}, headers={"Retry-After": "60"})
    async with _client(seen, _sequence(unavailable), max_delay=10.0) as client:
        with pytest.raises(GatewayUnavailable):
            await client.get_exchange("ex-1")
    assert seen.sleeps == [60.0, 60.0], "asked again when the gateway said, not after max_delay"


async def test_a_5xx_retry_after_past_the_deadline_is_raised_at_once() -> None:
    seen = Recorder()
    unavailable = httpx.Response(503, json={"status": 503}, headers={"Retry-After": "3600"})
    async with _client(seen, _sequence(unavailable), max_delay=10.0, deadline=180.0) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1")
    assert seen.sleeps == []
    assert raised.value.retry_after == 3600
    assert seen.paths == ["metadata", "token", "/v1/exchanges/ex-1"]
