"""The README's demo command works: partners and gateway start as processes and the scenarios run."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
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
        return {"token_endpoint": "http://gateway/oauth/token"}

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
    """What ``process`` printed up to the line holding ``marker`` (fails after ``deadline`` seconds)."""
    assert process.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        ready, _, _ = select.select([process.stdout], [], [], 1)
        if ready:
            line = process.stdout.readline()
            seen.append(line)
            if marker in line:
                return "".join(seen)
            if not line and process.poll() is not None:
                break
    raise AssertionError(f"no {marker!r} within {deadline} s:\n{''.join(seen)}")


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
