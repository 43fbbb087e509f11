"""Structured JSON logs (structlog) with the request id and W3C trace context bound to every line.

Log events carry references and pseudonyms only; never names, BSNs or record content. The
``scrub_personal_data`` processor is a last line of defence: it masks anything shaped like a BSN,
KvK number, IBAN or e-mail address that slipped into a log event — also written in groups (``123-456-782``,
``1234.56.782``, ``NL91 ABNA 0417 1643 00``), in another script's or fullwidth digits, or with a fullwidth at
sign (U+FF20): text that is not ASCII is masked in its NFKC form.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import MutableMapping
from typing import Any

import structlog

from connectors.logs import format_exception_without_messages, install_stderr_lines

# ``\d`` and ``\w`` are Unicode-aware: digits (and letters) of any script count. Every pattern but the e-mail one
# has a fixed width (a few steps a position at most), so a long value costs time linear in its length.
# Where an identifier starts and ends: not next to a letter or digit (of any script). Not ``\b``: ``_`` is a word
# character, so ``company_123456782`` (a code of the categories' pattern) went unmasked, which the audit log's
# guard (``audit.guard``, whose boundaries these are) refuses as a BSN. The start is checked after the first
# character has matched (a lookbehind over it and the one before), not before it: a lookbehind tried at every
# position made each line's scrub 30-60 % slower, this one is faster than ``\b`` was.
_END = r"(?![^\W_])"
_SEPARATOR = r"[ .\-\u2010-\u2015\u2212]"
_PERSONAL_PATTERNS = [
    # BSN / KvK / RSIN shaped numbers (not a UUID's first group)
    re.compile(rf"\d(?<![^\W_]\d)\d{{7,8}}{_END}(?!-[0-9a-fA-F]{{4}}-)"),
    # a BSN in groups, 4-2-3 (``1234.56.782``) or 3-3-3 (``123-456-782``), by spaces, dots or dashes
    re.compile(rf"\d(?<![^\W_]\d)(?:\d{{3}}{_SEPARATOR}?\d{{2}}|\d{{2}}{_SEPARATOR}?\d{{3}}){_SEPARATOR}?\d{{3}}{_END}"),
    # Dutch IBAN, plain or in groups of four
    re.compile(rf"[A-Z](?<![^\W_][A-Z])[A-Z]\d{{2}} ?[A-Z]{{4}}(?: ?\d{{4}}){{2}} ?\d{{2}}{_END}"),
    # e-mail address. Tried only where a run of local-part characters starts (the lookbehind): tried at every
    # position, a long run without an "@" (a 30 KB request path, which the access log and the 404's
    # ``instance`` scrub) cost time quadratic in its length — 20 s of the event loop for one request, before
    # any token was asked for. A match that starts inside a run also starts at the run's start, so nothing
    # masked before goes unmasked.
    re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+\.[\w.-]+"),
]


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if not value.isascii():  # fullwidth digits, separators, letters and at sign as their ASCII forms
            value = unicodedata.normalize("NFKC", value)
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


def database_fault(exc: BaseException) -> dict[str, str]:
    """Log fields naming a database fault (``exc``: SQLAlchemy's ``OperationalError``, or what it wraps): the
    driver's error type and the first line of its message (no statement parameters: those are not part of it),
    masked like every log value. So an operator sees which fault it was ("no such table: ...", "disk I/O
    error", a lost connection), where the type alone would say only that the database failed."""
    orig = getattr(exc, "orig", None) or exc
    return {"error_type": type(orig).__name__,
            "reason": scrub_text((str(orig).strip().splitlines() or ["-"])[0][:200])}


def scrub_personal_data(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor masking identifier-shaped values."""
    for key, value in list(event_dict.items()):
        if key in {"timestamp", "level", "request_id", "trace_id", "span_id"}:
            continue
        event_dict[key] = _scrub(value)
    return event_dict


def configure_logging(level: str = "INFO", json_output: bool = True) -> None:
    """Configure structlog and the stdlib root logger; calling it again replaces the earlier set-up.

    Every line, structlog's and the stdlib's, goes through the same processors: the request id and trace
    context bound by ``gateway.middleware`` (contextvars), level, logger name, an ISO timestamp and the
    personal-data scrubber (after tracebacks are rendered without the exceptions' messages), then one
    renderer (JSON by default). uvicorn's loggers lose any handler its own
    ``log_config`` may have installed (``uvicorn gateway.asgi:app`` run by hand) and propagate to ours.
    """
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    install_stderr_lines(levels[level.upper()],
                         [format_exception_without_messages, scrub_personal_data, renderer], cache_loggers=False)
    # uvicorn's own access log would duplicate ours without the request id; we write our own.
    logging.getLogger("uvicorn.access").disabled = True
