"""The policy-engine interface and its two real backends.

* ``EmbeddedPolicyEngine`` evaluates the Rego files in-process with regorus (Rust; no OPA binary can be
  installed on our build machines, see DESIGN.md). A regorus ``Engine`` is not shared between threads:
  each thread builds its own. Once per engine it evaluates ``data.wgs.index.tables`` (facts that depend on
  the register only, see policies/index.rego) and loads them as ``data.register_index``: a cache of an
  input-independent part of the policy, computed by the policy itself.
* ``OpaServerPolicyEngine`` asks an OPA server (``opa run --server``) through opa-python-client's
  ``AsyncOpaClient``; the register is pushed to ``data.register`` on start.
Both raise only ``PolicyUnavailable`` or ``MalformedDecision`` — the caller denies on either.

``decide_many`` decides every target of one request in one evaluation (rule ``decisions``: the request
without ``holder`` plus ``holders``), so what does not depend on the holder is evaluated once per request;
each decision is exactly the one ``decide`` gives for that input.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import regorus

from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import Decision, PolicyInput, PolicyKind

RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decision", "discovery": "data.wgs.discovery.decision"}
OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decision", "discovery": "wgs/discovery/decision"}
BATCH_RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decisions",
                                      "discovery": "data.wgs.discovery.decisions"}
BATCH_OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decisions", "discovery": "wgs/discovery/decisions"}
INDEX_RULE = "data.wgs.index.tables"


class PolicyEngine(Protocol):
    name: str

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision: ...

    async def decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]: ...

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...


def policy_files(directory: Path) -> list[Path]:
    """The policy modules (not their tests)."""
    return sorted(p for p in directory.glob("*.rego") if not p.name.endswith("_test.rego"))


def batch_inputs(inputs: Sequence[PolicyInput]) -> list[tuple[list[int], dict[str, Any]]]:
    """Group ``inputs`` that differ only in ``request.holder`` into batch documents for the ``decisions``
    rules: ``[(positions in inputs, {"request": ... without holder, "context", "request_fingerprint",
    "holders": [...]}), ...]`` in order of first appearance."""
    groups: dict[str, tuple[list[int], dict[str, Any]]] = {}
    for position, policy_input in enumerate(inputs):
        document = policy_input.document()
        holder = document["request"].pop("holder")
        key = json.dumps(document, sort_keys=True, separators=(",", ":"))
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([], document | {"holders": []})
        group[0].append(position)
        group[1]["holders"].append(holder)
    return list(groups.values())


def _parse_batch(kind: PolicyKind, documents: Any, expected: int) -> list[Decision]:
    if not isinstance(documents, list) or len(documents) != expected:
        raise MalformedDecision("the policy produced no decision for some target (undefined)")
    return [Decision.parse(document, requires_obligations=kind == "exchange") for document in documents]


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
        self._index: dict[str, Any] | None = None
        self._index_lock = threading.Lock()
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
            engine.add_data({"register_index": self._register_index(engine)})
            self._local.engine = engine
        return engine

    def _register_index(self, engine: Any) -> dict[str, Any]:
        """``data.wgs.index.tables`` for this register, evaluated once (it reads no input) and shared by
        every thread's engine as plain Python data."""
        with self._index_lock:
            if self._index is None:
                engine.set_input_json("{}")
                try:
                    index = engine.eval_rule(INDEX_RULE)
                except RuntimeError as exc:
                    raise PolicyUnavailable("the policy could not index the register") from exc
                if not isinstance(index, dict):
                    raise PolicyUnavailable("the policy could not index the register (undefined)")
                self._index = index
            return self._index

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

    def decide_many_sync(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        engine = self._engine()
        decisions: list[Decision | None] = [None] * len(inputs)
        for positions, document in batch_inputs(inputs):
            try:
                engine.set_input_json(json.dumps(document))
                documents = engine.eval_rule(BATCH_RULES[kind])
            except RuntimeError as exc:
                raise PolicyUnavailable("the embedded policy engine failed to evaluate") from exc
            for position, decision in zip(positions, _parse_batch(kind, documents, len(positions)), strict=True):
                decisions[position] = decision
        return [d for d in decisions if d is not None]

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decide_sync, kind, policy_input)

    async def decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        if not inputs:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decide_many_sync, kind, list(inputs))

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

    async def _query(self, path: str, document: dict[str, Any]) -> Any:
        try:
            await self._ensure_data()
            result = await asyncio.wait_for(self._client.query_rule(input_data=document, package_path=path),
                                            timeout=self._timeout)
        except (TimeoutError, OSError) as exc:
            raise PolicyUnavailable(f"OPA server unavailable ({type(exc).__name__})") from exc
        except Exception as exc:  # opa-python-client raises its own ConnectionsError/others
            raise PolicyUnavailable(f"OPA server unavailable ({type(exc).__name__})") from exc
        if not isinstance(result, dict) or "result" not in result:
            raise MalformedDecision("the OPA server returned no result (policy undefined?)")
        return result["result"]

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        document = await self._query(OPA_PATHS[kind], policy_input.document())
        return Decision.parse(document, requires_obligations=kind == "exchange")

    async def decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        """One query of the ``decisions`` rule per group of inputs that differ only in the holder."""
        decisions: list[Decision | None] = [None] * len(inputs)
        for positions, document in batch_inputs(inputs):
            documents = await self._query(BATCH_OPA_PATHS[kind], document)
            for position, decision in zip(positions, _parse_batch(kind, documents, len(positions)), strict=True):
                decisions[position] = decision
        return [d for d in decisions if d is not None]

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
