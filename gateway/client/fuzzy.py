"""API models of fuzzy discovery: enrolling match filters (CLKs) and asking hit/no-hit with them.

For records without a shared number (names, dates of birth, addresses with typos) a partner encodes its records
with :mod:`gateway.client.matching` (the partnership's CLK secret never reaches the gateway) and

* enrols the filters of the records it holds, per partnership and record type, each with a *local reference*
  of its own (``POST /v1/enrolments/filters``): the opaque handle it understands when a requester follows a
  hit up with a formal, targeted request. It never leaves the gateway;
* asks, as a requester, which participants hold a record matching the filters of the subjects it looks for
  (``POST /v1/discovery/fuzzy``): purpose-bound like ``POST /v1/discovery``, answered hit/no-hit per holder
  and per subject — never a similarity score, never the holder's reference (DESIGN: "never return similarity
  scores across organisations"; DOMAIN: hit/no-hit before data);
* follows a hit up with a formal, targeted ``POST /v1/exchanges`` about that record: each hit carries a
  *match handle* (``match:…``, opaque, short-lived, usable only by the requesting system for the same
  partnership and purpose), which the exchange takes as a subject's ``ref`` and which asks that holder alone
  about its own record (``gateway.client.fuzzy_requests.follow_up`` builds the request).

The models live in the partner-side SDK because they are the contract (as :mod:`gateway.client.models`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

from gateway.client.models import (
    _REFERENCE,
    CATEGORY_PATTERN,
    SLUG_PATTERN,
    OpenEnum,
    Reason,
    Receipt,
    Signal,
    _newer_value,
    each_category_once,
)

RecordType = Literal["person", "company"]
"""Record types with a shipped linkage schema (``gateway/matching/schemas``): every participant encodes with it."""

MAX_FILTER_BATCH = 1000
"""Records (and removals) per enrolment request: a batch is written whole or not at all, in one transaction."""
MAX_FUZZY_SUBJECTS = 50
"""Subjects per fuzzy discovery: a bound on probing (more than the purpose's bulk threshold also escalates)."""
LOCAL_REFERENCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{3,127}$"
"""A holder's local reference: an opaque handle (``dossier/2026/00417``), never an identifier or a name."""
REPLACEMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,63}$"
"""The id a participant gives a replacement sent in several batches (``enrol_filters`` makes a random one)."""
_BLOCK_KEY = r"^([0-9a-f]{16})?$"
CLK_KEY_ID_PATTERN = r"^[0-9a-f]{32}$"
_CLK_KEY_ID_EXAMPLE = "5d2f8a0c41b9e7736a1c0e9f24d8b5a3"


def _clk_key_id(what: str) -> Any:
    return Field(default=None, pattern=CLK_KEY_ID_PATTERN, examples=[_CLK_KEY_ID_EXAMPLE], description=(
        f"The key id of the CLK secret {what} were encoded with (`gateway.client.matching.clk_key_id`, "
        "`CLKEncoder.key_id`; not secret): the gateway tells filters of another secret — a rotated or mistyped "
        "one — from a no-hit. Optional for one version (left out: unknown, compared as before); the client "
        "library always sends it."))
_CLK = r"^[A-Za-z0-9_-]{8,1400}$"  # unpadded base64url; its exact length is the schema's (checked by the gateway)


class _Strict(BaseModel):
    """A request model: unknown fields refused, and a refusal's message never quotes the value it refused —
    partner systems build these from their own data and log the errors (a BSN where a pseudonym belongs is
    refused precisely so that it reaches no log; pydantic's message would repeat it, ``input_value=...``)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class _Encoded(_Strict):
    clk: str = Field(pattern=_CLK, description="The record's CLK Bloom filter, unpadded base64url, exactly the "
                     "schema's `filter_bits` long (`gateway.client.matching.dataset_to_wire`).")
    blocks: list[Annotated[str, Field(pattern=_BLOCK_KEY)]] = Field(
        default_factory=list, max_length=64, description="Its blocking keys, one per schema signature ('' where a "
        "part is missing), or none: then it is compared without blocking.")


class FilterRecord(_Encoded):
    """One record a holder enrols: its filter, its own reference and what it says about the record."""

    ref: str = Field(pattern=LOCAL_REFERENCE_PATTERN, examples=["dossier/2026/00417"], description=(
        "Your reference of the record, opaque to everyone else (never a BSN, an IBAN, an e-mail address or a "
        "name); the gateway never shows it to another participant."))
    categories: list[Annotated[str, Field(pattern=CATEGORY_PATTERN)]] = Field(
        min_length=1, max_length=50, examples=[["police_incidents"]],
        description="The data categories of the record, as the register names them (a hit is purpose-bound).")
    confidential: bool = Field(default=False, description=(
        "You keep this record's subject confidential: a fuzzy discovery that matches it is your refusal "
        "(`refused-by-holder`, with `confidential_reason`), as with the pseudonym index."))
    minor: bool = Field(default=False, description=(
        "The subject is under 18 by your own data: a match for a purpose that does not allow minors is your "
        "refusal (`minor-not-allowed`)."))

    @field_validator("ref")
    @classmethod
    def _not_a_number(cls, value: str) -> str:
        if value.replace(".", "").replace("-", "").isdigit():
            raise ValueError("looks like a plain identifier; use an opaque reference of your own")
        return value


class FilterEnrolment(_Strict):
    """`POST /v1/enrolments/filters`: enrol (or withdraw) the match filters of records you hold."""

    partnership: str = Field(pattern=SLUG_PATTERN)
    record_type: RecordType = Field(description="Whose schema the filters were encoded with.")
    schema_version: int = Field(ge=1, description="The schema's `version`: filters of another never compare.")
    clk_key_id: str | None = _clk_key_id("the records' filters")
    records: list[FilterRecord] = Field(default_factory=list, max_length=MAX_FILTER_BATCH, description=(
        "Records to add, or to update when you enrolled the reference before."))
    remove: list[Annotated[str, Field(pattern=LOCAL_REFERENCE_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_FILTER_BATCH, description="References to withdraw.")
    replace: bool = Field(default=False, description=(
        "Withdraw everything you enrolled of this record type in this partnership first (in the same "
        "transaction): a fresh start. For a set larger than one batch, give every batch `replace` and the same "
        "`replacement`, and the last one `total`."))
    replacement: str | None = Field(default=None, pattern=REPLACEMENT_ID_PATTERN, examples=[
        "2026-12-05-nightly"], description=(
        "With `replace`: the id of a replacement sent in several batches. Its records are kept aside, and "
        "discovery answers from what you enrolled before, until the batch with `total` replaces that set with "
        "all of them at once. A replacement whose next batch does not come within the gateway's time "
        "(`WGS_MATCH_FILTER_REPLACEMENT_TTL_SECONDS`, one hour by default, from each batch) is abandoned and its "
        "records removed. Sending a batch again is harmless; `remove` is not taken (what is not sent goes)."))
    total: int | None = Field(default=None, ge=0, description=(
        "With `replacement`: this is its last batch, and the replacement holds `total` records in all (this "
        "batch's included). When it holds another number (a batch missing, or the replacement abandoned), 409 "
        "and nothing changes: start again under a new id."))
    confidential_reason: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", examples=[
        "investigation-confidentiality"], description="The code you refuse with about records marked `confidential` "
        "(a code, never free text); `confidential` when left out.")

    @field_validator("records")
    @classmethod
    def _each_reference_once(cls, records: list[FilterRecord]) -> list[FilterRecord]:
        refs = [r.ref for r in records]
        if len(set(refs)) != len(refs):
            raise ValueError("each reference may be sent only once per batch")
        return records


class FilterEnrolmentAnswer(BaseModel):
    record_type: str
    stored: int = Field(description="Records added or updated by this batch.")
    removed: int = Field(description="Records withdrawn by this batch (by `remove` or `replace`).")
    enrolled: int = Field(description="Your records of this type in this partnership now: what discovery answers "
                          "from (before a replacement's last batch, the set it will replace).")
    staged: int | None = Field(default=None, description=(
        "A batch of a `replacement` before its last: the records it holds so far (kept aside, not yet "
        "answering); null otherwise."))


class FuzzySubject(_Encoded):
    """A subject looked for, as the requester's encoding of what it knows of it (never the record itself)."""

    minor: bool = Field(default=False, description="The requester knows the subject is under 18 (rule 5).")


class FuzzyDiscoveryRequest(_Strict):
    """`POST /v1/discovery/fuzzy`: which holders hold a record matching these subjects, for this purpose?"""

    partnership: str = Field(pattern=SLUG_PATTERN, examples=["riec-amsterdam-amstelland"])
    purpose: str = Field(pattern=SLUG_PATTERN, examples=["bibob-integrity-check"])
    legal_basis: str = Field(min_length=1, max_length=200, description="Must equal the purpose's legal basis.")
    case_reference: str = Field(pattern=_REFERENCE, description="The requester's case file reference.")
    signal: Signal = Field(description="What justifies the request (rule 4: no request without a signal).")
    categories: list[Annotated[str, Field(pattern=CATEGORY_PATTERN)]] = Field(min_length=1, max_length=30)
    record_type: RecordType
    schema_version: int = Field(ge=1)
    clk_key_id: str | None = _clk_key_id("the subjects' filters")
    subjects: list[FuzzySubject] = Field(min_length=1, max_length=MAX_FUZZY_SUBJECTS, description=(
        "The subjects looked for; more than the purpose's bulk threshold is escalated (rule 6)."))

    _each_category_once = field_validator("categories")(each_category_once)

    @field_validator("subjects")
    @classmethod
    def _each_subject_once(cls, subjects: list[FuzzySubject]) -> list[FuzzySubject]:
        # The same filter twice is one subject counted twice (the gateway refuses versions of one person as well).
        clks = [s.clk for s in subjects]
        if len(set(clks)) != len(clks):
            raise ValueError("each subject may be sent only once")
        return subjects


class SubjectMatch(OpenEnum):
    """One holder's answer about one subject of a fuzzy discovery. Later versions may add values: read by
    ``gateway.client``, one this version does not know is kept as ``SubjectMatch.unknown(value)`` (``known``
    false; treat it as neither hit nor no-hit) instead of making the whole answer an ``InvalidResponse``."""

    HIT = "hit"
    NO_HIT = "no-hit"


def _subject_of_a_newer_gateway(value: Any, handler: ValidatorFunctionWrapHandler,
                                info: ValidationInfo) -> SubjectMatch:
    # As TargetOutcome's outcome: one subject's value added after this version must not make the holders' other
    # answers (and the hits' match handles) unreadable.
    match = _newer_value(value, handler, info)
    return SubjectMatch.unknown(value) if match is None else SubjectMatch(match)


class FuzzyTarget(BaseModel):
    """One holder's answer: `hit`/`no-hit` overall and per subject, or why it gives none (as in discovery)."""

    holder: str
    outcome: Literal["hit", "no-hit", "denied", "escalated", "refused-by-holder", "not-comparable"] = Field(
        description=(
            "`hit` when a record of this holder matches at least one subject, in a category it may supply; "
            "`denied`/`escalated`/`refused-by-holder` as in `POST /v1/discovery` (then `subjects` is empty); "
            "`not-comparable` when this holder's filters were encoded with another CLK secret than the request's "
            "(`clk_key_id`; reason `clk-key-mismatch`): nothing was compared, which is no no-hit — one of you "
            "has a rotated or mistyped secret."))
    subjects: list[Annotated[SubjectMatch, WrapValidator(_subject_of_a_newer_gateway)]] = Field(
        default_factory=list, description=(
            "Per subject, in the order sent: whether this holder holds a matching record (each subject answered "
            "as if asked alone). Never a score, never the holder's reference. Later versions may add values: "
            "treat one you do not know as neither `hit` nor `no-hit`."))
    match_handles: list[str | None] = Field(default_factory=list, description=(
        "Per subject, in the order sent: for a hit, its match handle (`match:` and 43 characters) — cite it as a "
        "subject's `ref` in `POST /v1/exchanges` to ask this holder, and only it, for the data of the matched "
        "record; null for a no-hit. Opaque and short-lived (24 h by default): it works only for the system that "
        "asked, for the same partnership and purpose, and while the holder keeps the record enrolled as it "
        "matched. Empty when `subjects` is."), examples=[[
            "match:q5Tb2Jm0oXw8c3Vn1yFZk9Lr7aSdPe4GuHi6Cj0KvQs", None]])
    reasons: list[Reason] = Field(default_factory=list, description=(
        "As in `POST /v1/discovery`: why, for `denied`, `escalated`, `refused-by-holder` and `not-comparable`; "
        "for `hit` and "
        "`no-hit`, the requested categories of this holder's that were not compared, one reason each."))

    def handles(self) -> list[str]:
        """The match handles of this holder's hits, in the order of the subjects sent."""
        return [h for h in self.match_handles if h is not None]

    @field_validator("outcome", mode="wrap")
    @classmethod
    def _outcome_of_a_newer_gateway(cls, value: Any, handler: ValidatorFunctionWrapHandler,
                                    info: ValidationInfo) -> str:
        # As DiscoveryTarget: read by the client, a value a newer gateway added is kept (neither hit nor no-hit).
        outcome = _newer_value(value, handler, info)
        return str(value) if outcome is None else str(outcome)


class FuzzyDiscoveryResult(BaseModel):
    discovery_id: str
    partnership: str
    purpose: str
    record_type: str
    policy_version: str
    register_version: str
    targets: list[FuzzyTarget]
    receipt: Receipt
