"""The connector client against real simulated partners over HTTP: answers, refusals, auth, failures."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import OKPKey

from connectors.http_connector import HttpConnector
from connectors.protocol import HolderDiscovery, HolderQuery, HolderRejectedRequest, HolderUnavailable
from connectors.world import World, build_world
from tests.partner_servers import partner_servers
from tests.servers import serve_app

GATEWAY_KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-1"})
JWKS = {"keys": [GATEWAY_KEY.as_dict(private=False)]}


async def gateway_token(audience: str) -> str:
    now = int(time.time())
    return jwt.encode({"alg": "Ed25519", "kid": "gw-1"}, {"aud": audience, "iss": "test-gateway", "iat": now,
                                                          "exp": now + 60}, GATEWAY_KEY, algorithms=["Ed25519"])


async def forged_token(audience: str) -> str:
    other = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-1"})
    now = int(time.time())
    return jwt.encode({"alg": "Ed25519", "kid": "gw-1"}, {"aud": audience, "exp": now + 60}, other,
                      algorithms=["Ed25519"])


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2025)


@pytest.fixture(scope="module")
def partners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with partner_servers(tmp_path_factory.mktemp("partners"), ["politie-bvh", "kvk-handelsregister"],
                         jwks=JWKS) as urls:
        yield urls


def _query(subjects: list[str], categories: list[str], request_id: str = "req-1") -> HolderQuery:
    return HolderQuery(request_id=request_id, partnership="riec-amsterdam-amstelland",
                       purpose="bibob-integrity-check", requester_organisation="gemeente-amsterdam",
                       categories=categories, subjects=subjects)


async def test_query_returns_only_the_asked_categories(partners: dict[str, str], world: World) -> None:
    connector = HttpConnector("politie-bvh", partners["politie-bvh"], gateway_token)
    director = world.scenarios()["bibob-applicant"][1]
    answer = await connector.query(_query([director], ["police_incidents"], "q-only"))
    await connector.aclose()
    assert answer.status == "answered"
    assert answer.records
    assert {r.category for r in answer.records} == {"police_incidents"}  # CIE notes exist but were not asked
    assert all(r.subject == director for r in answer.records)


async def test_police_refuses_for_a_confidential_subject(partners: dict[str, str], world: World) -> None:
    connector = HttpConnector("politie-bvh", partners["politie-bvh"], gateway_token)
    answer = await connector.query(_query(world.scenarios()["police-confidential"], ["police_incidents"], "q-ref"))
    await connector.aclose()
    assert answer.status == "refused"
    assert answer.refusal_reason == "investigation-confidentiality"
    assert answer.records == []


async def test_discover_is_hit_no_hit_only(partners: dict[str, str], world: World) -> None:
    connector = HttpConnector("kvk-handelsregister", partners["kvk-handelsregister"], gateway_token)
    company = world.scenarios()["bibob-applicant"][0]
    nobody = world.scenarios()["no-records"][0]
    answer = await connector.discover(HolderDiscovery(request_id="d-1", partnership="riec-amsterdam-amstelland",
                                                      purpose="bibob-integrity-check", subjects=[company, nobody]))
    await connector.aclose()
    assert company in answer.hits
    assert "registration" in answer.hits[company]
    assert nobody not in answer.hits


async def test_missing_or_forged_gateway_token_is_refused(partners: dict[str, str], world: World) -> None:
    forged = HttpConnector("politie-bvh", partners["politie-bvh"], forged_token)
    with pytest.raises(HolderRejectedRequest) as refused:
        await forged.query(_query(world.scenarios()["minor"], ["police_incidents"], "q-forged"))
    await forged.aclose()
    assert refused.value.status == 401
    wrong_audience = HttpConnector("politie-bvh", partners["politie-bvh"],
                                   lambda _aud: gateway_token("kvk-handelsregister"))
    with pytest.raises(HolderRejectedRequest):
        await wrong_audience.query(_query(world.scenarios()["minor"], ["police_incidents"], "q-aud"))
    await wrong_audience.aclose()


async def test_retried_query_is_answered_once(partners: dict[str, str], world: World) -> None:
    connector = HttpConnector("politie-bvh", partners["politie-bvh"], gateway_token)
    subjects = world.scenarios()["minor"]
    first = await connector.query(_query(subjects, ["police_incidents"], "q-same"))
    second = await connector.query(_query(subjects, ["police_incidents"], "q-same"))
    await connector.aclose()
    assert first == second


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_partner_down_is_a_clear_holder_unavailable() -> None:
    connector = HttpConnector("fiod-ois", f"http://127.0.0.1:{_closed_port()}", gateway_token, retries=1,
                              backoff=0.01)
    with pytest.raises(HolderUnavailable, match=r"fiod-ois: unreachable .*request q-down"):
        await connector.query(_query(["subj-x1234567"], ["ongoing_investigation"], "q-down"))
    await connector.aclose()
    assert connector.attempts == 2


async def test_slow_partner_times_out_and_flaky_partner_is_retried(tmp_path: Path) -> None:
    import asyncio

    app = FastAPI()
    calls = {"discover": 0}

    @app.post("/holder/v1/query")
    async def slow() -> dict[str, object]:
        await asyncio.sleep(2)
        return {"status": "answered", "records": []}

    @app.post("/holder/v1/discover")
    async def flaky() -> object:
        from fastapi.responses import JSONResponse

        calls["discover"] += 1
        if calls["discover"] < 3:
            return JSONResponse({"detail": "busy"}, status_code=503)
        return {"hits": {}}

    with serve_app(app) as url:
        connector = HttpConnector("belastingdienst-ivs", url, gateway_token, timeout=0.3, retries=2, backoff=0.01)
        with pytest.raises(HolderUnavailable, match="timed out"):
            await connector.query(_query(["subj-x1234567"], ["income"], "q-slow"))
        answer = await connector.discover(HolderDiscovery(request_id="d-flaky", partnership="p", purpose="p",
                                                          subjects=["subj-x1234567"]))
        await connector.aclose()
    assert answer.hits == {}
    assert calls["discover"] == 3


async def test_over_sharing_partner_adds_an_unasked_category(tmp_path: Path, world: World) -> None:
    with partner_servers(tmp_path, ["politie-bvh"], jwks=JWKS, over_share={"politie-bvh"}) as urls:
        connector = HttpConnector("politie-bvh", urls["politie-bvh"], gateway_token)
        director = world.scenarios()["bibob-applicant"][1]
        answer = await connector.query(_query([director], ["police_incidents"], "q-over"))
        await connector.aclose()
    assert "criminal_intelligence" in {r.category for r in answer.records}
