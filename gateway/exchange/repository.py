"""All SQL of the exchange pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.orm import Session

from audit import CompanionRow, Receipt
from gateway.db.batched_insert import BatchedInsert
from gateway.exchange.tables import exchange_claims, exchanges


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


@dataclass(frozen=True)
class Claim:
    """Who holds an ``Idempotency-Key`` while its first attempt is answered: ``system`` and ``key`` name it,
    ``exchange_id`` is the attempt, ``claimed_at`` tells a live attempt from an abandoned one."""

    system: str
    key: str
    exchange_id: str
    request_sha256: str
    claimed_at: datetime


class ClaimLost(Exception):
    """The claim this statement depends on is not (or no longer) the attempt's own: another attempt took
    it over. Raised inside the attempt's transaction, so nothing of the attempt is written."""


def find_claim(session: Session, system: str, key: str) -> Claim | None:
    row = session.execute(select(exchange_claims).where(exchange_claims.c.requester_system == system,
                                                        exchange_claims.c.idempotency_key == key)).first()
    return Claim(system, key, row.exchange_id, row.request_sha256, row.claimed_at) if row else None


def _delete_claim(connection: Connection | Session, claim: Claim) -> int:
    """Delete exactly this attempt's claim; how many rows went (0 when another attempt holds the key)."""
    return int(connection.execute(delete(exchange_claims).where(  # type: ignore[attr-defined]
        exchange_claims.c.requester_system == claim.system, exchange_claims.c.idempotency_key == claim.key,
        exchange_claims.c.exchange_id == claim.exchange_id)).rowcount)


def _require_deleted(claim: Claim) -> Callable[[Connection], None]:
    def precondition(connection: Connection) -> None:
        if _delete_claim(connection, claim) != 1:
            raise ClaimLost(f"exchange `{claim.exchange_id}` no longer holds its Idempotency-Key")
    return precondition


def claim_companion(claim: Claim, abandoned: Claim | None) -> CompanionRow:
    """``claim`` as a row that commits with the attempt's write-ahead entries; an ``abandoned`` claim on the
    same key is removed in that transaction first, only if it is still the one this attempt saw. If another
    attempt holds the key, the insert (or that removal) fails and nothing of this attempt is written."""
    row = {"requester_system": claim.system, "idempotency_key": claim.key, "exchange_id": claim.exchange_id,
           "request_sha256": claim.request_sha256, "claimed_at": claim.claimed_at}
    return CompanionRow(exchange_claims, lambda _receipts: row,
                        _require_deleted(abandoned) if abandoned is not None else None)


def outcome_companion(build: Callable[[list[Receipt]], dict[str, Any]], claim: Claim | None = None) -> CompanionRow:
    """An outcome row (``build`` makes it from the receipts) that commits with the audit entries it cites;
    with ``claim``, the attempt's claim on its key goes in the same transaction, and if the attempt lost it
    (taken over as abandoned), nothing of the attempt is written."""
    return CompanionRow(exchanges, build, _require_deleted(claim) if claim is not None else None)


def release_claim(session: Session, claim: Claim) -> None:
    """Give up an attempt's claim outside the outcome's commit (the attempt failed, or its outcome row went
    in a transaction of its own); a claim another attempt holds by now is left alone."""
    _delete_claim(session, claim)
