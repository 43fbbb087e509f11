"""scripts/_env.sh, which scripts/demo and scripts/test share: the editable install it asks pip for must be
one pip accepts, with and without extras. ``scripts/demo`` installs with no extras, and ``".[]"`` is refused
by current pip ("not a valid editable requirement"), so on a fresh machine the README's first command
stopped before anything was installed.

The script runs against a copy of itself in a temporary directory whose ``.venv/bin/python`` is a stub that
records its arguments, so nothing is installed; the recorded requirement is then given to pip's own parser
for editable requirements (what ``pip install -e`` calls), so the test fails exactly when pip would."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# In a process of its own: importing pip registers a log level ("VERBOSE") in this process's logging module.
PIP_PARSES = """import json, sys
from pip._internal.req.constructors import install_req_from_editable
print(json.dumps(sorted(install_req_from_editable(sys.argv[1]).extras)))
"""

STUB_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$(dirname "$0")/calls"
"""


def _editable_requirement(tmp_path: Path, extras: str) -> str:
    """The ``-e`` argument ``ensure_venv EXTRAS`` hands to pip, with pip stubbed out."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "_env.sh", tmp_path / "scripts" / "_env.sh")
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    subprocess.run(["bash", "-c", 'source scripts/_env.sh && ensure_venv "$1"', "_", extras],
                   cwd=tmp_path, check=True, timeout=30)
    installs = [line.split() for line in (stub.parent / "calls").read_text().splitlines()]
    editable = [words[words.index("-e") + 1] for words in installs if "-e" in words]
    assert len(editable) == 1, installs
    return editable[0]


@pytest.mark.parametrize(("extras", "expected"), [("", set()), ("test", {"test"})])
def test_ensure_venv_asks_pip_for_a_requirement_it_accepts(tmp_path: Path, extras: str, expected: set[str]) -> None:
    requirement = _editable_requirement(tmp_path, extras)
    # pip resolves the path part against the working directory, as the script runs it from the checkout
    parsed = subprocess.run([sys.executable, "-c", PIP_PARSES, requirement], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert parsed.returncode == 0, f"pip refuses -e {requirement!r}: {parsed.stderr.strip().splitlines()[-1:]}"
    assert set(json.loads(parsed.stdout)) == expected


def _pip_installs(tmp_path: Path, extras: str) -> list[str]:
    """The ``pip install`` calls one run of ``ensure_venv EXTRAS`` makes (pip stubbed out as above)."""
    calls = tmp_path / ".venv" / "bin" / "calls"
    calls.unlink(missing_ok=True)
    subprocess.run(["bash", "-c", 'source scripts/_env.sh && ensure_venv "$1"', "_", extras],
                   cwd=tmp_path, check=True, timeout=30)
    return [line for line in calls.read_text().splitlines() if line.startswith("-m pip install")]


def test_a_second_run_installs_nothing_until_the_project_changes(tmp_path: Path) -> None:
    """``scripts/demo`` ran ``pip install --upgrade pip`` and ``pip install -e .`` (an isolated build: setuptools
    fetched again) on every start, so every second run needed the package index and spent seconds there.
    Now a run installs only when the project's install inputs (pyproject.toml, setup.py) or the extras differ
    from the last successful install into this .venv."""
    _editable_requirement(tmp_path, "")  # the stubbed .venv and the script
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert len(_pip_installs(tmp_path, "")) == 2  # pip itself, then the project
    assert _pip_installs(tmp_path, "") == []
    assert len(_pip_installs(tmp_path, "test")) == 2  # other extras: installed once
    assert _pip_installs(tmp_path, "test") == []
    assert _pip_installs(tmp_path, "") == []
    with (tmp_path / "pyproject.toml").open("a") as project:
        project.write("\n# a dependency changed\n")
    assert len(_pip_installs(tmp_path, "")) == 2
