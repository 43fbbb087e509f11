"""The fuzzy discovery index: participants' match filters (CLKs) of records without a shared number.

``enrol`` stores a batch (``gateway.client.fuzzy.FilterEnrolment``) for the caller's organisation: records are
added or updated under their local reference, references withdrawn, or everything of the record type replaced
— in one transaction, after every check, so a refused batch writes nothing. ``held`` reads the index for a
fuzzy discovery (``gateway.exchange.fuzzy``), which compares and answers hit/no-hit.

Checks that go beyond the request's shape: the schema version is the shipped one (filters of another version
never compare), each filter is exactly the schema's length and plausible (:func:`gateway.matching.lookup.
implausible`), blocking keys are one per signature or none, categories are the register's, and a local reference
looks like no personal data (the audit log's own guard: BSN, IBAN, e-mail address) — it is stored, and a
reference that is an identifier would make the index hold personal data in the clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Connection, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from audit import AsyncAuditWriter
from audit.guard import find_personal_data
from gateway.auth.principal import Principal
from gateway.client.fuzzy import FilterEnrolment, FilterEnrolmentAnswer
from gateway.clock import Clock, as_utc
from gateway.db.engine import transaction
from gateway.enrolment.audited import (
    EntryTrace,
    IndexCounts,
    add_or_update,
    delete_among,
    held_among,
    write_logged,
)
from gateway.enrolment.filter_cache import DEFAULT_CACHE_BYTES, GenerationCache, bump, current
from gateway.enrolment.service import CONFIDENTIAL, participant_of
from gateway.enrolment.tables import match_filters
from gateway.errors import Unprocessable
from gateway.matching.blocking import SignatureBlocker
from gateway.matching.encoding import EncodedDataset, filters_from_b64
from gateway.matching.errors import EncodingError, SchemaError
from gateway.matching.lookup import MAX_DENSITY, held_blocker, implausible
from gateway.matching.schema import Schema, shipped_schema
from gateway.register.model import Register


@dataclass(frozen=True)
class HeldRecords:
    """One participant's enrolled records of a record type, as a fuzzy discovery compares them (in the
    gateway only): the filters (with blocking keys when every record has them) and, per record, what the
    participant said of it, its reference (never shown to another participant) and the digest of its row as
    read (:func:`row_digest`: a match handle resolves only while the row is still the same)."""

    dataset: EncodedDataset
    categories: list[frozenset[str]]
    confidential_reason: list[str | None]
    minor: list[bool]
    refs: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    def permitted(self, categories: set[str]) -> HeldRecords:
        """Only the records of which some category may be asked about: the others cannot make a hit, and
        must not take a subject's one-to-one match from a record that can. All of them (the usual case): these
        records themselves, not a copy — a kept set (``filter_cache``) is then compared without copying it."""
        if all(held & categories for held in set(self.categories)):  # the distinct category sets only
            return self
        return self.subset([i for i, held in enumerate(self.categories) if held & categories])

    @cached_property
    def blocker(self) -> SignatureBlocker:
        """The blocker for these records, their blocking keys sorted once (:func:`~gateway.matching.lookup.
        held_blocker`): a kept set (``filter_cache``) is not sorted again on every request."""
        return held_blocker(self.dataset)

    def with_grounds(self) -> list[int]:
        """The positions of the records on which the holder would refuse (kept confidential, or a minor)."""
        return [i for i, reason in enumerate(self.confidential_reason) if reason is not None or self.minor[i]]

    def subset(self, keep: list[int]) -> HeldRecords:
        """The records at the positions ``keep``, in that order."""
        keys = self.dataset.block_keys
        return HeldRecords(EncodedDataset(self.dataset.filters[keep], None if keys is None else keys[keep]),
                           [self.categories[i] for i in keep], [self.confidential_reason[i] for i in keep],
                           [self.minor[i] for i in keep], [self.refs[i] for i in keep],
                           [self.digests[i] for i in keep])


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


def encoded(items: Sequence[Any], schema: Schema, what: str) -> EncodedDataset:
    """``items`` (with ``clk`` and ``blocks``) as a dataset: 422 naming the first bad one, by position only."""
    try:
        filters = filters_from_b64([item.clk for item in items], schema.filter_bits)
    except EncodingError as exc:
        raise Unprocessable(f"{what}: {exc} (the `{schema.id}` schema's filters are {schema.filter_bits} "
                            "bits)") from exc
    wrong = implausible(filters)
    if wrong is not None:
        raise Unprocessable(f"{what}: filter {wrong} is empty or sets more than {MAX_DENSITY:.0%} of its bits, "
                            "which no encoding of a record does")
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
        findings = find_personal_data(ref)
        if findings:  # the kind, never the value
            raise Unprocessable(f"reference {position} looks like personal data ({findings[0].kind}); use an "
                                "opaque reference of your own")


_REPLACED = ("schema_version", "clk", "blocks", "categories", "confidential", "confidential_reason", "minor",
             "updated_at")


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

    def _mine(self) -> tuple[ColumnElement[bool], ...]:
        return (match_filters.c.partnership == self.partnership, match_filters.c.organisation == self.organisation,
                match_filters.c.record_type == self.record_type)

    def categories(self) -> list[str]:
        return sorted({category for row in self.rows for category in row["categories"]})

    def described(self) -> dict[str, object]:
        return {"record_types": [self.record_type], "schema_version": self.schema_version, "replace": self.replace,
                "subjects": len(self.rows) + len(self.withdrawn),
                "confidential": sum(1 for row in self.rows if row["confidential"]),
                "minor": sum(1 for row in self.rows if row["minor"])}

    def expect(self, session: Session) -> IndexCounts:
        """With ``replace`` every record of the type goes and every record sent is new (as the answer says:
        ``removed`` is what the replace deleted); otherwise records sent under a reference held are updates."""
        if self.replace:
            held = session.execute(select(func.count()).select_from(match_filters).where(*self._mine())).scalar_one()
            return IndexCounts(added=len(self.rows), removed=int(held))
        found = held_among(session, match_filters.c.local_ref, self._mine(),
                           [row["local_ref"] for row in self.rows] + self.withdrawn)
        updated = sum(1 for row in self.rows if row["local_ref"] in found)
        return IndexCounts(added=len(self.rows) - updated, updated=updated,
                           removed=sum(1 for ref in self.withdrawn if ref in found))

    def apply(self, connection: Connection) -> IndexCounts:
        """Replace or withdraw, then add or update (:func:`~gateway.enrolment.audited.add_or_update`) — counting
        what each statement did. The participant's generation is bumped first (:func:`~gateway.enrolment.
        filter_cache.bump`): every process's decoded copy of these records is stale once this commits."""
        bump(connection, self.partnership, self.organisation, self.record_type)
        removed = connection.execute(delete(match_filters).where(*self._mine())).rowcount if self.replace else 0
        removed += delete_among(connection, match_filters, match_filters.c.local_ref, self._mine(), self.withdrawn)
        added, updated = add_or_update(
            connection, match_filters, match_filters.c.local_ref,
            [match_filters.c.partnership, match_filters.c.organisation, match_filters.c.record_type,
             match_filters.c.local_ref], self._mine(), self.rows, _REPLACED,
            "a record was withdrawn by another batch meanwhile")
        self.enrolled[:] = [connection.execute(
            select(func.count()).select_from(match_filters).where(*self._mine())).scalar_one()]
        return IndexCounts(added=added, updated=updated, removed=removed)


class FilterService:
    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock, register: Register,
                 writer: AsyncAuditWriter | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.sessions = sessions
        self.clock = clock
        self.register = register
        self.writer = writer  # batches are logged through it; without it nothing is enrolled (503)
        # Decoded records per (partnership, organisation, record type, schema version), valid for one generation
        # (:mod:`gateway.enrolment.filter_cache`); None for a participant that holds none.
        self.cache: GenerationCache[HeldRecords | None] = GenerationCache(cache_bytes)

    async def enrol(self, principal: Principal, body: FilterEnrolment,
                    trace: EntryTrace | None = None) -> FilterEnrolmentAnswer:
        """Check and write a batch; the index changes in the transaction that logs it (``index.enrolment``,
        counts only): 503 with nothing changed when the log cannot be written."""
        batch = await asyncio.to_thread(self.prepare, principal, body)
        counts = await write_logged(self.writer, self.sessions, batch, trace)
        return FilterEnrolmentAnswer(record_type=body.record_type, stored=len(batch.rows), removed=counts.removed,
                                     enrolled=int(batch.enrolled[0]))

    def prepare(self, principal: Principal, body: FilterEnrolment) -> FilterBatch:
        """Every check of a batch, and its rows; nothing written (a refused batch writes nothing)."""
        organisation = participant_of(self.register, principal, body.partnership)
        schema = schema_for(body.record_type, body.schema_version)
        if not (body.records or body.remove or body.replace):
            raise Unprocessable("nothing to do: send `records`, `remove` or `replace`")
        refs = [r.ref for r in body.records]
        both = sorted(set(refs) & set(body.remove))
        if both:
            raise Unprocessable(f"record {refs.index(both[0])}: a reference both sent and removed")
        _no_personal_data(refs + list(body.remove))
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
                           rows=rows, withdrawn=sorted(set(body.remove)))

    def held(self, partnership: str, schema: Schema, organisations: list[str]) -> dict[str, HeldRecords]:
        """Per organisation among ``organisations``: its records of the schema's type and version.

        From this process's copy while its generation is the stored one (one indexed read for all of them);
        the others are read and decoded, and kept under the generation read before them."""
        found: dict[str, HeldRecords | None] = {}
        with transaction(self.sessions) as session:
            generations = current(session, partnership, schema.id, organisations)
            for organisation, generation in generations.items():
                kept, held = self.cache.get((partnership, organisation, schema.id, schema.version), generation)
                if kept:
                    found[organisation] = held
            missing = [organisation for organisation in organisations if organisation not in found]
            read = self._read(session, partnership, schema, missing) if missing else {}
        for organisation in missing:
            held = read.get(organisation)
            self.cache.put((partnership, organisation, schema.id, schema.version), generations[organisation], held,
                           _size(held))
            found[organisation] = held
        return {organisation: held for organisation, held in found.items() if held is not None}

    @staticmethod
    def _read(session: Session, partnership: str, schema: Schema, organisations: list[str]) -> dict[str, HeldRecords]:
        rows: dict[str, list[Any]] = {}
        for row in session.execute(select(
                *_DIGESTED, match_filters.c.organisation, match_filters.c.local_ref).where(
                match_filters.c.partnership == partnership, match_filters.c.record_type == schema.id,
                match_filters.c.schema_version == schema.version,
                match_filters.c.organisation.in_(organisations)).order_by(
                match_filters.c.organisation, match_filters.c.local_ref)):
            rows.setdefault(row.organisation, []).append(row)
        return {organisation: _held(found, schema) for organisation, found in rows.items()}


def _size(held: HeldRecords | None) -> int:
    """An estimate of what ``held`` takes in memory: the arrays, the sorted index of its blocking keys built at
    its first comparison (:attr:`HeldRecords.blocker`: at most five integers a key), and per record its
    reference, digest and list slots (the category sets and reasons are shared between records, :func:`_held`)."""
    if held is None:
        return 64
    keys = held.dataset.block_keys
    return (held.dataset.filters.nbytes + (0 if keys is None else 6 * keys.nbytes)
            + sum(sys.getsizeof(ref) for ref in held.refs) + sum(sys.getsizeof(d) for d in held.digests)
            + 6 * 8 * len(held.refs) + 1024)


def _held(rows: list[Any], schema: Schema) -> HeldRecords:
    filters = np.frombuffer(b"".join(row.clk for row in rows), dtype="<u8").reshape(len(rows), schema.words)
    width = len(schema.signatures)
    keys = None
    if width and all(len(row.blocks) == 8 * width for row in rows):
        keys = np.frombuffer(b"".join(row.blocks for row in rows), dtype="<u8").reshape(len(rows), width)
        keys = keys.astype(np.uint64)
    # Kept and shared between requests (``filter_cache``); nothing writes to these arrays. They are not marked
    # read-only: numba compiles its Dice kernels again for read-only arrays (another signature, seconds of JIT
    # at a request), which warm_up does not cover.
    filters = filters.astype(np.uint64)
    shared: dict[frozenset[str], frozenset[str]] = {}  # one set per distinct list: a kept copy is smaller
    return HeldRecords(EncodedDataset(filters, keys),
                       [shared.setdefault(frozenset(row.categories), frozenset(row.categories)) for row in rows],
                       [None if row.confidential_reason is None else sys.intern(row.confidential_reason)
                        for row in rows],
                       [bool(row.minor) for row in rows], [row.local_ref for row in rows],
                       [row_digest(row) for row in rows])


_DIGESTED = (match_filters.c.schema_version, match_filters.c.clk, match_filters.c.blocks, match_filters.c.categories,
             match_filters.c.confidential, match_filters.c.confidential_reason, match_filters.c.minor,
             match_filters.c.updated_at)


def row_digest(row: Any) -> str:
    """SHA-256 of an enrolled record's row (the ``_DIGESTED`` columns) as the database returns it: the same
    for a row that was not touched, another once the holder re-enrolled the reference (a new filter, other
    categories or grounds, a later ``updated_at``) — so a match handle stops resolving when the record it
    matched is no longer the one enrolled."""
    text = json.dumps([row.schema_version, bytes(row.clk).hex(), bytes(row.blocks).hex(), sorted(row.categories),
                       bool(row.confidential), row.confidential_reason, bool(row.minor),
                       as_utc(row.updated_at).timestamp()], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def current_digest(session: Session, partnership: str, organisation: str, record_type: str,
                   local_ref: str) -> str | None:
    """:func:`row_digest` of ``organisation``'s record enrolled under ``local_ref`` now; None when withdrawn."""
    row = session.execute(select(*_DIGESTED).where(
        match_filters.c.partnership == partnership, match_filters.c.organisation == organisation,
        match_filters.c.record_type == record_type, match_filters.c.local_ref == local_ref)).one_or_none()
    return None if row is None else row_digest(row)
