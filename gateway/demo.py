"""``wgs-gateway demo``: the whole product on this machine, then a guided run of the acceptance scenarios.

Starts the simulated partner systems (each its own process, HTTP service and database) and the gateway
(embedded SQLite and embedded Rego engine), registers the requesting partner systems as OAuth clients
with freshly generated keys, and lets them ask the gateway for data through the typed client
(``gateway.client``). What each holder answered is printed as a table: outcome, categories, records.
Then a fuzzy discovery without a shared number and its follow-up by match handle (:mod:`gateway.demo_fuzzy`).

**Start-up** is CPU-bound: eight servers start at once on what is often a 2-core machine, shared. Measured
(to the gateway's readiness, without the scenarios; CPU seconds, the same on a loaded or an idle machine):
the demo's own process ~1.9 (imports ~1.2, then the partners' modules ~0.5; migrating and registering
the clients ~0.9 on a first run, ~0.2 after), each partner ~0.8 when started as a command (~0.5 of it
imports) and ~0.2 when forked from the demo (:class:`_Partner`), the gateway ~2.6 (imports ~1.6, numba's
~0.75 among them).
Polling readiness with a new HTTP client per poll cost ~0.025 each, 2-3 s over a slow start (:func:`_wait`).
In all ~11.5 s of CPU before, ~7 s now; on a 2-core machine at a load of ~10, 25-30 s to ready before,
15-19 s now. The numba kernels are compiled on the first fuzzy discovery, and cached on disk after that.
"""

from __future__ import annotations

import asyncio
import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from alembic import command
from joserfc.jwk import OKPKey
from rich.console import Console
from rich.table import Table

import connectors.cli as partner_cli
from connectors.enrolment import enrol
from connectors.profiles import PROFILES
from connectors.store import PartnerStore, store_path
from connectors.world import Person, build_world
from gateway import demo_fuzzy
from gateway.auth.accounts import create_account
from gateway.auth.clients import register_key_client
from gateway.auth.repository import get_account
from gateway.client.api import GatewayClient, GatewayClientError
from gateway.client.models import ExchangeRequest, ExchangeResult
from gateway.clock import SystemClock
from gateway.db.engine import alembic_config_for, engine_for, make_session_factory, transaction
from gateway.register.loader import load_register
from gateway.settings import SHIPPED_REGISTER, Settings

console = Console()
REQUESTERS = ["gemeente-amsterdam-vth", "belastingdienst-ivs", "abn-amro-fec", "politie-bvh"]
RIEC = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-117",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-42"}}


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


GATEWAY_APP = "gateway.asgi:app"
"""What the demo's gateway process serves (a module attribute so a test can make that process fail)."""


class _ProcessFailed(RuntimeError):
    """A process of the demo ended or never became ready; the message is the one line the operator gets."""


class _Process(Protocol):
    """What the demo does with a process it started (``subprocess.Popen``'s names)."""

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


_FORK = multiprocessing.get_context("fork")


class _Partner:
    """A simulated partner system's process, forked from the demo's: its own process, port and database as
    ever, without an interpreter of its own to start. Starting each as a command (``python -m connectors.cli
    serve``) imported FastAPI, uvicorn, Faker and the simulator seven times over, ~0.5 s of CPU each, which
    under load was most of the demo's start-up; forked after the demo imported them once, a partner's start
    is its world, its database and its server."""

    def __init__(self, arguments: list[str], log: Path) -> None:
        self._process = _FORK.Process(target=_serve_partner, args=(arguments, log), daemon=False)
        try:
            with _stop_signals_held():  # the child unblocks them once its handlers are its own
                self._process.start()
        except BaseException:
            # A stop held back over the fork is raised here, as the block ends: before the demo has this partner
            # among the processes it stops. Left running it would never be stopped (its Ctrl-C is ignored), and
            # the demo's exit would wait for it (a forked child that is no daemon is joined at exit).
            if self._process.pid is not None:  # forked (else the fork itself failed: nothing to stop)
                self.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    self.wait(timeout=10)
                self.kill()
                self._process.join()
            raise

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode  # reaps it when it has ended

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None and self._process.pid is not None:  # never a reaped pid, reused
            os.kill(self._process.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"partner process {self._process.pid}", timeout or 0.0)
        return self._process.exitcode

    def kill(self) -> None:
        if self._process.exitcode is None:
            self._process.kill()


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back (blocked, not lost) within: a forked child inherits the mask and unblocks
    it once its own handlers are set; this process gets a stop that came meanwhile as soon as the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _serve_partner(arguments: list[str], log: Path) -> None:
    """In the forked process: ``wgs-partner serve`` with ``arguments``, everything it prints to ``log``.
    SIGTERM is given back its default first (the demo's own handler turns it into a Ctrl-C): until uvicorn
    installs its own, a partner stopped ends quietly, as one started as a command did; Ctrl-C is ignored until
    then (the demo stops its partners with SIGTERM when it sees one). Both arrive only from here on: the fork
    happened with them blocked (:func:`_stop_signals_held`), so a stop in the moment between the fork and
    these lines waits for them instead of running the demo's handler in this process (a ``KeyboardInterrupt``
    traceback in the partner's log). The standard streams are the log's, not the demo's objects (nor a test's
    capture of them)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115 (the process's own)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    partner_cli.app(args=["serve", *arguments], prog_name="wgs-partner")


def _taken_address(url: str) -> str | None:
    """``host:port`` of ``url`` when another program listens there: asked after the process meant to listen
    there has exited, so the port it was given was taken between the demo's check (:func:`_free_port`) and
    its bind. ``None`` when the port is free (the process failed for another reason)."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        return None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a connection of ours left in TIME_WAIT is no user
        try:
            sock.bind((parts.hostname, parts.port))
        except OSError as exc:
            return f"{parts.hostname}:{parts.port}" if exc.errno == errno.EADDRINUSE else None
    return None


def _wait(url: str, process: _Process | None = None, log: Path | None = None,
          deadline: float = 60) -> None:
    """Until ``url`` answers 200. With ``process``, one that has already exited is reported at once, not
    after the deadline: a gateway refusing to start (a bad setting, an unreachable database) dies in a
    second, and the reason is in its ``log`` file, not in a traceback of this one."""
    name, where = (log.stem, f"; see {log}") if log else (url, "")
    end = time.monotonic() + deadline
    with httpx.Client(timeout=2) as client:  # one for every poll: a client's TLS context alone is ~25 ms of CPU
        while time.monotonic() < end:
            if process is not None and process.poll() is not None:
                address = _taken_address(url)
                if address is not None:
                    raise _ProcessFailed(f"{name} could not listen on {address}: another program uses that "
                                         f"port{where}")
                raise _ProcessFailed(f"{name} exited with code {process.returncode} before it was ready{where}")
            with suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.2)
    raise _ProcessFailed(f"{name} did not become ready within {deadline:.0f} s{where}")


DEMO_PASSWORD = "demo password, not for production"
PEOPLE = [("po-gemeente", "gemeente-amsterdam", "privacy-officer"), ("po-politie", "politie", "privacy-officer"),
          ("desk-riec", "riec-aa", "administrator")]


def _register_clients(settings: Settings) -> dict[str, OKPKey]:
    """Every simulated partner as an OAuth client (requesters may also exchange), and the people of S9."""
    register, _ = load_register(settings.register_file)
    engine = engine_for(settings)
    sessions = make_session_factory(engine)
    keys: dict[str, OKPKey] = {}
    with transaction(sessions) as session:
        for system in PROFILES:
            key = OKPKey.generate_key("Ed25519", parameters={"kid": f"{system}-demo-{time.time_ns()}"})
            scopes = ["exchange", "discovery", "register:read", "enrol"] if system in REQUESTERS else ["enrol"]
            register_key_client(session, register, system, scopes, {"keys": [key.as_dict(private=False)]},
                                SystemClock())
            keys[system] = key
        for username, organisation, role in PEOPLE:
            if get_account(session, username) is None:
                create_account(session, username, organisation, [role], DEMO_PASSWORD, SystemClock())
    engine.dispose()
    return keys


async def _enrol_partners(settings: Settings, clients: dict[str, GatewayClient]) -> None:
    """Each partner turns the identifiers it holds into polymorphic pseudonyms and enrols them; it keeps its
    own pseudonyms next to its records. From here on, requests and answers carry only pseudonyms."""
    register, _ = load_register(settings.register_file)
    for system, client in clients.items():
        store = PartnerStore(store_path(settings.data_dir / "partners", system))
        try:
            count = await enrol(store, client, register.partnerships_of_system(system), profile=PROFILES[system])
        finally:
            store.close()
        console.print(f"  enrolled {count:>5} subject(s) of {system}")


def _scenarios(world: Any) -> list[tuple[str, str, dict[str, Any]]]:
    s = world.scenarios()
    return [
        ("S1 Bibob integrity check of an applicant (all holders)", "gemeente-amsterdam-vth", RIEC | {
            "subjects": [{"ref": r} for r in s["bibob-applicant"]], "holders": "all",
            "categories": ["company_registration", "directorships", "tax_debts", "income", "police_incidents",
                           "convictions"]}),
        ("S2 Malafide company: dissolution grounds to the KvK", "belastingdienst-ivs", {
            "partnership": "riec-amsterdam-amstelland", "purpose": "malafide-company-dissolution",
            "legal_basis": "WGS (RIEC) with BW 2:19a", "case_reference": "BD-2026-9",
            "signal": {"type": "missing-returns", "reference": "BD-SIG-77"},
            "subjects": [{"ref": r} for r in s["malafide-dissolution"]], "holders": ["kvk"],
            "categories": ["company_registration", "directorships"]}),
        ("S4 Youth prevention about a 15-year-old", "gemeente-amsterdam-vth", {
            "partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)",
            "case_reference": "ZVH-2026-3", "signal": {"type": "school-report", "reference": "LPA-2026-5"},
            "subjects": [{"ref": r, "minor": True} for r in s["minor"]], "holders": ["politie", "gemeente-amsterdam"],
            "categories": ["police_incidents", "school_absence", "care_involvement"]}),
        ("S5 The same minor under Bibob", "gemeente-amsterdam-vth", RIEC | {
            "subjects": [{"ref": r, "minor": True} for r in s["minor"]], "holders": ["politie"],
            "categories": ["police_incidents"]}),
        ("S9 Police refuses (investigation confidentiality)", "gemeente-amsterdam-vth", RIEC | {
            "subjects": [{"ref": r} for r in s["police-confidential"]], "holders": ["politie"],
            "categories": ["police_incidents"]}),
        ("S10 Bank checks a customer: hit/no-hit only", "abn-amro-fec", {
            "partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant",
            "case_reference": "FEC-TF-8", "signal": {"type": "unusual-transaction", "reference": "MOT-2026-1"},
            "subjects": [{"ref": r} for r in s["bank-customer"]], "holders": ["fiod", "politie"],
            "categories": ["ongoing_investigation"]}),
        ("S11 Asking for CIE information", "gemeente-amsterdam-vth", RIEC | {
            "subjects": [{"ref": r} for r in s["bibob-applicant"][1:2]], "holders": ["politie"],
            "categories": ["police_incidents", "criminal_intelligence"]}),
        ("S12 Wrong legal basis", "gemeente-amsterdam-vth", RIEC | {
            "legal_basis": "WGS (RIEC)", "subjects": [{"ref": r} for r in s["bibob-applicant"][:1]],
            "holders": ["kvk"], "categories": ["company_registration"]}),
    ]


def _show(title: str, requester: str, result: ExchangeResult) -> None:
    table = Table(title=f"{title}\nrequester: {requester} · exchange {result.exchange_id}", title_justify="left")
    for column in ("holder", "outcome", "categories", "records", "reasons"):
        table.add_column(column)
    for target in result.targets:
        hit = "" if target.hit is None else (" (hit)" if target.hit else " (no hit)")
        table.add_row(target.holder, target.outcome.value + hit, ", ".join(target.permitted_categories),
                      str(len(target.records)), "; ".join(r.code for r in target.reasons)[:80])
    console.print(table)


async def _pseudonymised(client: GatewayClient, world: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The scenario's subjects as the requester's own pseudonyms (made from the identifiers it knows)."""
    refs = [s["ref"] for s in body["subjects"]]
    own = await client.own_pseudonyms(body["partnership"], [world.identifier_of(r) for r in refs])
    return body | {"subjects": [s | {"ref": p} for s, p in zip(body["subjects"], own, strict=True)]}


async def _run_scenarios(settings: Settings, gateway_url: str, keys: dict[str, OKPKey]) -> int:
    world = build_world(2025)
    clients = {system: GatewayClient(gateway_url, system, key, issuer=settings.issuer) for system, key in keys.items()}
    failures = 0
    try:
        try:
            await _enrol_partners(settings, clients)
        except GatewayClientError as exc:  # the scenarios run on enrolled pseudonyms: none can run without
            console.print(f"[red]enrolment failed: {exc}[/red]")
            return 1
        people = {p.subject_ref: p for p in world.persons}
        try:
            await demo_fuzzy.enrol_partner_filters(settings, clients, people, console)
            fuzzy_ready = True
        except GatewayClientError as exc:  # only the fuzzy scenario needs the filters: the others still run
            console.print(f"[red]enrolment of match filters failed: {exc}[/red]")
            failures, fuzzy_ready = failures + 1, False
        for title, requester, body in _scenarios(world):
            try:
                request = ExchangeRequest.model_validate(await _pseudonymised(clients[requester], world, body))
                result = await clients[requester].exchange(request)
                _show(title, requester, result)
                if title.startswith("S9"):
                    _show("S9 (continued) after the escalation: tier 2 allows police_incidents only", requester,
                          await _settle_s9(gateway_url, clients[requester], request, result))
            except (GatewayClientError, httpx.HTTPError, LookupError) as exc:
                failures += 1
                console.print(f"[red]{title}: {exc}[/red]")
        if fuzzy_ready:
            failures += await _run_fuzzy(clients[demo_fuzzy.REQUESTER], world, people)
    finally:
        for client in clients.values():
            await client.aclose()
    return failures


async def _run_fuzzy(client: GatewayClient, world: Any, people: dict[str, Person]) -> int:
    """The fuzzy discovery and its follow-up; 1 when either failed (a police without a hit is a failure:
    the demo is there to show the follow-up)."""
    try:
        result = await demo_fuzzy.discover_and_follow_up(client, people, world.scenarios(), console)
    except (GatewayClientError, httpx.HTTPError, ValueError) as exc:
        console.print(f"[red]{demo_fuzzy.TITLE}: {exc}[/red]")
        return 1
    _show(demo_fuzzy.FOLLOW_UP_TITLE, demo_fuzzy.REQUESTER, result)
    return 0


async def _settle_s9(gateway_url: str, client: GatewayClient, request: ExchangeRequest,
                     refused: ExchangeResult) -> ExchangeResult:
    """The police refused, so the gateway opened a case. The municipality's privacy officer refers it up;
    the RIEC legal desk (tier 2) allows police incidents only; the municipality re-runs with the decision."""
    case_id = refused.targets[0].escalation_id
    if case_id is None:
        raise LookupError("S9: no escalation case was opened")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        async def token(username: str) -> dict[str, str]:
            response = await http.post("/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD})
            response.raise_for_status()
            return {"Authorization": f"Bearer {response.json()['access_token']}"}

        municipality, desk = await token("po-gemeente"), await token("desk-riec")
        case = (await http.get(f"/v1/escalations/{case_id}", headers=municipality)).json()
        console.print(f"  case {case_id}: {case['trigger']}, tier {case['tier']}, deadline {case['deadline']}")
        referred = await http.post(f"/v1/escalations/{case_id}/decision", headers=municipality, json={
            "expected_version": case["version"], "outcome": "refer-up",
            "motivation": "We need the incidents for the Bibob advice; please decide at tier 2."})
        referred.raise_for_status()
        decided = await http.post(f"/v1/escalations/{case_id}/decision", headers=desk, json={
            "expected_version": referred.json()["version"], "outcome": "allow",
            "permitted_categories": ["police_incidents"],
            "motivation": "Incidents are necessary and proportionate for the Bibob advice; nothing else."})
        decided.raise_for_status()
        decision = decided.json()["decision"]
        console.print(f"  tier 2 decided: {decision['outcome']} {decision['permitted_categories']} "
                      f"(decision {decision['id']})")
    return await client.rerun(request, decision["id"])


def demo_register(settings: Settings) -> Path:
    """The shipped register with office hours widened to the whole week, so the demo shows the other rules
    at any hour (rule 7, escalation outside office hours, is covered by the tests). Its own version, so
    the decisions made in the demo cite what they were made under."""
    text = SHIPPED_REGISTER.read_text(encoding="utf-8")
    register, _ = load_register(SHIPPED_REGISTER)
    text = text.replace(f'version: "{register.version}"', f'version: "{register.version}-demo"', 1)
    text = text.replace('office_hours: {timezone: Europe/Amsterdam, weekdays: [1, 2, 3, 4, 5], start: "07:00", '
                        'end: "19:00"}', 'office_hours: {timezone: Europe/Amsterdam, weekdays: [1, 2, 3, 4, 5, 6, 7], '
                        'start: "00:00", end: "24:00"}', 1)
    path = settings.data_dir / "register-demo.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a service manager) stops the demo as Ctrl-C does. With Python's default
    the demo died of it at once, before its ``finally`` ran, and left every partner and the gateway running."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _partner_port(default: int, gateway_port: int) -> int:
    """The port to try first for a partner: its profile's default, which ``scripts/demo`` shows, unless the
    gateway's ``port`` is 0 — then any free port, as the gateway's. Why: the free-port check and the partner's
    own bind are a moment apart, and two runs at once (two test runs on one machine) both found the defaults
    free and raced for them, one partner failing to bind; ephemeral ports are not shared that way."""
    return default if gateway_port else 0


def run_demo(settings: Settings, port: int = 8000, once: bool = False) -> int:
    """The demo's gateway on ``port`` and each partner on its default port (or any free one when that is
    taken); with ``port`` 0 every process takes a free ephemeral port (:func:`_partner_port`)."""
    with _sigterm_as_ctrl_c():
        return _run_demo(settings, port, once)


def _run_demo(settings: Settings, port: int, once: bool) -> int:
    """Start-up, in order: the partners (they need nothing of the gateway until a request comes), then,
    while they start, this process's own serial work (the demo register, migrating the database,
    registering the clients and people: what the gateway needs before it can start), then the gateway.
    Started before that work, the partners overlap it rather than wait for it."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    gateway_port = _free_port(port)
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    processes: list[_Process] = []
    endpoints: dict[str, str] = {}
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        waits: list[tuple[str, _Process, Path]] = []
        for system, profile in PROFILES.items():
            partner_port = _free_port(_partner_port(profile.default_port, port))
            endpoints[system] = f"http://127.0.0.1:{partner_port}"
            processes.append(_Partner(
                ["--partner", system, "--port", str(partner_port), "--data-dir", str(settings.data_dir / "partners"),
                 "--jwks-url", f"{gateway_url}/.well-known/jwks.json", "--issuer", settings.issuer],
                logs / f"{system}.log"))
            waits.append((f"{endpoints[system]}/health", processes[-1], logs / f"{system}.log"))
        settings = settings.model_copy(update={"register_file": demo_register(settings)})
        command.upgrade(alembic_config_for(settings), "head")
        keys = _register_clients(settings)
        env = os.environ | {"WGS_DATA_DIR": str(settings.data_dir), "WGS_CONNECTOR_ENDPOINTS": json.dumps(endpoints),
                            "WGS_REGISTER_FILE": str(settings.register_file)}
        if settings.database_url:
            env["WGS_DATABASE_URL"] = settings.database_url
        with (logs / "gateway.log").open("wb") as gateway_log:  # the child has its own copy; this one is closed
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", GATEWAY_APP, "--no-proxy-headers", "--host", "127.0.0.1",
                 "--port", str(gateway_port), "--log-level", "warning"],
                env=env, stdout=gateway_log, stderr=subprocess.STDOUT))
        waits.append((f"{gateway_url}/health/ready", processes[-1], logs / "gateway.log"))
        try:
            for url, process, log in waits:
                _wait(url, process, log)
        except _ProcessFailed as failed:
            print(failed, file=sys.stderr)  # plain: one line, whatever the terminal's width
            return 1
        console.print(f"[bold green]gateway[/bold green] {gateway_url}  (OpenAPI: {gateway_url}/docs)")
        console.print(f"register {settings.register_file.name}: office hours widened for the demo")
        for system, url in endpoints.items():
            console.print(f"  partner {system:<24} {url}")
        failures = asyncio.run(_run_scenarios(settings, gateway_url, keys))
        console.print(f"logs of every process in {logs}")
        if once:
            return 1 if failures else 0
        with suppress(KeyboardInterrupt):  # around the line too: a signal right after it is a stop, not a crash
            console.print("[bold]running; press Ctrl-C to stop[/bold]")
            signal.pause()
        return 0
    finally:
        stop_processes(processes)


def stop_processes(processes: Sequence[_Process]) -> None:
    """SIGTERM all (graceful shutdown), then wait; kill what does not stop within 10 s, and reap it: a killed
    child not waited for stays a zombie of this process (and of its process group) until this one exits.

    A second Ctrl-C or SIGTERM meanwhile (an impatient user, a service manager repeating its stop) kills what
    is left at once, as a second Ctrl-C does elsewhere; it used to end the demo with a ``KeyboardInterrupt``
    traceback and leave the processes not yet stopped unkilled and unreaped. Further signals are ignored
    while the killed processes are reaped (a moment: SIGKILL cannot be refused)."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    try:
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    except KeyboardInterrupt:
        with _signals_ignored():
            for process in processes:
                process.kill()
            for process in processes:
                process.wait()


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored within (on the main thread, the only one that may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(signum, handler)

