"""The suite's throw-away PostgreSQL servers do not outlive a killed test run (tests/pg_server.py): the next
run stops those whose run is gone, and leaves alone those of runs still going."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pg_server import OWNER_FILE, WORKDIR_PREFIX, pg_bin, running_postgres, stop_orphaned_servers

pytestmark = pytest.mark.skipif(bool(os.environ.get("WGS_TEST_POSTGRES_URL")),
                                reason="a preset server is not started by the suite")


@pytest.fixture
def parent() -> Iterator[Path]:
    # Not pytest's tmp_path: as root, the server runs as `postgres`, which cannot enter /tmp/pytest-of-root.
    directory = Path(tempfile.mkdtemp(prefix="wgs-pg-parent-"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def _answers(url: str) -> bool:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(conninfo, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def test_a_server_whose_run_is_gone_is_stopped_and_removed(parent: Path) -> None:
    with running_postgres(parent) as url:
        (workdir,) = parent.glob(f"{WORKDIR_PREFIX}*")
        assert _answers(url)
        (workdir / OWNER_FILE).write_text(str(_dead_pid()), encoding="ascii")  # as if its run were killed

        assert stop_orphaned_servers(pg_bin(), parent) == [workdir]

        assert not _answers(url)
        assert not workdir.exists()


def test_a_server_of_a_run_still_going_is_left_alone(parent: Path) -> None:
    with running_postgres(parent) as url:
        (workdir,) = parent.glob(f"{WORKDIR_PREFIX}*")
        assert (workdir / OWNER_FILE).read_text(encoding="ascii") == str(os.getpid())
        unclaimed = parent / f"{WORKDIR_PREFIX}being-set-up"
        unclaimed.mkdir()  # no owner recorded yet: not ours to judge

        assert stop_orphaned_servers(pg_bin(), parent) == []

        assert _answers(url)
        assert unclaimed.exists()
