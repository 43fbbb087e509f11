"""The audit tables as migrated: they match ``audit.tables`` and the database refuses to change history."""

from __future__ import annotations

from uuid import uuid4

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc

import audit.tables
from audit.log import AuditLog, CheckpointPolicy
from gateway.db.engine import alembic_config, make_engine
from tests.audit_support import APPEND_ONLY_TABLES, log_signer, make_event, sql
from tests.pg_server import create_database


def test_migration_matches_the_audit_metadata(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), audit.tables.metadata)
    finally:
        engine.dispose()
    audit_diff = [d for d in diff if "audit_" in repr(d)]
    assert audit_diff == []


@pytest.mark.parametrize(("table", "column"), [
    ("audit_entries", "decision"), ("audit_tree_nodes", "hash"), ("audit_checkpoints", "note"),
])
def test_database_rejects_update_and_delete_on_log_tables(db_url: str, table: str, column: str) -> None:
    engine = make_engine(db_url)
    try:
        log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=1))
        log.append([make_event(i) for i in range(4)])  # 4 entries, 3 tree nodes, 1 checkpoint
        with engine.connect() as connection:
            before = sql(connection, f"SELECT count(*) FROM {table}").scalar()
        assert before > 0
        for statement in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}"):
            with pytest.raises(exc.DBAPIError, match="append-only"), engine.begin() as connection:
                sql(connection, statement)
        if engine.dialect.name == "postgresql":
            with pytest.raises(exc.DBAPIError, match="append-only"), engine.begin() as connection:
                sql(connection, f"TRUNCATE {table}")
        with engine.connect() as connection:
            assert sql(connection, f"SELECT count(*) FROM {table}").scalar() == before
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_refuses_even_statements_that_match_no_row(postgres_admin_url: str) -> None:
    url = create_database(postgres_admin_url, f"wgs_audit_{uuid4().hex}")
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    try:
        for table in APPEND_ONLY_TABLES:
            with pytest.raises(exc.DBAPIError, match="append-only"), engine.begin() as connection:
                sql(connection, f"DELETE FROM {table} WHERE 1 = 0")
    finally:
        engine.dispose()
