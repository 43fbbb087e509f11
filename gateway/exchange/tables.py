"""Tables of the exchange pipeline (schema by migration 0003_exchange).

``exchanges`` keeps the outcome of every exchange (per target: decision, reasons, categories; never the
records themselves) so the requester and its privacy officer can see it again, and so an
``Idempotency-Key`` retry returns the first answer instead of disclosing and logging twice. The records of
an answer are kept only encrypted (AES-GCM) and only for the idempotency window, for exactly that replay
(``sealed_records`` is emptied once ``sealed_until`` has passed).

``exchange_claims`` (migration 0014) holds an ``Idempotency-Key`` while its first attempt is being answered:
the claim commits with the attempt's write-ahead entries and goes in the commit that stores the outcome. A
retry that meets a claim (in any gateway process) neither logs nor asks a holder a second time. A claim whose
attempt logged its holders' answers before its outcome (the escalation path) says so (migration 0039): it is
never taken over, so the request is not run twice under its key even if that attempt never stores its outcome.

An exchange row also says which escalation decision a re-run cited and the request's fingerprint without it
(migration 0031): what a case about the re-run's outcome binds to.

``daily_request_counts`` (migration 0019) is rule 6's count of requests per system, purpose and day, shared
by every gateway process.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    false,
)

from gateway.db.metadata import metadata

exchanges = Table(
    "exchanges",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),  # "exchange" | "discovery"
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("requester_org", String(64), nullable=False),
    Column("requester_system", String(64), nullable=False),
    Column("partnership", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("case_reference", String(128), nullable=False),
    Column("register_version", String(64), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("request_sha256", String(64), nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    Column("outcome", JSON, nullable=False),
    Column("sealed_records", LargeBinary, nullable=True),
    Column("sealed_until", DateTime(timezone=True), nullable=True),
    # 0031: the request's fingerprint without the decision a re-run cites (``request_sha256`` is with it: what
    # the Idempotency-Key binds to), and that decision; NULL in rows written before
    Column("request_fingerprint", String(64), nullable=True),
    Column("escalation_decision", String(36), nullable=True),
    UniqueConstraint("requester_system", "idempotency_key", name="uq_exchanges_requester_system_idempotency_key"),
    Index("ix_exchanges_requester_system_purpose_created_at", "requester_system", "purpose", "created_at"),
)


exchange_claims = Table(
    "exchange_claims",
    metadata,
    Column("requester_system", String(64), primary_key=True),
    Column("idempotency_key", String(128), primary_key=True),
    Column("exchange_id", String(36), nullable=False),
    Column("request_sha256", String(64), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    # 0039: the attempt logged its holders' answers (an escalation follows them before the outcome is stored)
    Column("answers_logged", Boolean, nullable=False, server_default=false()),
)


daily_request_counts = Table(
    "daily_request_counts",
    metadata,
    Column("requester_system", String(64), primary_key=True),
    Column("purpose", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # the register's local date (office-hours time zone), ISO
    Column("requests", Integer, nullable=False),
)
"""Rule 6's count (migration 0019): the requests of a system for a purpose on a day, counted in (atomically, in
the database, so that every gateway process sees every other's) when a request is decided, and given back when
it ends without its outcome being stored — so it is the day's stored exchanges plus those being answered now."""
