"""The README's demo command works: partners and gateway start as processes and the scenarios run."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.settings import Settings


def test_demo_runs_the_scenarios_through_real_processes(tmp_path: Path) -> None:
    env = os.environ | {"WGS_DATA_DIR": str(tmp_path), "WGS_DATABASE_URL": "", "COLUMNS": "200"}
    env.pop("WGS_DATABASE_URL")
    completed = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--once", "--port", "0"],
                               env=env, capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "S1 Bibob integrity check" in output
    assert "allowed-narrowed" in output
    assert "refused-by-holder" in output
    assert "minors-not-allowed" in output
    assert "enrolled" in output  # partners enrolled their subjects; the scenarios ran on pseudonyms
    assert "tier 2 decided: allow ['police_incidents']" in output
    assert "S9 (continued)" in output
    assert (tmp_path / "partners" / "partner-politie-bvh.sqlite").exists()  # each partner its own database
    assert (tmp_path / "partners" / "partner-kvk-handelsregister.sqlite").exists()
    for log in (tmp_path / "logs").iterdir():  # no personal data in any process log
        text = log.read_text()
        assert "Traceback" not in text, log.name
    _assert_fuzzy_discovery_and_follow_up(output)


def _table(output: str, title: str) -> dict[str, dict[str, str]]:
    """The rows of the table printed under the title starting with ``title``: holder -> column -> cell."""
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(title))
    header = next(n for n in range(start, len(lines)) if lines[n].startswith("┃"))
    columns = [cell.strip() for cell in lines[header].strip().strip("┃").split("┃")]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[header + 2:]:
        if not line.startswith("│"):
            break
        row = dict(zip(columns, (cell.strip() for cell in line.strip().strip("│").split("│")), strict=True))
        rows[row["holder"]] = row
    return rows


def _assert_fuzzy_discovery_and_follow_up(output: str) -> None:
    """The holders enrolled match filters; the municipality's fuzzy discovery hit the police's record of the
    misspelt director and nothing of the person nobody holds; following the hit up by its match handle got the
    police's incidents of that director — printed without a score, a holder's reference or a name."""
    from connectors import world as w
    from gateway import demo_fuzzy

    for system in demo_fuzzy.FILTER_HOLDERS:
        enrolled = re.search(rf"enrolled +(\d+) match filter\(s\) of {system}", output)
        assert enrolled is not None, output
        assert int(enrolled.group(1)) > 0
    discovery = _table(output, "Fuzzy discovery: ")
    assert discovery["politie"]["outcome"] == "hit"
    assert (discovery["politie"]["subject 1"], discovery["politie"]["subject 2"]) == ("hit", "no-hit")
    assert discovery["belastingdienst"]["outcome"] == "no-hit"
    answered = [row for row in discovery.values() if row["outcome"] in {"hit", "no-hit"}]
    assert answered
    assert all(row["subject 2"] == "no-hit" for row in answered)  # the person nobody holds
    follow_up = _table(output, "Fuzzy discovery (continued)")
    assert list(follow_up) == ["politie"]  # the handle's holder alone
    assert follow_up["politie"]["outcome"] == "allowed"
    assert follow_up["politie"]["categories"] == "police_incidents"
    world = w.build_world(2025)
    director, _ = demo_fuzzy.subjects(world.scenarios())
    incidents = [r for r in world.records_of(w.POLICE, director) if r.category == "police_incidents"]
    assert incidents
    assert int(follow_up["politie"]["records"]) == len(incidents)
    assert "follows up politie's hit: POST /v1/exchanges about match:" in output
    assert "subj-" not in output  # no holder's reference
    assert "score" not in output.lower()
    assert all(p.name not in output for p in world.persons)


def test_demo_reports_a_gateway_that_died_at_once_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway process that refuses to start is reported as soon as it has exited, naming its log file;
    the demo used to poll its readiness for 60 s and then end in a traceback."""
    from gateway import demo

    monkeypatch.setattr(demo, "GATEWAY_APP", "gateway.no_such_module:app")  # uvicorn exits at once
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    started = time.monotonic()
    code = demo.run_demo(Settings(data_dir=tmp_path), port=0, once=True)
    assert time.monotonic() - started < 30
    assert code == 1
    err = capsys.readouterr().err  # in a full run, log records of earlier tests' handlers may share stderr
    assert "Traceback" not in err
    [line] = [text for text in err.splitlines() if text.startswith("gateway exited")]
    assert line.startswith("gateway exited with code ")
    assert line.endswith(f" before it was ready; see {tmp_path / 'logs' / 'gateway.log'}")


def test_demo_reports_a_failed_enrolment_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway is up but cannot enrol (503 on every API call, over real HTTP): the demo says so in one line
    and counts a failure; it used to end in the client error's traceback."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from joserfc.jwk import OKPKey

    from connectors.store import PartnerStore, store_path
    from connectors.world import build_world
    from gateway import demo
    from tests.servers import serve_app

    system = "kvk-handelsregister"
    store = PartnerStore(store_path(tmp_path / "partners", system))
    store.seed_from(build_world(2025), system)  # subjects to enrol
    store.close()
    gateway = FastAPI()

    @gateway.get("/.well-known/oauth-authorization-server")
    async def metadata() -> dict[str, str]:
        return {"issuer": Settings().issuer, "token_endpoint": f"{Settings().issuer}/oauth/token"}

    @gateway.post("/oauth/token")
    async def token() -> dict[str, object]:
        return {"access_token": "T", "token_type": "Bearer", "expires_in": 300}

    @gateway.api_route("/v1/{path:path}", methods=["GET", "POST"])
    async def unavailable(path: str) -> JSONResponse:
        return JSONResponse({"status": 503, "title": "Service unavailable"}, status_code=503)

    with serve_app(gateway) as url:
        failures = asyncio.run(demo._run_scenarios(Settings(data_dir=tmp_path), url,
                                                   {system: OKPKey.generate_key("Ed25519")}))
    assert failures == 1
    out = capsys.readouterr().out
    assert "enrolment failed: 503: Service unavailable" in out
    assert "Traceback" not in out


def test_demo_counts_a_failed_filter_enrolment_and_runs_the_other_scenarios(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the fuzzy discovery needs the match filters: when enrolling them fails, the demo says so in one
    line, counts one failure and skips the fuzzy discovery, and the pseudonym scenarios still run."""
    import asyncio

    from joserfc.jwk import OKPKey

    from gateway import demo, demo_fuzzy
    from gateway.client.api import GatewayClientError

    ran: list[str] = []

    async def enrolled(*_args: object) -> None:
        ran.append("pseudonyms")

    async def refused(*_args: object) -> None:
        raise GatewayClientError(503, {"title": "Service unavailable"})

    async def fuzzy(*_args: object) -> int:
        ran.append("fuzzy")
        return 0

    monkeypatch.setattr(demo, "_enrol_partners", enrolled)
    monkeypatch.setattr(demo_fuzzy, "enrol_partner_filters", refused)
    monkeypatch.setattr(demo, "_scenarios", lambda _world: [])
    monkeypatch.setattr(demo, "_run_fuzzy", fuzzy)
    keys = {system: OKPKey.generate_key("Ed25519") for system in demo_fuzzy.FILTER_HOLDERS}
    failures = asyncio.run(demo._run_scenarios(Settings(data_dir=tmp_path), "http://127.0.0.1:9", keys))
    assert failures == 1
    assert ran == ["pseudonyms"]
    out = capsys.readouterr().out
    assert "enrolment of match filters failed: 503: Service unavailable" in out
    assert "Traceback" not in out


RUNNING = "running; press Ctrl-C to stop"
QUICK_DEMO = """import sys
from gateway import demo
from gateway.settings import Settings

async def no_scenarios(*_args: object) -> int:
    return 0

demo._run_scenarios = no_scenarios  # the processes are what this test is about, not the scenarios
sys.exit(demo.run_demo(Settings(), port=0))
"""


def _read_until(process: subprocess.Popen[str], marker: str, deadline: float) -> str:
    """What ``process`` printed, up to the line holding ``marker`` at least (fails after ``deadline`` seconds).

    Reads the pipe's bytes as they come (``os.read``), never through the file object's buffer: ``select``
    sees only the pipe, so lines that arrived in one chunk with the first (the demo prints its partners'
    URLs, "logs of ..." and "running" in a burst) sat in that buffer unseen, and the wait ran out although
    "running" had been printed — the demo "took >120 s" to start. Nothing is left in the buffer for a later
    ``communicate``."""
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    seen = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        ready, _, _ = select.select([descriptor], [], [], 1)
        if ready:
            chunk = os.read(descriptor, 1 << 16)
            seen += chunk
            text = seen.decode(errors="replace")
            if marker in text:
                return text
            if not chunk and process.poll() is not None:
                break
    raise AssertionError(f"no {marker!r} within {deadline} s:\n{seen.decode(errors='replace')}")


def test_reading_until_a_marker_sees_lines_that_arrived_together() -> None:
    """Lines written at once (the demo prints its partners' URLs, "logs of ..." and "running" in a burst) reach
    the reader in one chunk: ``_read_until`` must see the marker among them, not wait for more output."""
    import fcntl
    import termios

    lines = ["partner a", "partner b", RUNNING]
    burst = f"import time; print({chr(10).join(lines)!r}, flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", burst], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        pending = bytearray(4)
        end = time.monotonic() + 20
        while time.monotonic() < end:  # until the whole burst waits in the pipe, as when the reader was slower
            fcntl.ioctl(process.stdout.fileno(), termios.FIONREAD, pending)
            if int.from_bytes(pending, sys.byteorder) == len("\n".join(lines)) + 1:
                break
            time.sleep(0.01)
        output = _read_until(process, RUNNING, deadline=5)
    finally:
        process.kill()
        process.communicate()
    assert output.splitlines() == lines


def test_sigterm_stops_the_demo_and_every_process_it_started(tmp_path: Path) -> None:
    """Without ``--once`` the demo runs until stopped. SIGTERM (``kill``, ``timeout``, a service manager) must
    stop it like Ctrl-C does: the partners and the gateway stopped too, exit code 0. The demo used to die of
    the signal at once and leave its eight server processes running, still holding their ports."""
    env = os.environ | {"WGS_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("WGS_DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-c", QUICK_DEMO], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    group = process.pid  # its own session: every process it starts is in this group
    try:
        output = _read_until(process, RUNNING, deadline=120)
        assert output.count("  partner ") == 7, output
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output + rest
        # nothing of the group is left (a child that is gone but not yet reaped by init may linger a moment)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"processes of the demo's group outlived it:\n{output + rest}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        process.wait(timeout=10)


def _taken_after_the_check(monkeypatch: pytest.MonkeyPatch,
                           take: Callable[[int, list[socket.socket]], bool]) -> list[socket.socket]:
    """Another program binds each port the demo checked free for which ``take(port, taken so far)`` holds, right
    after the check (as a race would): the sockets holding them, for the test to close."""
    from gateway import demo

    taken: list[socket.socket] = []
    checked = demo._free_port

    def racing(preferred: int) -> int:
        port = checked(preferred)
        if take(port, taken):
            other = socket.socket()
            other.bind(("127.0.0.1", port))
            other.listen()
            taken.append(other)
        return port

    monkeypatch.setattr(demo, "_free_port", racing)
    return taken


def test_a_demo_on_port_0_takes_no_default_port_another_run_may_race_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two runs at once (two CI jobs on one machine) both found a partner's default port free, and the one that
    bound it second failed ("a partner could not bind"). Here the other run takes every default port right
    after this run's check, as it did then: a run on port 0 still gets every partner up (the gateway, made to
    fail at once, is the only process reported), because it never tries the defaults."""

    from connectors.profiles import PROFILES
    from gateway import demo

    defaults = {profile.default_port for profile in PROFILES.values()}
    # the other run's partner binds each default port between our check and our partner's bind
    taken = _taken_after_the_check(monkeypatch, lambda port, _: port in defaults)
    monkeypatch.setattr(demo, "GATEWAY_APP", "gateway.no_such_module:app")  # ends the run once partners are up
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    try:
        code = demo.run_demo(Settings(data_dir=tmp_path), port=0, once=True)
    finally:
        for other in taken:
            other.close()
    assert code == 1
    failed = [text for text in capsys.readouterr().err.splitlines() if " before it was ready" in text]
    assert len(failed) == 1, failed
    assert failed[0].startswith("gateway exited with code ")
    assert failed[0].endswith(f" before it was ready; see {tmp_path / 'logs' / 'gateway.log'}")


def _children() -> set[int]:
    """The processes whose parent is this one (zombies included), from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                children.add(int(stat.parent.name))
    return children


def test_the_partners_start_while_the_demo_migrates_and_registers_its_clients(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's own serial work before the gateway can start (migrating its database, registering every
    partner as a client and the people of S9) overlaps the seven partners' start-up: they are started
    before it, not after, and are stopped when the run ends. (Where the start-up time goes, measured, is in
    ``gateway.demo``'s docstring.)"""
    from alembic import command
    from alembic.config import Config

    from gateway import demo

    before = _children()
    started: list[set[int]] = []
    upgrade = command.upgrade

    def migrating(config: Config, revision: str) -> None:
        started.append(_children() - before)
        upgrade(config, revision)

    monkeypatch.setattr(command, "upgrade", migrating)  # the module the demo calls it from
    monkeypatch.setattr(demo, "GATEWAY_APP", "gateway.no_such_module:app")  # ends the run once partners are up
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always", ResourceWarning)
        assert demo.run_demo(Settings(data_dir=tmp_path), port=0, once=True) == 1
    assert not [str(w.message) for w in warned if "gateway.log" in str(w.message)]  # its handle closed, not dropped
    [partners] = started
    assert len(partners) == 7
    assert not (_children() - before) & partners  # every one stopped and reaped
    [line] = [text for text in capsys.readouterr().err.splitlines() if " before it was ready" in text]
    assert line.startswith("gateway exited with code ")


def test_waiting_for_a_process_polls_it_with_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo polls each process's health every 0.2 s until it answers. Each poll made a new HTTP client
    (``httpx.get``), whose TLS context alone costs ~25 ms of CPU (one client's request: ~1 ms): over a start
    of 20 s under load some 2-3 s of CPU, taken from the very processes being waited for. One client per
    wait, over every poll."""
    import httpx
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from gateway import demo
    from tests.servers import serve_app

    polls = [0]
    app = FastAPI()

    @app.get("/health")
    async def health() -> JSONResponse:
        polls[0] += 1
        return JSONResponse({}, status_code=200 if polls[0] > 4 else 503)

    made = [0]
    init = httpx.Client.__init__

    def counting(self: httpx.Client, *args: object, **kwargs: object) -> None:
        made[0] += 1
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    with serve_app(app) as url:
        monkeypatch.setattr(httpx.Client, "__init__", counting)
        demo._wait(f"{url}/health", deadline=60)
    assert polls[0] == 5
    assert made[0] == 1


def test_a_port_taken_before_the_gateway_binds_it_is_named_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The gateway's port was free when the demo chose it and another program took it before the gateway
    bound it (another demo, a test run, a container publishing the port): the one line says so, naming the
    port, instead of only that the gateway exited (the reason was in its log)."""

    from gateway import demo

    # the gateway's port, chosen first: another program binds it right after the check
    taken = _taken_after_the_check(monkeypatch, lambda _, taken: not taken)
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    try:
        code = demo.run_demo(Settings(data_dir=tmp_path), port=0, once=True)
        port = taken[0].getsockname()[1]
    finally:
        for other in taken:
            other.close()
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [text for text in err.splitlines() if text.startswith("gateway ")]
    assert line == (f"gateway could not listen on 127.0.0.1:{port}: another program uses that port; "
                    f"see {tmp_path / 'logs' / 'gateway.log'}")


class _InterruptedWhileWaiting:
    """A process whose first wait is interrupted by a second Ctrl-C (or SIGTERM), as the demo's handler
    raises it: ``KeyboardInterrupt`` inside ``wait``."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process, self.interrupted = process, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.process, name)

    def wait(self, timeout: float | None = None) -> int:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return self.process.wait(timeout)


def test_a_second_ctrl_c_while_stopping_kills_what_is_left_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A second Ctrl-C (or SIGTERM) while the demo waits up to 10 s for its processes to stop ended the demo
    with a ``KeyboardInterrupt`` traceback, leaving the processes not yet stopped unkilled and unreaped. Now
    it kills what is left at once and reaps it, without a traceback."""
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
                "time.sleep(60)")
    processes = [subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE) for _ in range(2)]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline() == b"up\n"  # SIGTERM is ignored from here on
        from gateway import demo

        started = time.monotonic()
        try:
            demo.stop_processes([_InterruptedWhileWaiting(processes[0]), processes[1]])  # type: ignore[list-item]
        except KeyboardInterrupt:  # not raised on: pytest would take it for the user's and end the whole run
            pytest.fail("the second Ctrl-C ended the stop with KeyboardInterrupt")
        assert time.monotonic() - started < 9  # not after the 10 s grace
        assert [p.returncode for p in processes] == [-signal.SIGKILL] * 2
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def test_a_partner_stopped_the_moment_it_is_forked_ends_quietly(tmp_path: Path) -> None:
    """A partner is forked from the demo, whose SIGTERM handler turns the signal into ``KeyboardInterrupt``.
    A stop that reached the child between the fork and its own handler reset (the demo stopped at once: a
    service manager's stop, a test's ``kill``) ran the demo's handler in the partner: a traceback in its log
    and exit code 1. Stops are held back over the fork now, so the partner ends of the signal, quietly."""
    from gateway import demo

    with demo._sigterm_as_ctrl_c():
        for attempt in range(5):
            log = tmp_path / f"partner-{attempt}.log"
            partner = demo._Partner(["--partner", "politie", "--port", "0", "--data-dir", str(tmp_path)], log)
            partner.send_signal(signal.SIGTERM)
            code = partner.wait(timeout=30)
            written = log.read_text(encoding="utf-8") if log.exists() else ""  # none yet: stopped before it
            assert code == -signal.SIGTERM, written
            assert "Traceback" not in written
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) & {signal.SIGINT, signal.SIGTERM} == set()


def test_a_stop_held_back_over_a_partners_fork_still_stops_that_partner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop that comes while a partner is forked is held back and raised in the demo once the fork is done —
    inside the partner's start, before the demo has it in its list of processes to stop. That partner was left
    running: nothing sent it SIGTERM (its Ctrl-C is ignored), and the demo's exit then waited for it for ever
    (a forked child not a daemon is joined at exit). It is stopped and reaped before the stop goes on."""
    import multiprocessing
    import threading

    from gateway import demo

    forked: list[int] = []

    class StoppedWhileForking(demo._FORK.Process):  # type: ignore[name-defined,misc]
        def start(self) -> None:
            super().start()
            assert self.pid is not None
            forked.append(self.pid)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # held back: the stop waits for the block

    monkeypatch.setattr(demo._FORK, "Process", StoppedWhileForking)
    try:
        with demo._sigterm_as_ctrl_c(), pytest.raises(KeyboardInterrupt):
            demo._Partner(["--partner", "politie", "--port", "0", "--data-dir", str(tmp_path)], tmp_path / "p.log")
        [pid] = forked
        assert pid not in [child.pid for child in multiprocessing.active_children()]  # ended, and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        for child in multiprocessing.active_children():
            if child.pid in forked:
                child.kill()
                child.join()
