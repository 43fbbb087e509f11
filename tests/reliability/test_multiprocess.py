"""State that must hold across gateway processes (production runs several workers, possibly in several
containers, on one database): each test starts two real gateway processes on one database (an SQLite file,
and PostgreSQL) and sends them concurrent requests over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from gateway.settings import SHIPPED_REGISTER
from tests.auth_helpers import register_client
from tests.reliability.gateways import gateway_processes, prepared_container
from tests.reliability.test_crash_safety import BODY, _token

T = TypeVar("T")
SYSTEM = "gemeente-amsterdam-vth"


def _register_file(tmp_path: Path, **purpose: Any) -> Path:
    """The shipped register with ``purpose`` settings changed for the Bibob check (``BODY``'s purpose)."""
    register = yaml.safe_load(SHIPPED_REGISTER.read_text())
    register["partnerships"]["riec-amsterdam-amstelland"]["purposes"]["bibob-integrity-check"].update(purpose)
    path = tmp_path / "register.yaml"
    path.write_text(yaml.safe_dump(register))
    return path


def _burst(calls: list[Callable[[], T]]) -> list[T]:
    """Run ``calls`` at once (each on its own thread, released together)."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_the_daily_limit_holds_for_a_burst_split_over_two_processes(tmp_path: Path, empty_db_url: str) -> None:
    limit = 3
    register = _register_file(tmp_path, daily_limit_per_system=limit)
    container = prepared_container(tmp_path, empty_db_url, register_file=register)
    keys = register_client(container, SYSTEM, ["exchange"])
    with gateway_processes(tmp_path, empty_db_url, env={"WGS_REGISTER_FILE": str(register)}) as urls:
        token = _token(urls[0], keys, container.settings.issuer)

        def ask(base: str, n: int) -> Callable[[], set[str]]:
            def call() -> set[str]:
                response = httpx.post(f"{base}/v1/exchanges", timeout=30, headers={"Authorization": f"Bearer {token}"},
                                      json=BODY | {"case_reference": f"RIEC-AA-2026-{n:03d}"})
                assert response.status_code == 200, response.text
                return {r["code"] for r in response.json()["targets"][0]["reasons"]}
            return call

        burst = _burst([ask(urls[n % 2], n) for n in range(12)])
        assert sum("daily-limit" not in codes for codes in burst) == limit, burst
        assert all("daily-limit" in ask(base, 100 + n)() for n, base in enumerate(urls))  # and afterwards
    container.close()
