"""The policy contract: input documents the gateway sends, the decision document the policies return.

The decision is validated strictly: a policy bug that returns a half-formed document is treated as an
engine failure (deny), never interpreted optimistically.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.policy.errors import MalformedDecision


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StrictDecision(BaseModel):
    """A part of the decision document: of exactly the JSON types declared (``"true"``, ``1`` or ``"no"`` for a
    boolean is a policy defect, not a value to coerce), and no member the contract does not name."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # how the policies write dates (Python also reads 20281125 and 2028-W47)


@lru_cache(maxsize=256)
def _is_policy_date(text: str) -> bool:
    """Whether ``text`` is a ``YYYY-MM-DD`` date. Cached: every decision of a day carries one of a few
    retention dates, and this check runs for each decision of every exchange."""
    if not _DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class RegisterFacts:
    """What the gateway's register says that no decision may contradict, whatever policy made it
    (an OPA server may serve another bundle than the gateway's policies: a decision names its policy version,
    and none is required), checked by ``Decision.answering``. The gateway asks the holder for exactly the
    permitted categories, and for records unless the decision says hit/no-hit, so these are the last check
    before a holder is asked."""

    known: frozenset[str]
    """Every category of the register's vocabulary."""
    never_shared: frozenset[str]
    """Never disclosed through the gateway, in any partnership (rule 4: ``criminal_intelligence``)."""
    never_disclosed: Mapping[str, frozenset[str]]
    """By partnership id: what that partnership never discloses besides (its ``never_disclosed``)."""
    hit_only: frozenset[str]
    """Answered as hit/no-hit only, never as records (rule 3: ``ongoing_investigation``)."""
    results_only: frozenset[tuple[str, str]]
    """The (partnership, purpose) pairs whose disclosures may leave the partnership as results only (rule 9)."""


_NONE: frozenset[str] = frozenset()
_ALLOWED = frozenset({"allowed", "allowed-narrowed"})


class PolicyReason(_StrictDecision):
    code: str
    message: str
    category: str | None = None


class PolicyObligations(_StrictDecision):
    retain_until: str
    onward_sharing: bool
    results_only: bool


class Decision(_StrictDecision):
    allow: bool
    escalate: bool
    outcome: Literal["allowed", "allowed-narrowed", "denied", "escalated"]
    reasons: list[PolicyReason]
    permitted_categories: list[str]
    removed_categories: list[str]
    hit_only: bool
    obligations: PolicyObligations | None
    escalation_decision: str | None
    holder: str = Field(min_length=1)
    """The holder (participant id, ``request.holder.organisation``) the decision is for: ``answering``
    refuses a decision for another, so a batch answered out of order, or one holder's decision given
    twice, is told apart from the right one (positions alone would not tell)."""
    policy_version: str = Field(min_length=1)
    register_sha256: str = Field(min_length=1)
    """The digest of the register the policy read (``data.register.sha256``, the SHA-256 the gateway records
    for its register): ``answering`` refuses a decision made under another register than the gateway's, also
    one of the same version string and other content (another gateway's, with its own database). The
    decision names no register version: the gateway records its own register's version with the decision,
    and the digest is what tells that this was the register the decision was made under."""

    @classmethod
    def parse(cls, document: Any, *, requires_obligations: bool = True) -> Decision:
        return cls._parsed(cls.model_validate, document, requires_obligations)

    @classmethod
    def parse_json(cls, text: str | bytes, *, requires_obligations: bool = True) -> Decision:
        """``parse`` for a decision as JSON text (what the embedded engine returns): pydantic validates
        the text directly, without building the Python document first. Its validator is called as
        ``model_validate_json`` calls it, without that method's wrapper (a tenth of the validation's cost,
        paid for every decision)."""
        return cls._parsed(cls.__pydantic_validator__.validate_json, text, requires_obligations)

    @classmethod
    def _parsed(cls, validate: Callable[[Any], Decision], value: Any, requires_obligations: bool) -> Decision:
        try:
            decision = validate(value)
        except ValidationError as exc:
            raise MalformedDecision("the policy engine returned a malformed decision document") from exc
        return decision.checked(requires_obligations)

    @classmethod
    def parse_json_list(cls, text: str | bytes, expected: int, *, requires_obligations: bool = True) -> list[Decision]:
        """``expected`` decisions from a JSON array (a ``decisions`` rule), validated in one pass; any
        other length means the policy left some target undecided."""
        try:
            decisions = _DECISION_LIST.validator.validate_json(text)  # (without the wrapper, as parse_json)
        except ValidationError as exc:
            raise MalformedDecision("the policy produced no decision for some target (malformed)") from exc
        if len(decisions) != expected:
            raise MalformedDecision("the policy produced no decision for some target (undefined)")
        return [decision.checked(requires_obligations) for decision in decisions]

    def checked(self, requires_obligations: bool) -> Decision:
        """This decision, when it is consistent; ``MalformedDecision`` otherwise. Checks, in order:

        1. ``allow`` and ``escalate`` agree with the outcome;
        2. an allow permits something (and carries obligations, for an exchange); a refusal permits
           nothing, carries no obligations and says why (at least one reason);
        3. a category is permitted or removed, once, never both; ``allowed`` removes nothing and
           ``allowed-narrowed`` removes something;
        4. every reason on an allow is the reason for a removed category: a reason without one (a
           denial's or an escalation's) means the policy allowed what it also refused; and every removed
           category, whatever the outcome, has a reason naming it (rule 3: the requester and the log are
           told why each was removed);
        5. the holder, the policy version and the register digest are no blanks; obligations forbid onward
           sharing and retain until a ``YYYY-MM-DD`` date.

        (Written for few interpreter steps, as it runs for every decision: the fields read once into locals,
        the checks of an allow and of a refusal apart, sets built only where a list can hold something that
        would break a check. The refusals, and their order, are those of the checks above one by one:
        tests/unit/policy/test_decision_checks_fast.py compares the two over every mutation of a decision.)
        """
        outcome, allow, obligations = self.outcome, self.allow, self.obligations
        permitted, removed, reasons = self.permitted_categories, self.removed_categories, self.reasons
        if allow != (outcome in _ALLOWED):
            raise MalformedDecision("decision `allow` contradicts its outcome")
        if self.escalate != (outcome == "escalated"):
            raise MalformedDecision("decision `escalate` contradicts its outcome")
        if allow:
            if not permitted:
                raise MalformedDecision("an allow must permit at least one category")
            if requires_obligations and obligations is None:
                raise MalformedDecision("an allow must carry obligations")
        elif permitted:
            raise MalformedDecision("a denial or escalation permits no category")
        elif obligations is not None or not reasons:
            raise MalformedDecision("a denial or escalation carries reasons and no obligations")
        removed_once = set(removed)
        if len(removed_once) != len(removed) or (permitted and (
                len(set(permitted)) != len(permitted) or not removed_once.isdisjoint(permitted))):
            raise MalformedDecision("a category is permitted or removed, once, never both")
        if allow and (outcome == "allowed-narrowed") != bool(removed):
            raise MalformedDecision("decision `removed_categories` contradicts its outcome")
        if reasons:
            explained = {r.category for r in reasons}  # None for a reason that names no category
            if allow and not explained <= removed_once:  # (never holds None)
                raise MalformedDecision("an allow carries a reason that is no removed category's")
            if not removed_once <= explained:
                raise MalformedDecision("a removed category has no reason")
        elif removed:
            raise MalformedDecision("a removed category has no reason")
        if not (self.holder.strip() and self.policy_version.strip() and self.register_sha256.strip()):
            raise MalformedDecision("the decision names no holder, policy version or register digest")
        if obligations is not None:
            if obligations.onward_sharing:  # rule 9: never, whatever else the document says
                raise MalformedDecision("obligations must forbid onward sharing")
            if not _is_policy_date(obligations.retain_until):
                raise MalformedDecision("obligation `retain_until` is not a date")
        return self

    def answering(self, policy_input: PolicyInput, register: RegisterFacts,
                  register_sha256: str) -> Decision:
        """This decision, when it can be the answer to ``policy_input`` under the register of digest
        ``register_sha256`` (which says ``register``); ``MalformedDecision`` otherwise. The gateway
        records its own register's version with the decision and asks the holder for exactly the permitted
        categories, filtering its answer by them, so a decision made under another register would cite a
        register it was not made under, a decision for another holder would be applied to this one (a batch
        answered out of order), and a category the request did not ask for would be disclosed unasked,
        whatever the policy meant:

        0. it was made under the register of digest ``register_sha256`` (one string compared: the digest
           covers the version, and tells apart two registers of one version string), for this request's
           holder;
        1. it permits only categories the register knows and, unless the holder answers hit/no-hit only
           (asked about all it supplies, rule 3), only requested ones;
        2. it permits no category the request's partnership never discloses, not even as hit/no-hit (rule 4:
           whether the police hold intelligence on a person is that intelligence), and a hit/no-hit-only
           category only to a hit/no-hit answer (rule 3: never as records);
        3. its obligations keep the purpose's results-only (rule 9: where the register says so, only results
           leave the partnership);
        4. it removes only requested categories;
        5. it names an escalation decision only when the input brought that one, for this holder.
        """
        if self.register_sha256 != register_sha256:
            raise MalformedDecision("the decision was made under another register than the gateway's (digest)")
        request = policy_input.request
        holder = request.holder.organisation
        if self.holder != holder:
            raise MalformedDecision("the decision is for another holder than the request's")
        # (Checks 1 and 2 hold of a decision that permits nothing, 4 of one that removes nothing: skipped.)
        permitted, removed, obligations = self.permitted_categories, self.removed_categories, self.obligations
        requested = set(request.categories) if removed or (permitted and not self.hit_only) else _NONE
        if permitted:
            partnership = request.partnership
            if not register.known.issuperset(permitted) or not (self.hit_only or requested.issuperset(permitted)):
                raise MalformedDecision("the decision permits a category that was not requested or is not registered")
            if not (register.never_shared.isdisjoint(permitted)
                    and register.never_disclosed.get(partnership, _NONE).isdisjoint(permitted)):
                raise MalformedDecision("the decision permits a category the partnership never discloses")
            if not self.hit_only and not register.hit_only.isdisjoint(permitted):
                raise MalformedDecision("the decision permits a hit/no-hit-only category as records")
        if (obligations is not None and not obligations.results_only
                and (request.partnership, request.purpose) in register.results_only):
            raise MalformedDecision("the decision's obligations lift the purpose's results only")
        if removed and not requested.issuperset(removed):
            raise MalformedDecision("the decision removes a category that was not requested")
        applied = self.escalation_decision
        if applied is not None:
            brought = policy_input.context.escalation_decision
            if brought is None or brought.id != applied or brought.holder != holder:
                raise MalformedDecision("the decision applies an escalation decision the request did not bring")
        return self


_DECISION_LIST = TypeAdapter(list[Decision])


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

    def document_json(self, exclude: Any = None) -> str:
        """``document()`` as JSON text (``model_dump_json(exclude_none=True, exclude=exclude)``), for the
        embedded engine. The model's serializer is called as ``model_dump_json`` calls it, without that
        method's wrapper, which costs a sixth of the serialization (about 6k of 34k instructions) and runs
        for every decision."""
        return self.__pydantic_serializer__.to_json(self, exclude_none=True, exclude=exclude).decode()

    def document_without_holder(self) -> dict[str, Any]:
        """``document()`` less ``request.holder``: the part that a batch of inputs shares."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"request": {"holder"}})

    def same_but_holder(self, other: PolicyInput) -> bool:
        """Whether ``other`` has the same document as this input except for ``request.holder``. Compares
        the validated fields (each of a fixed JSON type, so equal values are equal JSON), not documents:
        the request's fields other than its two parties as one tuple (``operator.itemgetter``, no dict
        built), the requester and the context by their field dicts (pydantic's ``==`` costs more than the
        dict comparison it makes). A batch of a dozen holders is grouped in microseconds. The escalation decision's
        free-form ``obligations`` are compared as JSON (``1 == True`` in Python, not in JSON)."""
        mine, theirs = self.request.__dict__, other.request.__dict__
        if (self.request_fingerprint != other.request_fingerprint
                or _shared_request_fields(mine) != _shared_request_fields(theirs)
                or mine["requester"].__dict__ != theirs["requester"].__dict__
                or self.context.__dict__ != other.context.__dict__):
            return False
        decision, others = self.context.escalation_decision, other.context.escalation_decision
        return decision is None or decision is others or others is None or (
            json.dumps(decision.obligations, sort_keys=True) == json.dumps(others.obligations, sort_keys=True))


_shared_request_fields = operator.itemgetter(
    *(name for name in PolicyRequest.model_fields if name not in {"holder", "requester"}))
"""A request's fields that a batch shares, but the requester (a model, compared by its fields): a tuple."""


PolicyKind = Literal["exchange", "discovery"]
