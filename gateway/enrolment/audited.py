"""Every change to a discovery index is one audit entry, written in the transaction that makes the change.

An enrolment batch (pseudonyms, ``POST /v1/enrolments``; match filters, ``POST /v1/enrolments/filters``) changes
what the index says about which participant holds data on which subjects: processing of personal data by the
gateway that a privacy officer must be able to account for. So the batch's writes run as the companion of its
``index.enrolment`` entry (:class:`audit.writer.CompanionRow`, on the audit writer's thread, inside the log's
transaction): both are durable, or neither. If the log cannot be written the batch is refused with 503 and the
index is as it was; a crash between the two cannot happen, as there is no "between". A defect in the index
writes (an exception that is no database failure: a bug) is no outage of the log and no reason to retry: it is
a 500 that says nothing was enrolled, one error line with the exception's type, and an entry of the failed
batch (status ``error``, counts 0) — as the exchange and the escalation workflow treat their defects.

The entry carries counts, never identifiers, pseudonyms, filters or local references: who enrolled (the
organisation and system, as requester), in which partnership, which record types and categories, and how many
subjects were added, updated and removed, and how many of them are confidential or minors.

The counts must be the ones the transaction made, yet the entry is hashed before the transaction begins. So
they are read beforehand (:meth:`IndexChange.expect`), and the transaction checks them as it writes
(:meth:`IndexChange.apply` counts what its statements did): when another batch of the same subjects got in
between, the transaction is refused (:class:`IndexMoved`, nothing written) and the batch is counted and tried
again. One entry per batch, not per subject: a thousand subjects cost one entry and share the writer's commit
with whatever else is being logged (group commit).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import Column, ColumnElement, Connection, Table, bindparam, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from audit import AsyncAuditWriter, AuditError, AuditEvent, CompanionRefused, CompanionRow, EventType, Status
from audit.events import INDEX_ACTIVITY, ProcessingActivity, Requester
from gateway.db.engine import transaction
from gateway.db.upsert import insert_on_conflict
from gateway.errors import Conflict, GatewayError, ServiceUnavailable

log = structlog.get_logger("gateway.enrolment")

ATTEMPTS = 5
"""How often a batch is counted again when other batches of the same subjects keep getting in first."""


@dataclass(frozen=True)
class IndexCounts:
    """What one batch did to the index, in numbers (the entry's and, in part, the answer's)."""

    added: int = 0
    updated: int = 0
    removed: int = 0


@dataclass(frozen=True)
class EntryTrace:
    """The request's W3C trace context, so the entry joins the request's trace (random when there is none)."""

    trace_id: str = field(default_factory=lambda: secrets.token_hex(16))
    span_id: str = field(default_factory=lambda: secrets.token_hex(8))
    parent_span_id: str | None = None


class IndexChange(Protocol):
    """One batch, ready to be written: who, what (without a single identifier), and how to write it."""

    @property
    def partnership(self) -> str: ...

    @property
    def organisation(self) -> str:
        """The enrolling participant (the entry's requester)."""

    @property
    def system(self) -> str:
        """The partner system that sent the batch."""

    @property
    def index(self) -> str:
        """Which index: ``pseudonyms`` or ``filters``."""

    def described(self) -> dict[str, object]:
        """The batch's own members of the entry's ``extra`` (record types, subjects sent, grounds counts)."""
        ...

    def categories(self) -> list[str]:
        """The data categories the batch enrols (sorted)."""

    def expect(self, session: Session) -> IndexCounts:
        """What writing the batch now would do (read in a transaction of its own)."""

    def apply(self, connection: Connection) -> IndexCounts:
        """Write the batch on ``connection`` (inside the log's transaction) and say what the statements did."""


class IndexMoved(CompanionRefused):
    """Another batch changed the same subjects between counting and writing: the counts in the entry would be
    wrong, so nothing is written and the batch is counted again."""


class _Defect(CompanionRefused):
    """The batch's index writes raised what no code path expects (a bug, not a database failure): nothing is
    written, and :func:`write_logged` logs and answers it. A :class:`CompanionRefused`, because it is no fault
    of the log — the writer would report it as one (an error line of its own, beside the one this gets)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class EnrolmentFailed(GatewayError):
    """A defect while writing a batch: the generic 500, saying that nothing was enrolled (so a participant
    knows the index is as it was and may send the batch again)."""

    status, slug, title = 500, "internal-error", "Internal error"


def entry_for(change: IndexChange, counts: IndexCounts, trace: EntryTrace, *,
              error_type: str | None = None) -> AuditEvent:
    """The batch's ``index.enrolment`` entry: counts and codes only; with ``error_type``, the entry of a batch
    that failed on a defect of that kind (status ``error``, nothing written)."""
    return AuditEvent(
        event_type=EventType.INDEX_ENROLMENT, trace_id=trace.trace_id, span_id=trace.span_id,
        parent_span_id=trace.parent_span_id,
        processing_activity=ProcessingActivity(partnership=change.partnership, purpose=INDEX_ACTIVITY),
        requester=Requester(org=change.organisation, system=change.system), categories=tuple(change.categories()),
        status=Status.OK if error_type is None else Status.ERROR,
        extra={"index": change.index, **change.described(), **asdict(counts)}
        | ({} if error_type is None else {"error_type": error_type}))


async def _audit_defect(writer: AsyncAuditWriter, change: IndexChange, trace: EntryTrace, exc: Exception) -> None:
    """After a defect in a batch's index writes (nothing of it was written): one error line naming the kind of
    failure only — an exception's text may name a person — and an entry of the failed batch (counts 0, status
    ``error``), as the exchange (``_audit_defect``) and the escalation workflow (``_not_applied``) log their
    defects: an unexpected failure fails closed and is audited. The 500 stands if that entry fails too."""
    log.error("enrolment_failed_by_defect", index=change.index, error_type=type(exc).__name__)
    try:
        await writer.record([entry_for(change, IndexCounts(), trace, error_type=type(exc).__name__)])
    except Exception as failure:
        log.error("defect_not_audited", error_type=type(failure).__name__)


async def write_logged(writer: AsyncAuditWriter | None, sessions: sessionmaker[Session], change: IndexChange,
                       trace: EntryTrace | None = None, *, attempts: int = ATTEMPTS) -> IndexCounts:
    """Write ``change`` and its entry in one transaction; the counts it made.

    503 when the log cannot be written (nothing changed); 409 when other batches of the same subjects kept
    getting in first ``attempts`` times (nothing changed either; a retry will do); 500 when the index writes
    fail on a defect (nothing changed; the failure is logged and audited, :func:`_audit_defect`)."""
    if writer is None:  # a service built without the log must not change the index unlogged
        raise ServiceUnavailable("the audit log is not available; nothing was enrolled")
    trace = trace or EntryTrace()

    def expect() -> IndexCounts:
        with transaction(sessions) as session:
            return change.expect(session)

    for _ in range(attempts):
        expected = await asyncio.to_thread(expect)

        def within(connection: Connection, expected: IndexCounts = expected) -> None:
            try:
                done = change.apply(connection)
            except (SQLAlchemyError, IndexMoved):  # the database failed: the log's transaction failed with it
                raise  # (503); or others got in between the count and the write: counted again, tried again
            except Exception as exc:
                raise _Defect(exc) from exc
            if done != expected:
                raise IndexMoved(f"the index changed meanwhile ({done} instead of {expected})")

        try:
            await writer.record([entry_for(change, expected, trace)], CompanionRow(None, None, within))
        except AuditError as exc:
            if isinstance(exc.__cause__, IndexMoved):
                continue
            if isinstance(exc.__cause__, _Defect):
                await _audit_defect(writer, change, trace, exc.__cause__.cause)
                raise EnrolmentFailed("the gateway could not complete the enrolment; nothing was enrolled") from None
            log.error("audit_write_failed", error_type=type(exc).__name__, cause=type(exc.__cause__).__name__)
            raise ServiceUnavailable("the audit log could not be written; nothing was enrolled") from exc
        except Exception as exc:  # the guard refused the entry, or the writer is not running: no entry, no change
            log.error("audit_write_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("the audit log could not be written; nothing was enrolled") from exc
        return expected
    raise Conflict("other enrolments of the same subjects kept changing the index; nothing was enrolled, "
                   "send the batch again")


IN_CHUNK = 500
"""Keys per ``IN (...)`` list of an index statement: well within both databases' limits on bound parameters."""


def held_among(session: Session, column: ColumnElement[Any], mine: Sequence[ColumnElement[bool]],
               keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` the index rows ``mine`` selects hold in ``column``, asked ``IN_CHUNK`` keys at a time:
    what a batch will update rather than add (and withdraw rather than miss), for its entry's counts."""
    held: set[str] = set()
    for start in range(0, len(keys), IN_CHUNK):
        held.update(session.execute(select(column).where(*mine, column.in_(keys[start:start + IN_CHUNK]))).scalars())
    return held


def delete_among(connection: Connection, table: Table, column: ColumnElement[Any],
                 mine: Sequence[ColumnElement[bool]], keys: Sequence[str]) -> int:
    """Delete the rows ``mine`` selects whose ``column`` is one of ``keys``, ``IN_CHUNK`` at a time; how many
    went (the entry counts what was withdrawn, not what was asked)."""
    removed = 0
    for start in range(0, len(keys), IN_CHUNK):
        removed += connection.execute(delete(table).where(*mine, column.in_(keys[start:start + IN_CHUNK]))).rowcount
    return removed


def add_or_update(connection: Connection, table: Table, key: Column[Any], conflict: Sequence[Column[Any]],
                  mine: Sequence[ColumnElement[bool]], rows: list[dict[str, Any]], replaced: Sequence[str],
                  moved: str) -> tuple[int, int]:
    """Add ``rows`` to an index, updating the ``replaced`` columns of those whose ``key`` it holds already;
    (added, updated), counted from the statements themselves.

    ``INSERT ... ON CONFLICT DO NOTHING`` (which says which rows it inserted), then an UPDATE of the others,
    not one upsert: two batches of the same keys at once (a retry, two workers) still both succeed — the second
    waits for the first's insert and updates — each batch is still all or nothing, and rows in key order lock
    in the same order, so two batches cannot deadlock. A row another batch withdrew between the two statements
    fails the check: :class:`IndexMoved` with ``moved`` (the batch is tried again)."""
    if not rows:
        return 0, 0
    statement = insert_on_conflict(connection, table).on_conflict_do_nothing(index_elements=list(conflict))
    added = set(connection.execute(statement.returning(key), rows).scalars())
    others = [{f"new_{name}": row[name] for name in (key.name, *replaced)}
              for row in rows if row[key.name] not in added]
    if others:
        updated = connection.execute(update(table).where(*mine, key == bindparam(f"new_{key.name}")).values(
            {name: bindparam(f"new_{name}") for name in replaced}), others).rowcount
        if updated != len(others):
            raise IndexMoved(moved)
    return len(added), len(others)

