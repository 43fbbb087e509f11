"""All SQL of the windows of failed sign-ins (:mod:`gateway.console.signins`): one row per channel, reason,
target and window, shared by every gateway process.

Windows are fixed periods (POSIX time divided by the window's length), not a window per first attempt: which
attempt opens a window is then decided by one ``INSERT ... ON CONFLICT DO NOTHING`` on the row's key, the same
in every process, without a lock to take first. A window that has ended is summarised by whichever process
claims its row first; the row is deleted in the audit log's transaction that writes the summary, so a summary
is written once and a count is never lost (a claim that was not followed by its summary lapses and is taken
again).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, delete, or_, select, update
from sqlalchemy.orm import Session

from audit import CompanionRefused
from gateway.console.tables import sign_in_windows
from gateway.db.upsert import insert_on_conflict

CLAIM_SECONDS = 120.0
"""How long a claim on an ended window holds before another process may take it (its summary failed)."""

t = sign_in_windows.c


class SummaryTaken(CompanionRefused):
    """Another process took over a window this one claimed (its lease of :data:`CLAIM_SECONDS` ran out) and
    writes its summary: the claim doing its job, so the writer logs it quietly and nothing of ours is written."""


@dataclass(frozen=True)
class Window:
    """An ended window with attempts after its first, claimed for its summary."""

    channel: str
    reason: str
    target: str
    period: int
    organisation: str | None
    first_at: float
    last_at: float
    more: int


def count(session: Session, channel: str, reason: str, target: str, organisation: str | None, period: int,
          now: float) -> bool:
    """Count one attempt into its window; True when it opened the window (it gets an entry of its own)."""
    opened = session.execute(insert_on_conflict(session, sign_in_windows).values(
        channel=channel, reason=reason, target=target, period=period, organisation=organisation, first_at=now,
        last_at=now, more=0).on_conflict_do_nothing().returning(t.period)).first()
    if opened is not None:
        return True
    session.execute(update(sign_in_windows).where(
        t.channel == channel, t.reason == reason, t.target == target, t.period == period).values(
        more=t.more + 1, last_at=case((t.last_at < now, now), else_=t.last_at)))
    return False


def claim_ended(session: Session, before_period: int, now: float, claim: str) -> list[Window]:
    """Claim the windows before ``before_period`` with attempts to summarise (none claimed by a process that is
    still within :data:`CLAIM_SECONDS`), and drop the ended ones with nothing to summarise."""
    ended = t.period < before_period
    session.execute(delete(sign_in_windows).where(ended, t.more == 0))
    session.execute(update(sign_in_windows).where(
        ended, or_(t.claim.is_(None), t.claimed_at < now - CLAIM_SECONDS)).values(claim=claim, claimed_at=now))
    rows = session.execute(select(sign_in_windows).where(ended, t.claim == claim)).mappings().all()
    return [Window(r["channel"], r["reason"], r["target"], int(r["period"]), r["organisation"],
                   float(r["first_at"]), float(r["last_at"]), int(r["more"])) for r in rows]


def release(connection: Connection, windows: list[Window], claim: str) -> None:
    """Delete the summarised windows, in the transaction that writes their summaries; raises (and so nothing of
    that transaction is written) when another process took one of them meanwhile."""
    keys = [and_(t.channel == w.channel, t.reason == w.reason, t.target == w.target, t.period == w.period)
            for w in windows]
    deleted = connection.execute(delete(sign_in_windows).where(t.claim == claim, or_(*keys))).rowcount
    if deleted != len(windows):
        raise SummaryTaken("a sign-in window was claimed by another process meanwhile; its summary is theirs")
