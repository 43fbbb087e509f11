"""A holder's cache of the gateway's keys expires: a key the gateway retired after it leaked (``wgs-gateway keys
retire``) stops being accepted by holders within the key set's max age, not at their next restart; a failed
re-read keeps the old keys for a bounded grace only; re-reads stay rate-limited whatever ``kid``s tokens name.

Real HTTP throughout (the gateway's JWKS endpoint, or a stand-in counting its fetches, and a simulated partner);
the key cache's clock is injected, so no test waits for an age to pass."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from joserfc import jwt
from joserfc.jwk import OKPKey
from structlog.testing import capture_logs
from typer.testing import CliRunner

from connectors import holder_auth
from connectors import world as w
from connectors.holder_auth import REFRESH_INTERVAL, JwksSource, TokenRefused, make_verifier
from connectors.protocol import HolderDiscovery
from gateway.app import create_app
from gateway.auth.endpoints import JWKS_MAX_AGE_SECONDS
from gateway.auth.setup import auth_services
from gateway.cli import app as cli
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.deployment import prepared_data_dir
from tests.partner_servers import partner_servers
from tests.servers import serve_app

runner = CliRunner()
KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-1"})
JWKS = {"keys": [KEY.as_dict(private=False)]}
DISCOVERY = HolderDiscovery(request_id="d-1", partnership="riec-amsterdam-amstelland",
                            purpose="bibob-integrity-check", subjects=["subj-x1234567"]).model_dump()


class Clock:
    """Monotonic seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _sign(key: OKPKey, audience: str = w.FIOD) -> str:
    return jwt.encode({"alg": "Ed25519", "kid": key.kid}, {"aud": audience, "exp": int(time.time()) + 60}, key,
                      algorithms=["Ed25519"])


class StandIn:
    """A stand-in for the gateway's JWKS endpoint that counts its fetches, can fail, and says
    ``cache_control`` when set."""

    def __init__(self, cache_control: str | None = None) -> None:
        self.fetches = 0
        self.failing = False
        self.jwks: dict[str, Any] = JWKS
        self.app = FastAPI()

        @self.app.get("/.well-known/jwks.json")
        def jwks() -> Response:
            self.fetches += 1
            if self.failing:
                return JSONResponse({"detail": "down"}, status_code=503)
            headers = {"Cache-Control": cache_control} if cache_control else {}
            return JSONResponse(self.jwks, headers=headers)


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    """A stand-in gateway (see ``StandIn``) and its JWKS URL."""
    gateway = StandIn()
    with serve_app(gateway.app) as url:
        yield gateway, f"{url}/.well-known/jwks.json"


# -- a key retired at the gateway -----------------------------------------------------------------------------

@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Container]]:
    """A running gateway over HTTP (its base URL), and the operator's CLI on the same data directory."""
    prepared_data_dir(tmp_path / "gateway", monkeypatch)
    container = build_container(Settings(log_json=True))
    with serve_app(create_app(container=container)) as url:
        yield url, container
    container.close()


def _holder_token(container: Container) -> str:
    """A token of the gateway for the partner system FIOD, signed by its current key."""
    return auth_services(container).tokens.issue(subject="wgs-gateway", organisation="wgs-gateway",
                                                 scopes=["holder"], kind="system", audience=w.FIOD).access_token


def _run_check(verify: Callable[[str], Awaitable[None]], token: str) -> None:
    """``verify(token)`` run to its end: ``asyncio.run`` takes a coroutine, the verifier returns an awaitable."""
    async def checked() -> None:
        await verify(token)
    asyncio.run(checked())


def _kids(gateway_url: str) -> list[str]:
    return [key["kid"] for key in httpx.get(f"{gateway_url}/.well-known/jwks.json").json()["keys"]]


async def test_a_key_retired_at_the_gateway_is_refused_by_the_holder_within_the_max_age(
        gateway: tuple[str, Container], tmp_path: Path) -> None:
    """Found by a review: a holder re-read the gateway's JWKS only on an unknown ``kid``. After ``keys retire`` of
    a superseded, leaked key it never met one, and accepted the leaked key's tokens until it restarted. Now the
    key set expires after the gateway's ``Cache-Control: max-age`` (60 s), and the retired key's tokens are
    refused from then on, while the current key's still pass."""
    gateway_url, container = gateway
    clock = Clock()
    jwks_url = f"{gateway_url}/.well-known/jwks.json"
    assert httpx.get(jwks_url).headers["Cache-Control"] == f"max-age={JWKS_MAX_AGE_SECONDS}"
    with partner_servers(tmp_path / "partner", [w.FIOD], source=JwksSource(url=jwks_url, clock=clock)) as urls:
        async with httpx.AsyncClient() as client:

            async def status(token: str) -> int:
                response = await client.post(f"{urls[w.FIOD]}/holder/v1/discover", json=DISCOVERY,
                                             headers={"Authorization": f"Bearer {token}"})
                return response.status_code

            leaked = _holder_token(container)
            [old] = _kids(gateway_url)
            assert await status(leaked) == 200
            assert runner.invoke(cli, ["keys", "rotate"]).exit_code == 0
            current = _holder_token(container)
            assert await status(current) == 200  # a new kid: the holder read the set again
            assert runner.invoke(cli, ["keys", "retire", old]).exit_code == 0
            assert old not in _kids(gateway_url)
            clock.advance(JWKS_MAX_AGE_SECONDS - 1)
            assert await status(leaked) == 200  # the window the max age bounds
            clock.advance(2)
            assert await status(leaked) == 401
            assert await status(current) == 200


# -- expiry, grace and rate limits ---------------------------------------------------------------------------

async def test_tokens_with_unknown_kids_make_at_most_one_read_per_interval(stand_in: tuple[StandIn, str],
                                                                           tmp_path: Path) -> None:
    """Anyone can send a token naming any ``kid``: through a partner, forged ``kid``s make the holder read the
    gateway's keys once per ``REFRESH_INTERVAL`` at most (the first load aside), expiry and all."""
    gateway, url = stand_in
    clock = Clock()
    with partner_servers(tmp_path, [w.FIOD], source=JwksSource(url=url, clock=clock)) as urls:
        async with httpx.AsyncClient() as client:

            async def forged(count: int) -> None:
                for n in range(count):
                    token = _sign(OKPKey.generate_key("Ed25519", parameters={"kid": f"forged-{clock.now}-{n}"}))
                    response = await client.post(f"{urls[w.FIOD]}/holder/v1/discover", json=DISCOVERY,
                                                 headers={"Authorization": f"Bearer {token}"})
                    assert response.status_code == 401

            await forged(10)
            assert gateway.fetches == 2  # the first load, and one read again
            clock.advance(REFRESH_INTERVAL / 2)
            await forged(10)
            assert gateway.fetches == 2
            clock.advance(REFRESH_INTERVAL)
            await forged(10)
            assert gateway.fetches == 3
            clock.advance(holder_auth.MAX_AGE_SECONDS)  # expired: one read for expiry, none more for the kids
            await forged(10)
            assert gateway.fetches == 4
            response = await client.post(f"{urls[w.FIOD]}/holder/v1/discover", json=DISCOVERY,
                                         headers={"Authorization": f"Bearer {_sign(KEY)}"})
            assert response.status_code == 200
            assert gateway.fetches == 4


def test_a_failed_read_keeps_the_old_keys_for_the_grace_only_then_refuses_every_token(
        stand_in: tuple[StandIn, str]) -> None:
    """While the gateway's JWKS cannot be read, an expired set is still used for ``stale_grace`` (each failure
    logged, a new attempt at most every ``REFRESH_INTERVAL``); past it no token passes, not even one of a key
    in the old set (fail closed), until a read succeeds."""
    gateway, url = stand_in
    clock = Clock()
    source = JwksSource(url=url, clock=clock, max_age=100, stale_grace=50)
    verify = make_verifier(w.FIOD, source)
    token = _sign(KEY)
    assert [key.kid for key in source.keys().keys] == ["gw-1"]
    gateway.failing = True
    clock.advance(101)
    with capture_logs() as logs:
        assert [key.kid for key in source.keys().keys] == ["gw-1"]  # kept: within the grace
    assert gateway.fetches == 2
    assert [(e["event"], e["log_level"], e["kept_for_seconds"]) for e in logs] == [
        ("jwks_refresh_failed", "warning", 49)]
    clock.advance(REFRESH_INTERVAL / 2)
    source.keys()
    assert gateway.fetches == 2  # no new attempt within the interval
    clock.advance(REFRESH_INTERVAL)
    source.keys()
    assert gateway.fetches == 3
    clock.advance(50 - 1 - (101 - 100) - REFRESH_INTERVAL * 1.5)  # the grace's last second (the set is 149 s old)
    _run_check(verify, token)
    assert gateway.fetches == 4
    clock.advance(1)
    with capture_logs() as logs, pytest.raises(TokenRefused, match="out of date"):
        _run_check(verify, token)
    assert [e["event"] for e in logs] == ["jwks_expired"]
    with pytest.raises(TokenRefused, match="unavailable"):  # no fetch per token meanwhile either
        _run_check(verify, token)
    fetched = gateway.fetches
    gateway.failing = False
    clock.advance(REFRESH_INTERVAL + 1)
    _run_check(verify, token)
    assert gateway.fetches == fetched + 1


@pytest.mark.parametrize(("cache_control", "fresh_for"), [
    ("max-age=30", 30), ("public, max-age=45, must-revalidate", 45),
    ("max-age=100000", 100),  # never longer than the holder's own max age
    ("max-age=0", REFRESH_INTERVAL), ("no-store", REFRESH_INTERVAL),  # never shorter than the interval
    ("max-age=soon", 100), (None, 100)])  # unreadable or none: the holder's own
def test_the_gateways_max_age_is_honoured_within_bounds(cache_control: str | None, fresh_for: float) -> None:
    gateway = StandIn(cache_control)
    clock = Clock()
    with serve_app(gateway.app) as base:
        source = JwksSource(url=f"{base}/.well-known/jwks.json", clock=clock, max_age=100)
        source.keys()
        clock.advance(fresh_for - 0.5)
        source.keys()
        assert gateway.fetches == 1
        clock.advance(1)
        source.keys()
        assert gateway.fetches == 2


def test_a_key_file_is_read_again_after_the_max_age_and_given_keys_never_expire(tmp_path: Path) -> None:
    """A key file (``--jwks-file``) is re-read like a URL, so replacing it takes a key out within the max age;
    a set given in code has nothing to re-read and keeps working."""
    other = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-2"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(JWKS))
    clock = Clock()
    source = JwksSource(file=path, clock=clock, max_age=100)
    assert [key.kid for key in source.keys().keys] == ["gw-1"]
    path.write_text(json.dumps({"keys": [other.as_dict(private=False)]}))
    clock.advance(101)
    assert [key.kid for key in source.keys().keys] == ["gw-2"]
    given = JwksSource(jwks=JWKS, clock=clock)
    given.keys()
    clock.advance(10**9)
    assert [key.kid for key in given.keys().keys] == ["gw-1"]


@pytest.mark.parametrize(("max_age", "stale_grace"), [(0, 10), (-1, 10), (float("nan"), 10), (10, -1)])
def test_a_max_age_that_is_not_positive_or_a_negative_grace_fails_at_start(max_age: float,
                                                                           stale_grace: float) -> None:
    with pytest.raises(ValueError, match="max age"):
        JwksSource(jwks=JWKS, max_age=max_age, stale_grace=stale_grace)
