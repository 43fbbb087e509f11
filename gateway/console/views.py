"""Page data that is presentation only: bar charts of the statistics, deadline countdowns, option lists, small
formatting helpers.

No queries here: the figures come from :func:`audit.review.statistics` (through the same scope as the API),
the cases from the escalation service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from audit.review import Statistic
from escalation.calendar import is_working_day

OUTCOMES = ("allows", "narrowings", "denials", "escalations", "refusals")
DIMENSIONS = ("partnership", "purpose", "participant", "month")
CHART_WIDTH = 480  # px for the longest bar
BAR_HEIGHT = 22
BAR_GAP = 8
LABEL_WIDTH = 260


@dataclass(frozen=True)
class Segment:
    outcome: str
    value: int
    x: float
    width: float


@dataclass(frozen=True)
class Bar:
    label: str
    requests: int
    total: int
    y: int
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Chart:
    dimension: str
    bars: list[Bar]
    height: int
    width: int = LABEL_WIDTH + CHART_WIDTH + 60
    label_width: int = LABEL_WIDTH


def charts(rows: Iterable[Statistic]) -> list[Chart]:
    """One horizontal stacked bar chart per dimension: the outcomes of the groups summed over the others."""
    rows = list(rows)
    result = []
    for dimension in DIMENSIONS:
        sums: dict[str, dict[str, int]] = {}
        for row in rows:
            group = sums.setdefault(getattr(row, dimension) or "-", dict.fromkeys(("requests", *OUTCOMES), 0))
            for name in ("requests", *OUTCOMES):
                group[name] += getattr(row, name)
        largest = max((sum(v[o] for o in OUTCOMES) for v in sums.values()), default=0) or 1
        bars = []
        for position, (label, values) in enumerate(sorted(sums.items())):
            x = 0.0
            segments = []
            for outcome in OUTCOMES:
                width = CHART_WIDTH * values[outcome] / largest
                if values[outcome]:
                    segments.append(Segment(outcome, values[outcome], round(x, 1), round(width, 1)))
                x += width
            bars.append(Bar(label, values["requests"], sum(values[o] for o in OUTCOMES),
                            position * (BAR_HEIGHT + BAR_GAP), segments))
        result.append(Chart(dimension, bars, max(1, len(bars)) * (BAR_HEIGHT + BAR_GAP)))
    return result


@dataclass(frozen=True)
class Countdown:
    """Time left until a case's deadline, as of the gateway's clock (never the browser's)."""

    deadline: date
    days: int  # calendar days left; negative when past the deadline
    working_days: int  # working days left (Dutch calendar); negative when past it
    active: bool  # the case still waits for someone; a decided or closed case has no countdown

    @property
    def overdue(self) -> bool:
        return self.active and self.days < 0

    @property
    def due_today(self) -> bool:
        return self.active and self.days == 0


def countdown(deadline: date, today: date, *, active: bool) -> Countdown:
    """Days and working days from ``today`` to ``deadline`` (the deadline day itself is the last day)."""
    first, last = sorted((today, deadline))
    working = sum(1 for n in range(1, (last - first).days + 1) if is_working_day(first + timedelta(days=n)))
    sign = 1 if deadline >= today else -1
    return Countdown(deadline, (deadline - today).days, sign * working, active)


def short_id(identifier: str) -> str:
    """A case or gap id for people: its random tail (UUIDv7 ids of one day share their leading time part)."""
    return identifier.rsplit("-", 1)[-1][-8:]


def utc_text(moment: datetime | str | None) -> str:
    """A time as the console shows every time: UTC, to the second. A decision's times come as the ISO text its
    JSON document stores; text that is no time is shown as it is."""
    if isinstance(moment, str):
        try:
            parsed: datetime | None = datetime.fromisoformat(moment)
        except ValueError:
            return moment
    else:
        parsed = moment
    if parsed is None:
        return "-"
    return (parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed).strftime("%Y-%m-%d %H:%M:%S")


def age_text(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"
