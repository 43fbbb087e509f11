"""HTTP surface of the pseudonym service: the gateway's public key, a participant's recipient key, its own
pseudonyms (``POST /v1/pseudonyms``) and enrolment into the discovery index (``POST /v1/enrolments``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

from connectors.protocol import CATEGORY_PATTERN, RECORD_TYPE_PATTERN
from gateway.auditing.review import (
    DISCLOSURE_EXAMPLE,
    EXAMPLE_PSEUDONYM,
    MAX_SUBJECT,
    EntryView,
    report_disclosures,
    require_contact_point,
)
from gateway.auth.dependencies import require_any_scope, require_scope
from gateway.auth.principal import Principal, Scope
from gateway.client.models import SLUG_PATTERN
from gateway.container import Container
from gateway.deps import get_container
from gateway.enrolment.audited import EntryTrace
from gateway.enrolment.service import REFUSAL_CODE_PATTERN, Item
from gateway.enrolment.setup import pseudonym_service

router = APIRouter(prefix="/v1", tags=["pseudonyms"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or forged access token"},
    403: {"description": "Not a participant of the partnership, or the token lacks the scope"},
    422: {"description": "Not a polymorphic pseudonym under the gateway's key (problem type "
                         "`pseudonym-key-unknown` when it is well-formed but under none of its keys, e.g. one "
                         "retired since the partner fetched it: fetch the keys again), or malformed"},
}
_ENROL_PROBLEMS = _PROBLEMS | {
    409: {"description": "Other enrolments of the same subjects kept changing the index: nothing enrolled, retry"},
    429: {"description": "The system's daily pseudonym quota is used up"},
    500: {"description": "A defect in the gateway while writing the index: nothing was enrolled (logged and "
                         "audited)"},
    503: {"description": "The audit log could not be written (or the pseudonym keys cannot be used): nothing "
                         "was enrolled"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolymorphicItem(_Strict):
    type: str = Field(pattern=r"^(bsn|kvk|rsin)$", description="Identifier type the pseudonym was made from.")
    polymorphic: str = Field(min_length=40, max_length=200, description="From `gateway.client.pseudonyms`.")


class EnrolmentItem(PolymorphicItem):
    record_types: list[Annotated[str, StringConstraints(pattern=RECORD_TYPE_PATTERN)]] = Field(
        default_factory=list, max_length=50, examples=[["trade-name"]],
        description="Record types held, as codes; empty removes the subject from the index.")
    categories: list[Annotated[str, StringConstraints(pattern=CATEGORY_PATTERN)]] = Field(
        default_factory=list, max_length=50, examples=[["company_registration"]],
        description="The data categories of those records, as the register names them (hits are purpose-bound).")
    confidential: bool = Field(default=False, description=(
        "You keep this subject confidential (e.g. an investigation): discovery from the index is your "
        "refusal (`refused-by-holder`, with `confidential_reason`), as it would be if you were asked."))
    minor: bool = Field(default=False, description=(
        "This person is under 18 by your own data: discovery for a purpose that does not allow minors is "
        "your refusal (`minor-not-allowed`), whatever the requester declared."))


class PseudonymRequest(_Strict):
    partnership: str = Field(pattern=SLUG_PATTERN)
    subjects: list[PolymorphicItem] = Field(min_length=1, max_length=1000)


class EnrolmentRequest(_Strict):
    partnership: str = Field(pattern=SLUG_PATTERN)
    subjects: list[EnrolmentItem] = Field(min_length=1, max_length=1000)
    confidential_reason: str | None = Field(default=None, pattern=REFUSAL_CODE_PATTERN, examples=[
        "investigation-confidentiality"], description=(
        "The code you refuse with about the subjects marked `confidential` (a code, never free text: it "
        "reaches the requester and the audit log); `confidential` when left out."))


class PseudonymAnswer(BaseModel):
    pseudonyms: list[str] = Field(description="Your own pseudonyms, in order, encrypted for you: open them "
                                              "with your recipient key (`PseudonymClient.open`).")


class EnrolmentAnswer(PseudonymAnswer):
    indexed: int
    removed: int


def entry_trace(request: Request) -> EntryTrace:
    """The request's trace context (bound by the middleware) for its enrolment entry."""
    state = request.state
    return EntryTrace(state.trace_id, state.span_id, getattr(state, "parent_span_id", None))


partner = require_any_scope(Scope.ENROL, Scope.EXCHANGE)
"""Partner systems with ``enrol`` or ``exchange`` (a requester needs its pseudonym for a subject it asks
about without holding records on it)."""


@router.get("/pseudonyms/key", summary="The gateway's public key for polymorphic pseudonyms")
async def public_key(_principal: Principal = Depends(partner),
                     container: Container = Depends(get_container)) -> dict[str, Any]:
    return pseudonym_service(container).public_key()


@router.get("/pseudonyms/recipient-key", responses=_PROBLEMS,
            summary="Your secret key to open the pseudonyms the gateway encrypts for you (keep it secret)")
async def recipient_key(partnership: str = Query(pattern=SLUG_PATTERN), principal: Principal = Depends(partner),
                        container: Container = Depends(get_container)) -> dict[str, str]:
    return {"recipient_key": pseudonym_service(container).recipient_key(principal, partnership)}


@router.post("/pseudonyms", response_model=PseudonymAnswer, responses=_PROBLEMS,
             summary="Your own pseudonyms for polymorphic pseudonyms; nothing is stored")
async def pseudonymise(body: PseudonymRequest, principal: Principal = Depends(partner),
                       container: Container = Depends(get_container)) -> PseudonymAnswer:
    items = [Item(s.type, s.polymorphic) for s in body.subjects]
    found = await asyncio.to_thread(pseudonym_service(container).pseudonymise, principal, body.partnership, items)
    return PseudonymAnswer(pseudonyms=found)


class SubjectLookup(_Strict):
    """A data subject's request as the contact point receives it: the identifier, already turned into a
    polymorphic pseudonym on the contact point's side (``PseudonymClient.polymorphic``)."""

    partnership: str = Field(pattern=SLUG_PATTERN, description="The partnership whose log pseudonym is looked for.")
    subject: PolymorphicItem = Field(description="The identifier as a polymorphic pseudonym: never the identifier.")


class PseudonymLookup(_Strict):
    """A data subject's request by the pseudonym the log holds (an entry's ``data_subject.pseudonym``), in a body
    so that it reaches no proxy's access log (``GET /v1/audit/subjects/{pseudonym}/disclosures`` is deprecated)."""

    pseudonym: str = Field(min_length=1, max_length=MAX_SUBJECT, description=(
        "The subject's partnership-domain pseudonym, of any key version the key ring still holds: the disclosures "
        "logged under every version are found."))


def _lookup_form(body: Any) -> str | None:
    """Which form a look-up's body has: ``pseudonym`` names the log's pseudonym; ``partnership`` and ``subject``
    an identifier's polymorphic pseudonym. Neither: a 422 that names both forms (not one form's missing fields)."""
    if isinstance(body, dict):
        if "pseudonym" in body:
            return "pseudonym"
        return "identifier" if body.keys() & {"partnership", "subject"} else None
    if isinstance(body, PseudonymLookup):
        return "pseudonym"
    return "identifier" if isinstance(body, SubjectLookup) else None


DisclosuresLookup = Annotated[
    Annotated[PseudonymLookup, Tag("pseudonym")] | Annotated[SubjectLookup, Tag("identifier")],
    Discriminator(_lookup_form, custom_error_type="lookup_form", custom_error_message=(
        "name the subject by `pseudonym` (the log's), or by `partnership` and `subject` (a polymorphic pseudonym)"))]
_LOOKUP_EXAMPLES: dict[str, Any] = {
    "pseudonym": {"summary": "By the pseudonym the log holds", "value": {
        "pseudonym": EXAMPLE_PSEUDONYM}},
    "identifier": {"summary": "By identifier: a polymorphic pseudonym made on the contact point's side", "value": {
        "partnership": "riec-amsterdam-amstelland", "subject": {
            "type": "bsn", "polymorphic": "kT3c9pQ2xY7vW1mN5bR8sL0aH4jD6fG2eU9iO3qZ1wX5cV8nB7mK2lJ4hG6fD0sA9p"
                                          "Q3xY7vW1mN5b"}}},
}


@router.post("/audit/subjects/disclosures", response_model=list[EntryView], responses=_PROBLEMS | {
                 200: {"content": {"application/json": {"example": [DISCLOSURE_EXAMPLE]}}},
                 403: {"description": "Not the contact point"},
                 422: {"description": "Neither form, a malformed pseudonym, or not a polymorphic pseudonym under the "
                                      "gateway's key"}},
             tags=["audit"], summary="Data-subject request: every disclosure about one subject across the "
                                     "partnership(s), by the log's pseudonym or by identifier")
async def subject_disclosures_by_identifier(body: Annotated[DisclosuresLookup, Body(openapi_examples=_LOOKUP_EXAMPLES)],
                                            request: Request,
                                            principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                                            container: Container = Depends(get_container)) -> list[EntryView]:
    """Two forms of one request, both in the body (a pseudonym in an address reaches proxies' logs):

    * ``{"pseudonym": ...}``: the partnership-domain pseudonym the log holds, as the deprecated
      ``GET /v1/audit/subjects/{pseudonym}/disclosures`` took it in its path;
    * ``{"partnership": ..., "subject": {"type": ..., "polymorphic": ...}}``: the gateway computes the subject's
      partnership-domain pseudonym from the polymorphic pseudonym, so the contact point needs neither the
      identifier on the wire nor any key.

    Only the contact point's request is decoded at all: anyone else is refused first. Either way the lookup is
    itself an audit entry (``subject-lookup``), written before the answer."""
    require_contact_point(principal)
    if isinstance(body, PseudonymLookup):
        shared = body.pseudonym
    else:
        shared = await asyncio.to_thread(pseudonym_service(container).partnership_pseudonym_of,
                                         Item(body.subject.type, body.subject.polymorphic), body.partnership)
    return await report_disclosures(shared, request, principal, container)


@router.post("/enrolments", response_model=EnrolmentAnswer, responses=_ENROL_PROBLEMS,
             summary="Enrol subjects you hold records on: your pseudonyms back, the hit/no-hit index updated")
async def enrol(body: EnrolmentRequest, request: Request,
                principal: Principal = Depends(require_scope(Scope.ENROL)),
                container: Container = Depends(get_container)) -> EnrolmentAnswer:
    """The batch is one audit entry (``index.enrolment``: counts, never a subject), written in the transaction
    that changes the index: when the log cannot be written, 503 and the index is unchanged."""
    items = [Item(s.type, s.polymorphic, tuple(s.record_types), tuple(s.categories), s.confidential, s.minor)
             for s in body.subjects]
    found, indexed, removed = await pseudonym_service(container).enrol(
        principal, body.partnership, items, body.confidential_reason, entry_trace(request))
    return EnrolmentAnswer(pseudonyms=found, indexed=indexed, removed=removed)
