"""Every settings test reads the environment as a fresh process would: without the ``WGS_`` variables of the
shell (or of an earlier test) that would make a refusal pass or an acceptance fail by accident."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("WGS_")]:
        monkeypatch.delenv(name)
