"""Rows of another table inserted (or a statement run) straight through the database driver, inside the audit
writer's transaction.

Why: the exchange stores its outcome row as a companion of its audit entries (see
:class:`audit.writer.CompanionRow`), one row per request on the writer thread, whose CPU every request waits
for. Through SQLAlchemy's ``Connection.execute`` that one row cost the thread more than the audit entries it
commits with (cache key, execution context, result object, pool bookkeeping; measured ~0.2 ms of ~2.5 ms per
request), while the statement itself is the same every time. Here it is compiled once per table, dialect and
set of columns, and each row is bound with the bind processors SQLAlchemy itself would apply (JSON
serialisation, datetime formatting on SQLite, psycopg's JSON wrapper), so the database receives exactly what
``connection.execute(table.insert(), rows)`` would send.

A driver error is re-raised as SQLAlchemy's own exception (``IntegrityError`` for a unique key taken, ...),
chained to the driver's, as ``connection.execute`` would: callers tell a clash from a fault by that type.
A table this cannot bind exactly as SQLAlchemy would (a column with a Python-side default, another driver's
parameter style) goes through ``connection.execute``.

:func:`first_row` does the same for one fixed statement with a result, such as the UPDATE ... RETURNING of rule 6's
count in the exchange's write-ahead: through ``connection.execute`` it cost the writer thread 0.1-0.2 ms of a
transaction whose other work (entries, subtrees, state read) takes about as much.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    names: tuple[str, ...]
    """The columns in the order the statement binds them (positional) or the keys of its parameters (named)."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (each a dict of column values, all with the same columns) into ``table`` on
    ``connection``'s transaction, as ``connection.execute(table.insert(), rows)`` would."""
    if not rows:
        return
    dialect = connection.dialect
    statement = _statement(dialect, table, frozenset(rows[0]))
    if statement is None or any(row.keys() != rows[0].keys() for row in rows[1:]):
        connection.execute(table.insert(), list(rows))
        return
    parameters: list[Any] = [_bound(statement, row) for row in rows]
    with _driver_cursor(connection, statement.sql, ismulti=len(parameters) > 1) as cursor:
        if len(parameters) == 1:
            cursor.execute(statement.sql, parameters[0])
        else:
            cursor.executemany(statement.sql, parameters)


@contextmanager
def _driver_cursor(connection: Connection, sql: str, *, ismulti: bool = False) -> Iterator[Any]:
    """A cursor of the driver's connection under ``connection``, closed after the block; a driver error in the
    block raised as SQLAlchemy's exception for it (as ``connection.execute`` would, the parameters hidden)."""
    dialect = connection.dialect
    cursor = connection.connection.cursor()
    try:
        yield cursor
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True,
                                  dialect=dialect, ismulti=ismulti) from exc
    finally:
        cursor.close()


def _bound(statement: _Statement | _Compiled, row: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
    # every value through its processor, None too: a JSON column stores None as JSON ``null``, as SQLAlchemy does
    values = [row[name] if process is None else process(row[name])
              for name, process in zip(statement.names, statement.processors, strict=True)]
    return values if statement.positional else dict(zip(statement.names, values, strict=True))


@functools.lru_cache(maxsize=64)
def _statement(dialect: Dialect, table: Table, columns: frozenset[str]) -> _Statement | None:
    """The compiled insert of ``columns`` into ``table`` for ``dialect``, or None where binding it here could
    differ from what SQLAlchemy sends (then the caller lets SQLAlchemy execute it)."""
    if dialect.paramstyle not in ("qmark", "format", "pyformat", "named"):  # pragma: no cover - other drivers
        return None
    if not columns <= set(table.c.keys()):
        return None  # SQLAlchemy names the unknown column in its error
    if any(column.default is not None or column.onupdate is not None for column in table.c):
        return None  # a Python-side default is computed per execution
    compiled = table.insert().compile(dialect=dialect, column_keys=sorted(columns))
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    if set(names) != columns or len(names) != len(columns) or compiled.escaped_bind_names:
        return None
    processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    return _Statement(compiled.string, names, processors, compiled.positional)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    """Every bind of the statement, in the order a positional driver takes them."""
    defaults: tuple[Any, ...]
    """Each bind's own value (a literal the statement carries), or :data:`_REQUIRED` for one the caller gives."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


_REQUIRED = object()


def first_row(connection: Connection, statement: UpdateBase, parameters: dict[str, Any]) -> tuple[Any, ...] | None:
    """The first row ``connection.execute(statement, parameters)`` returns (``None`` without one), the statement
    compiled once per dialect and bound as SQLAlchemy binds it, its result as the driver returns it (no result
    processing: meant for integer and text columns). Driver errors become SQLAlchemy's exceptions, as in
    :func:`insert_rows`. ``statement`` should be a module-level constant: it is the cache's key."""
    dialect = connection.dialect
    compiled = _compiled(dialect, statement)
    if compiled is None:
        row = connection.execute(statement, parameters).first()
        return None if row is None else tuple(row)
    given = {name: parameters[name] if default is _REQUIRED else parameters.get(name, default)
             for name, default in zip(compiled.names, compiled.defaults, strict=True)}
    with _driver_cursor(connection, compiled.sql) as cursor:
        cursor.execute(compiled.sql, _bound(compiled, given))
        found = cursor.fetchone()
    return None if found is None else tuple(found)


@functools.lru_cache(maxsize=64)
def _compiled(dialect: Dialect, statement: UpdateBase) -> _Compiled | None:
    """``statement`` compiled for ``dialect``, or None where binding it here could differ from what SQLAlchemy
    sends (expanding or literal binds, escaped names, another parameter style)."""
    if dialect.paramstyle not in ("qmark", "format", "pyformat", "named"):  # pragma: no cover - other drivers
        return None
    compiled = statement.compile(dialect=dialect)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    if (compiled.escaped_bind_names or compiled.literal_execute_params or compiled.post_compile_params
            or any(bind.callable is not None or bind.expanding for bind in binds.values())):
        return None
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(binds)
    if set(names) - set(binds):  # pragma: no cover - a bind this module cannot name
        return None
    defaults = tuple(_REQUIRED if binds[name].required else binds[name].value for name in names)
    processors = tuple(binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
    return _Compiled(compiled.string, names, defaults, processors, compiled.positional)
