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
    log lines follow a redirected stderr (daemons, test capture) instead of writing to a closed stream."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(level: str = "INFO", json_output: bool = True) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub_personal_data,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    # uvicorn's own access log would duplicate ours without the request id; we write our own.
    logging.getLogger("uvicorn.access").disabled = True
