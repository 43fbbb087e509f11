"""Tests that run CLI commands in-process: the logging set-up as it was before each.

A command that starts the gateway's services (`escalations scan`, the app started on a restored backup)
configures JSON logging on the root logger at INFO; in use each command is its own process, but in the tests
the handler would stay for the tests after it, whose one-line refusals would gain Alembic's lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


@contextmanager
def kept_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, config = list(root.handlers), root.level, structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
