"""Logging of a partner process: one JSON object per line on stderr (structlog).

Why its own: the partner side may not import the gateway's logging module, and a simulated partner runs as a
separate process (demo, docker-compose). Log events carry the system, request ids and counts only — the
simulator and the connector never pass names, identifiers or record content to a logger.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "INFO") -> None:
    """JSON lines at ``level`` and above, to stderr; ``ValueError`` for an unknown level name."""
    levels = logging.getLevelNamesMapping()
    if level.upper() not in levels:
        raise ValueError(f"unknown log level {level!r}")
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer(sort_keys=True)],
        wrapper_class=structlog.make_filtering_bound_logger(levels[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
