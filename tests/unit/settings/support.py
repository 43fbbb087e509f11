"""What the settings tests share besides ``conftest``'s clean environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import Settings, settings_problems


def refusals(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    """The one-line problems ``Settings`` refuses ``env`` with (it must refuse)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    return settings_problems(refused.value)
