"""Bulk reads for a verification in chunks (:mod:`audit.subtrees`, :func:`audit.verify.verify_database`).

Read-only queries on the tables of :mod:`audit.tables`, through the driver's own cursor (a verification
reads every row: an ORM or SQLAlchemy Core row per entry would cost more than hashing it). The
authoritative reads go by primary key; the rowid read is a shortcut whose result the caller only trusts when
it finds everything expected (see :func:`count_matching_nodes`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Engine

from audit import store

_MMAP_BYTES = 1 << 30
"""As for :func:`audit.store.leaf_batches`: SQLite reads the pages of a bulk read from a memory map."""

ENTRY_BATCH = 256
"""Rows handed on at a time: a batch of ~1 KB entries stays in the CPU cache while it is hashed (measured:
fetching 256 rows at a time costs a third less than fetching 10,000)."""

EntryRow = tuple[Any, ...]
"""``(index, canonical bytes, stored leaf hash)``, then the query columns when asked for (see :func:`entry_batches`)."""


def _mark(engine: Engine) -> str:
    return "?" if engine.dialect.paramstyle == "qmark" else "%s"


def _canonical_bytes(engine: Engine) -> str | None:
    """SQL for ``canonical`` as its UTF-8 bytes (as :func:`audit.store.leaf_batches` reads it)."""
    return {"sqlite": "CAST(canonical AS BLOB)", "postgresql": "convert_to(canonical, 'UTF8')"}.get(engine.dialect.name)


@contextmanager
def _cursor(engine: Engine) -> Iterator[Any]:
    """A driver cursor in a read transaction; SQLite reads through a memory map while it is open."""
    mapped = engine.dialect.name == "sqlite"
    with store.read_connection(engine) as connection:
        cursor = connection.connection.cursor()
        try:
            if mapped:
                cursor.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
            yield cursor
        finally:
            if mapped:
                cursor.execute("PRAGMA mmap_size=0")  # the pooled connection goes back as it came
            cursor.close()


def entry_batches(engine: Engine, start: int, stop: int, *, stored_order: bool = False,
                  with_columns: bool = False) -> Generator[list[EntryRow], None, None]:
    """``(index, canonical bytes, stored leaf hash)`` of the entries with ``start <= index < stop`` in index
    order, :data:`ENTRY_BATCH` at a time, from one query (a chunk is bounded, so no keyset pagination);
    ``with_columns``: each followed by the columns of :func:`audit.store.query_columns_sql`.

    ``stored_order``, SQLite only, a shortcut: the rows stored (in rowid order) from entry ``start``'s row to
    entry ``stop - 1``'s, read without an index probe per row. The appender writes entries in index order,
    so these are usually exactly the entries asked for; a caller must check that they are (each index once,
    in order, all of them) and otherwise read again without the shortcut.
    """
    canonical = _canonical_bytes(engine)
    if canonical is None or engine.dialect.paramstyle not in ("qmark", "format", "pyformat"):
        yield from store.leaf_batches(engine, start=start, stop=stop,  # pragma: no cover - other drivers
                                      with_columns=with_columns)
        return
    mark = _mark(engine)
    extra = f", {store.query_columns_sql(engine.dialect)}" if with_columns else ""
    columns = f"SELECT log_index, {canonical}, leaf_hash{extra} FROM audit_entries"
    if stored_order and engine.dialect.name == "sqlite":
        by_index = "(SELECT rowid FROM audit_entries WHERE log_index = ?)"
        sql, parameters = f"{columns} WHERE rowid BETWEEN {by_index} AND {by_index} ORDER BY rowid", (start, stop - 1)
    else:
        sql = f"{columns} WHERE log_index >= {mark} AND log_index < {mark} ORDER BY log_index"
        parameters = (start, stop)
    with _cursor(engine) as cursor:
        cursor.execute(sql, parameters)
        while rows := cursor.fetchmany(ENTRY_BATCH):
            yield cast(list[EntryRow], rows)


def nodes_in_range(engine: Engine, low: int, high: int) -> dict[int, bytes]:
    """The cached subtrees with flat ids in ``[low, high]``: the authoritative read (a primary key range)."""
    mark = _mark(engine)
    return _pairs(engine, f"SELECT node_id, hash FROM audit_tree_nodes WHERE node_id >= {mark} AND node_id <= {mark}",
                  (low, high))


def count_matching_nodes(engine: Engine, first_id: int, packed: bytes, *, stored_from: int | None = None,
                         stored_to: int | None = None) -> int:
    """How many cached subtrees hold exactly the hash expected for them, where ``packed`` holds the expected
    hashes of the subtrees ``first_id``, ``first_id + 2``, ... (an odd id, then every odd id), 32 bytes each.

    The database compares (every hash stays where it is): the ids matched are distinct and expected, so a
    count of ``len(packed) // 32`` means every expected subtree is cached with the expected hash.

    ``stored_from``/``stored_to``, SQLite only, a shortcut: look only at the rows stored (in rowid order) from
    ``stored_from``'s row to ``stored_to``'s. ``node_id`` is not SQLite's rowid, so a key range costs an
    index probe per row; the appender writes a range's subtrees one after another, so they usually sit
    together in rowid order, read without probes. A shortfall only means "ask again by key".
    """
    mark = _mark(engine)
    last_id = first_id + 2 * (len(packed) // 32 - 1)
    offset = f"(node_id - {mark}) / 2 * 32 + 1"
    where = f"node_id >= {mark} AND node_id <= {mark}"
    parameters: tuple[Any, ...] = (first_id, last_id)
    if stored_from is not None and stored_to is not None:
        by_id = "(SELECT rowid FROM audit_tree_nodes WHERE node_id = ?)"
        where = f"rowid BETWEEN {by_id} AND {by_id} AND +node_id >= ? AND +node_id <= ?"  # + : not by the key
        parameters = (stored_from, stored_to, first_id, last_id)
    if engine.dialect.name == "postgresql":
        compare = f"hash = substring({mark} from ({offset})::integer for 32)"
    else:
        compare = f"hash = substr({mark}, {offset}, 32)"
    sql = f"SELECT count(*) FROM audit_tree_nodes WHERE {where} AND (node_id & 1) = 1 AND {compare}"
    with _cursor(engine) as cursor:
        cursor.execute(sql, (*parameters, packed, first_id))
        return int(cursor.fetchone()[0])


def _pairs(engine: Engine, sql: str, parameters: Sequence[int]) -> dict[int, bytes]:
    with _cursor(engine) as cursor:
        cursor.execute(sql, tuple(parameters))
        return dict(cast(list[tuple[int, bytes]], cursor.fetchall()))
