"""The console tests sign people in by the dozen (an account made and checked per sign-in); their subject is
the console, not the password hashing, which tests/integration/auth covers at the production cost."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cheap_password_hashing(cheap_password_hashing: None) -> None:
    """Every console test hashes passwords at argon2's lowest cost (see ``cheap_password_hashing``)."""
