"""A throw-away PostgreSQL server from Debian's packages, for the database tests.

Started once per test session on a free loopback port under a temporary directory. When the tests run
as root, initdb and postgres run as the ``postgres`` user (PostgreSQL refuses to run as root).
``scripts/test`` installs the packages if they are missing; if ``WGS_TEST_POSTGRES_URL`` is set, that
server is used instead.

A test run that is killed (SIGKILL, a CI timeout) never reaches its ``finally`` and leaves its server
running, holding memory and a port, on a machine that runs the suite again and again. So each working
directory records the process that started it (``owner.pid``), and every start first stops and removes the
servers of owners that are gone; servers of runs still going (other worktrees, parallel runs) are left alone.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

WORKDIR_PREFIX = "wgs-pg-"
OWNER_FILE = "owner.pid"


def pg_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL is not installed: run scripts/test, which installs Debian's postgresql")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def stop_orphaned_servers(bindir: Path, tempdir: Path) -> list[Path]:
    """Stop and remove the servers whose starting test run is gone; return their working directories.

    A directory without a readable owner is left alone: it may be one being set up this very moment, or
    not ours to judge."""
    removed = []
    for workdir in sorted(tempdir.glob(f"{WORKDIR_PREFIX}*")):
        try:
            owner = int((workdir / OWNER_FILE).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        if (workdir / "data").exists():
            subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(workdir / "data"), "-m", "immediate",
                                         "stop"]), check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(workdir)
    return removed


@contextmanager
def running_postgres(parent: Path | None = None) -> Iterator[str]:
    """Yield an admin URL (database ``postgres``) of a fresh server; stop and remove it afterwards.

    Its working directory is made in ``parent`` (the system's temporary directory unless given), after the
    orphaned servers there are stopped."""
    preset = os.environ.get("WGS_TEST_POSTGRES_URL")
    if preset:
        yield preset
        return
    bindir = pg_bin()
    parent = parent or Path(tempfile.gettempdir())
    stop_orphaned_servers(bindir, parent)
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
    (workdir / OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
    datadir = workdir / "data"
    os.chmod(workdir, 0o777)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True)
    log_file = workdir / "server.log"
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log_file), "-w",
                                 "-o", f"-p {port} -k {workdir} -h 127.0.0.1 -c fsync=off "
                                 "-c max_connections=200", "start"]),
                   check=True, capture_output=True)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres"):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database on the server and return its SQLAlchemy URL."""
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # name is generated by the tests, never input
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
