"""Tests that run CLI commands in-process: each starts from the logging set-up a fresh process has, and leaves
the set-up as it found it.

In use each command is its own process. In the suite, a test that starts the app or the gateway's services
(`escalations scan`, the app started on a restored backup, the ASGI entry point's tests) configures JSON logging
on the root logger at INFO; left there, it would add Alembic's INFO lines to the stderr of the commands after
it, whose refusals the tests expect as one line — and whether it is left there depends on which tests ran
before (a file passes alone and fails in the whole suite)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


def _pytests(handler: logging.Handler) -> bool:
    """pytest's own capture handlers, which it adds and removes around each phase of a test itself."""
    return type(handler).__module__.startswith("_pytest")


@contextmanager
def kept_logging() -> Iterator[None]:
    root = logging.getLogger()
    found, level, config = [h for h in root.handlers if not _pytests(h)], root.level, structlog.get_config()
    for handler in found:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)  # a fresh process's root logger
    structlog.reset_defaults()
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if not _pytests(h)]:  # what the commands configured
            root.removeHandler(handler)
        for handler in found:
            root.addHandler(handler)
        root.setLevel(level)
        structlog.configure(**config)
