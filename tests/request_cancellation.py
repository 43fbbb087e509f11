"""For scenarios that cancel a request while one of its commits waits in the audit writer's queue.

Why a module: the exchange runs some commits in tasks of their own (``ExchangeService._awaited_by_end``), so code
patched into a commit cannot cancel "the current task" to stand for the request's cancellation; it must cancel
the task that serves the request, as uvicorn or a stopping server does (:func:`cancel_request`). And the race
these scenarios guard against only shows when the writer begins a commit late, as a busy writer does
(:func:`written_late`)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

import pytest

from audit import EventType
from gateway.auditing.setup import audit_services
from gateway.exchange.service import ExchangeService
from tests.stack import Stack

# the task serving the request (set in it, and so in the context copied into the tasks it starts)
_REQUEST_TASK: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar("request_task", default=None)


def noting_request_tasks(service: ExchangeService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request notes its own task as it enters ``_failing_closed`` (which it does in the task that serves
    it), for :func:`cancel_request`."""
    failing_closed = service._failing_closed

    async def in_request(*args: Any, **kwargs: Any) -> Any:
        _REQUEST_TASK.set(asyncio.current_task())
        return await failing_closed(*args, **kwargs)

    monkeypatch.setattr(service, "_failing_closed", in_request)


def cancel_request() -> None:
    """Cancel the task serving the current request (see :func:`noting_request_tasks`), from wherever in its work
    this is called, as when its server stops."""
    task = _REQUEST_TASK.get()
    assert task is not None, "noting_request_tasks was not applied"
    task.cancel()


def written_late(stack: Stack, monkeypatch: pytest.MonkeyPatch, event_type: EventType, *,
                 once: bool = False) -> Callable[[], bool]:
    """The audit writer begins a transaction with ``event_type`` entries half a second late (busy with other
    batches, holding no lock meanwhile); with ``once``, only the first such transaction. Returns whether that
    first one has been begun (late) yet."""
    log = audit_services(stack.container).log
    appending = log.append_prepared
    begun = [False]

    def late(prepared: Any, *args: Any, **kwargs: Any) -> Any:
        if (not once or not begun[0]) and any(p.event.event_type == event_type for p in prepared):
            begun[0] = True
            time.sleep(0.5)
        return appending(prepared, *args, **kwargs)

    monkeypatch.setattr(log, "append_prepared", late)
    return lambda: begun[0]
