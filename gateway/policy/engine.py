"""The policy-engine interface and its two real backends.

* ``EmbeddedPolicyEngine`` evaluates the Rego files in-process with regorus (Rust; no OPA binary can be
  installed on our build machines, see DESIGN.md), with one of regorus's two evaluators:

  - ``"rvm"`` (the default): the policies compiled once per register version to a regorus RVM
    ``Program`` (bytecode) and run on a register VM, several times faster per evaluation;
  - ``"interpreter"``: regorus's tree-walking ``Engine``, kept to check the RVM against
    (tests/unit/policy/test_rvm_equivalence.py) and as the reference.

  The RVM departs from OPA in a few corners (policies/common.rego lists them and how the policies avoid
  them); the equivalence test runs both evaluators over the decision table and a product of every
  partnership, purpose, requester, holder and more, and any difference fails. What the RVM returns is
  checked as strictly as the interpreter's: an error, an undefined result, or an undefined value inside
  a decision raise ``PolicyUnavailable``/``MalformedDecision`` (deny).

  Once per engine, the interpreter evaluates ``data.wgs.index.tables`` (facts that depend on the
  register only, see policies/index.rego) and both evaluators get the result, as JSON, as
  ``data.register_index``: a cache of an input-independent part of the policy, computed by the policy
  itself. regorus objects are *unsendable* (made, used and dropped on one thread), so each thread builds
  its own evaluator from shared bytes and strings (the sources, the data JSON, the serialized program).
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
from typing import Any, Literal, Protocol

import regorus
from pydantic import TypeAdapter

from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import Decision, Party, PolicyInput, PolicyKind

RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decision", "discovery": "data.wgs.discovery.decision"}
OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decision", "discovery": "wgs/discovery/decision"}
BATCH_RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decisions",
                                      "discovery": "data.wgs.discovery.decisions"}
BATCH_OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decisions", "discovery": "wgs/discovery/decisions"}
INDEX_RULE = "data.wgs.index.tables"
ENTRY_POINTS = [*RULES.values(), *BATCH_RULES.values()]
UNDEFINED = '"<undefined>"'  # how regorus writes an undefined value as JSON (both evaluators)

Evaluator = Literal["rvm", "interpreter"]


class PolicyEngine(Protocol):
    name: str

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision: ...

    async def decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]: ...

    async def check(self) -> None: ...

    async def aclose(self) -> None: ...


def policy_files(directory: Path) -> list[Path]:
    """The policy modules (not their tests)."""
    return sorted(p for p in directory.glob("*.rego") if not p.name.endswith("_test.rego"))


def _holder_document(holder: Party) -> dict[str, Any]:
    """``holder`` as ``document()`` writes it (no null members)."""
    return {"organisation": holder.organisation} if holder.system is None else {
        "organisation": holder.organisation, "system": holder.system}


MAX_HOLDERS_PER_EVALUATION = 16
"""The RVM stops an evaluation after 25,000 instructions (regorus's default limit, not settable from
Python): a plain request fits some 200 holders in one, but the costliest request (an unknown partnership,
every category asked and provided, an escalation decision) fails between 24 and 32. Larger batches are
split, so that a large partnership is decided rather than failed closed."""


def _groups(inputs: Sequence[PolicyInput]) -> list[tuple[list[int], PolicyInput, list[Party]]]:
    """``inputs`` grouped by everything but ``request.holder`` (compared field by field,
    ``PolicyInput.same_but_holder``), at most ``MAX_HOLDERS_PER_EVALUATION`` per group:
    ``(positions, first input, holders)`` per group, in order of first appearance."""
    groups: list[tuple[list[int], PolicyInput, list[Party]]] = []
    for position, policy_input in enumerate(inputs):
        for positions, first, holders in groups:
            if len(positions) < MAX_HOLDERS_PER_EVALUATION and first.same_but_holder(policy_input):
                positions.append(position)
                holders.append(policy_input.request.holder)
                break
        else:
            groups.append(([position], policy_input, [policy_input.request.holder]))
    return groups


def batch_inputs(inputs: Sequence[PolicyInput]) -> list[tuple[list[int], dict[str, Any]]]:
    """Group ``inputs`` that differ only in ``request.holder`` into batch documents for the ``decisions``
    rules: ``[(positions in inputs, {"request": ... without holder, "context", "request_fingerprint",
    "holders": [...]}), ...]`` in order of first appearance. One document is built per group, not one
    per input."""
    return [(positions, first.document_without_holder() | {"holders": [_holder_document(h) for h in holders]})
            for positions, first, holders in _groups(inputs)]


_HOLDERS = TypeAdapter(list[Party])


def batch_input_json(inputs: Sequence[PolicyInput]) -> list[tuple[list[int], str]]:
    """``batch_inputs`` as JSON text, for the embedded engine: pydantic writes the shared part and the
    holders straight to JSON (no intermediate documents), the holders are spliced in."""
    batches = []
    for positions, first, holders in _groups(inputs):
        shared = first.model_dump_json(exclude_none=True, exclude={"request": {"holder"}})
        targets = _HOLDERS.dump_json(holders, exclude_none=True).decode()
        batches.append((positions, f'{shared[:-1]},"holders":{targets}}}'))
    return batches


def _parse_batch(kind: PolicyKind, documents: Any, expected: int) -> list[Decision]:
    if not isinstance(documents, list) or len(documents) != expected:
        raise MalformedDecision("the policy produced no decision for some target (undefined)")
    return [Decision.parse(document, requires_obligations=kind == "exchange") for document in documents]


def _failure(exc: RuntimeError) -> str:
    """The first line of a regorus error (the rest is a Rust backtrace)."""
    return (str(exc).strip().splitlines() or ["unknown error"])[0]


class _Interpreter:
    """regorus's interpreter with the policies and the data loaded (one thread only)."""

    def __init__(self, sources: list[tuple[str, str]], data_json: str) -> None:
        self._engine = regorus.Engine()
        for name, text in sources:
            self._engine.add_policy(name, text)
        self._engine.add_data_json(data_json)

    def evaluate(self, rule: str, input_json: str) -> str:
        self._engine.set_input_json(input_json)
        return str(self._engine.eval_rule_as_json(rule))


class _Rvm:
    """A regorus RVM with the compiled policies and the data loaded (one thread only)."""

    def __init__(self, program: bytes, sources: list[tuple[str, str]], data_json: str) -> None:
        compiled, needs_recompile = regorus.Program.deserialize_binary(program)
        if needs_recompile:  # the bytes came from another regorus build: compile here
            compiled = regorus.Program.compile_from_modules(data_json, sources, ENTRY_POINTS)
        self._vm = regorus.Rvm()
        self._vm.load_program(compiled)
        self._vm.set_data_json(data_json)

    def evaluate(self, rule: str, input_json: str) -> str:
        self._vm.set_input_json(input_json)
        return str(self._vm.execute_entry_point(rule))


class EmbeddedPolicyEngine:
    """regorus in-process. Each thread gets its own evaluator (regorus objects are unsendable), built from
    what is computed once per engine, i.e. per register version: the data JSON with the register index
    and, for the RVM, the serialized program. The async path evaluates on the event loop's thread (one
    evaluation) or on one dedicated worker thread (several); ``aclose`` drops both threads' evaluators."""

    name = "embedded"

    def __init__(self, policies_dir: Path, register_data: dict[str, Any], *, evaluator: Evaluator = "rvm") -> None:
        self.evaluator: Evaluator = evaluator
        self._sources = [(str(path), path.read_text(encoding="utf-8")) for path in policy_files(policies_dir)]
        if not self._sources:
            raise PolicyUnavailable(f"no Rego policies found in {policies_dir}")
        self._register_json = json.dumps({"register": register_data})
        self._shared: tuple[str, bytes | None] | None = None  # (data JSON with the index, RVM program)
        self._shared_lock = threading.Lock()
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rego")
        try:
            self._executor.submit(self._evaluator).result()  # compile once up front: a broken policy fails the start
        except PolicyUnavailable:
            self._executor.shutdown(wait=True)
            raise

    # regorus objects must be dropped on their own thread: no exception raised here may hold one (through a
    # frame of its traceback), so a regorus error is turned into a message inside the ``except`` and the
    # policy error is raised after it.

    def _evaluator(self) -> _Interpreter | _Rvm:
        evaluator: _Interpreter | _Rvm | None = getattr(self._local, "evaluator", None)
        if evaluator is not None:
            return evaluator
        data_json, program = self._shared_state()
        failure = None
        try:
            self._local.evaluator = _Interpreter(self._sources, data_json) if program is None else _Rvm(
                program, self._sources, data_json)
        except RuntimeError as exc:
            failure = _failure(exc)
        if failure is not None:
            raise PolicyUnavailable(f"the policy could not be loaded: {failure}")
        return self._local.evaluator  # type: ignore[no-any-return]

    def _shared_state(self) -> tuple[str, bytes | None]:
        """The data JSON (``data.register`` and ``data.register_index``) and, for the RVM, the compiled
        program: computed once, by the first thread that needs them, and shared by all (as plain str and
        bytes). The index is ``data.wgs.index.tables`` evaluated by the interpreter: it reads no input."""
        with self._shared_lock:
            if self._shared is None:
                data_json = self._data_with_index()
                program, failure = None, None
                if self.evaluator == "rvm":
                    try:
                        program = bytes(regorus.Program.compile_from_modules(
                            data_json, self._sources, ENTRY_POINTS).serialize_binary())
                    except RuntimeError as exc:
                        failure = _failure(exc)
                if failure is not None:
                    raise PolicyUnavailable(f"the policy could not be compiled: {failure}")
                self._shared = (data_json, program)
            return self._shared

    def _data_with_index(self) -> str:
        failure = None
        try:
            index = _Interpreter(self._sources, self._register_json).evaluate(INDEX_RULE, "{}")
        except RuntimeError as exc:
            index, failure = "", _failure(exc)
        if failure is not None or not index.startswith("{"):
            raise PolicyUnavailable(f"the policy could not index the register: {failure or 'undefined'}")
        return f'{self._register_json[:-1]}, "register_index": {index}}}'

    def release_thread_engine(self) -> None:
        """Drop this thread's evaluator (call on the thread that used ``decide_sync``)."""
        self._local.__dict__.pop("evaluator", None)

    def _evaluate(self, rule: str, input_json: str) -> str:
        """The rule's value as JSON text; an engine error is ``PolicyUnavailable``, an undefined result or
        an undefined value inside it (the RVM writes those as the string "<undefined>") is
        ``MalformedDecision``."""
        failure = None
        try:
            text = self._evaluator().evaluate(rule, input_json)
        except RuntimeError as exc:  # a Rego runtime error (or the RVM's instruction limit) is no decision
            text, failure = "", _failure(exc)
        if failure is not None:
            raise PolicyUnavailable(f"the embedded policy engine failed to evaluate: {failure}")
        if UNDEFINED in text:
            raise MalformedDecision("the policy produced no decision (undefined)")
        return text

    def evaluate_sync(self, rule: str, input_document: dict[str, Any]) -> Any:
        """The value of ``rule`` for ``input_document``, as a JSON document and unchecked: what this
        evaluator answers (the equivalence test compares the two evaluators with it). Errors as for a
        decision."""
        return json.loads(self._evaluate(rule, json.dumps(input_document)))

    def decide_sync(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        text = self._evaluate(RULES[kind], policy_input.model_dump_json(exclude_none=True))
        return Decision.parse_json(text, requires_obligations=kind == "exchange")

    def decide_many_sync(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        decisions: list[Decision | None] = [None] * len(inputs)
        for positions, input_json in batch_input_json(inputs):
            text = self._evaluate(BATCH_RULES[kind], input_json)
            batch = Decision.parse_json_list(text, len(positions), requires_obligations=kind == "exchange")
            for position, decision in zip(positions, batch, strict=True):
                decisions[position] = decision
        return [d for d in decisions if d is not None]

    # One evaluation (up to MAX_HOLDERS_PER_EVALUATION targets, a fraction of a millisecond) runs on the
    # event loop's own thread, with that thread's evaluator: regorus holds the GIL while it evaluates, so a
    # worker thread bought no parallelism, only two thread hand-overs per request. Larger requests, which
    # need several evaluations, go to the worker thread so the loop keeps serving others meanwhile.

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        return self.decide_sync(kind, policy_input)

    async def decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        if not inputs:
            return []
        if len(inputs) <= MAX_HOLDERS_PER_EVALUATION:
            return self.decide_many_sync(kind, inputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.decide_many_sync, kind, list(inputs))

    async def check(self) -> None:
        self._evaluator()  # this (the loop's) thread's evaluator: built here, before the first request needs it
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._evaluator)

    async def aclose(self) -> None:
        self.release_thread_engine()  # the loop thread's evaluator, on its own thread
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
