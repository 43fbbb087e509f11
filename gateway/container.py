"""The object graph of one gateway process, built from ``Settings`` in one place.

Why a container: no module-level globals holding connections (DESIGN.md conventions); tests build
their own container with a temporary database and a fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.cancellation import retrieved
from gateway.clock import Clock, SystemClock
from gateway.db.engine import engine_for, make_session_factory
from gateway.settings import Settings

ReadinessCheck = Callable[[], Awaitable[None]]
"""A readiness probe's check: returns when the dependency is usable, raises when it is not."""
Result = TypeVar("Result")


def one_run_at_a_time(work: Callable[[], Result]) -> Callable[[], Awaitable[Result]]:
    """Blocking ``work`` of a readiness check (a query, a read of the key store) in a worker thread, at most one
    run at a time: a call while a run is under way waits for that run's result instead of starting another.

    Why: a probe that gives up at its bound cannot stop the thread, which runs on until the driver's own
    timeout. While a database hangs, every probe (a load balancer's, every few seconds) took one more thread of
    the default pool for each such check — the pool the exchange's work in threads uses, six threads on two
    cores — and the probes queued behind one another. Now a hanging dependency holds one thread per check."""
    running: list[asyncio.Task[Result]] = []

    async def run() -> Result:
        loop = asyncio.get_running_loop()
        if not running or running[0].done() or running[0].get_loop() is not loop:
            task = loop.create_task(asyncio.to_thread(work))
            task.add_done_callback(retrieved)  # a run no probe waits for any more still ends quietly
            running[:] = [task]
        return await asyncio.shield(running[0])  # a probe that gives up leaves the run to the next one
    return run


class NotReady(Exception):
    """Raised by a readiness check with a reason the probe may show as it is.

    ``/health/ready`` is unauthenticated, so it reports any other exception by its type name only (a
    driver's message may carry a host or a password); a check that knows why it fails, and can say so
    without a secret, raises this instead."""
Service = TypeVar("Service")


@dataclass
class Container:
    """Long-lived services of the process; attached to ``app.state.container``."""

    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)

    def service(self, name: str, kind: type[Service]) -> Service:
        """The installed service ``name``, checked to be a ``kind``; an error if the lifespan did not start."""
        found = self.services.get(name)
        if not isinstance(found, kind):
            raise RuntimeError(f"the {name} service is not installed; start the app through its lifespan")
        return found

    def close(self) -> None:
        self.engine.dispose()


def build_container(settings: Settings, clock: Clock | None = None) -> Container:
    engine = engine_for(settings)
    return Container(settings=settings, clock=clock or SystemClock(), engine=engine,
                     sessions=make_session_factory(engine))
