"""Comments on a case, with attachments by reference only.

An attachment is a pointer into the commenting organisation's own document system (id, title, SHA-256),
never the document: the gateway must not become a second store of case files.

A case's file ends with the case: a closed, withdrawn or expired case takes no more comments (``CaseEnded``, 409). The
docs name no comment after the end, and a note added then would read as part of a dispute that is over; who
disagrees afterwards opens a new escalation or objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import uuid6
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from escalation.cases import CaseNotFound, EscalationError
from escalation.states import State
from escalation.tables import escalation_cases, escalation_comments

ENDED = frozenset({State.CLOSED, State.WITHDRAWN, State.EXPIRED})
"""The states whose case file takes no more comments: those no action leads out of (an expired allow can no
longer be re-run; what is left is a new escalation or an objection)."""


class CaseEnded(EscalationError):
    """A comment on a closed, withdrawn or expired case (409)."""

    code = "case-ended"

    def __init__(self, state: State) -> None:
        super().__init__(f"the case is {state.value}; open a new escalation or object")
        self.state = state


def check_open_for_comments(state: State) -> None:
    """Refuse a comment on a case in ``state`` if the case has ended (``CaseEnded``)."""
    if state in ENDED:
        raise CaseEnded(state)


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
    """Add the comment, if the case has not ended: checked with an update that changes nothing but holds the
    case's row, so a close or withdrawal committing meanwhile either waits for the comment or refuses it
    (a check by reading alone would let a case ended meanwhile take it)."""
    ended = [state.value for state in ENDED]
    held = session.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.state.not_in(ended))
        .values(version=escalation_cases.c.version))
    if getattr(held, "rowcount", 0) != 1:
        found = session.execute(select(escalation_cases.c.state).where(escalation_cases.c.id == case_id)).scalar()
        if found is None:
            raise CaseNotFound(f"no escalation case `{case_id}`")
        raise CaseEnded(State(found))
    comment_id = str(uuid6.uuid7())
    session.execute(escalation_comments.insert().values(
        id=comment_id, case_id=case_id, at=now, author_org=author_org, author=author, text=text,
        attachments=attachments))
    return Comment(comment_id, case_id, now, author_org, author, text, attachments)


def comments(session: Session, case_id: str) -> list[Comment]:
    rows = session.execute(select(escalation_comments).where(escalation_comments.c.case_id == case_id)
                           .order_by(escalation_comments.c.id)).all()  # UUIDv7: creation order
    return [Comment(r.id, r.case_id, r.at, r.author_org, r.author, r.text, list(r.attachments)) for r in rows]
