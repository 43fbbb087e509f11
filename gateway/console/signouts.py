"""The signed-out console sessions, in the database, so that signing out holds in every gateway process.

A session cookie is signed and carries its own times, so it stays valid until it idles out or reaches its
absolute expiry — unless the server remembers that it was signed out. Kept in one process's memory, that
memory was not shared with the other worker processes (a copied cookie kept working there, and each use
kept it from idling out) and was lost on a restart. A row per signed-out session id, kept until that
session's absolute expiry (after which the cookie is refused anyway), is read in the same transaction that
loads the signed-in account on every request.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.console.tables import console_sign_outs
from gateway.db.upsert import insert_on_conflict


def record_sign_out(session: Session, sid: str, until: datetime, now: datetime) -> None:
    """Refuse session ``sid`` from now until ``until``; rows of sessions past their expiry are purged."""
    table = console_sign_outs
    session.execute(delete(table).where(table.c.until < now))
    session.execute(insert_on_conflict(session, table).values(sid=sid, until=until).on_conflict_do_nothing(
        index_elements=["sid"]))


def is_signed_out(session: Session, sid: str) -> bool:
    table = console_sign_outs
    return session.execute(select(table.c.sid).where(table.c.sid == sid)).first() is not None
