"""The register tests run against SQLite and PostgreSQL.

``settings`` (and with it ``container``, ``app`` and ``client``) is built on ``db_url``: a fresh database of
each kind per test, migrated with Alembic.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, log_json=True)
