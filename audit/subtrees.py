"""The complete subtree over an aligned range of leaves, and its comparison with the node cache in bulk.

A verification in chunks (:func:`audit.verify.verify_database`) gives each task an *aligned* range of the
log, ``[start, start + 2**k)`` with ``start`` a multiple of ``2**k`` (the last range may be shorter). Every
complete subtree inside such a range belongs to the range alone, so a task can hash all of them from its
own leaves, and the cached copies of exactly those subtrees have the contiguous flat ids
``2·start .. 2·stop - 2`` (:func:`audit.merkle.flat_index`: a subtree's id is the midpoint of its leaves'
span). One range read of the cache, compared as two dicts in C, replaces a lookup per subtree.

Pure hashing and two reads; which failure to report is the verifier's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Engine

from audit import store
from audit.merkle import flat_index, node_at_flat_index

Levels = list[list[bytes]]
"""``levels[L][j]``: the hash of the ``j``-th complete subtree of ``2**L`` leaves in the range (``L`` = 0: the
leaves themselves). Only complete subtrees: an odd last node of a level has no parent."""

_MMAP_BYTES = 1 << 30
"""As for :func:`audit.store.leaf_batches`: SQLite reads the pages of a bulk read from a memory map."""


def subtree_levels(leaves: list[bytes]) -> Levels:
    """Hash every complete subtree of ``leaves``, level by level (RFC 9162 inner nodes)."""
    sha256 = hashlib.sha256
    levels, current = [leaves], leaves
    while len(current) > 1:
        current = [sha256(b"\x01" + current[j] + current[j + 1]).digest() for j in range(0, len(current) - 1, 2)]
        levels.append(current)
    return levels


def node_hash_in(levels: Levels, start: int, node_id: int) -> bytes | None:
    """The hash of the subtree ``node_id`` if it lies complete in the range that ``levels`` covers from
    ``start`` (aligned to the range's size), else ``None``."""
    level, index = node_at_flat_index(node_id)
    if level >= len(levels):
        return None
    offset = index - (start >> level)
    if (index << level) < start or offset >= len(levels[level]):
        return None
    return levels[level][offset]


def compact_ids(start: int, stop: int) -> list[int]:
    """Flat ids of the complete subtrees covering ``[start, stop)``, largest first (``start`` aligned to a
    power of two at least ``stop - start``): with the compact range of ``[0, start)``, that of ``[0, stop)``."""
    ids, position, count = [], start, stop - start
    for level in reversed(range(count.bit_length())):
        if (count >> level) & 1:
            ids.append(flat_index((level, position >> level)))
            position += 1 << level
    return ids


def expected_nodes(levels: Levels, start: int) -> dict[int, bytes]:
    """Every complete inner subtree of the range by flat id: what the cache must hold for it. The ids of
    one level are an arithmetic progression, so the dict is built without a Python loop per node."""
    expected: dict[int, bytes] = {}
    for level in range(1, len(levels)):
        first, step = flat_index((level, start >> level)), 1 << (level + 1)
        expected.update(zip(range(first, first + step * len(levels[level]), step), levels[level], strict=True))
    return expected


def cache_mismatches(engine: Engine, levels: Levels, start: int) -> list[tuple[int, bool]]:
    """``(flat id, missing)`` of the range's inner subtrees whose cached hash is missing or differs, in the
    order the tree completes them (by last leaf, then level). Rows the range read returns that are not
    inner subtrees of the range (none in a whole range) are ignored."""
    expected = expected_nodes(levels, start)
    if not expected:
        return []
    whole = len(levels[0]) == 1 << (len(levels) - 1)
    if whole and engine.dialect.name == "sqlite" and expected.items() <= _nodes_by_rowid(engine, start, levels).items():
        return []
    stored = _nodes_by_id(engine, 2 * start, 2 * (start + len(levels[0])) - 2)
    if expected.items() <= stored.items():
        return []
    wrong = [(node_id, node_id not in stored) for node_id, value in expected.items() if stored.get(node_id) != value]
    return sorted(wrong, key=lambda item: _completion_key(item[0]))


def completion(node_id: int) -> int:
    """The tree size at which the subtree ``node_id`` is complete (one past its last leaf)."""
    level, index = node_at_flat_index(node_id)
    return (index + 1) << level


def _completion_key(node_id: int) -> tuple[int, int]:
    return completion(node_id), node_at_flat_index(node_id)[0]


def _nodes_by_id(engine: Engine, low: int, high: int) -> dict[int, bytes]:
    """The cached subtrees with flat ids in ``[low, high]``: the authoritative read (primary key range)."""
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    return _fetch_pairs(engine, f"SELECT node_id, hash FROM audit_tree_nodes WHERE node_id >= {mark} "
                                f"AND node_id <= {mark}", (low, high))


def _nodes_by_rowid(engine: Engine, start: int, levels: Levels) -> dict[int, bytes]:
    """SQLite only, a shortcut: the rows stored between the range's first completed subtree and its root.

    ``node_id`` is not SQLite's rowid, so a key range costs an index probe per row; the appender writes a
    range's subtrees one after another, so the same rows usually sit together in rowid order, read without
    probes. Whatever this returns are real rows of the table (ids are unique): if they include every
    expected subtree with its hash, the cache is right; otherwise the caller reads by key range."""
    first, root = flat_index((1, start >> 1)), flat_index((len(levels) - 1, start >> (len(levels) - 1)))
    by_id = "(SELECT rowid FROM audit_tree_nodes WHERE node_id = ?)"
    return _fetch_pairs(engine, f"SELECT node_id, hash FROM audit_tree_nodes WHERE rowid BETWEEN {by_id} AND {by_id}",
                        (first, root))


def _fetch_pairs(engine: Engine, sql: str, parameters: Sequence[int]) -> dict[int, bytes]:
    mapped = engine.dialect.name == "sqlite"
    with store.read_connection(engine) as connection:
        cursor = connection.connection.cursor()
        try:
            if mapped:
                cursor.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
            cursor.execute(sql, tuple(parameters))
            return dict(cast(list[tuple[int, bytes]], cursor.fetchall()))
        finally:
            if mapped:
                cursor.execute("PRAGMA mmap_size=0")  # the pooled connection goes back as it came
            cursor.close()


def compact_hashes(levels: Levels, start: int) -> list[bytes]:
    """The hashes of :func:`compact_ids` over the whole range that ``levels`` covers from ``start``."""
    hashes, position, count = [], 0, len(levels[0])
    for level in reversed(range(count.bit_length())):
        if (count >> level) & 1:
            hashes.append(levels[level][position >> level])
            position += 1 << level
    return hashes
