"""The decoded fuzzy discovery index, kept in memory per process and checked against the database per request.

Why: a fuzzy discovery compares the subjects with *every* record of the record type an allowed holder enrolled
(:meth:`gateway.enrolment.filters.FilterService.held`). Reading and decoding tens of thousands of rows (the
filters, and a SHA-256 digest per row for the match handles) took far longer than the comparison itself, on
every request. The decoded set changes only when the holder enrols, so each process keeps it, and asks the
database one question per request: is it still the one stored?

That question is a counter per (partnership, participant, record type) in ``match_filter_generations``, bumped
by every transaction that changes the participant's rows of ``match_filters`` (:func:`bump`: enrolment batches
and retirement removals), in that same transaction. A copy is used only while the counter is the one it was
read under (:class:`GenerationCache`), so a change made through any gateway process — or the CLI — is seen by
every process at its next request, and a copy never outlives the rows it was read from: the match-handle digests
it carries are those of the rows stored.

The counter is read *before* the rows: a copy may then be newer than its counter (a change committed between
the two reads), never older — and a newer copy is replaced at the next request, which reads the new counter.

**Updating a copy** (migration 0030): a batch of a few records used to make the next request in every process
read and decode the holder's whole set again (4 s at 100,000 records). Now each row carries the generation that
wrote it, and a withdrawal leaves the reference in ``match_filter_removals`` with its generation (:func:`bump`
returns the generation to stamp; :func:`withdrawn`). A copy of generation G is brought to the current one from
the rows written after G and the references withdrawn after G alone. That is sound only when every change after
G was recorded so, which the counter row says (:class:`Generation`): ``stamped`` falls behind when a writer
bumped without stamping (code from before 0030 still running during an upgrade), and ``history_from`` rises
when removals are forgotten — those older than :data:`HISTORY` generations, and all of them when a replace or a
retirement removes everything (:func:`bump` with ``forget``; nothing of a retired participant is kept). In
either case, and when the updated copy does not hold as many records as the table (:func:`held_count`), the
set is read in full: a removed record must never hit. An update is not kept either when the counter has moved by
the end of its reads (:meth:`gateway.enrolment.filters.FilterService._updated`): those are several statements, each
seeing what committed before it, and a batch committed between them may have forgotten removals the update needs.
It is done again from the kept copy, checked against the counter just read (at most :data:`UPDATE_RETRIES` times,
and only while that counter still allows an update), and the set is read in full after that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Connection, Table, case, delete, func, select
from sqlalchemy.orm import Session

from gateway.db.upsert import insert_on_conflict
from gateway.enrolment.tables import match_filter_generations as generations
from gateway.enrolment.tables import match_filter_removals as removals
from gateway.enrolment.tables import match_filters

V = TypeVar("V")

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""What a process keeps of decoded filter sets by default: about 350,000 enrolled person records (some 730 bytes
each with their sorted blocking keys, measured with tracemalloc, and the records with grounds kept once more —
760 bytes a record in the benchmark, where 3 % have grounds; :func:`gateway.enrolment.held.size_of` estimates it
per set)."""

HISTORY = 1000
"""How many generations of withdrawals are kept: a copy older than that is read in full. It bounds the table of
removals at what a thousand batches withdrew, per participant and record type."""

UPDATE_RETRIES = 2
"""How many times an update whose counter moved during its reads is done again before the set is read in full:
under busy writers another update (the rows changed since the copy) costs far less than reading every row, and
a writer that keeps committing during every attempt still ends in one full read."""


@dataclass(frozen=True)
class Generation:
    """A participant's counter row as read: the current generation, and whether (from which generation on) a copy
    can be brought up to date from the changes alone."""

    generation: int
    stamped: int = 0
    history_from: int = 0

    def updatable_from(self, kept: int) -> bool:
        """Whether a copy of generation ``kept`` can be updated to this one from the rows and removals recorded
        since: every change since was recorded (the last writer stamped, and none of the recorded removals after
        ``kept`` were forgotten), and the copy is not from the future (a counter never goes back)."""
        return self.stamped == self.generation and self.history_from <= kept <= self.generation


def bump(connection: Connection, partnership: str, organisation: str, record_type: str, *,
         forget: bool = False) -> int:
    """Mark ``organisation``'s filters of ``record_type`` as changed, inside the transaction that changes them;
    the new generation, which that transaction stamps on every row it writes (``match_filters.generation``) and
    every reference it withdraws (:func:`withdrawn`).

    Call it before the transaction's first write to ``match_filters``: the counter's row is then the first lock
    a writer takes for the participant and record type, so writers queue on it and never wait on each other's
    filter rows in a cycle — and generations commit in their order.

    ``forget``: the transaction removes every record (a replace, a retirement): no copy is updated across it and
    the recorded removals go, and so does the key id of the records' CLK secret (:mod:`gateway.enrolment.
    clk_keys`: a replace sets the new one after). Otherwise removals older than :data:`HISTORY` generations go.
    Either way ``history_from`` says so, in this statement; when the counter was bumped without stamping before (see the
    module), it is raised to that generation: only a copy read after it is updated across this one."""
    new = generations.c.generation + 1
    kept_from = new if forget else case(
        # after a change that was not stamped: only a copy read after it (read in full) is updated
        (generations.c.stamped != generations.c.generation, generations.c.generation),
        (generations.c.history_from > new - HISTORY, generations.c.history_from), else_=new - HISTORY)
    statement = insert_on_conflict(connection, generations).values(
        partnership=partnership, organisation=organisation, record_type=record_type, generation=1, stamped=1,
        history_from=1 if forget else 0)
    generation, history_from = connection.execute(statement.on_conflict_do_update(
        index_elements=[generations.c.partnership, generations.c.organisation, generations.c.record_type],
        set_={"generation": new, "stamped": new, "history_from": kept_from}
        | ({"clk_key_id": None} if forget else {})).returning(
        generations.c.generation, generations.c.history_from)).one()
    connection.execute(delete(removals).where(
        *_of(removals, partnership, organisation, record_type), removals.c.generation <= history_from))
    return int(generation)


def withdrawn(connection: Connection, partnership: str, organisation: str, record_type: str, refs: Sequence[str],
              generation: int) -> None:
    """Record that ``refs`` were withdrawn at ``generation`` (the one :func:`bump` returned): a copy of an
    earlier generation drops them."""
    if not refs:
        return
    statement = insert_on_conflict(connection, removals)
    connection.execute(statement.on_conflict_do_update(
        index_elements=[removals.c.partnership, removals.c.organisation, removals.c.record_type,
                        removals.c.local_ref],
        set_={"generation": statement.excluded.generation}),
        [{"partnership": partnership, "organisation": organisation, "record_type": record_type, "local_ref": ref,
          "generation": generation} for ref in refs])


def forget_removals(connection: Connection, partnership: str, organisation: str) -> None:
    """Delete every recorded removal of ``organisation`` in ``partnership`` (a retired participation: nothing of
    it is kept), by bumping each of its record types that has some with ``forget``: no copy is updated across
    the gap."""
    record_types = connection.execute(select(removals.c.record_type).where(
        removals.c.partnership == partnership, removals.c.organisation == organisation).distinct()).scalars().all()
    for record_type in sorted(record_types):
        bump(connection, partnership, organisation, record_type, forget=True)


def _of(table: Table, partnership: str, organisation: str, record_type: str) -> tuple[ColumnElement[bool], ...]:
    return (table.c.partnership == partnership, table.c.organisation == organisation,
            table.c.record_type == record_type)


def current(session: Session, partnership: str, record_type: str,
            organisations: Sequence[str]) -> dict[str, Generation]:
    """The counters of ``organisations`` (one indexed read: the table's primary key); generation 0 for one never
    changed since the counters exist."""
    rows = session.execute(select(
        generations.c.organisation, generations.c.generation, generations.c.stamped, generations.c.history_from).where(
        generations.c.partnership == partnership, generations.c.record_type == record_type,
        generations.c.organisation.in_(list(organisations))))
    found = {row.organisation: Generation(int(row.generation), int(row.stamped), int(row.history_from))
             for row in rows}
    return {organisation: found.get(organisation, Generation(0)) for organisation in organisations}


def removed_since(session: Session, partnership: str, organisation: str, record_type: str,
                  generation: int) -> set[str]:
    """The references withdrawn after ``generation`` (some may have been enrolled again since)."""
    return set(session.execute(select(removals.c.local_ref).where(
        *_of(removals, partnership, organisation, record_type), removals.c.generation > generation)).scalars())


def held_count(session: Session, partnership: str, organisation: str, record_type: str, schema_version: int) -> int:
    """How many records of ``record_type`` at ``schema_version`` the participant holds: what an updated copy must
    hold too (a cheap check that no change went unrecorded)."""
    return int(session.execute(select(func.count()).select_from(match_filters).where(
        *_of(match_filters, partnership, organisation, record_type),
        match_filters.c.schema_version == schema_version)).scalar_one())


class GenerationCache(Generic[V]):
    """Values under a key, each valid for one generation; least recently used first out when the values'
    (estimated) sizes exceed ``max_bytes``. A value larger than that is not kept. Thread-safe: lookups run on
    worker threads (``asyncio.to_thread``)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[int, V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, generation: int) -> tuple[bool, V | None]:
        """(True, value) when the value kept under ``key`` is of ``generation``; (False, None) otherwise. A value
        of another generation stays (:meth:`kept`: the base an update starts from) until :meth:`put` replaces
        it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != generation:
                self.misses += 1
                return False, None
            self._entries.move_to_end(key)
            self.hits += 1
            return True, entry[1]

    def kept(self, key: Hashable) -> tuple[int, V] | None:
        """The value kept under ``key`` and its generation, whichever that is; None when there is none."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else (entry[0], entry[1])

    def discard(self, key: Hashable) -> None:
        """Forget the value under ``key`` (one that could not be brought up to date)."""
        with self._lock:
            if key in self._entries:
                self._drop(key)

    def put(self, key: Hashable, generation: int, value: V, size: int) -> None:
        """Keep ``value`` for ``generation`` unless a later generation is kept already (another thread read
        after a change this one's read preceded)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[0] > generation:
                    return
                self._drop(key)
            if size > self.max_bytes:
                return
            self._entries[key] = (generation, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def grow(self, key: Hashable, value_id: int, extra: int) -> None:
        """Count ``extra`` more bytes for the value under ``key`` — when it is still the value of id ``value_id``
        (it keeps something it derived, :meth:`gateway.enrolment.held.HeldRecords.watch`), not one that replaced
        it — and drop the least recently used while over the bound (that value too: the bound holds). An id, not
        the value: a value that refers to itself through its callback would wait for the cycle collector."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or id(entry[1]) != value_id:
                return
            self._entries[key] = (entry[0], entry[1], entry[2] + extra)
            self._bytes += extra
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._entries.pop(key)[2]
