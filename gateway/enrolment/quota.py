"""A daily cap on the pseudonyms each partner system may have made.

Why: ``POST /v1/pseudonyms`` and ``POST /v1/enrolments`` turn any identifier a system can encrypt into that
system's own pseudonym. A requester that was given a related subject's pseudonym (a company's director, in
its own domain) could otherwise try every valid BSN, about 90 million of them, until one matches — a few hours
at the transformation rate of one core. A cap far above any participant's register size (the default is a
quarter of a million a day) leaves enrolment and look-ups alone and turns that search into a year's work.

The count is per UTC day, in the database (table ``pseudonyms_made``), taken in one conditional statement:
every gateway process counts against the same cap, and a restart does not start it again. Kept in each
process's memory, N workers allowed N times the cap, and every restart a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.db.engine import transaction
from gateway.db.upsert import insert_on_conflict
from gateway.enrolment.tables import pseudonyms_made
from gateway.errors import TooManyRequests

log = structlog.get_logger("gateway.enrolment")
_MADE = pseudonyms_made
_THIS_DAY = (_MADE.c.requester_system == bindparam("the_system")) & (_MADE.c.day == bindparam("the_day"))
_TAKE = update(_MADE).where(_THIS_DAY, _MADE.c.made + bindparam("count") <= bindparam("limit")).values(
    made=_MADE.c.made + bindparam("count")).returning(_MADE.c.made)
_GIVE_BACK = update(_MADE).where(_THIS_DAY, _MADE.c.made >= bindparam("count")).values(
    made=_MADE.c.made - bindparam("count"))


class DailyPseudonymQuota:
    """``take(system, count)`` before making ``count`` pseudonyms; 429 (with ``Retry-After`` until the next
    UTC midnight) when that would pass ``limit`` today, and then nothing is counted. ``limit`` 0: no cap."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, limit: int) -> None:
        self._sessions = sessions
        self._clock = clock
        self._limit = limit

    def take(self, system: str, count: int) -> str | None:
        """Count ``count`` for ``system`` today (429 past the cap); the day counted under, None without a cap."""
        if not self._limit:
            return None
        now = self._clock.now().astimezone(UTC)
        day = now.date().isoformat()
        with transaction(self._sessions) as session:
            used = _take(session.connection(), system, day, count, self._limit)
        if used is not None:
            midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
            raise TooManyRequests(
                f"this system may have {self._limit} pseudonyms made per day; {self._limit - used} are left "
                "today", headers={"Retry-After": str(max(1, int((midnight - now).total_seconds())))})
        return day

    def give_back(self, system: str, count: int, day: str | None) -> None:
        """Uncount what ``take`` counted on ``day`` for a request that gave none of it out (refused with 422,
        or nothing enrolled): the cap bounds the pseudonyms a system gets, and a partner re-sending a corrected
        batch must not run into it for the ones it never received. On the day it was taken, never on another."""
        if day is None:
            return
        with transaction(self._sessions) as session:
            session.connection().execute(_GIVE_BACK, {"the_system": system, "the_day": day, "count": count})

    @contextmanager
    def counted(self, system: str, count: int) -> Iterator[str | None]:
        """``take``, given back when the block fails: the day counted under (see ``give_back``)."""
        day = self.take(system, count)
        try:
            yield day
        except Exception:
            try:
                self.give_back(system, count, day)
            except Exception as failure:  # the request's own failure is what the caller must see
                log.error("pseudonym_quota_not_given_back", error_type=type(failure).__name__)
            raise


def _take(connection: Connection, system: str, day: str, count: int, limit: int) -> int | None:
    """Count ``count`` more for ``system`` on ``day`` if that stays within ``limit``: None when counted, else
    how many were used (nothing counted). The day's first take makes the row (and drops earlier days')."""
    parameters = {"the_system": system, "the_day": day, "count": count, "limit": limit}
    for _ in range(2):  # a second time when another process made the day's row between the two statements
        if connection.execute(_TAKE, parameters).first() is not None:
            return None
        if count > limit:
            break
        made = connection.execute(insert_on_conflict(connection, _MADE).values(
            requester_system=system, day=day, made=count).on_conflict_do_nothing(
            index_elements=[_MADE.c.requester_system, _MADE.c.day]).returning(_MADE.c.made)).first()
        if made is not None:
            connection.execute(delete(_MADE).where(_MADE.c.day < day))
            return None
    used = connection.execute(select(_MADE.c.made).where(_THIS_DAY), parameters).scalar()
    return int(used or 0)
