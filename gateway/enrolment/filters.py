"""The fuzzy discovery index: participants' match filters (CLKs) of records without a shared number.

``enrol`` stores a batch (``gateway.client.fuzzy.FilterEnrolment``) for the caller's organisation: records are
added or updated under their local reference, references withdrawn, or everything of the record type replaced
— in one transaction, after every check, so a refused batch writes nothing. A replacement larger than a batch
is kept aside until its last batch and takes effect whole (:mod:`gateway.enrolment.replacement`).

A participant holds at most ``max_records`` records of a record type (``WGS_MATCH_FILTER_LIMIT``): every
process keeps each holder's decoded set in memory and compares every fuzzy discovery with all of it, so one
participant enrolling without end would take the memory and the time of everyone's discoveries. A batch that
would pass it is refused whole (422, saying the limit); one that does not add records (updates, withdrawals)
is taken even above it, so a participant over a lowered limit can still shrink. ``held`` reads the index for a
fuzzy discovery (``gateway.exchange.fuzzy``), which compares and answers hit/no-hit.

Checks that go beyond the request's shape: the schema version is the shipped one (filters of another version
never compare), each filter is exactly the schema's length and plausible (:mod:`gateway.matching.plausibility`:
not empty, and not so dense that it would match almost anyone; refused naming each such filter,
:class:`ImplausibleFilters`), blocking keys are one per signature or none, categories are the register's, and a
local reference looks like no personal data (the audit log's own guard: BSN, IBAN, e-mail address) — it is
stored, and a reference that is an identifier would make the index hold personal data in the clear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Connection, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from audit import AsyncAuditWriter
from gateway.auth.principal import Principal
from gateway.client.fuzzy import FilterEnrolment, FilterEnrolmentAnswer, FilterRecord
from gateway.clock import Clock
from gateway.db.engine import transaction
from gateway.enrolment import clk_keys
from gateway.enrolment import replacement as replacements
from gateway.enrolment.audited import (
    EntryTrace,
    IndexCounts,
    IndexMoved,
    add_or_update,
    delete_among,
    held_among,
    write_logged,
)
from gateway.enrolment.filter_cache import (
    DEFAULT_CACHE_BYTES,
    UPDATE_RETRIES,
    Generation,
    GenerationCache,
    bump,
    current,
    held_count,
    removed_since,
    withdrawn,
)
from gateway.enrolment.held import DIGESTED, HeldRecords, decoded, row_digest, size_of
from gateway.enrolment.service import (
    CONFIDENTIAL,
    ensure_refusal_code_names_no_one,
    participant_of,
    refuse_personal_data,
)
from gateway.enrolment.tables import match_filters
from gateway.errors import Conflict, Unprocessable
from gateway.matching.encoding import EncodedDataset, filters_from_b64
from gateway.matching.errors import EncodingError, SchemaError
from gateway.matching.plausibility import MAX_DENSITY, Implausibility, implausibilities
from gateway.matching.schema import Schema, shipped_schema
from gateway.register.model import Register


def schema_for(record_type: str, version: int) -> Schema:
    """The shipped schema of ``record_type``, which must be at ``version`` (422 otherwise)."""
    try:
        schema = shipped_schema(record_type)
    except SchemaError as exc:
        raise Unprocessable(f"no linkage schema for record type `{record_type}`") from exc
    if schema.version != version:
        raise Unprocessable(f"the `{record_type}` schema is at version {schema.version}, not {version}: encode "
                            "with the current one (filters of different versions never compare)")
    return schema


_NAMED = 10
"""Refused filters a problem's ``detail`` names by position (its ``refused`` member lists them all)."""


class ImplausibleFilters(Unprocessable):
    """Filters the gateway refuses (:mod:`gateway.matching.plausibility`): empty, or so dense that they would
    match almost anyone. A stable ``type`` (``implausible-filter``) and, as ``refused``, each such filter's
    ``position`` in the request, its ``reason`` (``empty``, ``too-dense``) and, for an enrolled record, its
    ``ref`` — so that a partner can leave those records out and send the rest again. The references were
    checked before (:func:`_no_personal_data`: a reference that looks like personal data is refused before
    this); the filters themselves, and so the names they encode, are never in it."""

    slug, title = "implausible-filter", "Implausible match filter"

    @classmethod
    def of(cls, what: str, items: Sequence[Any], refused: dict[int, Implausibility]) -> ImplausibleFilters:
        listed = [{"position": position, "reason": str(reason)}
                  | ({"ref": items[position].ref} if isinstance(items[position], FilterRecord) else {})
                  for position, reason in refused.items()]
        named = ", ".join(f"{position} ({reason})" for position, reason in list(refused.items())[:_NAMED])
        more = f" and {len(refused) - _NAMED} more" if len(refused) > _NAMED else ""
        return cls(f"{what}: {len(refused)} filter(s) refused, at position {named}{more} (each in `refused`): an "
                   f"empty filter matches nothing, and one with more than {MAX_DENSITY:.0%} of its bits set would "
                   "match almost any record (a wildcard), so neither is taken. A real record with very long names "
                   "can encode that densely: leave it out of fuzzy matching and send the rest again (enrolment and "
                   "discovery by pseudonym are not affected). Nothing of this request was done",
                   extra={"refused": listed})


def encoded(items: Sequence[Any], schema: Schema, what: str) -> EncodedDataset:
    """``items`` (with ``clk`` and ``blocks``) as a dataset: 422 naming the first malformed one, by position
    only, or every implausible one, by position and (a record's) reference (:class:`ImplausibleFilters`)."""
    try:
        filters = filters_from_b64([item.clk for item in items], schema.filter_bits)
    except EncodingError as exc:
        raise Unprocessable(f"{what}: {exc} (the `{schema.id}` schema's filters are {schema.filter_bits} "
                            "bits)") from exc
    refused = implausibilities(filters)
    if refused:
        raise ImplausibleFilters.of(what, items, refused)
    widths = {len(item.blocks) for item in items}
    signatures = len(schema.signatures)
    if len(widths) > 1 or widths - {0, signatures}:
        raise Unprocessable(f"{what}: either every filter has {signatures} blocking keys (one per signature of "
                            f"the `{schema.id}` schema) or none has")
    if widths != {signatures}:  # compared without blocking
        return EncodedDataset(filters)
    keys = np.array([[int(key, 16) if key else 0 for key in item.blocks] for item in items], dtype=np.uint64)
    return EncodedDataset(filters, keys.reshape(len(items), signatures))


def _no_personal_data(refs: list[str]) -> None:
    for position, ref in enumerate(refs):
        refuse_personal_data(ref, f"reference {position}", "; use an opaque reference of your own")


def _replacement_names_no_one(replacement: str | None) -> None:
    """422 for a replacement id the audit log's guard takes for personal data (``123456782`` is of the id's shape):
    the gateway keeps it with the batches set aside for up to an hour (``match_filter_staged``), and the database
    holds no person's number."""
    refuse_personal_data(replacement, "`replacement`", "; use an id that names no one (the client makes a random one)")


DEFAULT_MAX_RECORDS = 250_000
"""Records of one record type a participant may have enrolled by default (``WGS_MATCH_FILTER_LIMIT``): some 190 MB
decoded in each process (:data:`gateway.enrolment.filter_cache.DEFAULT_CACHE_BYTES` keeps about 350,000), far
above a participant's records without a shared number."""
DEFAULT_REPLACEMENT_TTL = timedelta(hours=1)
"""How long a replacement sent in several batches waits for its next batch before it is abandoned."""


def _over_limit(limit: int, record_type: str, after: int) -> Unprocessable:
    return Unprocessable(f"a participant may have at most {limit} match-filter records of record type "
                         f"`{record_type}` enrolled (the gateway's WGS_MATCH_FILTER_LIMIT); this batch would make "
                         f"{after}: nothing was enrolled", extra={"limit": limit})


_REPLACED = ("schema_version", "clk", "blocks", "categories", "confidential", "confidential_reason", "minor",
             "updated_at", "generation")


@dataclass(frozen=True)
class FilterBatch:
    """One filter enrolment, checked, ready to be written with its audit entry (:mod:`gateway.enrolment.
    audited`). The entry counts records; it never holds a filter or a reference."""

    partnership: str
    organisation: str
    system: str
    record_type: str
    schema_version: int
    replace: bool
    rows: list[dict[str, Any]]
    withdrawn: list[str]
    index: str = "filters"
    enrolled: list[int] = field(default_factory=list)  # set by ``apply``: the participant's records afterwards
    max_records: int = DEFAULT_MAX_RECORDS
    replacement: str | None = None  # a replacement in several batches: kept aside (gateway.enrolment.replacement)
    total: int | None = None  # with ``replacement``: its last batch, and how many records it holds in all
    expires_at: datetime | None = None  # with ``replacement``: when it is abandoned unless another batch comes
    staged: list[int] = field(default_factory=list)  # set by ``apply`` before the last batch: records kept aside
    clk_key_id: str | None = None  # of the CLK secret the rows were encoded with; None: unknown (clk_keys)

    def _mine(self) -> tuple[ColumnElement[bool], ...]:
        return (match_filters.c.partnership == self.partnership, match_filters.c.organisation == self.organisation,
                match_filters.c.record_type == self.record_type)

    def _kept(self) -> tuple[ColumnElement[bool], ...]:
        assert self.replacement is not None
        return replacements.of(self.partnership, self.organisation, self.record_type, self.replacement)

    def _held(self, session: Session | Connection) -> int:
        return int(session.execute(select(func.count()).select_from(match_filters).where(*self._mine())).scalar_one())

    def categories(self) -> list[str]:
        return sorted({category for row in self.rows for category in row["categories"]})

    def described(self) -> dict[str, object]:
        """The entry's own members; a replacement's batch says whether it was kept aside or completed it (the
        counts of a kept batch are of the records kept, the index unchanged)."""
        described: dict[str, object] = {
            "record_types": [self.record_type], "schema_version": self.schema_version, "replace": self.replace,
            "subjects": len(self.rows) + len(self.withdrawn),
            "confidential": sum(1 for row in self.rows if row["confidential"]),
            "minor": sum(1 for row in self.rows if row["minor"])}
        if self.clk_key_id is not None:  # beside the schema version: which secret (its non-secret id, never it)
            described["clk_key_id"] = self.clk_key_id
        if self.replacement is not None:
            described["replacement"] = "staged" if self.total is None else "completed"
        return described

    def expect(self, session: Session) -> IndexCounts:
        """With ``replace`` every record of the type goes and every record sent is new (as the answer says:
        ``removed`` is what the replace deleted); otherwise records sent under a reference held are updates.
        Refused here, before anything is written, when the batch would pass ``max_records`` (422) or complete a
        replacement that does not hold ``total`` records (409)."""
        if self.replacement is not None:
            return self._expect_replacement(session)
        if not self.replace:  # a replace re-enrols everything: a rotation of the secret
            clk_keys.check_addition(clk_keys.stored(session, self.partnership, self.organisation, self.record_type),
                                    self.clk_key_id, adds=bool(self.rows))
        if self.replace:
            if len(self.rows) > self.max_records:
                raise _over_limit(self.max_records, self.record_type, len(self.rows))
            return IndexCounts(added=len(self.rows), removed=self._held(session))
        found = held_among(session, match_filters.c.local_ref, self._mine(),
                           [row["local_ref"] for row in self.rows] + self.withdrawn)
        updated = sum(1 for row in self.rows if row["local_ref"] in found)
        counts = IndexCounts(added=len(self.rows) - updated, updated=updated,
                             removed=sum(1 for ref in self.withdrawn if ref in found))
        if counts.added > counts.removed:  # a batch that does not grow the set is taken above the limit too
            after = self._held(session) + counts.added - counts.removed
            if after > self.max_records:
                raise _over_limit(self.max_records, self.record_type, after)
        return counts

    def _expect_replacement(self, session: Session) -> IndexCounts:
        """A kept batch adds to the replacement (a reference sent again updates it); the last one also replaces
        the participant's set with all the replacement holds — which must be ``total`` records."""
        clk_keys.check_replacement(session, self._kept(), self.clk_key_id)
        kept = replacements.kept_among(session, self._kept(), [row["local_ref"] for row in self.rows])
        after = replacements.count(session, self._kept()) + len(self.rows) - len(kept)
        if after > self.max_records:
            raise _over_limit(self.max_records, self.record_type, after)
        if self.total is None:
            return IndexCounts(added=len(self.rows) - len(kept), updated=len(kept))
        if after != self.total:
            raise Conflict(f"the replacement holds {after} records with this batch, not the {self.total} its last "
                           "batch declares (a batch is missing, or the replacement was abandoned: no batch "
                           "came in time): nothing changed; send the whole replacement again under a new id")
        return IndexCounts(added=self.total, removed=self._held(session))

    def apply(self, connection: Connection) -> IndexCounts:
        """Replace or withdraw, then add or update (:func:`~gateway.enrolment.audited.add_or_update`) — counting
        what each statement did. The participant's generation is bumped first (:func:`~gateway.enrolment.
        filter_cache.bump`): every process's decoded copy of these records is stale once this commits, and is
        brought up to date from what this transaction stamps with the new generation — the rows it writes and
        the references it withdraws (a replace removes everything: no copy is updated across it)."""
        if self.replacement is not None:
            return self._apply_replacement(connection)
        generation = bump(connection, self.partnership, self.organisation, self.record_type, forget=self.replace)
        key_before = clk_keys.stored(connection, self.partnership, self.organisation, self.record_type)
        removed = connection.execute(delete(match_filters).where(*self._mine())).rowcount if self.replace else 0
        removed += delete_among(connection, match_filters, match_filters.c.local_ref, self._mine(), self.withdrawn)
        if not self.replace:
            withdrawn(connection, self.partnership, self.organisation, self.record_type, self.withdrawn, generation)
        added, updated = add_or_update(
            connection, match_filters, match_filters.c.local_ref,
            [match_filters.c.partnership, match_filters.c.organisation, match_filters.c.record_type,
             match_filters.c.local_ref], self._mine(), [row | {"generation": generation} for row in self.rows],
            _REPLACED, "a record was withdrawn by another batch meanwhile")
        self.enrolled[:] = [self._held(connection)]
        if self.enrolled[0] > self.max_records and added > removed:  # batches that got in meanwhile: counted again
            raise IndexMoved("the limit would be passed with the batches that got in meanwhile")
        clk_keys.store(connection, self.partnership, self.organisation, self.record_type, clk_keys.after_batch(
            key_before, self.clk_key_id, whole=self.replace, held_before=self.enrolled[0] - added + removed,
            held_after=self.enrolled[0], adds=bool(self.rows)))
        return IndexCounts(added=added, updated=updated, removed=removed)

    def _apply_replacement(self, connection: Connection) -> IndexCounts:
        """Keep the batch aside; the last batch (``total``) then swaps the replacement in, after bumping the
        generation as a one-batch replace does (:func:`~gateway.enrolment.replacement.swap_in`)."""
        assert self.expires_at is not None
        generation = None if self.total is None else bump(
            connection, self.partnership, self.organisation, self.record_type, forget=True)
        added, updated = replacements.stage(connection, self._kept(), self.replacement or "", self.rows,
                                            self.expires_at, self.clk_key_id)
        kept = replacements.count(connection, self._kept())
        if kept > self.max_records or (generation is not None and kept != self.total):
            raise IndexMoved("the replacement changed meanwhile")  # counted again: refused with its reason
        if generation is None:
            self.staged[:] = [kept]
            self.enrolled[:] = [self._held(connection)]
            return IndexCounts(added=added, updated=updated)
        removed = replacements.swap_in(connection, self._kept(), self._mine(), generation)
        clk_keys.store(connection, self.partnership, self.organisation, self.record_type,
                       self.clk_key_id if kept else None)  # its batches share it (checked in ``expect``)
        self.enrolled[:] = [kept]
        return IndexCounts(added=kept, removed=removed)


class FilterService:
    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock, register: Register,
                 writer: AsyncAuditWriter | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 max_records: int = DEFAULT_MAX_RECORDS,
                 replacement_ttl: timedelta = DEFAULT_REPLACEMENT_TTL) -> None:
        self.sessions = sessions
        self.max_records = max_records  # per participant and record type (module docstring)
        self.replacement_ttl = replacement_ttl
        self.clock = clock
        self.register = register
        self.writer = writer  # batches are logged through it; without it nothing is enrolled (503)
        # Decoded records per (partnership, organisation, record type, schema version), valid for one generation
        # (:mod:`gateway.enrolment.filter_cache`); None for a participant that holds none.
        self.cache: GenerationCache[HeldRecords | None] = GenerationCache(cache_bytes)
        # What reading the index cost (a running count, for tests and the benchmark): rows of ``match_filters``
        # read and decoded, kept copies brought up to date from their changes, and full reads of a holder's set.
        # ``update_retries``: updates done again because the counter moved during their reads (:meth:`_updated`).
        self.rows_read = self.updates = self.full_reads = self.update_retries = 0

    async def enrol(self, principal: Principal, body: FilterEnrolment,
                    trace: EntryTrace | None = None) -> FilterEnrolmentAnswer:
        """Check and write a batch; the index changes in the transaction that logs it (``index.enrolment``,
        counts only): 503 with nothing changed when the log cannot be written."""
        batch = await asyncio.to_thread(self.prepare, principal, body)
        if batch.replacement is not None:
            await asyncio.to_thread(self.remove_abandoned)
        counts = await write_logged(self.writer, self.sessions, batch, trace)
        return FilterEnrolmentAnswer(record_type=body.record_type, stored=len(batch.rows), removed=counts.removed,
                                     enrolled=int(batch.enrolled[0]),
                                     staged=int(batch.staged[0]) if batch.staged else None)

    def remove_abandoned(self) -> int:
        """Remove the kept records of replacements whose time ran out (:mod:`gateway.enrolment.replacement`):
        done before each replacement batch, in a transaction of its own; how many."""
        with transaction(self.sessions) as session:
            return replacements.remove_abandoned(session.connection(), self.clock.now())

    def prepare(self, principal: Principal, body: FilterEnrolment) -> FilterBatch:
        """Every check of a batch, and its rows; nothing written (a refused batch writes nothing)."""
        organisation = participant_of(self.register, principal, body.partnership)
        schema = schema_for(body.record_type, body.schema_version)
        if not (body.records or body.remove or body.replace):
            raise Unprocessable("nothing to do: send `records`, `remove` or `replace`")
        if body.replacement is not None and not body.replace:
            raise Unprocessable("every batch of a `replacement` carries `replace: true`")
        if body.replacement is not None and body.remove:
            raise Unprocessable("a `replacement` takes no `remove`: the records it does not send are withdrawn")
        if body.total is not None and body.replacement is None:
            raise Unprocessable("`total` ends a `replacement`: send it with the replacement's id")
        refs = [r.ref for r in body.records]
        both = sorted(set(refs) & set(body.remove))
        if both:
            raise Unprocessable(f"record {refs.index(both[0])}: a reference both sent and removed")
        _no_personal_data(refs + list(body.remove))
        _replacement_names_no_one(body.replacement)
        ensure_refusal_code_names_no_one(body.confidential_reason)
        unknown = sorted({c for r in body.records for c in r.categories} - self.register.categories.keys())
        if unknown:
            raise Unprocessable(f"categories the register does not know: {', '.join(unknown)} "
                                f"(register {self.register.version})")
        dataset = encoded(body.records, schema, "records")
        keys = dataset.block_keys
        now = self.clock.now()
        rows = sorted(({
            "partnership": body.partnership, "organisation": organisation, "record_type": body.record_type,
            "local_ref": record.ref, "schema_version": schema.version,
            "clk": dataset.filters[n].astype("<u8").tobytes(),
            "blocks": b"" if keys is None else keys[n].astype("<u8").tobytes(),
            "categories": sorted(set(record.categories)), "confidential": record.confidential,
            "confidential_reason": (body.confidential_reason or CONFIDENTIAL) if record.confidential else None,
            "minor": record.minor, "updated_at": now} for n, record in enumerate(body.records)),
            key=lambda row: row["local_ref"])
        return FilterBatch(partnership=body.partnership, organisation=organisation, system=principal.subject,
                           record_type=body.record_type, schema_version=schema.version, replace=body.replace,
                           rows=rows, withdrawn=sorted(set(body.remove)), max_records=self.max_records,
                           replacement=body.replacement, total=body.total, clk_key_id=body.clk_key_id,
                           expires_at=now + self.replacement_ttl if body.replacement is not None else None)

    def key_ids(self, partnership: str, record_type: str, organisations: list[str]) -> dict[str, str]:
        """The known key ids of the CLK secrets ``organisations``' filters were encoded with
        (:func:`gateway.enrolment.clk_keys.stored_for`)."""
        with transaction(self.sessions) as session:
            return clk_keys.stored_for(session, partnership, record_type, organisations)

    def holding(self, partnership: str, record_type: str, organisations: list[str]) -> set[str]:
        """Which of ``organisations`` hold filters of ``record_type`` (:func:`gateway.enrolment.clk_keys.
        holding`)."""
        with transaction(self.sessions) as session:
            return clk_keys.holding(session, partnership, record_type, organisations)

    def held(self, partnership: str, schema: Schema, organisations: list[str]) -> dict[str, HeldRecords]:
        """Per organisation among ``organisations``: its records of the schema's type and version.

        From this process's copy while its generation is the stored one (one indexed read for all of them); a
        copy of an earlier generation is brought up to date from the rows changed since (:meth:`_updated`) when
        the counter says every change since was recorded; the others are read and decoded in full. Either way
        the result is kept under the generation read before the rows."""
        found: dict[str, HeldRecords | None] = {}
        fetched: dict[str, HeldRecords | None] = {}
        with transaction(self.sessions) as session:
            generations = current(session, partnership, schema.id, organisations)
            for organisation, state in generations.items():
                key = (partnership, organisation, schema.id, schema.version)
                kept, held = self.cache.get(key, state.generation)
                if kept:
                    found[organisation] = held
                    continue
                base = self.cache.kept(key)
                if base is not None and state.updatable_from(base[0]):
                    updated = self._updated(session, partnership, schema, organisation, state, *base)
                    if updated is not None:  # kept under the counter its (last) reads were checked against
                        generations[organisation], fetched[organisation] = updated
                    else:  # not the set stored: never used again, and read in full below
                        self.cache.discard(key)
            missing = [organisation for organisation in organisations
                       if organisation not in found and organisation not in fetched]
            read = self._read(session, partnership, schema, missing) if missing else {}
        fetched |= {organisation: read.get(organisation) for organisation in missing}
        for organisation, held in fetched.items():
            key = (partnership, organisation, schema.id, schema.version)
            if held is not None:  # the subsets a purpose may ask about, kept with it, count in the bound
                held.watch(partial(self.cache.grow, key, id(held)))
            self.cache.put(key, generations[organisation].generation, held, size_of(held))
            found[organisation] = held
        return {organisation: held for organisation, held in found.items() if held is not None}

    def _updated(self, session: Session, partnership: str, schema: Schema, organisation: str, state: Generation,
                 since: int, held: HeldRecords | None) -> tuple[Generation, HeldRecords | None] | None:
        """``held`` (the copy of generation ``since``) with the rows written and the references withdrawn after
        ``since``: the counter the result is the set stored under, and that set (None for none) — or None when
        the result is not the set stored (it does not hold as many records as the table: a change went
        unrecorded), or cannot be told.

        A changed row of another schema version leaves the set, as a full read would not return it.

        The rows, the removals and the count are three statements, and each sees what committed before it (READ
        COMMITTED on PostgreSQL; on SQLite, pysqlite begins no transaction for a SELECT): a batch committed
        between them can forget the very removals this update needs (a replace, or the history moving on) while
        its rows were not read yet — a withdrawn record kept, with a count that may still add up. So the counter
        (``state``, read before the rows) is read again last: every writer bumps it in its transaction, so when
        it is unchanged nothing committed between the reads, and the result is kept.

        When it moved, the result is dropped and the update done again, from ``held`` (never from the dropped
        result) and checked against the counter just read — read before that attempt's rows, as ``state`` was
        before the first: the same argument holds for each attempt. Up to :data:`UPDATE_RETRIES` times while
        the new counter still lets ``since`` be updated (:meth:`Generation.updatable_from`); then the set is read
        in full. Under busy writers a retry reads the few rows changed since ``since`` again, a full read every
        row of the holder."""
        mine = (match_filters.c.partnership == partnership, match_filters.c.organisation == organisation,
                match_filters.c.record_type == schema.id)
        for attempt in range(UPDATE_RETRIES + 1):
            rows = session.execute(select(*DIGESTED, match_filters.c.local_ref).where(
                *mine, match_filters.c.generation > since)).all()
            self.rows_read += len(rows)
            gone = removed_since(session, partnership, organisation, schema.id, since) | {row.local_ref for row in rows}
            fresh = decoded([row for row in rows if row.schema_version == schema.version], schema)
            result = (held or HeldRecords.empty(schema)).updated(gone, fresh)
            if result is None:  # not a race: another attempt could not tell either
                return None
            adds_up = len(result) == held_count(session, partnership, organisation, schema.id, schema.version)
            now = current(session, partnership, schema.id, [organisation])[organisation]
            if now == state:  # nothing committed during the reads: they agree
                if not adds_up:
                    return None
                self.updates += 1
                return state, result if len(result) else None
            # a batch committed while this was read: the reads may not agree (nor the count with them)
            if attempt == UPDATE_RETRIES or not now.updatable_from(since):
                return None
            self.update_retries += 1
            state = now
        return None  # pragma: no cover - the loop returns on its last attempt

    def _read(self, session: Session, partnership: str, schema: Schema,
              organisations: list[str]) -> dict[str, HeldRecords]:
        rows: dict[str, list[Any]] = {}
        for row in session.execute(select(
                *DIGESTED, match_filters.c.organisation, match_filters.c.local_ref).where(
                match_filters.c.partnership == partnership, match_filters.c.record_type == schema.id,
                match_filters.c.schema_version == schema.version,
                match_filters.c.organisation.in_(organisations)).order_by(
                match_filters.c.organisation, match_filters.c.local_ref)):
            rows.setdefault(row.organisation, []).append(row)
        self.rows_read += sum(len(found) for found in rows.values())
        self.full_reads += len(organisations)
        return {organisation: decoded(found, schema) for organisation, found in rows.items()}


def current_digest(session: Session, partnership: str, organisation: str, record_type: str,
                   local_ref: str) -> str | None:
    """:func:`row_digest` of ``organisation``'s record enrolled under ``local_ref`` now; None when withdrawn."""
    row = session.execute(select(*DIGESTED).where(
        match_filters.c.partnership == partnership, match_filters.c.organisation == organisation,
        match_filters.c.record_type == record_type, match_filters.c.local_ref == local_ref)).one_or_none()
    return None if row is None else row_digest(row)
