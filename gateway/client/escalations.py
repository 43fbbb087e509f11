"""The escalation API's answers as the partner client reads them: a case (``CaseView``, ``CaseDetail``) and an
item of the feed of cases awaiting the partner's organisation (``FeedItem``).

Why copies of the gateway's models rather than those: ``gateway.client`` imports nothing of the gateway's
server side (partners install it alone), and the server's models are written to be sent, not to read a newer
gateway's answers leniently. Names of classes and fields are the OpenAPI document's (a unit test compares
them), so the document describes these too. Read leniently: fields this version does not know are ignored,
and an ``awaiting`` value a newer gateway added is kept as sent (it is neither ``decision`` nor ``rerun``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, ValidatorFunctionWrapHandler, field_validator

from gateway.client.models import _newer_value

__all__ = ["CaseDetail", "CaseView", "CommentView", "FeedItem", "HistoryItem"]


class HistoryItem(BaseModel):
    """One step of a case: who did what, at which tier, and the state it left the case in."""

    at: datetime
    action: str
    actor_org: str | None
    actor_user: str | None
    tier: int
    state: str
    motivation: str | None


class CommentView(BaseModel):
    """A comment on a case; attachments are references into the author's own document system. Read only:
    comments are made by people (the gateway refuses a partner system's), so the client has no method to make one."""

    id: str
    at: datetime
    author_org: str
    author: str
    text: str
    attachments: list[dict[str, Any]]


class CaseView(BaseModel):
    """An escalation case as the caller may see it."""

    id: str
    partnership: str
    purpose: str
    requester_org: str
    holder_org: str
    trigger: str
    state: str
    tier: int
    version: int = Field(description="The case's version: a step on it names the version it read.")
    deadline: date
    overdue: bool
    opened_at: datetime | None
    updated_at: datetime | None
    exchange_id: str | None
    register_version: str
    policy_reasons: list[str]
    requested_categories: list[str]
    pending_votes: list[dict[str, Any]]
    decision: dict[str, Any] | None = Field(description="The decision taken (an allow has an ``id`` to re-run "
                                            "with: ``decision_id``), None before one.")
    legal_gap: bool
    may_decide: bool
    deciders: list[str]

    @property
    def decision_id(self) -> str | None:
        """The id of the case's decision, what ``GatewayClient.rerun`` cites; None while undecided."""
        found = (self.decision or {}).get("id")
        return found if isinstance(found, str) else None


class CaseDetail(CaseView):
    """A case with its history and comments: what opening one (``GatewayClient.object_to``) answers."""

    history: list[HistoryItem]
    comments: list[CommentView]


class FeedItem(BaseModel):
    """A case awaiting the caller's organisation: a ``decision`` at the current tier, or an allow decision its
    system can ``rerun`` with (``case.decision_id``)."""

    case: CaseView
    awaiting: Literal["decision", "rerun"]

    @field_validator("awaiting", mode="wrap")
    @classmethod
    def _awaiting_of_a_newer_gateway(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                                     info: ValidationInfo) -> str:
        awaiting = _newer_value(value, handler, info)
        return str(value) if awaiting is None else str(awaiting)
