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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from gateway.db.upsert import insert_on_conflict
from gateway.enrolment.tables import match_filter_generations as generations

V = TypeVar("V")

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""What a process keeps of decoded filter sets by default: about 360,000 enrolled person records (some 730 bytes
each with their sorted blocking keys, measured with tracemalloc; :func:`gateway.enrolment.filters._size`
estimates it per set)."""


def bump(connection: Connection, partnership: str, organisation: str, record_type: str) -> None:
    """Mark ``organisation``'s filters of ``record_type`` as changed, inside the transaction that changes them.

    Call it before the transaction's first write to ``match_filters``: the counter's row is then the first lock
    a writer takes for the participant and record type, so writers queue on it and never wait on each other's
    filter rows in a cycle."""
    statement = insert_on_conflict(connection, generations).values(
        partnership=partnership, organisation=organisation, record_type=record_type, generation=1)
    connection.execute(statement.on_conflict_do_update(
        index_elements=[generations.c.partnership, generations.c.organisation, generations.c.record_type],
        set_={"generation": generations.c.generation + 1}))


def current(session: Session, partnership: str, record_type: str, organisations: Sequence[str]) -> dict[str, int]:
    """The counters of ``organisations`` (one indexed read: the table's primary key); 0 for one never changed
    since the counters exist."""
    rows = session.execute(select(generations.c.organisation, generations.c.generation).where(
        generations.c.partnership == partnership, generations.c.record_type == record_type,
        generations.c.organisation.in_(list(organisations))))
    found: dict[str, int] = {organisation: generation for organisation, generation in rows}
    return {organisation: int(found.get(organisation, 0)) for organisation in organisations}


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
        """(True, value) when the value kept under ``key`` is of ``generation``; (False, None) otherwise (a value
        of another generation is dropped: it will not be asked for again)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != generation:
                if entry is not None:
                    self._drop(key)
                self.misses += 1
                return False, None
            self._entries.move_to_end(key)
            self.hits += 1
            return True, entry[1]

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

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._entries.pop(key)[2]
