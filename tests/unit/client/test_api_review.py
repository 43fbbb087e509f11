"""The typed partner client on its own (httpx.MockTransport, a recorded fake sleep), for what the review of
``gateway.client`` found: a 401 gets one new token and one more try (no loop, one refresh for many calls);
back-pressure (429 with Retry-After) is waited out of ``busy_wait`` and not counted as a failure, also while a
busy first attempt is waited for; a call's ``deadline`` bounds everything; error messages carry no answer
body or refused value; lenient reading of answers from a newer gateway; TLS verification cannot be
switched off; the key never shows in a repr."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from gateway.client.api import (
    EnrolledSubject,
    GatewayBusy,
    GatewayClient,
    GatewayClientError,
    GatewayThrottled,
    GatewayUnavailable,
    InvalidResponse,
)
from gateway.client.fuzzy_requests import FilterRecordToEnrol
from gateway.client.models import ANSWER_CONTEXT, DiscoveryRequest, DiscoveryResult, ExchangeResult, Outcome
from tests.unit.client.test_api_retries import (
    KEY,
    NOW,
    REQUEST,
    RESULT,
    Recorder,
    _auth,
    _busy,
    _client,
    _request,
    _sequence,
    _throttled,
)

PERSONAL = "Jansen, Kerkstraat 12"


def _discovery() -> DiscoveryRequest:
    return DiscoveryRequest.model_validate(REQUEST)


def _target(outcome: str, **extra: Any) -> dict[str, Any]:
    return {"holder": "kvk", "system": "kvk-handelsregister", "outcome": outcome, "reasons": [],
            "permitted_categories": ["company_registration"], **extra}


# -- a 401: one new token, one more try ------------------------------------------------------------------
async def test_a_401_gets_one_new_token_and_one_more_try() -> None:
    seen = Recorder()
    api = _sequence(httpx.Response(401, json={"status": 401, "detail": "key unknown"}),
                    httpx.Response(200, json=RESULT))
    async with _client(seen, api) as client:
        result = await client.exchange(_request())
    assert result.exchange_id == "ex-1"
    assert seen.paths == ["metadata", "token", "/v1/exchanges", "token", "/v1/exchanges"]
    assert len(set(seen.keys)) == 1
    assert seen.sleeps == []


async def test_a_second_401_is_the_callers_error_not_a_loop() -> None:
    seen = Recorder()
    refused = httpx.Response(401, json={"status": 401, "title": "Unauthorized", "detail": "token rejected"})
    async with _client(seen, _sequence(refused)) as client:
        with pytest.raises(GatewayClientError) as raised:
            await client.escalation_feed()
        with pytest.raises(GatewayClientError):
            await client.escalation_feed()
    assert raised.value.status == 401
    assert seen.paths.count("token") == 1 + 2, "the first token, then one refresh per call, never more"
    assert seen.paths.count("/v1/escalations/feed") == 4


async def test_a_401_to_a_keyless_post_is_repeated_once_too() -> None:
    """Authentication refuses before anything of the call is done: even discovery may be sent again."""
    seen = Recorder()
    api = _sequence(httpx.Response(401, json={"status": 401}), httpx.Response(503, json={"status": 503}))
    async with _client(seen, api) as client:
        with pytest.raises(GatewayUnavailable):
            await client.discovery(_discovery())
    assert seen.paths.count("/v1/discovery") == 2


async def test_many_calls_refused_at_once_share_one_new_token() -> None:
    seen = Recorder()
    issued: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        if request.url.path == "/oauth/token":
            issued.append(f"T{len(issued)}")
            return httpx.Response(200, json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 300})
        answer = _auth(request, seen)
        if answer is not None:
            return answer
        if request.headers["authorization"] != f"Bearer {issued[-1]}":
            return httpx.Response(401, json={"status": 401})
        return httpx.Response(200, json=[])
    async with GatewayClient("https://gw", "sys-a", KEY, clock=lambda: NOW,
                             transport=httpx.MockTransport(handler)) as client:
        await client.escalation_feed()
        issued.append("rotated")  # the gateway no longer accepts T0
        assert await asyncio.gather(*(client.escalation_feed() for _ in range(10))) == [[]] * 10
    assert issued == ["T0", "rotated", "T2"], "one new token for the ten refused calls"


async def test_every_assertion_is_fresh_and_short_lived() -> None:
    assertions: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            form = dict(httpx.QueryParams(request.content.decode()))
            assertions.append(dict(jwt.decode(form["client_assertion"], KEY, algorithms=["Ed25519"]).claims))
            return httpx.Response(200, json={"access_token": "T", "token_type": "Bearer", "expires_in": 300})
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": "https://gw", "token_endpoint": "https://gw/oauth/token"})
        return httpx.Response(401, json={"status": 401})
    async with GatewayClient("https://gw", "sys-a", KEY, transport=httpx.MockTransport(handler)) as client:
        for _ in range(3):
            with pytest.raises(GatewayClientError):
                await client.escalation_feed()
    assert len(assertions) == 1 + 3  # the first token, one refresh per refused call
    assert len({a["jti"] for a in assertions}) == len(assertions)
    assert all(0 < a["exp"] - a["iat"] <= 60 for a in assertions)
    assert all(a["aud"] == "https://gw/oauth/token" and a["iss"] == a["sub"] == "sys-a" for a in assertions)


# -- back-pressure: waited out of busy_wait, not counted as failures ---------------------------------------
async def test_429s_while_a_busy_first_attempt_is_waited_for_do_not_spend_the_retries() -> None:
    seen = Recorder()
    api = _sequence(httpx.ReadTimeout, _busy(), _throttled("2"), _busy(), _throttled("2"), _throttled("2"),
                    _busy(), httpx.Response(200, json=RESULT))
    async with _client(seen, api, retries=1) as client:
        result = await client.exchange(_request(), idempotency_key="sys-a:key-9")
    assert result.exchange_id == "ex-1"
    assert seen.keys == ["sys-a:key-9"] * 8
    assert seen.sleeps[1:] == [1.0, 2.0, 1.0, 2.0, 2.0, 1.0]


async def test_back_pressure_ends_when_busy_wait_is_spent() -> None:
    seen = Recorder()
    api = _sequence(httpx.ReadTimeout, _busy(), _throttled("3"))
    async with _client(seen, api, busy_wait=10.0) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.exchange(_request())
    assert raised.value.status == 429, "an earlier attempt may have arrived: not 'throttled'"
    assert sum(seen.sleeps[1:]) == pytest.approx(10.0)
    assert raised.value.idempotency_key == seen.keys[0]


async def test_a_429_to_come_back_later_than_busy_wait_allows_is_raised_at_once() -> None:
    """The daily pseudonym quota answers 429 with Retry-After until midnight (hours): waiting part of that and
    asking again early only spent the call's time (four 30 s pauses by default) on refusals certain to come."""
    seen = Recorder()
    async with _client(seen, _sequence(_throttled("36000"))) as client:
        with pytest.raises(GatewayThrottled) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.retry_after == 36000.0
    assert seen.sleeps == []
    assert seen.paths.count("/v1/exchanges/ex-1") == 1


async def test_a_429_is_waited_out_as_long_as_it_asks_not_cut_short_by_max_delay() -> None:
    """``max_delay`` caps the pauses after failures; a back-pressure wait that fits ``busy_wait`` is the wait
    asked for, and the call comes back once, not early and refused again."""
    seen = Recorder()
    api = _sequence(_throttled("45"), httpx.Response(200, json=RESULT))
    async with _client(seen, api, max_delay=30.0, busy_wait=120.0) as client:
        await client.get_exchange("ex-1")
    assert seen.sleeps == [45.0]
    assert seen.paths.count("/v1/exchanges/ex-1") == 2


async def test_the_last_back_pressure_wait_is_not_cut_short_to_fit_busy_wait() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(_throttled("3")), busy_wait=7.0) as client:
        with pytest.raises(GatewayThrottled):
            await client.get_exchange("ex-1")
    assert seen.sleeps == [3.0, 3.0], "not a third of 1 s, after which the gateway's 3 s have not passed"
    assert seen.paths.count("/v1/exchanges/ex-1") == 3


async def test_a_429_without_retry_after_counts_as_a_failure() -> None:
    seen = Recorder()
    bare = httpx.Response(429, json={"status": 429, "title": "Too many requests"})
    async with _client(seen, _sequence(bare), retries=2) as client:
        with pytest.raises(GatewayThrottled):
            await client.get_exchange("ex-1")
    assert seen.paths.count("/v1/exchanges/ex-1") == 3
    assert len(seen.sleeps) == 2


async def test_a_retry_after_of_zero_still_pauses_so_waiting_ends() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(_throttled("0")), busy_wait=1.0) as client:
        with pytest.raises(GatewayThrottled):
            await client.get_exchange("ex-1")
    assert sum(seen.sleeps) == pytest.approx(1.0)
    assert 10 <= len(seen.sleeps) <= 11  # 0.1 s each (the last one may be a rounding remainder)


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "1.5", "-3", "soon"])
async def test_a_malformed_retry_after_is_ignored_not_a_crash(value: str) -> None:
    seen = Recorder()
    unavailable = httpx.Response(503, json={"status": 503}, headers={b"Retry-After": value.encode("latin-1")})
    async with _client(seen, _sequence(unavailable, httpx.Response(200, json=RESULT)), max_delay=10.0) as client:
        await client.get_exchange("ex-1")
    assert len(seen.sleeps) == 1
    assert seen.sleeps[0] <= 0.5, "backoff only"


# -- the deadline -------------------------------------------------------------------------------------------
async def test_a_wait_that_would_pass_the_deadline_is_not_begun() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(_busy()), deadline=0.5) as client:
        with pytest.raises(GatewayBusy) as raised:
            await client.exchange(_request())
    assert seen.sleeps == []
    assert raised.value.idempotency_key == seen.keys[0]


async def test_a_request_still_running_at_the_deadline_is_abandoned_with_the_key_to_resume() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        answer = _auth(request, Recorder())
        if answer is not None:
            return answer
        await asyncio.sleep(30)
        return httpx.Response(200, json=RESULT)
    started = time.monotonic()
    async with GatewayClient("https://gw", "sys-a", KEY, clock=lambda: NOW, deadline=0.3,
                             transport=httpx.MockTransport(slow)) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.exchange(_request())
        with pytest.raises(GatewayUnavailable):
            await client.discovery(_discovery())
    assert time.monotonic() - started < 5
    assert raised.value.status == 0
    assert raised.value.idempotency_key is not None
    assert "deadline" in str(raised.value)


# -- errors: typed, and nothing of the answer's content in the message --------------------------------------
async def test_a_problem_document_is_typed_with_its_members() -> None:
    seen = Recorder()
    document = {"type": "https://wgs-gateway.example/problems/validation-error", "title": "Request validation "
                "failed", "status": 422, "detail": "categories: too short"}
    async with _client(seen, _sequence(httpx.Response(422, json=document))) as client:
        with pytest.raises(GatewayClientError) as raised:
            await client.get_exchange("ex-1")
    error = raised.value
    assert (error.status, error.type, error.title, error.detail) == (422, document["type"], document["title"],
                                                                     document["detail"])
    assert str(error) == f"422: categories: too short (request {error.request_id})"
    assert error.request_id == seen.request_ids[-1], "the id the request was sent with (which the gateway logs)"


@pytest.mark.parametrize("body", [[{"loc": ["body"], "input": PERSONAL}], PERSONAL,
                                  {"detail": [{"loc": ["subjects"], "input": PERSONAL}]}])
async def test_an_error_body_that_is_no_problem_document_is_not_echoed(body: object) -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(400, json=body))) as client:
        with pytest.raises(GatewayClientError) as raised:
            await client.get_exchange("ex-1")
    assert PERSONAL not in str(raised.value)
    assert raised.value.status == 400


async def test_an_invalid_answer_names_the_field_not_its_content() -> None:
    seen = Recorder()
    record = {"record_type": "company", "subject": "subj-1", "category": "company_registration",
              "fields": {"name": PERSONAL}}  # no record_id: what a renamed field in a newer gateway looks like
    answer = RESULT | {"targets": [_target("allowed", records=[record])]}
    async with _client(seen, _sequence(httpx.Response(200, json=answer))) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.exchange(_request())
    message = f"{raised.value} {json.dumps(raised.value.problem)}"
    assert PERSONAL not in message
    assert "targets.0.records.0.record_id" in message


async def test_a_feed_that_is_not_a_list_is_an_invalid_answer_not_an_empty_feed() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(200, json={"items": [{"case": {"id": "c-1"}}]}))) as client:
        with pytest.raises(InvalidResponse):
            await client.escalation_feed()
    async with _client(seen, _sequence(httpx.Response(201, json=[{"id": "case-1"}]))) as client:
        with pytest.raises(InvalidResponse):
            await client.object_to("ex-1", "kvk", "please review")


# -- answers of a newer gateway -------------------------------------------------------------------------------
async def test_an_unknown_outcome_and_new_fields_of_a_newer_gateway_are_read() -> None:
    seen = Recorder()
    answer = RESULT | {"shard": "eu-1", "targets": [
        _target("allowed", records=[{"record_id": "r-1", "record_type": "company", "subject": "subj-1",
                                     "category": "company_registration", "fields": {}, "lineage": "x"}]),
        _target("deferred-to-court", holder="politie", permitted_categories=[], ttl=3)]}
    async with _client(seen, _sequence(httpx.Response(200, json=answer))) as client:
        result = await client.exchange(_request())
    allowed, newer = result.targets
    assert allowed.outcome is Outcome.ALLOWED
    assert allowed.outcome.known
    assert len(allowed.records) == 1
    assert not newer.outcome.known
    assert newer.outcome.value == "deferred-to-court"
    assert newer.outcome not in set(Outcome), "none of the outcomes this version acts on"
    assert result.model_dump(mode="json")["targets"][1]["outcome"] == "deferred-to-court"


async def test_records_withheld_is_typed_and_a_reason_of_a_newer_gateway_is_kept_as_sent() -> None:
    """The marker of a replayed target without its records: a reason this version knows, one a newer gateway
    added (kept: the records are not there either way), and none."""
    seen = Recorder()
    answer = RESULT | {"targets": [_target("allowed", records_withheld="expired"),
                                   _target("allowed", holder="politie", records_withheld="purged-by-order"),
                                   _target("allowed", holder="fiod")]}
    async with _client(seen, _sequence(httpx.Response(200, json=answer))) as client:
        result = await client.exchange(_request())
    assert [t.records_withheld for t in result.targets] == ["expired", "purged-by-order", None]
    with pytest.raises(ValueError, match="records_withheld"):
        ExchangeResult.model_validate(answer)  # the gateway's own models still refuse it
    with pytest.raises(ValueError, match="records_withheld"):  # and no free text is taken for a reason
        ExchangeResult.model_validate(RESULT | {"targets": [_target("allowed", records_withheld="Jan Jansen")]},
                                      context=ANSWER_CONTEXT)


async def test_an_unknown_discovery_outcome_is_kept_as_sent() -> None:
    seen = Recorder()
    answer = {"discovery_id": "d-1", "partnership": "riec-aa", "purpose": "bibob-check", "policy_version": "1",
              "register_version": "1", "receipt": {"exchange_id": "d-1"}, "cursor": None,
              "targets": [{"holder": "kvk", "outcome": "hit"}, {"holder": "om", "outcome": "hit-pending"}]}
    async with _client(seen, _sequence(httpx.Response(200, json=answer))) as client:
        result = await client.discovery(_discovery())
    assert [t.outcome for t in result.targets] == ["hit", "hit-pending"]
    with pytest.raises(ValueError, match="outcome"):
        DiscoveryResult.model_validate(answer)  # the gateway's own models still refuse it


async def test_an_outcome_that_is_no_slug_is_still_refused() -> None:
    seen = Recorder()
    answer = RESULT | {"targets": [_target("<script>")]}
    async with _client(seen, _sequence(httpx.Response(200, json=answer))) as client:
        with pytest.raises(InvalidResponse):
            await client.exchange(_request())


def test_the_gateway_itself_cannot_produce_an_unknown_outcome() -> None:
    """Leniency is the client's reading of answers only: without its context the model refuses."""
    with pytest.raises(ValueError, match="outcome"):
        ExchangeResult.model_validate(RESULT | {"targets": [_target("deferred")]})


# -- TLS and secrets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("weaken", ["verify_mode", "check_hostname"])
def test_an_ssl_context_that_does_not_verify_is_refused(weaken: str) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    if weaken == "verify_mode":
        context.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verified"):
        GatewayClient("https://gw", "sys-a", KEY, ssl_context=context)


def test_ca_file_and_ssl_context_together_are_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="not both"):
        GatewayClient("https://gw", "sys-a", KEY, ca_file=tmp_path / "ca.pem", ssl_context=ssl.create_default_context())


def test_a_missing_ca_file_fails_at_once() -> None:
    with pytest.raises(FileNotFoundError):
        GatewayClient("https://gw", "sys-a", KEY, ca_file="/nonexistent/ca.pem")


async def test_the_private_key_is_in_no_repr() -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "k9"})
    private = key.as_dict(private=True)["d"]
    assert isinstance(private, str)
    async with GatewayClient("https://gw", "sys-a", key) as client:
        assert private not in repr(client)
        assert private not in str(client)
        assert "sys-a" in repr(client)


@pytest.mark.parametrize(("key", "why"), [
    (OKPKey.import_key(KEY.as_dict(private=False)), "the public half"),  # what was registered, not what signs
    (OKPKey.generate_key("X25519"), "a key-agreement curve"),
    (ECKey.generate_key("P-384"), "another curve than P-256"),
])
def test_a_key_that_cannot_sign_the_assertion_is_refused_when_the_client_is_made(key: OKPKey | ECKey,
                                                                                 why: str) -> None:
    """Refused at construction, with a ValueError naming no key material — not at the first call, as the JOSE
    library's own error (no GatewayClientError, shared by every call waiting for the token), after the
    partner system had started and taken work."""
    with pytest.raises(ValueError, match="private half of an Ed25519 or P-256 key") as refused:
        GatewayClient("https://gw", "sys-a", key)
    for value in key.as_dict(private=key.is_private).values():
        if isinstance(value, str) and len(value) > 16:
            assert value not in str(refused.value), why


def test_the_private_half_of_an_ed25519_or_p256_key_is_taken() -> None:
    assert GatewayClient("https://gw", "sys-a", OKPKey.generate_key("Ed25519"))._alg == "Ed25519"
    assert GatewayClient("https://gw", "sys-a", ECKey.generate_key("P-256"))._alg == "ES256"


def test_what_a_partner_enrols_shows_no_identifier_or_record_in_its_repr() -> None:
    """The tuples a partner fills from its own files name subjects by BSN and records by name; their repr (a
    debug line, an error tracker's frame locals) shows neither."""
    subject = EnrolledSubject("bsn", "123456782", ["tax-debt"], ["tax_debts"], minor=True)
    record = FilterRecordToEnrol("dossier/2026/00417", {"surname": "Jansen", "date_of_birth": "19700101"},
                                 ["police_incidents"])
    assert "123456782" not in repr(subject)
    assert "minor=True" in repr(subject)
    assert not any(value in repr(record) for value in ("Jansen", "19700101"))
    assert "dossier/2026/00417" in repr(record)
    assert subject.number == "123456782"
    assert record.fields["surname"] == "Jansen"
