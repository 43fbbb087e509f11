"""Moving the discovery index to the key ring's current version (``wgs-gateway pseudonyms rotate|rekey``).

Why this is its own step, apart from adding a key version: discovery computes pseudonyms under the current
version only, so any index row under another version answers no-hit for its subject. Rows end up there in
two ways — a rotation that was interrupted after the key store got its new version, and a gateway process
still running on the old key ring that enrols after the rotation — and both must be repairable by running
the same idempotent pass again, without adding yet another key version.

The pass converts every row whose ``key_version`` is not the current one (each row names its version, and any
version still in the key ring converts by one multiplication, :func:`gateway.pseudonyms.rotation.rekey_pseudonyms`),
in batches of one transaction each: a batch is written completely or not at all, and an interrupted pass is
resumed by running it again. When a converted row lands on a subject that already has a row under the current
version (the old gateway re-enrolled a subject the rotation had already moved), the entry updated last is kept,
as a re-enrolment would have replaced the earlier one. A moved row's tag of the participant's own pseudonym
(``enrolments.own_tag``, migration 0042) is moved with it — computed from the new partnership pseudonym, so
rows from before 0042 get one too. Then each pass gives the rows already under the current version that have
no tag (enrolled before 0042, or by a gateway process of older code during a rolling upgrade) theirs: without
it, a related subject the holder names costs one conversion more until the subject is enrolled again.

Every batch is audited like an enrolment batch (:mod:`gateway.enrolment.audited`): re-keying rewrites what the
index holds about every enrolled subject, processing a privacy officer must be able to account for. A batch
commits in the audit log's own transaction together with one ``index.rekeyed`` entry per partnership it
touched (under that partnership, so its coordinating privacy officer sees it): the command, the key versions
moved from and to, and how many rows were moved and how many older duplicates dropped — counts, never a
pseudonym. There is no batch without its entries and no entry without its batch. The entry is hashed before
its transaction begins, so a batch is planned first (read, converted, counted) and the transaction checks
that the rows it plans on are still as read before writing; when something changed them meanwhile (a
gateway enrolling), it writes nothing and the batch is planned again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from audit import AuditEvent, CompanionRefused, EventType, Receipt
from audit.events import INDEX_ACTIVITY, ProcessingActivity
from audit.log import PreparedEvent, prepare
from gateway.db.engine import transaction
from gateway.enrolment.tables import enrolments
from gateway.pseudonyms.keys import Domain, KeyRing
from gateway.pseudonyms.pep import Pseudonym
from gateway.pseudonyms.rotation import rekey_pseudonyms
from gateway.pseudonyms.transcryptor import Transcryptor

__all__ = [
    "AuditAppender", "IndexKeptMoving", "RekeyResult", "pending_rows", "rekey_index", "rotation_entry",
    "rows_per_version", "untagged_rows",
]

BATCH = 1000
ATTEMPTS = 5
"""How often a batch is planned again when enrolments keep changing its rows before it is written."""

Command = Literal["rotate", "rekey"]
Key = tuple[str, str, str]  # (partnership, organisation, pseudonym): an index row


class AuditAppender(Protocol):
    """Where a batch's entries go (:class:`audit.AuditLog`): appended with the batch as their companion."""

    def append_prepared(self, prepared: Sequence[PreparedEvent],
                        within: Callable[[Connection, list[Receipt]], None] | None = None) -> list[Receipt]: ...


class IndexKeptMoving(Exception):
    """Enrolments changed a batch's rows before it could be written, ``ATTEMPTS`` times running: nothing of
    that batch was written (those before it were, with their entries); running the command again resumes."""


class _Moved(CompanionRefused):
    """The rows a batch was planned on changed before its transaction: its entries' counts would be wrong."""


@dataclass(frozen=True)
class RekeyResult:
    """What one pass did: rows moved to ``version``, older duplicates dropped in favour of a newer entry, and
    rows under ``version`` given the tag of their participant's own pseudonym they lacked."""

    version: int
    moved: int
    superseded: int
    tagged: int = 0


def rows_per_version(connection: Connection) -> dict[int, int]:
    """Index rows per key version (counts only; nothing about subjects)."""
    rows = connection.execute(select(enrolments.c.key_version, func.count()).group_by(enrolments.c.key_version))
    return {int(version): int(count) for version, count in rows}


def pending_rows(connection: Connection, current: int) -> int:
    """How many index rows are not under ``current`` and so are invisible to discovery until re-keyed."""
    return sum(count for version, count in rows_per_version(connection).items() if version != current)


def untagged_rows(connection: Connection, current: int) -> int:
    """How many index rows under ``current`` lack the tag of their participant's own pseudonym (counts only)."""
    return int(connection.execute(select(func.count()).select_from(enrolments).where(
        enrolments.c.key_version == current, enrolments.c.own_tag.is_(None))).scalar_one())


@dataclass
class _Plan:
    """One batch, worked out before its transaction: the rows as read, the changes, and their counts."""

    rows: dict[Key, datetime]  # the rows under another version, as read (with when each was last enrolled)
    landing: set[str]  # the pseudonyms the rows convert to
    targets: dict[Key, datetime]  # rows already under the current version at those pseudonyms, as read
    steps: list[tuple[Key, str | None]] = field(default_factory=list)  # (row, new pseudonym), or None: drop it
    own: dict[Key, str] = field(default_factory=dict)  # each moved row's own-pseudonym tag under the new version
    moved: dict[str, int] = field(default_factory=dict)  # per partnership
    superseded: dict[str, int] = field(default_factory=dict)
    versions: dict[str, set[int]] = field(default_factory=dict)  # the versions moved from, per partnership


def _read(connection: Connection | Session, current: int, batch: int) -> dict[Key, tuple[datetime, int]]:
    """The first ``batch`` rows not under ``current``: when each was last enrolled, and its version."""
    rows = connection.execute(select(enrolments.c.partnership, enrolments.c.organisation, enrolments.c.pseudonym,
                                     enrolments.c.updated_at, enrolments.c.key_version)
                              .where(enrolments.c.key_version != current)
                              .order_by(enrolments.c.partnership, enrolments.c.organisation, enrolments.c.pseudonym)
                              .limit(batch)).all()
    return {(r.partnership, r.organisation, r.pseudonym): (r.updated_at, r.key_version) for r in rows}


def _plan(session: Session, ring: KeyRing, batch: int) -> _Plan | None:
    """The next batch's changes, or None when every row is under the current version. A row under a version
    no longer in the key ring raises :class:`~gateway.pseudonyms.errors.UnknownKeyVersion`."""
    current = ring.current
    read = _read(session, current, batch)
    if not read:
        return None
    items = [(key, Domain(key[0]), Pseudonym.decode(key[2])) for key in read]
    moved = list(rekey_pseudonyms(items, ring, new_version=current))
    converted = [(key, after.encode()) for key, after in moved]
    landing = {target for _, target in converted}
    plan = _Plan({key: stamp for key, (stamp, _) in read.items()}, landing, _current_rows(session, current, landing),
                 own=_own_tags(Transcryptor(ring), moved))
    at_target = dict(plan.targets)
    for old_key, target in converted:
        partnership, organisation, _ = old_key
        new_key = (partnership, organisation, target)
        plan.versions.setdefault(partnership, set()).add(read[old_key][1])
        existing = at_target.get(new_key)
        if existing is not None:  # a collision keeps the newer entry
            plan.superseded[partnership] = plan.superseded.get(partnership, 0) + 1
            if existing >= plan.rows[old_key]:
                plan.steps.append((old_key, None))
                continue
            plan.steps.append((new_key, None))
        plan.steps.append((old_key, target))
        at_target[new_key] = plan.rows[old_key]
        plan.moved[partnership] = plan.moved.get(partnership, 0) + 1
    return plan


def _apply(connection: Connection, plan: _Plan, current: int, batch: int) -> None:
    """Write ``plan`` on ``connection`` (inside the log's transaction) if its rows are still as it read them;
    otherwise :class:`_Moved` and nothing is written."""
    now = {key: stamp for key, (stamp, _) in _read(connection, current, batch).items()}
    if now != plan.rows or _current_rows(connection, current, plan.landing) != plan.targets:
        raise _Moved("the index changed meanwhile")
    for (partnership, organisation, pseudonym), target in plan.steps:
        row = (enrolments.c.partnership == partnership, enrolments.c.organisation == organisation,
               enrolments.c.pseudonym == pseudonym)
        if target is None:
            connection.execute(delete(enrolments).where(*row))
        else:
            connection.execute(update(enrolments).where(*row).values(
                pseudonym=target, key_version=current, own_tag=plan.own[partnership, organisation, target]))


def _own_tags(transcryptor: Transcryptor, moved: list[tuple[Key, Pseudonym]]) -> dict[Key, str]:
    """Each moved row's tag of the participant's own pseudonym (``enrolments.own_tag``) under the new version,
    by the row's new key: the participant's pseudonym of the same subject, from the new partnership pseudonym (one
    multiplication), tagged (``Transcryptor.index_tag``). Kept as it was, it would tag the subject's pseudonym of
    the old version, which the look-up by tag never finds (so related subjects would cost the conversion again);
    computed, rows from before migration 0042 get theirs too."""
    own: dict[Key, str] = {}
    for (partnership, organisation, _), shared in moved:
        mine = transcryptor.convert(shared, Domain(partnership), Domain(partnership, organisation),
                                    target_version=shared.key_version)
        own[partnership, organisation, shared.encode()] = transcryptor.index_tag(
            mine.encode(), mine.key_version, partnership, organisation)
    return own


def _untagged(connection: Connection | Session, current: int, batch: int) -> list[Key]:
    """The first ``batch`` rows under ``current`` without the tag of their participant's own pseudonym."""
    rows = connection.execute(select(enrolments.c.partnership, enrolments.c.organisation, enrolments.c.pseudonym)
                              .where(enrolments.c.key_version == current, enrolments.c.own_tag.is_(None))
                              .order_by(enrolments.c.partnership, enrolments.c.organisation, enrolments.c.pseudonym)
                              .limit(batch)).all()
    return [(r.partnership, r.organisation, r.pseudonym) for r in rows]


def _tag(connection: Connection, tags: dict[Key, str], current: int) -> None:
    """Give each row of ``tags`` its tag, inside the log's transaction, if it is still under ``current`` without
    one; otherwise (an enrolment replaced or removed it meanwhile) :class:`_Moved` and nothing is written, since
    the batch's entries would count rows it did not tag."""
    for (partnership, organisation, pseudonym), tag in tags.items():
        done = connection.execute(update(enrolments).where(
            enrolments.c.partnership == partnership, enrolments.c.organisation == organisation,
            enrolments.c.pseudonym == pseudonym, enrolments.c.key_version == current,
            enrolments.c.own_tag.is_(None)).values(own_tag=tag))
        if done.rowcount != 1:
            raise _Moved("the index changed meanwhile")


def _tagging_entries(tags: dict[Key, str], current: int, command: Command, trace_id: str) -> list[AuditEvent]:
    """One ``index.rekeyed`` entry per partnership of a tagging batch: no row moved, how many were tagged."""
    tagged: dict[str, int] = {}
    for partnership, _, _ in tags:
        tagged[partnership] = tagged.get(partnership, 0) + 1
    span_id = secrets.token_hex(8)
    return [_rekeyed(partnership, command, [current], current, trace_id, span_id, moved=0, superseded=0,
                     tagged=count) for partnership, count in sorted(tagged.items())]


def _tags_of(session: Session, transcryptor: Transcryptor, current: int, batch: int) -> dict[Key, str] | None:
    """The next tagging batch: each of the first ``batch`` untagged rows under ``current`` with its tag
    (:func:`_own_tags`); None when no row lacks one."""
    rows = _untagged(session, current, batch)
    return _own_tags(transcryptor, [(key, Pseudonym.decode(key[2])) for key in rows]) if rows else None


_Planned = TypeVar("_Planned")


def _committed_batches(sessions: sessionmaker[Session], log: AuditAppender, attempts: int,
                       plan: Callable[[Session], _Planned | None], entries: Callable[[_Planned], list[AuditEvent]],
                       write: Callable[[Connection, _Planned], None], kept_moving: str) -> Iterator[_Planned]:
    """Each batch once committed: ``plan``ned in a transaction of its own (None: nothing left), then written
    (``write``) in the audit log's transaction with its ``entries``; planned again when ``write`` finds its rows
    changed meanwhile (:class:`_Moved`: nothing written), :class:`IndexKeptMoving` after ``attempts`` times."""
    while True:
        for _ in range(attempts):
            with transaction(sessions) as session:
                planned = plan(session)
            if planned is None:
                return

            def within(connection: Connection, _receipts: list[Receipt], planned: _Planned = planned) -> None:
                write(connection, planned)

            try:
                log.append_prepared([prepare(e) for e in entries(planned)], within)
            except _Moved:
                continue
            break
        else:
            raise IndexKeptMoving(kept_moving)
        yield planned


def _entries(plan: _Plan, current: int, command: Command, trace_id: str) -> list[AuditEvent]:
    """One ``index.rekeyed`` entry per partnership of the batch: counts and key versions only."""
    span_id = secrets.token_hex(8)
    return [_rekeyed(partnership, command, sorted(versions), current, trace_id, span_id,
                     moved=plan.moved.get(partnership, 0), superseded=plan.superseded.get(partnership, 0))
            for partnership, versions in sorted(plan.versions.items())]


def _rekeyed(partnership: str, command: Command, from_versions: list[int], current: int, trace_id: str,
             span_id: str, **counts: int) -> AuditEvent:
    """A batch's ``index.rekeyed`` entry for ``partnership`` (under it, so its coordinating officer sees it): the
    command, the key versions and the batch's ``counts`` for that partnership — never a pseudonym."""
    return AuditEvent(event_type=EventType.INDEX_REKEYED, trace_id=trace_id, span_id=span_id,
                      processing_activity=ProcessingActivity(partnership=partnership, purpose=INDEX_ACTIVITY),
                      extra={"index": "pseudonyms", "channel": "cli", "command": command,
                             "from_versions": from_versions, "key_version": current, **counts})


def rotation_entry(from_version: int, key_version: int) -> AuditEvent:
    """The ``index.rekeyed`` entry of the rotation itself (``rotate`` made ``key_version`` current): zero rows
    (each batch that moves rows has entries of its own), under no partnership (the key is every one's). Without
    it a rotation of an empty index changed the key without a trace in the log."""
    return AuditEvent(event_type=EventType.INDEX_REKEYED, trace_id=secrets.token_hex(16),
                      span_id=secrets.token_hex(8),
                      extra={"index": "pseudonyms", "channel": "cli", "command": "rotate",
                             "from_versions": [from_version], "key_version": key_version, "moved": 0,
                             "superseded": 0})


def rekey_index(sessions: sessionmaker[Session], ring: KeyRing, log: AuditAppender, *, command: Command = "rekey",
                batch: int = BATCH, attempts: int = ATTEMPTS,
                on_batch: Callable[[int], None] | None = None) -> RekeyResult:
    """Move every index row to ``ring.current``, a committed and audited batch at a time, then give the rows
    under it that lack the tag of their participant's own pseudonym theirs; returns the counts.

    Each batch selects rows still under another version, so a rerun picks up exactly what is left and
    progress is guaranteed (every selected row is moved or dropped). A row under a version no longer in the
    key ring raises :class:`~gateway.pseudonyms.errors.UnknownKeyVersion` and nothing of its batch is written.
    The batch commits with its entries in ``log`` (``command`` says which command ran); when the log cannot be
    written, :class:`audit.AuditError` and nothing of the batch is written. ``on_batch`` gets the number of
    rows each committed batch handled (for a progress bar).
    """
    current = ring.current
    moved = superseded = tagged = 0
    trace_id = secrets.token_hex(16)  # the run's entries share a trace
    for plan in _committed_batches(
            sessions, log, attempts, lambda session: _plan(session, ring, batch),
            lambda plan: _entries(plan, current, command, trace_id),
            lambda connection, plan: _apply(connection, plan, current, batch),
            "enrolments kept changing the rows being re-keyed; run the command again"):
        moved += sum(plan.moved.values())
        superseded += sum(plan.superseded.values())
        if on_batch is not None:
            on_batch(len(plan.rows))
    transcryptor = Transcryptor(ring)
    for tags in _committed_batches(
            sessions, log, attempts, lambda session: _tags_of(session, transcryptor, current, batch),
            lambda tags: _tagging_entries(tags, current, command, trace_id),
            lambda connection, tags: _tag(connection, tags, current),
            "enrolments kept changing the rows being tagged; run the command again"):
        tagged += len(tags)
        if on_batch is not None:
            on_batch(len(tags))
    return RekeyResult(current, moved, superseded, tagged)


def _current_rows(connection: Connection | Session, current: int, pseudonyms: set[str]) -> dict[Key, datetime]:
    found: dict[Key, datetime] = {}
    ordered = sorted(pseudonyms)
    for chunk in range(0, len(ordered), 500):
        for r in connection.execute(select(enrolments.c.partnership, enrolments.c.organisation,
                                           enrolments.c.pseudonym, enrolments.c.updated_at).where(
                enrolments.c.key_version == current, enrolments.c.pseudonym.in_(ordered[chunk:chunk + 500]))):
            found[r.partnership, r.organisation, r.pseudonym] = r.updated_at
    return found
