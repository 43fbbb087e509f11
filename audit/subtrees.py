"""The complete subtree over an aligned range of leaves, and its comparison with the node cache in bulk.

A verification in chunks (:func:`audit.verify.verify_database`) gives each task an *aligned* range of the
log, ``[start, start + 2**k)`` with ``start`` a multiple of ``2**k`` (the last range may be shorter). Every
complete subtree inside such a range belongs to the range alone, so a task can hash all of them from its
own leaves, and the cached copies of exactly those subtrees have the contiguous flat ids
``2·start .. 2·stop - 2`` (:func:`audit.merkle.flat_index`: a subtree's id is the midpoint of its leaves'
span). One range read of the cache, compared as two dicts in C, replaces a lookup per subtree.

Hashing, and the comparison with what :mod:`audit.bulk_reads` reads; which failure to report is the verifier's.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine

from audit import bulk_reads
from audit.merkle import flat_index, node_at_flat_index

Levels = list[list[bytes]]
"""``levels[L][j]``: the hash of the ``j``-th complete subtree of ``2**L`` leaves in the range (``L`` = 0: the
leaves themselves). Only complete subtrees: an odd last node of a level has no parent."""

def subtree_levels(leaves: list[bytes]) -> Levels:
    """Hash every complete subtree of ``leaves``, level by level (RFC 9162 inner nodes)."""
    sha256 = hashlib.sha256
    levels, current = [leaves], leaves
    while len(current) > 1:
        pairs = zip(current[0::2], current[1::2], strict=False)  # an odd last node has no right sibling yet
        current = [sha256(b"\x01" + left + right).digest() for left, right in pairs]
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
    inner subtrees of the range (none in a whole range) are ignored.

    A whole range is first compared inside the database (:func:`audit.bulk_reads.count_matching_nodes`):
    only a count comes back. Any shortfall, and a partial range, go the long way: every row to a dict.
    """
    count = len(levels[0]) - 1
    if count <= 0:
        return []
    if len(levels[0]) == 1 << (len(levels) - 1):
        packed, first, root = inner_in_flat_order(levels), 2 * start + 1, 2 * start + count  # root: the middle id
        if engine.dialect.name == "sqlite" and bulk_reads.count_matching_nodes(
                engine, first, packed, stored_from=first, stored_to=root) == count:
            return []
        if bulk_reads.count_matching_nodes(engine, first, packed) == count:
            return []
    expected = expected_nodes(levels, start)
    stored = bulk_reads.nodes_in_range(engine, 2 * start, 2 * (start + len(levels[0])) - 2)
    wrong = [(node_id, node_id not in stored) for node_id, value in expected.items() if stored.get(node_id) != value]
    return sorted(wrong, key=lambda item: _completion_key(item[0]))


def inner_in_flat_order(levels: Levels) -> bytes:
    """For a whole range from ``start``: its inner subtrees' hashes concatenated in flat-id order (ids
    2·start + 1, 2·start + 3, ...). The hashes of level L sit at every 2**L-th place from 2**(L-1) - 1,
    which a list's slice assignment fills in C."""
    flat = [b""] * (len(levels[0]) - 1)
    for level in range(1, len(levels)):
        flat[(1 << (level - 1)) - 1::1 << level] = levels[level]
    return b"".join(flat)


def completion(node_id: int) -> int:
    """The tree size at which the subtree ``node_id`` is complete (one past its last leaf)."""
    level, index = node_at_flat_index(node_id)
    return (index + 1) << level


def _completion_key(node_id: int) -> tuple[int, int]:
    return completion(node_id), node_at_flat_index(node_id)[0]


def compact_hashes(levels: Levels, start: int) -> list[bytes]:
    """The hashes of :func:`compact_ids` over the whole range that ``levels`` covers from ``start``."""
    hashes, position, count = [], 0, len(levels[0])
    for level in reversed(range(count.bit_length())):
        if (count >> level) & 1:
            hashes.append(levels[level][position >> level])
            position += 1 << level
    return hashes
