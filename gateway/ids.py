"""Entity identifiers: UUIDv7, so ids sort by creation time and index well."""

from __future__ import annotations

import uuid6


def new_id() -> str:
    """A new UUIDv7 as a string."""
    return str(uuid6.uuid7())
