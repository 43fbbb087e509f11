"""The discovery index (schema by migration 0013_enrolments).

One row per (partnership, participant organisation, subject) that the participant enrolled: the subject as
its **partnership-domain** pseudonym (never shown to a partner) and the record types held. That is all the
gateway knows about who holds what; it answers hit/no-hit from here without asking anyone.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table

from gateway.db.metadata import metadata

enrolments = Table(
    "enrolments",
    metadata,
    Column("partnership", String(64), primary_key=True),
    Column("organisation", String(64), primary_key=True),
    Column("pseudonym", String(128), primary_key=True),
    Column("key_version", Integer, nullable=False),
    Column("record_types", JSON, nullable=False),
    Column("categories", JSON, nullable=False),  # of those records: a hit counts only in permitted categories
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_enrolments_partnership_pseudonym", "partnership", "pseudonym"),
)
