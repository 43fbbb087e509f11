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
as a re-enrolment would have replaced the earlier one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.engine import transaction
from gateway.enrolment.tables import enrolments
from gateway.pseudonyms.keys import Domain, KeyRing
from gateway.pseudonyms.pep import Pseudonym
from gateway.pseudonyms.rotation import rekey_pseudonyms

__all__ = ["RekeyResult", "pending_rows", "rekey_index", "rows_per_version"]

BATCH = 1000


@dataclass(frozen=True)
class RekeyResult:
    """What one pass did: rows moved to ``version``, and older duplicates dropped in favour of a newer entry."""

    version: int
    moved: int
    superseded: int


def rows_per_version(connection: Connection) -> dict[int, int]:
    """Index rows per key version (counts only; nothing about subjects)."""
    rows = connection.execute(select(enrolments.c.key_version, func.count()).group_by(enrolments.c.key_version))
    return {int(version): int(count) for version, count in rows}


def pending_rows(connection: Connection, current: int) -> int:
    """How many index rows are not under ``current`` and so are invisible to discovery until re-keyed."""
    return sum(count for version, count in rows_per_version(connection).items() if version != current)


def rekey_index(sessions: sessionmaker[Session], ring: KeyRing, *, batch: int = BATCH,
                on_batch: Callable[[int], None] | None = None) -> RekeyResult:
    """Move every index row to ``ring.current``, a committed batch at a time; returns the counts.

    Each batch selects rows still under another version, so a rerun picks up exactly what is left and
    progress is guaranteed (every selected row is moved or dropped). A row under a version no longer in the
    key ring raises :class:`~gateway.pseudonyms.errors.UnknownKeyVersion` and its batch is rolled back.
    ``on_batch`` gets the number of rows each committed batch handled (for a progress bar).
    """
    current = ring.current
    moved = superseded = 0
    while True:
        with transaction(sessions) as session:
            rows = session.execute(select(enrolments.c.partnership, enrolments.c.organisation,
                                          enrolments.c.pseudonym, enrolments.c.updated_at)
                                   .where(enrolments.c.key_version != current)
                                   .order_by(enrolments.c.partnership, enrolments.c.organisation,
                                             enrolments.c.pseudonym)
                                   .limit(batch)).all()
            if not rows:
                break
            stamps = {(r.partnership, r.organisation, r.pseudonym): r.updated_at for r in rows}
            items = [((r.partnership, r.organisation, r.pseudonym), Domain(r.partnership),
                      Pseudonym.decode(r.pseudonym)) for r in rows]
            converted = [(key, after.encode()) for key, after in rekey_pseudonyms(items, ring, new_version=current)]
            # Rows already under the current version at the targets: a collision keeps the newer entry.
            at_target = _current_rows(session, current, {target for _, target in converted})
            for (partnership, organisation, before), target in converted:
                old_key = (partnership, organisation, before)
                new_key = (partnership, organisation, target)
                existing = at_target.get(new_key)
                if existing is not None:
                    if existing >= stamps[old_key]:
                        _delete(session, old_key)
                        superseded += 1
                        continue
                    _delete(session, new_key)
                    superseded += 1
                session.execute(update(enrolments).where(
                    enrolments.c.partnership == partnership, enrolments.c.organisation == organisation,
                    enrolments.c.pseudonym == before).values(pseudonym=target, key_version=current))
                at_target[new_key] = stamps[old_key]
                moved += 1
        if on_batch is not None:
            on_batch(len(rows))
    return RekeyResult(current, moved, superseded)


def _current_rows(session: Session, current: int, pseudonyms: set[str]) -> dict[tuple[str, str, str], datetime]:
    found: dict[tuple[str, str, str], datetime] = {}
    ordered = sorted(pseudonyms)
    for chunk in range(0, len(ordered), 500):
        for r in session.execute(select(enrolments.c.partnership, enrolments.c.organisation, enrolments.c.pseudonym,
                                        enrolments.c.updated_at).where(
                enrolments.c.key_version == current, enrolments.c.pseudonym.in_(ordered[chunk:chunk + 500]))):
            found[r.partnership, r.organisation, r.pseudonym] = r.updated_at
    return found


def _delete(session: Session, key: tuple[str, str, str]) -> None:
    partnership, organisation, pseudonym = key
    session.execute(delete(enrolments).where(enrolments.c.partnership == partnership,
                                             enrolments.c.organisation == organisation,
                                             enrolments.c.pseudonym == pseudonym))
