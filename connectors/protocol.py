"""The holder protocol (version 1): what the gateway asks a partner system, what it answers, and the async
interface the gateway calls it through.

Both sides use these models: the simulators as their request/response schemas (so the OpenAPI document of a
holder is this protocol), the HTTP connector to validate answers. Unknown fields are refused on both sides so
that a holder cannot smuggle data outside the category-tagged ``fields``.

Failures are the exceptions of ``connectors.errors``, re-exported here.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from connectors.errors import (
    ConnectorError,
    HolderAnswerMismatch,
    HolderProtocolError,
    HolderRejectedRequest,
    HolderUnavailable,
)
from gateway.client.models import MAX_FIELD_DEPTH

__all__ = [
    "CATEGORY_PATTERN", "MAX_ANSWER_RECORDS", "MAX_ANSWER_VALUES", "MINOR_NOT_ALLOWED", "RECORD_TYPE_PATTERN",
    "ConnectorError", "DiscoveryAnswer", "HolderAnswer", "HolderAnswerMismatch", "HolderConnector", "HolderDiscovery",
    "HolderProtocolError", "HolderQuery", "HolderRecord", "HolderRejectedRequest", "HolderUnavailable",
]

MINOR_NOT_ALLOWED = "minor-not-allowed"
"""The refusal code of rule 5: an asked person is under 18 and the purpose does not allow minors. Here, not in
``connectors.holder``, because the gateway refuses with it too, for a holder it answers for from the index."""

RECORD_TYPE_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""A record type is a code (``incident``, ``trade-name``), in a holder's records and in its enrolment alike:
free text there could name a person and would travel (or sit in the gateway's index) unchecked."""

CATEGORY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""A data category's name as the register writes them (``police_incidents``)."""

_SUBJECTS = "Opaque subject references (pseudonyms), never identifiers."
MAX_SUBJECTS = 100
"""The most subjects one query or discovery names: a question about more (a holder's pseudonyms of every key
version after a rotation) goes to the holder in several queries (``gateway.exchange.parts``)."""


MAX_ANSWER_RECORDS = 10_000
"""The most records one answer may carry (a hundred per subject of a full query): within the 16 MiB size limit,
a holder could otherwise send a hundred thousand empty records, each checked, translated and hashed by the
exchange — seconds of one gateway process's time, with every other request of it waiting."""

MAX_ANSWER_VALUES = 100_000
"""The most values the records' ``fields`` of one answer may hold together: the members of objects and the items
of arrays, at any depth (ten per record of the most records an answer may carry). For the same reason as
``MAX_ANSWER_RECORDS``: within the size limit, one record's fields could hold over a million members, each
translated, hashed, sealed and serialised by the exchange, and held one gateway process for over five seconds."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _echo(what: str) -> Any:
    """The ``request_id`` field of an answer: the id of the call it answers, echoed.

    Why: without it an answer cannot be told from an answer to another request about the same subjects and
    categories — a holder's cached or replayed answer, a proxy that mixes up responses — and would be
    disclosed as this one's. Optional in protocol v1 (holders written before it keep working), required in
    v2; when present it must equal the call's, or the answer counts as no answer (``HolderAnswerMismatch``)."""
    return Field(default=None, min_length=1, max_length=128,
                 description=f"The `request_id` of the {what} this answers, as sent. Optional in protocol v1, "
                             "required in v2. An answer naming another request id is refused as an answer to "
                             "another request (`answer-mismatch`), never disclosed.")


class HolderRecord(_Model):
    """One record, tagged with exactly one data category of the register."""

    # Identifiers, not text: only ``fields`` carries content (and only it is category-checked), so anything
    # outside it that could hold a name or a number would reach the requester unchecked.
    record_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    record_type: str = Field(pattern=RECORD_TYPE_PATTERN, examples=["incident"])
    subject: str = Field(description="The subject reference the record is about.")
    category: str = Field(pattern=CATEGORY_PATTERN, examples=["police_incidents"])
    fields: dict[str, Any] = Field(description="The content; all of it belongs to `category`.")


class HolderQuery(_Model):
    """Asks a holder for its records in ``categories`` about ``subjects``, for one purpose."""

    request_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="Idempotency key: the holder answers a repeated request id with its first answer, so a "
                    "retried query never discloses twice. Without it the gateway never retries a query.")
    partnership: str
    purpose: str
    requester_organisation: str
    categories: list[str] = Field(min_length=1)
    subjects: list[str] = Field(min_length=1, max_length=MAX_SUBJECTS, description=_SUBJECTS)
    provided: list[HolderRecord] = Field(default_factory=list,
                                         description="Records the requester lawfully hands to this holder.")
    minors_allowed: bool = Field(
        default=False, description="Whether the purpose allows data about minors (rule 5). The requester's own "
        "`minor` flag decided the policy; a holder that knows a subject is under 18 refuses when this is "
        "false (`minor-not-allowed`), so an undeclared minor is not disclosed.")
    escalation_decision: str | None = Field(
        default=None, max_length=4096,
        description="A binding escalation decision for exactly this request id, signed by the gateway "
                    "(compact JWS, typ `wgs-decision+jwt`): the holder must answer in the decided categories "
                    "instead of refusing again.")
    related_subjects_as_pseudonyms: bool = Field(
        default=False, description="Name every related subject inside the records (a company's director, a "
        "person linked to a record) by your own pseudonym for it, or leave it out: never by your reference. "
        "Sent (true) when the subjects are your references though the requester may not learn them — a "
        "follow-up by match handle; the gateway gives the requester its own pseudonyms for them, and withholds "
        "(and logs as over-sharing) whatever still names one of your references. Absent otherwise.")

    @model_serializer(mode="wrap")
    def _flag_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``related_subjects_as_pseudonyms`` is on the wire only when set: a holder that refuses unknown fields,
        as this protocol asks, answers every other query as before, and one that does not know the flag refuses
        the follow-up (fails closed) rather than ignoring it."""
        dumped: dict[str, Any] = handler(self)
        if not self.related_subjects_as_pseudonyms:
            dumped.pop("related_subjects_as_pseudonyms", None)
        return dumped


class HolderAnswer(_Model):
    """Records in the asked categories, or a refusal with the holder's reason (the holder's autonomy)."""

    request_id: str | None = _echo("query")
    status: Literal["answered", "refused"]
    received: int = Field(default=0, ge=0, description="How many provided records the holder took in: at most as "
                          "many as it was handed (the gateway takes an answer that says more for no answer).")
    refusal_reason: str | None = Field(default=None, examples=["investigation-confidentiality"])
    records: list[HolderRecord] = Field(default_factory=list, max_length=MAX_ANSWER_RECORDS)

    @model_validator(mode="after")
    def _a_refusal_carries_no_records(self) -> HolderAnswer:
        if self.status == "refused" and self.records:
            raise ValueError("a refused answer must not carry records")
        return self

    @model_validator(mode="after")
    def _fields_bounded_and_finite(self) -> HolderAnswer:
        """At most ``MAX_ANSWER_VALUES`` values in the records' fields, nested at most ``MAX_FIELD_DEPTH`` levels
        deep (a record's fields object included), and no NaN or infinity among them.

        Finite: ``NaN`` and ``Infinity`` are no JSON (RFC 8259), yet parsers accept them, and a number beyond
        the largest double (``1e400``) is JSON that parsers read as infinity; either would reach the requester
        as ``null`` while the audit log's payload hash covered ``NaN`` or ``Infinity``: what was logged would
        not be what was disclosed. Checked on the values as parsed, so it holds however the holder wrote the
        number. Nested: as deeply as a record the requester provides may (``gateway.client.models``); the
        exchange's answer puts the fields two levels deeper than the holder's answer does, so fields as deep as
        the gateway's parser reads made the whole answer, every holder's records in it, too deep for the partner
        client's parser. The count stops at the limit: an answer past it costs no more to refuse than one at
        it."""
        room = MAX_ANSWER_VALUES
        pending: list[tuple[Any, int]] = [(record.fields, 1) for record in self.records]
        while pending:
            value, level = pending.pop()
            if isinstance(value, dict | list):
                if level > MAX_FIELD_DEPTH:
                    raise ValueError(f"a record's fields nest more than {MAX_FIELD_DEPTH} levels deep")
                items = value.values() if isinstance(value, dict) else value
                room -= len(items)
                if room < 0:
                    raise ValueError(f"the records' fields hold more than {MAX_ANSWER_VALUES} values")
                pending.extend((item, level + 1) for item in items)
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError("a record holds a number that is not finite")
        return self


class HolderDiscovery(_Model):
    """Hit/no-hit: does the holder hold anything (in ``categories``, if given) about these subjects?"""

    request_id: str = Field(min_length=1, max_length=128)
    partnership: str
    purpose: str
    subjects: list[str] = Field(min_length=1, max_length=MAX_SUBJECTS, description=_SUBJECTS)
    categories: list[str] = Field(default_factory=list, description="Only records of these categories count.")
    minors_allowed: bool = Field(
        default=False, description="Whether the purpose allows data about minors (rule 5), as in `HolderQuery`: "
        "a holder that knows an asked subject is under 18 refuses when this is false (`minor-not-allowed`) "
        "instead of answering hit or no-hit.")
    escalation_decision: str | None = Field(
        default=None, max_length=4096,
        description="As in `HolderQuery` (a hit/no-hit-only holder asked in an exchange): a binding escalation "
                    "decision for exactly this request id and (at least) these categories, which must then "
                    "be named; the holder answers hit or no-hit instead of refusing again (never for rule 5).")


class DiscoveryAnswer(_Model):
    """Per subject with a hit, the record types held; no content. A subject that is absent is a no-hit.

    Or a refusal of the whole discovery (the holder's autonomy, as in ``HolderAnswer``): then there are no
    hits, and the refusal stands in for hit and no-hit alike — see ``connectors.holder.Holder.discover``."""

    request_id: str | None = _echo("discovery")
    status: Literal["answered", "refused"] = Field(
        default="answered", description="`refused`: the holder answers neither hit nor no-hit for any subject "
        "asked (`refusal_reason` says why); absent in answers of holders that never refuse.")
    refusal_reason: str | None = Field(default=None, examples=["investigation-confidentiality"])
    hits: dict[str, list[str]] = Field(default_factory=dict,
                                       description="subject -> record types held (hit); absent = no hit")

    @model_validator(mode="after")
    def _a_refusal_carries_no_hits(self) -> DiscoveryAnswer:
        if self.status == "refused" and self.hits:
            raise ValueError("a refused discovery must not carry hits")
        return self


class HolderConnector(Protocol):
    """The gateway's client side of one holder system.

    ``query`` discloses, so an implementation may retry it only when the query carries a ``request_id``
    (the holder deduplicates); ``discover`` and ``health`` are idempotent and may always be retried.
    All three raise ``ConnectorError`` subclasses only.
    """

    system: str

    async def query(self, query: HolderQuery) -> HolderAnswer: ...

    async def discover(self, discovery: HolderDiscovery) -> DiscoveryAnswer: ...

    async def health(self) -> None: ...
