"""Rule 6's count as the write-ahead takes it (``repository.count_in``), on both databases: counted once per call
with the count before it returned, the day's first request seeded, and the usual call (the day's row exists) sent
straight to the driver, since it runs on the audit writer's thread in every exchange's write-ahead. And the count
the exchange service keeps of it for the next request's decision is one its database holds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import Engine, event, select

from gateway.app import start_services
from gateway.auditing.setup import audit_services
from gateway.container import Container
from gateway.exchange import repository
from gateway.exchange.setup import exchange_service
from gateway.exchange.tables import daily_request_counts
from tests.audit_support import make_event, writer_held

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


async def test_a_count_rolled_back_in_a_batch_begun_again_is_not_kept_for_the_next_request(
        container: Container) -> None:
    """Two write-aheads of one system and purpose share a group commit; the second was decided at the limit of
    four, but counted in it finds the count (two) below it: ``CountMoved``. The batch is rolled back and begun
    again with a savepoint per caller, and the second's count is rolled back to its savepoint. The service kept
    the count as each run of the precondition told it, so the next request was decided on three, a count the
    database never held; now only what a committed transaction counted is kept."""
    limit = 4
    start_services(container)
    service, writer = exchange_service(container), audit_services(container).writer
    writer.start()
    try:
        with container.engine.begin() as connection:
            repository.count_in(connection, DAY)  # one request counted today
        async with writer_held(writer):
            calls = [asyncio.ensure_future(service._written_counting([make_event(1)], DAY, 1, limit)),
                     asyncio.ensure_future(service._written_counting([make_event(2)], DAY, limit, limit))]
        written, moved = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(written, list)
        assert isinstance(moved, repository.CountMoved)
        assert (writer.stats.isolated_batches, writer.stats.refused_callers) == (1, 1)
        with container.engine.connect() as connection:
            held = repository.counted(connection, DAY)
        assert held == 2
        assert await service._requests_today(DAY, limit) == held
    finally:
        await writer.aclose()
        await container.services["connectors"].aclose()
        await container.services["policy"].aclose()  # its regorus engine lives on its own thread
