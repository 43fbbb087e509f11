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

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, bindparam, func, select

from audit.events import AuditEvent
from audit.merkle import Node, flat_index, node_at_flat_index
from audit.tables import audit_checkpoints, audit_entries, audit_tree_nodes

ADVISORY_LOCK_KEY = int.from_bytes(b"WGSaudit", "big", signed=True)
"""The PostgreSQL advisory lock that serialises appenders; any 64-bit constant unique to the audit log."""

_FETCH_CHUNK = 500


def _utc(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; everything the log stores is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@contextmanager
def append_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction holding the log's append lock; commits on success, rolls back on error."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            with _sqlite_immediate(connection):
                yield connection
            return
        connection.execution_options(isolation_level="READ COMMITTED")
        connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
        try:
            yield connection
            connection.commit()
        except BaseException:
            connection.rollback()
            raise


@contextmanager
def _sqlite_immediate(connection: Connection) -> Iterator[None]:
    # PRAGMA and BEGIN go straight to the driver: SQLAlchemy's pysqlite transactions emit no BEGIN of
    # their own, and every statement costs the writer thread a GIL hand-off under load.
    raw: Any = connection.connection.driver_connection
    if not connection.connection.info.get("audit_synchronous_full"):
        # Once per connection, and left on: only allowed outside a transaction, and it only makes
        # later commits on this pooled connection more durable, never less.
        raw.execute("PRAGMA synchronous=FULL")
        connection.connection.info["audit_synchronous_full"] = True
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


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


def log_state(connection: Connection) -> LogState:
    largest, checkpoint_size, checkpoint_at = connection.execute(_STATE).one()
    return LogState(
        size=0 if largest is None else int(largest) + 1,
        latest_checkpoint_size=None if checkpoint_size is None else int(checkpoint_size),
        latest_checkpoint_at=None if checkpoint_at is None else _utc(checkpoint_at),
    )


def tree_size(connection: Connection) -> int:
    """Number of entries: the largest index plus one (indices are gap-free by construction)."""
    largest = connection.execute(select(func.max(audit_entries.c.log_index))).scalar()
    return 0 if largest is None else int(largest) + 1


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
        found.update(((0, int(index)), bytes(value)) for index, value in rows)
    inner = [node for node in wanted if node[0] > 0]
    for node_id, value in nodes_by_id(connection, [flat_index(node) for node in inner]).items():
        found[node_at_flat_index(node_id)] = value
    return found


def nodes_by_id(connection: Connection, node_ids: Sequence[int]) -> dict[int, bytes]:
    """Cached subtree hashes by ``node_id`` (see :mod:`audit.tables`)."""
    found: dict[int, bytes] = {}
    ordered = sorted(node_ids)
    for start in range(0, len(ordered), _FETCH_CHUNK):
        rows = connection.execute(_NODES_BY_ID, {"ids": ordered[start : start + _FETCH_CHUNK]})
        found.update((int(node_id), bytes(value)) for node_id, value in rows)
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


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as issued: size, root, the signed-note text and when it was issued."""

    tree_size: int
    root_hash: bytes
    note: str
    issued_at: datetime


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(int(row.tree_size), bytes(row.root_hash), str(row.note), _utc(row.issued_at))


def latest_checkpoint(connection: Connection) -> StoredCheckpoint | None:
    row = connection.execute(
        select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc()).limit(1)
    ).first()
    return None if row is None else _checkpoint(row)


def checkpoint_at(connection: Connection, size: int) -> StoredCheckpoint | None:
    row = connection.execute(select(audit_checkpoints).where(audit_checkpoints.c.tree_size == size)).first()
    return None if row is None else _checkpoint(row)


def all_checkpoints(connection: Connection, up_to_size: int | None = None) -> list[StoredCheckpoint]:
    query = select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size)
    if up_to_size is not None:
        query = query.where(audit_checkpoints.c.tree_size <= up_to_size)
    return [_checkpoint(row) for row in connection.execute(query)]


def insert_checkpoint(connection: Connection, checkpoint: StoredCheckpoint) -> None:
    connection.execute(audit_checkpoints.insert().values(
        tree_size=checkpoint.tree_size, root_hash=checkpoint.root_hash, note=checkpoint.note,
        issued_at=checkpoint.issued_at,
    ))


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


QUERY_COLUMNS = ("event_type", "partnership", "purpose", "requester_org", "holder_org", "decision",
                 "subject_pseudonym", "subject_key")


def subject_key(pseudonym: str) -> int:
    """The indexed key of a subject pseudonym: SHA-256's first 8 bytes as a signed 64-bit integer.

    Query with ``subject_key = subject_key(p) AND subject_pseudonym = p`` (the key alone may collide).
    """
    return int.from_bytes(hashlib.sha256(pseudonym.encode("utf-8")).digest()[:8], "big", signed=True)


def query_columns(event: AuditEvent) -> dict[str, str | int | None]:
    """The indexed copies of an event's fields, exactly as :func:`insert_entries` stores them."""
    activity, requester, subject = event.processing_activity, event.requester, event.data_subject
    return {
        "event_type": event.event_type.value,
        "partnership": activity.partnership if activity else None,
        "purpose": activity.purpose if activity else None,
        "requester_org": requester.org if requester else None,
        "holder_org": event.holder,
        "decision": event.decision.value if event.decision else None,
        "subject_pseudonym": subject.pseudonym if subject else None,
        "subject_key": subject_key(subject.pseudonym) if subject else None,
    }


def _entry(row: Any) -> StoredEntry:
    return StoredEntry(
        index=int(row.log_index),
        entry_id=UUID(str(row.entry_id)),
        recorded_at=_utc(row.recorded_at),
        canonical=str(row.canonical).encode("utf-8"),
        leaf_hash=bytes(row.leaf_hash),
        columns={name: getattr(row, name) for name in QUERY_COLUMNS},
    )


def entries_between(connection: Connection, start: int, stop: int) -> list[StoredEntry]:
    """Entries with ``start <= index < stop``, in index order (missing indices are simply absent)."""
    rows = connection.execute(
        select(audit_entries)
        .where(audit_entries.c.log_index >= start, audit_entries.c.log_index < stop)
        .order_by(audit_entries.c.log_index)
    )
    return [_entry(row) for row in rows]


def iter_leaves(engine: Engine, *, start: int = 0, stop: int | None = None,
                batch_size: int = 5000) -> Iterator[tuple[int, bytes, bytes]]:
    """Stream ``(index, canonical bytes, stored leaf hash)`` in index order: the lean read for
    verification and export (same keyset pagination as :func:`iter_entries`)."""
    columns = (audit_entries.c.log_index, audit_entries.c.canonical, audit_entries.c.leaf_hash)
    position = start
    while stop is None or position < stop:
        query = select(*columns).where(audit_entries.c.log_index >= position)
        if stop is not None:
            query = query.where(audit_entries.c.log_index < stop)
        with read_connection(engine) as connection:
            batch = connection.execute(query.order_by(audit_entries.c.log_index).limit(batch_size)).all()
        if not batch:
            return
        for index, canonical, leaf in batch:
            yield int(index), canonical.encode("utf-8"), bytes(leaf)
        position = int(batch[-1][0]) + 1


def iter_entries(engine: Engine, *, start: int = 0, stop: int | None = None,
                 batch_size: int = 2000) -> Iterator[StoredEntry]:
    """Stream entries in index order with keyset pagination (one short read per batch).

    Paginates on the index actually seen, not on expected indices, so that a gap in the table shows
    up to a verifier as a jump instead of being skipped silently.
    """
    position = start
    while stop is None or position < stop:
        query = select(audit_entries).where(audit_entries.c.log_index >= position)
        if stop is not None:
            query = query.where(audit_entries.c.log_index < stop)
        with read_connection(engine) as connection:
            batch = [_entry(row) for row in
                     connection.execute(query.order_by(audit_entries.c.log_index).limit(batch_size))]
        if not batch:
            return
        yield from batch
        position = batch[-1].index + 1
