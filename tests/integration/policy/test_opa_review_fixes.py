"""The OPA-server engine over real HTTP: its timeout bounds every call (the register push and concurrent
callers included), it pushes the register again after an OPA restart and its readiness check sees a
server without the register, and it reaches the OPA server at the URL as configured (scheme's default
port, a path prefix, an IPv6 address)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest

from gateway.policy.engine import OPA_PATHS, OpaServerPolicyEngine, _opa_client
from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import Decision
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_decision_table import REGISTER, TABLE
from tests.opa_test_server import create_opa_test_app
from tests.servers import serve_app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]

CASES = {row[0]: row[1] for row in TABLE}
S1_POLICE = CASES["S1-police"]  # allowed
S3 = CASES["S3"]  # denied
REGISTER_PUT = ("PUT", "/v1/data/register")


async def _empty_json(send: Send, status: int = 200) -> None:
    body = b"{}" if status == 200 else b""
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class RestartableOpa:
    """The OPA-compatible test server (tests/opa_test_server.py), restartable: ``restart()`` replaces it
    with a fresh one, without data, as a restarted ``opa run --server`` is. Records every (method, path).
    ``keeps_no_data``: register pushes are answered 204 and thrown away. ``undefined_discovery``: the
    discovery decision is undefined (``{}``) whatever the data."""

    def __init__(self) -> None:
        self.app = create_opa_test_app(POLICIES_DIR)
        self.seen: list[tuple[str, str]] = []
        self.keeps_no_data = False
        self.undefined_discovery = False

    def restart(self) -> None:
        self.app = create_opa_test_app(POLICIES_DIR)

    def count(self, method: str, path: str) -> int:
        return self.seen.count((method, path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            call = (scope["method"], scope["path"])
            self.seen.append(call)
            if self.keeps_no_data and call == REGISTER_PUT:
                await _empty_json(send, 204)
                return
            if self.undefined_discovery and call == ("POST", f"/v1/data/{OPA_PATHS['discovery']}"):
                await _empty_json(send)
                return
        await self.app(scope, receive, send)


@pytest.fixture
def opa() -> Iterator[tuple[str, RestartableOpa]]:
    server = RestartableOpa()
    with serve_app(server) as url:
        yield url, server


@pytest.fixture
async def engine(opa: tuple[str, RestartableOpa]) -> AsyncIterator[OpaServerPolicyEngine]:
    chosen = OpaServerPolicyEngine(opa[0], REGISTER, register_digest(REGISTER), timeout=5.0)
    yield chosen
    await chosen.aclose()


# 1. The timeout bounds every call ------------------------------------------------------------------------

@contextmanager
def _hanging_server() -> Iterator[tuple[str, list[int]]]:
    """A server that accepts connections and never answers (a hung OPA), on its own thread; yields its URL
    and a one-element list counting the connections it accepted."""
    accepted = [0]
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            release = asyncio.Event()

            async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                accepted[0] += 1
                await release.wait()
                writer.close()

            server = await asyncio.start_server(hang, "127.0.0.1", 0)
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["stop"] = lambda: loop.call_soon_threadsafe(release.set)
            holder["loop"] = loop
            ready.set()
            await release.wait()
            server.close()
            await asyncio.sleep(0.05)

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}", accepted
    finally:
        holder["stop"]()
        thread.join(10)


async def test_concurrent_decisions_against_a_hung_server_each_fail_within_the_timeout() -> None:
    """Six decisions at once before the register was ever pushed: each fails (PolicyUnavailable) within
    its 0.5 s, not the k-th after k x 0.5 s, and they share one push attempt (one connection)."""
    with _hanging_server() as (url, accepted):
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=0.5)
        started = time.monotonic()

        async def one() -> tuple[float, BaseException | None]:
            try:
                await engine.decide("exchange", S1_POLICE)
            except PolicyUnavailable as exc:
                return time.monotonic() - started, exc
            return time.monotonic() - started, None

        results = await asyncio.gather(*(one() for _ in range(6)))
        await engine.aclose()
    assert all(isinstance(exc, PolicyUnavailable) for _, exc in results), results
    assert max(elapsed for elapsed, _ in results) < 0.85, results
    assert accepted[0] == 1


async def test_check_and_decide_many_against_a_hung_server_fail_within_the_timeout() -> None:
    with _hanging_server() as (url, _):
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=0.4)
        started = time.monotonic()
        outcomes = await asyncio.gather(engine.check(), engine.decide_many("exchange", [S1_POLICE, S3]),
                                        engine.decide("discovery", S3), return_exceptions=True)
        elapsed = time.monotonic() - started
        await engine.aclose()
    assert all(isinstance(outcome, PolicyUnavailable) for outcome in outcomes), outcomes
    assert elapsed < 0.75


# 2. An OPA restart -------------------------------------------------------------------------------------

async def test_after_an_opa_restart_the_register_is_pushed_again_and_the_decision_asked_again(
        opa: tuple[str, RestartableOpa], engine: OpaServerPolicyEngine) -> None:
    _, server = opa
    before = await engine.decide("exchange", S1_POLICE)
    assert before.outcome == "allowed"
    assert server.count(*REGISTER_PUT) == 1
    server.restart()  # the register is gone
    assert await engine.decide("exchange", S1_POLICE) == before
    assert server.count(*REGISTER_PUT) == 2
    server.restart()  # the batch rule gives [] without the register
    assert [d.outcome for d in await engine.decide_many("exchange", [S1_POLICE, S3])] == ["allowed", "denied"]
    assert (await engine.decide("discovery", S3)).outcome == "denied"
    assert server.count(*REGISTER_PUT) == 3


async def test_concurrent_decisions_after_a_restart_share_one_push(opa: tuple[str, RestartableOpa],
                                                                   engine: OpaServerPolicyEngine) -> None:
    _, server = opa
    await engine.decide("exchange", S1_POLICE)
    server.restart()
    decisions = await asyncio.gather(*(engine.decide("exchange", S1_POLICE) for _ in range(5)))
    assert {d.outcome for d in decisions} == {"allowed"}
    assert server.count(*REGISTER_PUT) == 2


async def test_readiness_pushes_the_register_again_after_a_restart(opa: tuple[str, RestartableOpa],
                                                                   engine: OpaServerPolicyEngine) -> None:
    _, server = opa
    await engine.check()
    assert server.count(*REGISTER_PUT) == 1
    server.restart()
    await engine.check()  # would otherwise say ready with no register on the server
    assert server.count(*REGISTER_PUT) == 2
    assert (await engine.decide("exchange", S1_POLICE)).outcome == "allowed"
    assert server.count(*REGISTER_PUT) == 2


async def test_a_server_that_keeps_no_register_is_not_ready_and_every_decision_fails_closed(
        opa: tuple[str, RestartableOpa], engine: OpaServerPolicyEngine) -> None:
    _, server = opa
    server.keeps_no_data = True
    with pytest.raises(PolicyUnavailable, match="register"):
        await engine.check()
    server.seen.clear()
    with pytest.raises(MalformedDecision):
        await engine.decide("exchange", S1_POLICE)
    # the query, the probe, one push, the query once more: no loop
    assert server.count(*REGISTER_PUT) == 1
    assert server.count("POST", f"/v1/data/{OPA_PATHS['exchange']}") == 3
    with pytest.raises(MalformedDecision):
        await engine.decide_many("exchange", [S1_POLICE, S3])


async def test_an_undefined_decision_with_the_register_in_place_is_not_pushed_again(
        opa: tuple[str, RestartableOpa], engine: OpaServerPolicyEngine) -> None:
    _, server = opa
    await engine.check()
    server.undefined_discovery = True
    with pytest.raises(MalformedDecision):
        await engine.decide("discovery", S3)
    assert server.count(*REGISTER_PUT) == 1


async def test_an_unexpected_error_is_policy_unavailable(engine: OpaServerPolicyEngine,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("surprise")

    monkeypatch.setattr(engine._client, "query_rule", broken)
    with pytest.raises(PolicyUnavailable):
        await engine.decide("exchange", S1_POLICE)
    with pytest.raises(PolicyUnavailable):
        await engine.check()


# 3. The configured URL ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "root"), [
    ("https://opa.example.org", "https://opa.example.org:443/v1"),
    ("http://opa.example.org", "http://opa.example.org:80/v1"),
    ("https://gw.example.org/opa", "https://gw.example.org:443/opa/v1"),
    ("https://gw.example.org/a/opa/", "https://gw.example.org:443/a/opa/v1"),
    ("http://[::1]:8181", "http://[::1]:8181/v1"),
    ("http://opa:8181", "http://opa:8181/v1"),
])
def test_the_client_address_is_the_configured_url(url: str, root: str) -> None:
    assert _opa_client(url, 1.0, None, None).root_url == root


@pytest.mark.parametrize("url", ["opa:8181", "ftp://opa:8181", "http://", "http://opa:99999",
                                 "http://user:secret@opa:8181", "http://opa:8181/?x=1"])
def test_a_url_the_client_cannot_use_as_written_is_refused(url: str) -> None:
    with pytest.raises(PolicyUnavailable, match="invalid OPA URL") as refused:
        OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER))
    assert url not in str(refused.value)  # it may carry a password
    assert "secret" not in str(refused.value)


class UnderPrefix:
    """The test server behind a reverse proxy that serves it under ``prefix`` (404 elsewhere): the ASGI
    ``root_path``, as uvicorn's ``--root-path`` sets it behind such a proxy."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(self.prefix + "/"):
            await _empty_json(send, 404)
            return
        inner = dict(scope, root_path=scope.get("root_path", "") + self.prefix)
        await self.app(inner, receive, send)


async def _decides(url: str) -> Decision:
    engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
    try:
        await engine.check()
        return await engine.decide("exchange", S1_POLICE)
    finally:
        await engine.aclose()


async def test_an_opa_server_under_a_path_prefix_is_reached() -> None:
    with serve_app(UnderPrefix(create_opa_test_app(POLICIES_DIR), "/opa")) as url:
        assert (await _decides(f"{url}/opa")).outcome == "allowed"
        assert (await _decides(f"{url}/opa/")).outcome == "allowed"


async def test_an_opa_server_at_an_ipv6_address_is_reached() -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR), host="::1") as url:
        assert (await _decides(url)).outcome == "allowed"


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0.0, -1.0])
def test_an_engine_without_a_real_timeout_is_refused_when_built(timeout: float) -> None:
    """A NaN timeout never fires (``asyncio.timeout(nan)``): against a hung server the callers would wait
    forever instead of being denied; refused when the engine is made, whoever makes it."""
    with pytest.raises(ValueError, match="positive, finite"):
        OpaServerPolicyEngine("http://127.0.0.1:8181", REGISTER, register_digest(REGISTER), timeout=timeout)
