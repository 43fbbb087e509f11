"""Page data that is presentation only: bar charts of the statistics, option lists, small formatting helpers.

No queries here: the figures come from :func:`audit.review.statistics` (through the same scope as the API).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from audit.review import Statistic

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


def utc_text(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def age_text(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"
