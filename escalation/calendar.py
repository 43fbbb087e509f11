"""Dutch working days: deadlines per tier are counted in working days (REGISTER.md: 5, 10, 20).

Public holidays counted (the national ones of the Algemene termijnenwet): New Year's Day, Good Friday, Easter
Monday, King's Day (27 April; 26 April when the 27th is a Sunday), Liberation Day (5 May; the Algemene
termijnenwet counts it every year), Ascension Day, Whit Monday, Christmas Day and Boxing Day. Saturdays and
Sundays are never working days.

Which day it is depends on where one stands: the gateway's clock is UTC, but a Dutch deadline runs by the
Dutch calendar. Between midnight and 01:00 (02:00 in summer) Amsterdam is a day ahead of UTC, so "today" is
always :func:`local_date` of the moment in the register's office-hours timezone, never ``now.date()``.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo


def local_date(moment: datetime, timezone: str) -> date:
    """The calendar day ``moment`` falls on in ``timezone`` — the day working-day deadlines count from and
    are judged against (a UTC date would open a case at 00:30 on a Monday on the Sunday before, a working
    day early, and leave a case due yesterday not overdue until 01:00 or 02:00). Naive moments are UTC.
    ``timezone`` has no default: it is the register's ``office_hours.timezone``, and a caller that forgot
    to pass it would silently count by another calendar than the gateway's."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(ZoneInfo(timezone)).date()


def easter_sunday(year: int) -> date:
    """Gregorian Easter (anonymous Gregorian algorithm / Meeus-Jones-Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    leap = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * leap) // 451
    month, day = divmod(h + leap - 7 * m + 114, 31)
    return date(year, month, day + 1)


@cache
def public_holidays(year: int) -> frozenset[date]:
    easter = easter_sunday(year)
    kings_day = date(year, 4, 27)
    if kings_day.weekday() == 6:
        kings_day = date(year, 4, 26)
    return frozenset({
        date(year, 1, 1), easter - timedelta(days=2), easter + timedelta(days=1), kings_day, date(year, 5, 5),
        easter + timedelta(days=39), easter + timedelta(days=50), date(year, 12, 25), date(year, 12, 26),
    })


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in public_holidays(day.year)


def add_working_days(start: date, days: int) -> date:
    """The date ``days`` working days after ``start`` (the start day itself does not count)."""
    if days < 0:
        raise ValueError("days must not be negative")
    current = start
    remaining = days
    while remaining:
        current += timedelta(days=1)
        if is_working_day(current):
            remaining -= 1
    return current


def add_months(start: date, months: int) -> date:
    """The date ``months`` calendar months after ``start``, on the same day of the month or on the month's last
    day when it has no such day (31 August + 6 months is 28 February): how the policy counts a purpose's
    retention (rule 9, ``retain_until`` in policies/common.rego), so a decision's deadline is judged by the
    same date the policy would give."""
    if months < 0:
        raise ValueError("months must not be negative")
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(start.day, calendar.monthrange(year, month + 1)[1]))
