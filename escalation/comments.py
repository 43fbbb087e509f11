"""Comments on a case, with attachments by reference only.

An attachment is a pointer into the commenting organisation's own document system (id, title, SHA-256),
never the document: the gateway must not become a second store of case files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import uuid6
from sqlalchemy import select
from sqlalchemy.orm import Session

from escalation.tables import escalation_comments


@dataclass(frozen=True)
class Comment:
    id: str
    case_id: str
    at: datetime
    author_org: str
    author: str
    text: str
    attachments: list[dict[str, Any]]


def add_comment(session: Session, case_id: str, *, author_org: str, author: str, text: str,
                attachments: list[dict[str, Any]], now: datetime) -> Comment:
    comment_id = str(uuid6.uuid7())
    session.execute(escalation_comments.insert().values(
        id=comment_id, case_id=case_id, at=now, author_org=author_org, author=author, text=text,
        attachments=attachments))
    return Comment(comment_id, case_id, now, author_org, author, text, attachments)


def comments(session: Session, case_id: str) -> list[Comment]:
    rows = session.execute(select(escalation_comments).where(escalation_comments.c.case_id == case_id)
                           .order_by(escalation_comments.c.id)).all()  # UUIDv7: creation order
    return [Comment(r.id, r.case_id, r.at, r.author_org, r.author, r.text, list(r.attachments)) for r in rows]
