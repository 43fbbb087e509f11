"""The in-process CLI tests' logging isolation (tests/logging_state.py): a command sees a fresh process's
logging whatever an earlier test configured, and the earlier set-up is back afterwards."""

from __future__ import annotations

import logging

from tests.logging_state import kept_logging


def test_a_command_starts_from_a_fresh_processs_logging_and_leaves_the_earlier_set_up() -> None:
    root = logging.getLogger()
    earlier = logging.StreamHandler()
    level = root.level
    root.addHandler(earlier)
    root.setLevel(logging.INFO)  # as a test that started the app leaves it
    try:
        with kept_logging():
            assert earlier not in root.handlers
            assert root.level == logging.WARNING
            configured = logging.StreamHandler()
            root.addHandler(configured)  # as a command that configures logging does
        assert earlier in root.handlers
        assert configured not in root.handlers
        assert root.level == logging.INFO
    finally:
        root.removeHandler(earlier)
        root.setLevel(level)
