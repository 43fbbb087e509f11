"""The start-checked marker (``WGS_START_CHECKED_BY=<pid>:<fingerprint>``) lets a worker skip the start-up
check only when it names the ``serve`` that started it: a process id of 0 or 1 never does (0 is no process;
1 is init, a worker's parent once ``serve`` is gone and the worker re-parented, or a forgery), so the
database and register checks run and refuse as they would for a start by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.console.settings import ConsoleSettings
from gateway.settings import Settings
from gateway.startup import CHECKED_BY_SERVE, no_database_file, settings_fingerprint, start_problems

SERVE_PID = 4242  # what the test makes this process's parent


@pytest.fixture
def missing_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings whose start-up check refuses (no database file), read from the environment as a worker does."""
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path / "empty"))
    return tmp_path / "empty"


def _marker(pid: str) -> str:
    return f"{pid}:{settings_fingerprint(Settings(), ConsoleSettings())}"


def test_a_marker_naming_the_parent_serve_skips_the_check(missing_database: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with a real parent's id the same marker is trusted (so the refusals below are the rule's)."""
    monkeypatch.setattr(os, "getppid", lambda: SERVE_PID)
    monkeypatch.setenv(CHECKED_BY_SERVE, _marker(str(SERVE_PID)))
    assert start_problems(trust_serve=True) == []


@pytest.mark.parametrize("pid", [0, 1])
@pytest.mark.parametrize("as_written", ["{}", "0{}", "00{}"])
@pytest.mark.parametrize("whose", ["parent", "own"])
def test_a_marker_naming_process_0_or_1_is_not_trusted(pid: int, as_written: str, whose: str,
                                                       missing_database: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker re-parented to init (its ``serve`` gone), or handed a forged marker, checks as a start by hand."""
    monkeypatch.setattr(os, "getppid" if whose == "parent" else "getpid", lambda: pid)
    monkeypatch.setenv(CHECKED_BY_SERVE, _marker(as_written.format(pid)))
    assert start_problems(trust_serve=True) == [no_database_file(missing_database / "gateway.sqlite")]
    assert not missing_database.exists()  # the check looked without creating a database file


def test_a_pid_in_other_digits_is_not_trusted(missing_database: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``int()`` reads Arabic-Indic digits as well: the marker's pid must be written as ``serve`` writes it."""
    monkeypatch.setattr(os, "getppid", lambda: SERVE_PID)
    monkeypatch.setenv(CHECKED_BY_SERVE, _marker("".join(chr(0x660 + int(d)) for d in str(SERVE_PID))))
    assert start_problems(trust_serve=True) == [no_database_file(missing_database / "gateway.sqlite")]
