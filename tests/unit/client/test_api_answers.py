"""Answers the partner client must not take as they come (httpx.MockTransport): a token answer that is not a
Bearer token with a lifetime, and pseudonyms the partner cannot open — both are the client's
``InvalidResponse``, never the pseudonym layer's errors, a TypeError or a later 401, and never quote a value."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gateway.client.api import GatewayClient, GatewayClientError, InvalidResponse, UnopenablePseudonym
from gateway.client.pseudonyms import EncryptedPseudonym, IdentifierType, RecipientKey
from gateway.pseudonyms.errors import InvalidPseudonym, WrongKey
from gateway.pseudonyms.pep import Scalar, encrypt
from tests.unit.client.test_api_retries import KEY, RESULT, Recorder

GOOD_TOKEN = {"access_token": "eyJhbGciOiJFZERTQSJ9.e30.c2ln", "token_type": "Bearer", "expires_in": 300}
BSN = "111222333"  # passes the eleven-test


def _gateway(seen: Recorder, token_answer: Any, api: Any = None) -> GatewayClient:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.paths.append(path)
        if path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": "https://gw", "token_endpoint": "https://gw/oauth/token"})
        if path == "/oauth/token":
            return httpx.Response(200, json=token_answer)
        if api is not None:
            answer: httpx.Response = api(request)
            return answer
        return httpx.Response(200, json=RESULT)
    return GatewayClient("https://gw", "sys-a", KEY, sleep=seen.sleep, transport=httpx.MockTransport(handler))


# -- the token answer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER"])
async def test_a_bearer_token_is_taken_whatever_the_case_of_its_type(token_type: str) -> None:
    seen = Recorder()
    async with _gateway(seen, {**GOOD_TOKEN, "token_type": token_type}) as client:
        assert await client.token() == GOOD_TOKEN["access_token"]
        await client.get_exchange("ex-1")
    assert seen.paths.count("/oauth/token") == 1, "the token is kept for its lifetime"


@pytest.mark.parametrize("changes", [
    {"token_type": "mac"}, {"token_type": "DPoP"}, {"token_type": None}, {"token_type": ["Bearer"]},
    {"access_token": None}, {"access_token": 42}, {"access_token": ""}, {"access_token": "a b"},
    {"access_token": "T\r\nX-Injected: 1"},
    {"expires_in": None}, {"expires_in": "300"}, {"expires_in": True}, {"expires_in": 0}, {"expires_in": -5},
    {"expires_in": [300]},
])
async def test_a_token_answer_that_is_no_bearer_token_with_a_lifetime_is_an_invalid_response(
        changes: dict[str, Any]) -> None:
    seen = Recorder()
    answer = {key: value for key, value in {**GOOD_TOKEN, **changes}.items() if value is not None}
    async with _gateway(seen, answer) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.status == 200
    assert "token answer" in str(raised.value)
    assert "/v1/exchanges/ex-1" not in seen.paths, "no call is made with what the answer gave"
    said = str(raised.value).removesuffix(f" (request {raised.value.request_id})")  # a random id may hold "300"
    for value in changes.values():
        if isinstance(value, str) and value:
            assert value not in said, "the answer's values are not quoted"


async def test_an_infinite_lifetime_is_refused() -> None:
    seen = Recorder()

    def handler(request: httpx.Request) -> httpx.Response:  # JSON readers in Python accept Infinity
        if request.url.path == "/oauth/token":
            return httpx.Response(200, content=b'{"access_token": "T", "token_type": "Bearer", '
                                               b'"expires_in": Infinity}', headers={"content-type": "application/json"})
        return httpx.Response(200, json={"issuer": "https://gw", "token_endpoint": "https://gw/oauth/token"})
    async with GatewayClient("https://gw", "sys-a", KEY, sleep=seen.sleep,
                             transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(InvalidResponse):
            await client.token()


# -- pseudonyms the partner cannot open -------------------------------------------------------------------

class FakePseudonymService:
    """The gateway's pseudonym endpoints, answering with whatever ``encrypted`` makes of the subjects."""

    def __init__(self) -> None:
        self.gateway_key = Scalar.random().times_base()
        self.recipient = RecipientKey(Scalar.random(), 1)
        self.stranger = RecipientKey(Scalar.random(), 1)  # another partner's key
        self.answers: list[Any] = []
        self.key_fetches = 0

    def for_(self, key: RecipientKey) -> str:
        message = Scalar.random().times_base()
        return EncryptedPseudonym(IdentifierType.BSN, key.version, encrypt(message, key.public_key)).encode()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/pseudonyms/key":
            return httpx.Response(200, json={"public_key": self.gateway_key.encode()})
        if request.url.path == "/v1/pseudonyms/recipient-key":
            self.key_fetches += 1
            return httpx.Response(200, json={"recipient_key": self.recipient.encode()})
        pseudonyms = self.answers.pop(0)
        if request.url.path == "/v1/enrolments":  # what the gateway's EnrolmentAnswer adds
            return httpx.Response(200, json={"pseudonyms": pseudonyms, "indexed": len(pseudonyms), "removed": 0})
        return httpx.Response(200, json={"pseudonyms": pseudonyms})


async def _own(client: GatewayClient, how: str, count: int) -> list[str]:
    if how == "own_pseudonyms":
        return await client.own_pseudonyms("riec-aa", [("bsn", BSN)] * count)
    return await client.enrol("riec-aa", [("bsn", BSN, ["t"], ["c"])] * count)


@pytest.mark.parametrize("how", ["own_pseudonyms", "enrol"])
async def test_a_pseudonym_made_for_another_key_is_the_clients_error_naming_its_index(how: str) -> None:
    seen, gateway = Recorder(), FakePseudonymService()
    mine, theirs = gateway.for_(gateway.recipient), gateway.for_(gateway.stranger)
    gateway.answers = [[mine, mine], [mine, theirs], [mine]]
    async with _gateway(seen, GOOD_TOKEN, gateway) as client:
        opened = await _own(client, how, 2)
        assert opened[0] == opened[1] == gateway.recipient.decrypt(EncryptedPseudonym.decode(mine)).encode()
        with pytest.raises(UnopenablePseudonym) as raised:
            await _own(client, how, 2)
        assert gateway.key_fetches == 2, "fetched again at once: had the gateway rotated, the new key opens it"
        await _own(client, how, 1)
    error = raised.value
    assert isinstance(error, InvalidResponse)
    assert not isinstance(error, InvalidPseudonym), "not the pseudonym layer's error"
    assert isinstance(error.__cause__, WrongKey), "which stays the pseudonym layer's own"
    assert error.index == 1
    assert "recipient key" in str(error)
    for value in (theirs, mine, theirs[7:30]):
        assert value not in str(error)
        assert value not in repr(error.problem)
    assert gateway.key_fetches == 2, "the keys fetched again are kept for the next call"


@pytest.mark.parametrize("how", ["own_pseudonyms", "enrol"])
@pytest.mark.parametrize("answer", [
    ["bsn.v1.not-a-ciphertext"], [42], [None], ["xyz.v1.AAAA"],
])
async def test_a_malformed_pseudonym_is_the_clients_error(how: str, answer: list[Any]) -> None:
    seen, gateway = Recorder(), FakePseudonymService()
    gateway.answers = [answer]
    async with _gateway(seen, GOOD_TOKEN, gateway) as client:
        with pytest.raises(UnopenablePseudonym) as raised:
            await _own(client, how, 1)
    assert raised.value.index == 0
    assert isinstance(raised.value.__cause__, InvalidPseudonym)
    assert "malformed" in str(raised.value)
    assert gateway.key_fetches == 1, "a malformed answer says nothing about the keys"


@pytest.mark.parametrize("answer", ["one of two", "three of two", "a string", {"a": 1}, None])
async def test_not_one_pseudonym_per_subject_is_an_invalid_response(answer: Any) -> None:
    seen, gateway = Recorder(), FakePseudonymService()
    counts = {"one of two": 1, "three of two": 3}
    if isinstance(answer, str) and answer in counts:
        answer = [gateway.for_(gateway.recipient)] * counts[answer]
    gateway.answers = [answer]
    async with _gateway(seen, GOOD_TOKEN, gateway) as client:
        with pytest.raises(InvalidResponse) as raised:
            await _own(client, "own_pseudonyms", 2)
    assert type(raised.value) is InvalidResponse
    assert "one per subject" in str(raised.value)


async def test_a_gateway_key_that_is_no_group_element_is_an_invalid_response() -> None:
    seen = Recorder()

    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"public_key": "not-a-key", "recipient_key": "rk.v1.x"})
    async with _gateway(seen, GOOD_TOKEN, api) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.pseudonym_client("riec-aa")
    assert isinstance(raised.value, GatewayClientError)
    assert "not-a-key" not in str(raised.value)



@pytest.mark.parametrize("how", ["own_pseudonyms", "enrol"])
async def test_concurrent_calls_on_a_fresh_client_fetch_the_partnerships_keys_once(how: str) -> None:
    """Before: each of the calls started at once fetched the gateway's key and the recipient key itself."""
    gateway = FakePseudonymService()
    gateway.answers = [[gateway.for_(gateway.recipient)] for _ in range(8)]

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # an answer takes a while: the other calls start meanwhile
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": "https://gw", "token_endpoint": "https://gw/oauth/token"})
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json=GOOD_TOKEN)
        return gateway(request)
    async with GatewayClient("https://gw", "sys-a", KEY, transport=httpx.MockTransport(handler)) as client:
        opened = await asyncio.gather(*[_own(client, how, 1) for _ in range(8)])
    assert len(opened) == 8
    assert gateway.key_fetches == 1


@pytest.mark.parametrize("how", ["own_pseudonyms", "enrol"])
async def test_a_refusal_stays_the_callers_error_when_the_second_look_at_the_keys_fails(how: str) -> None:
    """A 422 refusing the key a pseudonym was made under makes the client look at the partnership's keys again
    (they may have been rotated). When that look fails (the gateway busy), the caller must still get the 422 —
    nothing was stored — rather than a 503 that says "unknown whether it happened, try again", which would be
    sent again and refused again."""
    seen, gateway = Recorder(), FakePseudonymService()
    detail = "item 0: not a polymorphic pseudonym under the gateway's key (WrongKey)"

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path in {"/v1/pseudonyms", "/v1/enrolments"}:
            return httpx.Response(422, json={"type": "https://wgs-gateway.example/problems/pseudonym-key-unknown",
                                             "status": 422, "detail": detail})
        if request.url.path == "/v1/pseudonyms/recipient-key" and gateway.key_fetches:
            return httpx.Response(503, json={"status": 503, "title": "Service Unavailable"})
        return gateway(request)
    async with _gateway(seen, GOOD_TOKEN, api) as client:
        with pytest.raises(GatewayClientError) as raised:
            await _own(client, how, 1)
    assert raised.value.status == 422
    assert raised.value.detail == detail
    assert gateway.key_fetches == 1, "the look was made (and failed)"
    assert seen.paths.count("/v1/pseudonyms" if how == "own_pseudonyms" else "/v1/enrolments") == 1
