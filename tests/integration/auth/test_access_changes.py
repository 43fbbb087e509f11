"""An operator's enabling or disabling commits together with its audit entry, on SQLite and PostgreSQL: the
change and the entry both, or neither."""

from __future__ import annotations

import json
from typing import Any

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

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing


def _cli_entries(container: Container) -> list[dict[str, Any]]:
    with container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
        events = [json.loads(row.canonical)["event"] for row in rows]
    return [e for e in events if e["extra"].get("channel") == "cli"]


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

    def changed_then_failed(connection: Connection, username: str, active: bool, *, changing: bool = False) -> bool:
        assert real(connection, username, active, changing=changing)
        raise Conflict("failed after the change")

    monkeypatch.setattr(repository, "set_account_active", changed_then_failed)
    with pytest.raises(Conflict):
        set_active(container.settings, container.engine, "account", "po-politie", False)
    assert _active(container, "po-politie")
    assert _cli_entries(container) == []


def test_a_change_made_meanwhile_by_another_operator_is_no_second_entry(client: TestClient, container: Container,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Two operators disable the same account at once: both read it active, the first commits. The second must
    not write an `account-disabled` entry for an account that was disabled already (no change, no entry)."""
    from dataclasses import replace

    issued_person_token(container, "po-politie", "politie", ["privacy-officer"])
    assert set_active(container.settings, container.engine, "account", "po-politie", False).changed
    real = repository.get_account

    def read_before_the_other_commit(session: object, username: str) -> repository.AccountRecord | None:
        found = real(session, username)  # type: ignore[arg-type]
        return replace(found, active=True) if found is not None else None

    monkeypatch.setattr(repository, "get_account", read_before_the_other_commit)
    with pytest.raises(Conflict):
        set_active(container.settings, container.engine, "account", "po-politie", False)
    monkeypatch.undo()
    assert not _active(container, "po-politie")
    assert [entry["extra"]["action"] for entry in _cli_entries(container)] == ["account-disabled"]
