"""``uvicorn gateway.asgi:app`` started by hand (or by gunicorn, a container's command line) with a bad setting:
the same one line per problem as ``wgs-gateway serve`` prints, and a non-zero exit — not a traceback, whose
rendering of pydantic's error repeats the value (a password, a webhook secret), nor a database file created
on the way. Each start is a real uvicorn process, bounded by a timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gateway
from gateway.cli import app
from gateway.console.settings import ConsoleSettings
from gateway.demo import _wait
from gateway.settings import Settings
from gateway.startup import CHECKED_BY_SERVE, STARTUP_FAILURE, settings_fingerprint
from tests.reliability.gateways import prepared_container

SECRET = "hunter2-not-a-number"
START_TIMEOUT = 120  # seconds: importing the app on a busy machine; a refusal comes well before


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


CHECKS_LOG = "TEST_START_CHECKS_LOG"
RECORDING_HOOK = f"""
import json
import os

import gateway.app
import gateway.startup

_log = os.environ["{CHECKS_LOG}"]


def _record(what):
    with open(_log, "a") as log:
        log.write(f"{{what}} {{os.getpid()}}\\n")


def _checked(settings, _real=gateway.startup.start_refusal):
    _record("checked")
    return _real(settings)


def _built(*args, _real=gateway.app.create_app, **kwargs):
    _record("app")
    return _real(*args, **kwargs)


gateway.startup.start_refusal = _checked
gateway.app.create_app = _built
"""
"""A ``sitecustomize`` for the started processes (uvicorn's workers are new interpreters): each check of the
database and the register, and each app built, is a line with the process's id."""


def _recorded(log: Path) -> list[tuple[str, int]]:
    lines = log.read_text().split() if log.exists() else []
    return [(what, int(pid)) for what, pid in zip(lines[::2], lines[1::2], strict=True)]


def test_serve_with_workers_checks_once_in_its_own_process(tmp_path: Path) -> None:
    """Each worker imported the entry point and checked the database and the register again: a connection and
    the checks per worker, which ``serve`` had just made."""
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    prepared_container(tmp_path, url).close()  # migrated, and the keys made as `keys init` makes them
    hook, log = tmp_path / "hook", tmp_path / "checks.log"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDING_HOOK)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WGS_")} | {
        "WGS_DATA_DIR": str(tmp_path), "WGS_DATABASE_URL": url, "WGS_LOG_LEVEL": "WARNING",
        "WGS_ESCALATION_SCAN_SECONDS": "0", CHECKS_LOG: str(log),
        "PYTHONPATH": os.pathsep.join([str(hook), str(Path(gateway.__file__).parent.parent)])}
    with (tmp_path / "serve.err").open("wb") as err:
        serve = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers",
                                  "2"], env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/health/ready", serve, tmp_path / "serve.err", deadline=START_TIMEOUT)
        end = time.monotonic() + START_TIMEOUT  # the other worker may still be building its app
        while len([what for what, _ in _recorded(log) if what == "app"]) < 2 and time.monotonic() < end:
            time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    recorded = _recorded(log)
    workers = {pid for what, pid in recorded if what == "app"}
    assert len(workers) == 2, recorded
    assert serve.pid not in workers
    assert [pid for what, pid in recorded if what == "checked"] == [serve.pid]  # serve's check; none in a worker
    assert CHECKED_BY_SERVE not in os.environ


def _forged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> dict[str, str]:
    """The environment of a start whose database is missing (settings valid), and this process's fingerprint
    of those settings."""
    env = _bad_settings(case, tmp_path)
    for name in [name for name in os.environ if name.startswith("WGS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env | {"fingerprint": settings_fingerprint(Settings(), ConsoleSettings())}


@pytest.mark.parametrize("marker", ["of a process that is not its parent", "of other settings", "malformed"])
def test_uvicorn_started_by_hand_checks_whatever_start_checked_marker_it_inherits(
        marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ``serve``'s own workers skip the check: a marker left in a shell, or copied from another start,
    names another process or other settings, and the entry point refuses as before (exit 3, the same line)."""
    env = _forged(tmp_path, monkeypatch, "a data directory without a database")
    fingerprint = env.pop("fingerprint")
    expected = _what_serve_says(env, monkeypatch)
    value = {"of a process that is not its parent": f"{2**22 + 7}:{fingerprint}",  # above any pid_max default
             "of other settings": f"{os.getpid()}:{'0' * len(fingerprint)}",  # this test is uvicorn's parent
             "malformed": f"{os.getpid()}:{fingerprint}\u00e9"}[marker]
    started = _uvicorn(env | {CHECKED_BY_SERVE: value})
    stderr = started.stderr.decode()
    assert started.returncode == STARTUP_FAILURE, stderr
    assert [line for line in stderr.splitlines() if line in expected] == expected, stderr
    assert not (tmp_path / "empty").exists()  # no SQLite file made on the way



@pytest.mark.parametrize("secret", ["database password", "OPA token", "webhook secret", "console session secret",
                                    "webhook URL password", "OPA URL password"])
def test_the_start_checked_marker_is_no_digest_of_a_secret(tmp_path: Path, secret: str) -> None:
    """``serve`` puts the marker in its workers' environment (``ps e``, a crash report, a support bundle): a
    digest of the settings with their secrets in it lets whoever reads it test guesses at a password offline,
    one SHA-256 per guess. The fingerprint changes with what the workers' skipped checks read, never with a
    secret."""
    def fingerprint(password: str = "first-password", token: str = "t" * 24, webhook: str = "w" * 24,
                    session: str = "s" * 32, register: str = "register.yaml", hook_pw: str = "first-hook-pw",
                    opa_pw: str = "first-opa-pw") -> str:
        settings = Settings(database_url=f"postgresql+psycopg://gateway:{password}@db.internal/wgs",
                            opa_token=token, register_file=tmp_path / register,
                            opa_url=f"http://opa:{opa_pw}@127.0.0.1:8181",  # the embedded engine does not refuse it
                            connector_endpoints={"politie-bvh": "https://holder.internal/api"},  # no credentials
                            escalation_webhooks={"gemeente": {"url": f"https://hook:{hook_pw}@hooks.internal/x",
                                                              "secret": webhook}})
        return settings_fingerprint(settings, ConsoleSettings(session_secret=session))

    assert fingerprint() != fingerprint(register="other.yaml"), "another register file is checked again"
    guessed = {"database password": {"password": "second-password"}, "OPA token": {"token": "u" * 24},
               "webhook secret": {"webhook": "x" * 24}, "console session secret": {"session": "z" * 32},
               "webhook URL password": {"hook_pw": "second-hook-pw"},
               "OPA URL password": {"opa_pw": "second-opa-pw"}}[secret]
    assert fingerprint() == fingerprint(**guessed)


SECRETS = {"database password": "db-pw-9f3k2", "OPA token": "opa-token-7c1x9q4", "webhook URL password": "hook-pw-5m2",
           "webhook secret": "hook-secret-7q", "console session secret": "session-secret-too-short-8d"}


def _secrets_set(case: str, tmp_path: Path) -> dict[str, str]:
    """A start with every secret set and one setting bad: the bad one a secret itself (too short), or the
    database (unreachable) whose URL carries the password."""
    webhook_secret = SECRETS["webhook secret"] + ("" if case == "a webhook secret too short" else "-long-enough")
    session_secret = SECRETS["console session secret"] + (
        "" if case == "a console session secret too short" else "-long-enough-for-a-key")
    host = f"127.0.0.1:{_free_port()}/wgs" if case == "an unreachable database" else "postgres.internal/wgs"
    return {"WGS_DATA_DIR": str(tmp_path), "WGS_DB_CONNECT_TIMEOUT_SECONDS": "2",
            "WGS_DATABASE_URL": f"postgresql+psycopg://wgs:{SECRETS['database password']}@{host}",
            "WGS_OPA_TOKEN": SECRETS["OPA token"], "WGS_CONSOLE_SESSION_SECRET": session_secret,
            "WGS_ESCALATION_WEBHOOKS": json.dumps({"fiod": {
                "url": f"https://hook:{SECRETS['webhook URL password']}@hooks.internal/x", "secret": webhook_secret}})}


@pytest.mark.parametrize("case", ["a webhook secret too short", "a console session secret too short",
                                  "an unreachable database"])
def test_a_refused_start_echoes_no_secret(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` and the entry point print why they refuse to start, to a terminal and into the logs: the
    lines name the variable (or the database's host), never a password, token or secret, the bad one
    included."""
    env = _secrets_set(case, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    refused = CliRunner().invoke(app, ["serve", "--port", str(_free_port())])
    started = _uvicorn(env)
    assert refused.exit_code == 1, refused.output
    assert started.returncode == STARTUP_FAILURE, started.stderr.decode()
    said = {"serve": refused.stdout + refused.stderr, "uvicorn": (started.stdout + started.stderr).decode()}
    for text in said.values():
        assert text.strip()
        assert "Traceback" not in text, text
        for secret in SECRETS.values():
            assert secret not in text, text
    expected = ("WGS_ESCALATION_WEBHOOKS (fiod.secret)" if case == "a webhook secret too short"
                else "WGS_CONSOLE_SESSION_SECRET" if case == "a console session secret too short"
                else "database unreachable")
    assert expected in said["serve"], said["serve"]
    assert expected in said["uvicorn"], said["uvicorn"]


def test_uvicorn_started_by_hand_refuses_certificate_binding_unless_its_proxy_handling_is_declared_off(
        tmp_path: Path, sqlite_db_url: str) -> None:
    """uvicorn applies ``X-Forwarded-For`` before the app notes who connected, unless told not to: with
    ``FORWARDED_ALLOW_IPS`` trusting an address a caller can use, the caller names a listed proxy and its own
    certificate header is believed (a copied bound token then works without the certificate). With binding
    configured, a start by hand refuses unless ``WGS_UVICORN_PROXY_HEADERS=off`` declares the handling off
    (``serve`` declares it for its workers)."""
    env = {"WGS_DATA_DIR": str(tmp_path), "WGS_DATABASE_URL": sqlite_db_url,
           "WGS_CLIENT_CERT_HEADER": "X-Client-Cert", "WGS_CLIENT_CERT_PROXIES": "127.0.0.1",
           "FORWARDED_ALLOW_IPS": "*"}
    refused = _uvicorn(env)
    stderr = refused.stderr.decode()
    assert refused.returncode == STARTUP_FAILURE, stderr
    assert "Traceback" not in stderr, stderr
    assert "--no-proxy-headers and WGS_UVICORN_PROXY_HEADERS=off" in stderr
