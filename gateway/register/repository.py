"""All SQL of the register: stored versions (append-only history; decisions cite a version)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.upsert import insert_on_conflict
from gateway.register.tables import register_versions


@dataclass(frozen=True)
class StoredVersion:
    id: str
    version: str
    sha256: str
    source: str
    loaded_at: datetime


def find_version(session: Session, version: str) -> StoredVersion | None:
    row = session.execute(
        select(register_versions.c.id, register_versions.c.version, register_versions.c.sha256,
               register_versions.c.source, register_versions.c.loaded_at)
        .where(register_versions.c.version == version)).first()
    return StoredVersion(*row) if row else None


def insert_version(session: Session, stored: StoredVersion, document: dict[str, Any]) -> bool:
    """Record a version; False (nothing written) when that version was recorded meanwhile (another gateway
    process starting at the same time), which a plain insert would have failed on."""
    statement = insert_on_conflict(session, register_versions).values(
        id=stored.id, version=stored.version, sha256=stored.sha256, document=document, source=stored.source,
        loaded_at=stored.loaded_at).on_conflict_do_nothing(index_elements=[register_versions.c.version])
    return session.execute(statement.returning(register_versions.c.id)).first() is not None


def list_versions(session: Session) -> list[StoredVersion]:
    rows = session.execute(
        select(register_versions.c.id, register_versions.c.version, register_versions.c.sha256,
               register_versions.c.source, register_versions.c.loaded_at)
        .order_by(register_versions.c.loaded_at, register_versions.c.version)).all()
    return [StoredVersion(*row) for row in rows]


def get_document(session: Session, version: str) -> dict[str, Any] | None:
    document = session.execute(
        select(register_versions.c.document).where(register_versions.c.version == version)).scalar_one_or_none()
    return dict(document) if document is not None else None
