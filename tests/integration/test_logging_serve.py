"""Issue 2, operations: the gateway started the way operators start it (``wgs-gateway serve``) writes JSON
and nothing else, uvicorn's and Alembic's lines included; the lines of a request carry its request id and
trace id; and a holder call carries a trace of the gateway's own into the partner's log lines (W3C
``traceparent``): a requester's trace id stops at the gateway.

The helpers start real processes and are shared with ``test_graceful_shutdown``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from alembic import command

from gateway.container import build_container
from gateway.db.engine import alembic_config
from gateway.demo import _free_port, _wait, demo_register
from gateway.settings import Settings
from tests.auth_helpers import register_client
from tests.reliability.test_crash_safety import BODY, _token

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REQUESTER = "gemeente-amsterdam-vth"


def _command(name: str, module: str) -> list[str]:
    """The installed console script, as an operator runs it; ``python -m`` when it is not installed."""
    script = shutil.which(name, path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", module]


@dataclass
class ServedGateway:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def lines(self) -> list[str]:
        """Every non-empty line the process wrote, stdout and stderr."""
        text = self.stdout.read_text() + self.stderr.read_text()
        return [line for line in text.splitlines() if line.strip()]


@contextmanager
def served_gateway(data_dir: Path, **env: str) -> Iterator[ServedGateway]:
    """``wgs-gateway serve`` on a free port over a migrated SQLite file in ``data_dir``, with an OAuth client
    for the requester; ``env`` adds ``WGS_*`` settings. Stopped (SIGTERM, then kill) on exit.

    It serves the demo's register (office hours the whole week): the process runs on the wall clock, and
    these tests need their exchange to reach the holder at any hour, not be escalated after 19:00 (rule 7)."""
    url = f"sqlite:///{data_dir / 'gateway.sqlite'}"
    command.upgrade(alembic_config(url), "head")
    settings = Settings(data_dir=data_dir, database_url=url)
    settings = settings.model_copy(update={"register_file": demo_register(settings)})
    container = build_container(settings)
    keys = register_client(container, REQUESTER, ["exchange"])
    container.close()
    port = _free_port(0)
    variables = {k: v for k, v in os.environ.items() if not k.startswith("WGS_")}
    variables |= {"WGS_DATA_DIR": str(data_dir), "WGS_REGISTER_FILE": str(settings.register_file),
                  "WGS_LOG_LEVEL": "INFO", "WGS_ESCALATION_SCAN_SECONDS": "0", **env}
    stdout, stderr = data_dir / "gateway.out", data_dir / "gateway.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen([*_command("wgs-gateway", "gateway.cli"), "serve", "--port", str(port)],
                                   env=variables, stdout=out, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(f"{base}/health/ready", deadline=60)
        yield ServedGateway(base, _token(base, keys, settings.issuer), process, stdout, stderr)
    finally:
        if process.poll() is None:
            _terminate(process)


@contextmanager
def served_partner(data_dir: Path, system: str) -> Iterator[tuple[str, Path]]:
    """``wgs-partner serve`` (no authentication) on a free port; yields its URL and its stderr file."""
    port = _free_port(0)
    stderr = data_dir / f"{system}.err"
    with stderr.open("wb") as err:
        process = subprocess.Popen([*_command("wgs-partner", "connectors.cli"), "serve", "--partner", system,
                                    "--no-auth", "--port", str(port), "--data-dir", str(data_dir / "partners")],
                                   stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait(f"http://127.0.0.1:{port}/health", deadline=60)
        yield f"http://127.0.0.1:{port}", stderr
    finally:
        _terminate(process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful stop, as an operator would), SIGKILL if it is still running after 20 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Each line as a JSON object; fails naming the first line that is not one."""
    parsed = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


def test_every_line_of_a_served_gateway_is_json_and_a_request_s_lines_carry_its_ids(tmp_path: Path) -> None:
    with served_partner(tmp_path, "kvk-handelsregister") as (partner_url, partner_log), \
            served_gateway(tmp_path, WGS_CONNECTOR_ENDPOINTS=json.dumps({"kvk-handelsregister": partner_url}),
                           WGS_CONNECTOR_RETRIES="0") as gateway:
        response = httpx.post(f"{gateway.url}/v1/exchanges", json=BODY, timeout=30,
                              headers={"Authorization": f"Bearer {gateway.token}", "x-request-id": "req-log-1",
                                       "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
        assert response.status_code == 200, response.text
        assert [target["outcome"] for target in response.json()["targets"]] == ["allowed"]  # kvk answered
        assert gateway.stop() == 0

    lines = _parsed(gateway.lines())
    assert all({"event", "level", "logger", "timestamp"} <= set(line) for line in lines)
    events = [line["event"] for line in lines]
    # uvicorn's and Alembic's stdlib lines came out as JSON too (they were plain text before)
    assert any(event.startswith("Started server process") for event in events)
    assert "Context impl SQLiteImpl." in events
    assert "Shutting down" in events
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    # everything written from the first to the last line of the request is the request's, with its ids
    ours = [i for i, line in enumerate(lines) if line.get("request_id") == "req-log-1"]
    assert ours
    during = lines[ours[0]:ours[-1] + 1]
    assert {"request", "exchange_completed"} <= {line["event"] for line in during}
    assert all(line.get("request_id") == "req-log-1" and line.get("trace_id") == TRACE for line in during), during
    assert "subj-crash-test-0001" not in gateway.stdout.read_text() + gateway.stderr.read_text()  # no bodies

    # The caller's trace stops at the gateway: holders get a trace id of the gateway's own, which the
    # request's gateway lines carry next to the caller's (that is where the two are joined).
    holder_traces = {line.get("holder_trace_id") for line in during}
    assert len(holder_traces) == 1
    assert None not in holder_traces
    assert TRACE not in holder_traces
    partner_lines = _parsed([line for line in partner_log.read_text().splitlines() if line.strip()])
    answered = [line for line in partner_lines if line["event"] == "query_answered"]
    assert answered
    assert all(line["trace_id"] in holder_traces for line in answered)  # the gateway's traceparent, continued
    assert TRACE not in partner_log.read_text()  # the requester's chosen value never reaches the holder
    assert all(line["parent_span_id"] != "00f067aa0ba902b7" for line in answered)  # the gateway's call span
    assert all({"level", "logger", "timestamp"} <= set(line) for line in partner_lines)
