"""deploy/opa/authz.rego, the OPA server's own API authorization (``opa run --authentication token
--authorization basic`` in docker-compose.yml). Without it OPA answers every call with 401 and the
stack never becomes healthy; with a too-loose one anybody on the network could replace the policies.

There is no OPA binary here, so the policy is evaluated with regorus on input documents built the way
OPA's authorizer builds them (server/authorizer: ``path`` is the URL path after the first "/" split at
"/", ``method`` upper case, ``headers`` as lists; server/identifier: ``identity`` is the token of an
``Authorization: Bearer <token>`` header, absent otherwise). regorus's ``opa.runtime()`` has no ``env``,
so the expected token is supplied with ``with opa.runtime as {"env": ...}``, replacing exactly the call
OPA answers from its process environment.

The last tests drive the gateway's real OPA-server client (OpaServerPolicyEngine, opa-python-client)
against the OPA-compatible test server guarded by this policy, so the allowed calls are the ones the
gateway really makes, not a list copied from the policy."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import regorus

from gateway.policy.engine import BATCH_OPA_PATHS, OPA_PATHS, OpaServerPolicyEngine, policy_files
from gateway.policy.errors import PolicyUnavailable
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.opa_test_server import create_opa_test_app
from tests.servers import serve_app
from tests.unit.policy.test_policy_batch import REGISTER, requests

AUTHZ = Path(__file__).resolve().parents[3] / "deploy" / "opa" / "authz.rego"
TOKEN = "s3cr3t-shared-0pa-t0ken"
ENV = {"WGS_OPA_TOKEN": TOKEN}
_BEARER = re.compile(r"^Bearer\s+(\S+)$")  # OPA's server/identifier/token.go


def _engine() -> Any:
    engine = regorus.Engine()
    engine.add_policy(str(AUTHZ), AUTHZ.read_text())
    return engine


def opa_input(method: str, url_path: str, authorization: str | None = None) -> dict[str, Any]:
    """The input document OPA's authorizer evaluates ``data.system.authz.allow`` with."""
    headers = {"Content-Type": ["application/json"]}
    document: dict[str, Any] = {"method": method.upper(), "path": url_path[1:].split("/"), "params": {}}
    if authorization is not None:
        headers["Authorization"] = [authorization]
        match = _BEARER.match(authorization)
        if match:
            document["identity"] = match.group(1)
    document["headers"] = headers
    return document


def allowed(document: dict[str, Any], env: dict[str, str] | None = None, engine: Any = None) -> bool:
    engine = engine or _engine()
    engine.set_input_json(json.dumps(document))
    runtime = json.dumps({"env": ENV if env is None else env})
    result = engine.eval_query(f"data.system.authz.allow with opa.runtime as {runtime}")
    values = [e["value"] for r in result["result"] for e in r["expressions"]]
    assert len(values) == 1, values  # `default allow := false`: never undefined
    assert isinstance(values[0], bool), values
    return values[0]


# (method, URL path) of every call the gateway's OPA-server engine makes, from the engine's own constants.
GATEWAY_CALLS = [("GET", "/v1/policies/"), ("GET", "/v1/policies"), ("PUT", "/v1/data/register"),
                 *[("POST", f"/v1/data/{path}") for path in (*OPA_PATHS.values(), *BATCH_OPA_PATHS.values())]]

# What a token holder must still not do: change or delete policies or data, read data, ad-hoc queries,
# other decisions (including OPA's own authorization), the v0 API, diagnostics.
FORBIDDEN = [("PUT", "/v1/policies/wgs"), ("DELETE", "/v1/policies/wgs"), ("PUT", "/v1/policies/authz"),
             ("GET", "/v1/policies/deploy/opa/authz.rego"), ("DELETE", "/v1/data/register"),
             ("PATCH", "/v1/data/register"), ("GET", "/v1/data/register"), ("POST", "/v1/data/register"),
             ("GET", "/v1/data"), ("POST", "/v1/data"), ("PUT", "/v1/data"), ("PUT", "/v1/data/register/extra"),
             ("PUT", "/v1/data/wgs/exchange/decision"), ("GET", "/v1/data/wgs/exchange/decision"),
             ("POST", "/v1/data/wgs/exchange"), ("POST", "/v1/data/wgs/exchange/decision/extra"),
             ("POST", "/v1/data/wgs/index/tables"), ("POST", "/v1/data/system/authz/allow"),
             ("PUT", "/v1/data/system/authz"), ("POST", "/v1/query"), ("GET", "/v1/query"),
             ("POST", "/v1/compile"), ("GET", "/v1/config"), ("GET", "/v1/status"), ("GET", "/metrics"),
             ("POST", "/v0/data/wgs/exchange/decision"), ("POST", "/"), ("DELETE", "/health"), ("POST", "/health")]


def test_the_gateway_calls_cover_every_decision_path_of_the_engine() -> None:
    """Both policy kinds, single and batched: a path added to the engine without the policy would 401."""
    assert {kind for kind in OPA_PATHS} == {kind for kind in BATCH_OPA_PATHS} == {"exchange", "discovery"}
    assert len(GATEWAY_CALLS) == 3 + 4


@pytest.mark.parametrize(("method", "path"), GATEWAY_CALLS)
def test_the_token_holder_may_make_the_gateways_calls(method: str, path: str) -> None:
    assert allowed(opa_input(method, path, f"Bearer {TOKEN}"))


@pytest.mark.parametrize(("method", "path"), GATEWAY_CALLS)
@pytest.mark.parametrize("authorization", [
    None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN.upper()}", "Bearer other-token",
    f"Basic {TOKEN}", TOKEN, "Bearer ",
])
def test_without_the_token_the_gateways_calls_are_refused(method: str, path: str, authorization: str | None) -> None:
    """Missing, wrong, near-miss or non-bearer credentials: OPA answers 401."""
    assert not allowed(opa_input(method, path, authorization))


@pytest.mark.parametrize(("method", "path"), FORBIDDEN)
def test_the_token_holder_may_do_nothing_else(method: str, path: str) -> None:
    assert not allowed(opa_input(method, path, f"Bearer {TOKEN}"))


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}"])
def test_the_health_check_needs_no_token(authorization: str | None) -> None:
    """The container health check asks GET /health without credentials."""
    assert allowed(opa_input("GET", "/health", authorization))
    assert not allowed(opa_input("GET", "/health/extra", authorization))


@pytest.mark.parametrize("env", [{}, {"WGS_OPA_TOKEN": ""}, {"OTHER": TOKEN}])
def test_an_opa_without_the_expected_token_refuses_all_but_health(env: dict[str, str]) -> None:
    """Fail closed if the container lost WGS_OPA_TOKEN: no caller, not even one sending an empty or no
    token, matches a missing expected token."""
    engine = _engine()
    for method, path in GATEWAY_CALLS:
        for authorization in (None, f"Bearer {TOKEN}", "Bearer "):
            document = opa_input(method, path, authorization)
            assert not allowed(document, env, engine)
            assert not allowed({**document, "identity": ""}, env, engine)
    assert allowed(opa_input("GET", "/health"), env, engine)


def test_the_expected_token_comes_from_the_opa_process_environment() -> None:
    """A different WGS_OPA_TOKEN in OPA's environment changes who is let in (no token in the file)."""
    document = opa_input("POST", "/v1/data/wgs/exchange/decision", "Bearer rotated-token")
    assert not allowed(document)
    assert allowed(document, {"WGS_OPA_TOKEN": "rotated-token"})
    assert TOKEN not in AUTHZ.read_text()


def test_the_authorization_policy_stays_out_of_the_embedded_engine() -> None:
    """The embedded engine loads policies/; OPA's server authorization must neither be there nor be
    shadowed by a `system` package there (both are loaded into one OPA)."""
    assert AUTHZ.parent.resolve() != POLICIES_DIR.resolve()
    assert AUTHZ.resolve() not in {p.resolve() for p in policy_files(POLICIES_DIR)}
    packages = [re.search(r"^package\s+(\S+)", p.read_text(), re.MULTILINE) for p in POLICIES_DIR.rglob("*.rego")]
    assert packages
    assert all(m is not None and not m.group(1).startswith("system") for m in packages)
    assert re.search(r"^package system\.authz$", AUTHZ.read_text(), re.MULTILINE)


# The real client against a server guarded by the policy ------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]


class Guarded:
    """An ASGI wrapper that asks authz.rego before each HTTP request, as OPA's authorizer does, and
    answers 401 with OPA's error body when it says no; records every (method, path, allowed)."""

    def __init__(self, app: Any, env: dict[str, str]) -> None:
        self.app, self.env = app, env
        self.local = threading.local()  # a regorus engine must stay in (and die with) the server's thread
        self.seen: list[tuple[str, str, bool]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        document = opa_input(scope["method"], scope["path"], headers.get("authorization"))
        if getattr(self.local, "engine", None) is None:
            self.local.engine = _engine()
        verdict = allowed(document, self.env, self.local.engine)
        self.seen.append((scope["method"], scope["path"], verdict))
        if verdict:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"code": "unauthorized", "message": "request rejected by administrative policy"})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body.encode()})


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[str, Guarded]]:
    app = Guarded(create_opa_test_app(POLICIES_DIR), ENV)
    with serve_app(app) as url:
        yield url, app


INPUTS = requests(seed=5, count=2)  # two requests of two holders each: decide_many queries `decisions`


async def test_the_gateway_with_the_token_is_served(guarded: tuple[str, Guarded]) -> None:
    """Readiness, the register push, single and batched decisions of both kinds all get through."""
    url, app = guarded
    app.seen.clear()
    engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0, token=TOKEN)
    try:
        await engine.check()
        for kind in ("exchange", "discovery"):
            assert (await engine.decide(kind, INPUTS[0][0])).outcome
            assert len(await engine.decide_many(kind, INPUTS[1])) == len(INPUTS[1])
    finally:
        await engine.aclose()
    assert app.seen
    assert all(verdict for _, _, verdict in app.seen), app.seen
    calls = {(method, path) for method, path, _ in app.seen}
    assert ("PUT", "/v1/data/register") in calls
    assert ("GET", "/v1/policies") in calls  # readiness, at OPA's own path (no redirect to follow)
    assert {("POST", f"/v1/data/{p}") for p in (*OPA_PATHS.values(), *BATCH_OPA_PATHS.values())} <= calls


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_the_gateway_without_the_token_is_refused_and_fails_closed(guarded: tuple[str, Guarded],
                                                                         token: str | None) -> None:
    """OPA's 401 reaches the gateway as PolicyUnavailable (readiness fails, decisions are refused), never
    as a decision; nothing gets past the policy."""
    url, app = guarded
    app.seen.clear()
    engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0, token=token)
    try:
        with pytest.raises(PolicyUnavailable):
            await engine.check()
        with pytest.raises(PolicyUnavailable):
            await engine.decide("exchange", INPUTS[0][0])
    finally:
        await engine.aclose()
    assert app.seen
    assert not any(verdict for _, _, verdict in app.seen), app.seen
