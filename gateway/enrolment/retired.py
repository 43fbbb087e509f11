"""Removing what the discovery indexes hold for participations the register has retired.

Why: an index row (a pseudonym, ``enrolments``; a match filter, ``match_filters``) is personal data the gateway
keeps *for* one participant of one partnership, to answer hit/no-hit on its behalf. Once the register retires
that participant (``participants[].status: retired``) or the whole partnership (``status: retired``), the
gateway no longer processes anything for it — the policy denies such a holder (``holder-retired``) and a
retired partnership everything — so there is no purpose left to keep its rows for (WGS: data is kept only as
long as the partnership's purpose needs it). Enrolment already refuses a retired participant
(:func:`gateway.enrolment.service.participant_of`); this removes what it enrolled before.

When: the register only changes when a gateway process starts with a new register file, so the removal runs at
every start (:func:`gateway.enrolment.setup.remove_retired_at_start`: no statement at all when the register
retires nothing, as :func:`retirements` decides that from the register alone; two indexed look-ups per retired
partnership when there is nothing left to remove) and on demand with ``wgs-gateway pseudonyms remove-retired`` —
for what a process still running on the previous register enrolled after the others had removed it, as ``rekey``
follows ``rotate``.

Only what the register *says* is retired is removed: every row of a retired partnership, and the rows of a
participant listed as retired in an active one. Rows of a partnership the register does not name, or of an
organisation an active partnership does not list, are kept (a register file edited by mistake must not wipe a
participant's index), and no row of an active participant of an active partnership is ever selected.

How: per participation and index, a batch of at most ``BATCH`` rows at a time, each in one transaction of the
audit log together with one ``index.retired`` entry (as :mod:`gateway.enrolment.rekey`): the partnership (its
coordinating privacy officer sees it), the participant (as ``holder``, so its own privacy officer sees it
too), why, the register version and how many rows went — never a pseudonym, filter or reference. The entry is
hashed before its transaction begins, so a batch is read first and the transaction checks that it deleted
exactly the rows it read; when something else removed some meanwhile (another process doing the same), it
writes nothing and the batch is read again. Running it twice is harmless: the second run finds nothing.

The references a participant withdrew before (``match_filter_removals``: kept a while so that each process can
bring its decoded copy up to date, :mod:`gateway.enrolment.filter_cache`) go last, without an entry of their
own: they are no index rows, and each withdrawal was logged when it was made. So do the records of a replacement
it had begun and not completed (``match_filter_staged``, :mod:`gateway.enrolment.replacement`): never in the
index, and each of their batches was logged when it was sent.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import ColumnElement, Connection, Table, select
from sqlalchemy.orm import Session, sessionmaker

from audit import AuditEvent, CompanionRefused, EventType, Receipt
from audit.events import INDEX_ACTIVITY, ProcessingActivity
from audit.log import prepare
from gateway.db.engine import transaction
from gateway.enrolment.audited import delete_among
from gateway.enrolment.filter_cache import bump, forget_removals
from gateway.enrolment.rekey import AuditAppender
from gateway.enrolment.replacement import forget_participation
from gateway.enrolment.tables import enrolments, match_filter_removals, match_filter_staged, match_filters
from gateway.register.model import Register, Status

__all__ = ["ATTEMPTS", "BATCH", "IndexKeptChanging", "Removal", "RemovalResult", "Retirement", "remove_retired",
           "retirements"]

BATCH = 1000
ATTEMPTS = 5
"""How often a batch is read again when its rows keep disappearing before it is written."""

Reason = Literal["partnership-retired", "participant-retired"]
Channel = Literal["start-up", "cli"]
IndexName = Literal["pseudonyms", "filters"]


@dataclass(frozen=True)
class Retirement:
    """One participation whose index rows must go: ``organisation`` in ``partnership``, and why."""

    partnership: str
    organisation: str
    reason: Reason


@dataclass(frozen=True)
class Removal:
    """What one run removed of one participation from one index."""

    retirement: Retirement
    index: IndexName
    removed: int


@dataclass
class RemovalResult:
    removals: list[Removal] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return sum(removal.removed for removal in self.removals)


class IndexKeptChanging(Exception):
    """The rows of a batch kept disappearing before it could be written, ``ATTEMPTS`` times running: nothing of
    that batch was written (those before it were, with their entries); running it again resumes."""


class _Moved(CompanionRefused):
    """The transaction deleted other rows than the batch read: its entry's count would be wrong."""


def _reason(register: Register, partnership: str, organisation: str) -> Reason | None:
    """Why the register says ``organisation`` no longer takes part in ``partnership``; None when it takes part,
    or when the register does not name the partnership, or an active partnership does not list the
    organisation (kept: see the module). Of a retired partnership nothing is kept, listed or not."""
    found = register.partnerships.get(partnership)
    if found is None:
        return None
    if found.status == Status.RETIRED:
        return "partnership-retired"
    participant = found.participant_of_organisation(organisation)
    if participant is not None and participant.status == Status.RETIRED:
        return "participant-retired"
    return None


def _indexes() -> tuple[tuple[IndexName, Table], ...]:
    return ("pseudonyms", enrolments), ("filters", match_filters)


_LEFT_OVER = (enrolments, match_filters, match_filter_removals, match_filter_staged)
"""Every table that can hold something of a participation: a retirement is found while any of them does."""


def retirements(session: Session, register: Register) -> list[Retirement]:
    """Every retired participation that still has rows in either index, in a stable order.

    A retired partnership's participations are read from the indexes (by their primary key's prefix), so that
    a participant listed in an earlier register version is found too; a retired participant of an active
    partnership is the register's own pair. Every pair is checked against :func:`_reason` once more."""
    candidates: set[tuple[str, str]] = set()
    for partnership_id, partnership in register.partnerships.items():
        if partnership.status == Status.RETIRED:
            for table in _LEFT_OVER:
                candidates.update((partnership_id, organisation) for organisation in session.execute(
                    select(table.c.organisation).where(table.c.partnership == partnership_id).distinct()).scalars())
        else:
            candidates.update((partnership_id, p.organisation) for p in partnership.participants
                              if p.status == Status.RETIRED)
    found = []
    for partnership_id, organisation in sorted(candidates):
        reason = _reason(register, partnership_id, organisation)
        if reason is not None and any(_held(session, table, partnership_id, organisation)
                                      for table in _LEFT_OVER):
            found.append(Retirement(partnership_id, organisation, reason))
    return found


def _held(session: Session, table: Table, partnership: str, organisation: str) -> bool:
    return session.execute(select(table.c.partnership).where(
        table.c.partnership == partnership, table.c.organisation == organisation).limit(1)).first() is not None


def _mine(table: Table, retirement: Retirement) -> list[ColumnElement[bool]]:
    return [table.c.partnership == retirement.partnership, table.c.organisation == retirement.organisation]


def _next_batch(session: Session, index: IndexName, retirement: Retirement, batch: int) -> dict[str, list[str]]:
    """The next ``batch`` rows of the participation, as their keys grouped by the rest of the primary key: one
    group (``""``) of pseudonyms, or the local references per record type."""
    if index == "pseudonyms":
        keys = session.execute(select(enrolments.c.pseudonym).where(*_mine(enrolments, retirement))
                               .order_by(enrolments.c.pseudonym).limit(batch)).scalars().all()
        return {"": list(keys)} if keys else {}
    grouped: dict[str, list[str]] = {}
    for record_type, ref in session.execute(
            select(match_filters.c.record_type, match_filters.c.local_ref).where(*_mine(match_filters, retirement))
            .order_by(match_filters.c.record_type, match_filters.c.local_ref).limit(batch)):
        grouped.setdefault(record_type, []).append(ref)
    return grouped


def _delete(connection: Connection, index: IndexName, retirement: Retirement, keys: dict[str, list[str]]) -> None:
    """Delete exactly the rows read (:func:`~gateway.enrolment.audited.delete_among`, in chunks), or nothing
    (:class:`_Moved`) when some of them went meanwhile."""
    if index == "pseudonyms":
        removed = delete_among(connection, enrolments, enrolments.c.pseudonym, _mine(enrolments, retirement),
                               keys[""])
    else:  # every process's decoded copy of these records is stale once this commits (bumped before any delete),
        # and read in full again: the references withdrawn before are forgotten (``forget``), not recorded again
        for record_type in sorted(keys):
            bump(connection, retirement.partnership, retirement.organisation, record_type, forget=True)
        removed = sum(delete_among(connection, match_filters, match_filters.c.local_ref,
                                   [*_mine(match_filters, retirement), match_filters.c.record_type == record_type],
                                   refs) for record_type, refs in keys.items())
    if removed != sum(len(refs) for refs in keys.values()):
        raise _Moved("rows of the batch were removed meanwhile")


def _entry(retirement: Retirement, index: IndexName, keys: dict[str, list[str]], register: Register,
           channel: Channel, trace_id: str) -> AuditEvent:
    """The batch's ``index.retired`` entry: ids, codes and a count — nothing about any subject."""
    extra: dict[str, object] = {"index": index, "channel": channel, "reason": retirement.reason,
                                "participant": retirement.organisation,
                                "removed": sum(len(refs) for refs in keys.values())}
    if index == "filters":
        extra["record_types"] = sorted(keys)
    return AuditEvent(event_type=EventType.INDEX_RETIRED, trace_id=trace_id, span_id=secrets.token_hex(8),
                      processing_activity=ProcessingActivity(partnership=retirement.partnership,
                                                             purpose=INDEX_ACTIVITY),
                      holder=retirement.organisation, register_version=register.version, extra=extra)


def _batches(sessions: sessionmaker[Session], log: AuditAppender, register: Register, retirement: Retirement,
             index: IndexName, channel: Channel, trace_id: str, batch: int, attempts: int) -> Iterator[int]:
    """Remove the participation's rows of ``index`` a committed, audited batch at a time; yields each count."""
    while True:
        for _ in range(attempts):
            with transaction(sessions) as session:
                keys = _next_batch(session, index, retirement, batch)
            if not keys:
                return

            def within(connection: Connection, _receipts: list[Receipt],
                       keys: dict[str, list[str]] = keys) -> None:
                _delete(connection, index, retirement, keys)

            try:
                log.append_prepared([prepare(_entry(retirement, index, keys, register, channel, trace_id))], within)
            except _Moved:
                continue
            break
        else:
            raise IndexKeptChanging(f"rows of `{retirement.organisation}` in `{retirement.partnership}` kept "
                                    "changing while they were removed; run it again")
        yield sum(len(refs) for refs in keys.values())


def remove_retired(sessions: sessionmaker[Session], register: Register, log: AuditAppender, *, channel: Channel,
                   batch: int = BATCH, attempts: int = ATTEMPTS,
                   on_batch: Callable[[Retirement, IndexName, int], None] | None = None) -> RemovalResult:
    """Remove every index row of every participation ``register`` says is retired; what was removed.

    Each batch commits with its ``index.retired`` entry in ``log`` or not at all: when the log cannot be
    written, :class:`audit.AuditError` and nothing of that batch is removed (those before it stay removed, with
    their entries). ``on_batch`` hears of each committed batch (for a progress line)."""
    trace_id = secrets.token_hex(16)  # the run's entries share a trace
    with transaction(sessions) as session:
        found = retirements(session, register)
    result = RemovalResult()
    for retirement in found:
        for index, _ in _indexes():
            removed = 0
            for count in _batches(sessions, log, register, retirement, index, channel, trace_id, batch, attempts):
                removed += count
                if on_batch is not None:
                    on_batch(retirement, index, count)
            if removed:
                result.removals.append(Removal(retirement, index, removed))
        with transaction(sessions) as session:  # what is left of it: references it withdrew before (no index rows)
            forget_removals(session.connection(), retirement.partnership, retirement.organisation)
            # and the records of a replacement it had not completed (never in the index)
            forget_participation(session.connection(), retirement.partnership, retirement.organisation)
    return result
