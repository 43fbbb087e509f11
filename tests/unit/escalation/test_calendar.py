"""Deadlines in Dutch working days: weekends and national public holidays do not count."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from escalation import cases
from escalation.calendar import (
    add_months,
    add_working_days,
    easter_sunday,
    is_working_day,
    local_date,
    public_holidays,
)


@pytest.mark.parametrize(("year", "easter"), [(2024, date(2024, 3, 31)), (2025, date(2025, 4, 20)),
                                              (2026, date(2026, 4, 5)), (2027, date(2027, 3, 28))])
def test_easter(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_2026_holidays() -> None:
    assert public_holidays(2026) == {
        date(2026, 1, 1), date(2026, 4, 3), date(2026, 4, 6), date(2026, 4, 27), date(2026, 5, 5),
        date(2026, 5, 14), date(2026, 5, 25), date(2026, 12, 25), date(2026, 12, 26)}


def test_kings_day_moves_to_saturday_when_the_27th_is_a_sunday() -> None:
    assert date(2025, 4, 26) in public_holidays(2025)  # 27 April 2025 was a Sunday
    assert date(2025, 4, 27) not in public_holidays(2025)


def test_weekends_and_holidays_are_skipped() -> None:
    assert not is_working_day(date(2026, 11, 28))  # Saturday
    assert add_working_days(date(2026, 11, 25), 5) == date(2026, 12, 2)  # Wed + 5 = next Wed
    assert add_working_days(date(2026, 12, 23), 5) == date(2026, 12, 31)  # Christmas and Boxing Day skipped
    assert add_working_days(date(2026, 12, 30), 2) == date(2027, 1, 4)  # New Year skipped
    assert add_working_days(date(2026, 4, 2), 1) == date(2026, 4, 7)  # Good Friday and Easter Monday
    assert add_working_days(date(2026, 11, 25), 0) == date(2026, 11, 25)
    with pytest.raises(ValueError, match="negative"):
        add_working_days(date(2026, 11, 25), -1)


@pytest.mark.parametrize(("moment", "day"), [
    (datetime(2026, 11, 29, 22, 59, tzinfo=UTC), date(2026, 11, 29)),  # Sunday 23:59 in Amsterdam (CET)
    (datetime(2026, 11, 29, 23, 0, tzinfo=UTC), date(2026, 11, 30)),  # Monday 00:00
    (datetime(2026, 7, 5, 21, 59, tzinfo=UTC), date(2026, 7, 5)),  # Sunday 23:59 (CEST)
    (datetime(2026, 7, 5, 22, 0, tzinfo=UTC), date(2026, 7, 6)),  # Monday 00:00: two hours ahead of UTC
    (datetime(2026, 7, 5, 22, 0), date(2026, 7, 6)),  # naive: stored as UTC (SQLite)
])
def test_the_day_is_the_dutch_day_not_the_utc_day(moment: datetime, day: date) -> None:
    assert local_date(moment, "Europe/Amsterdam") == day
    assert local_date(moment, "UTC") == moment.date()  # the register may name another office timezone


@pytest.mark.parametrize("function", [local_date, cases.open_case, cases.act, cases.decide, cases.vote])
def test_every_function_that_counts_a_day_is_told_the_time_zone(function: Callable[..., object]) -> None:
    """No default office time zone: a caller that forgot the register's would count deadlines by another
    calendar without noticing (and mypy would not say so); now it cannot be called without one."""
    parameter = inspect.signature(function).parameters["timezone"]
    assert parameter.default is inspect.Parameter.empty


@pytest.mark.parametrize(("start", "months", "expected"), [
    (date(2026, 11, 25), 24, date(2028, 11, 25)), (date(2026, 8, 31), 6, date(2027, 2, 28)),
    (date(2027, 8, 31), 6, date(2028, 2, 29)), (date(2026, 1, 31), 1, date(2026, 2, 28)),
    (date(2026, 12, 15), 1, date(2027, 1, 15)), (date(2026, 3, 1), 0, date(2026, 3, 1))])
def test_add_months_counts_a_retention_as_the_policy_does(start: date, months: int, expected: date) -> None:
    """Same day of the month, or the month's last day when it has none (rule 9 in policies/common.rego)."""
    assert add_months(start, months) == expected


def test_add_months_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="negative"):
        add_months(date(2026, 1, 1), -1)
