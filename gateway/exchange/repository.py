"""All SQL of the exchange pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from audit import CompanionRow, Receipt
from gateway.db.batched_insert import BatchedInsert
from gateway.exchange.tables import exchanges


@dataclass(frozen=True)
class StoredExchange:
    id: str
    kind: str
    requester_org: str
    requester_system: str
    request_sha256: str
    outcome: dict[str, Any]
    sealed_records: bytes | None
    sealed_until: datetime | None
    partnership: str = ""
    purpose: str = ""
    register_version: str = ""


def _stored(row: Any) -> StoredExchange:
    return StoredExchange(row.id, row.kind, row.requester_org, row.requester_system, row.request_sha256,
                          dict(row.outcome), row.sealed_records, row.sealed_until, row.partnership, row.purpose,
                          row.register_version)


def find_by_idempotency_key(session: Session, system: str, key: str) -> StoredExchange | None:
    row = session.execute(select(exchanges).where(exchanges.c.requester_system == system,
                                                  exchanges.c.idempotency_key == key)).first()
    return _stored(row) if row else None


def get(session: Session, exchange_id: str) -> StoredExchange | None:
    row = session.execute(select(exchanges).where(exchanges.c.id == exchange_id)).first()
    return _stored(row) if row else None


def count_since(session: Session, system: str, purpose: str, since: datetime) -> int:
    return int(session.execute(select(func.count()).select_from(exchanges).where(
        exchanges.c.requester_system == system, exchanges.c.purpose == purpose,
        exchanges.c.created_at >= since)).scalar_one())


def outcome_writer(engine: Engine) -> BatchedInsert:
    """Inserts outcome rows (a dict of ``exchanges`` columns each) with group commit."""
    return BatchedInsert(engine, exchanges)


def outcome_companion(build: Callable[[list[Receipt]], dict[str, Any]]) -> CompanionRow:
    """An outcome row (``build`` makes it from the receipts) that commits with the audit entries it cites."""
    return CompanionRow(exchanges, build)
