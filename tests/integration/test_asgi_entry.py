"""``uvicorn gateway.asgi:app`` started by hand (or by gunicorn, a container's command line) with a bad setting:
the same one line per problem as ``wgs-gateway serve`` prints, and a non-zero exit — not a traceback, whose
rendering of pydantic's error repeats the value (a password, a webhook secret), nor a database file created
on the way. Each start is a real uvicorn process, bounded by a timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app

SECRET = "hunter2-not-a-number"
START_TIMEOUT = 60  # seconds: importing the app on a busy machine; a refusal comes well before


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _uvicorn(env: dict[str, str], *options: str) -> subprocess.CompletedProcess[bytes]:
    """``uvicorn gateway.asgi:app`` with ``env`` (and no other ``WGS_`` variable) until it ends; past the timeout
    its process group (the supervisor and any workers) is killed and the test fails."""
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1", "--port", str(_free_port()),
         *options], env={k: v for k, v in os.environ.items() if not k.startswith("WGS_")} | env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _bad_settings(case: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a start with one bad setting (on top of a data directory of the test's own)."""
    if case == "a value that is no number":
        return {"WGS_DATA_DIR": str(tmp_path), "WGS_RATE_LIMIT_PER_SECOND": SECRET}
    if case == "a console value out of range":
        return {"WGS_DATA_DIR": str(tmp_path), "WGS_CONSOLE_PAGE_SIZE": "1"}
    if case == "a data directory that is a file":
        (tmp_path / "not-a-directory").write_text("")
        return {"WGS_DATA_DIR": str(tmp_path / "not-a-directory")}
    assert case == "a data directory without a database"
    return {"WGS_DATA_DIR": str(tmp_path / "empty")}


def _what_serve_says(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    refused = CliRunner().invoke(app, ["serve", "--port", str(_free_port())])
    assert refused.exit_code == 1, refused.output
    return refused.stderr.splitlines()


CASES = ["a value that is no number", "a console value out of range", "a data directory that is a file",
         "a data directory without a database"]


@pytest.mark.parametrize("case", CASES)
def test_uvicorn_started_by_hand_refuses_a_bad_setting_in_the_lines_serve_prints(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _bad_settings(case, tmp_path)
    files_before = sorted(tmp_path.rglob("*"))
    expected = _what_serve_says(env, monkeypatch)
    assert expected
    assert all(line.strip() for line in expected)
    started = _uvicorn(env)
    stderr = started.stderr.decode()
    assert started.returncode != 0
    assert "Traceback" not in stderr, stderr
    assert SECRET not in stderr + started.stdout.decode()
    assert [line for line in stderr.splitlines() if line in expected] == expected, stderr
    assert sorted(tmp_path.rglob("*")) == files_before  # no SQLite file made on the way


def test_workers_that_cannot_start_are_not_started_again_and_again(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With several workers, uvicorn's supervisor restarts a worker that dies — unless it exits with the
    start-up failure code, as a refusal does: then the whole server stops, once, instead of starting workers
    that fail again for ever (which the timeout would end)."""
    env = _bad_settings("a value that is no number", tmp_path)
    expected = _what_serve_says(env, monkeypatch)
    started = _uvicorn(env, "--workers", "2")
    stderr = started.stderr.decode()  # (uvicorn's supervisor itself then exits 0: its choice, not ours)
    assert "Traceback" not in stderr, stderr
    assert "died" not in stderr, stderr  # the supervisor's line for a worker it starts again
    assert set(expected) <= set(stderr.splitlines()), stderr
