"""Several gateway worker processes against one PostgreSQL (issue 8): concurrent exchanges through two
uvicorn workers keep the audit log gap-free, every acknowledged entry is in it once, and the tree verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from audit import verify_database
from audit.tables import audit_entries
from gateway.auditing.setup import audit_verifier
from gateway.db.engine import make_engine
from gateway.demo import _free_port, _wait
from tests.auth_helpers import register_client
from tests.pg_server import create_database
from tests.reliability.gateways import prepared_container
from tests.reliability.test_crash_safety import BODY, _token

pytestmark = pytest.mark.postgres


def test_two_workers_on_postgresql_keep_one_gap_free_log(tmp_path: Path, postgres_admin_url: str) -> None:
    url = create_database(postgres_admin_url, "wgs_workers")
    container = prepared_container(tmp_path, url)  # keys exist before the workers start, as after `keys init`
    settings = container.settings
    keys = register_client(container, "gemeente-amsterdam-vth", ["exchange"])
    container.close()
    port = _free_port(0)
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"WGS_DATA_DIR": str(tmp_path), "WGS_DATABASE_URL": url, "WGS_LOG_LEVEL": "WARNING",
                        "WGS_ESCALATION_SCAN_SECONDS": "0"}
    workers = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "2", "--log-level", "warning"], env=env,
                               stdout=subprocess.DEVNULL, stderr=(tmp_path / "workers.log").open("wb"))
    try:
        _wait(f"{base}/health/ready", deadline=90)
        token = _token(base, keys, settings.issuer)
        acknowledged: list[int] = []
        statuses: Counter[int] = Counter()
        lock = threading.Lock()

        def load() -> None:
            with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
                for _ in range(25):
                    response = http.post("/v1/exchanges", json=BODY)
                    with lock:
                        statuses[response.status_code] += 1
                        if response.status_code == 200:
                            acknowledged.extend(response.json()["receipt"]["audit_indices"])

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=30)
    assert statuses == Counter({200: 150}), statuses
    assert len(acknowledged) == len(set(acknowledged))  # no index handed out twice across the processes
    engine = make_engine(url)
    with engine.connect() as connection:
        stored = set(connection.execute(select(audit_entries.c.log_index)).scalars())
        size = int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())
    verifier = audit_verifier(settings)
    result = verify_database(engine, verifier)
    engine.dispose()
    assert stored == set(range(size))
    assert set(acknowledged) <= stored
    assert result.ok, result.failure
