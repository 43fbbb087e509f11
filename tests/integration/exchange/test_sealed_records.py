"""The records of a keyed answer are kept (encrypted) for the idempotency window only, on both databases.

Found by a review: nothing ever removed them. ``sealed_until`` only stopped a replay from opening them, so every
record disclosed under an ``Idempotency-Key`` stayed in the ``exchanges`` table for good, decryptable with the
seal key beside it (and in every backup of both): the gateway kept a copy of all it had passed on. Now a
gateway drops the sealed records of answers past their window when it starts and every few minutes while it
runs; the outcome stays (``GET /v1/exchanges/{id}`` and replays show it, without records, as before).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.db.engine import make_engine
from gateway.exchange.service import IDEMPOTENCY_WINDOW
from gateway.exchange.setup import exchange_service
from gateway.exchange.tables import exchanges
from gateway.settings import Settings

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _insert(engine: Engine, exchange_id: str, created_at: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(exchanges.insert().values(
            id=exchange_id, kind="exchange", created_at=created_at, requester_org="gemeente-amsterdam",
            requester_system="gemeente-amsterdam-vth", partnership="p", purpose="q", case_reference="C-1",
            register_version="r", policy_version="v", request_sha256="f" * 64, idempotency_key=f"key-{exchange_id}",
            outcome={"targets": []}, sealed_records=b"sealed bytes", sealed_until=created_at + IDEMPOTENCY_WINDOW))


def _sealed(engine: Engine) -> dict[str, bool]:
    with engine.connect() as connection:
        return {row.id: row.sealed_records is not None for row in connection.execute(
            select(exchanges.c.id, exchanges.c.sealed_records))}


def test_sealed_records_past_their_window_are_dropped_at_start_up_and_while_running(tmp_path: Path,
                                                                                    db_url: str) -> None:
    engine = make_engine(db_url)
    clock = FixedClock(NOW)
    _insert(engine, "expired", NOW - IDEMPOTENCY_WINDOW - timedelta(seconds=1))
    _insert(engine, "current", NOW - IDEMPOTENCY_WINDOW + timedelta(seconds=1))
    app = create_app(Settings(data_dir=tmp_path, database_url=db_url), clock=clock)
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        assert _sealed(engine) == {"expired": False, "current": True}
        clock.advance(timedelta(seconds=1))  # the second answer's window ends while the gateway runs
        asyncio.run(exchange_service(app.state.container).drop_expired_seals())  # what its timer runs
        assert _sealed(engine) == {"expired": False, "current": False}
    with engine.connect() as connection:  # the outcomes themselves stay
        assert set(connection.execute(select(exchanges.c.id)).scalars()) == {"expired", "current"}
    engine.dispose()
