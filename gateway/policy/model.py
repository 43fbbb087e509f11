"""The policy contract: input documents the gateway sends, the decision document the policies return.

The decision is validated strictly: a policy bug that returns a half-formed document is treated as an
engine failure (deny), never interpreted optimistically.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.policy.errors import MalformedDecision


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyReason(_Strict):
    code: str
    message: str
    category: str | None = None


class PolicyObligations(_Strict):
    retain_until: str
    onward_sharing: bool
    results_only: bool


class Decision(_Strict):
    allow: bool
    escalate: bool
    outcome: Literal["allowed", "allowed-narrowed", "denied", "escalated"]
    reasons: list[PolicyReason]
    permitted_categories: list[str]
    removed_categories: list[str]
    hit_only: bool
    obligations: PolicyObligations | None
    escalation_decision: str | None
    policy_version: str = Field(min_length=1)

    @classmethod
    def parse(cls, document: Any, *, requires_obligations: bool = True) -> Decision:
        try:
            decision = cls.model_validate(document)
        except ValidationError as exc:
            raise MalformedDecision("the policy engine returned a malformed decision document") from exc
        if decision.allow != (decision.outcome in {"allowed", "allowed-narrowed"}):
            raise MalformedDecision("decision `allow` contradicts its outcome")
        if requires_obligations and decision.allow and decision.obligations is None:
            raise MalformedDecision("an allow must carry obligations")
        return decision


class Party(_Strict):
    organisation: str
    system: str | None = None


class PolicyRequest(_Strict):
    partnership: str
    purpose: str
    legal_basis: str
    case_reference: str
    signal: dict[str, str]
    categories: list[str]
    subject_count: int
    subjects_minor: bool
    requester: Party
    holder: Party
    requested_at: str  # RFC 3339, UTC
    provided_categories: list[str] = Field(default_factory=list)  # handed to the holder with the request


class EscalationDecisionInput(_Strict):
    id: str
    request_fingerprint: str
    holder: str
    valid_until: str
    permitted_categories: list[str]
    obligations: dict[str, Any] = Field(default_factory=dict)


class PolicyContext(_Strict):
    requests_today: int = 0
    escalation_decision: EscalationDecisionInput | None = None


class PolicyInput(_Strict):
    request: PolicyRequest
    context: PolicyContext
    request_fingerprint: str

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


PolicyKind = Literal["exchange", "discovery"]
