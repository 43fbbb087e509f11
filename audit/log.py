"""The audit log service: append events, issue signed checkpoints, serve proofs.

``AuditLog`` is synchronous and owns no connection between calls; it is safe to use from several
threads and several processes at once, because every append runs in one transaction under the store's
append lock (see :mod:`audit.store`). An append writes, in that single transaction:

1. the entries, with consecutive indices following the current tree size;
2. every complete subtree their leaves complete (computed from the O(log n) "right frontier");
3. a signed checkpoint, when the :class:`CheckpointPolicy` says one is due.

No checkpoint is signed over a tree that does not extend the latest one the log's key signed (a consistency
proof from the store, checked against both roots): the root comes from the cached subtrees, and a cache
rebuilt over rewritten entries would otherwise have the log's own key vouch for the forgery
(:meth:`AuditLog._check_extends`). Nor over one that does not extend the last checkpoint this process signed or
verified (its in-memory anchor), which deleting the stored checkpoints cannot take away.

Receipts are returned only after the commit: a caller that got a receipt has a durable entry, and a
caller that got an exception must deny its request (fail closed). Proofs and roots are computed from
cached complete subtrees with a couple of indexed reads, whatever the size of the log.
For many concurrent callers use :class:`audit.writer.AsyncAuditWriter`, which batches them into
shared transactions (group commit).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import NamedTuple
from uuid import UUID, SafeUUID

from sqlalchemy import Connection, Engine

from audit import store
from audit.canonical import canonical_event, entry_texts, format_timestamp
from audit.checkpoint import Checkpoint, NoteSigner, NoteVerifier, SignedNote, sign_checkpoint
from audit.errors import (
    AuditError,
    AuditWriteError,
    CheckpointPending,
    MalformedRow,
    ProofUnavailable,
    StoreUnavailable,
    VerificationError,
)
from audit.events import AuditEvent
from audit.guard import ensure_no_personal_data
from audit.keys import Handover, KeyHistory, stored_history
from audit.merkle import (
    CompactRange,
    compact_range_nodes,
    consistency_ranges,
    fold_range,
    inclusion_ranges,
    leaf_hashes_of_texts,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)
from audit.store import StoredCheckpoint, StoredEntry

_log = logging.getLogger(__name__)

_ANCHOR_PAGE = 8
"""Checkpoint notes read at a time while looking for the latest one that verifies (usually the first does)."""

Clock = Callable[[], datetime]
"""Where the log gets the time: a callable returning an aware datetime (inject a fixed one in tests)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to sign a new checkpoint: after ``every_entries`` new entries or ``every_seconds`` seconds.

    Either limit can be ``None`` (off). A checkpoint is only ever issued over entries no checkpoint
    covers yet, and the first entry of a log always gets one, so the log is anchored from the start.
    The time limit is applied on appends and whenever :meth:`AuditLog.maybe_issue_checkpoint` runs (the
    async writer calls it while idle), so a quiet log is still checkpointed.
    """

    every_entries: int | None = 1000
    every_seconds: float | None = 60.0

    def __post_init__(self) -> None:
        if self.every_entries is not None and self.every_entries < 1:
            raise ValueError("every_entries must be at least 1")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise ValueError("every_seconds must be positive")

    def due(self, state: store.LogState, now: datetime, *, size: int | None = None) -> bool:
        """Whether a checkpoint is due for a log in ``state`` (of ``size`` entries, if it just grew)."""
        size = state.size if size is None else size
        if state.latest_checkpoint_size is None or state.latest_checkpoint_at is None:
            return size > 0
        if size <= state.latest_checkpoint_size:
            return False
        if self.every_entries is not None and size - state.latest_checkpoint_size >= self.every_entries:
            return True
        return (self.every_seconds is not None
                and now - state.latest_checkpoint_at >= timedelta(seconds=self.every_seconds))


@dataclass(frozen=True)
class Receipt:
    """Proof of durable logging handed to the caller: where the entry is and what it hashes to.

    ``tree_size`` is the size right after the transaction that wrote it; an inclusion proof against
    any checkpoint of at least ``index + 1`` entries can be fetched later.
    """

    index: int
    entry_id: UUID
    leaf_hash: bytes
    tree_size: int


class PreparedEvent(NamedTuple):
    """An event that passed the personal-data guard, with its canonical text and query columns fixed.

    A named tuple: one is built per event on the caller's event loop, where a frozen dataclass's
    ``__init__`` costs more than the tuple.
    """

    event: AuditEvent
    event_bytes: bytes
    column_values: tuple[str | int | None, ...]
    """The query columns' values in :data:`audit.store.QUERY_COLUMNS` order (computed here, outside the lock)."""
    event_text: str
    """``event_bytes`` as text, as the envelope splices it in."""

    @property
    def columns(self) -> dict[str, str | int | None]:
        return dict(zip(store.QUERY_COLUMNS, self.column_values, strict=True))


def prepare(event: AuditEvent) -> PreparedEvent:
    """Guard and canonicalise one event outside the append lock (the expensive, parallelisable part).

    Raises :class:`~audit.errors.PersonalDataError` or :class:`~audit.errors.InvalidEvent`.
    """
    event_text, event_bytes = canonical_event(event)
    ensure_no_personal_data(event, event_bytes)
    return PreparedEvent(event, event_bytes, store.query_column_values(event), event_text)


_UUID7_BITS = (0x7 << 76) | (0b10 << 62)
"""The version (7) and variant (RFC 9562) bits of a UUIDv7."""
_UUID7_RANDOM = (0xFFF << 64) | ((1 << 62) - 1)
"""The random bits of a UUIDv7: ``rand_a`` (12 bits) and ``rand_b`` (62 bits)."""


def uuid7_ints(count: int, moment: datetime) -> list[int]:
    """``count`` UUIDv7 entry ids (RFC 9562) as 128-bit integers, from a single read of the OS's randomness.

    48 bits of Unix milliseconds, the version and variant bits, 74 random bits. One ``os.urandom`` per
    batch instead of one per id: each such call releases the GIL, and on a busy event loop every release
    can cost the writer thread a scheduler switch.
    """
    top = ((int(moment.timestamp() * 1000) & ((1 << 48) - 1)) << 80) | _UUID7_BITS
    randomness = os.urandom(16 * count)
    from_bytes = int.from_bytes
    return [top | (from_bytes(randomness[offset:offset + 16], "big") & _UUID7_RANDOM)
            for offset in range(0, 16 * count, 16)]


def uuid7s(count: int, moment: datetime) -> list[UUID]:
    """:func:`uuid7_ints` as :class:`~uuid.UUID` objects."""
    return [_uuid(value) for value in uuid7_ints(count, moment)]


def _uuid_unchecked(value: int) -> UUID:
    # What UUID(int=value) does once it has checked the range and version, which uuid7_ints guarantees:
    # about a third of its cost, for one object per entry on the writer thread.
    made = object.__new__(UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", SafeUUID.unknown)
    return made


def _uuid_checked(value: int) -> UUID:
    return UUID(int=value)


def _pick_uuid() -> Callable[[int], UUID]:
    """The shortcut only where it makes exactly what ``UUID(int=...)`` makes (the slots are CPython's)."""
    sample = 0x01937B6E_0000_7000_8000_000000000001
    try:
        made = _uuid_unchecked(sample)
        same = made == UUID(int=sample) and str(made) == str(UUID(int=sample)) and made.is_safe is SafeUUID.unknown
    except (AttributeError, TypeError):  # pragma: no cover - another Python's UUID
        same = False
    return _uuid_unchecked if same else _uuid_checked


_uuid = _pick_uuid()


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof of the leaf at ``index`` in the tree of ``tree_size`` leaves."""

    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]

    def verify(self, root_hash: bytes) -> None:
        """Raise :class:`~audit.errors.VerificationError` unless the proof leads to ``root_hash``."""
        verify_inclusion(self.index, self.tree_size, self.leaf_hash, self.hashes, root_hash)


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 consistency proof that the tree of ``second`` leaves extends the tree of ``first``."""

    first: int
    second: int
    hashes: tuple[bytes, ...]

    def verify(self, first_root: bytes, second_root: bytes) -> None:
        verify_consistency(self.first, self.second, first_root, second_root, self.hashes)


def _entry_batch(start: int, now: datetime, prepared: Sequence[PreparedEvent]) -> store.EntryBatch:
    """The entries of one append: ids, envelopes and leaf hashes, each column in one tight loop."""
    id_values = uuid7_ints(len(prepared), now)
    hexes = [f"{value:032x}" for value in id_values]  # UUID.hex, without the UUID
    texts = entry_texts(start, hexes, format_timestamp(now), [item.event_text for item in prepared])
    return store.EntryBatch(start, now, [_uuid(value) for value in id_values], hexes, texts,
                            leaf_hashes_of_texts(texts), [item.column_values for item in prepared])


class AuditLog:
    """Append-only, tamper-evident log over an SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, signer: NoteSigner, *, policy: CheckpointPolicy | None = None,
                 clock: Clock = utc_now, signer_source: Callable[[], NoteSigner | None] | None = None) -> None:
        self._engine = engine
        self._signer = signer
        # Where a long-running process gets the current key after another one rotated it (None: nowhere, so it
        # refuses to sign with the retired one), and the key history as last read (:meth:`_history`).
        self._signer_source = signer_source
        self._keys = KeyHistory(signer.verifier)
        self._keys_marker: tuple[tuple[int, str, str, int | None], ...] = ()
        self.policy = policy or CheckpointPolicy()
        self._clock = clock
        # The right frontier after this process's last commit. Reused when the size read under the
        # append lock shows nobody else appended since; another process appending just means a re-read.
        self._frontier_cache: CompactRange | None = None
        self._cache_lock = threading.Lock()
        self._refused: str | None = None
        # The last checkpoint note this process signed or verified, with what it states: the same text under the
        # same key verifies the same way, so the fork check skips the signature check for it (most of its cost).
        self._known_note: tuple[str, Checkpoint] | None = None
        # The newest checkpoint this process signed (committed) or verified as the log's: every tree it signs
        # must extend it too, whatever the checkpoint table holds by then (:meth:`_check_extends`).
        self._anchor: Checkpoint | None = None
        # Checkpoint rows above the log's size that were found not to be the log's word, with the key history they
        # were checked under (:meth:`_checked_state`): while they stay the same, appends verify no signature.
        self._passed_over: tuple[str, tuple[tuple[int, str, str, int | None], ...]] | None = None
        self._passed_over_reported: frozenset[tuple[int, str]] = frozenset()
        self._rows = store.RowWriter(engine.dialect)
        self._held = threading.local()  # a thread's connection kept across its appends (holding_connection)
        self._database_errors = store.database_errors(engine.dialect)

    @contextmanager
    def holding_connection(self) -> Iterator[None]:
        """Within the block, the calling thread's appends keep one SQLite connection instead of taking one from
        the pool and returning it for every transaction (elsewhere, and on PostgreSQL, nothing changes).

        Why: the audit writer's thread commits every request's entries, one transaction after another, and each
        request waits for its commit. Taking the connection from the pool and giving it back (SQLAlchemy's
        checkout, reset and checkin) cost that thread 0.1-0.15 ms of each transaction in the gateway process,
        against 0.3-0.4 ms for the rest of its fixed work. Kept, the connection also keeps its page cache. After a
        database error it goes back to the pool (which resets or discards it, as it would have anyway) and the
        next append takes another; a refused companion or any other failure rolls its transaction back and
        leaves the connection as clean as a returned one. After ``engine.dispose()`` the next append takes a new
        connection, as it would from the new pool. Not on PostgreSQL, where a kept connection would meet a
        restarted server on the next request, which the pool's pre-ping catches instead."""
        if self._engine.dialect.name != "sqlite":
            yield
            return
        self._held.active, self._held.connection = True, None
        try:
            yield
        finally:
            connection = self._held.connection
            self._held.active, self._held.connection = False, None
            if connection is not None:
                connection.close()

    def _held_connection(self) -> Connection | None:
        """The calling thread's kept connection (opened now if it has none yet), or None outside
        :meth:`holding_connection`."""
        if not getattr(self._held, "active", False):
            return None
        connection: Connection | None = self._held.connection
        if connection is not None and self._held.pool is not self._engine.pool:
            # The engine was disposed: its pool's connections are not used again, nor is the kept one.
            self._held.connection = None
            connection.close()
            connection = None
        if connection is None:
            connection = self._held.connection = self._engine.connect()
            self._held.pool = self._engine.pool
        return connection

    def _drop_held(self) -> None:
        """After a database error: the kept connection goes back to the pool, which resets it or discards it."""
        connection: Connection | None = getattr(self._held, "connection", None)
        if connection is not None:
            self._held.connection = None
            connection.close()

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with store.read_connection(self._engine) as connection:
                yield connection
        except self._database_errors as exc:
            raise StoreUnavailable(f"audit log read failed ({type(exc).__name__})") from exc

    @property
    def origin(self) -> str:
        """The log's identity: the first line of its checkpoints, and the name of its signing key."""
        return self._signer.name

    @property
    def engine(self) -> Engine:
        """The database the log lives in, for readers that stream it (export, verification)."""
        return self._engine

    @property
    def verifier(self) -> NoteVerifier:
        """The public side of the checkpoint key, for verifiers and exports."""
        return self._signer.verifier

    @property
    def signing_refused(self) -> str | None:
        """Why this process last refused to sign a checkpoint (its tree forks from the latest signed one, or from
        the one it signed or verified itself), until it signs one again; ``None`` when it has not. For readiness
        probes: every append that is due a checkpoint fails meanwhile. The reason states sizes only."""
        return self._refused

    @property
    def anchor(self) -> Checkpoint | None:
        """The newest checkpoint this process signed or verified as the log's (``None`` before the first): what
        every tree it signs must extend besides the latest stored one."""
        return self._anchor

    def adopt_latest_checkpoint(self) -> Checkpoint | None:
        """Take the newest stored checkpoint the log's key signed as this process's anchor (call at start-up).

        Why: until this process signs or checks a checkpoint, its anchor is empty, and a checkpoint table emptied
        behind its back (with entries rewritten) would leave it nothing to check a tree against. Anchored at
        start-up, it refuses from then on. What it cannot do is tell a log whose checkpoints were deleted before
        it started from one that never had any: with entries but no checkpoint its key signed, it logs a
        warning (sizes only) and signs the tree it finds; only the verifier, with an officer's saved checkpoint,
        can say whether that tree is the one signed before. :class:`~audit.errors.StoreUnavailable` when the
        log cannot be read."""
        with self._reading() as connection:
            self._history(connection)
            latest = self._latest_signed(connection)
            size = store.tree_size(connection)
        if latest is not None:
            self._remember_anchor(latest)
        elif size > 0:
            _log.warning("the audit log has %d entries but no checkpoint signed by its key: its tree is checked "
                         "against nothing until this process signs one; run the verifier with a saved checkpoint",
                         size)
        return latest

    def _remember_anchor(self, checkpoint: Checkpoint) -> None:
        """Keep the larger anchor: a signed history only grows, and the newer one's consistency covers the older."""
        with self._cache_lock:
            if self._anchor is None or self._anchor.tree_size < checkpoint.tree_size:
                self._anchor = checkpoint

    def _now(self) -> datetime:
        moment = self._clock()
        if moment.tzinfo is None:
            raise AuditError("the audit clock must return timezone-aware datetimes")
        return moment.astimezone(UTC)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, events: Sequence[AuditEvent]) -> list[Receipt]:
        """Guard, canonicalise and durably append events in one transaction; receipts in event order.

        Raises :class:`~audit.errors.PersonalDataError` / :class:`~audit.errors.InvalidEvent` before
        anything is written, or :class:`~audit.errors.AuditWriteError` when the database write failed.
        """
        return self.append_prepared([prepare(event) for event in events])

    def append_prepared(self, prepared: Sequence[PreparedEvent],
                        within: Callable[[Connection, list[Receipt]], None] | None = None, *,
                        admit: Callable[[Connection], Sequence[PreparedEvent]] | None = None) -> list[Receipt]:
        """Append events already passed through :func:`prepare` (the async writer's batch path).

        ``within(connection, receipts)`` runs inside the same transaction after the entries are written:
        rows of other tables that must become durable with these entries (and only with them) go there,
        and cost no commit of their own. If it raises, nothing of the transaction is written.

        ``admit(connection)``, if given, runs first in the transaction (under the append lock, before any entry
        is written) and returns the events to append instead of ``prepared``: some of them, in their order. So a
        batch can leave out a caller whose preconditions refuse without rolling back the others' work (the async
        writer's companions); none left, and nothing is written (``within`` does not run)."""
        if not prepared:
            return []
        try:
            with store.append_transaction(self._engine, self._held_connection()) as transaction:
                if admit is not None and not (prepared := admit(transaction.connection)):
                    return []
                receipts, frontier, signed = self._append_locked(transaction, prepared)
                if within is not None:
                    within(transaction.connection, receipts)
        except self._database_errors as exc:
            self._drop_held()
            raise AuditWriteError(f"audit log write failed ({type(exc).__name__})") from exc
        self._remember_frontier(frontier)  # only once committed
        self._remember_signed(signed)
        return receipts

    def _append_locked(self, transaction: store.AppendTransaction, prepared: Sequence[PreparedEvent],
                       ) -> tuple[list[Receipt], CompactRange, StoredCheckpoint | None]:
        # Under the lock: one read (size and latest checkpoint, done by append_transaction), the frontier
        # from memory when this process wrote last, and two multi-row INSERTs (entries, completed subtrees).
        connection = transaction.connection
        state = self._checked_state(connection, transaction.state)
        frontier = self._cached_frontier(connection, state.size)
        now = self._now()
        batch = _entry_batch(state.size, now, prepared)
        new_nodes = frontier.extend(batch.leaf_hashes)
        new_size = frontier.size
        self._rows.insert_append(connection, batch, new_nodes)  # first: the fork check reads the new subtrees
        signed = None
        if self.policy.due(state, now, size=new_size):
            signed = self._signed(connection, new_size, frontier.root(), now)
            self._rows.insert_checkpoint(connection, signed)
        return [Receipt(index, entry_id, leaf, new_size)
                for index, entry_id, leaf in zip(count(batch.start), batch.entry_ids, batch.leaf_hashes)
                ], frontier, signed

    def _cached_frontier(self, connection: Connection, size: int) -> CompactRange:
        """The frontier at ``size`` (read under the append lock) for a write: from memory when this process
        wrote last. :class:`~audit.errors.AuditWriteError` when this process wrote more entries than the log now
        has: an append-only log never shrinks, so it was rolled back (a backup put back under a running gateway,
        entries deleted), and writing on would sign sizes again over other entries, a fork."""
        with self._cache_lock:
            cached = self._frontier_cache
        if cached is not None and cached.size == size:
            return cached.copy()
        if cached is not None and cached.size > size:
            raise AuditWriteError(f"the audit log has {size} entries, fewer than the {cached.size} this process "
                                  "wrote: it was rolled back; run the verifier (and restart once it is resolved)")
        return self._frontier(connection, size)

    def _remember_frontier(self, frontier: CompactRange) -> None:
        with self._cache_lock:
            if self._frontier_cache is None or self._frontier_cache.size < frontier.size:
                self._frontier_cache = frontier

    def _frontier(self, connection: Connection, size: int) -> CompactRange:
        nodes = compact_range_nodes(size)
        found = store.fetch_nodes(connection, nodes)
        missing = [node for node in nodes if node not in found]
        if missing:
            raise AuditWriteError(f"audit tree cache is missing frontier nodes {missing}; run the verifier")
        return CompactRange(size, [found[node] for node in nodes])

    def _remember_signed(self, signed: StoredCheckpoint | None) -> None:
        """Anchor this process to a checkpoint it signed, once the transaction that stored it has committed: a
        signature whose transaction rolled back covers entries that were never written, which the next tree need
        not (and will not) extend."""
        if signed is not None:
            self._remember_anchor(Checkpoint(self.origin, signed.tree_size, signed.root_hash))

    def _signed(self, connection: Connection, size: int, root: bytes, now: datetime) -> StoredCheckpoint:
        """Sign ``root`` at ``size``, under the append lock, once :meth:`_check_extends` has passed. The caller
        passes what it stored to :meth:`_remember_signed` after the commit."""
        self._signing_history(connection)
        self._check_extends(connection, size, root)
        checkpoint = Checkpoint(self.origin, size, root)
        note = sign_checkpoint(checkpoint, self._signer)
        self._known_note = (note, checkpoint)
        return StoredCheckpoint(size, root, note, now)

    def _check_extends(self, connection: Connection, size: int, root: bytes) -> None:
        """:class:`~audit.errors.AuditWriteError` unless the tree of ``size`` entries with ``root`` extends both the
        latest stored checkpoint signed by the log's key (:meth:`_latest_signed`) and this process's anchor (the
        newest checkpoint it signed or verified itself).

        Why: ``root`` comes from the cached subtrees (from memory only in the process that wrote last). Entries
        rewritten behind the log's back with the cache rebuilt over them give every other process a forged
        root, and signing it would put the log's own key under a fork: once the older checkpoints are gone,
        only an officer's saved one would still show it. The consistency proof is computed from the store as
        the proof endpoint computes it, and checked against the signed root and the new one (RFC 9162
        §2.1.4.2): it only verifies if the new tree's first ``anchor`` leaves hash to the signed root. A proof
        that cannot be computed (a cached subtree missing) refuses as well: nothing is signed unchecked.
        The stored checkpoint alone is not enough: whoever can rewrite entries can delete the checkpoint rows as
        well, leaving nothing to check against; what this process signed or verified stays in its memory.
        A few reads per checkpoint (one page of notes, one of subtrees per distinct anchor), none per append."""
        stored = self._latest_signed(connection)
        own = self._anchor
        anchors = [(stored, "the checkpoint signed")] if stored is not None else []
        if own is not None and (stored is None or (own.tree_size, own.root_hash) != (stored.tree_size,
                                                                                     stored.root_hash)):
            anchors.append((own, "the checkpoint this process signed or verified"))
        for anchor, which in anchors:
            self._check_extends_one(connection, size, root, anchor, which)
        if stored is not None:  # verified, and the tree about to be signed extends it and the older anchor
            self._remember_anchor(stored)
        self._refused = None

    def _check_extends_one(self, connection: Connection, size: int, root: bytes, anchor: Checkpoint,
                           which: str) -> None:
        try:
            if anchor.tree_size > size:
                raise VerificationError(f"the tree has {size} entries, fewer than the {anchor.tree_size} signed")
            proof = ConsistencyProof(anchor.tree_size, size,
                                     _consistency_hashes(connection, anchor.tree_size, size))
            proof.verify(anchor.root_hash, root)
        except (VerificationError, ProofUnavailable) as exc:
            reason = (f"the audit tree does not extend {which} at {anchor.tree_size} entries: "
                      "nothing was signed; run the verifier")
            if reason != self._refused:  # once per fork and process, not on every due append or idle second
                _log.error("audit checkpoint refused: the tree of %d entries (root %s) does not extend %s at %d "
                           "entries (root %s): %s", size, root.hex(), which, anchor.tree_size,
                           anchor.root_hash.hex(), exc)
            self._refused = reason
            raise AuditWriteError(reason) from exc

    def _latest_signed(self, connection: Connection) -> Checkpoint | None:
        """What the newest stored checkpoint whose note verifies under the log's key history and origin signed, or
        ``None`` when no stored note does. A row whose note does not verify (a forged or garbled one, planted
        behind the log's back) is not the log's word and is passed over; the verifier and the served-checkpoint
        check are what report it. So is one signed only by a leaked key after its compromise point
        (:meth:`audit.keys.KeyHistory.distrusted`): the thief's checkpoint over a wrong root would otherwise stop
        every signature for good."""
        offset = 0
        while True:
            notes = store.checkpoint_notes_page(connection, offset, _ANCHOR_PAGE)
            for note in notes:
                known = self._known_note
                if known is not None and known[0] == note:
                    return known[1]
                opened = self._log_word(self._keys, note)
                if opened is not None:
                    self._known_note = (note, opened)
                    return opened
            if len(notes) < _ANCHOR_PAGE:
                return None
            offset += len(notes)

    def _log_word(self, keys: KeyHistory, note: str) -> Checkpoint | None:
        """What ``note`` states if it is validly signed (:meth:`KeyHistory.open` under ``keys``, this log's origin,
        not resting on a leaked key's signature after its compromise point); ``None`` otherwise."""
        try:
            opened = keys.open(note, origin=self.origin)
        except VerificationError:
            return None
        return None if keys.distrusted(opened.tree_size) else opened

    def _checked_state(self, connection: Connection, state: store.LogState) -> store.LogState:
        """``state`` (read under the append lock) once the log is known not to be rolled back, with the checkpoint
        rows above its size that are not the log's word passed over (as if they were not there, also for the
        checkpoint policy); :class:`~audit.errors.AuditWriteError` when one above its size is validly signed.

        Why: a log with fewer entries than a checkpoint its key signed was rolled back (entries deleted behind its
        back, a restore that put back the checkpoints but not all entries), and appending there writes a second
        entry at an index a signature covers, reported durable though no verification can accept it; signing
        there forks from what the key signed. But the largest stored size alone is no evidence: a row needs no key
        to be inserted, and one planted above the log's size (forged or garbled) would stop every append for good.
        Only a row whose note verifies under the log's key history (the fork guard's "validly signed",
        :meth:`_log_word`) counts; the others are reported once (sizes only) and passed over.

        Cost: nothing in a sound log (no row above its size: the state read says so). With rows above it, two
        indexed reads per append, and their signatures checked only when those rows (or the key history this
        process knows) change: the verdict on the same rows under the same keys is the same."""
        if state.latest_checkpoint_size is None or state.size >= state.latest_checkpoint_size:
            return state
        rows = store.checkpoint_rows_above(connection, state.size)
        digest = hashlib.sha256("\n".join(f"{size}\t{note}" for size, note in rows).encode()).hexdigest()
        with self._cache_lock:
            known = self._passed_over == (digest, self._keys_marker)
        if not known:
            try:
                keys = self._history(connection)
            except (VerificationError, MalformedRow) as exc:
                raise AuditWriteError(f"the checkpoint key history does not verify ({exc}): nothing was written; "
                                      "run the verifier") from exc
            for _, note in rows:
                opened = self._log_word(keys, note)
                if opened is not None and opened.tree_size > state.size:
                    raise AuditWriteError(f"the audit log has {state.size} entries but its latest checkpoint signed "
                                          f"{opened.tree_size}: it was rolled back; run the verifier")
            self._report_passed_over(rows, state.size)
            with self._cache_lock:
                self._passed_over = (digest, self._keys_marker)
        return store.state_up_to(connection, state.size)

    def _report_passed_over(self, rows: Sequence[tuple[int, str]], size: int) -> None:
        """One error line for rows above the log's size not seen before in this process: sizes only (a note may
        hold anything)."""
        seen = frozenset((row_size, hashlib.sha256(note.encode()).hexdigest()) for row_size, note in rows)
        with self._cache_lock:
            new = seen - self._passed_over_reported
            self._passed_over_reported = seen
        if new:
            _log.error("audit checkpoint rows above the log's %d entries do not verify under its key history and are "
                       "passed over: %d row(s), the largest at size %d; someone wrote them behind the log's back: "
                       "run the verifier", size, len(new), max(row_size for row_size, _ in new))

    # -- the checkpoint key ------------------------------------------------------------------------

    def _history(self, connection: Connection) -> KeyHistory:
        """The key history in the database (:func:`audit.keys.stored_history`), read again only when its rows
        changed (one small read). :class:`~audit.errors.VerificationError` when the rows and the handover
        checkpoints disagree, or a handover's signatures fail."""
        rows = store.key_rows(connection)
        marker = tuple((row.from_size, row.verifier_key, row.previous_key, row.compromised_after) for row in rows)
        with self._cache_lock:
            if marker == self._keys_marker:
                return self._keys
        history = stored_history(connection, self._signer.verifier)
        with self._cache_lock:
            self._keys, self._keys_marker = history, marker
            self._known_note = None  # verified under the history before: checked again under this one
        return history

    def _signing_history(self, connection: Connection) -> KeyHistory:
        """The history, under the append lock, once this process holds its current key: after a rotation by
        another process it takes the new key from ``signer_source``; without one (or if that holds another
        key) :class:`~audit.errors.AuditWriteError`: a retired key signing on would make checkpoints that
        every verifier refuses (its era has ended)."""
        try:
            history = self._history(connection)
        except (VerificationError, MalformedRow) as exc:
            raise AuditWriteError(f"the checkpoint key history does not verify ({exc}): nothing was signed; "
                                  "run the verifier") from exc
        if history.current.key_id != self._signer.verifier.key_id:
            fresh = self._signer_source() if self._signer_source is not None else None
            if fresh is None or fresh.verifier.vkey != history.current.vkey:
                raise AuditWriteError(f"the checkpoint key was rotated to {history.current.key_id.hex()}: this "
                                      "process holds a retired key and signs nothing; restart it")
            self._signer = fresh
        return history

    def _check_extends_under(self, pending: KeyHistory, connection: Connection, size: int, root: bytes) -> None:
        """:meth:`_check_extends` with the rotation's own history: after a leak, the thief's checkpoints above the
        compromise point must not be what the handover is checked against (they may be what stopped signing)."""
        with self._cache_lock:
            kept, self._keys, self._known_note = (self._keys, self._known_note), pending, None
        try:
            self._check_extends(connection, size, root)
        finally:
            with self._cache_lock:
                self._keys, self._known_note = kept

    def key_history(self) -> KeyHistory:
        """The log's checkpoint keys and their eras, as the database holds them (verified)."""
        with self._reading() as connection:
            return self._history(connection)

    def key_rows(self) -> list[store.KeyRow]:
        """The rotations as stored (with their times), for display; :meth:`key_history` is what verified them."""
        with self._reading() as connection:
            return store.key_rows(connection)

    def rotate_key(self, new_signer: NoteSigner, event: PreparedEvent, *,
                   compromised_after: int | None = None) -> StoredCheckpoint:
        """Hand the log over to ``new_signer``'s key: append ``event`` (the rotation's own entry) and sign the
        handover checkpoint over the tree that includes it with the current key and the new one, with the key
        row, in one transaction (:mod:`audit.keys`). From then on this log signs with the new key only.

        ``compromised_after``: the current key leaked; its signatures on checkpoints above that size are not
        trusted (at most the current size). :class:`~audit.errors.AuditWriteError` when nothing was written:
        the database failed, the tree forks from a signed checkpoint, or this process does not hold the current
        key (another rotation came first)."""
        if new_signer.name != self.origin or new_signer.verifier.key_id == self._signer.verifier.key_id:
            raise ValueError("the new checkpoint key must be another key under the log's origin")
        try:
            with store.append_transaction(self._engine) as transaction:
                connection = transaction.connection
                state = self._checked_state(connection, transaction.state)
                history = self._signing_history(connection)
                if compromised_after is not None and not 0 <= compromised_after <= state.size:
                    raise ValueError(f"the compromise point must be a size of the log (0..{state.size})")
                frontier = self._cached_frontier(connection, state.size)
                now = self._now()
                batch = _entry_batch(state.size, now, [event])
                new_nodes = frontier.extend(batch.leaf_hashes)
                self._rows.insert_append(connection, batch, new_nodes)
                size, root = frontier.size, frontier.root()
                handover = Handover(size, self._signer.verifier, new_signer.verifier, compromised_after)
                pending = KeyHistory(history.eras[0].verifier, (*history.handovers, handover))
                self._check_extends_under(pending, connection, size, root)
                text = Checkpoint(self.origin, size, root, (handover.line(),)).body()
                note = SignedNote(text, (self._signer.sign(text), new_signer.sign(text))).format()
                signed = StoredCheckpoint(size, root, note, now)
                self._rows.insert_checkpoint(connection, signed)
                row = store.KeyRow(size, new_signer.verifier.vkey, self._signer.verifier.vkey, compromised_after, now)
                store.insert_key_row(connection, row)
        except self._database_errors as exc:
            raise AuditWriteError(f"audit key rotation failed ({type(exc).__name__})") from exc
        self._remember_frontier(frontier)
        with self._cache_lock:
            self._signer = new_signer
            self._keys, self._known_note = pending, None
            self._keys_marker = (*self._keys_marker, (row.from_size, row.verifier_key, row.previous_key,
                                                      row.compromised_after))
        self._remember_signed(signed)
        return signed

    def issue_checkpoint(self) -> StoredCheckpoint:
        """Sign the current tree now (or return the checkpoint that already covers exactly this size)."""
        checkpoint = self._checkpoint_now(force=True)
        if checkpoint is None:  # pragma: no cover - force=True always returns a checkpoint
            raise AuditError("no checkpoint was issued")
        return checkpoint

    def maybe_issue_checkpoint(self) -> StoredCheckpoint | None:
        """Issue a checkpoint if the policy says one is due (call periodically; cheap when not due)."""
        with self._reading() as connection:
            try:
                state = self._checked_state(connection, store.log_state(connection))
            except AuditWriteError:  # rolled back: every append says so; nothing to sign
                return None
            due = self.policy.due(state, self._now())
        return self._checkpoint_now(force=False) if due else None

    def _checkpoint_now(self, *, force: bool) -> StoredCheckpoint | None:
        try:
            with store.append_transaction(self._engine) as transaction:
                connection = transaction.connection
                state = self._checked_state(connection, transaction.state)
                now = self._now()
                if state.latest_checkpoint_size == state.size:
                    return store.checkpoint_at(connection, state.size)
                if not force and not self.policy.due(state, now):
                    return None
                checkpoint = self._signed(connection, state.size,
                                          self._cached_frontier(connection, state.size).root(), now)
                self._rows.insert_checkpoint(connection, checkpoint)
        except self._database_errors as exc:
            raise AuditWriteError(f"audit checkpoint write failed ({type(exc).__name__})") from exc
        self._remember_signed(checkpoint)
        return checkpoint

    def checkpoint_on_demand(self, size: int, *, now: float, min_interval: float) -> tuple[StoredCheckpoint, bool]:
        """A checkpoint of at least ``size`` entries, and whether it was signed now: the latest if it covers
        them, else one signed now — unless
        any process on this database signed one on demand less than ``min_interval`` seconds before ``now``
        (POSIX seconds): then :class:`~audit.errors.CheckpointPending` and nothing is written.

        Decided under the append lock (:func:`audit.store.append_transaction`), which serialises every process
        and machine on the database: the latest checkpoint, the time of the last on-demand signature and the new
        checkpoint with its time are read and written in one transaction, so two processes asking at once sign
        once. A ``now`` before the recorded time (clocks of two machines apart, or stepped back) does not hold
        signing up: it would for as long as the clocks stay apart. :class:`~audit.errors.ProofUnavailable` when
        the log has fewer than ``size`` entries."""
        try:
            with store.append_transaction(self._engine) as transaction:
                connection = transaction.connection
                state = self._checked_state(connection, transaction.state)
                if state.size < size:
                    raise ProofUnavailable(f"the log has {state.size} entries, fewer than {size}")
                if state.latest_checkpoint_size is not None and state.latest_checkpoint_size >= size:
                    covering = store.checkpoint_at(connection, state.latest_checkpoint_size)
                    if covering is not None:
                        return covering, False
                last = store.last_on_demand(connection)
                if last is not None and 0 <= now - last < min_interval:
                    raise CheckpointPending(min_interval - (now - last))
                checkpoint = self._signed(connection, state.size,
                                          self._cached_frontier(connection, state.size).root(), self._now())
                self._rows.insert_checkpoint(connection, checkpoint)
                store.record_on_demand(connection, now)
        except self._database_errors as exc:
            raise AuditWriteError(f"audit checkpoint write failed ({type(exc).__name__})") from exc
        self._remember_signed(checkpoint)
        return checkpoint, True

    # -- reading ---------------------------------------------------------------------------------

    def size(self) -> int:
        """Number of entries in the log."""
        with self._reading() as connection:
            return store.tree_size(connection)

    def root(self, tree_size: int | None = None) -> bytes:
        """The MTH of the first ``tree_size`` entries (default: all)."""
        with self._reading() as connection:
            current = store.tree_size(connection)
            size = current if tree_size is None else tree_size
            self._check_size(size, current)
            return self._frontier(connection, size).root()

    def checkpoint(self, tree_size: int | None = None) -> StoredCheckpoint:
        """The latest checkpoint, or the one issued at exactly ``tree_size``."""
        with self._reading() as connection:
            found = (store.latest_checkpoint(connection) if tree_size is None
                     else store.checkpoint_at(connection, tree_size))
        if found is None:
            raise ProofUnavailable("no checkpoint has been issued" if tree_size is None
                                   else f"no checkpoint was issued at tree size {tree_size}")
        return found

    def check_checkpoint(self, stored: StoredCheckpoint) -> Checkpoint:
        """Verify a stored checkpoint before handing it out as the log's word, and return what it states.

        Its note must carry a valid signature by this log's key for this log's origin, state the size and
        root of its own row, and that root must be the stored tree's at that size (a couple of indexed reads).
        A row edited behind the gateway's back, or a key that signed a root the tree does not have, would
        otherwise be served as if it were sound: the officer's own check would fail, but the gateway would
        have vouched for it. Raises :class:`~audit.errors.VerificationError` (which check failed, never a
        value), or :class:`~audit.errors.StoreUnavailable` when the tree could not be read. A checkpoint that
        passes becomes this process's anchor (:attr:`anchor`) if it is newer.
        """
        with self._reading() as connection:
            keys = self._history(connection)
        opened = keys.open(stored.note, origin=self.origin)
        if opened.tree_size != stored.tree_size or opened.root_hash != stored.root_hash:
            raise VerificationError(f"the checkpoint row at {stored.tree_size} disagrees with its signed note")
        try:
            actual = self.root(opened.tree_size)
        except ProofUnavailable:
            raise VerificationError(f"the checkpoint at {opened.tree_size} claims entries the log does not have"
                                    ) from None
        except AuditWriteError:  # the frontier's cached subtrees are missing
            raise VerificationError(f"the tree under the checkpoint at {opened.tree_size} is incomplete") from None
        if actual != opened.root_hash:
            raise VerificationError(f"the signed root at {opened.tree_size} is not the root of the stored tree")
        self._remember_anchor(opened)  # the log's word, verified: what this process signs from now on extends it
        return opened

    def checkpoints(self, up_to_size: int | None = None) -> list[StoredCheckpoint]:
        """Every checkpoint issued (optionally up to a tree size), oldest first."""
        with self._reading() as connection:
            return store.all_checkpoints(connection, up_to_size)

    def entries(self, start: int, stop: int) -> list[StoredEntry]:
        """Stored entries ``start <= index < stop`` (raw, for export and review code)."""
        with self._reading() as connection:
            return store.entries_between(connection, start, stop)

    def inclusion_proof(self, index: int, tree_size: int) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of ``tree_size`` entries (e.g. a checkpoint's size)."""
        if not 0 <= index < tree_size:
            raise ProofUnavailable(f"index {index} is not in a tree of size {tree_size}")
        ranges = inclusion_ranges(index, tree_size)
        with self._reading() as connection:
            self._check_size(tree_size, store.tree_size(connection))
            wanted = {(0, index)}.union(*(subtree_nodes(start, end) for start, end in ranges))
            found = store.fetch_nodes(connection, wanted)
        return InclusionProof(index, tree_size, _need(found, (0, index)),
                              tuple(_fold(start, end, found) for start, end in ranges))

    def consistency_proof(self, first: int, second: int) -> ConsistencyProof:
        """Proof that the tree of ``second`` entries extends the tree of ``first`` entries."""
        if not 0 <= first <= second:
            raise ProofUnavailable(f"no consistency proof from size {first} to {second}")
        with self._reading() as connection:
            self._check_size(second, store.tree_size(connection))
            return ConsistencyProof(first, second, _consistency_hashes(connection, first, second))

    @staticmethod
    def _check_size(size: int, current: int) -> None:
        if not 0 <= size <= current:
            raise ProofUnavailable(f"tree size {size} is beyond the log's {current} entries")


def _consistency_hashes(connection: Connection, first: int, second: int) -> tuple[bytes, ...]:
    """The RFC 9162 consistency proof from ``first`` to ``second`` (``0 <= first <= second <=`` the log's size)
    from the cached subtrees: one read. :class:`~audit.errors.ProofUnavailable` when one is missing."""
    ranges = consistency_ranges(first, second)
    wanted: set[tuple[int, int]] = set().union(*(subtree_nodes(start, end) for start, end in ranges))
    found = store.fetch_nodes(connection, wanted)
    return tuple(_fold(start, end, found) for start, end in ranges)


def _need(found: dict[tuple[int, int], bytes], node: tuple[int, int]) -> bytes:
    try:
        return found[node]
    except KeyError:
        raise ProofUnavailable(f"audit tree node {node} is missing from the store; run the verifier") from None


def _fold(start: int, end: int, found: dict[tuple[int, int], bytes]) -> bytes:
    return fold_range(start, end, lambda node: _need(found, node))
