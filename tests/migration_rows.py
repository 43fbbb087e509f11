"""Rows and columns as a migration test sees them: written with plain SQL, as the code of an older revision wrote
them (the current models may name columns that revision does not have yet)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, inspect, text


def insert_row(connection: Connection, table: str, values: dict[str, Any]) -> None:
    """One row of ``table`` with exactly ``values``' columns."""
    connection.execute(text(f"INSERT INTO {table} ({', '.join(values)}) "
                            f"VALUES ({', '.join(':' + name for name in values)})"), values)


def column_names(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}
