"""Graceful shutdown (issue 2, operations): SIGTERM to ``wgs-gateway serve`` while an exchange is waiting on a
slow holder lets that exchange finish with its normal answer, refuses new connections, runs the app's
shutdown (logged) and exits with code 0 — what a service manager or ``docker stop`` expects."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.integration.test_logging_serve import served_gateway
from tests.reliability.test_crash_safety import BODY
from tests.servers import serve_app

HOLDER_DELAY = 2.0


@pytest.fixture
def slow_holder() -> Iterator[tuple[str, threading.Event]]:
    """A holder answering a query after ``HOLDER_DELAY`` seconds; the event is set when a query arrives."""
    arrived = threading.Event()
    app = FastAPI()

    @app.post("/holder/v1/query")
    async def query() -> dict[str, object]:
        arrived.set()
        await asyncio.sleep(HOLDER_DELAY)
        return {"status": "answered", "records": []}

    with serve_app(app) as url:
        yield url, arrived


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(
        tmp_path: Path, slow_holder: tuple[str, threading.Event]) -> None:
    holder_url, arrived = slow_holder
    with served_gateway(tmp_path, WGS_CONNECTOR_ENDPOINTS=json.dumps({"kvk-handelsregister": holder_url}),
                        WGS_CONNECTOR_RETRIES="0", WGS_CONNECTOR_TIMEOUT_SECONDS="10") as gateway:
        answers: list[httpx.Response | BaseException] = []

        def exchange() -> None:
            try:
                answers.append(httpx.post(f"{gateway.url}/v1/exchanges", json=BODY, timeout=30,
                                          headers={"Authorization": f"Bearer {gateway.token}"}))
            except httpx.HTTPError as exc:
                answers.append(exc)

        caller = threading.Thread(target=exchange)
        caller.start()
        assert arrived.wait(timeout=20), "the exchange never reached the holder"
        signalled = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        _until_refused(f"{gateway.url}/health/live", signalled + HOLDER_DELAY)  # no new work once stopping ...
        assert not answers, "connections were refused only once the exchange in flight was answered"  # ... yet
        code = gateway.process.wait(timeout=HOLDER_DELAY + 15)
        stopped_after = time.monotonic() - signalled
        caller.join(timeout=10)

    [answer] = answers
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 200, answer.text
    assert [target["outcome"] for target in answer.json()["targets"]] == ["allowed"]  # the holder's answer
    assert code == 0
    assert stopped_after >= HOLDER_DELAY - 0.5  # it waited for the request instead of cutting it off
    events = [json.loads(line)["event"] for line in gateway.lines()]
    assert "Shutting down" in events
    assert "gateway_stopping" in events  # the app's own shutdown ran (scheduler, writer, pools closed)
    assert events.index("gateway_stopping") > events.index("exchange_completed")


def _until_refused(url: str, deadline: float) -> None:
    """Ask ``url`` until the connection is refused, before ``deadline`` (monotonic): the process handles the
    signal a moment after it is sent, later on a loaded machine (than the fixed 0.5 s wait this replaces)."""
    while True:
        try:
            httpx.get(url, timeout=2)
        except httpx.ConnectError:
            return
        except httpx.TransportError:
            pass  # accepted just before the socket was closed, then cut off: ask again
        assert time.monotonic() < deadline, "connections were still accepted after SIGTERM"
        time.sleep(0.05)
