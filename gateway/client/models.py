"""API models of the exchange and discovery endpoints (request, per-target outcome, receipt).

They live in the partner-side SDK because they ARE the contract: the gateway's routers and partner
systems share these exact classes. Why so explicit: partner systems of many organisations integrate
against it; every field, outcome and error is described here and appears in the OpenAPI document.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,63}$"
"""Ids of partnerships, purposes, organisations and systems, here and in the register (one definition)."""
CATEGORY_PATTERN = r"^[a-z][a-z_]{1,63}$"
"""Names of data categories, here and in the register."""
_REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""Ids the gateway makes (escalation decisions): UUIDs. Checked, so that no free text in their place reaches a
422's detail or the log (an unknown id is named there)."""
_NEWER_VALUE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
"""What an outcome value a newer gateway may add looks like (a slug); anything else is still refused."""
ANSWER_CONTEXT = {"answer_from_gateway": True}
"""The validation context ``gateway.client`` reads the gateway's answers with: an outcome value this version
of the models does not know (a newer gateway added it) is kept, not refused. The gateway itself validates
without it, so it can never send an outcome it does not define."""


def _newer_value(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """``handler(value)``, or None when it fails on a value only a newer gateway would send and the context
    says this is an answer being read by the client."""
    try:
        return handler(value)
    except ValidationError:
        if (isinstance(value, str) and _NEWER_VALUE.fullmatch(value) and isinstance(info.context, dict)
                and info.context.get("answer_from_gateway")):
            return None
        raise


class _Strict(BaseModel):
    """A request model: unknown fields refused, and a refusal's message never quotes the value it refused —
    partner systems build these from their own data and log the errors (a BSN where a pseudonym belongs is
    refused precisely so that it reaches no log; pydantic's message would repeat it, ``input_value=...``)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class Signal(_Strict):
    """The clear, objective indication that justifies the request (WGS: no fishing)."""

    type: str = Field(pattern=SLUG_PATTERN, description="Kind of signal, e.g. `bibob-application`, `fiu-report`.",
                      examples=["bibob-application"])
    reference: str = Field(pattern=_REFERENCE, description="The signal's reference in the requester's files.",
                           examples=["BIBOB-2026-0042"])


_SEPARATORS = str.maketrans("", "", "_:.=-")


def _no_identifier(value: str) -> str:
    """``value``, refused when it is a number (BSN, KvK, RSIN shaped) rather than a pseudonym — also as people
    write one, with dots or dashes (``1234.56.782``, ``123-456-782``), which the pattern of a pseudonym lets
    through: before it can reach a log, an audit entry or a holder. No pseudonym is digits and separators only."""
    if value.translate(_SEPARATORS).isdigit():
        raise ValueError("looks like a plain identifier; send a pseudonym")
    return value


class Subject(_Strict):
    """A data subject, identified only by a pseudonym (or, before enrolment, an opaque subject reference)."""

    ref: str = Field(pattern=r"^[A-Za-z0-9_:.=-]{8,200}$",
                     description="The requester's pseudonym for the subject (never a BSN, KvK number or name); "
                                 "in `POST /v1/exchanges` also a match handle (`match:...`) of a fuzzy discovery "
                                 "hit, which asks that hit's holder about its record.",
                     examples=["subj-3f9a0c1d2e4b5a6978c0d1e2"])
    minor: bool = Field(default=False, description="The requester knows the subject is under 18 (rule 5).")

    @field_validator("ref")
    @classmethod
    def _not_an_identifier(cls, value: str) -> str:
        return _no_identifier(value)


MAX_FIELD_DEPTH = 32
"""How deeply a provided record's ``fields`` may nest objects and lists. The gateway hashes, fingerprints and
forwards them, and its serialiser stops at a few hundred levels: deeper ones failed the whole request with 500
(and were logged as the gateway's defect). A holder's parser stops sooner still, so nothing deeper could arrive."""


def _depth_and_finite(value: Any) -> tuple[int, bool]:
    """How many objects and lists ``value`` nests (0 for a scalar), and whether every number in it is finite;
    without recursing: the value is the caller's. ``NaN`` and ``Infinity`` are no JSON (RFC 8259) though the
    request parser takes them: the holder would get ``null`` while the log's payload hash covered them."""
    deepest, finite, stack = 0, True, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            finite = False
    return deepest, finite


class ProvidedRecord(_Strict):
    """Data the requester hands to the holder with the request (e.g. the Belastingdienst's dissolution
    grounds for the KvK, S2). Purpose-bound like everything else: the requester's role must supply the
    category and the holder's role must be allowed to receive it."""

    subject: str = Field(pattern=r"^[A-Za-z0-9_:.=-]{8,200}$", description="The subject's pseudonym.")
    category: str = Field(pattern=CATEGORY_PATTERN, description="The data category of `fields`; policy "
                          "checks that the requester may supply it and the holder may receive it.",
                          examples=["tax_compliance"])
    fields: dict[str, Any] = Field(repr=False, description="Category-tagged content; never logged, only hashed. "
                                   f"Objects and lists nest at most {MAX_FIELD_DEPTH} levels deep (this object "
                                   "included).")

    @field_validator("subject")
    @classmethod
    def _not_an_identifier(cls, value: str) -> str:
        return _no_identifier(value)

    @field_validator("fields")
    @classmethod
    def _not_too_deep_and_finite(cls, fields: dict[str, Any]) -> dict[str, Any]:
        depth, finite = _depth_and_finite(fields)
        if depth > MAX_FIELD_DEPTH:
            raise ValueError(f"nested more than {MAX_FIELD_DEPTH} levels deep")
        if not finite:
            raise ValueError("holds NaN or Infinity, which JSON does not have")
        return fields


LEGAL_BASIS_MAX_LENGTH = 200
"""The longest legal basis a request may state; the register refuses a purpose whose legal basis is longer,
as no request could repeat it (gateway.register.validation)."""


def each_category_once(categories: list[str]) -> list[str]:
    """Refused, not merged: a category named twice was asked, and logged in the request's entry, twice; the list
    is what the requester asked for, as written (subjects are refused alike). One check for every request that
    names categories, so none of them reaches the gateway's own steps with a duplicate (a fuzzy discovery did,
    and failed there with a 500)."""
    if len(set(categories)) != len(categories):
        raise ValueError("each category may be named only once")
    return categories


class _PurposeBound(_Strict):
    """What every request to the holders states (exchange and discovery alike): where, why and about whom."""

    partnership: str = Field(pattern=SLUG_PATTERN, description="Id of the partnership (register) the request is made "
                             "in; the requester must be an active participant of it.",
                             examples=["riec-amsterdam-amstelland"])
    purpose: str = Field(pattern=SLUG_PATTERN, description="One of the partnership's registered purposes; everything "
                         "disclosed is bound to it.", examples=["bibob-integrity-check"])
    legal_basis: str = Field(min_length=1, max_length=LEGAL_BASIS_MAX_LENGTH,
                             description="Must equal the purpose's legal basis.",
                             examples=["WGS (RIEC) with Wet Bibob"])
    case_reference: str = Field(pattern=_REFERENCE, description="The requester's case file reference.",
                                examples=["RIEC-AA-2026-117"])
    signal: Signal = Field(description="What justifies the request (rule 4: no request without a signal).")
    subjects: list[Subject] = Field(min_length=1, max_length=100, description="The data subjects asked about; "
                                    "more than the purpose's bulk threshold is escalated (rule 6).")
    categories: list[Annotated[str, Field(pattern=CATEGORY_PATTERN)]] = Field(
        min_length=1, max_length=30, description="Data categories asked for; only holders the policy lets supply "
        "one of them are asked.", examples=[["company_registration", "directorships", "tax_debts"]])

    @field_validator("subjects")
    @classmethod
    def _each_subject_once(cls, subjects: list[Subject]) -> list[Subject]:
        # A subject named twice would be counted (rule 6) and logged as disclosed twice for one disclosure.
        refs = [s.ref for s in subjects]
        if len(set(refs)) != len(refs):
            raise ValueError("each subject may be named only once")
        return subjects

    _each_category_once = field_validator("categories")(each_category_once)


_OrganisationId = Annotated[str, Field(pattern=SLUG_PATTERN)]


class ExchangeRequest(_PurposeBound):
    """`POST /v1/exchanges`: ask the holders of a partnership for data about subjects, for one purpose."""

    holders: Annotated[list[_OrganisationId], Field(min_length=1)] | Literal["all"] = Field(
        default="all",
        description='Organisation ids of the holders to ask, or "all" for every participant that supplies '
                    "a requested category for this purpose. An unknown id is named in the 422, so ids are "
                    "checked to be ids (no free text reaches the answer or the log).",
        examples=["all", ["kvk", "belastingdienst"]])
    escalation_decision: str | None = Field(
        default=None, pattern=_UUID, description="Id of an escalation decision that allows this exact request "
                                                  "(re-run).", examples=["01a23787-4c30-778c-8ded-6a98c57e0ea3"])
    provide: list[ProvidedRecord] = Field(default_factory=list, max_length=100,
                                          description="Records handed to the holder(s) with the request.")


class OpenEnum(StrEnum):
    """The values of an answer's field that a newer gateway may add to: a value this version does not define is
    kept as a member made by ``unknown`` (``known`` false) rather than making the whole answer unreadable.
    Subclasses define the members; this class has none (an enum with members cannot be subclassed)."""

    @classmethod
    def unknown(cls, value: str) -> Self:
        """A value a newer gateway sent that this version does not define: one of ``cls`` (so the answer's other
        parts stay readable) whose ``known`` is false and whose ``value`` is what was sent; it is none of the
        members, so a check like ``outcome is Outcome.ALLOWED`` treats it as not that member."""
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """False for a value made by ``unknown``."""
        return self._name_ != "UNKNOWN"

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        # Pickled as Enum pickles its members, ``Outcome(value)``, a value made by ``unknown`` failed on
        # arrival ("is not a valid Outcome"): a result handed to a worker pool or a task queue was lost there.
        # Rebuilt by ``unknown`` instead (``Outcome(value)`` itself still refuses it, as the gateway must).
        return (type(self).unknown if not self.known else type(self), (self._value_,))


class Outcome(OpenEnum):
    """What happened for one target holder.

    - `allowed`: the policy allowed every requested category this holder supplies; the holder was asked
      and `records` holds its answer (for a hit-only holder: `hit`, no records).
    - `allowed-narrowed`: allowed for fewer categories than asked; `removed_categories` and a reason per
      category say which and why; the holder was asked only for `permitted_categories`.
    - `denied`: a WGS rule forbids the request for this holder; the reasons name it; no holder was asked.
    - `escalated`: the request needs a person's decision (bulk, daily limit, outside office hours);
      `escalation_id` names the case; no holder was asked. A re-run cites the decision.
    - `refused-by-holder`: the holder declined, with its reason (holder autonomy); this opens an escalation
      case too.
    - `holder-unavailable`: the holder is not connected, or did not answer in time, or answered another
      request (reason `answer-mismatch`) or only about subjects not asked (`holder-answered-unasked-subjects`),
      or the gateway failed while asking it (reason `gateway-error`, logged); nothing of it was disclosed.

    Later versions may add values: treat one you do not know as not allowed (`gateway.client` keeps it as
    an outcome whose `known` is false).
    """

    ALLOWED = "allowed"
    ALLOWED_NARROWED = "allowed-narrowed"
    DENIED = "denied"
    ESCALATED = "escalated"
    REFUSED_BY_HOLDER = "refused-by-holder"
    HOLDER_UNAVAILABLE = "holder-unavailable"


class Reason(BaseModel):
    """Why a target got its outcome, or why a category was removed: one per rule that applied."""

    code: str = Field(description="Stable machine-readable code of the rule or event (e.g. "
                      "`category-not-supplied`, `outside-office-hours`, `refused-by-holder`).",
                      examples=["category-not-supplied"])
    message: str = Field(description="The same in words, for people; never contains personal data.",
                         examples=["belastingdienst does not supply `income` for bibob-integrity-check"])
    category: str | None = Field(default=None, description="The category this reason removed, when it is about one.")


class Obligations(BaseModel):
    """Conditions attached to every allowed disclosure (rule 9); the requester must honour them."""

    retain_until: date | None = Field(description="Delete the data after this date.")
    onward_sharing: bool = Field(description="Always false: the data may not be passed on.")
    results_only: bool = Field(description="Only results (not the data itself) may leave the partnership.")


class Record(BaseModel):
    """One record a holder disclosed, in a permitted category only (the gateway drops anything else)."""

    record_id: str = Field(description="The holder's id of the record.", examples=["tax-debt-2025-002202"])
    record_type: str = Field(description="The holder's kind of record.", examples=["tax-debt"])
    subject: str = Field(description="The subject in the REQUESTER's pseudonym domain.")
    category: str = Field(description="The data category of this record; always one of the target's "
                          "`permitted_categories`.", examples=["tax_debts"])
    # Not in the repr (nor ProvidedRecord's): a repr is what a debug line, a failed assertion or an error
    # tracker's frame locals write down, and the content is personal data; what the record is stays in it.
    fields: dict[str, Any] = Field(repr=False, description="The record's content as the holder answered it; "
                                   "persons other than the subject appear as pseudonyms in the requester's domain.")


class TargetOutcome(BaseModel):
    """The answer for one target holder: the policy's decision and, when allowed, what the holder disclosed."""

    holder: str = Field(description="Organisation id of the holder.", examples=["belastingdienst"])
    system: str | None = Field(description="The holder's partner system that answered.")
    outcome: Outcome = Field(description="What happened for this holder (see `Outcome`).")
    reasons: list[Reason] = Field(description="Why: every rule that denied, escalated or narrowed, and the "
                                  "holder's refusal or unavailability; empty for a plain `allowed`.")
    permitted_categories: list[str] = Field(description="The categories the holder was asked for (empty "
                                            "unless allowed).")
    removed_categories: list[str] = Field(default_factory=list, description="Requested categories the policy "
                                          "removed for this holder; each has a reason.")
    hit_only: bool = Field(default=False, description="This holder answers only whether it has data (hit/no-hit), "
                           "never the data itself.")
    hit: bool | None = Field(default=None, description="For hit/no-hit holders: whether any record exists.")
    records: list[Record] = Field(default_factory=list, description="What the holder disclosed, permitted "
                                  "categories only. Empty in `GET /v1/exchanges/{id}`: the outcome, not the "
                                  "data again. Empty with `records_withheld` set: not that the holder had "
                                  "nothing, but that this answer cannot say what it had.")
    records_withheld: Literal["expired", "unavailable", "retired"] | None = Field(
        default=None,
        description="Set on an allowed target of a replayed answer (an `Idempotency-Key` retry, "
                    "`Idempotent-Replayed: true`) whose records the gateway no longer has, so `records` is empty "
                    "whatever the holder disclosed the first time: `expired`, the 24 hours they are kept for a "
                    "retry have passed (also in `GET /v1/exchanges/{id}`, which never repeats records: a retry "
                    "would not get them either); `unavailable`, they are kept but cannot be opened (the "
                    "gateway's seal key was replaced); `retired`, the partnership or the requester's participation "
                    "in it is no longer active in the register (a retired partnership shares nothing, a retry "
                    "included). Null when `records` is the holder's answer as disclosed. "
                    "Later versions may add values: treat any value as \"the records are not in this answer\".",
        examples=["expired"])
    obligations: Obligations | None = Field(default=None, description="Conditions on the disclosed data "
                                            "(rule 9); null unless allowed.")
    escalation_id: str | None = Field(
        default=None, description="The escalation case opened for this target (escalated or refused-by-holder).")
    escalation_decision_applied: bool = Field(
        default=False, description="The policy honoured the escalation decision cited by this re-run.")

    @field_validator("outcome", mode="wrap")
    @classmethod
    def _outcome_of_a_newer_gateway(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                                    info: ValidationInfo) -> Outcome:
        # One target with an outcome added after this version must not make the whole answer unreadable:
        # the exchange happened (and was logged) and the other targets' records and obligations hold.
        outcome = _newer_value(value, handler, info)
        return Outcome.unknown(value) if outcome is None else outcome

    @field_validator("records_withheld", mode="wrap")
    @classmethod
    def _withheld_by_a_newer_gateway(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                                     info: ValidationInfo) -> str | None:
        # Read by the client, a reason a newer gateway added is kept as sent: the records are not there either way.
        withheld = _newer_value(value, handler, info)
        return str(value) if withheld is None and value is not None else withheld


class Receipt(BaseModel):
    """Proof the exchange was logged: the audit entries written for it."""

    exchange_id: str = Field(description="The exchange (or discovery) the entries are about.")
    audit_indices: list[int] = Field(default_factory=list, description="Indices of the audit log entries "
                                     "written for it (request, decisions, disclosures); a privacy officer, "
                                     "or the requesting system with the scope `audit:receipts`, can fetch "
                                     "an inclusion proof for each, at once, against "
                                     "`GET /v1/audit/checkpoint?covering=<highest index + 1>`.")
    checkpoint: str | None = Field(default=None, description="The latest signed checkpoint (C2SP format); it "
                                   "may not cover this receipt's entries yet.")


class ExchangeResult(BaseModel):
    """The answer to `POST /v1/exchanges`: an outcome per target holder and the audit receipt."""

    exchange_id: str = Field(description="Id of this exchange (`GET /v1/exchanges/{id}` shows it again).")
    created_at: datetime = Field(description="When the gateway answered (UTC).")
    requester: str = Field(description="Organisation id of the requester.")
    partnership: str = Field(description="The partnership, as requested.")
    purpose: str = Field(description="The purpose everything disclosed is bound to.")
    case_reference: str = Field(description="The requester's case reference, as requested.")
    register_version: str = Field(description="Version of the partnership register the policy decided on.")
    policy_version: str = Field(description="Version of the Rego policy that decided.")
    targets: list[TargetOutcome] = Field(description="One outcome per target holder.")
    receipt: Receipt = Field(description="Where the exchange is in the audit log.")
    # Not a field: the gateway says it in a header (``Idempotent-Replayed: true``), not in the body, and the
    # body is the contract both sides share. ``gateway.client`` sets it from the answer's header.
    _replayed: bool = PrivateAttr(default=False)

    @property
    def replayed(self) -> bool:
        """Read by ``gateway.client``: this is the answer to an earlier attempt with the same Idempotency-Key
        (the gateway's ``Idempotent-Replayed: true``), not a new exchange — nothing was asked or disclosed again
        (targets may show ``records_withheld``). False for a new exchange and for ``get_exchange``."""
        return self._replayed


class DiscoveryRequest(_PurposeBound):
    """`POST /v1/discovery`: which holders have data on these subjects, for this purpose? No data."""


class DiscoveryTarget(BaseModel):
    """Whether one holder has data on the subjects, for the categories it may supply; never the data.
    Later versions may add outcome values (`gateway.client` keeps them as sent): treat one you do not know
    as neither hit nor no-hit."""

    holder: str = Field(description="Organisation id of the holder.", examples=["kvk"])
    outcome: Literal["hit", "no-hit", "denied", "escalated", "refused-by-holder", "holder-unavailable"] = Field(
        description="`hit` or `no-hit`; `denied` when the policy forbids asking this holder (reasons say why); "
                    "`escalated` when the request needs a person's decision first (bulk, daily limit, outside "
                    "office hours; reasons say which) — discovery opens no case, ask again within the limits or "
                    "make it an exchange; `refused-by-holder` when the holder declined to say hit or no-hit "
                    "for these subjects (holder autonomy: e.g. a subject it keeps confidential, or a minor the "
                    "purpose does not allow; the reason says which) — it says neither hit nor no-hit, and "
                    "discovery opens no case: an exchange about the subjects opens one when the holder refuses "
                    "it too; `holder-unavailable` when it could not be asked.")
    reasons: list[Reason] = Field(default_factory=list,
                                  description="Why, for `denied`, `escalated` and `refused-by-holder`; for `hit` "
                                              "and `no-hit`, the requested categories of this holder's that were "
                                              "not searched, one reason each (the answer does not cover them).")

    @field_validator("outcome", mode="wrap")
    @classmethod
    def _outcome_of_a_newer_gateway(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                                    info: ValidationInfo) -> str:
        # Read by the client, a value a newer gateway added is kept as sent (it is neither `hit` nor `no-hit`).
        outcome = _newer_value(value, handler, info)
        return str(value) if outcome is None else str(outcome)


class DiscoveryResult(BaseModel):
    """The answer to `POST /v1/discovery`: hit/no-hit per holder and the audit receipt."""

    discovery_id: str = Field(description="Id of this discovery.")
    partnership: str = Field(description="The partnership, as requested.")
    purpose: str = Field(description="The purpose, as requested.")
    policy_version: str = Field(description="Version of the Rego policy that decided.")
    register_version: str = Field(description="Version of the partnership register the policy decided on.")
    targets: list[DiscoveryTarget] = Field(description="One answer per holder asked.")
    receipt: Receipt = Field(description="Where the discovery is in the audit log.")
