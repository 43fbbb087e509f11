"""Crash safety for real (issue 8): a gateway process killed with SIGKILL under load loses no acknowledged
audit entry and leaves a log that verifies; started again, it serves at once.

The gateway runs as its own uvicorn process on an SQLite file; four client threads send exchanges as fast
as they can; every 200 answer's receipt names the audit indices that were committed before it was sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from alembic import command
from joserfc import jwt
from sqlalchemy import func, select

from audit import verify_database
from audit.tables import audit_entries
from gateway.auditing.setup import audit_verifier
from gateway.container import build_container
from gateway.db.engine import alembic_config, make_engine
from gateway.demo import _free_port, _wait
from gateway.settings import Settings
from tests.auth_helpers import ClientKeys, register_client

BODY = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-990",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-990"},
        "subjects": [{"ref": "subj-crash-test-0001"}], "holders": ["kvk"], "categories": ["company_registration"]}


def _start(data_dir: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {"WGS_DATA_DIR": str(data_dir), "WGS_DATABASE_URL": url, "WGS_LOG_LEVEL": "WARNING",
                        "WGS_ESCALATION_SCAN_SECONDS": "0"}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1",
                                "--port", str(port), "--log-level", "warning"], env=env,
                               stdout=subprocess.DEVNULL, stderr=(data_dir / "gateway.log").open("ab"))
    _wait(f"http://127.0.0.1:{port}/health/ready", deadline=60)
    return process


def _token(base: str, keys: ClientKeys, issuer: str) -> str:
    now = int(time.time())
    assertion = jwt.encode({"alg": "Ed25519", "kid": keys.key.kid},
                           {"iss": keys.system_id, "sub": keys.system_id, "aud": f"{issuer}/oauth/token",
                            "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}, keys.key, algorithms=["Ed25519"])
    response = httpx.post(f"{base}/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    response.raise_for_status()
    return str(response.json()["access_token"])


def test_sigkill_under_load_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    command.upgrade(alembic_config(url), "head")
    settings = Settings(data_dir=tmp_path, database_url=url)
    container = build_container(settings)
    keys = register_client(container, "gemeente-amsterdam-vth", ["exchange"])
    container.close()
    port = _free_port(0)
    base = f"http://127.0.0.1:{port}"
    gateway = _start(tmp_path, url, port)
    token = _token(base, keys, settings.issuer)
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
            while not stop.is_set():
                try:
                    response = http.post("/v1/exchanges", json=BODY)
                except httpx.HTTPError:
                    return  # the process is gone
                if response.status_code == 200:
                    with lock:
                        acknowledged.extend(response.json()["receipt"]["audit_indices"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(acknowledged) < 200:
        time.sleep(0.05)
    gateway.send_signal(signal.SIGKILL)  # no shutdown hook runs: what was acknowledged must already be on disk
    gateway.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    assert len(acknowledged) >= 50, "the load did not get going"

    engine = make_engine(url)
    with engine.connect() as connection:
        stored = set(connection.execute(select(audit_entries.c.log_index)).scalars())
        size = int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())
    verifier = audit_verifier(settings)
    result = verify_database(engine, verifier)
    engine.dispose()
    assert set(acknowledged) <= stored  # every acknowledged entry survived the kill
    assert stored == set(range(size))  # gap-free
    assert result.ok, result.failure

    restarted = _start(tmp_path, url, port)  # recovers by itself: no repair step
    try:
        again = httpx.post(f"{base}/v1/exchanges", json=BODY, timeout=10,
                           headers={"Authorization": f"Bearer {_token(base, keys, settings.issuer)}"})
        assert again.status_code == 200, again.text
        assert min(again.json()["receipt"]["audit_indices"]) >= size
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=15)
    engine = make_engine(url)
    assert verify_database(engine, verifier).ok
    engine.dispose()
