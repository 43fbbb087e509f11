"""An operator's enabling or disabling commits together with its audit entry, on SQLite and PostgreSQL: the
change and the entry both, or neither."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from audit.tables import audit_entries
from gateway.auth import repository
from gateway.auth.access_changes import set_active
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import Conflict
from tests.auth_helpers import account_id, issued_person_token


def _cli_entries(container: Container) -> list[dict[str, object]]:
    with container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
        events = [json.loads(row.canonical)["event"] for row in rows]
    return [e for e in events if e["extra"].get("channel") == "cli"]  # type: ignore[union-attr]


def _active(container: Container, username: str) -> bool:
    with transaction(container.sessions) as session:
        found = repository.get_account(session, username)
    assert found is not None
    return found.active


def test_a_disabled_account_and_its_entry_commit_together(client: TestClient, container: Container) -> None:
    issued_person_token(container, "po-politie", "politie", ["privacy-officer"])
    change = set_active(container.settings, container.engine, "account", "po-politie", False)
    assert change.changed
    assert not _active(container, "po-politie")
    [entry] = _cli_entries(container)
    assert entry["requester"] == {"org": "politie", "system": None, "user": None}
    assert entry["extra"] == {"action": "account-disabled", "channel": "cli",
                              "account_id": account_id(container, "po-politie")}


def test_a_change_that_fails_in_the_logs_transaction_leaves_neither(client: TestClient, container: Container,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The change is made, then something fails before the commit: the change is rolled back with the entry."""
    issued_person_token(container, "po-politie", "politie", ["privacy-officer"])
    real = repository.set_account_active

    def changed_then_failed(connection: Connection, username: str, active: bool) -> bool:
        assert real(connection, username, active)
        raise Conflict("failed after the change")

    monkeypatch.setattr(repository, "set_account_active", changed_then_failed)
    with pytest.raises(Conflict):
        set_active(container.settings, container.engine, "account", "po-politie", False)
    assert _active(container, "po-politie")
    assert _cli_entries(container) == []
