"""The discovery index (schema by migration 0013_enrolments).

One row per (partnership, participant organisation, subject) that the participant enrolled: the subject as
its **partnership-domain** pseudonym (never shown to a partner) and the record types held. That is all the
gateway knows about who holds what; it answers hit/no-hit from here without asking anyone.

Since 0018 a row also carries what the participant would refuse discovery on if it were asked itself
(``connectors.holder.Holder.discover``): that it keeps the subject confidential (and the reason code it
refuses with) and that the subject is a minor. Without them the index answered ``hit`` where the holder
refuses, and gave away exactly what the confidentiality protects.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Index, Integer, String, Table, false

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
    Column("confidential", Boolean, nullable=False, server_default=false()),  # the holder refuses about it
    Column("confidential_reason", String(64), nullable=True),  # the code it refuses with (when confidential)
    Column("minor", Boolean, nullable=False, server_default=false()),  # under 18 by the holder's own data
    Index("ix_enrolments_partnership_pseudonym", "partnership", "pseudonym"),
)


pseudonyms_made = Table(
    "pseudonyms_made",
    metadata,
    Column("requester_system", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # the UTC date, ISO
    Column("made", Integer, nullable=False),
)
"""How many pseudonyms each partner system had made per UTC day (migration 0021): the daily cap of
:mod:`gateway.enrolment.quota`, counted over every gateway process together."""
