"""Two enrolments of the same subjects by one participant at the same time (a retry, two workers), on SQLite
and PostgreSQL: both succeed, the index holds one row per subject from one of them, never a 500 (found by a
review: delete-then-insert let both delete nothing and both insert, and the second failed on the key).

Each batch is one ``index.enrolment`` entry written in the transaction that changes the index, with counts
read before that transaction: both batches here count the index before either writes, so the second one's
counts are stale when its turn comes. Its transaction is refused and it is counted again — the entries say
exactly what each batch did (one added every subject, the other updated them), never what it expected."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from audit.tables import audit_entries
from gateway.app import create_app
from gateway.auth.principal import Principal
from gateway.client.pseudonyms import PseudonymClient
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.enrolment.audited import ATTEMPTS, IndexCounts
from gateway.enrolment.service import Item, PseudonymBatch, PseudonymService
from gateway.enrolment.setup import pseudonym_service
from gateway.enrolment.tables import enrolments
from gateway.errors import Conflict
from gateway.settings import Settings

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = Principal(kind="system", subject="gemeente-amsterdam-vth", organisation="gemeente-amsterdam",
                         scopes=frozenset({"enrol"}))
ROUNDS = 4


@pytest.fixture
def container(tmp_path: Path, db_url: str, clock: FixedClock) -> Iterator[Container]:
    """A gateway started through its lifespan (which installs the services), not serving requests."""
    the_container = build_container(Settings(data_dir=tmp_path, database_url=db_url, log_json=True), clock)
    try:
        with TestClient(create_app(container=the_container)):
            yield the_container
    finally:
        the_container.close()


def _writers_start_together(container: Container, barrier: threading.Barrier) -> Any:
    """Hold each enrolment at its count of the index (before its transaction) until the other one gets there
    too, so that both count before either writes, every time rather than now and then (the timeout only keeps
    a broken run from hanging)."""
    arrivals = itertools.count()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = " ".join(statement.split()[:3]).lower()
        if head == "select enrolments.pseudonym from" and next(arrivals) < 2:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=5)

    event.listen(container.engine, "before_cursor_execute", before)
    return before


def _enrol(service: PseudonymService, items: list[Item], failures: list[BaseException]) -> None:
    """One enrolment; its exception is collected, as a thread's would otherwise be lost."""
    try:
        asyncio.run(service.enrol(MUNICIPALITY, RIEC, items))
    except BaseException as exc:
        failures.append(exc)


def test_concurrent_enrolments_of_the_same_subjects_both_succeed(container: Container) -> None:
    service = pseudonym_service(container)
    client = PseudonymClient(service.public_key()["public_key"])
    numbers = [f"{n:08d}" for n in range(20260000, 20260040)]
    for round_ in range(ROUNDS):
        # The writers differ in the refusal grounds too (writer 1: confidential, writer 0: a minor), so that
        # these are seen to be replaced with the record types, from the same writer.
        batches = [[Item("kvk", client.polymorphic("kvk", number), (f"r{round_}-{writer}",), ("company_registration",),
                         confidential=writer == 1, minor=writer == 0)
                    for number in numbers] for writer in range(2)]
        failures: list[BaseException] = []
        listener = _writers_start_together(container, threading.Barrier(2))

        threads = [threading.Thread(target=_enrol, args=(service, batch, failures)) for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        event.remove(container.engine, "before_cursor_execute", listener)
        assert failures == [], f"round {round_}: {failures!r}"
        with container.engine.connect() as connection:
            rows = connection.execute(select(enrolments.c.record_types, enrolments.c.confidential,
                                             enrolments.c.minor)).all()
            assert connection.execute(select(func.count()).select_from(enrolments)).scalar_one() == len(numbers)
        # Last writer wins, as a whole: the index is one writer's batch of this round, never a mix of both.
        assert {(tuple(r.record_types), r.confidential, r.minor) for r in rows} in (
            {((f"r{round_}-0",), False, True)}, {((f"r{round_}-1",), True, False)}), round_
        counts = sorted((entry["added"], entry["updated"], entry["removed"]) for entry in _entries(container)[-2:])
        assert counts == ([(0, 40, 0), (40, 0, 0)] if round_ == 0 else [(0, 40, 0), (0, 40, 0)]), round_
    assert len(_entries(container)) == 2 * ROUNDS  # one entry per batch, the refused attempts left none


def _entries(container: Container) -> list[dict[str, Any]]:
    """The ``extra`` of every ``index.enrolment`` entry, in log order."""
    with container.engine.connect() as connection:
        return [json.loads(c)["event"]["extra"] for c in connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == "index.enrolment").order_by(audit_entries.c.log_index)).scalars()]



def test_a_batch_overtaken_every_time_is_refused_with_nothing_written(container: Container,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts that never match what the transaction would do (other batches of the same subjects getting in
    first, again and again): after a few attempts the batch is refused (409, send it again) — no entry with
    wrong counts, no index change without its entry."""
    service = pseudonym_service(container)
    client = PseudonymClient(service.public_key()["public_key"])
    items = [Item("kvk", client.polymorphic("kvk", "20269999"), ("trade-name",), ("company_registration",))]
    counted: list[int] = []

    def stale(_batch: PseudonymBatch, _session: Any) -> IndexCounts:
        counted.append(1)
        return IndexCounts(updated=1)  # the subject is new: the transaction adds it

    monkeypatch.setattr(PseudonymBatch, "expect", stale)
    with pytest.raises(Conflict):
        asyncio.run(service.enrol(MUNICIPALITY, RIEC, items))
    assert len(counted) == ATTEMPTS
    assert _entries(container) == []
    with container.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(enrolments)).scalar_one() == 0
