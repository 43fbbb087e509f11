"""The policy-engine interface and its two real backends.

* ``EmbeddedPolicyEngine`` evaluates the Rego files in-process with regorus (Rust; no OPA binary can be
  installed on our build machines, see DESIGN.md). A regorus ``Engine`` is not shared between threads:
  each thread gets its own clone of a prepared engine.
* ``OpaServerPolicyEngine`` asks an OPA server (``opa run --server``) through opa-python-client's
  ``AsyncOpaClient``; the register is pushed to ``data.register`` on start.
Both raise only ``PolicyUnavailable`` or ``MalformedDecision`` — the caller denies on either.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import regorus

from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import Decision, PolicyInput, PolicyKind

RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decision", "discovery": "data.wgs.discovery.decision"}
OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decision", "discovery": "wgs/discovery/decision"}


class PolicyEngine(Protocol):
    name: str

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision: ...

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...


def policy_files(directory: Path) -> list[Path]:
    """The policy modules (not their tests)."""
    return sorted(p for p in directory.glob("*.rego") if not p.name.endswith("_test.rego"))


class EmbeddedPolicyEngine:
    """regorus in-process. A regorus engine is *unsendable*: it must be created, used and dropped on one
    thread. So each thread builds its own engine from the policy sources (thread-local), and the async
    path runs on one dedicated worker thread that also drops its engine on ``aclose``."""

    name = "embedded"

    def __init__(self, policies_dir: Path, register_data: dict[str, Any]) -> None:
        self._sources = [(str(path), path.read_text(encoding="utf-8")) for path in policy_files(policies_dir)]
        if not self._sources:
            raise PolicyUnavailable(f"no Rego policies found in {policies_dir}")
        self._data = json.dumps({"register": register_data})
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rego")
        self._executor.submit(self._engine).result()  # compile once up front: a broken policy fails the start

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = regorus.Engine()
            for name, text in self._sources:
                engine.add_policy(name, text)
            engine.add_data_json(self._data)
            self._local.engine = engine
        return engine

    def release_thread_engine(self) -> None:
        """Drop this thread's engine (call on the thread that used ``decide_sync``)."""
        self._local.__dict__.pop("engine", None)

    def decide_sync(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        engine = self._engine()
        try:
            engine.set_input_json(json.dumps(policy_input.document()))
            document = engine.eval_rule(RULES[kind])
        except RuntimeError as exc:  # a Rego runtime error is an engine failure, not a decision
            raise PolicyUnavailable("the embedded policy engine failed to evaluate") from exc
        if document is None:
            raise MalformedDecision("the policy produced no decision (undefined)")
        return Decision.parse(document, requires_obligations=kind == "exchange")

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decide_sync, kind, policy_input)

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._engine)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.release_thread_engine)
        self._executor.shutdown(wait=True)


def _opa_client(url: str, timeout: float, token: str | None, ca_file: str | None) -> Any:
    """An ``AsyncOpaClient`` for ``url``; with ``ca_file`` the server certificate is checked against it."""
    import ssl
    from urllib.parse import urlparse

    import aiohttp
    from opa_client import AsyncOpaClient

    class _Client(AsyncOpaClient):  # type: ignore[misc]
        async def _init_session(self) -> None:
            context = ssl.create_default_context(cafile=ca_file) if self.ssl else None
            self._connector = aiohttp.TCPConnector(ssl=context if context else False, limit=64)
            self._session = aiohttp.ClientSession(headers=self.headers, connector=self._connector,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))

    parsed = urlparse(url)
    return _Client(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8181, ssl=parsed.scheme == "https",
                   token=token, timeout=timeout, retries=0)


class OpaServerPolicyEngine:
    name = "opa"

    def __init__(self, url: str, register_data: dict[str, Any], *, timeout: float = 2.0, token: str | None = None,
                 ca_file: str | None = None) -> None:
        self._client = _opa_client(url, timeout, token, ca_file)
        self._timeout = timeout
        self._register = register_data
        self._pushed = False
        self._lock = asyncio.Lock()

    async def _ensure_data(self) -> None:
        if self._pushed:
            return
        async with self._lock:
            if self._client._session is None:
                await self._client._init_session()
            if not self._pushed:
                await asyncio.wait_for(self._client.update_or_create_data(self._register, "register"),
                                       timeout=self._timeout)
                self._pushed = True

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        try:
            await self._ensure_data()
            result = await asyncio.wait_for(
                self._client.query_rule(input_data=policy_input.document(), package_path=OPA_PATHS[kind]),
                timeout=self._timeout)
        except (TimeoutError, OSError) as exc:
            raise PolicyUnavailable(f"OPA server unavailable ({type(exc).__name__})") from exc
        except Exception as exc:  # opa-python-client raises its own ConnectionsError/others
            raise PolicyUnavailable(f"OPA server unavailable ({type(exc).__name__})") from exc
        if not isinstance(result, dict) or "result" not in result:
            raise MalformedDecision("the OPA server returned no result (policy undefined?)")
        return Decision.parse(result["result"], requires_obligations=kind == "exchange")

    async def check(self) -> None:
        try:
            await self._ensure_data()
            await asyncio.wait_for(self._client.check_connection(), timeout=self._timeout)
        except Exception as exc:
            raise PolicyUnavailable(f"OPA server unavailable ({type(exc).__name__})") from exc

    async def aclose(self) -> None:
        await self._client.close_connection()


def build_policy_engine(kind: str, policies_dir: Path, register_data: dict[str, Any], *, opa_url: str = "",
                        timeout: float = 2.0, token: str | None = None, ca_file: str | None = None) -> PolicyEngine:
    if kind == "opa":
        return OpaServerPolicyEngine(opa_url, register_data, timeout=timeout, token=token, ca_file=ca_file)
    return EmbeddedPolicyEngine(policies_dir, register_data)
