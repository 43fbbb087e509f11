"""Anomaly flags for insider-misuse monitoring (DOMAIN.md case 8): a partner system or user whose request
volume, denial rate or out-of-hours share today departs sharply from its own baseline.

Pure functions over per-actor daily activity, plus the query that builds that activity from the log. The
thresholds are deliberately simple and explainable — a flag is a prompt for a privacy officer to look, not a
verdict (GDPR art. 22: no automated decision follows from it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, select

from audit.errors import CompanionRefused
from audit.log import Receipt
from audit.review import EntryScope, scope_condition
from audit.store import utc
from audit.tables import audit_anomaly_flags, audit_entries
from audit.writer import CompanionRow

MIN_BASELINE_DAYS = 3
MIN_REQUESTS = 10
VOLUME_FACTOR = 3.0
RATE_JUMP = 0.3  # a denial / out-of-hours share at least this much above the baseline share


@dataclass
class Activity:
    decisions: int = 0
    denials: int = 0
    out_of_hours: int = 0


@dataclass(frozen=True)
class Flag:
    actor: str
    organisation: str
    day: date
    metric: str  # "volume" | "denial-rate" | "out-of-hours"
    observed: str
    baseline: str


def detect(actor: str, organisation: str, day: date, today: Activity, history: list[Activity]) -> list[Flag]:
    """Flags for one actor on ``day`` given its activity on earlier days (empty days count as zero)."""
    if len(history) < MIN_BASELINE_DAYS or today.decisions < MIN_REQUESTS:
        return []
    flags = []
    mean = sum(a.decisions for a in history) / len(history)
    if today.decisions > VOLUME_FACTOR * max(mean, 1.0):
        flags.append(Flag(actor, organisation, day, "volume", str(today.decisions), f"{mean:.1f}/day"))
    base_total = sum(a.decisions for a in history)
    for metric, field in (("denial-rate", "denials"), ("out-of-hours", "out_of_hours")):
        share = getattr(today, field) / today.decisions
        base = sum(getattr(a, field) for a in history) / base_total if base_total else 0.0
        if share - base >= RATE_JUMP:
            flags.append(Flag(actor, organisation, day, metric, f"{share:.2f}", f"{base:.2f}"))
    return flags


def daily_activity(engine: Engine, day: date, days_back: int,
                   scope: EntryScope) -> dict[tuple[str, str], dict[date, Activity]]:
    """(actor, organisation) -> UTC day -> activity, from the policy decisions in the log that ``scope``
    covers as requester or partnership (:func:`audit.review.scope_condition`): a coordinating officer's
    flags count an actor's activity in the coordinated partnerships only, never in partnerships the officer
    cannot review.

    The window is bounded by aware UTC instants, and each entry's day is taken in UTC: a naive bound or a
    plain ``.date()`` would follow a PostgreSQL server's own time zone instead."""
    visible = scope_condition(scope, as_holder=False)
    if visible is None:
        return {}
    first = date.fromordinal(max(date.min.toordinal(), day.toordinal() - days_back))  # no overflow at year 1
    t = audit_entries.c
    query = select(t.recorded_at, t.requester_org, t.decision, t.canonical).where(
        visible, t.event_type == "policy.decided",
        t.recorded_at >= datetime.combine(first, time.min, UTC),
        t.recorded_at <= datetime.combine(day, time.max, UTC))  # not "< next day": 9999-12-31 has none
    activity: dict[tuple[str, str], dict[date, Activity]] = defaultdict(lambda: defaultdict(Activity))
    with engine.connect() as connection:
        for row in connection.execute(query):
            event = json.loads(row.canonical)["event"]
            requester = event.get("requester") or {}
            actor = requester.get("system") or requester.get("user") or "unknown"
            cell = activity[(actor, row.requester_org or "")][utc(row.recorded_at).date()]
            cell.decisions += 1
            cell.denials += row.decision == "deny"
            cell.out_of_hours += "outside-office-hours" in event.get("reasons", [])
    return activity


def baseline(per_day: Mapping[date, Activity], day: date) -> list[Activity]:
    """The actor's earlier days for :func:`detect`: every day from its first active day in ``per_day``
    up to the day before ``day``, a day without decisions counting as zero.

    Leaving quiet days out would make an actor that is busy once a week look as busy every day, and so hide
    a real jump in volume. Starting at the first active day (rather than at the window's start) keeps
    MIN_BASELINE_DAYS meaningful: an actor first seen yesterday has one day of history, not fourteen."""
    active = [d for d, a in per_day.items() if d < day and a.decisions]
    if not active:
        return []
    start = min(active)
    return [per_day.get(start + timedelta(days=n), Activity()) for n in range((day - start).days)]


def flags_for_day(engine: Engine, day: date, scope: EntryScope, days_back: int = 14) -> list[Flag]:
    """Flags on ``day`` (UTC) for the actors whose decisions ``scope`` covers, against the last ``days_back``
    days."""
    found: list[Flag] = []
    for (actor, organisation), per_day in sorted(daily_activity(engine, day, days_back, scope).items()):
        found += detect(actor, organisation, day, per_day.get(day, Activity()), baseline(per_day, day))
    return found


FlagKey = tuple[str, str, date, str]
"""What a flag is logged once for: actor, its organisation, day and metric."""


def flag_key(flag: Flag) -> FlagKey:
    return flag.actor, flag.organisation, flag.day, flag.metric


def logged_flags(engine: Engine, flags: list[Flag]) -> set[FlagKey]:
    """Which of ``flags`` the log holds already as ``anomaly.flagged`` entries (whichever process wrote them).

    Why the log and not a process's memory: every gateway process, and each one again after a restart,
    would otherwise log the day's flags once more, and the log would say an actor was flagged several times.
    Why the log and not only :data:`~audit.tables.audit_anomaly_flags`: entries written before that table
    existed have no row in it. This look-up only spares a listing the write; what makes a flag's entry unique
    is :func:`flag_companion`, since two processes may both look before either writes."""
    if not flags:
        return set()
    wanted = {flag_key(flag) for flag in flags}
    t = audit_entries.c
    query = select(t.requester_org, t.canonical).where(
        t.event_type == "anomaly.flagged", t.requester_org.in_(sorted({flag.organisation for flag in flags})),
        # a flag is logged when it is first shown, never before its day begins
        t.recorded_at >= datetime.combine(min(flag.day for flag in flags), time.min, UTC))
    found: set[FlagKey] = set()
    with engine.connect() as connection:
        for row in connection.execute(query):
            event = json.loads(row.canonical)["event"]
            extra, reasons = event.get("extra") or {}, event.get("reasons") or []
            try:
                key = (str(extra.get("actor")), row.requester_org, date.fromisoformat(str(extra.get("day"))),
                       str(reasons[0]) if reasons else "")
            except ValueError:
                continue  # not one this module wrote: it stands for no flag
            if key in wanted:
                found.add(key)
    return found


class FlagLoggedAlready(CompanionRefused):
    """Another listing (of this process or another one) committed the flag's entry first: this one's
    transaction is refused, nothing of it is written, and the flag stands logged once."""


_FLAG_ROW = and_(audit_anomaly_flags.c.actor == bindparam("actor"),
                 audit_anomaly_flags.c.organisation == bindparam("organisation"),
                 audit_anomaly_flags.c.day == bindparam("day"), audit_anomaly_flags.c.metric == bindparam("metric"))
_FLAG_HELD = select(audit_anomaly_flags.c.log_index).where(_FLAG_ROW)


def _key_row(flag: Flag) -> dict[str, Any]:
    return {"actor": flag.actor, "organisation": flag.organisation, "day": flag.day, "metric": flag.metric}


def flag_companion(flag: Flag) -> CompanionRow:
    """The row that makes ``flag``'s ``anomaly.flagged`` entry the only one for its key
    (:data:`~audit.tables.audit_anomaly_flags`), committed with it.

    Its precondition refuses (:class:`FlagLoggedAlready`) when the row is there already: appends are serialised
    by the log's append lock, so it sees every entry committed before, by any process, and the refusal is an
    expected one (logged quietly). Two callers of one batch with the same flag would both pass it; the primary
    key then refuses the second. Either way only that caller fails, never its batch's others
    (:class:`~audit.writer.AsyncAuditWriter` leaves a refused caller out of the batch, and writes a batch whose
    row clashed one by one)."""
    key = _key_row(flag)

    def precondition(connection: Connection) -> None:
        if connection.execute(_FLAG_HELD, key).first() is not None:
            raise FlagLoggedAlready("the flag was logged by another listing first")

    def build(receipts: list[Receipt]) -> dict[str, Any]:
        return {**key, "log_index": receipts[0].index}

    return CompanionRow(audit_anomaly_flags, build, precondition)


def flag_logged(engine: Engine, flag: Flag) -> bool:
    """Whether ``flag``'s row is committed (by any process): after a write of its entry failed, whether that
    was because another listing logged it first."""
    with engine.connect() as connection:
        return connection.execute(_FLAG_HELD, _key_row(flag)).first() is not None
