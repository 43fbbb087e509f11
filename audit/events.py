"""What one audit event says: the *Logboek Dataverwerkingen* fields plus the gateway's own.

The Dutch government standard for logging data processing (Logboek Dataverwerkingen) records a trace id,
span id, parent span id, the processing activity, the data subject and a status, following W3C trace
context and OpenTelemetry. We keep those names so that a privacy officer who knows the standard
recognises them, and add what the gateway needs for accountability: event type, requester, holder,
decision, reasons, data categories, policy and register versions, obligations and a hash of any payload.

The model is frozen and strict (``extra="forbid"``): an entry is evidence, so a typo in a field name must
fail when the event is built, not surface years later in a review. Identifiers are constrained to short
reference strings; free text belongs in ``reasons`` (rule identifiers, not prose about people).
Personal data is never allowed; :mod:`audit.guard` refuses obvious cases before anything is written.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StringConstraints


class EventType(StrEnum):
    """Every kind of thing the gateway logs. The values are stable: they are stored in signed entries."""

    EXCHANGE_REQUESTED = "exchange.requested"
    POLICY_DECIDED = "policy.decided"
    DISCLOSURE = "disclosure"
    HOLDER_REFUSED = "holder.refused"
    HOLDER_UNAVAILABLE = "holder.unavailable"
    DISCOVERY_QUERIED = "discovery.queried"
    ESCALATION_STEP = "escalation.step"
    CONSOLE_ACTION = "console.action"
    REGISTER_CHANGED = "register.changed"
    AUTH_REJECTED = "auth.rejected"
    ANOMALY_FLAGGED = "anomaly.flagged"
    REQUEST_FAILED = "request.failed"  # an exchange or discovery already logged failed afterwards (not answered)
    INDEX_ENROLMENT = "index.enrolment"  # a participant's batch changed the discovery index (counts only)
    INDEX_REKEYED = "index.rekeyed"  # `pseudonyms rotate|rekey` moved index rows to a new key version (counts only)
    INDEX_RETIRED = "index.retired"  # a retired participation's index rows were removed (counts only)


CASE_REQUESTER = "requester_org"
"""The member of an ``escalation.step`` event's ``extra`` that names the organisation whose request the case is
about. The event's ``requester`` is whoever took the step (the holder's officer, the legal desk, the scheduler,
the gateway's exchange after a re-run), so without it the requesting organisation — a party to every step of
its case — could not be found in the log (:func:`audit.review.scope_condition` reads it)."""


INDEX_ACTIVITY = "discovery-index"
"""The processing activity (the ``purpose`` of the ``processing_activity``) of an ``index.enrolment`` entry:
keeping the partnership's discovery index, which says which participant holds data on which subjects. It is
no purpose of the register — enrolling is not a request for anything — but the entry must name its
partnership (so the partnership's coordinating officer sees it and a partnership filter finds it), and the
Logboek's *verwerkingsactiviteit* is exactly this: the processing the gateway does for the partnership."""


LEGAL_GAP_ACTIVITY = "legal-gap-register"
"""The processing activity (the ``purpose`` of the ``processing_activity``) of an ``escalation.step`` entry about
a legal gap as such (its status changing): keeping the partnership's register of legal gaps. A gap belongs to
a partnership, not to one of its purposes, but the entry must name the partnership: the organisation that
changes a gap's status is often not the partnership's coordinating organisation, whose privacy officer
reviews the partnership's entries by that name (:func:`audit.review.scope_condition`)."""


class Status(StrEnum):
    """Outcome of the processing step, as OpenTelemetry's span status (which the Logboek standard uses)."""

    OK = "ok"
    ERROR = "error"
    UNSET = "unset"


class Decision(StrEnum):
    """A policy (or escalation) outcome; an enum so that accountability statistics are a GROUP BY."""

    ALLOW = "allow"
    NARROWED = "narrowed"
    DENY = "deny"
    ESCALATE = "escalate"


def _not_all_zero(value: str) -> str:
    # W3C trace context: an all-zero trace or span id is invalid.
    if set(value) == {"0"}:
        raise ValueError("an all-zero id is invalid (W3C trace context)")
    return value


Ref = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""A short reference: an organisation or system id, a purpose, a category, a version. No control characters."""

TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$"), AfterValidator(_not_all_zero)]
SpanId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$"), AfterValidator(_not_all_zero)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Pseudonym = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9+/=_:.\-]+$")]
"""A pseudonym in the partnership domain: an encoded group element, never a readable identifier."""

Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")]

_SAFE_INTEGER = 2**53 - 1
_KEY = re.compile(r"^[\x20-\x7e]{1,100}$")


def _plain_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Free-form members hold "plain" JSON: no floats, integers within ±(2**53 - 1), printable-ASCII keys.

    Why: an audit entry is hashed, so its bytes must be reproducible by any RFC 8785 implementation.
    Floats are where JSON encoders disagree (and a decimal belongs in a string anyway); integers beyond
    2**53 are not exact in JavaScript; ASCII keys sort the same under every collation. Within these
    rules the canonical bytes are easy to produce and to check (see :mod:`audit.canonical`).
    """
    stack: list[JsonValue] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, member in item.items():
                if not _KEY.match(key):
                    raise ValueError("keys must be 1-100 printable ASCII characters")
                stack.append(member)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float):
            raise ValueError("floats are not allowed in audit events; use an integer or a string")
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > _SAFE_INTEGER:
            raise ValueError("integers must lie within ±(2**53 - 1)")
    return value


PlainObject = Annotated[dict[str, JsonValue], AfterValidator(_plain_json)]
"""A JSON object restricted to plain JSON (see :func:`_plain_json`)."""

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ProcessingActivity(BaseModel):
    """The Logboek's *verwerkingsactiviteit*: for us, a partnership and one of its purposes."""

    model_config = _FROZEN

    partnership: Ref
    purpose: Ref


class DataSubject(BaseModel):
    """The data subject, only ever as a pseudonym in the partnership's domain."""

    model_config = _FROZEN

    pseudonym: Pseudonym


class Requester(BaseModel):
    """Who asked: the organisation, and the system or the person (a user reference, not a name) acting for it."""

    model_config = _FROZEN

    org: Ref
    system: Ref | None = None
    user: Ref | None = None


class AuditEvent(BaseModel):
    """One thing that happened, as the caller describes it; the log adds index, entry id and time.

    Fields without a meaning for an event type stay ``None`` (or empty). All fields are serialised,
    ``None`` included, so that every entry has the same keys and a reader never guesses.
    """

    model_config = _FROZEN

    event_type: EventType
    # Logboek Dataverwerkingen
    trace_id: TraceId
    span_id: SpanId
    parent_span_id: SpanId | None = None
    processing_activity: ProcessingActivity | None = None
    data_subject: DataSubject | None = None
    status: Status = Status.OK
    # ours
    requester: Requester | None = None
    holder: Ref | None = None
    decision: Decision | None = None
    reasons: tuple[Reason, ...] = ()
    categories: tuple[Ref, ...] = ()
    policy_version: Ref | None = None
    register_version: Ref | None = None
    obligations: PlainObject | None = None
    payload_sha256: Sha256Hex | None = None
    exchange_id: Ref | None = None
    extra: PlainObject = Field(default_factory=dict)

    def to_document(self) -> dict[str, JsonValue]:
        """The event as plain JSON data (enums as their values), ready for canonicalisation."""
        return self.model_dump(mode="json")

