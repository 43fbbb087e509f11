"""The database goes away mid-traffic (issue 8): PostgreSQL refuses connections and the gateway's open
ones are killed. Requests are denied with 503 problem+json (never a 500, nothing disclosed), readiness
says so, and once the database is back the gateway serves again by itself; the log verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from fastapi.testclient import TestClient

from audit import verify_database
from gateway.app import create_app
from gateway.auditing.setup import audit_verifier
from gateway.clock import FixedClock
from gateway.container import build_container
from gateway.db.engine import alembic_config
from gateway.settings import Settings
from tests.auth_helpers import bearer, system_token
from tests.pg_server import create_database

pytestmark = pytest.mark.postgres
BODY = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-992",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-992"},
        "subjects": [{"ref": "subj-database-down-01"}], "holders": ["kvk"], "categories": ["company_registration"]}


def _admin(admin_url: str, sql: str) -> None:
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(sql)  # fixed statements of this test, never input


@pytest.fixture
def gateway(tmp_path: Path, postgres_admin_url: str, clock: FixedClock) -> Iterator[tuple[TestClient, Settings]]:
    url = create_database(postgres_admin_url, "wgs_down")
    command.upgrade(alembic_config(url), "head")
    settings = Settings(data_dir=tmp_path, database_url=url)
    container = build_container(settings, clock)
    with TestClient(create_app(container=container)) as client:
        yield client, settings
    container.close()


def test_database_gone_means_503_then_recovery(gateway: tuple[TestClient, Settings],
                                               postgres_admin_url: str) -> None:
    client, settings = gateway
    token = system_token(client, client.app.state.container, "gemeente-amsterdam-vth", ["exchange"])  # type: ignore[attr-defined]
    assert client.post("/v1/exchanges", json=BODY, headers=bearer(token)).status_code == 200
    _admin(postgres_admin_url, 'ALTER DATABASE "wgs_down" ALLOW_CONNECTIONS false')
    _admin(postgres_admin_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'wgs_down'")
    try:
        answers = [client.post("/v1/exchanges", json=BODY, headers=bearer(token)) for _ in range(3)]
        assert [a.status_code for a in answers] == [503, 503, 503]
        for answer in answers:
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert "records" not in answer.text
        assert client.get("/health/ready").status_code == 503
    finally:
        _admin(postgres_admin_url, 'ALTER DATABASE "wgs_down" ALLOW_CONNECTIONS true')
    served = client.post("/v1/exchanges", json=BODY, headers=bearer(token))
    assert served.status_code == 200, served.text  # no restart: the pool reconnects
    assert client.get("/health/ready").status_code == 200
    container = client.app.state.container  # type: ignore[attr-defined]
    verifier = audit_verifier(settings)
    assert verify_database(container.engine, verifier).ok
