"""Tables of the escalation workflow, in the package's own MetaData (schema by migration 0011_escalation).

The naming convention repeats gateway/db/metadata.py's on purpose: this package imports nothing of the
gateway (DESIGN.md), and the convention must be identical for Alembic.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

escalation_cases = Table(
    "escalation_cases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("exchange_id", String(36), nullable=True),
    Column("request_fingerprint", String(64), nullable=True),
    Column("partnership", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("requester_org", String(64), nullable=False),
    Column("holder_org", String(64), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("deadline", Date, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("register_version", String(64), nullable=False),
    Column("policy_reasons", JSON, nullable=False),
    Column("decision", JSON, nullable=True),
    Column("legal_gap", Boolean, nullable=False, default=False),
    # 0012: who opened it, what was asked, the pending votes of a multi-decider tier, the decision's id
    Column("opened_by_org", String(64), nullable=True),
    Column("opened_by", String(128), nullable=True),
    Column("requested_categories", JSON, nullable=True),
    Column("votes", JSON, nullable=True),
    Column("decision_id", String(36), nullable=True, unique=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    # 0015: the re-run that holds the allow decision (a decision is used once; see cases.claim_decision)
    Column("rerun_claim", String(36), nullable=True),
    Column("rerun_claimed_at", DateTime(timezone=True), nullable=True),
    # 0016: the exchange whose re-run used the decision (set with its disclosure; then it is used for good)
    Column("rerun_exchange_id", String(36), nullable=True),
    # 0041: the order cases became visible in (committed), which the case lists page by (cases.open_case)
    Column("seq", BigInteger, nullable=False, unique=True),
    # 0033: what the state machine cannot produce, the database refuses too (escalation/states.py)
    CheckConstraint("tier BETWEEN 1 AND 3", name="tier"),
    CheckConstraint("state IN ('open', 'in_review', 'escalated', 'decided', 'closed', 'withdrawn', 'expired')",
                    name="state"),
    CheckConstraint("version >= 1", name="version"),
)

ACTIVE_STATES_SQL = "state IN ('open', 'in_review', 'escalated')"
"""The active states (``Case.active``) as SQL: at most one active case per exchange and holder, enforced by the
database, so two objections at the same moment cannot both open one (a partial unique index; rows without
an exchange never clash, NULLs being distinct)."""

Index("uq_escalation_cases_active_exchange_holder", escalation_cases.c.exchange_id, escalation_cases.c.holder_org,
      unique=True, sqlite_where=text(ACTIVE_STATES_SQL), postgresql_where=text(ACTIVE_STATES_SQL))

escalation_events = Table(
    "escalation_events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_id", String(36), ForeignKey("escalation_cases.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor_org", String(64), nullable=True),
    Column("actor_user", String(64), nullable=True),
    Column("motivation", Text, nullable=True),
    Column("tier", Integer, nullable=False),
    Column("state", String(16), nullable=False),
)

escalation_comments = Table(
    "escalation_comments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_id", String(36), ForeignKey("escalation_cases.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("author_org", String(64), nullable=False),
    Column("author", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("attachments", JSON, nullable=False),  # references (document id, title, sha256), never content
)

legal_gaps = Table(
    "legal_gaps",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("partnership", String(64), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("created_by_org", String(64), nullable=False),
    Column("note", Text, nullable=True),
    CheckConstraint("status IN ('identified', 'on-agenda', 'resolved')", name="status"),  # 0033
)

legal_gap_cases = Table(
    "legal_gap_cases",
    metadata,
    Column("gap_id", String(36), ForeignKey("legal_gaps.id"), primary_key=True),
    Column("case_id", String(36), ForeignKey("escalation_cases.id"), primary_key=True),
    Column("linked_at", DateTime(timezone=True), nullable=False),
)

legal_gap_changes = Table(
    # 0037: every status change of a gap, with its note — the register is a record, and a change used to
    # overwrite the previous note. Rows are only added. A row carried over by the migration from the single
    # ``legal_gaps.note`` has no ``actor_org`` and no ``status_before``: who wrote that note was not kept.
    "legal_gap_changes",
    metadata,
    Column("id", String(36), primary_key=True),  # UUIDv7: creation order
    Column("gap_id", String(36), ForeignKey("legal_gaps.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status_before", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("note", Text, nullable=True),
    Column("actor_org", String(64), nullable=True),
    Column("actor_user", String(128), nullable=True),
)
