"""Log context in one process: stdlib records come out as the gateway's JSON lines with the bound request
id and trace context, and the holder connector sends the current trace as a W3C ``traceparent`` header,
which the partner simulator binds to its own log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from fastapi import FastAPI, Request
from structlog.testing import capture_logs

from connectors.http_connector import HttpConnector
from connectors.logs import TraceContextMiddleware, parse_traceparent
from gateway.logging import configure_logging
from tests.servers import serve_app

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


@pytest.fixture
def json_logging() -> Iterator[None]:
    configure_logging("INFO", json_output=True)
    yield
    structlog.contextvars.clear_contextvars()


def _last_json_line(err: str) -> dict[str, Any]:
    line = [line for line in err.splitlines() if line.strip()][-1]
    value: dict[str, Any] = json.loads(line)
    return value


@pytest.mark.usefixtures("json_logging")
def test_a_stdlib_record_is_a_json_line_with_the_bound_request_context(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    with structlog.contextvars.bound_contextvars(request_id="req-7", trace_id=TRACE, span_id=SPAN):
        logging.getLogger("gateway.db.batched_insert").warning("batch of %d rows into %s failed", 3, "audit")
    line = _last_json_line(capfd.readouterr().err)
    assert line["event"] == "batch of 3 rows into audit failed"
    assert (line["request_id"], line["trace_id"], line["span_id"]) == ("req-7", TRACE, SPAN)
    assert (line["level"], line["logger"]) == ("warning", "gateway.db.batched_insert")
    assert line["timestamp"].endswith("Z")


@pytest.mark.usefixtures("json_logging")
def test_stdlib_lines_are_scrubbed_of_identifiers_exceptions_included(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    try:
        raise ValueError("no record for 123456782")
    except ValueError:
        logging.getLogger("some.library").exception("lookup of jan@example.nl failed")
    line = _last_json_line(capfd.readouterr().err)
    assert "jan@example.nl" not in json.dumps(line)
    assert "123456782" not in line["exception"]
    assert "ValueError" in line["exception"]


@pytest.mark.usefixtures("json_logging")
def test_tracebacks_keep_frames_and_types_but_never_an_exceptions_message(capfd: pytest.CaptureFixture[str]) -> None:
    """A message may echo the data (a name is no identifier-shaped value the scrubber could mask)."""
    def lookup(name: str) -> None:
        raise KeyError(name)

    person = " ".join(("Jan", "Jansen"))  # never in a source line, which tracebacks do show
    capfd.readouterr()
    try:
        try:
            lookup(person)
        except KeyError as exc:
            raise RuntimeError(f"while reading the record of {person}") from exc
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        structlog.get_logger("gateway.exchange").exception("request_failed")
    err = capfd.readouterr().err
    assert "Jan Jansen" not in err
    stdlib, ours = (json.loads(line) for line in err.splitlines()[-2:])
    for line in (stdlib, ours):
        assert "builtins.KeyError (message not logged)" in line["exception"]
        assert "builtins.RuntimeError (message not logged)" in line["exception"]
        assert line["exception"].index("KeyError") < line["exception"].index("direct cause") < line[
            "exception"].index("RuntimeError")
        assert "in lookup" in line["exception"]  # where it happened is kept
        assert "test_logging_context.py" in line["exception"]


def test_uvicorn_s_own_handlers_give_way_to_ours(capfd: pytest.CaptureFixture[str]) -> None:
    """``uvicorn gateway.asgi:app`` run by hand installs uvicorn's plain formatters before the app loads."""
    plain = logging.StreamHandler()
    logging.getLogger("uvicorn.error").addHandler(plain)
    logging.getLogger("uvicorn").propagate = False
    configure_logging("INFO")
    assert plain not in logging.getLogger("uvicorn.error").handlers
    capfd.readouterr()
    logging.getLogger("uvicorn.error").error("Exception in ASGI application")  # above any level uvicorn set
    line = _last_json_line(capfd.readouterr().err)
    assert (line["event"], line["logger"], line["level"]) == ("Exception in ASGI application", "uvicorn.error",
                                                              "error")


@pytest.fixture(scope="module")
def echo_holder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A holder that records the headers of each call and the log context its handler ran in."""
    seen: list[dict[str, str]] = []
    app = FastAPI()

    @app.get("/health")
    def health(request: Request) -> dict[str, str]:
        context = structlog.contextvars.get_contextvars()
        seen.append({"traceparent": request.headers.get("traceparent", ""),
                     "bound_trace_id": str(context.get("trace_id", "")),
                     "bound_parent": str(context.get("parent_span_id", ""))})
        return {"status": "ok"}

    app.add_middleware(TraceContextMiddleware)
    with serve_app(app) as url:
        yield url, seen


async def _token(_audience: str) -> str:
    return "unused"


def test_a_holder_call_carries_the_caller_s_trace_and_the_partner_binds_it(
        echo_holder: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = echo_holder
    seen.clear()

    async def call() -> None:
        async with HttpConnector("kvk-handelsregister", url, _token) as connector:
            with structlog.contextvars.bound_contextvars(request_id="req-8", trace_id=TRACE, span_id=SPAN):
                await connector.health()
                await connector.health()
            await connector.health()  # outside a request: no trace to continue, no header

    asyncio.run(call())
    first, second, outside = seen
    trace, span = _TRACEPARENT.match(first["traceparent"]).groups()  # type: ignore[union-attr]
    assert trace == TRACE
    assert span not in {SPAN, "0" * 16}  # a span of its own for the call, as W3C trace context asks
    assert second["traceparent"] != first["traceparent"]  # each call its own span
    assert (first["bound_trace_id"], first["bound_parent"]) == (TRACE, span)  # the partner's log context
    assert outside == {"traceparent": "", "bound_trace_id": "", "bound_parent": ""}


def test_a_holder_call_carries_the_gateway_s_own_trace_when_the_caller_sent_one(
        echo_holder: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = echo_holder
    seen.clear()
    holder_trace = "0af7651916cd43dd8448eb211c80319c"

    async def call() -> None:
        async with HttpConnector("kvk-handelsregister", url, _token) as connector:
            with structlog.contextvars.bound_contextvars(request_id="req-9", trace_id=TRACE, span_id=SPAN,
                                                         holder_trace_id=holder_trace):
                await connector.health()

    asyncio.run(call())
    [only] = seen
    assert _TRACEPARENT.match(only["traceparent"]).group(1) == holder_trace  # type: ignore[union-attr]
    assert TRACE not in only["traceparent"]


def test_the_partner_s_log_lines_of_a_call_carry_its_trace_id() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        structlog.get_logger("connectors.simulator").info("query_answered", system="kvk-handelsregister")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def call(traceparent: bytes | None) -> list[MutableMapping[str, Any]]:
        headers = [(b"traceparent", traceparent)] if traceparent else []
        scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(_message: Any) -> None:
            return None

        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await TraceContextMiddleware(handler)(scope, receive, send)
        assert structlog.contextvars.get_contextvars() == {}  # reset after the call, nothing left behind
        return logs

    [line] = asyncio.run(call(f"00-{TRACE}-{SPAN}-01".encode()))
    assert (line["trace_id"], line["parent_span_id"]) == (TRACE, SPAN)
    assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
    assert line["span_id"] != SPAN
    [untraced] = asyncio.run(call(b"00-" + b"0" * 32 + b"-" + SPAN.encode() + b"-01"))
    assert "trace_id" not in untraced


@pytest.mark.parametrize(("header", "expected"), [
    (f"00-{TRACE}-{SPAN}-01", (TRACE, SPAN)),
    (f" 00-{TRACE.upper()}-{SPAN}-00 ", (TRACE, SPAN)),
    (f"00-{TRACE}-{'0' * 16}-01", None),
    (f"01-{TRACE}-{SPAN}-01", None),
    ("garbage", None),
    (None, None),
])
def test_traceparent_parsing(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_traceparent(header) == expected


# -- the caller's X-Request-ID ----------------------------------------------------------------------------


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _request_id_taken(sent: bytes) -> tuple[str, list[MutableMapping[str, Any]]]:
    """The X-Request-ID the gateway's request-context middleware answers ``sent`` with, and its log lines
    (straight through ASGI: an HTTP client would refuse to send some of these values at all)."""
    from gateway.middleware import RequestContextMiddleware

    answered: list[bytes] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answered.extend(value for name, value in message["headers"] if name == b"x-request-id")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/v1/x", "headers": [(b"x-request-id", sent)]}
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        asyncio.run(RequestContextMiddleware(_ok)(scope, receive, send))
    [request_id] = answered
    return request_id.decode("latin-1"), lines


def test_a_well_formed_request_id_of_the_caller_is_taken_echoed_and_logged() -> None:
    taken, lines = _request_id_taken(b"0f3a9c2e71b4d865-2")
    assert taken == "0f3a9c2e71b4d865-2"
    assert [line["request_id"] for line in lines] == [taken]


@pytest.mark.parametrize("sent", [
    b"123456782",                    # a BSN: the request id is the one log field the scrubber leaves alone
    b"call-123456782-1",
    b"NL91ABNA0417164300",          # an IBAN
    b"abc\n",                        # a line break after a valid id ('$' matches before a final newline)
    b"a" * 65,
    b"a b",
    b"",
])
def test_a_request_id_that_could_carry_personal_data_or_break_a_line_is_replaced(sent: bytes) -> None:
    """The caller's id goes into every log line of the request unscrubbed (``request_id`` is exempt from
    the personal-data scrubber, as an id of the gateway's own would need) and into the answer's header:
    one shaped like an identifier, or with a line break, is replaced by an id of the gateway's own."""
    taken, lines = _request_id_taken(sent)
    assert re.fullmatch(r"[0-9a-f]{16}", taken), taken
    assert [line["request_id"] for line in lines] == [taken]
    if sent:
        assert sent.decode("latin-1") not in json.dumps(lines)
