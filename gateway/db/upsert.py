"""``INSERT ... ON CONFLICT`` for the database at hand: the construct is dialect-specific in SQLAlchemy, and
the gateway runs on SQLite and PostgreSQL only. An upsert is how two gateway processes writing the same key
at once both succeed (one inserts, the other updates or does nothing) instead of the second failing on a
unique constraint."""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def insert_on_conflict(bind: Connection | Session, table: Table) -> PostgresInsert | SqliteInsert:
    """An insert into ``table`` that takes ``on_conflict_do_nothing``/``on_conflict_do_update`` on ``bind``'s
    database."""
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    return postgres_insert(table) if dialect == "postgresql" else sqlite_insert(table)
