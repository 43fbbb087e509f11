"""Shared helpers for the audit tests: realistic events, deterministic keys, trigger bypass for tampering."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, MetaData, text

from audit.checkpoint import NoteSigner
from audit.events import AuditEvent, DataSubject, Decision, EventType, ProcessingActivity, Requester
from gateway.db.engine import make_engine

ORIGIN = "wgs.example/audit"


def private_key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())


def log_signer(seed: str = "log key", name: str = ORIGIN) -> NoteSigner:
    return NoteSigner(name, private_key(seed))


def trace_id(n: int) -> str:
    return hashlib.sha256(f"trace {n}".encode()).hexdigest()[:32]


def span_id(n: int) -> str:
    return hashlib.sha256(f"span {n}".encode()).hexdigest()[:16]


_TYPES = list(EventType)


def make_event(n: int = 0, **overrides: Any) -> AuditEvent:
    """A plausible, personal-data-free event; ``n`` varies it so that entries differ."""
    fields: dict[str, Any] = {
        "event_type": _TYPES[n % len(_TYPES)],
        "trace_id": trace_id(n),
        "span_id": span_id(n),
        "parent_span_id": span_id(n + 1_000_000) if n % 2 else None,
        "processing_activity": ProcessingActivity(partnership="riec-noord-holland", purpose="bibob-check"),
        "data_subject": DataSubject(pseudonym=hashlib.sha256(f"subject {n % 7}".encode()).hexdigest()),
        "requester": Requester(org=f"gemeente-{n % 3}", system="bibob-desk"),
        "holder": "belastingdienst" if n % 2 else "kvk",
        "decision": list(Decision)[n % len(Decision)],
        "reasons": (f"rule.{n % 5}",),
        "categories": ("tax.debts", "company.directors"),
        "policy_version": "2026.11.1",
        "register_version": "7",
        "obligations": {"retain_until": "2027-11-25", "onward_sharing": False},
        "payload_sha256": hashlib.sha256(f"payload {n}".encode()).hexdigest(),
        "exchange_id": f"ex-{n}",
        "extra": {"n": n},
    }
    fields.update(overrides)
    return AuditEvent(**fields)


APPEND_ONLY_TABLES = ("audit_entries", "audit_tree_nodes", "audit_checkpoints")


@contextmanager
def triggers_disabled(engine: Engine) -> Iterator[Connection]:
    """Play the attacker with database-owner rights: drop the append-only triggers, yield, put them back.

    Recreates the triggers exactly as migration 0010_audit does, so later checks still see them.
    """
    with engine.begin() as connection:
        dialect = connection.dialect.name
        for table in APPEND_ONLY_TABLES:
            if dialect == "sqlite":
                for action in ("update", "delete"):
                    connection.exec_driver_sql(f"DROP TRIGGER {table}_no_{action}")
            else:
                connection.exec_driver_sql(f"DROP TRIGGER {table}_append_only ON {table}")
        yield connection
        for table in APPEND_ONLY_TABLES:
            if dialect == "sqlite":
                for action in ("UPDATE", "DELETE"):
                    connection.exec_driver_sql(
                        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only ({action} refused)'); END")
            else:
                connection.exec_driver_sql(
                    f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()")


def sql(connection: Connection, statement: str, **params: Any) -> Any:
    return connection.execute(text(statement), params)


@contextmanager
def engine_with_tables(db_url: str, metadata: MetaData) -> Iterator[Engine]:
    """An engine on the migrated database ``db_url`` with a test module's own scratch tables added for the test
    and dropped after it (tables that stand in for another package's rows next to the log's, e.g. companion
    rows). Only for such scratch tables: the real schema always comes from the migrations."""
    engine = make_engine(db_url)
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        metadata.drop_all(engine)
        engine.dispose()
