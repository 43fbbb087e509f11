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
  ``AsyncOpaClient``; the register is pushed to ``data.register`` before the first query and again
  when the server has lost it (an OPA restart) or decided under another gateway's register, every call
  ends within the engine's timeout.
Both raise only ``PolicyUnavailable`` or ``MalformedDecision`` — the caller denies on either — and both
accept only decisions that name this engine's register by its digest (``register_sha256``, loaded with the
register as ``data.register.sha256``): the register whose version the gateway records with each decision.
The digest is handed to the engine with the register by whoever installs it (the one ``RegisterService``
holds and the gateway recorded), so this module knows the policy contract only, not the register's service.

``decide_many`` decides every target of one request in one evaluation (rule ``decisions``: the request
without ``holder`` plus ``holders``), so what does not depend on the holder is evaluated once per request;
each decision is exactly the one ``decide`` gives for that input.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import regorus
from pydantic import TypeAdapter

from gateway.policy.errors import MalformedDecision, PolicyError, PolicyUnavailable
from gateway.policy.model import (
    Decision,
    Party,
    PolicyContext,
    PolicyInput,
    PolicyKind,
    PolicyRequest,
    RegisterFacts,
)
from gateway.resources import resource_dir
from gateway.urls import EXPECTED, http_url

RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decision", "discovery": "data.wgs.discovery.decision"}
OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decision", "discovery": "wgs/discovery/decision"}
BATCH_RULES: dict[PolicyKind, str] = {"exchange": "data.wgs.exchange.decisions",
                                      "discovery": "data.wgs.discovery.decisions"}
BATCH_OPA_PATHS: dict[PolicyKind, str] = {"exchange": "wgs/exchange/decisions", "discovery": "wgs/discovery/decisions"}
INDEX_RULE = "data.wgs.index.tables"
VERSION_RULE = "data.wgs.version.policy_version"
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


def read_policy_version(policies_dir: Path) -> str:
    """The version every decision of the policies in ``policies_dir`` names (``data.wgs.version.policy_version``,
    policies/version.rego, bumped with every rule change): what the OPA-server engine requires of the server's
    decisions, since that server loads its policies on its own (a mounted directory, a bundle) and may serve
    another set of rules than the gateway ships. Evaluated, not pattern-matched, so it is the value OPA reads."""
    failure, version = None, None
    try:
        engine = regorus.Engine()
        engine.add_policy_from_file(str(policies_dir / "version.rego"))
        version = engine.eval_rule(VERSION_RULE)
    except RuntimeError as exc:  # also a missing or unreadable file
        failure = _failure(exc)
    if failure is not None or not (isinstance(version, str) and version.strip()):
        raise PolicyUnavailable(f"the policies name no policy version (version.rego): {failure or 'undefined'}")
    return version


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
        shared = first.document_json(exclude={"request": {"holder"}})
        targets = _HOLDERS.serializer.to_json(holders, exclude_none=True).decode()  # (without the wrapper)
        batches.append((positions, f'{shared[:-1]},"holders":{targets}}}'))
    return batches


def _parse_batch(kind: PolicyKind, documents: Any, expected: int) -> list[Decision]:
    if not isinstance(documents, list) or len(documents) != expected:
        raise MalformedDecision("the policy produced no decision for some target (undefined)")
    return [Decision.parse(document, requires_obligations=kind == "exchange") for document in documents]


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _with_digest(register_data: dict[str, Any], register_sha256: str) -> dict[str, Any]:
    """The register document the policies read as ``data.register``: ``register_data`` plus its SHA-256
    as the gateway records it (``RegisterService.digest``, given by whoever installs the engine) as
    ``sha256``, which every decision carries back. The register's version string alone would not tell
    apart two gateways' registers of one version and other content (each records its versions in its own
    database). A digest that is not one (blank, say) is refused: a register pushed without a digest (an
    older gateway's) makes the policies cite a blank one, which must never match this engine's."""
    if not _SHA256.fullmatch(register_sha256):
        raise ValueError("the register's digest must be its SHA-256, as 64 lower-case hex digits")
    return register_data | {"sha256": register_sha256}


def _register_facts(register_data: dict[str, Any]) -> RegisterFacts:
    """What the register says that a decision may not contradict (``Decision.answering``): read from the
    register document the policies read, so the check and the policy see the same register."""
    found = register_data.get("categories")
    vocabulary: dict[str, Any] = found if isinstance(found, dict) else {}
    found = register_data.get("partnerships")
    partnerships: dict[str, Any] = {pid: p for pid, p in found.items() if isinstance(p, dict)} if isinstance(
        found, dict) else {}

    def flagged(flag: str) -> frozenset[str]:
        return frozenset(name for name, c in vocabulary.items() if isinstance(c, dict) and c.get(flag))

    return RegisterFacts(
        known=frozenset(vocabulary), never_shared=flagged("never_shared"), hit_only=flagged("hit_only"),
        never_disclosed={pid: frozenset(p.get("never_disclosed") or ()) for pid, p in partnerships.items()},
        results_only=frozenset((pid, qid) for pid, p in partnerships.items()
                               for qid, q in (p.get("purposes") or {}).items()
                               if isinstance(q, dict) and q.get("results_only")))


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


@lru_cache(maxsize=8)
def _compiled_state(evaluator: Evaluator, sources: tuple[tuple[str, str], ...],
                    register_json: str) -> tuple[str, bytes | None]:
    """The data JSON with the register index and, for the RVM, the serialized program, for these policy
    texts and this register: what an engine computes once, before its first decision.

    They depend on nothing else, so a process computes them once per policy texts, register and evaluator,
    not once per engine: the index alone is an interpreter's evaluation over the whole register (0.2-0.6 s,
    most of an engine's start). An engine is built at every start of the app and for every register
    version loaded; a process that builds one again for the same policies and register (a register reloaded
    back to a version it ran before; a test suite starting the app per test) takes them from here. Only str
    and bytes are kept (regorus objects are unsendable); a failure raises and is not kept. The index is
    ``data.wgs.index.tables`` evaluated by the interpreter: it reads no input."""
    failure = None
    try:
        index = _Interpreter(list(sources), register_json).evaluate(INDEX_RULE, "{}")
    except RuntimeError as exc:
        index, failure = "", _failure(exc)
    if failure is not None or not index.startswith("{"):
        raise PolicyUnavailable(f"the policy could not index the register: {failure or 'undefined'}")
    data_json = f'{register_json[:-1]}, "register_index": {index}}}'
    program = None
    if evaluator == "rvm":
        try:
            program = bytes(regorus.Program.compile_from_modules(
                data_json, list(sources), ENTRY_POINTS).serialize_binary())
        except RuntimeError as exc:
            failure = _failure(exc)
    if failure is not None:
        raise PolicyUnavailable(f"the policy could not be compiled: {failure}")
    return data_json, program


class EmbeddedPolicyEngine:
    """regorus in-process. Each thread gets its own evaluator (regorus objects are unsendable), built from
    what is computed once per engine, i.e. per register version: the data JSON with the register index
    and, for the RVM, the serialized program. The async path evaluates on the event loop's thread (one
    evaluation) or on one dedicated worker thread (several); ``aclose`` drops both threads' evaluators."""

    name = "embedded"

    def __init__(self, policies_dir: Path, register_data: dict[str, Any], register_sha256: str, *,
                 evaluator: Evaluator = "rvm") -> None:
        self.evaluator: Evaluator = evaluator
        loaded = _with_digest(register_data, register_sha256)
        self._register_sha256 = register_sha256
        self._sources = [(str(path), path.read_text(encoding="utf-8")) for path in policy_files(policies_dir)]
        if not self._sources:
            raise PolicyUnavailable(f"no Rego policies found in {policies_dir}")
        self._register_json = json.dumps({"register": loaded})
        self._facts = _register_facts(register_data)
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
        bytes), see :func:`_compiled_state`."""
        with self._shared_lock:
            if self._shared is None:
                self._shared = _compiled_state(self.evaluator, tuple(self._sources), self._register_json)
            return self._shared

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
        text = self._evaluate(RULES[kind], policy_input.document_json())
        return Decision.parse_json(text, requires_obligations=kind == "exchange").answering(
            policy_input, self._facts, self._register_sha256)

    def decide_many_sync(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        decisions: list[Decision | None] = [None] * len(inputs)
        for positions, input_json in batch_input_json(inputs):
            text = self._evaluate(BATCH_RULES[kind], input_json)
            batch = Decision.parse_json_list(text, len(positions), requires_obligations=kind == "exchange")
            for position, decision in zip(positions, batch, strict=True):
                decisions[position] = decision.answering(
                    inputs[position], self._facts, self._register_sha256)
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


def _opa_address(url: str) -> tuple[str, int, bool, str]:
    """``(host, port, tls, version)`` for opa-python-client, whose base URL is
    ``{http[s]://}{host}:{port}/{version}``: the host keeps its brackets when it is an IPv6 address, the
    port defaults to the scheme's (443 for https, 80 for http), and a path prefix (OPA behind a reverse
    proxy, ``https://gw.example.org/opa``) goes in front of the API version (``opa/v1``). A URL the
    client cannot reach as written (another scheme, no host, credentials, a query or fragment) is
    refused rather than trimmed; the refusal does not repeat the URL (it may carry a password)."""
    try:
        parsed = http_url(url)
    except ValueError as exc:
        raise PolicyUnavailable(f"invalid OPA URL: {exc}") from None
    if parsed.username is not None or parsed.password is not None or parsed.query or parsed.fragment:
        raise PolicyUnavailable(f"invalid OPA URL: {EXPECTED}, without credentials, query or fragment")
    scheme, host, port = parsed.scheme.lower(), str(parsed.hostname), parsed.port
    if ":" in host:  # an IPv6 literal (urlsplit drops the brackets)
        host = f"[{host}]"
    prefix = parsed.path.strip("/")
    return host, port or (443 if scheme == "https" else 80), scheme == "https", f"{prefix}/v1" if prefix else "v1"


MAX_ANSWER_BYTES = 1 << 20
"""The largest answer read from the OPA server: a batch of ``MAX_HOLDERS_PER_EVALUATION`` decisions is some
tens of kilobytes; anything far larger is no decision of these policies, and is not read into memory."""


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):  # json.loads keeps the last: which one OPA meant is unknowable
        raise MalformedDecision("the OPA server's answer names a member twice")
    return document


def _no_constant(name: str) -> Any:
    raise MalformedDecision(f"the OPA server's answer holds {name}, which is no JSON")


def _strict_json(body: bytes) -> Any:
    """``body`` as JSON, refusing what OPA never writes and ``json.loads`` would accept: a member twice,
    NaN or Infinity."""
    try:
        return json.loads(body, object_pairs_hook=_no_duplicate_members, parse_constant=_no_constant)
    except ValueError as exc:  # also UnicodeDecodeError
        raise MalformedDecision("the OPA server's answer is not JSON") from exc


def _not_answered(what: str, status: int) -> PolicyUnavailable:
    """The refusal of an answer of HTTP ``status`` to ``what`` (not the expected one): a redirect is named
    as such, so that an operator sees why a server that answers is not used."""
    if 300 <= status < 400:
        return PolicyUnavailable(f"the OPA server redirected {what} (HTTP {status}): redirects are not followed")
    return PolicyUnavailable(f"the OPA server answered {what} with HTTP {status}")


def _opa_client(url: str, timeout: float, token: str | None, ca_file: str | None) -> Any:
    """An ``AsyncOpaClient`` for ``url``; with ``ca_file`` the server certificate is checked against it.
    Unlike the library's client, no request follows a redirect: a decision comes from the configured
    server or from none, the register is pushed there or nowhere, and readiness is that server's (the
    policy listing, ``GET /v1/policies``); the token goes with none of them anywhere else. A redirect is a
    ``PolicyUnavailable`` that says so. A query's answer is read strictly: HTTP 200, ``application/json``, at
    most ``MAX_ANSWER_BYTES``, JSON as ``_strict_json`` reads it."""
    import ssl
    from contextlib import AbstractAsyncContextManager

    import aiohttp
    from opa_client import AsyncOpaClient

    class _Client(AsyncOpaClient):  # type: ignore[misc]
        async def _init_session(self) -> None:
            context = ssl.create_default_context(cafile=ca_file) if self.ssl else None
            self._connector = aiohttp.TCPConnector(ssl=context if context else False, limit=64)
            self._session = aiohttp.ClientSession(headers=self.headers, connector=self._connector,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))

        def _request(self, method: str, url: str, **kwargs: Any) -> AbstractAsyncContextManager[Any]:
            """Every request of the library's methods, refusing to follow a redirect."""
            return super()._request(method, url, **kwargs | {"allow_redirects": False})  # type: ignore[no-any-return]

        async def check_connection(self) -> bool:
            """The policy listing answers 200. Asked as ``GET /v1/policies``, OPA's own path: the library
            asks ``/v1/policies/``, which OPA answers with a redirect to it (its router's strict slash),
            and wraps every failure in one vague error."""
            async with self._request("GET", f"{self.root_url}/policies") as response:
                if response.status != 200:
                    raise _not_answered("the policy listing", response.status)
                return True

        async def update_or_create_data(self, new_data: dict[str, Any], endpoint: str) -> bool:
            """``PUT /v1/data/<endpoint>``, done when the server answers 204."""
            async with self._request("PUT", f"{self.root_url}/data/{endpoint}", json=new_data) as response:
                if response.status != 204:
                    raise _not_answered(f"the push of data.{endpoint}", response.status)
                return True

        async def query_rule(self, input_data: dict[str, Any], package_path: str) -> Any:
            async with self._request("POST", f"{self.root_url}/data/{package_path}",
                                     json={"input": input_data}) as response:
                if response.status != 200:
                    raise _not_answered("the decision query", response.status)
                if response.content_type != "application/json":
                    raise MalformedDecision("the OPA server's answer is not JSON")
                if (response.content_length or 0) > MAX_ANSWER_BYTES:
                    raise MalformedDecision("the OPA server's answer is too large to be a decision")
                body = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise MalformedDecision("the OPA server's answer is too large to be a decision")
                return _strict_json(bytes(body))

    host, port, tls, version = _opa_address(url)
    return _Client(host=host, port=port, version=version, ssl=tls, token=token, timeout=timeout, retries=0)


_PROBE_INPUT: dict[str, Any] = PolicyInput(
    request=PolicyRequest(partnership="readiness-probe", purpose="readiness-probe", legal_basis="readiness-probe",
                          case_reference="readiness-probe", signal={"type": "readiness-probe",
                                                                    "reference": "readiness-probe"},
                          categories=["readiness-probe"], subject_count=1, subjects_minor=False,
                          requester=Party(organisation="readiness-probe"), holder=Party(organisation="readiness-probe"),
                          requested_at="2026-01-01T00:00:00Z"),
    context=PolicyContext(), request_fingerprint="readiness-probe").document()
"""A request no register knows: with ``data.register`` loaded the policy decides it (a denial); without it
every decision rule is undefined (``decisions`` gives ``[]``), which is how the engine tells that the OPA
server has lost the register (a restart wipes its in-memory data). It is asked through the decision path
(``POST /v1/data/wgs/exchange/decision``), one of the few calls deploy/opa/authz.rego allows the gateway."""


POLICY_VERSION_MISMATCH = ("the OPA server's policies give no decision of this gateway's policy version "
                           "(restart it with the gateway's policies)")


def _unavailable(exc: Exception, timeout: float) -> PolicyUnavailable:
    """Worded by the failure's type only (an outside library's message may carry the URL) — and a timeout by
    the seconds waited and the setting that gives them: "TimeoutError" alone did not tell an operator that the
    server was slow rather than down, nor what to raise."""
    if isinstance(exc, TimeoutError):
        return PolicyUnavailable(f"OPA server unavailable (no answer within {timeout:g} s, "
                                 "WGS_OPA_TIMEOUT_SECONDS)")
    return PolicyUnavailable(f"OPA server unavailable ({type(exc).__name__})")


class OpaServerPolicyEngine:
    """The policies on an OPA server. The register is pushed (``PUT /v1/data/register``) before the first
    query, and again when the server turns out to have lost it (a restarted OPA keeps no data): a query
    that gives no decision is followed by the probe query, and if that is undefined too the register is
    pushed once more and the query asked once more. Concurrent callers share one push attempt.

    Every decision carries the digest of the register it was made under (``register_sha256``, the
    policy's ``data.register.sha256``, pushed with the register), and a decision citing another digest than
    this gateway's is refused: an OPA server shared by two gateways of different registers (a rolling
    deploy, or two gateways with their own databases and one version string for different content) holds
    whichever register was pushed last, one ``data.register``. When an answer cites another digest, the
    register is pushed again and the query asked again, once per decision call; an answer that still
    cites another (the other gateway pushed its own meanwhile) is ``PolicyUnavailable``: a denial, 503.

    Why not one register per version on the server (``data.registers[<digest>]``, the input naming the
    digest), where two gateways never overwrite each other: every rule reads ``data.register`` and
    ``data.register_index`` directly, the Rego unit tests replace them with ``with data.register as``,
    and the embedded engine compiles the register into its RVM program as data; selecting the register
    by input would put one more lookup in front of every register read of the hot path, in both
    evaluators and against the RVM's limits (policies/common.rego), and change the policy contract. It
    would also leave every register version ever pushed on the server (deploy/opa/authz.rego lets the
    gateway PUT, never DELETE) and widen that policy to a PUT on any path under ``registers``. The
    digest check gives the property that matters, that no decision is made under another register than
    the one it is recorded with, for the price of re-pushes and 503s while two registers share one
    server; deployments that run two registers side by side for long should give each its own OPA.

    Every call (``decide``, ``decide_many``, ``check``), push and retry included, ends within ``timeout``
    seconds, and every failure is a ``PolicyError`` (deny)."""

    name = "opa"

    def __init__(self, url: str, register_data: dict[str, Any], register_sha256: str, *, timeout: float = 2.0,
                 token: str | None = None, ca_file: str | None = None, policy_version: str | None = None) -> None:
        if not (math.isfinite(timeout) and timeout > 0):  # NaN never fires: a hung server would hold callers
            raise ValueError("the policy engine's timeout must be a positive, finite number of seconds")
        self._policy_version = policy_version or read_policy_version(resource_dir("policies"))
        self._register, self._register_sha256 = _with_digest(register_data, register_sha256), register_sha256
        self._client = _opa_client(url, timeout, token, ca_file)
        self._timeout = timeout
        self._facts = _register_facts(register_data)
        self._pushes = 0  # completed pushes of the register
        self._push_task: asyncio.Task[None] | None = None  # the push in flight, shared by every caller

    async def _session(self) -> None:
        if self._client._session is None:
            await self._client._init_session()  # no await inside: no other caller can interleave

    async def _put_register(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._session()
                await self._client.update_or_create_data(self._register, "register")
            self._pushes += 1
        finally:
            if self._push_task is asyncio.current_task():
                self._push_task = None

    async def _push(self, *, unless_pushed_since: int | None = None) -> None:
        """Push the register, unless it was pushed already (``unless_pushed_since=None``: ever; a count:
        since ``self._pushes`` had that value). Joins the push in flight, if any, instead of starting
        another; a caller giving up (its own timeout) does not cancel the shared push."""
        if self._pushes > (unless_pushed_since or 0):
            return
        task = self._push_task
        if task is None or task.done():
            task = self._push_task = asyncio.get_running_loop().create_task(self._put_register())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # the failure is the waiters'
        await asyncio.shield(task)

    async def _ask(self, path: str, document: dict[str, Any]) -> Any:
        """The server's answer: the document's ``result`` member, ``None`` when there is none (undefined)."""
        await self._session()
        answer = await self._client.query_rule(input_data=document, package_path=path)
        if not isinstance(answer, dict):
            raise MalformedDecision("the OPA server answered something other than a JSON object")
        return answer.get("result")

    def _under_another_register(self, result: Any) -> bool:
        """Whether a decision of ``result`` (one decision or a list) cites a register digest other than
        this gateway's: made under the register another gateway pushed over ours (a blank one: a register
        pushed without its digest). (A decision citing none is no decision of these policies:
        ``Decision.parse`` refuses it.)"""
        for document in result if isinstance(result, list) else [result]:
            digest = document.get("register_sha256") if isinstance(document, dict) else None
            if isinstance(digest, str) and digest != self._register_sha256:
                return True
        return False

    async def _query(self, path: str, document: dict[str, Any], expected: int | None,
                     repushed: bool) -> tuple[Any, bool]:
        """The decision(s) for ``document``: ``expected`` is None for a one-target rule (the result must
        be defined), the number of targets for a ``decisions`` rule (a list of that length). One re-push
        and retry when the register is missing on the server. When the server decided under another
        register: one re-push and retry per decision call, which a call of several queries shares
        (``repushed``: whether an earlier query of the call made it; returned with the answer, so the
        next query of the call is given it), and ``PolicyUnavailable`` when the server still does after
        that (another gateway pushing its own register meanwhile: contention). Returns ``(answer,
        repushed)``.

        (A count of pushes since the call began would not do for ``repushed``: it also counts pushes of a
        register the server lost and other callers' pushes, which spend no re-push of this call.)"""
        await self._push()
        for attempt in (1, 2):
            pushes = self._pushes
            result = await self._ask(path, document)
            if result is not None and (expected is None or (isinstance(result, list) and len(result) == expected)):
                if not self._under_another_register(result):
                    return result, repushed
                if attempt == 2 or repushed:
                    raise PolicyUnavailable("the OPA server decided under another register than the gateway's "
                                            "(digest), also after the gateway pushed its own")
                repushed = True
                await self._push(unless_pushed_since=pushes)
                continue
            if attempt == 2:
                break
            if await self._probe() != "missing" and self._pushes == pushes:
                break  # the register was there all along: this input has no decision (a policy defect)
            # the register is missing, or another caller pushed it again since this query was asked
            await self._push(unless_pushed_since=pushes)
        if expected is None:
            raise MalformedDecision("the OPA server returned no result (policy undefined?)")
        raise MalformedDecision("the policy produced no decision for some target (undefined)")

    async def _within_timeout(self, work: Any) -> Any:
        """``await work`` within the timeout; anything but a ``PolicyError`` becomes ``PolicyUnavailable``."""
        try:
            async with asyncio.timeout(self._timeout):
                return await work
        except PolicyError:
            raise
        except Exception as exc:  # a timeout, OSError, aiohttp's or opa-python-client's errors, anything else
            raise _unavailable(exc, self._timeout) from exc

    def _of_these_policies(self, decision: Decision) -> Decision:
        """``decision``, when the gateway's policies made it (it names their version); otherwise the server
        serves other rules — older ones it was started with and kept after the gateway's upgrade (OPA reads
        its policy files once, at start), or a bundle of another release — and gives no decision of the
        gateway's (``PolicyUnavailable``: a denial, 503, until it is given the gateway's policies)."""
        if decision.policy_version != self._policy_version:
            raise PolicyUnavailable(POLICY_VERSION_MISMATCH)
        return decision

    async def _decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        document, _ = await self._query(OPA_PATHS[kind], policy_input.document(), None, repushed=False)
        return self._of_these_policies(Decision.parse(document, requires_obligations=kind == "exchange").answering(
            policy_input, self._facts, self._register_sha256))

    async def decide(self, kind: PolicyKind, policy_input: PolicyInput) -> Decision:
        decision: Decision = await self._within_timeout(self._decide(kind, policy_input))
        return decision

    async def _decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        decisions: list[Decision | None] = [None] * len(inputs)
        repushed = False  # the call's one re-push for an answer under another register, shared by its queries
        for positions, document in batch_inputs(inputs):
            documents, repushed = await self._query(BATCH_OPA_PATHS[kind], document, len(positions), repushed)
            for position, decision in zip(positions, _parse_batch(kind, documents, len(positions)), strict=True):
                decisions[position] = self._of_these_policies(decision.answering(
                    inputs[position], self._facts, self._register_sha256))
        return [d for d in decisions if d is not None]

    async def decide_many(self, kind: PolicyKind, inputs: Sequence[PolicyInput]) -> list[Decision]:
        """One query of the ``decisions`` rule per group of inputs that differ only in the holder; the
        timeout bounds the whole call."""
        if not inputs:
            return []
        decisions: list[Decision] = await self._within_timeout(self._decide_many(kind, inputs))
        return decisions

    async def _probe(self) -> Literal["ours", "missing", "another", "foreign"]:
        """What the server's answer to a probe says: no register, another register, or no decision these
        policies give ("foreign": an OPA server still serving older policies, whose decisions lack what this
        gateway's require — every decision would be refused, so the server is not ready for this gateway).
        Asked by readiness, and by a query that got no decision ("missing": the server lost the register)."""
        result = await self._ask(OPA_PATHS["exchange"], _PROBE_INPUT)
        if result is None:
            return "missing"
        if self._under_another_register(result):
            return "another"
        try:
            decision = Decision.parse(result, requires_obligations=False)
        except MalformedDecision:
            return "foreign"
        return "ours" if decision.policy_version == self._policy_version else "foreign"

    async def _check(self) -> None:
        await self._push()
        await self._session()
        await self._client.check_connection()
        pushes = self._pushes
        found = await self._probe()
        if found == "foreign":  # no push helps: the policies (data.wgs.version) are the server's, not data
            raise PolicyUnavailable(POLICY_VERSION_MISMATCH)
        if found != "ours":  # lost (OPA restarted) or replaced by another gateway's: push again
            await self._push(unless_pushed_since=pushes)
            found = await self._probe()
            if found == "missing":
                raise PolicyUnavailable("the OPA server does not keep the register (data.register) it is sent")
            if found == "another":
                raise PolicyUnavailable("the OPA server decides under another register than the gateway's (digest)")
            if found == "foreign":
                raise PolicyUnavailable(POLICY_VERSION_MISMATCH)

    async def check(self) -> None:
        """Ready when the server answers (the policy listing, not redirected) and decides with this
        gateway's register: ``data.register`` present and of this register's digest (pushed again if the
        server lost it or holds another), with decisions of this gateway's policy version. A server deciding
        with other policies is not sent the register again: that changes no policy, and every probe (each few
        seconds, from each load balancer) re-sent the whole register to it."""
        await self._within_timeout(self._check())

    async def aclose(self) -> None:
        task, self._push_task = self._push_task, None
        if task is not None:
            task.cancel()
        await self._client.close_connection()


def build_policy_engine(kind: str, policies_dir: Path, register_data: dict[str, Any], register_sha256: str, *,
                        opa_url: str = "", timeout: float = 2.0, token: str | None = None,
                        ca_file: str | None = None) -> PolicyEngine:
    """The engine of ``kind`` deciding under the register ``register_data`` (the document the policies read
    as ``data.register``) of digest ``register_sha256`` (the one the gateway records for it): the caller
    holds both (``RegisterService``), so the engine neither recomputes the digest nor knows the register's
    service."""
    if kind == "opa":
        return OpaServerPolicyEngine(opa_url, register_data, register_sha256, timeout=timeout, token=token,
                                     ca_file=ca_file, policy_version=read_policy_version(policies_dir))
    return EmbeddedPolicyEngine(policies_dir, register_data, register_sha256)
