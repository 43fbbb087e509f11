"""Structured JSON logs (structlog) with the request id and W3C trace context bound to every line.

Log events carry references and pseudonyms only; never names, BSNs or record content. The
``scrub_personal_data`` processor is a last line of defence: it masks anything shaped like a BSN,
KvK number, IBAN or e-mail address that slipped into a log event.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PERSONAL_PATTERNS = [
    re.compile(r"\b\d{8,9}\b(?!-[0-9a-fA-F]{4}-)"),  # BSN / KvK / RSIN shaped numbers (not a UUID's first group)
    re.compile(r"\b[A-Z]{2}\d{2}[A-Z]{4}\d{10}\b"),  # Dutch IBAN
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # e-mail address
]


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for pattern in _PERSONAL_PATTERNS:
            value = pattern.sub("[redacted]", value)
        return value
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def scrub_text(value: str) -> str:
    """``value`` with identifier-shaped parts masked: for anything that echoes caller input (problem documents)."""
    return str(_scrub(value))


def scrub_personal_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor masking identifier-shaped values."""
    for key, value in list(event_dict.items()):
        if key in {"timestamp", "level", "request_id", "trace_id", "span_id"}:
            continue
        event_dict[key] = _scrub(value)
    return event_dict


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
    """The stdlib side of the same stream: uvicorn, Alembic, SQLAlchemy and our own stdlib loggers
    (``gateway.db.batched_insert``) end up here and are rendered by structlog's ``ProcessorFormatter``, so
    an operator's log pipeline sees one format. Like ``_StderrLogger`` it looks ``sys.stderr`` up per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # the logging module's contract: report, never raise into the caller
            self.handleError(record)


def add_logger_name(logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``logger`` = the stdlib record's name, or the name given to ``get_logger``."""
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict["logger"] = name
    return event_dict


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def configure_logging(level: str = "INFO", json_output: bool = True) -> None:
    """Configure structlog and the stdlib root logger; calling it again replaces the earlier set-up.

    Every line, structlog's and the stdlib's, goes through the same processors: the request id and trace
    context bound by ``gateway.middleware`` (contextvars), level, logger name, an ISO timestamp and the
    personal-data scrubber (after tracebacks are rendered, so an exception's message is masked too), then one
    renderer (JSON by default). uvicorn's loggers lose any handler its own
    ``log_config`` may have installed (``uvicorn gateway.asgi:app`` run by hand) and propagate to ours.
    """
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, scrub_personal_data, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, scrub_personal_data, renderer]))
    root = logging.getLogger()
    for old in list(root.handlers):
        # ours from an earlier call, or a plain ``basicConfig`` one on stderr; pytest's capture handlers stay
        if isinstance(old, _StderrHandler) or (type(old) is logging.StreamHandler
                                               and old.stream in (sys.stderr, sys.__stderr__)):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # uvicorn's own access log would duplicate ours without the request id; we write our own.
    logging.getLogger("uvicorn.access").disabled = True
