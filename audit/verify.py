"""Verify the whole log, from an export file or a live database, and report the first failure.

What is checked, in log order (the first failure stops verification and is reported with its index):

1. indices run 0, 1, 2, ... without gaps, duplicates or reordering (live: and no row
   lies before index 0, where no read of the tree looks but searches do);               ``gap``
2. each stored leaf hash is SHA-256(0x00 || canonical bytes);                            ``leaf-hash``
3. each entry carries its own index inside its canonical bytes;                          ``index``
4. (deep) each entry is RFC 8785 canonical JSON with a valid event;                      ``entry``
   (live) the columns searches use — the query columns and the time — agree with the
   entry (deep: the entry id too), the time on SQLite as text in exactly the writer's
   form (:func:`audit.store.stored_stamp`: searches compare that text). A fast
   verification reads them in the text as the gateway writes it
   (:mod:`audit.query_columns`), and an entry where it cannot is compared as a deep
   verification compares it;                                                            ``columns``
5. (live) every cached complete subtree equals the one recomputed from the leaves;      ``node-cache``
6. each checkpoint, when the stream reaches its size: signed by the key current for its
   size (both keys at a key handover, :mod:`audit.keys`) for the log's origin, its stored
   size/root agree with the signed text, its root equals the root recomputed from the
   entries, and it is consistent (RFC 9162 consistency proof built from the entries)
   with the previous checkpoint;                                                         ``signature``/
                                                                                          ``checkpoint``/
                                                                                          ``root``/
                                                                                          ``consistency``
7. no checkpoint — stored, or *known* to the verifier from earlier — covers more entries
   than the log has (a truncated or rolled-back log);                                    ``truncated``
8. (export) every entry is covered by a checkpoint that verified: an export ends with a
   checkpoint signed at its size (:mod:`audit.export`), and an entry no signature covers
   rests on the file alone, which anyone holding it can rewrite, leaf hash and all.      ``uncovered``

Where the failure points: an entry check fails at that entry's index. A root mismatch means some entry
since the previous good checkpoint (size m) differs from what was signed; when the tampering also
rewrote the stored leaf hash, the hashes alone cannot say which entry, so the failure names the range:
``index`` is m, ``last_index`` is n - 1 and ``checkpoint_size`` is n, the checkpoint that caught it. A
wrong cached subtree likewise names the entries it covers; it is reported at the first checkpoint, failing
entry or end of the log after the tree completes it (the narrowest mismatch found by then), so the verdict
never depends on how the entries were read, batched or split into chunks. Signature and format problems of a
checkpoint are reported at its tree size. In a live database, entries after the newest checkpoint are
only as trustworthy as the database; the result warns about them (the next checkpoint, at most 100
entries or 60 seconds away, covers them). In an export they fail the verification (step 8), reported at
the first uncovered entry.

The trusted key must come from outside the evidence: pass the verifier key you pinned. Without one, an
export's own header key is used and the result says so — a forger who rewrites the file can rewrite
the key too. The pinned key may be of any era of a log whose key was rotated: the key history is read from
the log's own handover checkpoints and trusted only through it (:func:`_key_history`).
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from audit import bulk_reads, store
from audit.canonical import claims_index, envelope_index, parse_entry
from audit.checkpoint import Checkpoint, NoteVerifier, claimed_checkpoint
from audit.errors import MalformedRow, StoreUnavailable, VerificationError
from audit.export import ENTRY_LINE, EXPORT_FORMAT, EXPORT_VERSION, MAX_LINE_BYTES
from audit.keys import HANDOVER_MARKER, KeyHistory, check_key_rows
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    Node,
    compact_range_nodes,
    consistency_ranges,
    flat_index,
    fold_range,
    leaf_hash,
    node_at_flat_index,
    subtree_nodes,
    verify_consistency,
)
from audit.query_columns import ColumnReader
from audit.store import StoredEntry
from audit.subtrees import (
    cache_mismatches,
    compact_hashes,
    compact_ids,
    completion,
    node_hash_in,
    subtree_levels,
)


class FailureKind(StrEnum):
    """Which check failed (numbered as in the module docstring); ``format`` concerns the export file itself
    (unreadable); ``key`` the log's key history: a handover not signed by both its keys, a history that does not
    reach the pinned key, key rows that disagree with the handovers, or an export naming another current key."""

    FORMAT = "format"
    KEY = "key"
    GAP = "gap"
    INDEX = "index"
    ENTRY = "entry"
    COLUMNS = "columns"
    LEAF_HASH = "leaf-hash"
    NODE_CACHE = "node-cache"
    SIGNATURE = "signature"
    CHECKPOINT = "checkpoint"
    ROOT = "root"
    CONSISTENCY = "consistency"
    TRUNCATED = "truncated"
    UNCOVERED = "uncovered"


@dataclass(frozen=True)
class Failure:
    """The first thing that failed: what kind, at which log index, and why (never entry content)."""

    kind: FailureKind
    index: int | None
    reason: str
    checkpoint_size: int | None = None
    last_index: int | None = None
    """For failures that only narrow the damage to a range: the range is ``index..last_index``."""

    def __str__(self) -> str:
        if self.index is None:
            where = ""
        elif self.last_index is not None and self.last_index != self.index:
            where = f" at index {self.index} (somewhere in {self.index}..{self.last_index})"
        else:
            where = f" at index {self.index}"
        return f"{self.kind.value}{where}: {self.reason}"


class LogVerificationError(VerificationError):
    """Raised by :meth:`VerifyResult.raise_for_failure`; carries the :class:`Failure`."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a verification run. ``ok`` is true only when nothing failed."""

    entries: int
    checkpoints: int
    root_hash: bytes | None
    failure: Failure | None = None
    key_pinned: bool = True
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None

    def raise_for_failure(self) -> None:
        if self.failure is not None:
            raise LogVerificationError(self.failure)


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


def _fail(kind: FailureKind, index: int | None, reason: str, checkpoint_size: int | None = None,
          last_index: int | None = None) -> _Failed:
    return _Failed(Failure(kind, index, reason, checkpoint_size, last_index))


_EntryRecord = tuple[int, bytes, "bytes | None", "StoredEntry | None"]
"""(index, canonical bytes, stored leaf hash or None, the stored row for deep live checks or None)."""


@dataclass(frozen=True)
class _CheckpointRecord:
    tree_size: int
    note: str
    root_column: bytes | None
    source: str


@dataclass
class _Anchor:
    """The last checkpoint that verified: its size, root and the compact range at that size."""

    size: int
    root: bytes
    frontier: CompactRange


def check_rows(rows: Sequence[tuple[Any, ...]], start: int,
               columns: ColumnReader | None = None) -> tuple[list[bytes], Failure | None, list[int]]:
    """Steps 1-3 (and 4, with ``columns``) for consecutive entries expected from index ``start``: their leaf
    hashes, up to the first entry that fails, that failure (or ``None``), and with ``columns`` (rows read
    with the query columns, :data:`audit.query_columns.STAMP_COLUMN`) the indices of the entries before it
    whose columns step 4 could not vouch for without parsing: comparing those is the caller's
    (:func:`_confirm_columns`), once the read is done.

    The per-entry half of a verification, independent of the tree, so that worker processes can run it
    on ranges of the log (:func:`verify_database` with ``workers``) while the tree is built in order.
    """
    sha256 = hashlib.sha256
    leaves: list[bytes] = []
    append = leaves.append
    unconfirmed: list[int] = []
    size = start
    # The envelope's tail is ``,"index":N`` + ``,"recorded_at":"<time>","v":1}``; entries written together
    # share the time, so the tail after N is compared whole once one entry's time passed the full check.
    after_index = b""
    try:
        for row in rows:
            claimed_position, canonical, stored_leaf = row[0], row[1], row[2]
            # 1. Position.
            if claimed_position != size:
                raise _Stream.gap(size, claimed_position)
            # 2. Leaf hash first: a stored hash that no longer matches is the clearest sign of an edit.
            leaf = sha256(b"\x00" + canonical).digest()
            if stored_leaf is not None and stored_leaf != leaf:
                raise _fail(FailureKind.LEAF_HASH, size, "stored leaf hash does not match the entry's canonical bytes")
            # 3. The entry's own view of its index (the regular expression only when the shortcuts decline).
            if not (after_index and canonical.endswith(b',"index":%d%b' % (size, after_index))):
                if claims_index(canonical, size):
                    after_index = canonical[canonical.rindex(b',"recorded_at":"'):]
                else:
                    _Stream.check_index(size, canonical)
                    after_index = b""  # a time in no usual form: the next entry's tail is read afresh
                if columns is not None:
                    columns.read_tail(after_index)
            # 4. The time and the columns searches use, as far as the text shows them without parsing it.
            if columns is not None and not columns.agree(canonical, row):
                unconfirmed.append(size)
            append(leaf)
            size += 1
    except _Failed as failed:
        return leaves, failed.failure, unconfirmed
    return leaves, None, unconfirmed


def _entry_failure(index: int, canonical: bytes, stored: StoredEntry | None) -> Failure | None:
    """Step 4 the deep way, for one entry: the text parsed and fully checked, then the stored row's columns
    (when read from a live database) compared with it. Every verification's comparison: a deep one's for each
    entry, a fast one's for the entries whose columns :class:`~audit.query_columns.ColumnReader` could not
    vouch for."""
    try:
        entry = parse_entry(canonical)
    except VerificationError as exc:
        return Failure(FailureKind.ENTRY, index, str(exc))
    if entry.index != index:
        return Failure(FailureKind.INDEX, index, f"entry at index {index} says it is entry {entry.index}")
    if stored is not None:
        if stored.entry_id != entry.entry_id or stored.recorded_at != entry.recorded_at:
            return Failure(FailureKind.COLUMNS, index, "entry_id or recorded_at column differs from the entry")
        if stored.recorded_at_text is not None and stored.recorded_at_text != store.stored_stamp(entry.recorded_at):
            # the same time in another form: time-window searches, which compare SQLite's text, would misplace it
            return Failure(FailureKind.COLUMNS, index, "recorded_at column is not stored in the form the gateway "
                                                       "writes (a time-window search compares that text)")
        expected = store.query_columns(entry.event)
        wrong = sorted(name for name, value in expected.items() if stored.columns.get(name) != value)
        if wrong:
            return Failure(FailureKind.COLUMNS, index, f"column(s) {', '.join(wrong)} differ from the entry")
    return None


def _confirm_columns(engine: Engine, start: int, leaves: list[bytes], failure: Failure | None,
                     unconfirmed: Sequence[int]) -> tuple[list[bytes], Failure | None]:
    """Step 4 for the entries :func:`check_rows` could not vouch for (in index order, all before ``failure``):
    each row read again, typed, and compared the deep way (:func:`_entry_failure`). The first that fails
    replaces ``failure``, and the leaves end before it; none failing leaves both as they were."""
    for index in unconfirmed:
        problem = _stored_failure(engine, index)
        if problem is not None:
            return leaves[:index - start], problem
    return leaves, failure


def _stored_failure(engine: Engine, index: int) -> Failure | None:
    try:
        stored = next(store.iter_entries(engine, start=index, stop=index + 1), None)
    except MalformedRow as exc:
        return Failure(FailureKind.COLUMNS, exc.index, f"{exc}: {_EDITED}")
    if stored is None or stored.index != index:  # it was there a moment ago: the table is being edited
        return Failure(FailureKind.COLUMNS, index, f"the entry's row could not be read again: {_EDITED}")
    return _entry_failure(index, stored.canonical, stored)


class _Stream:
    """Streaming verifier state: O(log n) hashes plus the leaves since the last good checkpoint.

    :meth:`feed_rows` is the hot loop of a verification (hundreds of thousands of entries a second):
    plain tuples in, ``hashlib`` directly, the tree's right frontier as a list of hashes, completed
    subtrees queued as flat node ids for the cache check, and checkpoints checked as the size passes them.
    """

    def __init__(self, keys: KeyHistory, checkpoints: list[_CheckpointRecord], deep: bool,
                 node_checker: _NodeChecker | None = None, columns_of: Engine | None = None) -> None:
        self.keys = keys
        # Sizes of checkpoints only a leaked key signed after its compromise point (warned about, never trusted):
        # those that match the entries, and those that do not.
        self.distrusted: list[int] = []
        self.disowned: list[int] = []
        self.checkpoints = sorted(checkpoints, key=lambda record: record.tree_size)
        self.deep = deep
        self.node_checker = node_checker
        # A fast verification of a live log: rows come with their query columns (step 4 without parsing)
        self.columns_of = columns_of
        self.columns = ColumnReader() if columns_of is not None else None
        self.hashes: list[bytes] = []  # the compact range of [0, size): one complete subtree per set bit
        self.size = 0
        self.anchor = _Anchor(0, EMPTY_ROOT, CompactRange())
        # Subtrees (flat ids) that the consistency proof from the anchor to the next checkpoint needs,
        # captured as the stream completes them: no leaf hashes are kept between checkpoints.
        self.capture: dict[int, bytes | None] = {}
        self.pending_ids: list[int] = []
        self.pending_hashes: list[bytes] = []
        self.node_problem: _NodeProblem | None = None  # the narrowest cache mismatch not reported yet
        self.next_checkpoint = 0
        self.next_due = self._due_size()
        self.verified_checkpoints = 0

    @property
    def frontier(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def _due_size(self) -> int:
        if self.next_checkpoint < len(self.checkpoints):
            return self.checkpoints[self.next_checkpoint].tree_size
        return -1

    def start(self) -> None:
        self._checkpoints_due()  # checkpoints of the empty tree

    @staticmethod
    def gap(index: int, claimed_position: int) -> _Failed:
        problem = (f"entry {index} is missing (next entry found has index {claimed_position})"
                   if claimed_position > index else f"index {claimed_position} appears again or out of order")
        return _fail(FailureKind.GAP, index, problem)

    @staticmethod
    def check_index(index: int, canonical: bytes) -> None:
        try:
            claimed = envelope_index(canonical)
        except VerificationError as exc:
            raise _fail(FailureKind.ENTRY, index, str(exc)) from None
        if claimed != index:
            raise _fail(FailureKind.INDEX, index, f"entry at index {index} says it is entry {claimed}")

    def feed(self, record: _EntryRecord) -> None:
        """One entry, with the deep checks when they are on (:meth:`feed_rows` does the rest)."""
        claimed_position, canonical, stored_leaf, stored = record
        if self.deep:
            index = self.size
            if claimed_position != index:
                raise self.gap(index, claimed_position)
            if stored_leaf is not None and stored_leaf != leaf_hash(canonical):
                raise _fail(FailureKind.LEAF_HASH, index,
                            "stored leaf hash does not match the entry's canonical bytes")
            self._check_deep(index, canonical, stored)
        self.feed_rows(((claimed_position, canonical, stored_leaf),))

    def feed_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Entries ``(claimed index, canonical bytes, stored leaf hash or None)`` in stream order, followed
        by their query columns when the stream checks them (``columns_of``)."""
        leaves, failure, unconfirmed = check_rows(rows, self.size, self.columns)
        if unconfirmed and self.columns_of is not None:
            leaves, failure = _confirm_columns(self.columns_of, self.size, leaves, failure, unconfirmed)
        self.feed_leaves(leaves)  # first: a checkpoint before the failing entry may fail earlier
        if failure is not None:
            raise _Failed(failure)

    def feed_leaves(self, leaves: Iterable[bytes]) -> None:
        """Leaf hashes of the next entries, already checked by :func:`check_rows` (steps 5 and 6)."""
        sha256 = hashlib.sha256
        hashes, size, capture, next_due = self.hashes, self.size, self.capture, self.next_due
        check_nodes = self.node_checker is not None
        pending_ids, pending_hashes, flush_at = self.pending_ids, self.pending_hashes, _NodeChecker.batch
        try:
            for leaf in leaves:
                # 5. Tree: every trailing one bit of the size is a subtree that this leaf completes; the
                #    subtree of level L ending at this leaf has flat index 2·size + 1 - 2**L.
                if capture and 2 * size in capture:
                    capture[2 * size] = leaf
                current, flat_end, width, waiting = leaf, 2 * size + 1, 1, size
                while waiting & 1:
                    current = sha256(b"\x01" + hashes.pop() + current).digest()
                    width <<= 1
                    if check_nodes:
                        pending_ids.append(flat_end - width)
                        pending_hashes.append(current)
                    if capture and flat_end - width in capture:
                        capture[flat_end - width] = current
                    waiting >>= 1
                hashes.append(current)
                size += 1
                # 6. Checkpoints at this size (completed subtrees are compared with the cache in batches,
                #    and always before a checkpoint, so that a cache mismatch, which pinpoints a narrower
                #    range, is reported before a root mismatch).
                if size == next_due:
                    self.size = size
                    self._checkpoints_due()
                    capture, next_due = self.capture, self.next_due
                elif len(pending_ids) >= flush_at:
                    self.size = size
                    self._flush_nodes()
        finally:
            self.size = size

    def feed_chunk(self, start: int, level: int, chunk: _ChunkResult, known: dict[int, bytes]) -> None:
        """The entries ``[start, chunk.end)`` of an aligned chunk of ``2**level``, checked elsewhere
        (:func:`_check_chunk`): the same steps and the same first failure as :meth:`feed_rows` on them.

        The stream stands at ``start``, its frontier made of subtrees at least a chunk high. A checkpoint
        inside the chunk sees the frontier plus the chunk's own subtrees before it; a whole chunk adds its
        root, completing the subtrees above it (compared with the cache here: few, the chunk compared the
        rest). ``known``: subtree hashes by flat id that later checkpoints may need, kept across chunks.
        """
        known.update(chunk.nodes)
        base, mismatches = self.hashes, deque(chunk.mismatches)
        whole = chunk.end - start == 1 << level
        while 0 <= self.next_due <= chunk.end and not (whole and self.next_due == chunk.end):
            due = self.next_due
            self._note_mismatches(mismatches, due)
            self.size, self.hashes = due, base + [known[node_id] for node_id in compact_ids(start, due)]
            self._fill_capture(known)
            self._checkpoints_due()
        self._note_mismatches(mismatches, chunk.end)
        self.size, self.hashes = start, base
        if whole:
            self._add_chunk_root(chunk.tail[0], start, level, known)
            if self.next_due == chunk.end:
                self._fill_capture(known)
                self._checkpoints_due()
        else:
            self.size, self.hashes = chunk.end, base + chunk.tail
        if chunk.failure is not None:
            raise _Failed(chunk.failure)

    def _note_mismatches(self, mismatches: deque[tuple[int, bool]], size: int) -> None:
        """Take in the chunk's cache mismatches that the tree completes by ``size``."""
        while mismatches and completion(mismatches[0][0]) <= size:
            self._note_node_problem(_node_problem(*mismatches.popleft()))

    def _fill_capture(self, known: dict[int, bytes]) -> None:
        for node_id in self.capture:
            if node_id in known:
                self.capture[node_id] = known[node_id]

    def _add_chunk_root(self, root: bytes, start: int, level: int, known: dict[int, bytes]) -> None:
        """Append a whole chunk's root to the frontier, as :meth:`feed_leaves` appends a leaf, a level up."""
        sha256, hashes, current = hashlib.sha256, self.hashes, root
        end, above = start + (1 << level), level
        while (start >> above) & 1:
            current = sha256(b"\x01" + hashes.pop() + current).digest()
            above += 1
            node_id = flat_index((above, start >> above))
            known[node_id] = current
            if self.node_checker is not None:
                self.pending_ids.append(node_id)
                self.pending_hashes.append(current)
        hashes.append(current)
        self.size = end

    def _check_deep(self, index: int, canonical: bytes, stored: StoredEntry | None) -> None:
        failure = _entry_failure(index, canonical, stored)
        if failure is not None:
            raise _Failed(failure)

    def _flush_nodes(self) -> None:
        """Compare the subtrees completed since the last flush with the cache; keep the narrowest mismatch."""
        if self.node_checker is not None and self.pending_ids:
            self._note_node_problem(self.node_checker.check(self.pending_ids, self.pending_hashes))
        self.pending_ids.clear()
        self.pending_hashes.clear()

    def _note_node_problem(self, problem: _NodeProblem | None) -> None:
        if problem is not None and (self.node_problem is None or _narrower(problem, self.node_problem)):
            self.node_problem = problem

    def node_failure(self) -> Failure | None:
        """The cache mismatch among the subtrees completed so far, if any: reported at the next boundary (a
        checkpoint, a failing entry, the end), whatever the batching, before what that boundary would report."""
        self._flush_nodes()
        problem, self.node_problem = self.node_problem, None
        if problem is None:
            return None
        first, last, reason = problem
        return Failure(FailureKind.NODE_CACHE, first, reason, None, last)

    def _report_nodes(self) -> None:
        failure = self.node_failure()
        if failure is not None:
            raise _Failed(failure)

    def _checkpoints_due(self) -> None:
        while 0 <= self.next_due <= self.size:
            self._report_nodes()
            self._check_checkpoint(self.checkpoints[self.next_checkpoint])
            self.next_checkpoint += 1
            self.next_due = self._due_size()
            self._plan_capture()

    def _plan_capture(self) -> None:
        """Name the subtrees beyond the anchor that the next checkpoint's consistency proof consists of."""
        anchor_size, next_size = self.anchor.size, self.next_due
        self.capture = {}
        if next_size < 0:
            return
        for start, end in consistency_ranges(anchor_size, max(anchor_size, next_size)):
            if end > anchor_size:
                self.capture.update((flat_index(node), None) for node in subtree_nodes(start, end))

    def _check_checkpoint(self, record: _CheckpointRecord) -> None:
        size = record.tree_size
        try:
            checkpoint = self.keys.open(record.note)
        except VerificationError as exc:
            raise _fail(FailureKind.SIGNATURE, size, f"{record.source} checkpoint at size {size}: {exc}",
                        size) from None
        if self.keys.distrusted(size):
            self._set_aside(record, checkpoint)
            return
        if checkpoint.tree_size != size:
            raise _fail(FailureKind.CHECKPOINT, size, f"{record.source} checkpoint is filed under size {size} "
                        f"but its signed text says {checkpoint.tree_size}", size)
        if record.root_column is not None and record.root_column != checkpoint.root_hash:
            raise _fail(FailureKind.CHECKPOINT, size, f"stored root of checkpoint {size} differs from its signed root",
                        size)
        anchor = self.anchor
        frontier = self.frontier
        if checkpoint.root_hash != frontier.root():
            raise _fail(FailureKind.ROOT, anchor.size,
                        f"the entries do not produce the root signed at size {size}: an entry in "
                        f"[{anchor.size}, {size}) was changed, inserted, removed or reordered", size, size - 1)
        self._check_consistency(anchor, size, checkpoint.root_hash)
        self.anchor = _Anchor(size, checkpoint.root_hash, frontier)
        self.verified_checkpoints += 1

    def _set_aside(self, record: _CheckpointRecord, checkpoint: Checkpoint) -> None:
        """A checkpoint only a leaked key signed after its compromise point: its signature proves nothing either
        way, so it neither fails the log nor anchors it. Whether it matches the entries is a warning (one that does
        not is the thief's, or the log was rewritten since: the signature cannot tell which; the handover's
        signature by the new key is what the entries up to it rest on). The stream goes on from the tree it
        computed, as if no checkpoint stood there."""
        frontier = self.frontier
        matches = checkpoint.tree_size == record.tree_size and checkpoint.root_hash == frontier.root() and (
            record.root_column is None or record.root_column == checkpoint.root_hash)
        (self.distrusted if matches else self.disowned).append(record.tree_size)
        self.anchor = _Anchor(record.tree_size, frontier.root(), frontier)

    def _check_consistency(self, anchor: _Anchor, size: int, root: bytes) -> None:
        """Prove, as a third party holding only the two checkpoints would, that ``size`` extends the anchor."""
        by_range = {(index << level, (index + 1) << level): value
                    for (level, index), value in zip(compact_range_nodes(anchor.size), anchor.frontier.hashes,
                                                     strict=True)}
        def captured(node: Node) -> bytes:
            value = self.capture.get(flat_index(node))
            if value is None:
                raise VerificationError(f"subtree {node} of the proof was not seen in the stream")
            return value

        try:
            proof = [by_range[(start, end)] if end <= anchor.size else fold_range(start, end, captured)
                     for start, end in consistency_ranges(anchor.size, size)]
            verify_consistency(anchor.size, size, anchor.root, root, proof)
        except VerificationError as exc:
            raise _fail(FailureKind.CONSISTENCY, anchor.size, f"checkpoints {anchor.size} and {size}: {exc}",
                        size, size - 1) from None

    def finish(self) -> None:
        self._report_nodes()
        # 7. Checkpoints beyond the end: check the signature first (a forged one is a forgery, not truncation).
        for record in self.checkpoints[self.next_checkpoint:]:
            try:
                checkpoint = self.keys.open(record.note)
            except VerificationError as exc:
                raise _fail(FailureKind.SIGNATURE, record.tree_size,
                            f"{record.source} checkpoint at size {record.tree_size}: {exc}", record.tree_size) from None
            raise _fail(FailureKind.TRUNCATED, self.size,
                        f"the log has {self.size} entries but a {record.source} checkpoint signed "
                        f"{checkpoint.tree_size}: entries were removed or the log was rolled back",
                        record.tree_size)


_Row = tuple[int, bytes, "bytes | None"]
"""(index, canonical bytes, stored leaf hash or None): what the fast path reads, in batches (from a live
database followed by the query columns, :func:`audit.store.query_columns_sql`)."""


def _run(stream: _Stream, batches: Iterable[Sequence[_EntryRecord]] | Iterable[Sequence[_Row]], *,
         key_pinned: bool, feed: Callable[[_Stream], None] | None = None,
         require_covered: bool = False) -> VerifyResult:
    """Feed batches of entries: 4-tuple records one by one when verifying deeply, else rows in bulk.
    ``feed``, when given, feeds the stream first (the parallel path); ``batches`` then carry the rest.
    ``require_covered``: every entry must be covered by a verified checkpoint (step 8, for exports)."""
    failure: Failure | None = None
    try:
        stream.start()
        if feed is not None:
            feed(stream)
        for batch in batches:
            if stream.deep:
                for record in batch:
                    stream.feed(record)  # type: ignore[arg-type]  # deep batches hold 4-tuple records
            else:
                stream.feed_rows(batch)  # fast batches hold rows
        stream.finish()
        if require_covered:
            _check_covered(stream)
    except _Failed as failed:
        # A cache mismatch among the subtrees completed before a failing entry is reported first.
        failure = stream.node_failure() or failed.failure
    warnings: list[str] = []
    if stream.distrusted:
        warnings.append(f"checkpoint(s) at sizes {_sizes(stream.distrusted)} were signed only by a checkpoint key "
                        "after its compromise point: their signatures prove nothing (the entries up to the key's "
                        "handover rest on the new key's signature)")
    if stream.disowned:
        warnings.append(f"checkpoint(s) at sizes {_sizes(stream.disowned)}, signed only by a checkpoint key after its "
                        "compromise point, do not match the log: forgeries made with the leaked key, or the log "
                        "rewritten since (the signature cannot tell which; the handover's signature by the new key "
                        "covers the entries up to it)")
    if not key_pinned:
        warnings.append("verified with the key named in the export itself; pin the log's verifier key instead")
    if failure is None:
        covered = stream.anchor.size
        if stream.verified_checkpoints == 0 and stream.size:
            warnings.append("no checkpoint covers any entry: nothing in this log is anchored by a signature")
        elif covered < stream.size:
            warnings.append(f"entries {covered}..{stream.size - 1} are not covered by a checkpoint yet")
    return VerifyResult(entries=stream.size, checkpoints=stream.verified_checkpoints,
                        root_hash=stream.frontier.root() if failure is None else None, failure=failure,
                        key_pinned=key_pinned, warnings=tuple(warnings))


def _sizes(sizes: list[int]) -> str:
    shown = ", ".join(str(size) for size in sizes[:5])
    return shown + (f" and {len(sizes) - 5} more" if len(sizes) > 5 else "")


def _check_covered(stream: _Stream) -> None:
    """Step 8: fail unless a verified checkpoint covers the last entry (and so, by consistency, all)."""
    first, size = stream.anchor.size, stream.size
    if first < size:
        raise _fail(FailureKind.UNCOVERED, first,
                    f"entries {first}..{size - 1} are not covered by any checkpoint signed with the trusted key, so "
                    "nothing but the file vouches for them (an export ends with a checkpoint at its size: "
                    "export the log again)")


_NodeProblem = tuple[int, int, str]
"""A cache mismatch: (first entry, last entry, reason) of the subtree."""


def _narrower(problem: _NodeProblem, other: _NodeProblem) -> bool:
    """A changed leaf spoils every subtree above it: the narrowest mismatch (then the first) locates it best."""
    return (problem[1] - problem[0], problem[0]) < (other[1] - other[0], other[0])


def _node_problem(node_id: int, missing: bool) -> _NodeProblem:
    level, index = node_at_flat_index(node_id)
    first, last = index << level, ((index + 1) << level) - 1
    state = "missing" if missing else "wrong"
    return first, last, f"cached subtree ({level}, {index}) over entries {first}..{last} is {state}"


class _NodeChecker:
    """Compares completed subtrees with the database's cache, a batch of nodes at a time."""

    batch = 4096

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def check(self, node_ids: Sequence[int], values: Sequence[bytes]) -> _NodeProblem | None:
        """The narrowest of the nodes that the cache lacks or holds differently, or ``None``."""
        stored = store.node_hashes(self._engine, node_ids)
        narrowest: _NodeProblem | None = None
        for node_id, value in zip(node_ids, values, strict=True):
            cached = stored.get(node_id)
            if cached != value:
                problem = _node_problem(node_id, cached is None)
                if narrowest is None or _narrower(problem, narrowest):
                    narrowest = problem
        return narrowest


def _known(known_checkpoints: Sequence[str]) -> list[_CheckpointRecord]:
    """Checkpoints the verifier kept from earlier, filed under the size their text claims (their signatures
    are checked in the stream, as every checkpoint's).

    A text that is no signed checkpoint at all (a file kept by mistake) is a ``format`` failure, numbered
    in the order given, before anything is read: reported as a bad signature at index 0, it read as damage
    to the log.
    """
    records = []
    for number, note in enumerate(known_checkpoints, start=1):
        try:
            size = claimed_checkpoint(note).tree_size
        except VerificationError as exc:
            raise _fail(FailureKind.FORMAT, None, f"kept checkpoint {number} is not a signed checkpoint ({exc})") \
                from None
        records.append(_CheckpointRecord(size, note, None, "known"))
    return records


def _key_history(trusted: NoteVerifier, records: Sequence[_CheckpointRecord]) -> KeyHistory:
    """The log's key history from its own handover checkpoints (:mod:`audit.keys`), trusted through the pinned
    key, which may be any key of the chain: an officer who pinned a retired key follows the handovers forward,
    one who pinned the current key follows them back. Kept checkpoints are no part of it (the log's are what
    the history must state; a kept handover the log lacks fails as the checkpoint it is)."""
    return KeyHistory.from_handovers(trusted, [record.note for record in records if HANDOVER_MARKER in record.note])


def verify_database(engine: Engine, verifier: NoteVerifier, *, known_checkpoints: Sequence[str] = (),
                    deep: bool = True, check_node_cache: bool = True, check_columns: bool = True, workers: int = 1,
                    pool: Executor | None = None) -> VerifyResult:
    """Verify a live log. ``known_checkpoints``: signed notes seen earlier (e.g. kept by an officer).

    A fast verification of a large log goes in aligned chunks (:class:`_Chunks`): a task reads a chunk's
    entries with their query columns, checks them (:func:`check_rows`: index, leaf hash, index claimed, the
    columns against the text), hashes every complete subtree inside the chunk and has the database compare
    them with its node cache in one statement; the stream folds the chunks' roots in order and checks the
    checkpoints. ``workers`` > 1 runs the tasks in that many worker processes (this process then does next to
    nothing). Same checks, same first failure, same result as entry by entry. ``pool``: a process pool to use
    instead of starting one (it is left running), for callers that verify often. ``check_columns=False``
    leaves the columns out of a fast verification (about half its cost: ``bench/bench_audit.py`` shows both);
    a deep one always compares them.

    Raises :class:`~audit.errors.StoreUnavailable` if the database cannot be read (no verdict then).
    """
    try:
        known = _known(known_checkpoints)
    except _Failed as failed:
        return VerifyResult(0, 0, None, failed.failure)
    try:
        with _collector_paused():
            return _verify_database(engine, verifier, known, deep, check_node_cache, check_columns and not deep,
                                    workers, pool)
    except store.database_errors(engine.dialect) as exc:
        raise StoreUnavailable(f"audit log read failed during verification ({type(exc).__name__})") from exc


def _verify_database(engine: Engine, verifier: NoteVerifier, known: list[_CheckpointRecord], deep: bool,
                     check_node_cache: bool, columns: bool, workers: int, pool: Executor | None) -> VerifyResult:
    """``columns``: a fast verification reads and compares the query columns (a deep one compares them its own
    way, entry by entry)."""
    with store.read_connection(engine) as connection:
        try:
            stored = store.all_checkpoints(connection)
        except MalformedRow as exc:
            return VerifyResult(0, 0, None, Failure(FailureKind.CHECKPOINT, None, f"{exc}: {_EDITED}"))
        size = 0
        if not deep:
            try:
                size = store.tree_size(connection)
            except (ValueError, TypeError, OverflowError):
                # An index that is no number (SQLite keeps any value in any column), which only an edit outside
                # the gateway puts there: the deep pass reads row by row and says where, as without ``--fast``.
                deep, columns = True, False
        below = _below_the_first(store.lowest_index(connection))
        if below is not None:
            return VerifyResult(0, 0, None, below)
        try:
            rows = store.key_rows(connection)
        except MalformedRow as exc:
            return VerifyResult(0, 0, None, Failure(FailureKind.KEY, None, f"{exc}: {_EDITED}"))
    records = [_CheckpointRecord(c.tree_size, c.note, c.root_hash, "stored") for c in stored]
    try:
        keys = _key_history(verifier, records)
        check_key_rows(keys, rows)
    except VerificationError as exc:
        return VerifyResult(0, 0, None, Failure(FailureKind.KEY, None, str(exc)))
    checker = _NodeChecker(engine) if check_node_cache else None
    stream = _Stream(keys, records + known, deep, checker, columns_of=engine if columns else None)
    if deep:
        return _run(stream, _stored_records(engine), key_pinned=True)
    parallel = (workers > 1 or pool is not None) and _reachable_from_other_processes(engine)
    if parallel and size >= _PARALLEL_MIN_ENTRIES:
        chunks = _Chunks(engine.url.render_as_string(hide_password=False), size, stream, check_node_cache, columns)
        feed = partial(_feed_in_parallel, chunks, max(workers, 2), pool)
    elif size >= _CHUNKED_MIN_ENTRIES:
        feed = partial(_feed_chunks, _Chunks(engine, size, stream, check_node_cache, columns).inline())
    else:
        return _run(stream, store.leaf_batches(engine, with_columns=columns), key_pinned=True)
    # Entries appended meanwhile (and any range found short) are read entry by entry afterwards.
    return _run(stream, _rest(engine, stream, columns), key_pinned=True, feed=feed)


_EDITED = "the table was changed outside the gateway"


def _below_the_first(lowest: Any) -> Failure | None:
    """Step 1 for the rows before index 0 (``lowest``: :func:`audit.store.lowest_index`), which every other read
    of a verification starts after: a row there is no entry of the log's tree, yet searches find it."""
    try:
        if lowest is None or not lowest < 0:
            return None
    except TypeError:  # a value no index is (SQLite keeps any): the reads from index 0 report the row
        return None
    return Failure(FailureKind.GAP, min(int(lowest), -1),
                   f"a row holds index {lowest}, before the log's first entry (0): no entry of the tree, yet "
                   f"searches, statistics and look-ups find it: {_EDITED}")


def _stored_records(engine: Engine) -> Iterator[list[_EntryRecord]]:
    """The live entries for a deep verification, one record per batch; a row that holds a value no log row
    can hold (:class:`~audit.errors.MalformedRow`) is a ``columns`` failure at the first index not read —
    after the stream has checked every entry before it, so an earlier failure is still reported first."""
    try:
        for entry in store.iter_entries(engine):
            yield [(entry.index, entry.canonical, entry.leaf_hash, entry)]
    except MalformedRow as exc:
        raise _fail(FailureKind.COLUMNS, exc.index, f"{exc}: {_EDITED}") from None


_PARALLEL_CHUNK = 16_384
"""Entries per chunk, a power of two (a task of a verification in chunks: tens of milliseconds of work)."""
_PARALLEL_MIN_ENTRIES = 4 * _PARALLEL_CHUNK
"""Below this, starting worker processes costs more than they save."""
_CHUNKED_MIN_ENTRIES = _PARALLEL_CHUNK
"""Below this, one process verifies entry by entry (:meth:`_Stream.feed_leaves`) rather than in chunks."""


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a verification, then restore it as it was.

    The loop allocates millions of short-lived tuples and bytes and builds no reference cycles, so the
    collector has nothing to find, yet every 700 allocations it would scan the young objects and now and
    then the whole heap: measured, up to a third of a fast verification's time. Reference counting still
    frees everything as it goes; cycles made elsewhere meanwhile are collected once it runs again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _reachable_from_other_processes(engine: Engine) -> bool:
    """Whether worker processes can open the same database from its URL (not an in-memory SQLite)."""
    return engine.dialect.name != "sqlite" or engine.url.database not in (None, "", ":memory:")


def _rest(engine: Engine, stream: _Stream, columns: bool) -> Iterator[list[tuple[Any, ...]]]:
    """The entries from wherever the stream stands when this is first iterated (after the chunks)."""
    yield from store.leaf_batches(engine, start=stream.size, with_columns=columns)


@dataclass(frozen=True)
class _ChunkResult:
    """What a task found in its chunk ``[start, stop)``: everything the tree above the chunk, the checkpoints
    and the report of the first failure need, and not the leaves (a few hashes instead of 32 bytes a leaf)."""

    end: int
    """Entries ``[start, end)`` passed steps 1-3; ``end < stop`` if one failed (``failure``) or the rows ended."""
    failure: Failure | None
    tail: list[bytes]
    """The compact range of ``[start, end)``: for a whole chunk, its root alone."""
    nodes: dict[int, bytes]
    """The subtrees asked for (flat ids) that lie complete in ``[start, end)``: checkpoint frontiers, proofs."""
    mismatches: list[tuple[int, bool]]
    """``(flat id, missing)`` of cached subtrees in ``[start, end)`` that differ, in completion order."""


_worker_engines: dict[str, Engine] = {}


def _check_chunk(source: str | Engine, start: int, stop: int, wanted: Sequence[int],
                 check_nodes: bool, columns: bool) -> _ChunkResult:
    """Steps 1-4 (:func:`check_rows`, :func:`_confirm_columns`) over ``[start, stop)``, then every complete
    subtree in it, compared with the cache in bulk (:func:`audit.subtrees.cache_mismatches`). In a worker
    process (``source`` a URL) or inline (``source`` the engine)."""
    if isinstance(source, str):
        engine = _worker_engines.get(source)
        if engine is None:
            engine = _worker_engines[source] = create_engine(source, poolclass=NullPool)
    else:
        engine = source
    leaves, failure = _checked_leaves(engine, start, stop, columns)
    levels = subtree_levels(leaves)
    end = start + len(leaves)
    nodes = {node_id: value for node_id in wanted if (value := node_hash_in(levels, start, node_id)) is not None}
    tail = compact_hashes(levels, start)
    mismatches = cache_mismatches(engine, levels, start) if check_nodes else []
    return _ChunkResult(end, failure, tail, nodes, mismatches)


def _checked_leaves(engine: Engine, start: int, stop: int, columns: bool) -> tuple[list[bytes], Failure | None]:
    """:func:`check_rows` over the entries ``[start, stop)``: first read in stored order (a shortcut that only
    counts when it yields every entry, in order, all passing, their columns too), else by index, which names
    the first failure; then the entries whose columns were not vouched for, compared the deep way."""
    if engine.dialect.name == "sqlite" and stop > start:
        leaves, failure, unconfirmed = _check_batches(
            bulk_reads.entry_batches(engine, start, stop, stored_order=True, with_columns=columns), start, columns)
        if failure is None and not unconfirmed and len(leaves) == stop - start:
            return leaves, None
    leaves, failure, unconfirmed = _check_batches(
        bulk_reads.entry_batches(engine, start, stop, with_columns=columns), start, columns)
    return _confirm_columns(engine, start, leaves, failure, unconfirmed) if unconfirmed else (leaves, failure)


def _check_batches(batches: Generator[list[tuple[Any, ...]], None, None], start: int,
                   with_columns: bool) -> tuple[list[bytes], Failure | None, list[int]]:
    leaves: list[bytes] = []
    unconfirmed: list[int] = []
    columns = ColumnReader() if with_columns else None
    with closing(batches):  # an early return gives the read's connection back at once
        for batch in batches:
            checked, failure, unsure = check_rows(batch, start + len(leaves), columns)
            leaves.extend(checked)
            unconfirmed.extend(unsure)
            if failure is not None:
                return leaves, failure, unconfirmed
    return leaves, None, unconfirmed


class _Chunks:
    """A verification of ``[0, size)`` in aligned chunks of :data:`_PARALLEL_CHUNK` entries, each checked by
    :func:`_check_chunk` (in worker processes or inline), fed to the stream in order.

    The stream's checkpoints are known in advance, and so is every subtree inside a chunk that checking them
    needs (the frontier at each checkpoint, the subtrees of each consistency proof, assuming each checkpoint
    verifies: the first that does not ends the run): each task is asked for those of its chunk.
    """

    def __init__(self, source: str | Engine, size: int, stream: _Stream, check_nodes: bool, columns: bool) -> None:
        self.source, self.stream, self.check_nodes, self.columns = source, stream, check_nodes, columns
        self.chunk = _PARALLEL_CHUNK
        if self.chunk & (self.chunk - 1):
            raise ValueError("the chunk size must be a power of two")
        self.size = size
        self.wanted = _wanted_by_chunk(stream.checkpoints, self.chunk.bit_length() - 1)

    def ranges(self) -> Iterator[tuple[int, int]]:
        """The chunks ``[start, stop)`` up to the size, planned as they are read, never as one list: the size is
        the largest index stored, and one row inserted at a huge index (a BIGINT allows 2**63 - 1) made a list of
        chunks up to it fill the memory before anything was read. The run stops at the first chunk that comes
        back short (:func:`_feed_chunks`), and the entries after it name the gap."""
        return ((start, min(start + self.chunk, self.size)) for start in range(0, self.size, self.chunk))

    def task(self, start: int, stop: int) -> tuple[Callable[..., _ChunkResult], tuple[Any, ...]]:
        return _check_chunk, (self.source, start, stop, self.wanted.get(start // self.chunk, ()), self.check_nodes,
                              self.columns)

    def inline(self) -> Generator[tuple[int, int, _ChunkResult], None, None]:
        for start, stop in self.ranges():
            function, arguments = self.task(start, stop)
            yield start, stop, function(*arguments)

    def from_pool(self, pool: Executor, in_flight: int) -> Generator[tuple[int, int, _ChunkResult], None, None]:
        """Results in chunk order, ``in_flight`` tasks submitted ahead; the rest cancelled when closed early."""
        pending: deque[tuple[int, int, Future[_ChunkResult]]] = deque()
        upcoming = self.ranges()

        def submit(count: int) -> None:
            for start, stop in itertools.islice(upcoming, count):
                function, arguments = self.task(start, stop)
                pending.append((start, stop, pool.submit(function, *arguments)))

        try:
            submit(in_flight)
            while pending:
                start, stop, future = pending.popleft()
                result = future.result()
                submit(1)
                yield start, stop, result
        finally:
            for _, _, future in pending:
                future.cancel()


def _wanted_by_chunk(checkpoints: Sequence[_CheckpointRecord], chunk_level: int) -> dict[int, tuple[int, ...]]:
    """Flat ids of the subtrees, at most one chunk high, that the checkpoints' frontiers and the consistency
    proofs between consecutive checkpoints consist of, by the chunk they lie in."""
    wanted: set[int] = set()
    previous = 0
    for size in sorted({record.tree_size for record in checkpoints if record.tree_size > 0}):
        wanted.update(flat_index(node) for node in compact_range_nodes(size))
        for start, end in consistency_ranges(previous, size):
            if end > previous:
                wanted.update(flat_index(node) for node in subtree_nodes(start, end))
        previous = size
    by_chunk: dict[int, list[int]] = {}
    for node_id in sorted(wanted):
        level, index = node_at_flat_index(node_id)
        if level <= chunk_level:
            by_chunk.setdefault((index << level) >> chunk_level, []).append(node_id)
    return {chunk: tuple(ids) for chunk, ids in by_chunk.items()}


def _feed_chunks(chunks: Generator[tuple[int, int, _ChunkResult], None, None], stream: _Stream) -> None:
    """Feed checked chunks in order; stop at the first failure (raised) or at a chunk that came back short (a
    gap: the caller's pass entry by entry goes on from there and reports it exactly as it would have)."""
    known: dict[int, bytes] = {}
    level = _PARALLEL_CHUNK.bit_length() - 1
    with closing(chunks):
        for start, stop, result in chunks:
            stream.feed_chunk(start, level, result, known)
            if result.end != stop:
                return


def _feed_in_parallel(chunks: _Chunks, workers: int, pool: Executor | None, stream: _Stream) -> None:
    """:func:`_feed_chunks` from worker processes (``pool``, or a pool of ``workers`` started here)."""
    try:
        if pool is not None:
            _feed_chunks(chunks.from_pool(pool, 2 * workers), stream)
            return
        # Forking is much cheaper than spawning (no re-import), but only safe without other threads running.
        context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as own_pool:
            _feed_chunks(chunks.from_pool(own_pool, 2 * workers), stream)
    except BrokenExecutor:
        return  # workers could not run here: the sequential pass takes over where the stream stands


def verify_export(path: Path, *, verifier: NoteVerifier | None = None, known_checkpoints: Sequence[str] = (),
                  deep: bool = True) -> VerifyResult:
    """Verify an export file (see :mod:`audit.export`), streaming its entries.

    ``verifier``: the pinned log key, of any era: the file's checkpoints' key handovers must lead from it to the
    key the header names (:mod:`audit.keys`). Every entry must
    be covered by a checkpoint that verifies (``uncovered`` otherwise): an export made before exports ended
    with a checkpoint at their size, with entries after its last checkpoint, fails; export the log again.
    A malformed header or checkpoint line is a ``format`` failure, never an exception.
    """
    try:
        known = _known(known_checkpoints)
    except _Failed as failed:
        return VerifyResult(0, 0, None, failed.failure, key_pinned=verifier is not None)
    with _collector_paused():
        return _verify_export(path, verifier, known, deep)


def _verify_export(path: Path, verifier: NoteVerifier | None, known: list[_CheckpointRecord],
                   deep: bool) -> VerifyResult:
    with path.open("rb") as handle:
        lines = _bounded_lines(handle)
        try:
            header = _parse_header(next(lines, b""))
            file_verifier = NoteVerifier.from_vkey(header["verifier_key"])
            declared_size, checkpoint_count = _count(header, "tree_size"), _count(header, "checkpoint_count")
        except (ValueError, KeyError, TypeError, VerificationError) as exc:
            failure = Failure(FailureKind.FORMAT, None, f"export header is invalid ({exc})")
            return VerifyResult(0, 0, None, failure, key_pinned=verifier is not None)
        pinned = verifier is not None
        trusted = verifier or file_verifier
        try:
            checkpoints = [_parse_checkpoint(next(lines, b"")) for _ in range(checkpoint_count)]
        except (ValueError, KeyError, TypeError) as exc:
            failure = Failure(FailureKind.FORMAT, None, f"export checkpoint lines are invalid ({exc})")
            return VerifyResult(0, 0, None, failure, key_pinned=pinned)
        try:
            keys = _key_history(trusted, checkpoints)
        except VerificationError as exc:
            return VerifyResult(0, 0, None, Failure(FailureKind.KEY, None, str(exc)), key_pinned=pinned)
        if file_verifier.vkey != keys.current.vkey:
            failure = Failure(FailureKind.KEY, None, "the export names a different verifier key than the current "
                              "one of the key history the pinned key vouches for")
            return VerifyResult(0, 0, None, failure, key_pinned=pinned)
        stream = _Stream(keys, checkpoints + known, deep)
        batches = _export_entries(lines, declared_size)
        if deep:
            records = ([(index, canonical, leaf, None) for index, canonical, leaf in batch] for batch in batches)
            return _run(stream, records, key_pinned=pinned, require_covered=True)
        return _run(stream, batches, key_pinned=pinned, require_covered=True)


class _LineTooLong(ValueError):
    """A line of the export is longer than any export line can be (:data:`audit.export.MAX_LINE_BYTES`)."""


def _bounded_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The file's lines, each read with a bound: one longer than any export line is :class:`_LineTooLong`
    (a ValueError: a ``format`` verdict), raised after reading at most that many bytes of it."""
    while line := handle.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES:
            raise _LineTooLong(f"a line is longer than any export line can be ({MAX_LINE_BYTES} bytes)")
        yield line


def _json_line(line: bytes) -> Any:
    """One header or checkpoint line's JSON. Nesting too deep for the parser raises RecursionError, which is
    no ValueError: turned into one, it is a ``format`` verdict like any other malformed line, not a crash."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _parse_header(line: bytes) -> dict[str, Any]:
    header = _json_line(line)
    if (not isinstance(header, dict) or header.get("type") != "header" or header.get("format") != EXPORT_FORMAT
            or header.get("version") != EXPORT_VERSION):
        raise ValueError("not a wgs-audit-export version 1 file")
    if not isinstance(header.get("verifier_key"), str):
        raise ValueError("verifier_key must be a string")
    return header


def _count(header: dict[str, Any], name: str) -> int:
    """A count the header announces: a JSON integer, not negative (a string, float, bool or null is refused)."""
    value = header[name]
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _parse_checkpoint(line: bytes) -> _CheckpointRecord:
    item = _json_line(line)
    if not isinstance(item, dict) or item.get("type") != "checkpoint":
        raise ValueError("expected a checkpoint line")
    size, note = item["tree_size"], item["note"]
    if type(size) is not int or size < 0 or not isinstance(note, str):
        raise TypeError("checkpoint line has wrong types")
    return _CheckpointRecord(size, note, None, "exported")


_LINE_START = b'{"entry":'
_LINE_END = b'","type":"entry"}\n'
_HEX = b"0123456789abcdef"
_EXPORT_BATCH = 8192


def _entry_row(line: bytes) -> _Row | None:
    """An entry line split into (index, canonical bytes, leaf hash), or None if it is not one.

    Accepts exactly what :data:`audit.export.ENTRY_LINE` accepts. The usual line (ending in a newline) is
    cut apart with fixed offsets from its end, which is much cheaper than the backtracking pattern; any
    line that does not fit is left to the pattern.
    """
    length = len(line)
    if line.endswith(_LINE_END) and line.startswith(_LINE_START) and length > 96 + len(_LINE_START):
        digest = line[length - 82:length - 18]
        position = line.rfind(b',"index":', 0, length - 96)
        digits = line[position + 9:length - 96]
        if (line[length - 96:length - 82] == b',"leaf_hash":"' and not digest.translate(None, _HEX)
                and position >= len(_LINE_START) and digits.isdigit() and (digits[0] != 0x30 or digits == b"0")
                and line.find(b"\n") == length - 1):  # the pattern's "." does not match a newline
            return int(digits), line[len(_LINE_START):position], bytes.fromhex(digest.decode("ascii"))
    match = ENTRY_LINE.match(line)
    if match is None:
        return None
    return int(match.group(2)), match.group(1), bytes.fromhex(match.group(3).decode("ascii"))


def _export_entries(lines: Iterator[bytes], declared: int) -> Iterator[list[_Row]]:
    """Entry rows in batches; a malformed line ends the stream with a failure after the rows before it."""
    position, batch = 0, list[_Row]()
    while True:
        try:
            line = next(lines)
        except StopIteration:
            break
        except _LineTooLong as exc:  # after the rows before it, as any malformed line
            yield batch
            raise _fail(FailureKind.FORMAT, position, f"export line for entry {position} is invalid ({exc})") \
                from None
        try:
            row = _entry_row(line)
        except ValueError:  # an index of more digits than Python converts (int_max_str_digits): no log's
            yield batch
            raise _fail(FailureKind.FORMAT, position, f"export line for entry {position} holds an index of more "
                        "digits than any log has") from None
        if row is None:
            if not line.strip():
                continue
            yield batch
            raise _fail(FailureKind.FORMAT, position, f"export line for entry {position} is not an entry line "
                        "in the exact export form (was the file reformatted?)")
        batch.append(row)
        position += 1
        if len(batch) >= _EXPORT_BATCH:
            yield batch
            batch = []
    yield batch
    if position < declared:
        raise _fail(FailureKind.TRUNCATED, position,
                    f"the export header announces {declared} entries but the file holds {position}")
    if position > declared:
        raise _fail(FailureKind.FORMAT, declared,
                    f"the export header announces {declared} entries but the file holds {position}")
