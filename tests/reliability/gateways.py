"""Several real gateway processes on one database, for the multi-process tests.

Each gateway is its own uvicorn process on its own loopback port (so a test chooses which process answers a
request, which ``--workers N`` behind one port leaves to the kernel). The database is migrated and every key
made once before they start, as ``wgs-gateway keys init`` does in production, so they do not race to make them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml
from alembic import command

from gateway.app import start_services
from gateway.container import Container, build_container
from gateway.db.engine import alembic_config
from gateway.demo import _free_port, _wait
from gateway.settings import SHIPPED_REGISTER, Settings


def prepared_container(data_dir: Path, url: str, **settings: Any) -> Container:
    """Migrate ``url`` and make every key under ``data_dir``; the container (its services stopped) stays
    open for registering clients and accounts, and for reading the database; close it when done."""
    command.upgrade(alembic_config(url), "head")
    container = build_container(Settings(data_dir=data_dir, database_url=url, **settings))
    start_services(container)

    async def close_services() -> None:
        await container.services["connectors"].aclose()
        await container.services["policy"].aclose()  # its regorus engine lives on its own thread

    asyncio.run(close_services())
    return container


def all_hours_register(data_dir: Path, **purpose: Any) -> Path:
    """The shipped register with office hours over the whole week (so that an exchange's outcome does not
    depend on the hour the suite runs: rule 7 escalated every exchange of these tests after 19:00 Amsterdam
    time and at weekends; rule 7 has tests of its own on a fixed clock) and ``purpose`` settings changed for
    the Bibob check."""
    register = yaml.safe_load(SHIPPED_REGISTER.read_text(encoding="utf-8"))
    register["version"] = f"{register['version']}-all-hours"  # a register version names one content
    register["office_hours"] |= {"weekdays": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "24:00"}
    register["partnerships"]["riec-amsterdam-amstelland"]["purposes"]["bibob-integrity-check"].update(purpose)
    path = data_dir / "register-all-hours.yaml"
    path.write_text(yaml.safe_dump(register), encoding="utf-8")
    return path


@contextmanager
def gateway_processes(data_dir: Path, url: str, count: int = 2, env: dict[str, str] | None = None,
                      deadline: float = 60) -> Iterator[list[str]]:
    """Start ``count`` gateway processes on ``url`` with ``WGS_*`` settings ``env``; yield their base URLs;
    stop them (SIGTERM, then SIGKILL) afterwards. Their logs are ``gateway-N.log`` in ``data_dir``. Unless
    ``env`` names a register, they serve :func:`all_hours_register`'s."""
    base_env = os.environ | {"WGS_DATA_DIR": str(data_dir), "WGS_DATABASE_URL": url, "WGS_LOG_LEVEL": "WARNING",
                             "WGS_ESCALATION_SCAN_SECONDS": "0"} | (env or {})
    if "WGS_REGISTER_FILE" not in (env or {}):
        base_env["WGS_REGISTER_FILE"] = str(all_hours_register(data_dir))
    with ExitStack() as stack:
        urls = []
        processes = []
        for n in range(count):
            port = _free_port(0)
            log = data_dir / f"gateway-{n}.log"
            process = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1",
                                        "--port", str(port), "--log-level", "warning"], env=base_env,
                                       stdout=subprocess.DEVNULL, stderr=log.open("ab"))
            stack.callback(_stop, process)
            processes.append((process, log))
            urls.append(f"http://127.0.0.1:{port}")
        for (process, log), base in zip(processes, urls, strict=True):
            _wait(f"{base}/health/ready", process, log, deadline=deadline)
        yield urls


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
