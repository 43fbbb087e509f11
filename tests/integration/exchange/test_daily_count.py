"""Rule 6's count as the write-ahead takes it (``repository.count_in``), on both databases: counted once per call
with the count before it returned, the day's first request seeded, and the usual call (the day's row exists) sent
straight to the driver, since it runs on the audit writer's thread in every exchange's write-ahead."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, event, select

from gateway.exchange import repository
from gateway.exchange.tables import daily_request_counts

DAY = repository.Day("gemeente-amsterdam-vth", "bibob-integrity-check", "2026-12-05",
                     datetime(2026, 12, 4, 23, 0, tzinfo=UTC))


def test_each_call_counts_one_and_returns_the_count_before_it(engine: Engine) -> None:
    with engine.begin() as connection:
        before = [repository.count_in(connection, DAY) for _ in range(3)]
    other = repository.Day(DAY.system, "another-purpose", DAY.day, DAY.since)
    with engine.begin() as connection:
        before.append(repository.count_in(connection, DAY))
        repository.count_in(connection, other)
    assert before == [0, 1, 2, 3]
    with engine.connect() as connection:
        stored = dict(connection.execute(select(daily_request_counts.c.purpose, daily_request_counts.c.requests)).all())
    assert stored == {"bibob-integrity-check": 4, "another-purpose": 1}


def test_the_usual_count_goes_to_the_driver_not_through_sqlalchemy_execute(engine: Engine) -> None:
    with engine.begin() as connection:
        repository.count_in(connection, DAY)  # the day's first: seeded through SQLAlchemy
    executed: list[object] = []
    event.listen(engine, "before_execute", lambda *args: executed.append(args[1]))
    with engine.begin() as connection:
        assert repository.count_in(connection, DAY) == 1
    assert executed == []
