"""All SQL of the audit log: transactions, the append lock, and reads and writes of the three tables.

The service (:mod:`audit.log`) decides *what* to write; this module knows *how*, on SQLite and on
PostgreSQL. Every function takes a ``Connection`` inside a transaction the caller controls, except
:func:`append_transaction` and :func:`read_connection`, which open one.

Serialising appenders (so that indices are gap-free and every append sees the latest tree):

* PostgreSQL: ``pg_advisory_xact_lock`` on a fixed key, in READ COMMITTED, taken before reading the
  tree size. The lock is released only after commit, so the next holder's first read sees every row
  the previous holder wrote — across processes and machines.
* SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock at the start of the transaction (a
  deferred transaction would read first and could then fail to upgrade its lock). Connections that
  write the log are switched to ``PRAGMA synchronous=FULL`` (and stay so: the setting is per pooled
  connection): in WAL mode the engine's NORMAL can lose the last commits on power failure, and a
  request may only be answered once its entries are durable.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, count
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Connection, Dialect, Engine, Select, Text, bindparam, func, select, type_coerce, update
from sqlalchemy.exc import SQLAlchemyError

from audit.errors import MalformedRow
from audit.events import AuditEvent
from audit.merkle import Node, flat_index, node_at_flat_index
from audit.tables import audit_checkpoint_keys, audit_checkpoints, audit_entries, audit_on_demand, audit_tree_nodes

ADVISORY_LOCK_KEY = int.from_bytes(b"WGSaudit", "big", signed=True)
"""The PostgreSQL advisory lock that serialises appenders; any 64-bit constant unique to the audit log."""

_FETCH_CHUNK = 500

QUERY_COLUMNS = ("event_type", "partnership", "purpose", "requester_org", "holder_org", "decision",
                 "subject_pseudonym", "subject_key")
"""The indexed copies of event fields, in the order of :func:`query_columns` and of the table."""


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive value is UTC already (that is how SQLite hands it back)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_UNREADABLE = (ValueError, TypeError, OverflowError)
"""What converting a stored value raises when it is not what the log writes (a time, a UUID, an integer)."""


@dataclass(frozen=True)
class AppendTransaction:
    """An open write transaction that holds the log's append lock, with the log's state as read under it."""

    connection: Connection
    state: LogState


@contextmanager
def append_transaction(engine: Engine, held: Connection | None = None) -> Iterator[AppendTransaction]:
    """A write transaction holding the log's append lock; commits on success, rolls back on error. ``held``: an
    SQLite connection the caller keeps across its transactions (:meth:`audit.log.AuditLog.holding_connection`),
    used instead of one from the pool.

    Round trips matter here: every append of every request waits for this transaction, and on a busy
    process each blocking call also costs the writer thread a wait for the GIL. On PostgreSQL the
    isolation level, the advisory lock and the state read go to the server as one multi-statement query
    (statements run in order, each with a fresh READ COMMITTED snapshot, so the state is read after the
    lock is granted). Measured here, that beat both SQLAlchemy's per-connection isolation level (a SET
    and a reset per checkout) and psycopg's pipeline mode (whose own overhead outweighs two round trips).
    """
    if held is not None:
        try:
            with _sqlite_immediate(held) as state:
                yield AppendTransaction(held, state)
        finally:
            if held.in_transaction():  # a statement of the append went through SQLAlchemy: its view ends here,
                held.rollback()        # as it would when the connection went back to the pool
        return
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            with _sqlite_immediate(connection) as state:
                yield AppendTransaction(connection, state)
            return
        raw: Any = connection.connection.driver_connection
        try:
            cursor = raw.execute(_PG_BEGIN_LOCKED)
            cursor.nextset()  # the lock's (empty) result
            cursor.nextset()  # the state
            yield AppendTransaction(connection, _state(cursor.fetchone()))
            raw.commit()
        except BaseException:
            raw.rollback()
            raise


_writer_locks: dict[str, threading.RLock] = {}
_writer_locks_guard = threading.Lock()


def sqlite_writer_lock(engine: Engine) -> threading.RLock:
    """The lock this process's writers of one SQLite database file hold around their write transactions.

    SQLite admits one writer at a time and the others wait in its busy handler, which sleeps 1, 2, 5, 10 ...
    up to 100 ms between tries. A writer that commits and at once begins again (the audit writer under
    load) then keeps another writer of the same process waiting for tens of milliseconds (measured: the
    exchange's outcome rows waited 30-40 ms per batch). Queued on this lock instead, the next writer runs
    as soon as the file is free. Writers in other processes still meet in SQLite's busy handler.
    """
    key = engine.url.database or ":memory:"
    with _writer_locks_guard:
        lock = _writer_locks.get(key)
        if lock is None:
            lock = _writer_locks[key] = threading.RLock()
        return lock


@contextmanager
def _sqlite_immediate(connection: Connection) -> Iterator[LogState]:
    # PRAGMA, BEGIN, the state read and COMMIT go straight to the driver: SQLAlchemy's pysqlite
    # transactions emit no BEGIN of their own, its execute and commit cost the writer thread more Python
    # than the statements themselves, and every statement costs it a GIL hand-off under load. The driver
    # commits what BEGIN IMMEDIATE opened; if a statement of the append went through SQLAlchemy meanwhile,
    # SQLAlchemy's own view of the transaction ends when the connection goes back to the pool.
    raw: Any = connection.connection.driver_connection
    if not connection.connection.info.get("audit_synchronous_full"):
        # Once per connection, and left on: only allowed outside a transaction, and it only makes
        # later commits on this pooled connection more durable, never less.
        raw.execute("PRAGMA synchronous=FULL")
        connection.connection.info["audit_synchronous_full"] = True
    with sqlite_writer_lock(connection.engine):
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield _sqlite_state(connection, raw)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise


def _sqlite_state(connection: Connection, raw: Any) -> LogState:
    """:func:`log_state` on the driver's connection, with the timestamp parsed as SQLAlchemy's type would."""
    cursor = raw.execute(_PG_STATE)
    try:
        largest, checkpoint_size, checkpoint_at = cursor.fetchall()[0]
    finally:
        cursor.close()
    if checkpoint_at is not None:
        try:
            checkpoint_at = _issued_at_parser(connection.dialect)(checkpoint_at)
        except _UNREADABLE:
            raise MalformedRow("audit_checkpoints", None) from None
    return _state((largest, checkpoint_size, checkpoint_at))


@functools.lru_cache(maxsize=8)
def _issued_at_parser(dialect: Dialect) -> Any:
    """The result processor SQLAlchemy applies to ``audit_checkpoints.issued_at`` on this dialect."""
    column_type = audit_checkpoints.c.issued_at.type.dialect_impl(dialect)
    return column_type.result_processor(dialect, None) or _identity


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for reads; the log is append-only, so reads need no lock."""
    with engine.connect() as connection:
        try:
            yield connection
        finally:
            connection.rollback()


@dataclass(frozen=True)
class LogState:
    """What an appender needs to know first, read in one round trip under the append lock."""

    size: int
    latest_checkpoint_size: int | None
    latest_checkpoint_at: datetime | None


_LATEST_CHECKPOINT = select(audit_checkpoints.c.tree_size, audit_checkpoints.c.issued_at).order_by(
    audit_checkpoints.c.tree_size.desc()).limit(1)
_STATE = select(
    select(func.max(audit_entries.c.log_index)).scalar_subquery(),
    _LATEST_CHECKPOINT.with_only_columns(audit_checkpoints.c.tree_size).scalar_subquery(),
    _LATEST_CHECKPOINT.with_only_columns(audit_checkpoints.c.issued_at).scalar_subquery(),
)


_PG_STATE = ("SELECT (SELECT max(log_index) FROM audit_entries), "
             "(SELECT tree_size FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1), "
             "(SELECT issued_at FROM audit_checkpoints ORDER BY tree_size DESC LIMIT 1)")
""":data:`_STATE` as plain SQL, for the driver-level state reads of :func:`append_transaction`."""
_PG_BEGIN_LOCKED = ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; "
                    f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY}); {_PG_STATE}")


def _state(row: Any) -> LogState:
    """The state read; :class:`~audit.errors.MalformedRow` when the latest checkpoint row holds a value no
    checkpoint row can hold (SQLite keeps any text in any column), rather than a bare ``ValueError`` that
    callers catching the audit package's errors would let through."""
    largest, checkpoint_size, checkpoint_at = row
    try:
        return LogState(
            size=0 if largest is None else int(largest) + 1,
            latest_checkpoint_size=None if checkpoint_size is None else int(checkpoint_size),
            latest_checkpoint_at=None if checkpoint_at is None else utc(checkpoint_at),
        )
    except _UNREADABLE:
        raise MalformedRow("audit_checkpoints", None) from None


def log_state(connection: Connection) -> LogState:
    try:
        row = connection.execute(_STATE).one()  # SQLAlchemy parses the time here
    except _UNREADABLE:
        raise MalformedRow("audit_checkpoints", None) from None
    return _state(row)


def tree_size(connection: Connection) -> int:
    """Number of entries: the largest index plus one (indices are gap-free by construction)."""
    largest = connection.execute(select(func.max(audit_entries.c.log_index))).scalar()
    return 0 if largest is None else int(largest) + 1


def lowest_index(connection: Connection) -> Any:
    """The smallest ``log_index`` in the table as stored (0 in a sound log, None when it is empty).

    Why a verifier asks: every read of the log starts at index 0, so a row inserted below it (the append-only
    triggers refuse UPDATE and DELETE, not INSERT) would be read by nothing that verifies, while the searches,
    statistics, anomaly flags and data-subject look-ups, which filter on columns and not on the index, count it."""
    return connection.execute(select(func.min(audit_entries.c.log_index))).scalar()


_LEAVES_BY_INDEX = select(audit_entries.c.log_index, audit_entries.c.leaf_hash).where(
    audit_entries.c.log_index.in_(bindparam("indices", expanding=True)))
_NODES_BY_ID = select(audit_tree_nodes.c.node_id, audit_tree_nodes.c.hash).where(
    audit_tree_nodes.c.node_id.in_(bindparam("ids", expanding=True)))


def fetch_nodes(connection: Connection, nodes: Iterable[Node]) -> dict[Node, bytes]:
    """Hashes of complete subtrees: level 0 from the entries' leaf hashes, higher levels from the cache.

    Two indexed ``IN`` queries whatever the mix of levels. Missing nodes are simply absent from the
    result; the caller decides whether that is an error.
    """
    wanted = set(nodes)
    leaves = sorted(index for level, index in wanted if level == 0)
    found: dict[Node, bytes] = {}
    for start in range(0, len(leaves), _FETCH_CHUNK):
        rows = connection.execute(_LEAVES_BY_INDEX, {"indices": leaves[start : start + _FETCH_CHUNK]})
        found.update(((0, int(index)), _hash_bytes(value)) for index, value in rows)
    inner = [node for node in wanted if node[0] > 0]
    for node_id, value in nodes_by_id(connection, [flat_index(node) for node in inner]).items():
        found[node_at_flat_index(node_id)] = value
    return found


def _hash_bytes(value: Any) -> bytes:
    """A stored hash as bytes; a value no hash column holds (SQLite keeps text in any column) as ``b""``.

    Why not ``bytes(value)``: for text that raised TypeError, so a subtree edited behind the log's back crashed
    the verifier (and a proof or a signature over it) instead of being what it is, a hash that matches nothing:
    a verifier reports it as a wrong cached subtree, and a proof or a root built over it fails, as over any wrong
    hash (the gateway then signs nothing: its fork guard's proof does not verify)."""
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""


def nodes_by_id(connection: Connection, node_ids: Sequence[int]) -> dict[int, bytes]:
    """Cached subtree hashes by ``node_id`` (see :mod:`audit.tables`)."""
    found: dict[int, bytes] = {}
    ordered = sorted(node_ids)
    for start in range(0, len(ordered), _FETCH_CHUNK):
        rows = connection.execute(_NODES_BY_ID, {"ids": ordered[start : start + _FETCH_CHUNK]})
        found.update((int(node_id), _hash_bytes(value)) for node_id, value in rows)
    return found


def insert_entries(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        connection.execute(audit_entries.insert(), list(rows))


def insert_nodes(connection: Connection, nodes: Sequence[tuple[Node, bytes]]) -> None:
    if nodes:
        connection.execute(
            audit_tree_nodes.insert(),
            [{"node_id": flat_index(node), "hash": value} for node, value in nodes],
        )


# -- the append hot path: one INSERT per table straight to the driver ------------------------------------
#
# SQLAlchemy's executemany costs tens of microseconds per row in Python (parameter construction and bind
# processing), and the sqlite3 driver's executemany releases and re-takes the GIL for every row, which on
# a busy event loop costs the writer thread a scheduler switch each time. Instead the rows of one append
# go to the database in one statement per table, with the values already in the form SQLAlchemy's column
# types would bind them (taken from those types, per dialect):
#
# * SQLite: ``INSERT ... VALUES (?, ...), (?, ...)`` with exactly the append's rows when it has at most
#   :data:`_ROWS_STEP` of them (the usual request's one to four entries), else ``INSERT ... SELECT * FROM
#   (VALUES (?, ...), ...)`` chunked below the parameter limit and padded to a few sizes so that the driver's
#   statement cache hits: see ``RowWriter._sqlite_sql``;
# * PostgreSQL: ``INSERT ... SELECT * FROM unnest(%s::bigint[], ...)`` with one array per column: a short,
#   constant statement that psycopg parses once and the server prepares once, whatever the batch size,
#   with the arrays sent in binary.

ENTRY_COLUMNS = ("log_index", "entry_id", "recorded_at", *QUERY_COLUMNS, "canonical", "leaf_hash")
_NODE_COLUMNS = ("node_id", "hash")
_MAX_PARAMETERS = 32_000
"""Parameters per SQLite statement: below SQLite's default limit of 32,766."""
_ROWS_STEP = 16
"""SQLite statements of more rows than this are padded to a multiple of it (see :meth:`RowWriter._sqlite_sql`)."""
_PG_ARRAY_TYPES = {"log_index": "bigint", "entry_id": "uuid", "recorded_at": "timestamptz", "subject_key": "bigint",
                   "canonical": "text", "leaf_hash": "bytea", "node_id": "bigint", "hash": "bytea"}
"""PostgreSQL element types of the unnest arrays; every other column is text (varchar)."""


@dataclass(frozen=True, slots=True)
class EntryBatch:
    """The entries of one append, column by column, as the row writer takes them.

    Columns rather than row objects: the log computes each column in one tight loop, PostgreSQL's
    ``unnest`` wants columns, and on SQLite one flattening pass builds the statement's parameters.
    """

    start: int
    """The first entry's index; the others follow without gaps."""
    recorded_at: datetime
    entry_ids: Sequence[UUID]
    entry_hexes: Sequence[str]
    """The same ids as 32 lowercase hex digits (``UUID.hex``: what a character-based UUID column stores)."""
    canonicals: Sequence[str]
    leaf_hashes: Sequence[bytes]
    columns: Sequence[Sequence[str | int | None]]
    """Each entry's query column values, in :data:`QUERY_COLUMNS` order."""


_SAMPLE_ID = UUID("01937b6e-0000-7000-8000-000000000001")


def _identity(value: Any) -> Any:
    return value


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows turned into one list per column (the arrays of PostgreSQL's ``unnest``)."""
    return [list(column) for column in zip(*rows, strict=True)]


def database_errors(dialect: Dialect) -> tuple[type[Exception], ...]:
    """What a failing database raises on ``dialect``: SQLAlchemy's errors, and the driver's own (its DB-API
    ``Error``: ``sqlite3.Error``, ``psycopg.Error``) for the statements sent to it directly (:func:`run_on_driver`,
    a caller's precondition). Why one place: whoever turns a database's failure into the log's own error must
    recognise both, or a driver error slips past as if it were a bug of the caller."""
    return (SQLAlchemyError, dialect.loaded_dbapi.Error)


def run_on_driver(connection: Connection, sql: str, parameters: Sequence[Any] | None = None) -> None:
    """One statement straight to the driver, on the connection's transaction (without parameters: as written)."""
    cursor = connection.connection.cursor()
    try:
        if parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
    finally:
        cursor.close()


class RowWriter:
    """Writes entries and tree nodes of one dialect, one statement per table, on the caller's connection."""

    def __init__(self, dialect: Dialect) -> None:
        if dialect.paramstyle not in ("qmark", "format", "pyformat"):  # pragma: no cover - other drivers
            raise ValueError(f"paramstyle {dialect.paramstyle} is not supported")
        self._arrays = dialect.name == "postgresql"
        processors = {column.name: column.type.dialect_impl(dialect).bind_processor(dialect)
                      for column in [*audit_entries.c, *audit_tree_nodes.c]}
        entry_id = processors.pop("entry_id")
        self._entry_id = entry_id or _identity
        self._recorded_at = processors.pop("recorded_at") or _identity
        self._leaf = processors.pop("leaf_hash") or _identity
        self._hash = processors.pop("hash") or _identity
        # A character-based UUID column binds ``value.hex``, which the batch carries already. The sqlite3
        # driver binds any buffer as a BLOB, so the Binary wrapper SQLAlchemy applies changes nothing there
        # (SQLAlchemy's own comment: "sqlite3 doesn't need the Binary conversion").
        self._hex_ids = entry_id is not None and entry_id(_SAMPLE_ID) == _SAMPLE_ID.hex
        self._raw_leaves = dialect.name == "sqlite" or (self._leaf is _identity and self._hash is _identity)
        """Whether leaf and node hashes bind as the bytes they are."""
        unexpected = sorted(name for name, processor in processors.items() if processor is not None)
        if unexpected:  # pragma: no cover - only if a column type changes
            raise ValueError(f"audit columns {unexpected} need bind processing the row writer does not do")
        mark = _placeholder(dialect)
        self._sql_by_rows: dict[tuple[str, int], str] = {}
        self._entries_sql = self._statement("audit_entries", ENTRY_COLUMNS, mark)
        self._nodes_sql = self._statement("audit_tree_nodes", _NODE_COLUMNS, mark)
        # PostgreSQL: entries and their completed subtrees in one statement (a data-modifying CTE)
        self._append_sql = f"WITH new_nodes AS ({self._nodes_sql[0]}) {self._entries_sql[0]}"
        self._checkpoint_processors = [column.type.dialect_impl(dialect).bind_processor(dialect) or _identity
                                       for column in audit_checkpoints.c]
        self._checkpoint_sql = (f"INSERT INTO audit_checkpoints ({', '.join(c.name for c in audit_checkpoints.c)}) "
                                f"VALUES ({', '.join([mark] * len(audit_checkpoints.c))})")

    def _statement(self, table: str, columns: Sequence[str], mark: str) -> tuple[str, str, int]:
        """(the statement, or on SQLite its head ``INSERT INTO table (columns)``; the row of marks; columns)."""
        if self._arrays:
            # %b: psycopg sends the arrays in binary, without escaping every element as text
            arrays = ", ".join(f"%b::{_PG_ARRAY_TYPES.get(name, 'text')}[]" for name in columns)
            return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})", "", len(columns)
        row = "(" + ",".join([mark] * len(columns)) + ")"
        return f"INSERT INTO {table} ({', '.join(columns)})", row, len(columns)

    def _execute(self, connection: Connection, statement: tuple[str, str, int], rows: list[tuple[Any, ...]]) -> None:
        sql, row, width = statement
        if self._arrays:
            run_on_driver(connection, sql, _columns(rows))
            return
        per_statement = _MAX_PARAMETERS // width // _ROWS_STEP * _ROWS_STEP
        for start in range(0, len(rows), per_statement):
            chunk = rows[start:start + per_statement]
            parameters = list(chain.from_iterable(chunk))
            # up to the step exactly the chunk's rows (the usual append), beyond it padded to a multiple of it
            padded = len(chunk) if len(chunk) <= _ROWS_STEP else -(-len(chunk) // _ROWS_STEP) * _ROWS_STEP
            parameters += [None] * (width * (padded - len(chunk)))
            run_on_driver(connection, self._sqlite_sql(sql, row, padded), parameters)

    def _sqlite_sql(self, head: str, row: str, rows: int) -> str:
        """The statement that inserts ``rows`` rows: up to :data:`_ROWS_STEP` of them in a plain ``VALUES`` list,
        more through a padded ``SELECT`` whose all-NULL padding rows are filtered out.

        Batch sizes vary from one transaction to the next, and a different statement text for each size
        means the driver's statement cache never hits: SQLite compiles a statement of thousands of
        parameters per append, about a seventh of its work per row. Rounded up to a multiple of
        :data:`_ROWS_STEP` rows, a handful of statements serve every large batch. The first column (the
        index or node id) is never NULL in a real row. Small batches, the usual request's, are not padded:
        the padding rows cost SQLite more than the batch itself (measured on the exchange's one- and
        two-entry appends: 80-115 µs of CPU per statement padded, 15-50 µs exact), and the sixteen exact
        statements fit the driver's cache beside the padded ones.
        """
        key = (head, rows)
        text = self._sql_by_rows.get(key)
        if text is None:
            values = ",".join([row] * rows)
            text = self._sql_by_rows[key] = (f"{head} VALUES {values}" if rows <= _ROWS_STEP else
                                             f"{head} SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL")
        return text

    def _entry_rows(self, batch: EntryBatch) -> list[tuple[Any, ...]]:
        moment = self._recorded_at(batch.recorded_at)
        ids: Iterable[Any] = batch.entry_hexes if self._hex_ids else map(self._entry_id, batch.entry_ids)
        leaves: Iterable[Any] = batch.leaf_hashes if self._raw_leaves else map(self._leaf, batch.leaf_hashes)
        return [(index, identifier, moment, *values, canonical, leaf)
                for index, identifier, values, canonical, leaf
                in zip(count(batch.start), ids, batch.columns, batch.canonicals, leaves)]

    def _node_rows(self, nodes: Sequence[tuple[int, bytes]]) -> list[tuple[Any, ...]]:
        if self._raw_leaves:  # the nodes come as (node_id, hash) tuples already
            return list(nodes)
        hash_value = self._hash
        return [(node_id, hash_value(value)) for node_id, value in nodes]

    def insert_entries(self, connection: Connection, batch: EntryBatch) -> None:
        """The entries of one append (see :class:`EntryBatch`)."""
        if batch.canonicals:
            self._execute(connection, self._entries_sql, self._entry_rows(batch))

    def insert_append(self, connection: Connection, batch: EntryBatch, nodes: Sequence[tuple[int, bytes]]) -> None:
        """What one append writes: its entries (see :meth:`insert_entries`) and the subtrees they complete
        (see :meth:`insert_nodes`); on PostgreSQL in one statement, so one round trip."""
        if not self._arrays or not batch.canonicals:
            self.insert_entries(connection, batch)
            self.insert_nodes(connection, nodes)
            return
        node_columns = _columns(self._node_rows(nodes)) if nodes else [[], []]
        run_on_driver(connection, self._append_sql, [*node_columns, *_columns(self._entry_rows(batch))])

    def insert_checkpoint(self, connection: Connection, checkpoint: StoredCheckpoint) -> None:
        """One signed checkpoint, straight to the driver."""
        values = (checkpoint.tree_size, checkpoint.root_hash, checkpoint.note, checkpoint.issued_at)
        run_on_driver(connection, self._checkpoint_sql,
             [process(value) for process, value in zip(self._checkpoint_processors, values, strict=True)])

    def insert_nodes(self, connection: Connection, nodes: Sequence[tuple[int, bytes]]) -> None:
        """Cached subtrees as ``(node_id, hash)`` (see :func:`audit.merkle.flat_index`)."""
        if nodes:
            self._execute(connection, self._nodes_sql, self._node_rows(nodes))


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as issued: size, root, the signed-note text and when it was issued."""

    tree_size: int
    root_hash: bytes
    note: str
    issued_at: datetime


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(int(row.tree_size), bytes(row.root_hash), str(row.note), utc(row.issued_at))


def _one_checkpoint(connection: Connection, query: Select[Any]) -> StoredCheckpoint | None:
    """The checkpoint ``query`` finds, if any; :class:`~audit.errors.MalformedRow` when its row (or, on SQLite,
    reading it at all) holds a value no checkpoint row can hold."""
    try:
        row = connection.execute(query).first()
        return None if row is None else _checkpoint(row)
    except _UNREADABLE:
        raise MalformedRow("audit_checkpoints", None) from None


def latest_checkpoint(connection: Connection) -> StoredCheckpoint | None:
    return _one_checkpoint(connection, select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc())
                           .limit(1))


def checkpoint_at(connection: Connection, size: int) -> StoredCheckpoint | None:
    return _one_checkpoint(connection, select(audit_checkpoints).where(audit_checkpoints.c.tree_size == size))


def all_checkpoints(connection: Connection, up_to_size: int | None = None) -> list[StoredCheckpoint]:
    """Every stored checkpoint (up to ``up_to_size``) by size; :class:`~audit.errors.MalformedRow` when a row
    holds a value no checkpoint row can hold."""
    query = select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size)
    if up_to_size is not None:
        query = query.where(audit_checkpoints.c.tree_size <= up_to_size)
    try:
        return [_checkpoint(row) for row in connection.execute(query)]
    except _UNREADABLE:
        raise MalformedRow("audit_checkpoints", None) from None


def has_checkpoint(connection: Connection) -> bool:
    """Whether any checkpoint was ever signed (the log has an identity: its key and origin)."""
    return connection.execute(select(audit_checkpoints.c.tree_size).limit(1)).first() is not None


def checkpoint_notes_page(connection: Connection, offset: int, limit: int) -> list[str]:
    """The notes of up to ``limit`` stored checkpoints, newest first, skipping the ``offset`` newest: one page of
    a walk back from the latest, which usually stops at its first row. Only the note is read (it states the size
    and root it signs), so a row whose other columns were garbled does not stop the walk."""
    query = (select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.tree_size.desc())
             .limit(limit).offset(offset))
    return [str(note) for (note,) in connection.execute(query)]


def checkpoint_rows_above(connection: Connection, size: int) -> list[tuple[int, str]]:
    """Size and note of every stored checkpoint row above ``size`` entries, largest first: none in a sound log
    (one index probe), only rows planted behind the log's back or left by a rollback otherwise."""
    query = (select(audit_checkpoints.c.tree_size, audit_checkpoints.c.note)
             .where(audit_checkpoints.c.tree_size > size).order_by(audit_checkpoints.c.tree_size.desc()))
    return [(int(tree_size), str(note)) for tree_size, note in connection.execute(query)]


def state_up_to(connection: Connection, size: int) -> LogState:
    """:class:`LogState` of a log of ``size`` entries as if no checkpoint row above that size existed (those rows
    passed over); :class:`~audit.errors.MalformedRow` as :func:`log_state`."""
    query = (select(audit_checkpoints.c.tree_size, audit_checkpoints.c.issued_at)
             .where(audit_checkpoints.c.tree_size <= size).order_by(audit_checkpoints.c.tree_size.desc()).limit(1))
    try:
        row = connection.execute(query).first()
    except _UNREADABLE:
        raise MalformedRow("audit_checkpoints", None) from None
    return _state((size - 1 if size else None, None if row is None else row[0], None if row is None else row[1]))


def checkpoint_notes(connection: Connection) -> Iterator[str]:
    """The signed notes of the stored checkpoints, newest first (only the note: nothing is parsed), streamed: a
    caller that stops at the first note it wants has not had the whole table fetched (a server-side cursor on
    PostgreSQL, whose default client-side cursor would fetch every row at once)."""
    query = select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.tree_size.desc())
    for (note,) in connection.execute(query.execution_options(yield_per=64)):
        yield str(note)


@dataclass(frozen=True)
class KeyRow:
    """One row of ``audit_checkpoint_keys``: a rotation of the checkpoint key (:mod:`audit.keys`)."""

    from_size: int
    verifier_key: str
    previous_key: str
    compromised_after: int | None
    rotated_at: datetime


def key_rows(connection: Connection) -> list[KeyRow]:
    """Every rotation of the checkpoint key, oldest first (a handful of rows; read under the append lock before a
    checkpoint is signed); :class:`~audit.errors.MalformedRow` when a row holds a value no such row can hold."""
    query = select(audit_checkpoint_keys).order_by(audit_checkpoint_keys.c.from_size)
    try:
        return [KeyRow(int(row.from_size), str(row.verifier_key), str(row.previous_key),
                       None if row.compromised_after is None else int(row.compromised_after), utc(row.rotated_at))
                for row in connection.execute(query)]
    except _UNREADABLE:
        raise MalformedRow("audit_checkpoint_keys", None) from None


def insert_key_row(connection: Connection, row: KeyRow) -> None:
    connection.execute(audit_checkpoint_keys.insert().values(
        from_size=row.from_size, verifier_key=row.verifier_key, previous_key=row.previous_key,
        compromised_after=row.compromised_after, rotated_at=row.rotated_at))


@dataclass(frozen=True)
class StoredEntry:
    """One row of ``audit_entries``: the canonical bytes, the stored leaf hash and the indexed copies."""

    index: int
    entry_id: UUID
    recorded_at: datetime
    canonical: bytes
    leaf_hash: bytes
    columns: dict[str, str | int | None]
    """The query columns (:data:`QUERY_COLUMNS`) as stored, so a verifier can check them against the
    canonical text."""
    recorded_at_text: object = None
    """On SQLite, ``recorded_at`` as stored (text, unless edited into something else), else None: SQLite keeps
    a time as text, reads variants of it (``T`` for the space, more fractional digits) back as the same time,
    and compares the text in a time-window search. A verifier checks it is :func:`stored_stamp`'s form."""


def stored_stamp(moment: datetime) -> str:
    """``moment`` as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``: how the writer stores ``recorded_at`` on SQLite
    (SQLAlchemy's SQLite format, always six fractional digits) and how a fast verification reads it on either
    database (:func:`query_columns_sql`). Text in this one form sorts as the times do."""
    m = utc(moment)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}"


@functools.lru_cache(maxsize=4096)
def subject_key(pseudonym: str) -> int:
    """The indexed key of a subject pseudonym: SHA-256's first 8 bytes as a signed 64-bit integer.

    Cached: the same subjects come back in request after request (and in the entries of one request).
    Query with ``subject_key = subject_key(p) AND subject_pseudonym = p`` (the key alone may collide).
    """
    return int.from_bytes(hashlib.sha256(pseudonym.encode("utf-8")).digest()[:8], "big", signed=True)


def query_columns(event: AuditEvent) -> dict[str, str | int | None]:
    """The indexed copies of an event's fields, exactly as :meth:`RowWriter.insert_entries` stores them."""
    return dict(zip(QUERY_COLUMNS, query_column_values(event), strict=True))


def query_column_values(event: AuditEvent) -> tuple[str | int | None, ...]:
    """:func:`query_columns`' values in :data:`QUERY_COLUMNS` order: the form the append path carries."""
    activity, requester, subject, decision = event.processing_activity, event.requester, event.data_subject, \
        event.decision
    if activity is None:
        partnership = purpose = None
    else:
        partnership, purpose = activity.partnership, activity.purpose
    if subject is None:
        pseudonym, key = None, None
    else:
        pseudonym = subject.pseudonym
        key = subject_key(pseudonym)
    # ``_value_`` is what the enums' ``value`` property returns, without the property's descriptor call
    return (event.event_type._value_, partnership, purpose, requester.org if requester else None, event.holder,
            decision._value_ if decision else None, pseudonym, key)


def _entry(row: Any) -> StoredEntry:
    return StoredEntry(
        index=int(row.log_index),
        entry_id=UUID(str(row.entry_id)),
        recorded_at=utc(row.recorded_at),
        canonical=str(row.canonical).encode("utf-8"),
        leaf_hash=bytes(row.leaf_hash),
        columns={name: getattr(row, name) for name in QUERY_COLUMNS},
        recorded_at_text=getattr(row, "recorded_at_text", None),
    )


def _entry_rows(dialect: Dialect) -> Select[Any]:
    """Whole ``audit_entries`` rows; on SQLite with ``recorded_at`` also as the stored text, unconverted
    (:attr:`StoredEntry.recorded_at_text`)."""
    if dialect.name == "sqlite":
        return select(audit_entries, type_coerce(audit_entries.c.recorded_at, Text).label("recorded_at_text"))
    return select(audit_entries)


def entries_between(connection: Connection, start: int, stop: int) -> list[StoredEntry]:
    """Entries with ``start <= index < stop``, in index order (missing indices are simply absent)."""
    rows = connection.execute(
        _entry_rows(connection.dialect)
        .where(audit_entries.c.log_index >= start, audit_entries.c.log_index < stop)
        .order_by(audit_entries.c.log_index)
    )
    return [_entry(row) for row in rows]


_MMAP_BYTES = 1 << 30
"""How much of an SQLite file a bulk read (verification, export) may map: reads of ~1 KB entries cost about a
quarter less than through read() calls; only for the batch's statement, never for writers."""


def _placeholder(dialect: Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


def _canonical_bytes_sql(dialect: Dialect) -> str | None:
    """SQL that returns ``canonical`` as its UTF-8 bytes, so that the driver builds no string per row."""
    if dialect.name == "sqlite":
        return "CAST(canonical AS BLOB)"  # the database encoding is UTF-8
    if dialect.name == "postgresql":
        return "convert_to(canonical, 'UTF8')"
    return None


def query_columns_sql(dialect: Dialect) -> str:
    """The columns a fast verification reads after ``(index, canonical, leaf hash)`` to check them against the
    text (:mod:`audit.query_columns`): ``recorded_at`` as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` — what SQLite
    stores, what PostgreSQL is asked for — then :data:`QUERY_COLUMNS`."""
    if dialect.name == "postgresql":
        stamp = "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    else:
        stamp = "recorded_at"
    return ", ".join((stamp, *QUERY_COLUMNS))


def leaf_batches(engine: Engine, *, start: int = 0, stop: int | None = None, batch_size: int = 10_000,
                 with_columns: bool = False) -> Iterator[list[tuple[Any, ...]]]:
    """``(index, canonical bytes, stored leaf hash)`` in index order, a list per batch: the lean read for
    verification and export; ``with_columns``: followed by the columns of :func:`query_columns_sql`.

    Keyset pagination on the index actually seen (a gap shows up as a jump, see :func:`iter_entries`),
    one short read per batch, each a single driver query with the canonical text fetched as bytes.
    """
    sql_bytes = _canonical_bytes_sql(engine.dialect)
    if sql_bytes is None or engine.dialect.paramstyle not in ("qmark", "format", "pyformat"):
        yield from _leaf_batches_portable(engine, start=start, stop=stop, batch_size=batch_size,
                                          with_columns=with_columns)
        return
    mark = _placeholder(engine.dialect)
    mapped = engine.dialect.name == "sqlite"
    bound = f" AND log_index < {mark}" if stop is not None else ""
    columns = f", {query_columns_sql(engine.dialect)}" if with_columns else ""
    sql = (f"SELECT log_index, {sql_bytes}, leaf_hash{columns} FROM audit_entries WHERE log_index >= {mark}{bound} "
           f"ORDER BY log_index LIMIT {mark}")
    position = start
    while stop is None or position < stop:
        params = (position, stop, batch_size) if stop is not None else (position, batch_size)
        with read_connection(engine) as connection:
            cursor = connection.connection.cursor()
            try:
                if mapped:  # SQLite reads the pages from a memory map, not with a read() per page
                    cursor.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
                cursor.execute(sql, params)
                batch = cast(list[tuple[Any, ...]], cursor.fetchall())
            finally:
                if mapped:
                    cursor.execute("PRAGMA mmap_size=0")  # the pooled connection goes back as it came
                cursor.close()
        if not batch:
            return
        yield batch
        position = int(batch[-1][0]) + 1


def _leaf_batches_portable(engine: Engine, *, start: int, stop: int | None, batch_size: int,
                           with_columns: bool) -> Iterator[list[tuple[Any, ...]]]:
    t = audit_entries.c
    columns = [t.log_index, t.canonical, t.leaf_hash]
    if with_columns:
        columns += [t.recorded_at, *(t[name] for name in QUERY_COLUMNS)]
    position = start
    while stop is None or position < stop:
        query = select(*columns).where(t.log_index >= position)
        if stop is not None:
            query = query.where(t.log_index < stop)
        with read_connection(engine) as connection:
            rows = connection.execute(query.order_by(t.log_index).limit(batch_size)).all()
        if not rows:
            return
        yield [(int(index), canonical.encode("utf-8"), bytes(leaf),
                *((stored_stamp(rest[0]), *rest[1:]) if rest else ()))
               for index, canonical, leaf, *rest in rows]
        position = int(rows[-1][0]) + 1


def iter_leaves(engine: Engine, *, start: int = 0, stop: int | None = None,
                batch_size: int = 10_000) -> Iterator[tuple[int, bytes, bytes]]:
    """Stream ``(index, canonical bytes, stored leaf hash)`` in index order (see :func:`leaf_batches`)."""
    for batch in leaf_batches(engine, start=start, stop=stop, batch_size=batch_size):
        yield from batch


def node_hashes(engine: Engine, node_ids: Sequence[int]) -> dict[int, bytes]:
    """Cached subtree hashes for ``node_ids`` (missing ones are absent), for a verifier's batch of nodes.

    The nodes that a run of consecutive leaves completes have flat ids close together (just below twice
    the leaves' indices), apart from the few large subtrees: one range scan fetches the former, one
    ``IN`` lookup the latter. Extra rows in the range are harmless; the caller looks up what it needs.
    """
    if not node_ids:
        return {}
    ordered = sorted(node_ids)
    low, high = max(0, ordered[-1] - 2 * len(ordered) - 64), ordered[-1]
    sparse = [node_id for node_id in ordered if node_id < low]
    with read_connection(engine) as connection:
        if engine.dialect.paramstyle in ("qmark", "format", "pyformat"):
            mark = _placeholder(engine.dialect)
            cursor = connection.connection.cursor()
            try:
                cursor.execute(f"SELECT node_id, hash FROM audit_tree_nodes WHERE node_id >= {mark} "
                               f"AND node_id <= {mark}", (low, high))
                found: dict[int, bytes] = dict(cursor.fetchall())
            finally:
                cursor.close()
        else:  # pragma: no cover - both supported drivers take the branch above
            found = nodes_by_id(connection, [node_id for node_id in ordered if node_id >= low])
        if sparse:
            found.update(nodes_by_id(connection, sparse))
    return found


def iter_entries(engine: Engine, *, start: int = 0, stop: int | None = None,
                 batch_size: int = 2000) -> Iterator[StoredEntry]:
    """Stream entries in index order with keyset pagination (one short read per batch).

    Paginates on the index actually seen, not on expected indices, so that a gap in the table shows
    up to a verifier as a jump instead of being skipped silently.

    Raises :class:`~audit.errors.MalformedRow` at the first row that holds a value no log row can hold,
    after every readable entry before it.
    """
    position = start
    while stop is None or position < stop:
        try:
            batch = _entries_from(engine, position, stop, batch_size)
        except _UNREADABLE:
            # Find the row: the readable ones before it, one at a time, then the verdict at the first that is not.
            for _ in range(batch_size):
                try:
                    single = _entries_from(engine, position, stop, 1)
                except _UNREADABLE:
                    raise MalformedRow("audit_entries", position) from None
                if not single:
                    return
                yield single[0]
                position = single[0].index + 1
            continue
        if not batch:
            return
        yield from batch
        position = batch[-1].index + 1



def _entries_from(engine: Engine, position: int, stop: int | None, limit: int) -> list[StoredEntry]:
    query = _entry_rows(engine.dialect).where(audit_entries.c.log_index >= position)
    if stop is not None:
        query = query.where(audit_entries.c.log_index < stop)
    with read_connection(engine) as connection:
        return [_entry(row) for row in connection.execute(query.order_by(audit_entries.c.log_index).limit(limit))]


def last_on_demand(connection: Connection) -> float | None:
    """POSIX seconds of the latest checkpoint signed on demand by any process (:mod:`audit.on_demand`), or None;
    read under the append lock, so no other process signs on demand between this read and the commit."""
    found = connection.execute(select(audit_on_demand.c.signed_at).where(audit_on_demand.c.id == 1)).scalar()
    try:
        return None if found is None else float(found)
    except _UNREADABLE:  # edited behind the log's back: as if never signed (the next signature overwrites it)
        return None


def record_on_demand(connection: Connection, signed_at: float) -> None:
    """Note that a checkpoint was signed on demand at ``signed_at``, in the transaction that stores it (under the
    append lock: the row cannot be inserted twice)."""
    if connection.execute(update(audit_on_demand).where(audit_on_demand.c.id == 1)
                          .values(signed_at=signed_at)).rowcount == 0:
        connection.execute(audit_on_demand.insert().values(id=1, signed_at=signed_at))
