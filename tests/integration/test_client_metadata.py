"""The partner client reads the audience of its client assertion from the gateway's authorisation server
metadata (RFC 8414) only when that metadata is the gateway's it was made for: the ``issuer`` identical to the
one expected (``issuer=``, else ``base_url``) and the ``token_endpoint`` on that issuer's origin. Over real
HTTP: the real gateway app, and stand-ins that answer metadata naming another authorisation server — among
them one that passes on the assertion it is sent to the real gateway whose token endpoint its metadata named
(audience injection), which must get no assertion, let alone a token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient

from gateway.client.api import GatewayClient, InvalidResponse, MetadataMismatch, metadata_url
from gateway.container import Container
from tests.auth_helpers import ClientKeys, register_client
from tests.servers import serve_app

SYSTEM = "gemeente-amsterdam-vth"


@pytest.fixture
def real_gateway(app: FastAPI) -> Iterator[str]:
    with serve_app(app) as url:
        yield url


@pytest.fixture
def keys(container: Container) -> ClientKeys:
    return register_client(container, SYSTEM, ["exchange"])


def _client(url: str, keys: ClientKeys, container: Container, **options: Any) -> GatewayClient:
    return GatewayClient(url, keys.system_id, keys.key, clock=lambda: container.clock.now().timestamp(), retries=0,
                         **options)


@dataclass
class Impostor:
    """A server the partner was pointed at (a test environment's gateway, a host taken over, a wrong address)
    that answers ``metadata`` and, for a token request, passes the client assertion it got on to ``victim``'s
    token endpoint — where the partner's key is registered too — and answers what that gave."""

    victim: str
    metadata: dict[str, Any] = field(default_factory=dict)
    assertions: list[str] = field(default_factory=list)
    victim_answers: list[int] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/oauth-authorization-server")
        async def metadata() -> dict[str, Any]:
            return self.metadata

        @app.post("/oauth/token")
        async def token(request: Request) -> Response:
            form = dict(await request.form())
            self.assertions.append(str(form.get("client_assertion")))
            async with httpx.AsyncClient() as http:
                passed_on = await http.post(f"{self.victim}/oauth/token", data=form)
            self.victim_answers.append(passed_on.status_code)
            return JSONResponse(passed_on.json(), status_code=passed_on.status_code)

        return app


def _attacks(impostor: str, issuer: str) -> dict[str, dict[str, Any]]:
    """Metadata documents the impostor at ``impostor`` may answer, for the real gateway of ``issuer``."""
    victim_endpoint = f"{issuer}/oauth/token"
    return {
        "the real gateway's metadata, copied": {"issuer": issuer, "token_endpoint": victim_endpoint},
        "its own issuer, the real gateway's token endpoint": {"issuer": impostor, "token_endpoint": victim_endpoint},
        "no issuer": {"token_endpoint": victim_endpoint},
        "its own issuer with a trailing slash": {"issuer": f"{impostor}/", "token_endpoint": victim_endpoint},
        "its own issuer, an endpoint on its host but another port": {
            "issuer": impostor, "token_endpoint": impostor.rsplit(":", 1)[0] + ":1/oauth/token"},
        "its own issuer, an endpoint of another scheme": {
            "issuer": impostor, "token_endpoint": impostor.replace("http://", "https://") + "/oauth/token"},
        "its own issuer, an endpoint with credentials": {
            "issuer": impostor, "token_endpoint": impostor.replace("http://", "http://x:y@") + "/oauth/token"},
        "its own issuer, a relative endpoint": {"issuer": impostor, "token_endpoint": "/oauth/token"},
        "an issuer that is no string": {"issuer": [impostor], "token_endpoint": f"{impostor}/oauth/token"},
    }


ATTACKS = list(_attacks("http://127.0.0.1:1", "https://gateway.wgs.local"))


@pytest.mark.parametrize("attack", ATTACKS)
async def test_metadata_naming_another_authorisation_server_gets_no_assertion_signed(
        attack: str, real_gateway: str, keys: ClientKeys, container: Container) -> None:
    impostor = Impostor(victim=real_gateway)
    with serve_app(impostor.app()) as url:
        impostor.metadata = _attacks(url, container.settings.issuer)[attack]
        async with _client(url, keys, container) as client:
            with pytest.raises(MetadataMismatch) as refused:
                await client.token()
    assert impostor.assertions == [], "no assertion was signed for, or sent to, another audience"
    assert impostor.victim_answers == []
    assert isinstance(refused.value, InvalidResponse)
    assert refused.value.status == 200
    assert f"{container.settings.issuer}/oauth/token" not in str(refused.value), "what was answered is not quoted"
    assert "issuer=" in str(refused.value) or "token_audience=" in str(refused.value)


async def test_the_check_is_made_again_on_the_next_call_not_passed_once_failed(
        real_gateway: str, keys: ClientKeys, container: Container) -> None:
    impostor = Impostor(victim=real_gateway)
    with serve_app(impostor.app()) as url:
        impostor.metadata = _attacks(url, container.settings.issuer)["the real gateway's metadata, copied"]
        async with _client(url, keys, container) as client:
            for _ in range(2):
                with pytest.raises(MetadataMismatch):
                    await client.token()
    assert impostor.assertions == []


async def test_the_real_gateway_reached_at_another_address_needs_its_issuer(
        real_gateway: str, keys: ClientKeys, container: Container) -> None:
    assert not real_gateway.startswith(container.settings.issuer), "reached at an address other than its issuer"
    async with _client(real_gateway, keys, container) as client:
        with pytest.raises(MetadataMismatch, match="issuer="):
            await client.token()
    async with _client(real_gateway, keys, container, issuer=container.settings.issuer) as client:
        assert await client.token()
    async with _client(real_gateway, keys, container, issuer=f"{container.settings.issuer}/") as client:
        assert await client.token(), "a trailing slash given is the issuer the gateway names without one"


async def test_the_real_gateway_at_its_issuer_needs_no_issuer_given(
        real_gateway: str, keys: ClientKeys, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container.settings, "issuer", real_gateway)
    async with _client(real_gateway, keys, container) as client:
        assert await client.token()


@dataclass
class PathProxy:
    """A reverse proxy that publishes the gateway under ``/wgs`` (passed on without the prefix) and passes on the
    metadata request of RFC 8414 section 3.1 from the host's root as it is — and nothing else: what a proxy in
    front of a gateway whose ``WGS_ISSUER`` has a path is configured to do. Records the paths it was asked."""

    app: Any
    asked: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            self.asked.append(path)
            if path.startswith("/wgs/"):
                path = path.removeprefix("/wgs")
            elif path != "/.well-known/oauth-authorization-server/wgs":
                await Response(status_code=404)(scope, receive, send)
                return
            scope = scope | {"path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


async def test_a_gateway_under_a_path_is_asked_for_its_metadata_where_rfc_8414_puts_it(
        app: FastAPI, keys: ClientKeys, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the client appended the well-known path to ``base_url`` (``/wgs/.well-known/...``, OpenID Connect
    Discovery's rule), and the gateway served its metadata only at its own root."""
    proxy = PathProxy(app)
    with serve_app(proxy) as url:
        monkeypatch.setattr(container.settings, "issuer", f"{url}/wgs")
        async with _client(f"{url}/wgs/", keys, container) as client:
            assert await client.token()
    assert proxy.asked == ["/.well-known/oauth-authorization-server/wgs", "/wgs/oauth/token"]


@dataclass
class PrefixOnlyProxy:
    """A reverse proxy that passes on only what is under ``/wgs`` (without the prefix): the host-root request of
    RFC 8414 section 3.1 never reaches the gateway. Records the paths it was asked."""

    app: Any
    asked: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.asked.append(scope["path"])
            if not scope["path"].startswith("/wgs/"):
                await Response(status_code=404)(scope, receive, send)
                return
            path = scope["path"].removeprefix("/wgs")
            scope = scope | {"path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


async def test_a_gateway_behind_a_proxy_of_its_prefix_alone_is_asked_at_the_old_address_after_a_404(
        app: FastAPI, keys: ClientKeys, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployments configured for the client before RFC 8414's address forward only the gateway's prefix: the
    client asks again where it asked before, and still checks the issuer the answer names."""
    proxy = PrefixOnlyProxy(app)
    with serve_app(proxy) as url:
        monkeypatch.setattr(container.settings, "issuer", f"{url}/wgs")
        async with _client(f"{url}/wgs", keys, container) as client:
            assert await client.token()
        monkeypatch.setattr(container.settings, "issuer", f"{url}/other")
        async with _client(f"{url}/wgs", keys, container) as client:
            with pytest.raises(MetadataMismatch):
                await client.token()
    assert proxy.asked[:3] == ["/.well-known/oauth-authorization-server/wgs",
                               "/wgs/.well-known/oauth-authorization-server", "/wgs/oauth/token"]


@pytest.mark.parametrize(("issuer", "path"), [
    ("https://gw.example/wgs", "/other"), ("https://gw.example/wgs", "/wgs/more"), ("https://gw.example/wgs", "/"),
    ("https://gw.example", "/wgs"), ("https://gw.example/", "/"), ("https://gw.example/a/b", "/a")])
def test_metadata_under_a_path_is_only_the_issuers_own(client: TestClient, container: Container,
                                                        monkeypatch: pytest.MonkeyPatch, issuer: str,
                                                        path: str) -> None:
    """Metadata under another path would be this gateway's posing as another issuer's on the same host."""
    monkeypatch.setattr(container.settings, "issuer", issuer)
    answer = client.get("/.well-known/oauth-authorization-server" + path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("issuer", ["https://gw.example/wgs", "https://gw.example/wgs/", "https://gw.example/a/b"])
def test_metadata_of_an_issuer_with_a_path_is_where_rfc_8414_puts_it(
        client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch, issuer: str) -> None:
    monkeypatch.setattr(container.settings, "issuer", issuer)
    path = httpx.URL(issuer).path.rstrip("/")
    assert metadata_url(issuer) == f"https://gw.example/.well-known/oauth-authorization-server{path}"
    answer = client.get(f"/.well-known/oauth-authorization-server{path}")
    assert answer.status_code == 200
    assert answer.json()["issuer"] == issuer.rstrip("/")
    assert answer.json() == client.get("/.well-known/oauth-authorization-server").json(), "the old place stays"


def test_a_path_less_gateway_is_asked_where_it_always_was() -> None:
    assert metadata_url("https://gw.example") == "https://gw.example/.well-known/oauth-authorization-server"
    assert metadata_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/.well-known/oauth-authorization-server"


async def test_token_audience_given_reads_no_metadata(real_gateway: str, keys: ClientKeys,
                                                      container: Container) -> None:
    impostor = Impostor(victim=real_gateway)
    with serve_app(impostor.app()) as url:
        impostor.metadata = {"issuer": "https://elsewhere.example", "token_endpoint": "https://elsewhere.example/t"}
        async with _client(url, keys, container, token_audience=f"{container.settings.issuer}/oauth/token") as client:
            assert await client.token()  # as before: the caller named the audience itself
    assert len(impostor.assertions) == 1


@pytest.mark.parametrize("issuer", ["gateway.wgs.local", "https://gateway.wgs.local?x=1",
                                    "https://gateway.wgs.local#f", "ftp://gateway.wgs.local", "https://"])
def test_an_issuer_that_is_no_issuer_identifier_is_refused_when_the_client_is_made(
        issuer: str, keys: ClientKeys) -> None:
    with pytest.raises(ValueError, match="issuer"):
        GatewayClient("https://gateway.example", keys.system_id, keys.key, issuer=issuer)
