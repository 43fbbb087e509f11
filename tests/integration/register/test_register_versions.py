"""Register versions are recorded once, on SQLite and PostgreSQL; conflicting content is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from gateway.clock import FixedClock
from gateway.container import Container
from gateway.db.engine import make_engine, make_session_factory, transaction
from gateway.errors import InvalidRegister
from gateway.register import repository
from gateway.register.loader import parse_register
from gateway.register.service import RegisterService, record_version
from gateway.settings import SHIPPED_REGISTER
from tests.auth_helpers import bearer, system_token
from tests.statements import statements_run

CLOCK = FixedClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))


def test_versions_are_recorded_once_and_conflicts_write_nothing(db_url: str) -> None:
    sessions = make_session_factory(make_engine(db_url))
    text = SHIPPED_REGISTER.read_text()
    register = parse_register(text)
    with transaction(sessions) as session:
        assert record_version(session, RegisterService.holding(register), "register.yaml", CLOCK) is True
    with transaction(sessions) as session:
        assert record_version(session, RegisterService.holding(register), "register.yaml", CLOCK) is False
    changed = parse_register(text.replace("bulk_threshold: 25", "bulk_threshold: 30", 1))
    with pytest.raises(InvalidRegister, match="bump `version`"), transaction(sessions) as session:
        record_version(session, RegisterService.holding(changed), "register.yaml", CLOCK)
    newer = parse_register(text.replace('version: "2026.11.1"', 'version: "2026.12.1"', 1))
    with transaction(sessions) as session:
        assert record_version(session, RegisterService.holding(newer), "register.yaml", CLOCK) is True
    with transaction(sessions) as session:
        versions = [v.version for v in repository.list_versions(session)]
        stored = repository.get_document(session, "2026.11.1")
    assert versions == ["2026.11.1", "2026.12.1"]
    assert stored is not None
    assert stored["partnerships"]["riec-amsterdam-amstelland"]["purposes"]["bibob-integrity-check"][
        "bulk_threshold"] == 25


def test_register_read_api(client: TestClient, container: Container) -> None:
    token = system_token(client, container, "kvk-handelsregister", ["register:read"])
    current = client.get("/v1/register", headers=bearer(token))
    assert current.status_code == 200
    assert current.json()["version"] == "2026.11.1"
    partnership = client.get("/v1/register/partnerships/nsoc", headers=bearer(token)).json()
    assert partnership["definition"]["status"] == "retired"
    purpose = client.get("/v1/register/partnerships/fec/purposes/taskforce-subject-check", headers=bearer(token))
    assert purpose.json()["definition"]["hit_only_holders"] == ["investigation", "police"]
    versions = client.get("/v1/register/versions", headers=bearer(token)).json()
    assert [v["version"] for v in versions] == ["2026.11.1"]
    document = client.get("/v1/register/versions/2026.11.1", headers=bearer(token)).json()
    assert "nsoc" in document["document"]["partnerships"]
    for missing in ("/v1/register/partnerships/nope", "/v1/register/partnerships/fec/purposes/nope",
                    "/v1/register/versions/0.0"):
        response = client.get(missing, headers=bearer(token))
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/register").status_code == 401


def test_a_version_is_read_only_when_the_insert_recorded_nothing(db_url: str) -> None:
    """Recording inserts first (``ON CONFLICT DO NOTHING``) and reads the stored version only when that
    inserted nothing, so no process decides on a read that another process's commit has overtaken. It read
    first, then inserted."""
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    register = parse_register(SHIPPED_REGISTER.read_text())

    def recorded() -> tuple[bool, list[str]]:
        with statements_run(engine, lambda sql: "register_versions" in sql) as seen, \
                transaction(sessions) as session:
            is_new = record_version(session, RegisterService.holding(register), "register.yaml", CLOCK)
        return is_new, [sql.split()[0] for sql in seen]

    try:
        assert recorded() == (True, ["INSERT"])
        assert recorded() == (False, ["INSERT", "SELECT"])  # the version recorded: read to compare the content
    finally:
        engine.dispose()
