"""Tables of the console (schema by migration 0017_console_sign_outs)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table

from gateway.db.metadata import metadata

console_sign_outs = Table(
    "console_sign_outs",
    metadata,
    Column("sid", String(64), primary_key=True),  # the signed-out session's id (random, no personal data)
    Column("until", DateTime(timezone=True), nullable=False),  # the session's absolute expiry: forget it then
)
