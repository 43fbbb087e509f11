"""Logging of a partner process: one JSON object per line on stderr (structlog), in the gateway's form.

Why here: the partner side may not import the gateway's logging module, and a simulated partner runs as a
separate process (demo, docker-compose); the gateway's own set-up (``gateway.logging``) builds on this one's
``install_stderr_lines`` and adds its personal-data scrubber. Lines have the same keys on both sides
(``event``, ``level``, ``logger``, ``timestamp``, plus ``trace_id``/``span_id`` when bound) so one log
pipeline reads both, and a call can be followed from the gateway into the partner by its W3C trace id
(``TraceContextMiddleware``). stdlib records (uvicorn's own) go through the same processors. Log events
carry the system, request ids and counts only — the simulator and the connector never pass names,
identifiers or record content to a logger.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import traceback
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class _StderrLogger:
    """Writes each rendered line to the *current* ``sys.stderr`` (not the one seen at configure time), so
    log lines follow a redirected stderr (daemons, test capture) instead of writing to a closed stream.

    It keeps the name given to ``structlog.get_logger(name)`` so that lines say which module wrote them, as
    the stdlib records rendered by ``_StderrHandler`` do."""

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*args: Any) -> _StderrLogger:
    return _StderrLogger(args[0] if args and isinstance(args[0], str) else None)


class _StderrHandler(logging.Handler):
    """The stdlib side of the same stream: uvicorn, Alembic, SQLAlchemy and stdlib loggers of our own end up
    here and are rendered by structlog's ``ProcessorFormatter``, so an operator's log pipeline sees one
    format. Like ``_StderrLogger`` it looks ``sys.stderr`` up per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # the logging module's contract: report, never raise into the caller
            self.handleError(record)


def _add_logger_name(logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``logger`` = the stdlib record's name, or the name given to ``get_logger``."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict["logger"] = name
    return event_dict


def format_exception_without_messages(_logger: Any, _method: str,
                                      event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's ``format_exc_info``, but the rendered traceback (``exception``) keeps where it happened
    (file, line, function, source line) and each exception's type, never its message.

    Why: a message may echo the data being processed — a ``KeyError`` of a person's name, a parser quoting
    its input — and masking identifier-shaped values (the gateway's scrubber) cannot catch names. The frames
    and types are what a developer needs to find a defect; the data is not theirs to see in a log."""
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if exc_info is True:
        exc_info = sys.exc_info()
    error = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
    if error is not None:
        event_dict["exception"] = _traceback_without_messages(error)
    return event_dict


def _traceback_without_messages(error: BaseException) -> str:
    chain: list[tuple[BaseException, str]] = []
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        link = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        note = ("The above exception was the direct cause of the following exception:" if current.__cause__
                else "During handling of the above exception, another exception occurred:")
        chain.append((current, note if link is not None else ""))
        current = link
    parts: list[str] = []
    for exc, note in reversed(chain):  # oldest first, as Python prints them
        if note:
            parts.append(f"\n{note}\n\n")
        frames = "".join(traceback.format_tb(exc.__traceback__))
        kind = type(exc)
        parts.append(f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}"
                     " (message not logged)\n")
    return "".join(parts)


def install_stderr_lines(level: int, final: list[Any], *, cache_loggers: bool = True) -> None:
    """One line per event on stderr, for structlog and the stdlib alike: first the bound context (request
    id, trace context), level, logger name and an ISO timestamp in UTC, then ``final`` (formatting, masking,
    the renderer). Calling it again replaces the earlier set-up; a plain
    ``basicConfig`` handler on stderr goes too, capture handlers (pytest's) stay. uvicorn's loggers lose
    any handler their own ``log_config`` installed and propagate to ours — so uvicorn must also be started
    with ``log_config=None``, or it installs its plain-text handlers again afterwards.

    Shared by the gateway (``gateway.logging``, which adds its personal-data scrubber to ``final``) and the
    partner processes, so both write the same keys and one log pipeline reads both."""
    shared: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                         _add_logger_name, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=cache_loggers,
    )
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final]))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or (type(old) is logging.StreamHandler
                                               and old.stream in (sys.stderr, sys.__stderr__)):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


def configure_logging(level: str = "INFO") -> None:
    """JSON lines at ``level`` and above, to stderr; ``ValueError`` for an unknown level name."""
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}")
    install_stderr_lines(levels[level.upper()],
                         [format_exception_without_messages, structlog.processors.JSONRenderer()])


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, caller's span id) of a valid W3C ``traceparent`` header (version 00), else None."""
    match = _TRACEPARENT.match(value.strip().lower()) if value else None
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2)


@contextmanager
def trace_context(traceparent: str | None) -> Iterator[None]:
    """Within: log lines carry the caller's trace id, its span as ``parent_span_id`` and a span id of our
    own, so the partner's lines of a call can be found by the trace id the gateway logged for the exchange.
    Nothing is bound for a missing or invalid header. Reset afterwards (tokens), not cleared: whatever the
    surrounding context had bound stays intact, also when the app runs in-process in a test."""
    ids = parse_traceparent(traceparent)
    if ids is None:
        yield
        return
    tokens = structlog.contextvars.bind_contextvars(trace_id=ids[0], span_id=secrets.token_hex(8),
                                                    parent_span_id=ids[1])
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


class TraceContextMiddleware:
    """Pure ASGI (cheaper per request than ``@app.middleware``): each HTTP request runs in the
    ``trace_context`` of its ``traceparent`` header, which the gateway's connector sends on every call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((value for key, value in scope["headers"] if key == b"traceparent"), None)
        with trace_context(header.decode("latin-1") if header is not None else None):
            await self.app(scope, receive, send)
