"""Anomaly flags for insider-misuse monitoring (DOMAIN.md case 8): a partner system or user whose request
volume, denial rate or out-of-hours share today departs sharply from its own baseline.

Pure functions over per-actor daily activity, plus the query that builds that activity from the log. The
thresholds are deliberately simple and explainable — a flag is a prompt for a privacy officer to look, not a
verdict (GDPR art. 22: no automated decision follows from it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, select

from audit.tables import audit_entries

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
                   organisations: frozenset[str] | None = None) -> dict[tuple[str, str], dict[date, Activity]]:
    """(actor, organisation) -> day -> activity, from the policy decisions in the log (UTC days)."""
    start = datetime.combine(day - timedelta(days=days_back), datetime.min.time())
    end = datetime.combine(day + timedelta(days=1), datetime.min.time())
    t = audit_entries.c
    query = select(t.recorded_at, t.requester_org, t.decision, t.canonical).where(
        t.event_type == "policy.decided", t.recorded_at >= start, t.recorded_at < end)
    if organisations is not None:
        query = query.where(t.requester_org.in_(sorted(organisations)))
    activity: dict[tuple[str, str], dict[date, Activity]] = defaultdict(lambda: defaultdict(Activity))
    with engine.connect() as connection:
        for row in connection.execute(query):
            event = json.loads(row.canonical)["event"]
            requester = event.get("requester") or {}
            actor = requester.get("system") or requester.get("user") or "unknown"
            cell = activity[(actor, row.requester_org or "")][row.recorded_at.date()]
            cell.decisions += 1
            cell.denials += row.decision == "deny"
            cell.out_of_hours += "outside-office-hours" in event.get("reasons", [])
    return activity


def flags_for_day(engine: Engine, day: date, days_back: int = 14,
                  organisations: frozenset[str] | None = None) -> list[Flag]:
    found: list[Flag] = []
    for (actor, organisation), per_day in sorted(daily_activity(engine, day, days_back, organisations).items()):
        history = [per_day.get(day - timedelta(days=n), Activity()) for n in range(1, days_back + 1)]
        seen_days = [a for a in history if a.decisions]
        found += detect(actor, organisation, day, per_day.get(day, Activity()), seen_days)
    return found
