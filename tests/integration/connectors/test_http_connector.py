"""The HTTP connector against real simulated partners over loopback HTTP: answers, refusals, discovery,
authentication, and every way a holder can fail (down, slow, flaky, malformed)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from joserfc import jwt
from joserfc.jwk import OKPKey
from structlog.testing import capture_logs

from connectors import holder_auth
from connectors import world as w
from connectors.holder_auth import JwksSource
from connectors.http_connector import MAX_DISCOVERY_ANSWER_BYTES, ConnectorRegistry, HttpConnector
from connectors.protocol import (
    MAX_ANSWER_RECORDS,
    MAX_ANSWER_VALUES,
    ConnectorError,
    HolderAnswerMismatch,
    HolderDiscovery,
    HolderProtocolError,
    HolderQuery,
    HolderRecord,
    HolderRejectedRequest,
    HolderUnavailable,
)
from connectors.simulator import create_partner_app
from connectors.store import PartnerStore, store_path
from connectors.world import World, build_world
from tests.partner_servers import partner_servers, partner_servers_fixture
from tests.servers import serve_app
from tests.tls_certificates import private_ca_certificates

GATEWAY_KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-1"})
JWKS = {"keys": [GATEWAY_KEY.as_dict(private=False)]}


def _sign(claims: dict[str, Any], key: OKPKey = GATEWAY_KEY) -> str:
    return jwt.encode({"alg": "Ed25519", "kid": key.kid}, claims, key, algorithms=["Ed25519"])


def _with_header(token: str, header: dict[str, Any]) -> str:
    """``token`` with its header replaced (its signature no longer verifies: what anyone can send)."""
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([encoded, *token.split(".")[1:]])


async def gateway_token(audience: str) -> str:
    now = int(time.time())
    return _sign({"iss": "test-gateway", "aud": audience, "iat": now, "exp": now + 60})


partners = partner_servers_fixture([w.POLICE, w.KVK, w.FIOD], scope="module", jwks=JWKS)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2025)


def _query(subjects: list[str], categories: list[str], request_id: str | None = "req-1",
           provided: list[HolderRecord] | None = None) -> HolderQuery:
    return HolderQuery(request_id=request_id, partnership="riec-amsterdam-amstelland",
                       purpose="bibob-integrity-check", requester_organisation="gemeente-amsterdam",
                       categories=categories, subjects=subjects, provided=provided or [])


def _discovery(subjects: list[str], request_id: str = "d-1") -> HolderDiscovery:
    return HolderDiscovery(request_id=request_id, partnership="riec-amsterdam-amstelland",
                           purpose="bibob-integrity-check", subjects=subjects)


# -- answers ---------------------------------------------------------------------------------------
async def test_query_returns_only_the_asked_categories(partners: dict[str, str], world: World) -> None:
    director = world.scenarios()[w.BIBOB_APPLICANT][1]
    async with HttpConnector(w.POLICE, partners[w.POLICE], gateway_token) as connector:
        answer = await connector.query(_query([director], ["police_incidents"], "q-only"))
    assert answer.status == "answered"
    assert len(answer.records) == 2
    assert {r.category for r in answer.records} == {"police_incidents"}  # the CIE note exists but was not asked
    assert all(r.subject == director for r in answer.records)


async def test_police_refuses_for_the_s9_subject(partners: dict[str, str], world: World) -> None:
    async with HttpConnector(w.POLICE, partners[w.POLICE], gateway_token) as connector:
        answer = await connector.query(_query(world.scenarios()[w.POLICE_CONFIDENTIAL], ["police_incidents"],
                                              "q-refuse"))
    assert answer.status == "refused"
    assert answer.refusal_reason == "investigation-confidentiality"
    assert answer.records == []


async def test_discover_is_hit_no_hit_only(partners: dict[str, str], world: World) -> None:
    company, nobody = world.scenarios()[w.BIBOB_APPLICANT][0], world.scenarios()[w.NO_RECORDS][0]
    async with HttpConnector(w.FIOD, partners[w.FIOD], gateway_token) as connector:
        answer = await connector.discover(_discovery([company, nobody]))
    assert answer.hits == {company: ["investigation"]}


@pytest.mark.parametrize("categories", [["police_incidents"], ["criminal_intelligence"], []])
async def test_discovery_about_a_confidential_subject_is_refused_whatever_is_held(
        partners: dict[str, str], world: World, categories: list[str]) -> None:
    """Found by a review: the police answered discovery with a hit for the subject they keep confidential.
    Now they refuse, for all subjects asked, and the same whether they hold records on it in the asked
    categories (incidents), hold none there (criminal intelligence) or are asked about any: the refusal is
    neither a hit nor a no-hit, so it cannot be read as one."""
    secret, director = world.scenarios()[w.POLICE_CONFIDENTIAL][0], world.scenarios()[w.BIBOB_APPLICANT][1]
    async with HttpConnector(w.POLICE, partners[w.POLICE], gateway_token) as connector:
        assert (await connector.discover(_discovery([director]))).hits  # a hit on its own ...
        answer = await connector.discover(_discovery([director, secret]).model_copy(
            update={"categories": categories}))
    assert answer.status == "refused"
    assert answer.refusal_reason == "investigation-confidentiality"
    assert answer.hits == {}  # ... withheld beside the refused subject


async def test_discovery_about_a_minor_is_refused_unless_the_purpose_allows_minors(
        partners: dict[str, str], world: World) -> None:
    minor = world.scenarios()[w.MINOR]
    async with HttpConnector(w.POLICE, partners[w.POLICE], gateway_token) as connector:
        refused = await connector.discover(_discovery(minor))
        allowed = await connector.discover(_discovery(minor).model_copy(update={"minors_allowed": True}))
    assert (refused.status, refused.refusal_reason, refused.hits) == ("refused", "minor-not-allowed", {})
    assert allowed.status == "answered"
    assert set(allowed.hits) == set(minor)


async def test_a_retried_query_discloses_and_takes_in_once(partners: dict[str, str], world: World,
                                                           tmp_path: Path) -> None:
    company = world.scenarios()[w.MALAFIDE_DISSOLUTION][0]
    grounds = HolderRecord(record_id="p-1", record_type="provided", subject=company, category="tax_compliance",
                           fields={"dissolution_grounds": "BW 2:19a"})
    query = _query([company], ["company_registration"], "q-twice", [grounds])
    async with HttpConnector(w.KVK, partners[w.KVK], gateway_token) as connector:
        first = await connector.query(query)
        second = await connector.query(query)
        with pytest.raises(HolderRejectedRequest, match="refused the call with 409") as reused:
            await connector.query(_query([company], ["directorships"], "q-twice"))
    assert first == second
    assert first.received == 1
    assert reused.value.status == 409


def _provided(subject: str) -> HolderRecord:
    return HolderRecord(record_id="p-1", record_type="provided", subject=subject, category="tax_compliance",
                        fields={"dissolution_grounds": "BW 2:19a"})


@pytest.mark.parametrize(("scenario", "reason"), [(w.POLICE_CONFIDENTIAL, "investigation-confidentiality"),
                                                  (w.MINOR, "minor-not-allowed")])
async def test_a_holder_that_refuses_keeps_nothing_it_was_provided(tmp_path: Path, world: World, scenario: str,
                                                                   reason: str) -> None:
    """Found by a review: the holder took provided records in before its refusal checks, so a holder that
    then refused to deal with the subject (confidential, or a minor the purpose does not allow) kept them."""
    subject = world.scenarios()[scenario][0]
    with partner_servers(tmp_path, [w.POLICE], jwks=JWKS) as urls:
        async with HttpConnector(w.POLICE, urls[w.POLICE], gateway_token) as connector:
            answer = await connector.query(_query([subject], ["police_incidents"], "q-refused", [_provided(subject)]))
        store = PartnerStore(store_path(tmp_path, w.POLICE))
        try:
            kept = store.received(subject)
        finally:
            store.close()
    assert (answer.status, answer.refusal_reason, answer.received) == ("refused", reason, 0)
    assert kept == []


async def test_a_retry_after_a_holder_failure_takes_provided_records_in_once(
        tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the holder failed after taking the provided records in (a 500), the gateway retried
    the same request id — safe, as the holder deduplicates — but a failed attempt is forgotten by the replay
    memory, so the retry took them in a second time. Intake is now idempotent per request id."""
    company = world.scenarios()[w.MALAFIDE_DISSOLUTION][0]
    reads = PartnerStore.records
    failures = [RuntimeError("disk hiccup")]

    def failing_once(self: PartnerStore, subjects: list[str], categories: list[str] | None = None) -> Any:
        if failures:
            raise failures.pop()
        return reads(self, subjects, categories)

    with partner_servers(tmp_path, [w.KVK], jwks=JWKS) as urls:
        monkeypatch.setattr(PartnerStore, "records", failing_once)
        async with HttpConnector(w.KVK, urls[w.KVK], gateway_token, retries=1, backoff=0.01) as connector:
            answer = await connector.query(_query([company], ["company_registration"], "q-retried",
                                                  [_provided(company)]))
            assert connector.attempts == 2  # the first attempt failed with a 500 after the intake
        monkeypatch.undo()
        store = PartnerStore(store_path(tmp_path, w.KVK))
        try:
            kept = store.received(company)
        finally:
            store.close()
    assert answer.status == "answered"
    assert answer.received == 1
    assert kept == [("tax_compliance", {"dissolution_grounds": "BW 2:19a"})]


async def test_a_request_id_still_being_answered_is_not_forgotten_however_many_follow(
        tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the replay memory (capped) dropped its oldest request id even while that request was
    still being answered; a replay of it — within the token's lifetime — was then answered afresh, a second
    disclosure. With room for two ids, a slow request overtaken by three others is still answered once:
    a replay arriving while it is answered waits for its answer, and one arriving afterwards gets it too."""
    slow_subject, other = world.scenarios()[w.BIBOB_APPLICANT][0], world.scenarios()[w.MALAFIDE_DISSOLUTION][0]
    reads = PartnerStore.records
    computed: list[str] = []
    release = threading.Event()

    def slow_for_one(self: PartnerStore, subjects: list[str], categories: list[str] | None = None) -> Any:
        if slow_subject in subjects:
            computed.append(slow_subject)
            release.wait(10)
        return reads(self, subjects, categories)

    monkeypatch.setattr(PartnerStore, "records", slow_for_one)
    app = create_partner_app(w.KVK, tmp_path, jwks=JwksSource(jwks=JWKS), world=world, replay_ids=2)
    with serve_app(app) as url:
        async with HttpConnector(w.KVK, url, gateway_token, retries=0, timeout=15) as connector:
            slow = _query([slow_subject], ["company_registration"], "q-slow")
            first = asyncio.create_task(connector.query(slow))
            while not computed:
                await asyncio.sleep(0.01)
            for n in range(3):  # the slow request is now the oldest id of more than the memory holds
                await connector.query(_query([other], ["company_registration"], f"q-after-{n}"))
            replay_meanwhile = asyncio.create_task(connector.query(slow))
            await asyncio.sleep(0.3)  # let it reach the holder while the first is still being answered
            release.set()
            answers = [await first, await replay_meanwhile, await connector.query(slow)]
    assert computed == [slow_subject]  # answered once
    assert answers[0].records
    assert answers[1:] == answers[:1] * 2


async def test_the_registry_is_built_from_endpoints(partners: dict[str, str], world: World) -> None:
    registry = ConnectorRegistry(partners, gateway_token, timeout=2.0, retries=1)
    try:
        assert registry.systems() == sorted(partners)
        assert w.POLICE in registry
        assert registry.get("rabobank-fec") is None
        await registry[w.KVK].health()
        answer = await registry[w.KVK].query(_query(world.scenarios()[w.BIBOB_APPLICANT][:1],
                                                    ["company_registration"], "q-registry"))
        assert [r.record_type for r in answer.records] == ["registration"]
    finally:
        await registry.aclose()


async def test_a_holder_keeping_calls_open_does_not_delay_the_calls_to_another() -> None:
    """Found by a review: every holder's calls came out of one pool of 128 connections, so a holder that kept
    them open (slow, or a tarpit) took the pool, and the calls to every other holder waited for a connection
    until they timed out — healthy holders unavailable. Each holder now has a pool of its own."""
    release = threading.Event()
    held: list[int] = []
    slow, fast = FastAPI(), FastAPI()

    @slow.post("/holder/v1/discover")
    async def keep_open() -> dict[str, Any]:
        held.append(1)
        for _ in range(3000):  # until released (30 s at most)
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        return {"hits": {}}

    @fast.post("/holder/v1/discover")
    async def answer() -> dict[str, Any]:
        return {"hits": {}}

    with serve_app(slow) as slow_url, serve_app(fast) as fast_url:
        registry = ConnectorRegistry({w.FIOD: slow_url, w.KVK: fast_url}, gateway_token, timeout=30, retries=0)
        kept = [asyncio.create_task(registry[w.FIOD].discover(_discovery(["s-1"], f"d-held-{n}"))) for n in range(150)]
        try:
            for _ in range(2000):  # until the slow holder holds a pool's worth (every slot is taken by then)
                if len(held) >= 64:
                    break
                await asyncio.sleep(0.01)
            assert len(held) >= 64
            async with asyncio.timeout(5):  # unbounded before: it waited for a connection the slow holder held
                assert (await registry[w.KVK].discover(_discovery(["s-1"], "d-fast"))).hits == {}
        finally:
            release.set()
            await asyncio.gather(*kept, return_exceptions=True)
            await registry.aclose()


async def test_a_pseudonym_is_resolved_only_in_its_own_partnership(tmp_path: Path, world: World) -> None:
    """Found by a review: the holder looked an asked pseudonym up in every partnership it had enrolled in, so
    a query in one partnership was answered for a pseudonym of another — linking the two domains, which
    per-partnership pseudonyms exist to prevent. Now a foreign pseudonym is unknown: nothing held."""
    company = world.scenarios()[w.BIBOB_APPLICANT][0]
    pseudonym = "kvk.v1." + "A" * 43
    with partner_servers(tmp_path, [w.KVK], jwks=JWKS) as urls:
        store = PartnerStore(store_path(tmp_path, w.KVK))
        store.remember_pseudonyms("riec-amsterdam-amstelland", [(pseudonym, company)])
        store.close()
        async with HttpConnector(w.KVK, urls[w.KVK], gateway_token) as connector:
            own = await connector.query(_query([pseudonym], ["company_registration"], "q-own"))
            other = _query([pseudonym], ["company_registration"], "q-other").model_copy(
                update={"partnership": "zvh-amsterdam"})
            foreign = await connector.query(other)
            found = await connector.discover(_discovery([pseudonym], "d-other").model_copy(
                update={"partnership": "zvh-amsterdam"}))
    assert [r.subject for r in own.records] == [pseudonym]
    assert foreign.status == "answered"
    assert foreign.records == []
    assert found.hits == {}


# -- authentication --------------------------------------------------------------------------------
async def test_a_request_without_a_token_is_401_problem_json(partners: dict[str, str], world: World) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{partners[w.POLICE]}/holder/v1/query",
                                     json=_query(world.scenarios()[w.MINOR], ["police_incidents"]).model_dump())
        health = await client.get(f"{partners[w.POLICE]}/health")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"] == "a gateway bearer token is required"
    assert health.status_code == 200  # liveness needs no token


@pytest.mark.parametrize("token", [
    pytest.param(lambda aud: _sign({"aud": aud, "exp": int(time.time()) + 60},
                                   OKPKey.generate_key("Ed25519", parameters={"kid": "gw-1"})), id="forged"),
    pytest.param(lambda aud: _sign({"aud": aud, "exp": int(time.time()) + 60},
                                   OKPKey.generate_key("Ed25519", parameters={"kid": "other"})), id="unknown-kid"),
    pytest.param(lambda _aud: _sign({"aud": w.KVK, "exp": int(time.time()) + 60}), id="other-audience"),
    # a list naming this holder among others: a token meant for several audiences is no call from the gateway,
    # which names one holder per token (it never issues such lists; the check no longer takes one)
    pytest.param(lambda aud: _sign({"aud": [aud, "wgs-gateway"], "exp": int(time.time()) + 60}),
                 id="audience-list"),
    pytest.param(lambda aud: _sign({"aud": aud, "exp": int(time.time()) - 120}), id="expired"),
    pytest.param(lambda aud: _sign({"aud": aud}), id="no-expiry"),
    pytest.param(lambda aud: _sign({"aud": aud, "exp": int(time.time()) + 365 * 86_400}), id="valid-for-a-year"),
    pytest.param(lambda _aud: "not-a-jwt", id="garbage"),
    # found by a review: a header whose `crit` is no list failed the check with a TypeError, a 500 (and an error
    # line) for anyone without a key, instead of a 401
    pytest.param(lambda aud: _with_header(_sign({"aud": aud, "exp": int(time.time()) + 60}),
                                          {"alg": "Ed25519", "kid": "gw-1", "crit": 5}), id="crit-not-a-list"),
])
async def test_a_bad_token_is_rejected_with_401(partners: dict[str, str], world: World, token: Any) -> None:
    async def provider(audience: str) -> str:
        return str(token(audience))

    async with HttpConnector(w.POLICE, partners[w.POLICE], provider) as connector:
        with pytest.raises(HolderRejectedRequest, match=r"politie-bvh: refused the call with 401") as rejected:
            await connector.query(_query(world.scenarios()[w.MINOR], ["police_incidents"], "q-bad-token"))
        assert rejected.value.status == 401
        assert connector.attempts == 1  # 4xx is never retried


async def test_a_holder_told_the_gateways_issuer_refuses_tokens_of_any_other(tmp_path: Path, world: World) -> None:
    """With ``issuer`` (``--issuer``) the gateway's keys vouch only for what it issued as itself: a token
    that names another issuer, or none, is refused; the gateway's own passes."""
    issuer = "https://gateway.example"

    def token(claims: dict[str, Any]) -> Any:
        async def provider(audience: str) -> str:
            return _sign({"aud": audience, "exp": int(time.time()) + 60} | claims)
        return provider

    known = world.scenarios()[w.BIBOB_APPLICANT][:1]
    with partner_servers(tmp_path, [w.FIOD], jwks=JWKS, issuer=issuer) as urls:
        for claims in ({"iss": "https://elsewhere.example"}, {}):
            async with HttpConnector(w.FIOD, urls[w.FIOD], token(claims)) as connector:
                with pytest.raises(HolderRejectedRequest, match="refused the call with 401"):
                    await connector.discover(_discovery(known))
        async with HttpConnector(w.FIOD, urls[w.FIOD], token({"iss": issuer})) as connector:
            assert (await connector.discover(_discovery(known))).hits


async def test_keys_come_from_the_gateways_jwks_url_and_rotation_is_picked_up(tmp_path: Path, world: World) -> None:
    published = {"keys": [GATEWAY_KEY.as_dict(private=False)]}
    jwks_app = FastAPI()

    @jwks_app.get("/.well-known/jwks.json")
    def jwks() -> dict[str, Any]:
        return published

    rotated = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-2"})

    async def new_key_token(audience: str) -> str:
        return _sign({"aud": audience, "exp": int(time.time()) + 60}, rotated)

    with serve_app(jwks_app) as gateway, \
            partner_servers(tmp_path, [w.FIOD], jwks_url=f"{gateway}/.well-known/jwks.json") as urls:
        async with HttpConnector(w.FIOD, urls[w.FIOD], gateway_token) as connector:
            assert (await connector.discover(_discovery(world.scenarios()[w.BIBOB_APPLICANT][:1]))).hits
        published["keys"].append(rotated.as_dict(private=False))
        async with HttpConnector(w.FIOD, urls[w.FIOD], new_key_token) as connector:
            assert (await connector.discover(_discovery(world.scenarios()[w.BIBOB_APPLICANT][:1]))).hits


async def test_forged_tokens_cannot_make_a_holder_fetch_keys_from_a_failing_gateway_on_every_request(
        tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: while the gateway's JWKS could not be read (gateway down or failing), every request
    with a token — anyone's, forged — made the holder fetch the keys again (50 requests, 50 fetches). Now a
    failed load is retried at most every ``REFRESH_INTERVAL``; once the gateway is back, its tokens pass.

    The interval is long while the forged tokens come (30 requests took up to 0.56 s on a loaded machine, past
    the 0.5 s it was), then short, so that waiting it out takes a moment."""
    monkeypatch.setattr(holder_auth, "REFRESH_INTERVAL", 300.0)
    fetches: list[int] = []
    failing = [True]
    jwks_app = FastAPI()

    @jwks_app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        fetches.append(1)
        return JSONResponse({"detail": "down"}, status_code=503) if failing[0] else JSONResponse(JWKS)

    with serve_app(jwks_app) as gateway, \
            partner_servers(tmp_path, [w.FIOD], jwks_url=f"{gateway}/.well-known/jwks.json") as urls:
        async with httpx.AsyncClient() as client:
            for n in range(30):
                forged = _sign({"aud": w.FIOD, "exp": int(time.time()) + 60},
                               OKPKey.generate_key("Ed25519", parameters={"kid": f"forged-{n}"}))
                response = await client.post(f"{urls[w.FIOD]}/holder/v1/discover",
                                             json=_discovery(["subj-x1234567"]).model_dump(),
                                             headers={"Authorization": f"Bearer {forged}"})
                assert response.status_code == 401
        assert len(fetches) == 1
        failing[0] = False
        monkeypatch.setattr(holder_auth, "REFRESH_INTERVAL", 0.5)
        await asyncio.sleep(0.6)  # since the failed load: more than the interval
        async with HttpConnector(w.FIOD, urls[w.FIOD], gateway_token, retries=0) as connector:
            assert (await connector.discover(_discovery(world.scenarios()[w.BIBOB_APPLICANT][:1]))).hits
    assert len(fetches) == 2


async def test_a_key_set_nested_too_deep_is_refused_as_malformed_and_not_fetched_on_every_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: whatever answers at the JWKS URL could send JSON nested deeper than the parser
    recurses (100,000 brackets, well within ``MAX_JWKS_BYTES``). The ``RecursionError`` was no refusal: every
    token check failed the holder with a 500 (which the gateway retries) instead of a 401, and, not counted as a
    failed load, it made the holder fetch the keys again on every request, past ``REFRESH_INTERVAL``. Now it is
    a malformed key set like any other."""
    monkeypatch.setattr(holder_auth, "REFRESH_INTERVAL", 300.0)
    fetches: list[int] = []
    deep = b"[" * 100_000 + b"]" * 100_000
    assert len(deep) < holder_auth.MAX_JWKS_BYTES
    jwks_app = FastAPI()

    @jwks_app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        fetches.append(1)
        return Response(deep, media_type="application/json")

    with serve_app(jwks_app) as gateway, \
            partner_servers(tmp_path, [w.FIOD], jwks_url=f"{gateway}/.well-known/jwks.json") as urls:
        async with httpx.AsyncClient() as client:
            statuses = [(await client.post(f"{urls[w.FIOD]}/holder/v1/discover",
                                           json=_discovery(["subj-x1234567"]).model_dump(),
                                           headers={"Authorization": f"Bearer {await gateway_token(w.FIOD)}"})
                         ).status_code for _ in range(5)]
    assert statuses == [401] * 5
    assert len(fetches) == 1


async def test_keys_come_over_https_verified_against_the_partnerships_ca(tmp_path: Path, world: World) -> None:
    """The partner fetches the gateway's keys from an https URL whose certificate a private CA issued: trusted
    with ``ca_file`` (``--jwks-ca-file``), refused without it — then no token passes."""
    ca_file, certificate, key = private_ca_certificates(tmp_path)
    jwks_app = FastAPI()
    jwks_app.get("/.well-known/jwks.json")(lambda: JWKS)
    known = world.scenarios()[w.BIBOB_APPLICANT][:1]
    with serve_app(jwks_app, ssl_certfile=str(certificate), ssl_keyfile=str(key)) as gateway:
        url = f"{gateway}/.well-known/jwks.json"
        assert url.startswith("https://")
        with partner_servers(tmp_path / "trusting", [w.FIOD], source=JwksSource(url=url, ca_file=ca_file)) as urls:
            async with HttpConnector(w.FIOD, urls[w.FIOD], gateway_token, retries=0) as connector:
                assert (await connector.discover(_discovery(known))).hits
        with partner_servers(tmp_path / "default", [w.FIOD], source=JwksSource(url=url)) as urls:
            async with HttpConnector(w.FIOD, urls[w.FIOD], gateway_token, retries=0) as connector:
                with pytest.raises(HolderRejectedRequest, match="refused the call with 401"):
                    await connector.discover(_discovery(known))
    with pytest.raises(FileNotFoundError):  # an unreadable bundle fails at start-up, not token by token
        JwksSource(url=url, ca_file=tmp_path / "no-such-ca.pem")


@pytest.mark.parametrize(("answer", "refusal"), [("too-long", "larger than"), ("endless", "larger than"),
                                                 ("compressed", "compressed")])
def test_a_key_set_past_the_size_limit_is_refused_not_read(answer: str, refusal: str) -> None:
    """Found by a review: the partner read whatever answered at the JWKS URL into memory, without limit. Now
    a key set announced (Content-Length) or streamed past ``MAX_JWKS_BYTES`` is refused as soon as it is, and a
    compressed one (a few kilobytes of gzip inflate to gigabytes) is refused unread."""
    padded = json.dumps(JWKS | {"padding": "x" * holder_auth.MAX_JWKS_BYTES}).encode()
    sent: list[int] = []

    def endless() -> Iterator[bytes]:  # as good as endless: 16 MiB (bounded, so that a reader without limit ends)
        yield b'{"keys": [], "padding": "'
        for _ in range(256):
            sent.append(1)
            yield b"x" * 65536

    jwks_app = FastAPI()

    @jwks_app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        if answer == "too-long":
            return Response(padded, media_type="application/json")
        if answer == "endless":
            return StreamingResponse(endless(), media_type="application/json")
        return Response(zlib.compress(json.dumps(JWKS).encode()), media_type="application/json",
                        headers={"Content-Encoding": "deflate"})

    with serve_app(jwks_app) as gateway, pytest.raises(holder_auth.TokenRefused, match=refusal):
        JwksSource(url=f"{gateway}/.well-known/jwks.json").keys()
    assert len(sent) < 64  # the endless answer was not read on


def test_a_key_set_trickling_in_is_given_up_on_within_the_fetch_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the fetch's time limit was httpx's, per socket read, and its own deadline was checked
    only between body chunks: an answer at the JWKS URL sending its headers a byte at a time held the fetch —
    and every token check, which waits on it — for as long as it kept sending. The whole fetch, headers
    included, is now bounded by ``FETCH_SECONDS``."""
    monkeypatch.setattr(holder_auth, "FETCH_SECONDS", 0.5)
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):  # a byte well within every per-read timeout, for 10 s (unless stopped)
                if stop.wait(0.1):
                    return
                try:
                    connection.sendall(b"X")
                except OSError:
                    return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(holder_auth.TokenRefused, match="took too long"):
            JwksSource(url=f"http://127.0.0.1:{server.getsockname()[1]}/.well-known/jwks.json").keys()
        took = time.monotonic() - started
    finally:
        stop.set()
        sender.join(5)
        server.close()
    assert took < 3.0  # 0.5 s and a loaded machine's slack; unbounded, it kept going until the sender stopped


@pytest.fixture(scope="module")
def https_partner(tmp_path_factory: pytest.TempPathFactory, world: World) -> Iterator[tuple[str, Path]]:
    """A simulated partner served over TLS with a certificate of a private CA: (base URL, CA file)."""
    tmp = tmp_path_factory.mktemp("tls-partner")
    ca_file, certificate, key = private_ca_certificates(tmp)
    app = create_partner_app(w.FIOD, tmp, jwks=JwksSource(jwks=JWKS), world=world)
    with serve_app(app, ssl_certfile=str(certificate), ssl_keyfile=str(key)) as url:
        yield url, ca_file


async def test_an_https_holder_is_verified_against_the_partnerships_ca(https_partner: tuple[str, Path],
                                                                       world: World) -> None:
    """The connector verifies a holder's certificate by default; a partnership with its own CA names it with
    ``ca_file`` (setting ``connector_ca_file``), which trusts that CA without excusing a wrong host name."""
    url, ca_file = https_partner
    assert url.startswith("https://")
    known = world.scenarios()[w.BIBOB_APPLICANT][:1]
    async with HttpConnector(w.FIOD, url, gateway_token, retries=2, backoff=0.01) as untrusted:
        with pytest.raises(HolderUnavailable, match=r"TLS handshake failed .*\(1 attempt, request d-1\)"):
            await untrusted.discover(_discovery(known))
        assert untrusted.attempts == 1  # a certificate that fails verification fails the same way again
    registry = ConnectorRegistry({w.FIOD: url}, gateway_token, ca_file=ca_file)
    try:
        assert (await registry[w.FIOD].discover(_discovery(known))).hits
    finally:
        await registry.aclose()
    async with HttpConnector(w.FIOD, url.replace("127.0.0.1", "localhost"), gateway_token, retries=0,
                             ca_file=ca_file) as wrong_name:
        with pytest.raises(HolderUnavailable, match="TLS handshake failed"):
            await wrong_name.discover(_discovery(known))


# -- failures --------------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_partner_that_is_down_is_a_clear_holder_unavailable() -> None:
    async with HttpConnector(w.FIOD, f"http://127.0.0.1:{_closed_port()}", gateway_token, retries=2,
                             backoff=0.01) as connector:
        with pytest.raises(HolderUnavailable) as down:
            await connector.discover(_discovery(["subj-x1234567"], "d-down"))
        assert str(down.value) == "fiod-ois: holder unavailable: cannot connect (3 attempts, request d-down)"
        assert down.value.system == w.FIOD
        assert isinstance(down.value.__cause__, aiohttp.ClientConnectorError)
        assert connector.attempts == 3
        with pytest.raises(HolderUnavailable, match="fiod-ois: holder unavailable"):
            await connector.health()


class _ScriptedHolder:
    """A holder that misbehaves on cue: per path, a list of behaviours consumed one call at a time."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.script: dict[str, list[str]] = {}
        self.peers: list[int] = []  # the client port of each call: which connection it came on
        self.app = FastAPI()
        self.app.add_api_route("/holder/v1/{operation}", self._handle, methods=["POST"])
        self.app.add_api_route("/health", self._handle, methods=["GET"])

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        self.calls[path] = self.calls.get(path, 0) + 1
        self.peers.append(request.client.port if request.client else 0)
        queue = self.script.get(path, [])
        behaviour = queue.pop(0) if queue else "ok"
        if behaviour == "503":
            return JSONResponse({"detail": "busy"}, status_code=503)
        if behaviour == "403":
            return JSONResponse({"detail": "not for you"}, status_code=403)
        if behaviour == "slow":
            await asyncio.sleep(1.0)
        if behaviour == "malformed":
            return JSONResponse({"status": "answered", "records": [{"subject": "subj-x"}]})
        if behaviour.startswith("echo:"):  # an answer echoing this request id (``echo:null``: none)
            echoed = json.loads(behaviour.removeprefix("echo:"))
            body: dict[str, Any] = {"hits": {}} if path.endswith("discover") else {"status": "answered", "records": []}
            return JSONResponse({"request_id": echoed} | body)
        if path.endswith("discover"):
            return JSONResponse({"hits": {}})
        return JSONResponse({"status": "answered", "records": []} if path.endswith("query") else {"status": "ok"})


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[_ScriptedHolder, str]]:
    holder = _ScriptedHolder()
    with serve_app(holder.app) as url:
        yield holder, url


@pytest.fixture
def holder(scripted: tuple[_ScriptedHolder, str]) -> tuple[_ScriptedHolder, str]:
    scripted[0].calls.clear()
    scripted[0].script.clear()
    scripted[0].peers.clear()
    return scripted


async def test_discover_is_retried_until_the_flaky_holder_answers(holder: tuple[_ScriptedHolder, str]) -> None:
    server, url = holder
    server.script["/holder/v1/discover"] = ["503", "503"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=2, backoff=0.01) as connector:
        answer = await connector.discover(_discovery(["subj-x1234567"], "d-flaky"))
    assert answer.hits == {}
    assert server.calls["/holder/v1/discover"] == 3


async def test_whether_a_failed_call_may_have_reached_the_holder_is_known(holder: tuple[_ScriptedHolder, str]) -> None:
    """What the gateway logs about records a requester provided depends on it: a holder that may hold them
    (timeout, 5xx, a garbled answer) is logged as handed them; one never reached or refusing the call is not."""
    server, url = holder
    query = _query(["subj-x1234567"], ["income"], request_id="q-arrived")
    outcomes: dict[str, bool] = {}
    for behaviour in ("slow", "503", "malformed", "403"):
        server.script["/holder/v1/query"] = [behaviour]
        timeout = 0.3 if behaviour == "slow" else 10.0  # a quick answer arrives in time on a loaded machine too
        async with HttpConnector(w.TAX, url, gateway_token, retries=0, timeout=timeout) as connector:
            with pytest.raises(ConnectorError) as failed:
                await connector.query(query)
        outcomes[behaviour] = failed.value.may_have_arrived
    async with HttpConnector(w.TAX, f"http://127.0.0.1:{_closed_port()}", gateway_token, retries=1,
                             backoff=0.01) as connector:
        with pytest.raises(HolderUnavailable) as down:
            await connector.query(query)
    outcomes["cannot connect"] = down.value.may_have_arrived
    server.script["/holder/v1/query"] = ["slow", "403"]  # the first attempt may be with the holder
    # below the slow answer's 1 s (a sleep is never shorter), with room for the 403 to arrive in time
    async with HttpConnector(w.TAX, url, gateway_token, retries=1, timeout=0.9, backoff=0.01) as connector:
        with pytest.raises(HolderRejectedRequest) as refused:
            await connector.query(query)
    outcomes["slow, then 403"] = refused.value.may_have_arrived
    assert outcomes == {"slow": True, "503": True, "malformed": True, "403": False, "cannot connect": False,
                        "slow, then 403": True}


async def test_a_query_without_request_id_is_not_retried(holder: tuple[_ScriptedHolder, str]) -> None:
    server, url = holder
    server.script["/holder/v1/query"] = ["503"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=2, backoff=0.01) as connector:
        with pytest.raises(HolderUnavailable, match=r"answered 503 \(1 attempt, no request id\)"):
            await connector.query(_query(["subj-x1234567"], ["income"], request_id=None))
    assert server.calls["/holder/v1/query"] == 1


async def test_a_query_with_request_id_is_retried(holder: tuple[_ScriptedHolder, str]) -> None:
    server, url = holder
    server.script["/holder/v1/query"] = ["503", "503"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=2, backoff=0.01) as connector:
        answer = await connector.query(_query(["subj-x1234567"], ["income"], "q-retry"))
    assert answer.status == "answered"
    assert server.calls["/holder/v1/query"] == 3


async def test_a_retry_after_a_5xx_goes_out_on_a_fresh_connection(holder: tuple[_ScriptedHolder, str]) -> None:
    """Found as a flaky test: a holder that fails with a 500 may close its side of the keep-alive connection
    right after answering (uvicorn does, when the app raised), and the retry, sent on that pooled connection,
    failed with "Cannot write to closing transport", using up the attempt. A retry now goes out on a fresh
    connection; first attempts still share pooled ones."""
    server, url = holder
    server.script["/holder/v1/query"] = ["503"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=1, backoff=0.01) as connector:
        await connector.query(_query(["subj-x1234567"], ["income"], "q-fresh"))
        for request_id in ("q-pooled-1", "q-pooled-2"):
            await connector.query(_query(["subj-x1234567"], ["income"], request_id))
    failed_on, retried_on, first_healthy, second_healthy = server.peers
    assert retried_on != failed_on
    assert first_healthy == second_healthy  # healthy answers keep their connection for the next call


async def test_health_is_retried(holder: tuple[_ScriptedHolder, str]) -> None:
    server, url = holder
    server.script["/health"] = ["503"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=1, backoff=0.01) as connector:
        await connector.health()
    assert server.calls["/health"] == 2


async def test_a_slow_holder_times_out_as_unavailable(holder: tuple[_ScriptedHolder, str]) -> None:
    server, url = holder
    server.script["/holder/v1/query"] = ["slow", "slow"]
    async with HttpConnector(w.TAX, url, gateway_token, timeout=0.2, retries=1, backoff=0.01) as connector:
        started = time.monotonic()
        with pytest.raises(HolderUnavailable, match=r"belastingdienst-ivs: holder unavailable: timed out "
                                                    r"\(2 attempts, request q-slow\)"):
            await connector.query(_query(["subj-x1234567"], ["income"], "q-slow"))
        assert time.monotonic() - started < 0.9


async def test_a_malformed_answer_is_a_protocol_error(holder: tuple[_ScriptedHolder, str]) -> None:
    server, url = holder
    server.script["/holder/v1/query"] = ["malformed"]
    async with HttpConnector(w.TAX, url, gateway_token, backoff=0.01) as connector:
        with pytest.raises(HolderProtocolError, match="malformed answer") as malformed:
            await connector.query(_query(["subj-x1234567"], ["income"], "q-bad"))
    assert isinstance(malformed.value, ConnectorError)
    assert server.calls["/holder/v1/query"] == 1


@pytest.mark.parametrize(("sent", "echoed", "accepted"), [
    ("q-echo", '"q-echo"', True), ("q-echo", "null", True), ("q-echo", '"q-echo-other"', False),
    ("q-echo", '"Q-ECHO"', False), (None, '"q-echo"', False), (None, "null", True)])
async def test_an_answer_echoing_another_request_id_is_a_mismatch_and_not_retried(
        holder: tuple[_ScriptedHolder, str], sent: str | None, echoed: str, accepted: bool) -> None:
    """An answer names the request id it answers, or none (protocol v1): one naming another — also where the
    call named none — answers another request and is refused (``HolderAnswerMismatch``, a protocol error),
    once: asking again would not make it this request's answer. The holder's id is not repeated."""
    server, url = holder
    server.script["/holder/v1/query"] = [f"echo:{echoed}"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=2, backoff=0.01) as connector:
        query = _query(["subj-x1234567"], ["income"], request_id=sent)
        if accepted:
            assert (await connector.query(query)).request_id == json.loads(echoed)
        else:
            with pytest.raises(HolderAnswerMismatch, match="answer to another request") as mismatch:
                await connector.query(query)
            assert isinstance(mismatch.value, HolderProtocolError)
            assert json.loads(echoed) not in str(mismatch.value)
    assert server.calls["/holder/v1/query"] == 1


@pytest.mark.parametrize(("echoed", "accepted"), [('"d-echo"', True), ("null", True), ('"d-echo-other"', False)])
async def test_a_discovery_answer_echoing_another_request_id_is_a_mismatch(holder: tuple[_ScriptedHolder, str],
                                                                          echoed: str, accepted: bool) -> None:
    server, url = holder
    server.script["/holder/v1/discover"] = [f"echo:{echoed}"]
    async with HttpConnector(w.TAX, url, gateway_token, retries=2, backoff=0.01) as connector:
        if accepted:
            assert (await connector.discover(_discovery(["subj-x1234567"], "d-echo"))).hits == {}
        else:
            with pytest.raises(HolderAnswerMismatch, match=r"answer to another request \(request d-echo\)"):
                await connector.discover(_discovery(["subj-x1234567"], "d-echo"))
    assert server.calls["/holder/v1/discover"] == 1


async def test_the_simulators_echo_the_request_id_of_every_answer(partners: dict[str, str], world: World) -> None:
    """The reference holder's answers over HTTP: a query answered and one refused, a discovery."""
    director, secret = world.scenarios()[w.BIBOB_APPLICANT][1], world.scenarios()[w.POLICE_CONFIDENTIAL][0]
    async with HttpConnector(w.POLICE, partners[w.POLICE], gateway_token) as connector:
        answered = await connector.query(_query([director], ["police_incidents"], "q-echoed"))
        refused = await connector.query(_query([secret], ["police_incidents"], "q-echoed-refused"))
        discovered = await connector.discover(_discovery([director], "d-echoed"))
    assert [(a.status, a.request_id) for a in (answered, refused, discovered)] == [
        ("answered", "q-echoed"), ("refused", "q-echoed-refused"), ("answered", "d-echoed")]


async def test_a_request_aiohttp_refuses_to_make_is_a_holder_unavailable_not_a_defect(
        holder: tuple[_ScriptedHolder, str]) -> None:
    """aiohttp raises a plain ValueError for a request it will not make (here a header value with a line break,
    as a token read from a file with its CR can have; before the endpoint check, credentials in the base URL
    beside the bearer token): it escaped as no ConnectorError, and the exchange failed every such call as its
    own defect (``gateway-error``). It is a holder-unavailable now, made once (it fails the same way each
    time), logged with the error's type and never its text, which may quote the header."""
    server, url = holder

    async def broken_token(audience: str) -> str:
        return "T\r\nX-Injected: 1"

    async with HttpConnector(w.TAX, url, broken_token, retries=2, backoff=0.01) as connector:
        with capture_logs() as logs, pytest.raises(HolderUnavailable) as failed:
            await connector.query(_query(["subj-x1234567"], ["income"], "q-refused"))
        assert connector.attempts == 1
    assert str(failed.value) == ("belastingdienst-ivs: holder unavailable: request not made (ValueError) "
                                 "(1 attempt, request q-refused)")
    assert failed.value.may_have_arrived  # not known for certain: what the gateway logs about provided records
    assert isinstance(failed.value.__cause__, ValueError)
    assert "/holder/v1/query" not in server.calls  # nothing reached the holder
    [logged] = [e for e in logs if e["event"] == "holder_unavailable"]
    assert logged["failure"] == "request not made (ValueError)"
    assert "X-Injected" not in repr(logs)


# -- the over-share switch -------------------------------------------------------------------------
async def test_the_over_share_switch_adds_an_unasked_category(tmp_path: Path, world: World) -> None:
    director = world.scenarios()[w.BIBOB_APPLICANT][1]
    with partner_servers(tmp_path, [w.POLICE], jwks=JWKS, over_share={w.POLICE}) as urls:
        async with HttpConnector(w.POLICE, urls[w.POLICE], gateway_token) as connector:
            answer = await connector.query(_query([director], ["police_incidents"], "q-over"))
    assert {r.category for r in answer.records} == {"police_incidents", "criminal_intelligence"}
    store = PartnerStore(store_path(tmp_path, w.POLICE))
    assert store.count() == len(world.records[w.POLICE])  # the partner's own database, in its own file
    store.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "chunked"])
async def test_an_answer_past_the_size_limit_is_a_protocol_error(chunked: bool) -> None:
    """A holder answering without end (a review relayed 68 MB) must not fill the gateway's memory."""
    app = FastAPI()
    record = {"record_id": "r-1", "record_type": "incident", "subject": "s-1", "category": "police_incidents",
              "fields": {"note": "x" * 1000}}
    body = ('{"status": "answered", "records": [' + ", ".join([json.dumps(record)] * 50) + "]}").encode()

    @app.post("/holder/v1/query")
    async def query() -> Response:
        if chunked:
            async def parts() -> Any:
                for start in range(0, len(body), 4096):
                    yield body[start:start + 4096]
            return StreamingResponse(parts(), media_type="application/json")
        return Response(body, media_type="application/json")

    with serve_app(app) as url:
        async with HttpConnector(w.POLICE, url, gateway_token, max_answer_bytes=len(body) - 1) as small:
            with pytest.raises(HolderProtocolError, match="more than"):
                await small.query(_query(["s-1"], ["police_incidents"]))
        async with HttpConnector(w.POLICE, url, gateway_token, max_answer_bytes=len(body)) as enough:
            assert len((await enough.query(_query(["s-1"], ["police_incidents"]))).records) == 50


@pytest.mark.parametrize(("size", "accepted"), [(MAX_DISCOVERY_ANSWER_BYTES, True),
                                               (MAX_DISCOVERY_ANSWER_BYTES + 1, False)])
@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "chunked"])
async def test_a_discovery_answer_past_its_own_size_limit_is_a_protocol_error(size: int, accepted: bool,
                                                                               chunked: bool) -> None:
    """Found by a review: a discovery answer is hit/no-hit for at most a hundred subjects — some kilobytes — yet
    it was read up to the 16 MiB of a query's answer, and 16 MiB of hits for made-up subjects held the gateway's
    event loop for seconds while they were parsed and compared with the subjects asked. A discovery answer may
    be ``MAX_DISCOVERY_ANSWER_BYTES`` long; a longer one is no answer, refused before it is parsed."""
    body = b'{"status": "answered", "hits": {}}'
    body += b" " * (size - len(body))  # JSON may end in blanks: a valid answer of exactly ``size`` bytes
    app = FastAPI()

    @app.post("/holder/v1/discover")
    async def discover() -> Response:
        if chunked:
            async def parts() -> Any:
                for start in range(0, len(body), 65536):
                    yield body[start:start + 65536]
            return StreamingResponse(parts(), media_type="application/json")
        return Response(body, media_type="application/json")

    with serve_app(app) as url:
        async with HttpConnector(w.FIOD, url, gateway_token) as connector:
            if accepted:
                assert (await connector.discover(_discovery(["s-1"]))).hits == {}
            else:
                with pytest.raises(HolderProtocolError, match="more than"):
                    await connector.discover(_discovery(["s-1"]))
                assert connector.attempts == 1  # not retried: it would be as long again


@pytest.mark.parametrize(("records", "accepted"), [(MAX_ANSWER_RECORDS, True), (MAX_ANSWER_RECORDS + 1, False)])
async def test_an_answer_with_more_records_than_the_limit_is_a_protocol_error(records: int, accepted: bool) -> None:
    """Found by a review: within the size limit, an answer of 110,000 empty records (15 MB) held the gateway's
    event loop for about five seconds of one exchange — every other request of that process waited — while
    the exchange checked, translated and hashed each record. An answer may carry at most
    ``MAX_ANSWER_RECORDS``; one with more is no answer (the holder is unavailable for that exchange)."""
    app = FastAPI()
    record = '{"record_id": "r-%d", "record_type": "incident", "subject": "s-1", "category": "police_incidents", ' \
             '"fields": {}}'
    body = ('{"status": "answered", "records": [' + ", ".join(record % n for n in range(records)) + "]}").encode()

    @app.post("/holder/v1/query")
    async def query() -> Response:
        return Response(body, media_type="application/json")

    with serve_app(app) as url:
        async with HttpConnector(w.POLICE, url, gateway_token) as connector:
            if accepted:
                assert len((await connector.query(_query(["s-1"], ["police_incidents"]))).records) == records
            else:
                with pytest.raises(HolderProtocolError, match="malformed answer"):
                    await connector.query(_query(["s-1"], ["police_incidents"]))


@pytest.mark.parametrize(("values", "accepted"), [(MAX_ANSWER_VALUES, True), (MAX_ANSWER_VALUES + 1, False)])
@pytest.mark.parametrize("shape", ["one object", "nested lists", "many records"])
async def test_an_answer_with_more_values_than_the_limit_is_a_protocol_error(values: int, accepted: bool,
                                                                             shape: str) -> None:
    """Found by a review: within the size limit and the records limit, one record whose fields held 1.3 million
    members (13 MB) held the gateway's event loop for more than five seconds of one exchange (its liveness
    probe timed out), while the exchange translated, hashed, sealed and serialised every value. The records'
    fields may hold at most ``MAX_ANSWER_VALUES`` values together, however they are nested or spread over
    records; an answer with more is no answer."""
    def body_of(subject: str) -> bytes:
        """``values`` values in all: the members of objects and the items of arrays, at any depth."""
        if shape == "one object":
            records: list[dict[str, Any]] = [{f"a{n}": 0 for n in range(values)}]
        elif shape == "nested lists":  # "a" and its list, lists of 999, and the rest
            lists = values // 1000 - 1
            records = [{"a": [[0] * 999 for _ in range(lists)] + [0] * (values - 1 - 1000 * lists)}]
        else:  # ten each: "a", "b" and b's eight items; the last record has the rest
            records = [{"a": n, "b": [n] * 8} for n in range(values // 10)]
            records[-1]["b"] += [0] * (values % 10)
            assert len(records) <= MAX_ANSWER_RECORDS
        return json.dumps({"status": "answered", "records": [
            {"record_id": f"r-{n}", "record_type": "incident", "subject": subject, "category": "police_incidents",
             "fields": fields} for n, fields in enumerate(records)]}).encode()

    app = FastAPI()

    @app.post("/holder/v1/query")
    async def query() -> Response:
        return Response(body_of("s-1"), media_type="application/json")

    with serve_app(app) as url:
        async with HttpConnector(w.POLICE, url, gateway_token) as connector:
            if accepted:
                assert (await connector.query(_query(["s-1"], ["police_incidents"]))).status == "answered"
            else:
                with pytest.raises(HolderProtocolError, match="malformed answer"):
                    await connector.query(_query(["s-1"], ["police_incidents"]))


async def test_a_compressed_answer_cannot_inflate_past_the_size_limit() -> None:
    """A decompression bomb (found by a review): 300 kB of gzip inflated to 300 MB inside the gateway although
    the answer limit was 1 MB, because the client inflated it before the limit was checked. The connector asks
    for no compression, and a compressed answer is a protocol error, read as sent (never inflated)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip format
    parts = [deflater.compress(b'{"status": "answered", "records": [], "padding": "')]
    parts += [deflater.compress(b"x" * 1024 * 1024) for _ in range(300)]
    bomb = b"".join([*parts, deflater.compress(b'"}'), deflater.flush()])
    asked: list[str | None] = []
    app = FastAPI()

    @app.post("/holder/v1/query")
    async def query(request: Request) -> Response:
        asked.append(request.headers.get("accept-encoding"))
        return Response(bomb, media_type="application/json", headers={"Content-Encoding": "gzip"})

    with serve_app(app) as url:
        async with HttpConnector(w.POLICE, url, gateway_token, max_answer_bytes=1024 * 1024, timeout=30) as connector:
            started = time.process_time()
            with pytest.raises(HolderProtocolError, match="compressed answer") as refused:
                await connector.query(_query(["s-1"], ["police_incidents"]))
            assert time.process_time() - started < 0.5  # nothing was inflated (300 MB would take seconds)
    assert len(bomb) < 1024 * 1024  # within the limit as sent
    assert asked == ["identity"]
    assert "gzip" not in str(refused.value)  # the holder's header text is not echoed to the requester


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_never_carries_the_bearer_token_to_another_origin(status: int) -> None:
    """The holder's bearer token goes to the registered origin only: a holder (or whoever answers in its name)
    that redirects the gateway elsewhere — here another loopback port, a different origin — gets a protocol
    error, and the other origin receives nothing: neither the token nor the query."""
    elsewhere = FastAPI()
    seen: list[dict[str, str]] = []

    @elsewhere.api_route("/{path:path}", methods=["GET", "POST"])
    async def record(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        return JSONResponse({"status": "answered", "records": []})

    with serve_app(elsewhere) as other_url:
        redirecting = FastAPI()

        @redirecting.api_route("/{path:path}", methods=["GET", "POST"])
        async def redirect(path: str) -> Response:
            return Response(status_code=status, headers={"Location": f"{other_url}/{path}"})

        with serve_app(redirecting) as url:
            async with HttpConnector(w.TAX, url, gateway_token, retries=2, backoff=0.01) as connector:
                with pytest.raises(HolderProtocolError, match=f"unexpected status {status}"):
                    await connector.query(_query(["subj-x1234567"], ["income"], "q-redirected"))
                with pytest.raises(HolderProtocolError, match=f"unexpected status {status}"):
                    await connector.discover(_discovery(["subj-x1234567"], "d-redirected"))
                assert connector.attempts == 2  # a redirect is not retried either
    assert seen == []
