"""Anomaly detection on per-actor daily activity: volume, denial rate, out-of-hours share."""

from __future__ import annotations

from datetime import date, timedelta

from audit.anomaly import Activity, baseline, detect

DAY = date(2026, 11, 25)
NORMAL = [Activity(decisions=10, denials=1, out_of_hours=0) for _ in range(7)]


def test_normal_day_is_not_flagged() -> None:
    assert detect("politie-bvh", "politie", DAY, Activity(12, 1, 0), NORMAL) == []


def test_volume_spike_is_flagged() -> None:
    flags = detect("politie-bvh", "politie", DAY, Activity(60, 3, 0), NORMAL)
    assert [f.metric for f in flags] == ["volume"]


def test_denial_rate_and_out_of_hours_jumps_are_flagged() -> None:
    flags = detect("po-x", "politie", DAY, Activity(12, 9, 8), NORMAL)
    assert {f.metric for f in flags} == {"denial-rate", "out-of-hours"}


def test_too_little_history_or_volume_flags_nothing() -> None:
    assert detect("a", "o", DAY, Activity(100, 90, 90), NORMAL[:2]) == []
    assert detect("a", "o", DAY, Activity(5, 5, 5), NORMAL) == []


def test_baseline_runs_from_the_first_active_day_with_quiet_days_as_zero() -> None:
    busy = Activity(decisions=10)
    per_day = {DAY - timedelta(days=5): busy, DAY - timedelta(days=2): busy, DAY: Activity(decisions=99)}
    assert baseline(per_day, DAY) == [busy, Activity(), Activity(), busy, Activity()]
    assert baseline({DAY: busy}, DAY) == []
