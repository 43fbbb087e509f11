"""The escalation API's request and response bodies (OpenAPI documents them from here)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from gateway.client.models import CATEGORY_PATTERN, SLUG_PATTERN

_REF = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$"
ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
"""An exchange's or a legal gap's id (a UUID). Why a pattern: the service names an id it cannot find in the
problem and in the log line of the refusal, and a name or an address typed where the id belongs would be
repeated there (the log masks identifier-shaped values, not names)."""

Category = Annotated[str, Field(pattern=CATEGORY_PATTERN)]
"""A data category's name, shaped as the register's and the exchange API's are. The service names the ones it
refuses ("not requested: ...") in the problem and in the log line of the refusal: free text here would put
whatever the caller typed there — a person's name among it."""


def _storable(value: str) -> str:
    """Refuse what no database text holds, so the step cannot fail in the audit log's transaction; refused
    here, it is the caller's 422 on both engines, before anything is logged:

    * a NUL character: PostgreSQL text cannot hold one (SQLite stores it) — a 503 "the log could not be
      written" on one engine, stored on the other;
    * a lone surrogate (JSON may escape half a pair, ``"\\ud800"``, and Python's reader keeps it): no UTF-8
      text holds one, on either engine — a 500 and a "not applied" entry. Pydantic refuses it in a plain
      ``str`` field, not in an optional one (``str | None``: a gap's title and description, a note)."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be Unicode text (half of a surrogate pair is none)") from None
    return value


def _written(value: str) -> str:
    """Refuse text of only spaces and line breaks: it passes a length check but says nothing, and a
    motivation or comment that says nothing is none (the console strips what was typed before checking; an
    API caller's text is checked here, so both refuse the same). The text itself is kept as written."""
    if not value.strip():
        raise ValueError("must contain text, not only spaces or line breaks")
    return _storable(value)


Written = Annotated[str, AfterValidator(_written)]
"""Free text a person wrote: a motivation, a comment, a title or a note — never blank."""

Storable = Annotated[str, AfterValidator(_storable)]
"""Free text that may still be blank here (the service says what is missing), but is stored as it is."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attachment(_Strict):
    """A pointer into the author's own document system, never the document itself."""

    reference: str = Field(pattern=_REF, examples=["dms://politie/2026/4711"])
    title: Written = Field(min_length=1, max_length=200, examples=["Memo investigation confidentiality"])
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class OpenCase(_Strict):
    """Object to the outcome of one target of an exchange: the requester against a denial or narrowing,
    the holder against a disclosure it considers unlawful."""

    exchange_id: str = Field(pattern=ID_PATTERN, max_length=36, description="The exchange's id (a UUID).")
    holder: str = Field(pattern=SLUG_PATTERN, max_length=64, description="The target organisation of the exchange.")
    motivation: Written = Field(min_length=10, max_length=4000,
                                description="Why the outcome should be reviewed.")
    categories: list[Category] = Field(
        default_factory=list, max_length=30,
        description="The categories the objection is about (a denial names none: say which you asked for); "
                    "default: those the outcome permitted or removed.")


class Comment(_Strict):
    text: Written = Field(min_length=1, max_length=4000)
    attachments: list[Attachment] = Field(default_factory=list, max_length=10)


class Versioned(_Strict):
    expected_version: int = Field(ge=1, strict=True, description=(
        "The case version you read (an integer; `true` or `\"2\"` is a 422); a stale one gets 409."))
    """Strict: JSON's ``true`` was read as 1, so a client sending a flag where the version belongs acted on
    version 1 of the case, or got a 409 naming a version it never sent."""


class Review(Versioned):
    pass


class Withdraw(Versioned):
    motivation: Written = Field(min_length=1, max_length=4000)


class ExtraObligations(_Strict):
    """Obligations a decision adds to the purpose's: they only tighten them (the policy keeps the earlier
    deletion date and results-only when either says so; onward sharing is never allowed, so it is no field)."""

    retain_until: date | None = Field(default=None, description=(
        "An earlier deletion date than the purpose's: from today (in the register's timezone) up to the "
        "purpose's retention counted from today; a date outside that is refused (422). The decision can be "
        "re-run until that day ends (in the register's timezone) at the latest. Only an allow holds "
        "obligations: on a deny or a referral the date is ignored, whatever it is."))
    results_only: bool | None = Field(default=None, description="Only results may leave the partnership.")

    @field_validator("results_only")
    @classmethod
    def _only_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("a decision cannot lift the purpose's results-only obligation: "
                             "give true or leave it out")
        return value


class Decide(Versioned):
    """Allow (possibly narrower, with extra obligations), deny, or refer up to the next tier."""

    outcome: Literal["allow", "deny", "refer-up"]
    motivation: Written = Field(min_length=10, max_length=4000, description="Required: the written reasons.")
    permitted_categories: list[Category] = Field(default_factory=list, max_length=30,
                                            description="For allow: the categories the holder must supply.")
    obligations: ExtraObligations | None = None

    @field_validator("permitted_categories")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        """A category named twice is one category: kept twice it would show twice in the decision, and two
        deciders' votes for the same categories would not count as the same proposal."""
        return sorted(set(value))


class FlagLegalGap(_Strict):
    """Link the case to an existing gap, or describe a new one."""

    gap_id: str | None = Field(default=None, pattern=ID_PATTERN, max_length=36)
    title: Storable | None = Field(default=None, max_length=200)
    description: Storable | None = Field(default=None, max_length=4000)


class GapStatusChange(_Strict):
    expected_version: int = Field(ge=1, strict=True)  # as a case's (``Versioned``): ``true`` is no version
    status: Literal["on-agenda", "resolved"]
    note: Written | None = Field(default=None, max_length=4000)


class HistoryItem(BaseModel):
    at: datetime
    action: str
    actor_org: str | None
    actor_user: str | None
    tier: int
    state: str
    motivation: str | None


class CommentView(BaseModel):
    id: str
    at: datetime
    author_org: str
    author: str
    text: str
    attachments: list[dict[str, Any]]


class CaseView(BaseModel):
    id: str
    partnership: str
    purpose: str
    requester_org: str
    holder_org: str
    trigger: str
    state: str
    tier: int
    version: int
    deadline: date
    overdue: bool
    opened_at: datetime | None
    updated_at: datetime | None
    exchange_id: str | None
    register_version: str
    policy_reasons: list[str]
    requested_categories: list[str]
    pending_votes: list[dict[str, Any]]
    decision: dict[str, Any] | None
    legal_gap: bool
    may_decide: bool = Field(description="Whether you may take part in the decision at the current tier.")
    deciders: list[str] = Field(description="Organisations that decide at the current tier.")


class CaseDetail(CaseView):
    history: list[HistoryItem]
    comments: list[CommentView]


class CasePage(BaseModel):
    cases: list[CaseView]
    next_cursor: str | None


class FeedItem(BaseModel):
    case: CaseView
    awaiting: Literal["decision", "rerun"] = Field(
        description="`decision`: your organisation decides at the current tier; `rerun`: an allow decision "
                    "your organisation's system can use to re-run its request.")


class GapChangeView(BaseModel):
    at: datetime
    status_before: str | None = Field(description="Empty for a note carried over from before the history "
                                                   "was kept (who wrote it was not recorded then).")
    status: str
    note: str | None
    actor_org: str | None
    actor_user: str | None


class LegalGapView(BaseModel):
    id: str
    partnership: str
    title: str
    description: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    created_by_org: str
    note: str | None = Field(description="The latest note (every note is in `history`).")
    case_ids: list[str]
    history: list[GapChangeView] = Field(description="Every status change, oldest first, with its note.")
