"""scripts/_env.sh, which scripts/demo and scripts/test share: the editable install it asks pip for must be
one pip accepts, with and without extras. ``scripts/demo`` installs with no extras, and ``".[]"`` is refused
by current pip ("not a valid editable requirement"), so on a fresh machine the README's first command
stopped before anything was installed.

The script runs against a copy of itself in a temporary directory whose ``.venv/bin/python`` is a stub that
records its arguments, so nothing is installed; the recorded requirement is then given to pip's own parser
for editable requirements (what ``pip install -e`` calls), so the test fails exactly when pip would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pip._internal.exceptions import InstallationError
from pip._internal.req.constructors import install_req_from_editable

ROOT = Path(__file__).resolve().parents[3]

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
def test_ensure_venv_asks_pip_for_a_requirement_it_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           extras: str, expected: set[str]) -> None:
    requirement = _editable_requirement(tmp_path, extras)
    monkeypatch.chdir(tmp_path)  # pip resolves the path part against the working directory, as the script does
    try:
        parsed = install_req_from_editable(requirement)
    except InstallationError as refused:
        pytest.fail(f"pip refuses -e {requirement!r}: {refused}")
    assert parsed.extras == expected
