"""Tables of the register (owned by the gateway's MetaData; schema by migration 0001)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, String, Table, Text

from gateway.db.metadata import metadata

register_versions = Table(
    "register_versions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("version", String(64), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("document", JSON, nullable=False),
    Column("source", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
)
