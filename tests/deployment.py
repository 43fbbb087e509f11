"""A deployment's data directory as an operator prepares it, for tests that run the CLI in-process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app


def prepared_data_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``data_dir`` as ``WGS_DATA_DIR`` (SQLite, no ``WGS_DATABASE_URL``) after ``db upgrade`` and ``keys init``:
    a migrated database and every key, as before the first start. Wide tables (``COLUMNS``) so that the
    commands' output is not cut."""
    monkeypatch.setenv("WGS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    runner = CliRunner()
    for command in (["db", "upgrade"], ["keys", "init"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    return data_dir


def newest_checkpoint_note(database: Path) -> str:
    """The note of the largest checkpoint in the SQLite ``database``, read without writing (a backup's copy, say)."""
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        row = connection.execute("SELECT note FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1").fetchone()
    finally:
        connection.close()
    return str(row[0])
