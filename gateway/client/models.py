"""API models of the exchange and discovery endpoints (request, per-target outcome, receipt).

They live in the partner-side SDK because they ARE the contract: the gateway's routers and partner
systems share these exact classes. Why so explicit: partner systems of many organisations integrate
against it; every field, outcome and error is described here and appears in the OpenAPI document.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SLUG = r"^[a-z0-9][a-z0-9-]{1,63}$"
_REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Signal(_Strict):
    """The clear, objective indication that justifies the request (WGS: no fishing)."""

    type: str = Field(pattern=_SLUG, description="Kind of signal, e.g. `bibob-application`, `fiu-report`.",
                      examples=["bibob-application"])
    reference: str = Field(pattern=_REFERENCE, description="The signal's reference in the requester's files.",
                           examples=["BIBOB-2026-0042"])


class Subject(_Strict):
    """A data subject, identified only by a pseudonym (or, before enrolment, an opaque subject reference)."""

    ref: str = Field(pattern=r"^[A-Za-z0-9_:.=-]{8,200}$",
                     description="The requester's pseudonym for the subject (never a BSN, KvK number or name).",
                     examples=["subj-3f9a0c1d2e4b5a6978c0d1e2"])
    minor: bool = Field(default=False, description="The requester knows the subject is under 18 (rule 5).")

    @field_validator("ref")
    @classmethod
    def _not_an_identifier(cls, value: str) -> str:
        # A bare number (BSN, KvK, RSIN shaped) is an identifier, not a pseudonym: refuse it before it can
        # reach a log, an audit entry or a holder.
        if value.isdigit():
            raise ValueError("looks like a plain identifier; send a pseudonym")
        return value


class ProvidedRecord(_Strict):
    """Data the requester hands to the holder with the request (e.g. the Belastingdienst's dissolution
    grounds for the KvK, S2). Purpose-bound like everything else: the requester's role must supply the
    category and the holder's role must be allowed to receive it."""

    subject: str = Field(pattern=r"^[A-Za-z0-9_:.=-]{8,200}$", description="The subject's pseudonym.")
    category: str = Field(pattern=r"^[a-z][a-z_]{1,63}$", examples=["tax_compliance"])
    fields: dict[str, Any] = Field(description="Category-tagged content; never logged, only hashed.")


class ExchangeRequest(_Strict):
    """`POST /v1/exchanges`: ask the holders of a partnership for data about subjects, for one purpose."""

    partnership: str = Field(pattern=_SLUG, examples=["riec-amsterdam-amstelland"])
    purpose: str = Field(pattern=_SLUG, examples=["bibob-integrity-check"])
    legal_basis: str = Field(min_length=1, max_length=200, description="Must equal the purpose's legal basis.",
                             examples=["WGS (RIEC) with Wet Bibob"])
    case_reference: str = Field(pattern=_REFERENCE, description="The requester's case file reference.",
                                examples=["RIEC-AA-2026-117"])
    signal: Signal
    subjects: list[Subject] = Field(min_length=1, max_length=100)
    categories: list[str] = Field(min_length=1, max_length=30, description="Data categories asked for.",
                                  examples=[["company_registration", "directorships", "tax_debts"]])
    holders: list[str] | Literal["all"] = Field(
        default="all",
        description='Organisation ids of the holders to ask, or "all" for every participant that supplies '
                    "a requested category for this purpose.",
        examples=["all", ["kvk", "belastingdienst"]])
    escalation_decision: str | None = Field(
        default=None, description="Id of an escalation decision that allows this exact request (re-run).")
    provide: list[ProvidedRecord] = Field(default_factory=list, max_length=100,
                                          description="Records handed to the holder(s) with the request.")


class Outcome(StrEnum):
    ALLOWED = "allowed"
    ALLOWED_NARROWED = "allowed-narrowed"
    DENIED = "denied"
    ESCALATED = "escalated"
    REFUSED_BY_HOLDER = "refused-by-holder"
    HOLDER_UNAVAILABLE = "holder-unavailable"


class Reason(BaseModel):
    code: str = Field(examples=["category-not-supplied"])
    message: str = Field(examples=["belastingdienst does not supply `income` for bibob-integrity-check"])
    category: str | None = None


class Obligations(BaseModel):
    retain_until: date | None = Field(description="Delete the data after this date.")
    onward_sharing: bool = Field(description="Always false: the data may not be passed on.")
    results_only: bool = Field(description="Only results (not the data itself) may leave the partnership.")


class Record(BaseModel):
    record_id: str
    record_type: str = Field(examples=["tax-debt"])
    subject: str = Field(description="The subject in the REQUESTER's pseudonym domain.")
    category: str
    fields: dict[str, Any]


class TargetOutcome(BaseModel):
    holder: str = Field(description="Organisation id of the holder.", examples=["belastingdienst"])
    system: str | None = Field(description="The holder's partner system that answered.")
    outcome: Outcome
    reasons: list[Reason]
    permitted_categories: list[str]
    removed_categories: list[str] = Field(default_factory=list)
    hit_only: bool = False
    hit: bool | None = Field(default=None, description="For hit/no-hit holders: whether any record exists.")
    records: list[Record] = Field(default_factory=list)
    obligations: Obligations | None = None
    escalation_id: str | None = Field(
        default=None, description="The escalation case opened for this target (escalated or refused-by-holder).")
    escalation_decision_applied: bool = Field(
        default=False, description="The policy honoured the escalation decision cited by this re-run.")


class Receipt(BaseModel):
    """Proof the exchange was logged: the audit entries written for it."""

    exchange_id: str
    audit_indices: list[int] = Field(default_factory=list)
    checkpoint: str | None = Field(default=None, description="The latest signed checkpoint (C2SP format).")


class ExchangeResult(BaseModel):
    exchange_id: str
    created_at: datetime
    requester: str = Field(description="Organisation id of the requester.")
    partnership: str
    purpose: str
    case_reference: str
    register_version: str
    policy_version: str
    targets: list[TargetOutcome]
    receipt: Receipt


class DiscoveryRequest(_Strict):
    """`POST /v1/discovery`: which holders have data on these subjects, for this purpose? No data."""

    partnership: str = Field(pattern=_SLUG)
    purpose: str = Field(pattern=_SLUG)
    legal_basis: str = Field(min_length=1, max_length=200)
    case_reference: str = Field(pattern=_REFERENCE)
    signal: Signal
    subjects: list[Subject] = Field(min_length=1, max_length=100)
    categories: list[str] = Field(min_length=1, max_length=30)


class DiscoveryTarget(BaseModel):
    holder: str
    outcome: Literal["hit", "no-hit", "denied", "holder-unavailable"]
    reasons: list[Reason] = Field(default_factory=list)


class DiscoveryResult(BaseModel):
    discovery_id: str
    partnership: str
    purpose: str
    policy_version: str
    register_version: str
    targets: list[DiscoveryTarget]
    receipt: Receipt
