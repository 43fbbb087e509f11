"""The exchange pipeline: policy per target, write-ahead audit, holder calls, minimisation, receipt.

Order of work for ``POST /v1/exchanges`` (DESIGN.md flow 1):
1. idempotency: a retried request (same system + Idempotency-Key + same body) returns the first answer
   (looked up when the write-ahead's claim on the key is refused because an answer is stored under it, step 4,
   or when the request cannot be decided, steps 2-3); while the first attempt is still being answered, in any
   gateway process, it gets 409 — the attempt's claim on the key commits with its write-ahead entries (step 4)
   and goes with its outcome (step 8);
2. resolve the targets from the register ("all" = every participant whose role supplies a requested
   category for the purpose);
3. one policy decision per target (Rego); an engine failure denies everything (fail closed) → 503;
4. write-ahead audit: the request and every decision are committed before any holder is called;
5. call each allowed holder with only the permitted categories (hit/no-hit holders: discovery only);
6. drop anything the holder sent beyond the permitted categories (defence in depth) and log it;
7. audit every disclosure (payload hash and categories, never content), refusal and failure;
8. store the outcome, answer with data, obligations and an audit receipt.
If the audit log cannot be written at step 4 or 7, nothing is disclosed and the caller gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, Protocol, TypeVar
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from audit import (
    AsyncAuditWriter,
    AuditError,
    AuditEvent,
    AuditLog,
    CompanionRefused,
    CompanionRow,
    EventType,
    Receipt,
)
from audit.errors import PersonalDataError
from audit.events import DataSubject, ProcessingActivity, Requester
from audit.events import Decision as AuditDecision
from audit.guard import find_personal_data
from audit.store import sqlite_writer_lock
from connectors.http_connector import ConnectorRegistry
from connectors.protocol import (
    MINOR_NOT_ALLOWED,
    ConnectorError,
    HolderAnswer,
    HolderAnswerMismatch,
    HolderDiscovery,
    HolderQuery,
    HolderRecord,
)
from gateway.auth.principal import Principal
from gateway.cancellation import cancelled_from_outside, retrieved
from gateway.client.models import (
    DiscoveryRequest,
    DiscoveryResult,
    DiscoveryTarget,
    ExchangeRequest,
    ExchangeResult,
    Obligations,
    Outcome,
    Reason,
    Record,
    TargetOutcome,
)
from gateway.client.models import (
    Receipt as ReceiptView,
)
from gateway.clock import Clock, as_utc
from gateway.db.engine import transaction
from gateway.enrolment.service import REFUSAL_CODE_PATTERN, IndexHolding, is_pseudonym, looks_like_pseudonym
from gateway.errors import (
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    OutcomeNotStored,
    ServiceUnavailable,
    Unprocessable,
    cause_of,
)
from gateway.exchange import repository
from gateway.exchange.early import EarlyWork
from gateway.exchange.lease import CLAIM_ABANDONED_AFTER as CLAIM_ABANDONED_AFTER  # its users import it here
from gateway.exchange.lease import DECISION_ROUNDS, longest_holder_call
from gateway.exchange.match_handles import Matched, MatchHandles, is_match_handle
from gateway.exchange.parts import asked_together, failure_of, in_parts, part_request_ids
from gateway.exchange.sealing import RecordSealer, SealUnreadable
from gateway.exchange.siblings import served_together
from gateway.ids import new_id
from gateway.logging import database_fault
from gateway.periodic import PeriodicJob
from gateway.policy.engine import PolicyEngine
from gateway.policy.errors import PolicyError
from gateway.policy.model import (
    Decision,
    EscalationDecisionInput,
    Party,
    PolicyContext,
    PolicyInput,
    PolicyRequest,
)
from gateway.register.model import Partnership, Register

log = structlog.get_logger("gateway.exchange")
_R = TypeVar("_R")
IDEMPOTENCY_WINDOW = timedelta(hours=24)
CHECKPOINT_REFRESH_SECONDS = 1.0
SEALS_DROPPED_EVERY_SECONDS = 600.0
"""How often a running gateway drops the sealed records of answers whose idempotency window has ended (it also
does at start-up): they are kept for the window only, and a few minutes past it they are still unusable."""
_STILL_ANSWERED = "a request with this Idempotency-Key is still being answered; retry it shortly"
_DIFFERENT_REQUEST = "this Idempotency-Key was used for a different request"
_KEY_TAKEN_AHEAD = ("another attempt with this Idempotency-Key is being answered or was answered meanwhile; "
                    "nothing of this one was logged; retry shortly to get its answer")
_KEY_TAKEN_AFTER = ("another attempt with this Idempotency-Key was answered or took the key over meanwhile; "
                    "nothing of this one was disclosed; retry to get that answer")
_ANSWERS_NOT_STORED = ("the first attempt with this Idempotency-Key logged what its holders answered and has not "
                       "stored its outcome (it is still being answered, or it failed); the request is not run again "
                       "under this key (its holders would be asked twice): retry later for that attempt's answer, "
                       "and if none comes, ask your privacy officer")
_LEASE_RUN_DOWN = ("this attempt took too long before its holders could be asked within its hold on the "
                   "Idempotency-Key; no holder was asked and nothing was disclosed; retry")
_DECISION_TAKEN = ("this re-run outlived its reservation of the escalation decision, and another re-run took the "
                   "decision over meanwhile; nothing of this one was disclosed")
# Exceptions that are answers, not defects: the gateway's own (4xx/503), the database unavailable (503), a NUL in
# the input (422). Everything else that escapes is a defect: failed closed and logged as `gateway-error`.
_NOT_DEFECTS = (GatewayError, OperationalError, DataError)


class CancelledInside(Exception):
    """A cancellation that reached a request which nobody cancelled: something inside its work raised it (a holder
    call's task cancelled by its own code, an ``asyncio.timeout`` misused, a library raising ``CancelledError``).

    Why a type of its own: such a cancellation is a defect, to be failed closed and audited like any other
    (``_audit_defect``) and answered with the generic 500. Raised on as a cancellation it passed every
    ``except Exception`` that audits defects, and the request ended with its write-ahead entries and no ending in
    the log. A request that *is* being cancelled (its client gone, the server stopping) is not one of these: its
    cancellation goes on as it is (:func:`gateway.cancellation.cancelled_from_outside`)."""


async def _written(ahead: asyncio.Future[Any] | None) -> bool:
    """Whether a commit a request handed over and stopped waiting for (its write-ahead, ``_ahead_handed``; a
    commit its end depends on, ``_commits_under_way``) was made, once it has settled; None: no commit under way
    (made before, or never handed), nothing to wait for. The writers make what they were handed all the same, and
    what ends the request (its ``request.failed``; giving its key's claim, its count or its decision back) must
    come after such a commit, not before."""
    if ahead is None:
        return True
    try:
        await ahead
    except (Exception, asyncio.CancelledError):
        return False
    return True


_GATEWAY_ERROR = "gateway-error"  # reason of a holder's outcome when a defect of the gateway's failed it closed
_REQUEST_CANCELLED = "request-cancelled"  # reason of the ``request.failed`` ending a request cancelled from outside
_ANSWER_MISMATCH = "answer-mismatch"  # reason of a holder's outcome whose answer echoed another request's id
_UNASKED_SUBJECTS = "holder-answered-unasked-subjects"  # ... whose records were all about subjects not asked
_ESCALATING = {Outcome.ESCALATED, Outcome.REFUSED_BY_HOLDER}  # outcomes that open an escalation case
_DISCLOSING = {Outcome.ALLOWED, Outcome.ALLOWED_NARROWED}  # outcomes in which the holder's answer is disclosed
_NOT_APPLIED = {Outcome.REFUSED_BY_HOLDER, Outcome.HOLDER_UNAVAILABLE}  # a re-run's holder gave nothing
_REFUSED_PREFIX = "the holder refused: "  # then the holder's refusal code (``_refusal_reason``)
_AUDIT_DECISION = {"allowed": AuditDecision.ALLOW, "allowed-narrowed": AuditDecision.NARROWED,
                   "denied": AuditDecision.DENY, "escalated": AuditDecision.ESCALATE}


@dataclass(frozen=True)
class Trace:
    trace_id: str
    span_id: str
    parent_span_id: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to ``POST /v1/exchanges`` and whether it is a replay: the answer stored under the request's
    Idempotency-Key, given again (the endpoint says so in ``Idempotent-Replayed``), not a new exchange."""

    result: ExchangeResult
    replayed: bool = False


@dataclass(frozen=True)
class RerunGrant:
    """An escalation decision that allowed a disputed request, cited by the requester to re-run it.

    ``policy_input`` goes to Rego (rule 8 honours it only for exactly the same request and holder, until
    it expires); ``sign_for_holder(system, request_id, categories)`` makes the signed statement that tells
    the holder its refusal was overruled. The decision is reserved for this re-run from the grant until
    ``EscalationDesk.rerun_ended``. A decision is used once: ``mark_used(connection, exchange_id)`` runs in
    the transaction that logs the holder's disclosure under it, which makes it used for good (or, raising
    :class:`DecisionLost`, refuses that transaction). The database is the only record of that: nothing
    else needs telling whether a re-run used its decision."""

    decision_id: str
    case_id: str
    holder: str
    claim: str  # the re-run's reservation of the decision (a decision is used once)
    policy_input: EscalationDecisionInput
    sign_for_holder: Callable[[str, str, list[str]], str]
    mark_used: Callable[[Connection, str], None]


class DecisionLost(CompanionRefused):
    """Raised by ``RerunGrant.mark_used`` inside the disclosure's transaction: the re-run no longer holds its
    decision (it outlived its reservation, and another re-run took the decision over), so nothing of that
    transaction is written and nothing is disclosed."""


class CaseStepNotTaken(CompanionRefused):
    """Raised by ``RerunStep.apply`` inside the transaction that logs the re-run's answers: the case step
    could not be taken with them (the re-run no longer holds its decision, the case changed, the step
    failed), so nothing of that transaction is written; the answers are then logged on their own and the step
    is tried on its own after them (``EscalationDesk.rerun_not_applied``), as it always was."""


@dataclass(frozen=True)
class RerunStep:
    """The case step for a re-run whose holder did not follow the decision, to commit with the holder's
    answer: ``events`` (the step's audit entries) are logged after the answer's, ``apply(connection)`` takes
    the step in that transaction (raising :class:`CaseStepNotTaken` to refuse it), and ``taken()`` tells
    those concerned once it has committed. Prepared by ``EscalationDesk.rerun_not_applied_step``."""

    events: list[AuditEvent]
    apply: Callable[[Connection], None]
    taken: Callable[[], None]


@dataclass(frozen=True)
class CaseOpening:
    """A case the exchange opens for an escalated or refused target, to commit with the outcome row that cites
    it (``case_id``): ``events`` (its ``opened`` entry) are logged in that transaction, ``apply(connection)``
    writes the case there, and ``taken()`` tells those concerned once it has committed. Prepared by
    ``EscalationDesk.case_opening``."""

    case_id: str
    events: list[AuditEvent]
    apply: Callable[[Connection], None]
    taken: Callable[[], None]


class SubjectTranslator(Protocol):
    """What the exchange needs of the pseudonym service (implemented in ``gateway.enrolment``)."""

    def to_holder_all(self, subject: str, partnership: str, requester: str, holder: str) -> list[str]: ...

    def to_partnership(self, subject: str, partnership: str, participant: str) -> str: ...

    def holders_of(self, partnership: str, shared: list[str]) -> dict[str, IndexHolding]: ...

    def related_for_requester(self, values: set[str], partnership: str, holder: str,
                              requester: str) -> dict[str, str | None]: ...


class EscalationDesk(Protocol):
    """What the exchange needs of the escalation workflow (implemented in ``gateway.escalations``)."""

    async def case_opening(self, principal: Principal, body: ExchangeRequest, exchange_id: str,
                           request_fingerprint: str, target: TargetOutcome, trace: Trace) -> CaseOpening: ...

    async def grant_for_rerun(self, principal: Principal, decision_id: str) -> RerunGrant: ...

    async def rerun_completed(self, grant: RerunGrant, exchange_id: str, trace: Trace) -> None: ...

    async def rerun_not_applied(self, grant: RerunGrant, exchange_id: str, outcome: Outcome, reason: str,
                                trace: Trace) -> None: ...

    async def rerun_not_applied_step(self, grant: RerunGrant, exchange_id: str, outcome: Outcome, reason: str,
                                     trace: Trace) -> RerunStep | None: ...

    async def rerun_ended(self, grant: RerunGrant) -> None: ...


@dataclass
class ExchangeDeps:
    sessions: sessionmaker[Session]
    clock: Clock
    register: Register
    policy: PolicyEngine
    connectors: ConnectorRegistry
    writer: AsyncAuditWriter
    audit_log: AuditLog
    sealer: RecordSealer
    escalations: EscalationDesk | None = None  # set when the escalation workflow is installed
    pseudonyms: SubjectTranslator | None = None  # set when the pseudonym service is installed
    require_pseudonyms: bool = False  # refuse opaque references once every partner has enrolled
    match_handles: MatchHandles | None = None  # set when fuzzy discovery is installed: follow-ups cite its handles


_LOGGED = ""
"""The key of an attempt's early work (:mod:`gateway.exchange.early`) for its subjects as logged; each holder's
pseudonyms are under the holder's name."""


@dataclass
class _Target:
    organisation: str
    system: str | None


class _Decided(NamedTuple):
    targets: list[_Target]
    grant: RerunGrant | None
    base: dict[str, Any]
    logged: dict[str, str]
    decisions: list[Decision] | PolicyError
    today: int  # rule 6's count the decisions were made with
    day: repository.Day  # the day it counts in


@dataclass(frozen=True, slots=True)
class _Attempt:
    """An exchange past its write-ahead commit: what asking the holders and answering still need."""

    principal: Principal
    body: ExchangeRequest
    trace: Trace
    exchange_id: str
    request_fingerprint: str
    idempotency_key: str | None
    claim: repository.Claim | None
    grant: RerunGrant | None
    base: dict[str, Any]
    logged: dict[str, str]
    versions: tuple[str, str]  # register version, policy version

    @property
    def key_fingerprint(self) -> str:
        """What its Idempotency-Key binds to (stored with the outcome for replays)."""
        return keyed_fingerprint(self.request_fingerprint, self.body)


def _with_receipt_indices(row: dict[str, Any], indices: list[int]) -> dict[str, Any]:
    """``row`` whose stored outcome cites the audit indices of all its entries (known only at commit)."""
    outcome = row["outcome"]
    return row | {"outcome": outcome | {"receipt": outcome["receipt"] | {"audit_indices": indices}}}


def _nothing_follows(after: list[AuditEvent], grant: RerunGrant | None, served: list[TargetOutcome]) -> bool:
    """Whether an exchange is done once its disclosures are logged, so its outcome row can commit in the same
    transaction: there are entries to commit with, and no escalation case will be opened or closed (that
    sets fields of the outcome afterwards)."""
    return bool(after) and grant is None and not any(o.outcome in _ESCALATING for o in served)


def _disclosed_under(grant: RerunGrant | None, outcomes: list[TargetOutcome]) -> bool:
    """Whether the holder a re-run's decision is about disclosed under that decision: then the disclosure's
    commit marks the decision used, and the case is closed after it."""
    return grant is not None and any(o.holder == grant.holder and o.escalation_decision_applied
                                     and o.outcome in _DISCLOSING for o in outcomes)


def _decision_ignored(grant: RerunGrant, outcomes: list[TargetOutcome]) -> TargetOutcome | None:
    """The outcome of the holder a re-run's decision is about, if the policy applied the decision and the
    holder still gave nothing: it refused, or could not be asked or answer. That holder was told of the
    binding decision (or would have been), so its case records it (``EscalationDesk.rerun_not_applied``)
    instead of the decision being given back in silence."""
    return next((o for o in outcomes if o.holder == grant.holder and o.escalation_decision_applied
                 and o.outcome in _NOT_APPLIED), None)


def _holder_reason(outcome: TargetOutcome) -> str:
    """Why the holder gave nothing, as a code the log may hold: ``holder:<code>`` for a refusal (as its
    ``holder.refused`` entry says; the code is checked by ``_refusal_code``), else the unavailability's code
    (``holder-unavailable``, ``answer-mismatch``, ``holder-answered-unasked-subjects``, ``holder-not-connected``,
    ``gateway-error``). Never the reason's message."""
    last = outcome.reasons[-1] if outcome.reasons else None
    if last is None:
        return "unspecified"
    if outcome.outcome is Outcome.REFUSED_BY_HOLDER and last.code == "refused-by-holder":
        return "holder:" + last.message.removeprefix(_REFUSED_PREFIX)
    return last.code


def _all_of(*preconditions: Callable[[Connection], None] | None) -> Callable[[Connection], None] | None:
    """One precondition that runs each given one in turn (None if none is given)."""
    given = [p for p in preconditions if p is not None]
    if not given:
        return None

    def every(connection: Connection) -> None:
        for precondition in given:
            precondition(connection)
    return every


def _with_step(guard: Callable[[Connection], None] | None, step: RerunStep) -> Callable[[Connection], None]:
    """``guard``, then the case step ``step`` takes in the same transaction."""
    combined = _all_of(guard, step.apply)
    assert combined is not None
    return combined


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return cause_of(exc, kind) is not None


def _with(companion: CompanionRow, precondition: Callable[[Connection], None]) -> CompanionRow:
    """``companion`` that also needs ``precondition`` (run after its own) to commit."""
    combined = _all_of(companion.precondition, precondition)
    assert combined is not None
    return CompanionRow(companion.table, companion.build, combined)


def _daily_limit(register: Register, body: ExchangeRequest | DiscoveryRequest) -> int | None:
    """Rule 6's daily limit of the request's purpose; None when the register has no such purpose (the policy
    denies such a request, whatever the count)."""
    partnership = register.partnerships.get(body.partnership)
    purpose = partnership.purposes.get(body.purpose) if partnership is not None else None
    return purpose.daily_limit_per_system if purpose is not None else None


def keyed_fingerprint(request_fingerprint: str, body: ExchangeRequest) -> str:
    """What an ``Idempotency-Key`` binds to: the request and the escalation decision it cites. A re-run citing
    a decision is another request than the run it re-runs (or than one citing another decision), though an
    escalation decision binds to the request without it (``fingerprint``)."""
    if body.escalation_decision is None:
        return request_fingerprint
    return decision_fingerprint(request_fingerprint, body.escalation_decision)


def decision_fingerprint(request_fingerprint: str, decision_id: str) -> str:
    """``keyed_fingerprint`` of a re-run of the request ``request_fingerprint`` citing ``decision_id``: what its
    outcome row stores (``request_sha256``), from which the escalation desk tells a re-run's row from another."""
    return hashlib.sha256(f"{request_fingerprint}:{decision_id}".encode()).hexdigest()


def fingerprint(principal: Principal, body: ExchangeRequest | DiscoveryRequest) -> str:
    """A stable hash of who asked what, without the escalation decision it may cite: escalation decisions bind
    to exactly this (an ``Idempotency-Key`` to ``keyed_fingerprint``)."""
    canonical = _CANONICAL_JSON.encode({"system": principal.subject,
                                        "request": body.model_dump(mode="json", exclude={"escalation_decision"})})
    return hashlib.sha256(canonical.encode()).hexdigest()


_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""``fingerprint``'s JSON, as ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` writes it (the same
text: stored fingerprints stay valid), built once instead of on every request."""


def _targets(register: Register, body: ExchangeRequest | DiscoveryRequest, holders: list[str] | str,
             requester_org: str) -> list[_Target]:
    partnership: Partnership | None = register.partnerships.get(body.partnership)
    if partnership is None:
        raise Unprocessable(f"unknown partnership `{body.partnership}` (register {register.version})")
    if isinstance(holders, list):
        unknown = [h for h in holders if h not in register.organisations]
        if unknown:
            raise Unprocessable(f"unknown holder organisation(s): {', '.join(sorted(unknown))}")
        chosen = list(dict.fromkeys(holders))
    else:
        purpose = partnership.purposes.get(body.purpose)
        wanted = set(body.categories)
        chosen = [p.organisation for p in partnership.participants
                  if p.systems and (purpose is None or wanted & set(purpose.supplies.get(p.role, []))
                                    or p.role in purpose.hit_only_holders)]
        chosen = list(dict.fromkeys(chosen)) or [p.organisation for p in partnership.participants if p.systems]
    targets = []
    for organisation in chosen:
        participant = partnership.participant_of_organisation(organisation)
        systems = participant.systems if participant else register.organisations[organisation].systems
        targets.append(_Target(organisation, systems[0] if systems else None))
    if not targets:  # nothing to decide, ask or log: the request names no one (a partnership without systems)
        raise Unprocessable(f"no holder to ask in `{body.partnership}`")
    return targets


_REFUSAL_CODE = re.compile(REFUSAL_CODE_PATTERN)


def _known_categories(register: Register, categories: Iterable[str], what: str) -> None:
    """422 for a category the register does not know. The policy judges categories per holder and leaves one
    outside a holder's domain alone, so an unknown one (a typo, a category of a newer register) would vanish
    from the answer without a reason; the requester is told instead, naming the register it was checked with."""
    unknown = sorted(set(categories) - register.categories.keys())
    if unknown:
        raise Unprocessable(f"{what} the register does not know: {', '.join(unknown)} (register {register.version})")


def _refusal_code(reason: str | None, holder: str) -> str:
    """The holder's refusal reason when it is a code (``investigation-confidentiality``); free text could
    name a person, and would reach the requester and the permanent log, so it becomes ``unspecified``.
    ``fullmatch``: with ``match`` the pattern's ``$`` also matches before a final line break, and a code with
    one passed here and failed the audit entry's check (no control characters): a 500 for the whole request.
    Nor a "code" the audit log's guard takes for personal data (a BSN is of a code's shape: ``111222333``,
    ``111-222-333``): its refusal entry failed that guard after the holders were asked, and the requester got
    a 422 blaming its own request, the other holders' answers were lost, and the log kept the request's
    write-ahead with no ending after it."""
    if reason is None:
        return "unspecified"
    if _REFUSAL_CODE.fullmatch(reason) and not find_personal_data(reason):
        return reason
    log.warning("holder_refusal_reason_not_a_code", holder=holder, length=len(reason))
    return "unspecified"


def _index_refusal(holding: IndexHolding | None, minors_allowed: bool) -> str | None:
    """Why a holder refuses a discovery answered from the index, on what it said at enrolment, or None —
    the grounds and their order of ``connectors.holder.Holder._refusal``: a subject it keeps confidential,
    then a minor when the purpose does not allow minors. Neither depends on the categories asked, so the
    refusal says neither hit nor no-hit there. No escalation decision lifts it here: discovery carries none."""
    if holding is None:
        return None
    if holding.confidential_reason is not None:
        return holding.confidential_reason
    if holding.minor and not minors_allowed:
        return MINOR_NOT_ALLOWED
    return None


def _subject_hits(base: dict[str, Any], shared: list[str], hits: list[tuple[str, Decision]]) -> list[AuditEvent]:
    """The hits of a discovery answered from the index, as disclosures about each subject asked (``shared``:
    partnership-domain pseudonyms): the contact point's look-ups find a person by the entries' subject, and a
    hit is itself a disclosure — the requester learns that those holders hold data on the person.

    One entry per subject (at most the request's 100), each naming every holder that answered hit and the
    categories it answered for. The entries are the same for every subject of the request but for the subject
    they name: the index answers per holder for the subjects together, so the entry says what the answer said
    and no more — the requester's own privacy officers read these entries, and the request's order of subjects
    is in its ``discovery.queried`` entry. No holder is a party to them (``holder`` stays empty): a holder's
    officers would otherwise learn which of its records were asked about, which the index never tells it; its
    own per-holder ``disclosure`` entry (no subject) stays. No-hit answers are not listed: they disclose
    nothing a holder holds (docs/audit.md). None at all when no holder answered hit."""
    if not hits:
        return []
    answered = [{"holder": holder, "categories": sorted(decision.permitted_categories)} for holder, decision in hits]
    categories = tuple(sorted({c for _, decision in hits for c in decision.permitted_categories}))
    asked = list(dict.fromkeys(shared))  # a subject asked twice is one subject
    return [AuditEvent(event_type=EventType.DISCLOSURE, **base, data_subject=DataSubject(pseudonym=subject),
                       categories=categories, extra={"hit_only": True, "outcome": "hit", "hits": answered,
                                                     "subjects_asked": len(asked)})
            for subject in asked]


def _hit_only_disclosures(holder: str, decision: Decision, hit: bool, shared: list[str],
                          unasked: int) -> list[dict[str, Any]]:
    """What a hit/no-hit holder's answer to an exchange disclosed: a hit, about each subject asked (``shared``:
    how the log names them, see ``_logged``; empty for opaque references, which are never logged as a subject),
    one entry per subject as for records, so the contact point's look-ups find it. The holder answers for the
    subjects together, so the entries are the same but for the subject (the requester's privacy officers
    learn no more than the answer said; the holder was asked by its own pseudonyms). A no-hit is one entry
    naming no subject: it discloses nothing the holder holds (docs/audit.md). ``unasked``: the holder's hits
    for subjects nobody asked about (ignored), counted in its entries as over-sharing (see ``_hit``)."""
    event: dict[str, Any] = {"event_type": EventType.DISCLOSURE, "holder": holder,
                             "categories": tuple(decision.permitted_categories),
                             "extra": {"hit_only": True, "hit": hit} | _unasked_hits(unasked)}
    asked = list(dict.fromkeys(shared))  # a subject asked twice is one subject
    if not hit or not asked:
        return [event]
    return [event | {"data_subject": DataSubject(pseudonym=subject),
                     "extra": event["extra"] | {"subjects_asked": len(asked)}} for subject in asked]


def _hit(answered: Iterable[tuple[dict[str, list[str]], Collection[str]]], holder: str,
         request_id: str) -> tuple[bool, int]:
    """Hit only for a subject that was asked about: ``answered`` pairs each answer's hits with the holder's
    references it was asked (one pair per query: a question in parts has one per part). A holder that reports
    others over-shares — that it has a file on a person nobody asked about —, which is otherwise ignored; how
    many such hits (over all parts) is returned with the hit, for the holder's audit entry, and logged."""
    pairs = [(hits, set(asked)) for hits, asked in answered]
    others = sum(len(hits.keys() - asked) for hits, asked in pairs)
    if others:
        log.warning("holder_overshared", holder=holder, unasked_hits=others, exchange_id=request_id)
    return any(subject in asked for hits, asked in pairs for subject in hits), others


def _unasked_hits(count: int) -> dict[str, int]:
    """The ``extra`` of a hit/no-hit holder's audit entry that counts its hits about subjects nobody asked
    about: its over-sharing, as ``dropped_overshared`` counts over-shared records; the privacy officers
    reviewing a holder's conduct read the audit log, not the application log. Nothing when there were none."""
    return {"unasked_hits": count} if count else {}


# An encoded domain pseudonym (``<type>.v<version>.<43 characters of base64url>``) anywhere in a text, in any
# letter case: looser than ``is_pseudonym``, so whatever could be one is caught.
_PSEUDONYM_SHAPED = re.compile(r"[a-z]+\.v[0-9]+\.[a-z0-9_-]{43}", re.IGNORECASE)


_PSEUDONYM_VERSION = re.compile(r"\.v[0-9]+\.", re.IGNORECASE)
"""The part every pseudonym, and every text ``_PSEUDONYM_SHAPED`` finds, holds: ``.v<version>.``. Searched for
alone because it starts with a fixed character: with a run of letters before it (``looks_like_pseudonym``'s
prefix), a search tries every letter of every word as a start, 100 times slower on records' text."""


def _may_name_pseudonyms(values: list[Any]) -> bool:
    """Whether some text in ``values`` (records' fields: values and object keys, at any depth) may be or hold a
    pseudonym; False only when none holds even ``_PSEUDONYM_VERSION``. Then ``_pseudonyms_in`` finds nothing
    and ``_mapped`` withholds nothing, so neither walk is needed — most records name nobody, and the two walks
    in Python, a call per text, cost more than the rest of an exchange's checks of an answer.

    Told in C: the values as JSON text, searched once. JSON writes a text as it is but for quotes, backslashes
    and control characters (``ensure_ascii=False``: every other character stays as it is), none of which is in
    ``_PSEUDONYM_VERSION``, so what a text holds the JSON holds. Anything ``json`` cannot write (records built
    in process) counts as may."""
    try:
        text = json.dumps(values, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return True
    return _PSEUDONYM_VERSION.search(text) is not None


def _pseudonyms_in(value: Any) -> Iterator[str]:
    """Every pseudonym in a record's fields, however deeply nested in objects and lists, as a value or as an
    object's key (``{"directors": {"<pseudonym>": ...}}``): one left out would reach the requester in the
    holder's domain, linkable to the holder's records."""
    if isinstance(value, str):
        if is_pseudonym(value):
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _pseudonyms_in(key)
            yield from _pseudonyms_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _pseudonyms_in(item)


def _mapped(value: Any, mapped: dict[str, Any]) -> Any:
    """``value`` with every pseudonym replaced by what ``mapped`` says (the requester's, or None), at any depth;
    an object's entry whose key becomes None is left out.

    A text that merely *contains* something pseudonym-shaped (``"director <pseudonym>"``, a list in one
    string, a pseudonym in capitals) becomes None as a whole rather than having its pseudonyms translated:
    finding every pseudonym inside free text is guesswork, and a miss would leak the holder's pseudonym,
    while a dropped text only loses what the holder should have sent as a field of its own; free text
    around a subject may identify it besides."""
    return _mapped_counting(value, mapped)[0]


def _mapped_counting(value: Any, mapped: dict[str, Any]) -> tuple[Any, int]:
    """``_mapped(value, mapped)`` and how many texts (values and keys) it withheld: pseudonyms that are not
    translated, texts with a pseudonym inside. A follow-up logs them as the holder's over-sharing."""
    withheld = 0

    def walk(item: Any) -> Any:
        nonlocal withheld
        if isinstance(item, str):
            translated = mapped[item] if item in mapped else (None if _PSEUDONYM_SHAPED.search(item) else item)
            if translated is None:
                withheld += 1
            return translated
        if isinstance(item, dict):
            entries = ((walk(key), entry) for key, entry in item.items())
            return {key: walk(entry) for key, entry in entries if key is not None}
        if isinstance(item, list):
            return [walk(entry) for entry in item]
        return item
    return walk(value), withheld


def _ids_without_pseudonyms(records: list[HolderRecord], salt: str) -> tuple[list[HolderRecord], int]:
    """``records`` with every id that holds something pseudonym-shaped replaced, and how many were. A record id
    is the holder's to choose, and its pattern takes a pseudonym: one built from the holder's pseudonym of the
    subject or of a related one would reach the requester as it is, stable and linkable to the holder's records.
    Such an id becomes a hash of it under ``salt`` (the exchange and holder): the same for the same id within the
    answer, so records stay told apart and alike, and unlinkable to any other answer. The record itself stays."""
    replaced = 0
    kept = []
    for record in records:
        if _PSEUDONYM_SHAPED.search(record.record_id):
            replaced += 1
            digest = hashlib.sha256(f"{salt}:{record.record_id}".encode()).hexdigest()[:32]
            record = record.model_copy(update={"record_id": f"record-{digest}"})
        kept.append(record)
    return kept, replaced


def _once(records: list[HolderRecord]) -> list[HolderRecord]:
    """``records`` without repeats: a holder asked about one subject by its pseudonyms of two key versions (see
    ``ExchangeService._for_holder``), in one query or in two parts of the question, may answer the same record
    under each, which is one record of one subject once both are the requester's pseudonym again."""
    seen: set[str] = set()
    once = []
    for record in records:
        key = json.dumps(record.model_dump(mode="json"), sort_keys=True)
        if key not in seen:
            seen.add(key)
            once.append(record)
    return once


def _unavailable(outcome: TargetOutcome, decision: Decision, code: str, message: str,
                 error_type: str | None = None) -> dict[str, Any]:
    """Make ``outcome`` holder-unavailable (nothing of that holder disclosed, so no obligations either) and
    return its log event, with the type of the failure if there was one."""
    outcome.outcome, outcome.records, outcome.hit, outcome.obligations = Outcome.HOLDER_UNAVAILABLE, [], None, None
    outcome.reasons.append(Reason(code=code, message=message))
    return _unavailable_event(outcome.holder, decision, code, error_type)


def _holder_failed(outcome: TargetOutcome, decision: Decision, failure: ConnectorError) -> dict[str, Any]:
    """Make ``outcome`` holder-unavailable for its holder's ``failure`` (of any part of its question) and return
    its log event."""
    log.info("holder_unavailable", holder=outcome.holder, error_type=type(failure).__name__)
    return _unavailable(outcome, decision, _failure_code(failure), str(failure), error_type=type(failure).__name__)


def _failure_code(failure: ConnectorError) -> str:
    """The reason code of a holder's ``failure``, in an exchange or a discovery: ``answer-mismatch`` for an
    answer to another request (``HolderAnswerMismatch``), which is the holder's misbehaviour (or that of what
    stands in front of it) rather than its being down — the privacy officers reviewing a holder's conduct find
    it by this code in its ``holder.unavailable`` entry —, else ``holder-unavailable``."""
    return _ANSWER_MISMATCH if isinstance(failure, HolderAnswerMismatch) else "holder-unavailable"


def _about_others_only(answer: HolderAnswer, asked: Collection[str]) -> bool:
    """Whether ``answer`` has records and none of them is about a subject it was ``asked`` about: then it
    answers another question (another request's answer, without an echoed request id to tell — protocol v1),
    and dropping its records as over-shared would leave the target ``allowed`` with none, read as "nothing
    held" when the holder has not answered this question at all."""
    return bool(answer.records) and not any(record.subject in asked for record in answer.records)


def _unavailable_event(holder: str, decision: Decision, code: str, error_type: str | None) -> dict[str, Any]:
    """The ``holder.unavailable`` log event of a holder that gave no answer, in an exchange or a discovery:
    the failure's type only (its text may carry the holder's own words, or a subject's reference)."""
    event = {"event_type": EventType.HOLDER_UNAVAILABLE, "holder": holder, "status": "error",
             "categories": tuple(decision.permitted_categories), "reasons": (code,)}
    return event | {"extra": {"error_type": error_type}} if error_type else event


def _refused(outcome: TargetOutcome, decision: Decision, reason: str | None) -> dict[str, Any]:
    """Make ``outcome`` refused-by-holder (nothing of that holder disclosed: no records, no hit, no obligations)
    and return its log event."""
    code = _refusal_code(reason, outcome.holder)
    outcome.outcome, outcome.records, outcome.hit, outcome.obligations = Outcome.REFUSED_BY_HOLDER, [], None, None
    outcome.reasons.append(_refusal_reason(code))
    return _refusal_event(outcome.holder, decision, code)


def _refusal_reason(code: str) -> Reason:
    """What the requester is told of a holder's refusal with ``code``, in an exchange or a discovery."""
    return Reason(code="refused-by-holder", message=f"{_REFUSED_PREFIX}{code}")


def _refusal_event(holder: str, decision: Decision, code: str) -> dict[str, Any]:
    """The ``holder.refused`` log event of a holder's refusal with ``code``, in an exchange or a discovery."""
    return {"event_type": EventType.HOLDER_REFUSED, "holder": holder, "reasons": (f"holder:{code}",),
            "categories": tuple(decision.permitted_categories)}


def _provided_disclosure(body: ExchangeRequest, holder: str, *, received: int | None,
                         completed: bool = True) -> dict[str, Any]:
    """The log entry of records the requester provided, handed to ``holder``: ``received`` is how many the
    holder says it took in, None when it is unknown (the call failed after it may have arrived, or its answer
    was another request's); status ``error`` when the call did not complete (``completed``)."""
    provided = [r.model_dump() for r in body.provide]
    entry = {"event_type": EventType.DISCLOSURE, "holder": holder,
             "categories": tuple(sorted({r.category for r in body.provide})),
             "payload_sha256": hashlib.sha256(json.dumps(provided, sort_keys=True).encode()).hexdigest(),
             "extra": {"direction": "requester-to-holder", "records": len(provided), "received": received}}
    return entry if completed else entry | {"status": "error"}


def _provision(body: ExchangeRequest, holder: str, first: HolderAnswer | Exception | None,
               asked: Collection[str]) -> list[dict[str, Any]]:
    """The log entry of the records the requester provided (none if it provided none), handed to ``holder`` by
    a query whose part that carried them ended with ``first``: the holder's answer, the call's failure, or None
    when the call was cut off (cancelled). With an answer, as many as the holder says it took in — unknown when
    the answer is about others only, and may be another request's (``asked``: that part's subjects). Without
    one the call did not complete, and the holder may hold them all the same: logged with ``received`` unknown,
    unless the failure says they never reached it (a connection refused, a 4xx)."""
    if not body.provide:
        return []
    if isinstance(first, HolderAnswer):
        received = None if _about_others_only(first, set(asked)) else first.received
        return [_provided_disclosure(body, holder, received=received)]
    if isinstance(first, ConnectorError) and not first.may_have_arrived:
        return []
    return [_provided_disclosure(body, holder, received=None, completed=False)]


def _audit_base(principal: Principal, body: ExchangeRequest | DiscoveryRequest, trace: Trace,
                exchange_id: str, register: Register) -> dict[str, Any]:
    return {"trace_id": trace.trace_id, "span_id": trace.span_id, "parent_span_id": trace.parent_span_id,
            "processing_activity": ProcessingActivity(partnership=body.partnership, purpose=body.purpose),
            "requester": Requester(org=principal.organisation, system=principal.subject),
            "register_version": register.version, "exchange_id": exchange_id}


class ExchangeService:
    def __init__(self, deps: ExchangeDeps) -> None:
        self.deps = deps
        # attempt id -> the day rule 6 counted it in (in the database), until its outcome is stored or it ends
        self._counted_in: dict[str, repository.Day] = {}
        # (system, purpose) -> (day, rule 6's count) as this process last counted a request in (``_requests_today``)
        self._seen_counts: dict[tuple[str, str], tuple[str, int]] = {}
        self._latest_checkpoint: tuple[str, float] | None = None
        self._logged_ahead: set[str] = set()  # ids of attempts whose request entry is in the log (until they end)
        # ids of attempts whose ending (the commit of their answer, or their ``request.failed`` entry) is handed to
        # be written (``_ending``), until they end: a cancellation then adds no ending of its own
        self._ending_handed: set[str] = set()
        # ids of attempts whose write-ahead is handed to be written and not yet known to be (``_record``'s
        # ``ahead_of``) -> the future of its commit, until it is known or the attempt ends: a cancellation that
        # arrives meanwhile waits for it, since the writer commits it whether or not the request waits
        self._ahead_handed: dict[str, asyncio.Future[list[Receipt]]] = {}
        # ids of attempts past their write-ahead -> their latest commit that checks or gives up the key's claim, marks
        # a re-run's decision used, logs the holders' answers or stores their outcome (``_awaited_by_end``), until it
        # settles (``_settled``): cancelled, the attempt logs its ending and gives its claim, its rule-6 count
        # (``_uncount``), its decision and the provisions left back only after it (``_commits_settled``)
        self._commits_under_way: dict[str, asyncio.Future[Any]] = {}
        self._rerun_grants: dict[str, RerunGrant] = {}  # attempt id -> the decision it reserved (until it ends)
        self._matched: dict[str, Matched] = {}  # attempt id -> what its match handles resolved to (until it ends)
        # attempt id -> each asked target's log entry of the records the requester provided that reached (or may
        # have reached) its holder, until the holders' answers are logged with them (``_provisions_ended``)
        self._provisions: dict[str, list[list[dict[str, Any]]]] = {}
        self._early = EarlyWork()  # pseudonyms computed while the policy decides and the write-ahead commits
        self._outcomes = repository.outcome_writer(deps.sessions.kw["bind"])
        # Giving a request's rule-6 count back is a write outside the audit writer's transactions: on SQLite it
        # queues with them on the file's writer lock instead of sleeping in SQLite's busy handler (1, 2, 5, 10 ms).
        engine = deps.sessions.kw["bind"]
        self._count_writer: contextlib.AbstractContextManager[Any] = (
            sqlite_writer_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext())
        self._keys_in_flight: set[tuple[str, str]] = set()  # (system, Idempotency-Key) being answered here
        self._seal_timer = PeriodicJob(self.drop_expired_seals, SEALS_DROPPED_EVERY_SECONDS,
                                       name="sealed_records_drop")

    def remove_abandoned_claims(self) -> None:
        """At start-up, when claims of attempts that died with a crashed process are most likely: such a claim
        would otherwise stay until a retry with its key takes it over, and one that is never retried, forever."""
        removed = repository.remove_abandoned_claims(self.deps.sessions.kw["bind"],
                                                     self.deps.clock.now() - CLAIM_ABANDONED_AFTER)
        if removed:
            log.info("idempotency_claims_abandoned_removed", count=removed)

    def drop_expired_seals_now(self) -> None:
        """Drop the sealed records of answers past their idempotency window (blocking: at start-up, or on a
        worker thread). A replay no longer opens them, and kept, every record ever disclosed under an
        Idempotency-Key would stay in the database, decryptable with the seal key beside it. On SQLite the write
        queues on the file's writer lock with the audit writer's (as the rule-6 give-back does)."""
        with self._count_writer:
            dropped = repository.drop_expired_seals(self.deps.sessions.kw["bind"], self.deps.clock.now())
        if dropped:
            log.info("sealed_records_dropped", count=dropped)

    async def drop_expired_seals(self) -> None:
        """``drop_expired_seals_now`` on a worker thread (what the timer started by :meth:`start` runs)."""
        await asyncio.to_thread(self.drop_expired_seals_now)

    def start(self) -> None:
        """Start the timer that drops expired sealed records (the app's start-up, on its event loop)."""
        self._seal_timer.start()

    async def aclose(self) -> None:
        """Stop the timer, write the outcome rows still queued, then stop their writer."""
        await self._seal_timer.aclose()
        await self._outcomes.aclose()

    # -- helpers -------------------------------------------------------------------------------
    def _day(self, principal: Principal, purpose: str) -> repository.Day:
        """Rule 6's day of this system's requests for ``purpose``: today in the register's time zone."""
        tz = ZoneInfo(self.deps.register.office_hours.timezone)
        local_midnight = self.deps.clock.now().astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
        return repository.Day(principal.subject, purpose, local_midnight.date().isoformat(), local_midnight)

    async def _requests_today(self, day: repository.Day, limit: int | None) -> int:
        """Rule 6's count: the requests counted in ``day`` (a system, a purpose, today in the register's time
        zone) that were stored or are being answered, in any gateway process — read, not counted in. An exchange is
        counted in by its write-ahead's transaction (:func:`repository.count_in_unless_moved`), which refuses
        when the count has crossed the limit since this read; if the attempt then ends without its outcome
        stored, the count is given back (``exchange``). A count or a give-back lost with a crashed process
        leaves the count too high that day: more requests escalate, none slips past the limit.

        Below the limit, the count this process saw when it last counted a request in stands for the read
        (:meth:`_written_counting`): the decision then depends only on the count being below the limit, and the
        write-ahead's precondition checks exactly that against the count in the database — requests of other
        processes or give-backs since then at worst cost the request a second decision (``CountMoved``). The
        read and its hand-over to a thread were about a twentieth of an exchange's CPU. At or past the limit the
        count is read: an escalation cites it, and a count this process saw hours ago could be far too low."""
        seen = self._seen_counts.get((day.system, day.purpose))
        if seen is not None and seen[0] == day.day and limit is not None and seen[1] < limit:
            return seen[1]

        def count() -> int:  # a read: WAL readers take no lock
            with transaction(self.deps.sessions) as session:
                return repository.counted(session.connection(), day)

        return await asyncio.to_thread(count)

    async def _written_counting(self, events: list[AuditEvent], day: repository.Day, decided_on: int,
                                limit: int | None, claim: repository.Claim | None = None) -> list[Receipt]:
        """The write-ahead ``events`` logged with the request counted in ``day`` in their transaction
        (:func:`repository.count_in_unless_moved`, decided with ``decided_on``), and with ``claim``'s claim if
        given; the count with this request in is then kept for :meth:`_requests_today` (one entry per system and
        purpose, the latest day's). Raises as :meth:`_record` does (``CountMoved``: nothing written).

        Kept only once the transaction committed, as the last run of the count told it: the count runs on the
        audit writer's thread inside a transaction that may yet be rolled back (a batch begun again with
        savepoints, this request refused after counting, a failing database), and the writer runs it again only
        after rolling the run before back. Kept as each run told it, a count the database never held stayed
        behind: one too high after a request refused with ``CountMoved`` in a batch begun again."""
        told: list[int] = []
        count = repository.count_in_unless_moved(day, decided_on, limit, told.append)
        receipts = await (self._write_ahead_claiming(events, claim, count) if claim
                          else self._record(events, repository.only_if(count), None, events[0].exchange_id))
        self._seen_counts[(day.system, day.purpose)] = (day.day, told[-1])
        return receipts

    async def _uncount(self, attempt: str) -> None:
        """``attempt`` ended: give its count back unless its outcome was stored (then it is a stored exchange) —
        known once the commit that would store it has settled (``_outcome_stored_by``)."""
        await self._commits_settled(attempt)
        day = self._counted_in.pop(attempt, None)
        if day is None:
            return

        def give_back() -> None:
            with self._count_writer, transaction(self.deps.sessions) as session:
                repository.give_back(session.connection(), day)
        try:
            await asyncio.to_thread(give_back)
        except Exception as exc:  # the count stays one too high today: a stricter limit, never a looser one
            log.warning("daily_count_not_given_back", exchange_id=attempt, error_type=type(exc).__name__)

    async def _record(self, events: list[AuditEvent], companion: CompanionRow | None = None,
                      key_taken: str | None = None, ahead_of: str | None = None) -> list[Receipt]:
        """Log ``events`` durably (with ``companion`` in the same commit); ``key_taken`` is the 409's detail
        when the companion is refused because another attempt holds or answered this Idempotency-Key.
        ``ahead_of``: the events are the write-ahead of that request (see ``_ahead_handed``)."""
        try:
            if ahead_of is None:
                return await self.deps.writer.record(events, companion)
            return await self._written_ahead_of(ahead_of, self.deps.writer.handed(events, companion))
        except PersonalDataError as exc:  # the caller put an identifier in a reference: its input, not our fault
            if events and events[0].exchange_id in self._logged_ahead:
                # Past the write-ahead, which took every reference of the request: an entry the gateway built (from
                # a holder's answer, say) is what failed, a defect the request ends with (``_audit_defect``), not
                # a 422 that blames the requester and leaves the write-ahead with nothing after it.
                raise
            raise Unprocessable("a reference in the request looks like personal data (e.g. a BSN); use "
                                "case and signal references that identify no one; nothing was disclosed") from exc
        except AuditError as exc:
            moved = cause_of(exc, repository.CountMoved)
            if companion is not None and moved is not None:
                raise moved from None  # the caller decides again; nothing was written
            if companion is not None and (not_taken := cause_of(exc, CaseStepNotTaken)) is not None:
                raise not_taken from None  # nothing was written: the caller logs the answers without the step
            if companion is not None and _caused_by(exc, DecisionLost):
                log.info("escalation_decision_taken_over", error_type="DecisionLost")
                raise Conflict(_DECISION_TAKEN) from exc
            kind = next((k for k in (IntegrityError, repository.ClaimLost) if _caused_by(exc, k)), None)
            if companion is not None and key_taken is not None and kind is not None:
                # Only the claim or outcome row can clash: another attempt (another gateway process) holds or
                # answered this Idempotency-Key. Nothing of this attempt was written; a retry gets that answer.
                log.info("idempotency_key_taken", error_type=kind.__name__)
                raise Conflict(key_taken, headers={"Retry-After": "1"}) from exc
            fault = cause_of(exc, OperationalError)  # which fault of the database, for the operator
            log.error("audit_write_failed", **(database_fault(fault) if fault else {"error_type": type(exc).__name__}))
            raise ServiceUnavailable("the audit log could not be written; nothing was disclosed") from exc
        except Exception as exc:  # any failure to log means: do not disclose
            log.error("audit_write_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("the audit log could not be written; nothing was disclosed") from exc

    async def _written_ahead_of(self, request_id: str, handed: asyncio.Future[list[Receipt]]) -> list[Receipt]:
        """The commit of ``request_id``'s write-ahead, ``handed`` to the writer, waited for shielded: cancelled
        meanwhile, the request leaves the future for its cancellation to wait for (``_audit_cancelled``), which
        then knows whether the write-ahead is in the log and needs an ending after it."""
        self._ahead_handed[request_id] = handed
        try:
            receipts = await asyncio.shield(handed)
        except BaseException as exc:
            if isinstance(exc, Exception):  # not written: nothing of this attempt is in the log
                self._ahead_handed.pop(request_id, None)
            else:  # retrieved even if nobody waits for it (a cancellation from inside the request)
                handed.add_done_callback(retrieved)
            raise
        self._ahead_handed.pop(request_id, None)
        return receipts

    async def _decide(self, kind: str, body: ExchangeRequest | DiscoveryRequest, principal: Principal,
                      targets: list[_Target], requests_today: int, request_fingerprint: str,
                      escalation: Any = None) -> list[Decision]:
        now = self.deps.clock.now()
        inputs = [PolicyInput(
            request=PolicyRequest(
                partnership=body.partnership, purpose=body.purpose, legal_basis=body.legal_basis,
                case_reference=body.case_reference, signal=body.signal.model_dump(), categories=body.categories,
                subject_count=len(body.subjects), subjects_minor=any(s.minor for s in body.subjects),
                requester=Party(organisation=principal.organisation, system=principal.subject),
                holder=Party(organisation=t.organisation, system=t.system),
                requested_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                provided_categories=sorted({r.category for r in getattr(body, "provide", [])})),
            context=PolicyContext(requests_today=requests_today, escalation_decision=escalation),
            request_fingerprint=request_fingerprint) for t in targets]
        return await self.deps.policy.decide_many(kind, inputs)  # type: ignore[arg-type]  # one evaluation

    async def _failing_closed(self, work: Awaitable[_R], event_type: EventType, principal: Principal,
                              body: ExchangeRequest | DiscoveryRequest, trace: Trace, request_id: str) -> _R:
        """``work`` (an exchange, a discovery or a fuzzy discovery), with what escapes it audited
        (``_audit_defect``); a cancellation from inside it, which no one asked for, is audited as the defect it is
        and raised as :class:`CancelledInside` (the generic 500). The request's own cancellation goes on, once its
        ending is logged if it needs one (``_audit_cancelled``). Whatever the request's end, what this service
        keeps of its entries in the log goes with it."""
        try:
            return await work
        except asyncio.CancelledError as exc:
            if cancelled_from_outside():
                await self._audit_cancelled(principal, body, trace, request_id)
                raise
            await self._audit_defect(exc, event_type, principal, body, trace, request_id)
            raise CancelledInside("a cancellation nobody asked for escaped the request's work") from exc
        except Exception as exc:
            await self._audit_defect(exc, event_type, principal, body, trace, request_id)
            raise
        finally:
            self._logged_ahead.discard(request_id)
            self._ending_handed.discard(request_id)
            self._ahead_handed.pop(request_id, None)

    async def _audit_defect(self, exc: BaseException, event_type: EventType, principal: Principal,
                            body: ExchangeRequest | DiscoveryRequest, trace: Trace, exchange_id: str) -> None:
        """After a defect (an exception that is none of the gateway's own answers, or a cancellation raised inside
        the request's work, ``CancelledError``): the caller gets the generic 500 ("nothing was disclosed"), and
        the log gets, under the attempt's id, the exception's type (never its text, which may name a person): the
        request as denied when nothing of it was logged yet, else a ``request.failed`` entry after the ones it
        has (so statistics count the request once).

        One of the gateway's own answers or a database failure is no defect, and before the write-ahead it needs
        no entry: nothing of the request is in the log. After it, the log holds a request that was about to be
        answered, so a 503 is logged as well — else the log would not say that the request ended without
        disclosure — unless the audit log itself is what failed; and so is an outcome that could not be stored
        (``OutcomeNotStored``: nothing of what holders answered, if any were asked, reached the requester). A 409
        there is a lost race for the request's Idempotency-Key: the attempt that won it writes the request's
        ending."""
        logged_ahead = exchange_id in self._logged_ahead
        defect = not isinstance(exc, _NOT_DEFECTS)
        unavailable_after_write_ahead = logged_ahead and (
            isinstance(exc, OutcomeNotStored)
            or (isinstance(exc, ServiceUnavailable) and not _caused_by(exc, AuditError)))
        if not defect and not unavailable_after_write_ahead:
            return
        log.error("request_failed_by_defect" if defect else "request_failed_after_write_ahead",
                  exchange_id=exchange_id, error_type=type(exc).__name__)
        entries = self._unanswered(principal, body, trace, exchange_id, _GATEWAY_ERROR, type(exc).__name__,
                                   denied_as=None if logged_ahead else event_type)
        try:
            await self._ending(exchange_id, self._record(entries))
        except Exception as failure:  # the 500 stands either way; the log line above says what happened
            log.error("defect_not_audited", exchange_id=exchange_id, error_type=type(failure).__name__)

    async def _audit_cancelled(self, principal: Principal, body: ExchangeRequest | DiscoveryRequest, trace: Trace,
                               request_id: str) -> None:
        """The request's own cancellation (its client gone, the server stopping): once its write-ahead is in the
        log and before its ending is (its answer's commit, or a defect's ``request.failed``), the log gets a
        ``request.failed`` entry with reason ``request-cancelled`` after the entries it has — else it holds a
        request that was about to be answered and nothing after it. Before the write-ahead nothing of the
        request is in the log, and nothing is added.

        Shielded, as the attempt's other endings are: cancelled once more while it waits, the entry is still
        written. It holds the cancellation up only as long as the audit writer takes to commit it; when the log
        cannot be written, a log line says which request's ending is missing (its id and the error's type).

        Cancelled while its write-ahead is committed (handed to the writer, ``_ahead_handed``), the request waits
        for that commit first: the writer commits it whether or not the request waits, so the entry is written
        only if the write-ahead was. Counted as logged ahead only once it had waited, such a request ended with
        its write-ahead in the log and nothing after it.

        Cancelled while its ending's commit is under way (a task of its own, ``_awaited_by_end``), the request
        waits for that commit too: made, it is the ending; failed, it wrote nothing, and this entry is the ending
        (with the provisions that commit did not log). Without the wait, a request cancelled twice (the second
        time while the attempt waited for that commit to give its claim up) took the ending as written, and a
        commit that then failed left the request with no ending at all."""
        under_way = self._commits_under_way.get(request_id)  # the ending's, when it is handed
        ending_handed = request_id in self._ending_handed
        if ending_handed and under_way is None:
            return
        ahead = None if request_id in self._logged_ahead else self._ahead_handed.get(request_id)
        if ahead is None and request_id not in self._logged_ahead:
            return
        self._ending_handed.add(request_id)
        await asyncio.shield(self._cancellation_logged(principal, body, trace, request_id, ahead,
                                                       under_way, ending_handed))

    async def _cancellation_logged(self, principal: Principal, body: ExchangeRequest | DiscoveryRequest,
                                   trace: Trace, request_id: str, ahead: asyncio.Future[list[Receipt]] | None = None,
                                   under_way: asyncio.Future[Any] | None = None, ending_handed: bool = False) -> None:
        """A cancelled request's ending logged, or the log line that says it is not: nothing raised here may
        take the cancellation's place. After ``ahead``, the write-ahead's commit, if it was still under way:
        when it failed, nothing of the request is in the log, and nothing is added. After ``under_way``, the
        commit the request's end waits for, if one was: when it was the request's ending (``ending_handed``) and
        was made, nothing is added either."""
        if not await _written(ahead):  # nothing of the request is in the log, and nothing is added
            return
        if await _written(under_way) and ending_handed:
            return
        try:
            await self._record(self._unanswered(principal, body, trace, request_id, _REQUEST_CANCELLED,
                                                "CancelledError"))
        except Exception as failure:  # the cancellation goes on either way
            log.error("request_cancel_not_audited", exchange_id=request_id, error_type=type(failure).__name__)

    def _unanswered(self, principal: Principal, body: ExchangeRequest | DiscoveryRequest, trace: Trace,
                    request_id: str, reason: str, error_type: str, *,
                    denied_as: EventType | None = None) -> list[AuditEvent]:
        """The entries that end a request that was not answered: the records the requester provided that its
        holders' answers did not log (``_provisions_left``), then a ``request.failed`` entry with ``reason``
        after its write-ahead — or, when nothing of it was logged yet, the request itself as denied
        (``denied_as``: its event type), so that statistics count it once. ``error_type`` is a type's name,
        never an exception's text (which may name a person)."""
        base = _audit_base(principal, body, trace, request_id, self.deps.register)
        handed = [AuditEvent(**base | entry) for entry in self._provisions_left(request_id)]
        return [*handed, AuditEvent(
            event_type=denied_as or EventType.REQUEST_FAILED, **base, status="error",
            decision=AuditDecision.DENY if denied_as else None, reasons=(reason,), categories=tuple(body.categories),
            extra={"case_reference": body.case_reference, "error_type": error_type})]

    async def _ending(self, request_id: str, commit: Awaitable[_R]) -> _R:
        """``commit``, the one that ends the request in the log (its answer's, or its failure's): once it is handed
        to be written, a cancellation of the request adds no ending of its own (``_audit_cancelled``), since the
        writer commits what it was handed whether or not its caller waits. A failure of it wrote nothing: the
        request's ending is still to be logged."""
        self._ending_handed.add(request_id)
        try:
            return await commit
        except Exception:
            self._ending_handed.discard(request_id)
            raise

    async def _deny_all_on_policy_failure(self, exc: PolicyError, base: dict[str, Any],
                                          targets: list[_Target], event_type: EventType) -> None:
        log.error("policy_engine_failed", error_type=type(exc).__name__)
        events = [AuditEvent(event_type=event_type, **base, status="error", decision=AuditDecision.DENY,
                             reasons=("policy-engine-unavailable",))]
        events += [AuditEvent(event_type=EventType.POLICY_DECIDED, **base, status="error", holder=t.organisation,
                              decision=AuditDecision.DENY, reasons=("policy-engine-unavailable",)) for t in targets]
        await self._record(events)
        raise ServiceUnavailable("the policy engine is unavailable; the request is denied (fail closed)",
                                 extra={"outcome": "denied"}) from exc

    # -- exchange ------------------------------------------------------------------------------
    async def exchange(self, principal: Principal, body: ExchangeRequest, trace: Trace,
                       idempotency_key: str | None) -> Answer:
        exchange_id = new_id()
        try:
            return await self._failing_closed(self._exchange_once(principal, body, trace, idempotency_key, exchange_id),
                                              EventType.EXCHANGE_REQUESTED, principal, body, trace, exchange_id)
        finally:
            self._matched.pop(exchange_id, None)
            self._early.drop(exchange_id)
            await self._attempt_ended(principal, body, trace, exchange_id)

    async def _attempt_ended(self, principal: Principal, body: ExchangeRequest, trace: Trace,
                             exchange_id: str) -> None:
        """What an attempt's end waits for, each begun whether or not the request is cancelled (again) while it
        waits for the one before: a re-run's decision given back, rule 6's count given back, the provisions left
        logged. Each is shielded, but a cancellation that reaches the request while it waits for one is raised
        there: begun in turn only after it, the others were skipped (the count never given back, the provisions
        never logged, and both kept in ``_counted_in`` and ``_provisions`` for good). The cancellation goes on
        once all of them are under way. Each waits, inside its shielded task, for the attempt's commit under way
        (``_commits_settled``): the attempt's own wait for it (``_released_after_commits``) is cut short by a
        further cancellation, and a give-back before that commit made it fail or gave back what it had kept."""
        try:
            await self._rerun_ended(exchange_id)
        finally:
            try:
                await asyncio.shield(self._uncount(exchange_id))  # also when this request is being cancelled
            finally:
                # Shielded, so a task of its own: made only when provisions are left, not on every exchange.
                if exchange_id in self._provisions:
                    await asyncio.shield(self._provisions_ended(principal, body, trace, exchange_id))

    async def _exchange_once(self, principal: Principal, body: ExchangeRequest, trace: Trace,
                             idempotency_key: str | None, exchange_id: str) -> Answer:
        if not idempotency_key:
            return await self._exchange(principal, body, trace, None, exchange_id)
        # A retry that arrives while the first attempt is still being answered must not run it a second time.
        # Here (same process) that is known without the database; the key's claim, written ahead with the
        # first attempt's entries, refuses a retry that reaches another gateway process.
        in_flight = (principal.subject, idempotency_key)
        if in_flight in self._keys_in_flight:
            raise Conflict(_STILL_ANSWERED, headers={"Retry-After": "1"})
        self._keys_in_flight.add(in_flight)
        try:
            return await self._exchange(principal, body, trace, idempotency_key, exchange_id)
        finally:
            self._keys_in_flight.discard(in_flight)

    async def _exchange(self, principal: Principal, body: ExchangeRequest, trace: Trace,
                        idempotency_key: str | None, exchange_id: str) -> Answer:
        request_fingerprint = fingerprint(principal, body)
        key_fingerprint = keyed_fingerprint(request_fingerprint, body)
        register = self.deps.register
        # With a key, the answer stored under it is not looked up beforehand: the write-ahead's claim on the key
        # commits only if no answer is stored under it, so a retry of an answered request writes nothing and is
        # answered from the store when that claim is refused (below). Looked up on every keyed request (a hop to
        # a worker thread and a read on a connection of its own, ~100 µs of CPU), it found nothing nearly always.
        try:
            decided = await self._decided(register, principal, body, trace, exchange_id, request_fingerprint)
        except Exception:
            if idempotency_key and (replay := await self._answered_or_not_held(principal, idempotency_key,
                                                                                key_fingerprint)) is not None:
                return replay  # the request was answered before: that answer, whatever deciding it now says
            raise
        targets, grant, base, logged, decisions, today, day = decided
        if isinstance(decisions, PolicyError):
            # no denial is logged for a retry of an answered request, nor for an attempt duplicating one in flight
            if idempotency_key and (replay := await self._answered_or_not_held(principal, idempotency_key,
                                                                                key_fingerprint)) is not None:
                return replay
            await self._deny_all_on_policy_failure(decisions, base, targets, EventType.EXCHANGE_REQUESTED)
            raise decisions  # unreachable: the helper always raises
        # With an Idempotency-Key, the key's claim commits with the write-ahead entries: an attempt in another
        # gateway process then cannot log or ask a holder until this one has answered (or is long dead).
        claim = repository.Claim(principal.subject, idempotency_key, exchange_id, key_fingerprint,
                                 self.deps.clock.now()) if idempotency_key else None
        limit = _daily_limit(register, body)
        try:
            for _ in range(DECISION_ROUNDS):
                ahead = self._written_ahead(base, body, logged, targets, decisions)
                try:
                    receipts = await self._written_counting(ahead, day, today, limit, claim)
                    break
                except Conflict:
                    # The claim was refused, nothing was written: an answer stored under the key is the retry's
                    # answer (or 409 if it was for another request); else the key is held by another attempt.
                    if claim is None or (replay := await self._stored_answer(principal, claim.key,
                                                                              key_fingerprint)) is None:
                        raise
                    return replay
                except repository.CountMoved as moved:  # nothing was written: decide with the count as it is
                    today = moved.count
                    try:
                        decisions = await self._decide("exchange", body, principal, targets, today,
                                                       request_fingerprint, grant.policy_input if grant else None)
                    except PolicyError as exc:
                        await self._deny_all_on_policy_failure(exc, base, targets, EventType.EXCHANGE_REQUESTED)
            else:
                raise ServiceUnavailable("the daily count kept moving while the request was decided; nothing was "
                                         "disclosed; try again", headers={"Retry-After": "1"})
            self._counted_in[exchange_id] = day  # given back unless its outcome is stored
            self._logged_ahead.add(exchange_id)
            attempt = _Attempt(principal, body, trace, exchange_id, request_fingerprint, idempotency_key, claim,
                               grant, base, logged, (register.version, decisions[0].policy_version))
            return Answer(await self._answer(attempt, targets, decisions, receipts))
        except BaseException:
            # even when this request is being cancelled: the key is free for a retry at once (a claim not ours is
            # left alone), and the attempt's end (``_attempt_ended``) knows whether its outcome was stored
            await asyncio.shield(self._released_after_commits(claim, exchange_id))
            raise

    @staticmethod
    def _written_ahead(base: dict[str, Any], body: ExchangeRequest, logged: dict[str, str],
                       targets: list[_Target], decisions: list[Decision]) -> list[AuditEvent]:
        """The write-ahead entries: the request and its decisions, durable before any holder hears of it."""
        subjects = [s.ref for s in body.subjects]
        ahead = [AuditEvent(event_type=EventType.EXCHANGE_REQUESTED, **base, categories=tuple(body.categories),
                            policy_version=decisions[0].policy_version,
                            extra={"case_reference": body.case_reference, "signal_type": body.signal.type,
                                   "subject_count": len(subjects), "subjects": [logged[s] for s in subjects]})]
        ahead += [AuditEvent(event_type=EventType.POLICY_DECIDED, **base, holder=t.organisation,
                             decision=_AUDIT_DECISION[d.outcome], reasons=tuple(r.code for r in d.reasons),
                             categories=tuple(d.permitted_categories), policy_version=d.policy_version,
                             obligations=d.obligations.model_dump() if d.obligations else None)
                  for t, d in zip(targets, decisions, strict=True)]
        return ahead

    async def _decided(self, register: Register, principal: Principal, body: ExchangeRequest, trace: Trace,
                       exchange_id: str, request_fingerprint: str) -> _Decided:
        """Everything before the write-ahead, none of it written anywhere: the targets, the re-run grant, the
        audit base, the subjects as logged, and the decisions (or the policy engine's failure, to be denied
        and logged only once it is clear that this is no retry of an answered request)."""
        if {r.subject for r in body.provide} - {s.ref for s in body.subjects}:
            raise Unprocessable("provided records must be about subjects of the request")
        _known_categories(register, body.categories, "requested categories")
        # the policy would remove them anyway; each costs its evaluation, past the RVM's limit
        _known_categories(register, [r.category for r in body.provide], "provided records of categories")
        matched = await self._resolved(principal, body)
        if matched is not None:  # the subjects are match handles: their holder's records (until the attempt ends)
            self._matched[exchange_id] = matched
        grant = await self._grant(principal, body)
        if grant is not None:  # reserved for this attempt until it ends, however it ends (``exchange``)
            self._rerun_grants[exchange_id] = grant
        targets = _targets(register, body, [matched.holder] if matched else body.holders, principal.organisation)
        if grant is not None:  # a re-run asks only the holder the decision is about
            targets = [t for t in targets if t.organisation == grant.holder]
            if not targets:
                raise Unprocessable(f"escalation decision `{grant.decision_id}` is about a holder this request "
                                    "does not ask")
        base = _audit_base(principal, body, trace, exchange_id, register)
        subjects = [s.ref for s in body.subjects]
        pseudonymous = matched is None and self._pseudonymous(subjects)
        if pseudonymous:  # the subjects as logged, computed while rule 6 is counted and the policy decides
            self._early.start(exchange_id, _LOGGED, functools.partial(self._logged, pseudonymous=True), principal,
                              body.partnership, subjects)
        day = self._day(principal, body.purpose)
        today = await self._requests_today(day, _daily_limit(register, body))
        try:
            decisions: list[Decision] | PolicyError = await self._decide(
                "exchange", body, principal, targets, today, request_fingerprint,
                grant.policy_input if grant else None)
        except PolicyError as exc:
            decisions = exc
        early_logged = self._early.take(exchange_id, _LOGGED)
        logged = (matched.logged if matched else await early_logged if early_logged else
                  await self._translated(self._logged, subjects, principal, body.partnership, subjects))
        if pseudonymous and isinstance(decisions, list):
            for target, decision in zip(targets, decisions, strict=True):  # see ``early``: none is sent anything yet
                if decision.allow and target.system:
                    self._early.start(exchange_id, target.organisation,
                                      functools.partial(self._for_holder, pseudonymous=True), principal,
                                      body.partnership, target.organisation, subjects)
        return _Decided(targets, grant, base, logged, decisions, today, day)

    async def _answer(self, attempt: _Attempt, targets: list[_Target], decisions: list[Decision],
                      receipts: list[Receipt]) -> ExchangeResult:
        """Past the write-ahead: ask the holders, log what is disclosed, store the outcome, answer. With an
        Idempotency-Key, each commit from here on holds only while the attempt still holds its claim within
        its lease, and the outcome's commit gives the claim up. After an escalation the outcome commits on its
        own, after the holders' answers: their commit marks the claim (``answers_logged``), so that no retry
        takes the key over and asks the holders again, whatever becomes of this attempt."""
        principal, body, exchange_id = attempt.principal, attempt.body, attempt.exchange_id
        if attempt.claim is not None and any(d.allow for d in decisions):
            self._lease_covers_holder_calls(attempt.claim)
        subjects = [s.ref for s in body.subjects]
        serving = [self._serve_target(principal, body, exchange_id, t, d, subjects, attempt.grant, attempt.logged)
                   for t, d in zip(targets, decisions, strict=True)]
        # served at once, and none outlives this attempt when one fails (see ``siblings``); one target, the
        # usual request, is awaited as it is: no task (and loop iteration) of its own for it
        outcomes = await served_together(serving)
        after = [AuditEvent(**attempt.base | event) for _, events_for_target in outcomes for event in events_for_target]
        served = [o for o, _ in outcomes]
        if _nothing_follows(after, attempt.grant, served):  # the outcome row commits with the disclosures
            result = self._result(principal, body, exchange_id, attempt.versions, served, receipts,
                                  await self._checkpoint())
            row = self._outcome_row(attempt, result)
            disclosed = await self._outcome_stored_by(attempt, self._provisions_logged_by(exchange_id, self._ending(
                exchange_id, self._record(after, repository.outcome_companion(
                    lambda entries: _with_receipt_indices(row, [r.index for r in receipts + entries]),
                    self._claim_held(attempt.claim, release=True)), _KEY_TAKEN_AFTER))))
            result.receipt.audit_indices += [r.index for r in disclosed]
        else:
            stepped = False
            if after:
                # A re-run's disclosure commits only with its decision marked used (and with the key held).
                guard = _all_of(self._claim_held(attempt.claim, release=False, answers_logged=True),
                                self._decision_used(attempt, served))
                logged, stepped = await self._answers_logged(attempt, after, guard, served)
                receipts += logged
            elif (held := self._claim_held(attempt.claim, release=False)) is not None:
                await self._still_held(held)  # every target denied or escalated: no entry to check the claim with
            await self._escalate(exchange_id, served, attempt.grant, attempt.trace, stepped=stepped)
            openings = await self._case_openings(attempt, served)
            result = self._result(principal, body, exchange_id, attempt.versions, served, receipts,
                                  await self._checkpoint())
            await self._store_outcome(attempt, result, answers_logged=bool(after), openings=openings)
        log.info("exchange_completed", exchange_id=exchange_id, partnership=body.partnership, purpose=body.purpose,
                 outcomes=[t.outcome.value for t in result.targets])
        return result

    async def _provisions_logged_by(self, exchange_id: str, commit: Awaitable[_R]) -> _R:
        """``commit``, which logs the holders' answers and with them the records the requester provided (see
        ``_provisions``): once it has committed, the attempt's ending no longer logs those; a failure of it wrote
        nothing, so they stay for the ending. Run inside the commit's own task (``_awaited_by_end``), so that it
        is the commit's end that decides, not the attempt's: cancelled meanwhile, the attempt used to drop them
        (the writer might still commit them), and when that commit then failed they were in no entry at all."""
        committed = await commit
        self._provisions.pop(exchange_id, None)
        return committed

    def _provisions_left(self, exchange_id: str) -> list[dict[str, Any]]:
        """The provisions of ``exchange_id`` its holders' answers have not logged (taken: they are logged once)."""
        return [entry for handed in self._provisions.pop(exchange_id, []) for entry in handed]

    async def _provisions_ended(self, principal: Principal, body: ExchangeRequest, trace: Trace,
                                exchange_id: str) -> None:
        """However the attempt ended, the log says which holders were handed (or may hold) the records the
        requester provided: those the holders' answers did not log (the request failed or was cancelled before
        they were, or their commit was refused) are logged now, on their own. A ``request.failed`` ending
        (``_unanswered``: a defect's, a cancellation's) logs them before it instead, when one is written. Which are
        left is known once the commit that would log them has settled (``_provisions_logged_by``)."""
        await self._commits_settled(exchange_id)
        left = self._provisions_left(exchange_id)
        if not left:
            return
        base = _audit_base(principal, body, trace, exchange_id, self.deps.register)
        try:
            await self._record([AuditEvent(**base | entry) for entry in left])
        except Exception as failure:  # the request's answer stands either way; the log line says what is missing
            log.error("provisions_not_audited", exchange_id=exchange_id, error_type=type(failure).__name__)

    async def _answers_logged(self, attempt: _Attempt, after: list[AuditEvent],
                              guard: Callable[[Connection], None] | None,
                              served: list[TargetOutcome]) -> tuple[list[Receipt], bool]:
        """Log the holders' answers (``after``, committing only if ``guard`` holds); their receipts, and whether
        the case step of a re-run whose holder did not follow the decision was taken with them.

        That step (``decision_refused_by_holder`` / ``decision_holder_unavailable``) used to be written in a
        transaction of its own after the answers: a gateway that died in between left the refusal in the log
        and not on the case, its deciders never told. Now its entry and its case row commit with the answers
        (``EscalationDesk.rerun_not_applied_step``): both or neither. A step that cannot be taken with them
        (``CaseStepNotTaken``: the re-run lost its decision, the case changed, the step failed) must not cost
        the answers their entries: they are logged without it, and ``_escalate`` tries the step on its own, as
        before. The step's entry is the case's, not the requester's: its receipt stays out of the answer's."""
        desk, grant = self.deps.escalations, attempt.grant
        ignored = _decision_ignored(grant, served) if grant is not None and desk is not None else None
        step = None
        if ignored is not None and desk is not None and grant is not None:
            step = await desk.rerun_not_applied_step(grant, attempt.exchange_id, ignored.outcome,
                                                     _holder_reason(ignored), attempt.trace)
        # Each commit logs the records the requester provided with the answers (``_provisions_logged_by``), not
        # the step's preparation before them: cancelled during it, nothing is handed yet and the attempt's ending
        # must still log them.
        # The commit is one the attempt's end waits for when the attempt is cancelled meanwhile
        # (``_awaited_by_end``): its guard checks what the end gives back (the key's claim, a re-run's reserved
        # decision), and whether it logged the provisions decides whether the end logs them.
        exchange_id = attempt.exchange_id

        def awaited(commit: Awaitable[list[Receipt]]) -> Awaitable[list[Receipt]]:
            return self._awaited_by_end(exchange_id, self._provisions_logged_by(exchange_id, commit))

        if step is not None:
            try:
                logged = await awaited(self._record(
                    after + step.events, repository.only_if(_with_step(guard, step)), _KEY_TAKEN_AFTER))
            except CaseStepNotTaken as refused:
                log.info("escalation_step_not_with_answers", exchange_id=attempt.exchange_id,
                         error_type=type(refused.__cause__ or refused).__name__)
            else:
                step.taken()
                return logged[:len(after)], True
        return await awaited(self._record(
            after, repository.only_if(guard) if guard else None, _KEY_TAKEN_AFTER)), False

    async def _store_outcome(self, attempt: _Attempt, result: ExchangeResult, *, answers_logged: bool,
                             openings: list[CaseOpening]) -> None:
        """The outcome row after an escalation, in a transaction of its own that also gives the claim up, if the
        attempt still holds it: within its lease when nothing was logged after the write-ahead (as the
        disclosures' commit on the usual path); when the holders' answers are logged, the claim they marked
        is enough, since no retry takes a marked claim over however long the escalation step took (a slow
        webhook keeps its answer; meanwhile retries get ``_ANSWERS_NOT_STORED``, afterwards the stored answer).

        The cases the outcome cites (``openings``) are opened in the same transaction, with their entries: a
        case opened before the outcome stayed open when storing the outcome failed, for a request that was
        never answered, and its retry opened another. Then the transaction commits through the audit log (it
        holds entries), else through the outcome writer with the rows of concurrent requests.

        If the claim is not held, the row is not written: a second row under the key, or an answer that
        another attempt's replay contradicts, is worse than no answer. With answers logged (only code that
        ignores the mark, during an upgrade, could have taken it) the attempt fails with ``OutcomeNotStored``,
        which logs ``request.failed`` after them: the log says the answers never reached the requester. With
        nothing logged after the write-ahead no holder was asked: 409, as when the claim is lost before the
        escalation, and a retry runs the request again.

        Any other failure to store the row (or to open its cases: the audit log down) is ``OutcomeNotStored``
        too: a 500 that says not to retry when the holders' answers are logged (a retry would ask them again),
        a 503 to retry when nothing was logged after the write-ahead, since no holder was asked."""
        exchange_id = attempt.exchange_id
        row = self._outcome_row(attempt, result)
        held = self._claim_held(attempt.claim, release=True, lease=not answers_logged)
        try:
            await self._outcome_stored_by(attempt, self._ending(
                exchange_id, self._store_with_cases(row, openings, held) if openings else self._outcomes.insert(
                    row, held)))
        except Exception as exc:
            lost = exc if isinstance(exc, repository.ClaimLost) else cause_of(exc, repository.ClaimLost)
            if lost is not None and not answers_logged:
                log.info("idempotency_key_taken", error_type="ClaimLost")
                raise Conflict(_KEY_TAKEN_AFTER, headers={"Retry-After": "1"}) from exc
            if lost is not None:
                log.error("outcome_not_stored", exchange_id=exchange_id, error_type="ClaimLost")
                raise OutcomeNotStored(exchange_id, holders_asked=True, claim_lost=True) from exc
            fault = exc.__cause__ if isinstance(exc, AuditError) and exc.__cause__ is not None else exc
            log.error("outcome_not_stored", exchange_id=exchange_id, error_type=type(fault).__name__)
            raise OutcomeNotStored(exchange_id, holders_asked=answers_logged) from exc

    async def _store_with_cases(self, row: dict[str, Any], openings: list[CaseOpening],
                                held: Callable[[Connection], None] | None) -> None:
        """The outcome ``row`` with the cases it cites and their ``opened`` entries, in one commit of the audit
        log (their entries are the cases', not the requester's: the answer's receipt does not cite them); then
        those concerned are told. Shielded: once handed to the writer the commit happens whether or not the
        request is cancelled meanwhile (a client that went away), and a case that opened must be told."""
        async def commit() -> None:
            await self.deps.writer.record([e for o in openings for e in o.events], repository.outcome_companion(
                lambda _entries: row, _all_of(held, *(o.apply for o in openings))))
            for opening in openings:
                opening.taken()

        task = asyncio.ensure_future(commit())
        task.add_done_callback(retrieved)  # retrieved if we are gone
        await asyncio.shield(task)

    async def _stored_answer(self, principal: Principal, key: str, key_fingerprint: str) -> Answer | None:
        """:meth:`_replay` on a worker thread: the answer stored under ``key``, if any."""
        return await asyncio.to_thread(self._replay, principal, key, key_fingerprint)

    async def _answered_or_not_held(self, principal: Principal, key: str, key_fingerprint: str) -> Answer | None:
        """For a keyed request that could not be decided: the answer stored under ``key`` (a retry of an answered
        request gets it, whatever deciding it now says), else a 409 when another attempt holds the key
        (:meth:`_not_held_elsewhere`); None when neither, and the request is refused on its own account."""
        replay = await self._stored_answer(principal, key, key_fingerprint)
        if replay is None:
            await self._not_held_elsewhere(principal, key, key_fingerprint)
        return replay

    async def _not_held_elsewhere(self, principal: Principal, key: str, key_fingerprint: str) -> None:
        """Before a keyed request that could not be decided is refused on its own account: 409 if the key is
        held by another attempt (this one is a duplicate of it, or misuses the key), or by one that logged its
        holders' answers and died, as the write-ahead would."""
        other = await self._claim_on(principal.subject, key)
        if other is None or not (self._live(other) or other.answers_logged):
            return
        if other.request_sha256 != key_fingerprint:
            raise Conflict(_DIFFERENT_REQUEST)
        if not self._live(other):
            raise Conflict(_ANSWERS_NOT_STORED)
        raise Conflict(_STILL_ANSWERED, headers={"Retry-After": "1"})

    async def _write_ahead_claiming(self, ahead: list[AuditEvent], claim: repository.Claim,
                                    count: Callable[[Connection], None]) -> list[Receipt]:
        """The write-ahead entries with the key's claim. The claim is not looked for beforehand (that would cost
        every keyed request a read): only when it clashes is the claim in the way read, to refuse a request
        that differs, or to take over a claim whose attempt died — unless that attempt logged what its holders
        answered (and then never stored its outcome): running the request again would ask them twice."""
        try:
            return await self._record(ahead, _with(repository.claim_companion(claim, None), count), _KEY_TAKEN_AHEAD,
                                      claim.exchange_id)
        except Conflict:
            other = await self._claim_on(claim.system, claim.key)
            if other is not None and other.request_sha256 != claim.request_sha256:
                raise Conflict(_DIFFERENT_REQUEST) from None
            if other is None or self._live(other):
                raise  # answered meanwhile, or still being answered: the retry gets that answer
            if other.answers_logged:
                log.warning("idempotency_claim_answers_not_stored", exchange_id=claim.exchange_id,
                            abandoned=other.exchange_id)
                raise Conflict(_ANSWERS_NOT_STORED) from None
        receipts = await self._record(ahead, _with(repository.claim_companion(claim, other), count), _KEY_TAKEN_AHEAD,
                                      claim.exchange_id)
        log.warning("idempotency_claim_taken_over", exchange_id=claim.exchange_id, abandoned=other.exchange_id)
        return receipts

    async def _claim_on(self, system: str, key: str) -> repository.Claim | None:
        """The claim on ``key`` as it is now (read on a thread)."""
        def read() -> repository.Claim | None:
            with transaction(self.deps.sessions) as session:
                return repository.find_claim(session, system, key)
        return await asyncio.to_thread(read)

    def _live(self, claim: repository.Claim) -> bool:
        """Whether the claim's attempt may still be answering (else it died and the key may be taken over)."""
        return claim.claimed_at > self.deps.clock.now() - CLAIM_ABANDONED_AFTER

    def _lease_covers_holder_calls(self, claim: repository.Claim) -> None:
        """503 before any holder is asked if the claim's lease could run out during the holder calls: the
        write-ahead's commit (or the decisions made again) took so long that what is left of the lease is shorter
        than the longest holder call. Asked anyway, a retry could take the key over as abandoned while the
        holders are still answering, and ask them a second time. The settings keep the bounded waits well inside
        the lease (``gateway.exchange.lease``); this catches the unbounded ones before the holders."""
        connectors = self.deps.connectors
        longest = longest_holder_call(connectors.timeout, connectors.retries, connectors.backoff)
        left = (claim.claimed_at + CLAIM_ABANDONED_AFTER - self.deps.clock.now()).total_seconds()
        if left < longest:
            log.warning("idempotency_lease_too_short_for_holders", exchange_id=claim.exchange_id,
                        seconds_left=round(left, 1), longest_holder_call=longest)
            raise ServiceUnavailable(_LEASE_RUN_DOWN, headers={"Retry-After": "1"})

    async def _still_held(self, held: Callable[[Connection], None]) -> None:
        """``held`` on its own (before an escalation case is opened when no entry is logged after the write-ahead):
        409 if the attempt lost its claim. Outside the log's write lock, which the lease makes safe: nobody may
        take the key over before the lease runs out, and ``held`` refuses once it has."""
        def check() -> None:
            with self.deps.sessions.kw["bind"].connect() as connection:
                held(connection)
        try:
            await asyncio.to_thread(check)
        except repository.ClaimLost as exc:
            log.info("idempotency_key_taken", error_type="ClaimLost")
            raise Conflict(_KEY_TAKEN_AFTER, headers={"Retry-After": "1"}) from exc

    def _claim_held(self, claim: repository.Claim | None, *, release: bool, answers_logged: bool = False,
                    lease: bool = True) -> Callable[[Connection], None] | None:
        if claim is None:
            return None
        return repository.claim_held(claim, claim.claimed_at + CLAIM_ABANDONED_AFTER, self.deps.clock.now,
                                     release=release, answers_logged=answers_logged, lease=lease)

    async def _released_after_commits(self, claim: repository.Claim | None, exchange_id: str) -> None:
        """``_release`` (with a claim), once the attempt's commits that carry the claim or store its outcome are
        settled, if one is still being committed: its write-ahead (``_ahead_handed``), or one that checks or gives
        up the claim after it, or stores the outcome (``_commits_under_way``). The writers commit what they were
        handed whether or not the attempt waits. A release before the write-ahead's commit found no claim to give
        up — the claim was committed after it and refused every retry with the key (409) until its lease ran out;
        one before the answer's commit made that commit fail (``ClaimLost``), and the answers the holders gave
        were not logged. Whether such a commit was made or not, the release then leaves nothing behind (one that
        gave the claim up leaves it nothing to do). With or without a claim, the attempt's end then knows whether
        its outcome was stored (``_outcome_stored_by``), and gives rule 6's count back only if it was not; and a
        re-run's disclosure that marks its decision used is settled before the end gives the decision back
        (``_rerun_ended``): a give-back before it made it fail (``DecisionLost``), the holder's answer unlogged and
        the decision free to be used again."""
        await _written(self._ahead_handed.get(exchange_id))  # settled either way is all that counts
        await self._commits_settled(exchange_id)
        if claim is not None:
            await self._release(claim)

    async def _awaited_by_end(self, exchange_id: str, commit: Awaitable[_R]) -> _R:
        """``commit``, one that what the attempt's end does depends on (it checks or gives up the key's claim,
        marks a re-run's decision used, or stores the outcome: ``_answers_logged``, ``_outcome_stored_by``), as a
        task of its own whose end a failed or cancelled attempt waits for (``_released_after_commits``) before it
        gives anything back."""
        task = asyncio.ensure_future(commit)
        task.add_done_callback(retrieved)  # retrieved even if the attempt no longer waits for it
        self._commits_under_way[exchange_id] = task
        task.add_done_callback(lambda _: self._settled(exchange_id, task))
        return await asyncio.shield(task)

    def _settled(self, exchange_id: str, task: asyncio.Future[Any]) -> None:
        """``task``, a commit of ``exchange_id``'s (``_awaited_by_end``), is done: no longer one to wait for. Left
        by the commit itself, not by the attempt's end, since what ends an attempt waits for it (the ``request.failed``
        of a cancellation, and every give-back), each in a shielded task of its own that a further cancellation of
        the request does not cut short."""
        if self._commits_under_way.get(exchange_id) is task:
            del self._commits_under_way[exchange_id]

    async def _commits_settled(self, exchange_id: str) -> bool:
        """Once ``exchange_id``'s commit under way (if any) has settled: whether it was made (True if none was under
        way). What ends the attempt and depends on that commit comes after it (``_written``)."""
        return await _written(self._commits_under_way.get(exchange_id))

    async def _outcome_stored_by(self, attempt: _Attempt, commit: Awaitable[_R]) -> _R:
        """``commit``, the one that stores the attempt's outcome (and gives its claim up, if it has one), after
        which rule 6's count stays: the exchange is stored. A task of its own (``_awaited_by_end``) that drops the
        count from ``_counted_in`` once it has committed, whether or not the attempt still waits for it, and
        whose end the attempt waits for when it is cancelled meanwhile (``_released_after_commits``): the writers
        commit what they were handed all the same.

        Found by a review: the count was dropped only once the attempt had waited for that commit; cancelled
        meanwhile (a stopping server), the attempt's end gave the count back though the outcome was stored, and
        the day's count was one too low — one request more than rule 6 allows could then be answered."""
        async def stored() -> _R:
            committed = await commit
            self._counted_in.pop(attempt.exchange_id, None)  # stored: it stays counted
            return committed

        return await self._awaited_by_end(attempt.exchange_id, stored())

    async def _release(self, claim: repository.Claim) -> None:
        def release() -> None:
            with transaction(self.deps.sessions) as session:
                repository.release_claim(session.connection(), claim)
        try:
            await asyncio.to_thread(release)
        except Exception as exc:  # it is left to go stale: retries wait CLAIM_ABANDONED_AFTER, then take over
            log.warning("idempotency_claim_not_released", exchange_id=claim.exchange_id,
                        error_type=type(exc).__name__)

    def _minors_allowed(self, body: ExchangeRequest | DiscoveryRequest) -> bool:
        """Rule 5 for the holder: the policy saw only the requester's ``minor`` flags; a holder that knows a
        subject's age refuses when the purpose does not allow minors (unknown purpose: not allowed)."""
        partnership = self.deps.register.partnerships.get(body.partnership)
        purpose = partnership.purposes.get(body.purpose) if partnership else None
        return bool(purpose and purpose.minors_allowed)

    def _pseudonymous(self, subjects: list[str]) -> bool:
        """Subjects are the requester's own pseudonyms (translated per holder) or, for partners that have not
        enrolled yet, opaque references passed through as they are. One request never mixes the two."""
        if self.deps.pseudonyms is None or (subjects and all(is_match_handle(s) for s in subjects)):
            return False  # match handles are resolved by ``_resolved``, neither pseudonyms nor references
        kinds = set()
        for position, subject in enumerate(subjects):
            pseudonym = is_pseudonym(subject)
            if not pseudonym and looks_like_pseudonym(subject):  # never taken for a reference (see there)
                raise Unprocessable(f"subject {position} looks like a pseudonym but is not a valid one: send your "
                                    "pseudonyms exactly as the gateway gave them")
            kinds.add(pseudonym)
        if len(kinds) > 1:
            raise Unprocessable("subjects must all be pseudonyms or all be references, not a mix")
        if self.deps.require_pseudonyms and kinds != {True}:
            raise Unprocessable("subjects must be your own pseudonyms (enrol, or POST /v1/pseudonyms); "
                                "opaque references are switched off here")
        return kinds == {True}

    async def _translated(self, translate: Callable[..., dict[str, str]], subjects: list[str],
                          *args: Any) -> dict[str, str]:
        """``translate(*args)``: on a worker thread when the subjects are pseudonyms (elliptic-curve work that
        would stall the event loop), inline when they are references (an identity map, far cheaper than the
        hop to a thread)."""
        if self.deps.pseudonyms is not None and self._pseudonymous(subjects):
            return await asyncio.to_thread(translate, *args)
        return translate(*args)

    def _logged(self, principal: Principal, partnership: str, subjects: list[str], *,
                pseudonymous: bool | None = None) -> dict[str, str]:
        """How each subject appears in the audit log: its partnership-domain pseudonym (the same for every
        participant, so a data-subject request finds all disclosures), or the reference as it is.
        ``pseudonymous``: what ``_pseudonymous`` said of ``subjects`` already (each subject decoded again
        otherwise); None: ask it."""
        translator = self.deps.pseudonyms
        if translator is None or not (self._pseudonymous(subjects) if pseudonymous is None else pseudonymous):
            return {s: s for s in subjects}
        return {s: translator.to_partnership(s, partnership, principal.organisation) for s in subjects}

    def _for_holder(self, principal: Principal, partnership: str, holder: str, subjects: list[str], *,
                    pseudonymous: bool | None = None) -> dict[str, str]:
        """The holder's pseudonyms for each subject → the requester's (only for an allowed target), under every
        key version the ring holds, so that a holder that has not enrolled again since a rotation still
        recognises its subjects (``PseudonymService.to_holder_all``). In the order they are asked: every
        subject's pseudonym of the current version first, then of the next older version, and so on — when they
        do not fit one holder query the first part holds the current ones (:mod:`gateway.exchange.parts`).
        ``pseudonymous`` as for ``_logged``."""
        translator = self.deps.pseudonyms
        if translator is None or not (self._pseudonymous(subjects) if pseudonymous is None else pseudonymous):
            return {s: s for s in subjects}
        versions = [translator.to_holder_all(s, partnership, principal.organisation, holder) for s in subjects]
        theirs: dict[str, str] = {}
        for depth in range(max(map(len, versions), default=0)):
            for s, pseudonyms in zip(subjects, versions, strict=True):
                if depth < len(pseudonyms):
                    theirs.setdefault(pseudonyms[depth], s)
        return theirs

    async def _related_for_requester(self, principal: Principal, partnership: str, holder: str,
                                     records: list[HolderRecord]) -> tuple[list[HolderRecord], int]:
        """Related subjects named inside records (by the holder's pseudonyms) in the requester's pseudonyms, and
        how many texts were withheld (a pseudonym the gateway does not translate, a text with one inside).
        Mapped also when no whole pseudonym was found: a pseudonym inside a longer text is dropped then too.
        Only the translation (elliptic-curve work and an enrolment look-up) goes to a thread, and only when
        there is a pseudonym to translate: records without one, as most are, cost no hand-over."""
        assert self.deps.pseudonyms is not None
        if not _may_name_pseudonyms([r.fields for r in records]):
            return records, 0
        values = {v for r in records for v in _pseudonyms_in(r.fields)}
        mapped = (await asyncio.to_thread(self.deps.pseudonyms.related_for_requester, values, partnership, holder,
                                          principal.organisation) if values else {})
        translated = [(r, *_mapped_counting(r.fields, mapped)) for r in records]
        return ([r.model_copy(update={"fields": fields}) for r, fields, _ in translated],
                sum(withheld for _, _, withheld in translated))

    async def _provided_fields(self, principal: Principal, body: ExchangeRequest, holder: str) -> list[Any]:
        """The fields of the records the requester provides, as ``holder`` gets them: a pseudonym in them (the
        requester's own, of a related subject) in the holder's pseudonym when the requester enrolled that
        subject, else withheld (None), as is a text with one inside — exactly as a holder's records are treated
        on their way to the requester (``_related_for_requester``, with the roles the other way round, so that
        neither side can use the gateway to translate arbitrary points). As they were, the requester's
        pseudonyms reached the holder, stable and linkable to the requester's other requests that name them."""
        translator = self.deps.pseudonyms
        if translator is None or not body.provide or not _may_name_pseudonyms([r.fields for r in body.provide]):
            return [r.fields for r in body.provide]
        values = {v for r in body.provide for v in _pseudonyms_in(r.fields)}
        mapping = (await asyncio.to_thread(translator.related_for_requester, values, body.partnership,
                                           principal.organisation, holder) if values else {})
        return [_mapped(r.fields, mapping) for r in body.provide]

    async def _resolved(self, principal: Principal, body: ExchangeRequest) -> Matched | None:
        """What the request's match handles resolve to (:mod:`gateway.exchange.match_handles`); None when its
        subjects are none (checked here, so an ordinary request does not hop to a thread for it)."""
        if not any(is_match_handle(s.ref) for s in body.subjects):
            return None
        if self.deps.match_handles is None:
            raise Unprocessable("match handles cannot be cited: fuzzy discovery is not installed")
        return await asyncio.to_thread(self.deps.match_handles.resolve, principal, body)

    async def _grant(self, principal: Principal, body: ExchangeRequest) -> RerunGrant | None:
        if body.escalation_decision is None:
            return None
        if self.deps.escalations is None:
            raise Unprocessable("escalation decisions cannot be cited: the escalation workflow is not installed")
        return await self.deps.escalations.grant_for_rerun(principal, body.escalation_decision)

    @staticmethod
    def _decision_used(attempt: _Attempt, served: list[TargetOutcome]) -> Callable[[Connection], None] | None:
        """The precondition that marks the re-run's decision used, if its holder disclosed under it."""
        grant = attempt.grant
        if grant is None or not _disclosed_under(grant, served):
            return None
        return lambda connection: grant.mark_used(connection, attempt.exchange_id)

    async def _rerun_ended(self, exchange_id: str) -> None:
        """The attempt is over: the decision it reserved for its re-run is given back unless the re-run used it
        (the database says which: see ``RerunGrant.mark_used``); also when the attempt is cancelled, after the
        commit that would mark it used has settled."""
        desk = self.deps.escalations  # never None with a grant: only the desk grants one (``_grant``)
        if desk is not None and exchange_id in self._rerun_grants:
            await asyncio.shield(self._rerun_given_back(exchange_id, desk))

    async def _rerun_given_back(self, exchange_id: str, desk: EscalationDesk) -> None:
        await self._commits_settled(exchange_id)
        grant = self._rerun_grants.pop(exchange_id, None)
        if grant is not None:
            await desk.rerun_ended(grant)

    async def _escalate(self, exchange_id: str, outcomes: list[TargetOutcome], grant: RerunGrant | None,
                        trace: Trace, *, stepped: bool = False) -> None:
        """A re-run's steps on its case: close the case a re-run settled; record on its case a re-run whose
        holder did not follow the decision, unless that step committed with the holder's answer already
        (``stepped``, see ``_answers_logged``). A request that is no re-run opens its cases with its outcome
        (``_case_openings``)."""
        desk = self.deps.escalations
        if desk is None or grant is None:
            return
        if _disclosed_under(grant, outcomes):
            await desk.rerun_completed(grant, exchange_id, trace)
        elif not stepped and (ignored := _decision_ignored(grant, outcomes)) is not None:  # for its deciders
            await desk.rerun_not_applied(grant, exchange_id, ignored.outcome, _holder_reason(ignored), trace)

    async def _case_openings(self, attempt: _Attempt, outcomes: list[TargetOutcome]) -> list[CaseOpening]:
        """A case for each escalated or refused target (issue 6), prepared to commit with the outcome row
        (``_store_outcome``), which cites it: ``escalation_id`` is set on the target now.

        Not for a target the policy applied a re-run's decision to: its case exists, and a holder refusing under
        the decision is a step of that case (``_escalate``). A re-run whose decision the policy did not apply (it
        was made for another request) is answered as any request is, and so is its escalation or refusal: it
        opens a case. It opened none, as no re-run did, so the target was ``escalated`` with no case — and a
        requester cannot object to an escalation: a dispute nobody would ever be asked to decide."""
        desk = self.deps.escalations
        if desk is None:
            return []
        openings = []
        for outcome in outcomes:
            if outcome.outcome in _ESCALATING and not outcome.escalation_decision_applied:
                opening = await desk.case_opening(attempt.principal, attempt.body, attempt.exchange_id,
                                                  attempt.request_fingerprint, outcome, attempt.trace)
                outcome.escalation_id = opening.case_id
                openings.append(opening)
        return openings

    async def _serve_target(self, principal: Principal, body: ExchangeRequest, exchange_id: str, target: _Target,
                            decision: Decision, subjects: list[str], grant: RerunGrant | None = None,
                            logged: dict[str, str] | None = None) -> tuple[TargetOutcome, list[dict[str, Any]]]:
        reasons = [Reason(code=r.code, message=r.message, category=r.category) for r in decision.reasons]
        outcome = TargetOutcome(holder=target.organisation, system=target.system, outcome=Outcome(decision.outcome),
                                reasons=reasons, permitted_categories=decision.permitted_categories,
                                removed_categories=decision.removed_categories, hit_only=decision.hit_only,
                                obligations=Obligations(**decision.obligations.model_dump())
                                if decision.obligations else None,
                                escalation_decision_applied=decision.escalation_decision is not None)
        if not decision.allow:
            return outcome, []
        handed: list[dict[str, Any]] = []  # what already reached the holder, logged whatever follows
        if body.provide:  # until the holders' answers are logged with it, the attempt's ending logs it
            self._provisions.setdefault(exchange_id, []).append(handed)
        try:
            return await self._ask_holder(outcome, principal, body, exchange_id, target, decision, subjects, grant,
                                          logged, handed)
        except Exception as exc:
            # Fail closed, and audited: a defect, the database failing or any refusal of the gateway's own while
            # asking or reading this holder discloses nothing from it, logs what it was handed and the failure
            # next to its decision, and leaves the other holders' answers standing. Nothing escapes to the
            # caller's gather either: the request is logged ahead, so every holder call ends inside it.
            log.error("holder_call_failed", holder=target.organisation, exchange_id=exchange_id,
                      error_type=type(exc).__name__)
            return outcome, [*handed, _unavailable(
                outcome, decision, _GATEWAY_ERROR, "the gateway failed while asking this holder; nothing of its "
                "answer was disclosed", error_type=type(exc).__name__)]

    async def _ask_holder(self, outcome: TargetOutcome, principal: Principal, body: ExchangeRequest,
                          exchange_id: str, target: _Target, decision: Decision, subjects: list[str],
                          grant: RerunGrant | None, logged: dict[str, str] | None, handed: list[dict[str, Any]]
                          ) -> tuple[TargetOutcome, list[dict[str, Any]]]:
        """An allowed target: ask its holder for the permitted categories only, keep what it may disclose.
        The disclosure of records the requester provided goes into ``handed`` as soon as the holder has them."""
        connector = self.deps.connectors.get(target.system) if target.system else None
        if connector is None:
            return outcome, [_unavailable(outcome, decision, "holder-not-connected",
                                          f"no connector is configured for `{target.system or target.organisation}`")]
        logged = logged or {s: s for s in subjects}
        matched = self._matched.get(exchange_id)
        early = None if matched else self._early.take(exchange_id, target.organisation)
        theirs = matched.for_holder() if matched else await early if early else await self._translated(
            self._for_holder, subjects, principal, body.partnership, target.organisation, subjects)
        forward: dict[str, str] = {}
        for holders, requesters in theirs.items():  # a provided record goes in the holder's current pseudonym
            forward.setdefault(requesters, holders)
        # Asked in parts when the pseudonyms of every key version do not fit one query (see ``parts``); the
        # current version's pseudonyms, and with them the provided records, are in the first.
        parts = in_parts(list(theirs))
        request_ids = part_request_ids(f"{exchange_id}:{target.organisation}", len(parts))
        if len(parts) > 1:
            log.info("holder_asked_in_parts", holder=target.organisation, exchange_id=exchange_id,
                     parts=len(parts), subjects=len(subjects), pseudonyms=len(theirs))
        statements: list[str | None] = [None] * len(parts)
        if grant is not None and decision.escalation_decision == grant.decision_id and target.system:
            statements = [grant.sign_for_holder(target.system, request_id, decision.permitted_categories)
                          for request_id in request_ids]  # a decision is bound to each part's request id
        asked = zip(parts, request_ids, statements, strict=True)
        if decision.hit_only:
            discoveries = [HolderDiscovery(
                request_id=request_id, partnership=body.partnership, purpose=body.purpose, subjects=part,
                categories=decision.permitted_categories, minors_allowed=self._minors_allowed(body),
                escalation_decision=statement) for part, request_id, statement in asked]
            found = await asked_together([connector.discover(d) for d in discoveries])
            failed = failure_of(found)
            if isinstance(failed, ConnectorError):
                return outcome, [_holder_failed(outcome, decision, failed)]
            if failed is not None:
                raise failed
            discovered = [a for a in found if not isinstance(a, Exception)]
            refused = next((a for a in discovered if a.status == "refused"), None)
            if refused is not None:  # neither hit nor no-hit: see Holder.discover
                return outcome, [_refused(outcome, decision, refused.refusal_reason)]
            outcome.hit, unasked = _hit([(a.hits, part) for a, part in zip(discovered, parts, strict=True)],
                                        target.organisation, exchange_id)
            named = matched is not None or self._pseudonymous(subjects)  # references are never logged as one
            return outcome, _hit_only_disclosures(target.organisation, decision, outcome.hit,
                                                  [logged[s] for s in subjects] if named else [], unasked)
        # only a query hands the holder what the requester provides (a hit-only question, above, hands nothing)
        provided_fields = await self._provided_fields(principal, body, target.organisation)
        provided = [HolderRecord(record_id=f"{exchange_id}:provided:{n}", record_type="provided",
                                 subject=forward.get(r.subject, r.subject), category=r.category, fields=fields)
                    for n, (r, fields) in enumerate(zip(body.provide, provided_fields, strict=True))]
        queries = [HolderQuery(
            request_id=request_id, partnership=body.partnership, purpose=body.purpose,
            requester_organisation=principal.organisation, categories=decision.permitted_categories,
            subjects=part, escalation_decision=statement, minors_allowed=self._minors_allowed(body),
            related_subjects_as_pseudonyms=matched is not None,  # asked by its references: see the protocol
            provided=provided if n == 0 else []) for n, (part, request_id, statement) in enumerate(asked)]
        try:
            results = await asked_together([connector.query(q) for q in queries])
        except BaseException:  # cut off (cancelled) after the first part, and the records, may have reached it
            handed += _provision(body, target.organisation, None, parts[0])
            raise
        handed += _provision(body, target.organisation, results[0], parts[0])  # the part that carried them
        failed = failure_of(results)
        if isinstance(failed, ConnectorError):
            return outcome, [*handed, _holder_failed(outcome, decision, failed)]
        if failed is not None:
            raise failed
        answers = [a for a in results if not isinstance(a, Exception)]
        events: list[dict[str, Any]] = list(handed)
        refusal = next((a for a in answers if a.status == "refused"), None)
        if refusal is not None:
            return outcome, [*events, _refused(outcome, decision, refusal.refusal_reason)]
        if any(_about_others_only(answer, set(part)) for answer, part in zip(answers, parts, strict=True)):
            # No answer to this question (any part's, as for a failure: see ``parts``): nothing of it disclosed,
            # and every record counted as over-shared in the holder's entry, as dropped records are.
            dropped = sum(len(answer.records) for answer in answers)
            log.warning("holder_overshared", holder=target.organisation, dropped_records=dropped,
                        unasked_subjects_only=True, exchange_id=exchange_id)
            event = _unavailable(outcome, decision, _UNASKED_SUBJECTS, "the holder answered only about subjects "
                                 "it was not asked about: no answer to this question; nothing of it was disclosed")
            return outcome, [*events, event | {"extra": {"dropped_overshared": dropped}}]
        permitted = set(decision.permitted_categories)
        kept = [r.model_copy(update={"subject": theirs[r.subject]})  # back in the requester's pseudonyms
                for answer, part in zip(answers, map(set, parts), strict=True) for r in answer.records
                if r.category in permitted and r.subject in part]  # a subject asked in another part: over-shared
        repeated = 0
        if len(theirs) > len(subjects):  # asked by pseudonyms of several key versions: a record may come twice
            once = _once(kept)
            kept, repeated = once, len(kept) - len(once)
        # Related subjects in the requester's pseudonyms, whatever the subjects asked about are: a holder asked by
        # references (opaque ones, or a follow-up's by match handle) may still name a related subject by its own
        # pseudonym, which is stable and linkable to its records, and must not reach the requester as it is.
        # A follow-up counts what is withheld of its records as the holder's over-sharing: asked by reference, it
        # was told to name related subjects by pseudonyms the gateway can translate, and by nothing else.
        untranslated = 0
        if kept and self.deps.pseudonyms is not None:
            kept, untranslated = await self._related_for_requester(principal, body.partnership, target.organisation,
                                                                   kept)
        # texts, numbers, record ids and types naming a reference or pseudonym of the holder's
        kept, withheld = _ids_without_pseudonyms(kept, f"{exchange_id}:{target.organisation}")
        if matched is not None:  # no reference of the holder's (the matched records', a related subject's) goes on
            kept, references = matched.scrubbed(kept)
            withheld += references + untranslated
        dropped = sum(len(answer.records) for answer in answers) - len(kept) - repeated
        if dropped or withheld:
            log.warning("holder_overshared", holder=target.organisation, dropped_records=dropped,
                        references_withheld=withheld, exchange_id=exchange_id)
        if matched is not None:  # every handle of a record gets its data (two subjects may hit one record)
            kept = matched.fanned_out(kept)
        outcome.records = [Record(record_id=r.record_id, record_type=r.record_type, subject=r.subject,
                                  category=r.category, fields=r.fields) for r in kept]
        for subject in subjects:
            mine = [r.model_dump() for r in kept if r.subject == subject]
            if not mine:
                continue
            digest = hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()
            events.append({"event_type": EventType.DISCLOSURE, "holder": target.organisation,
                           "data_subject": DataSubject(pseudonym=logged[subject]),
                           "categories": tuple(sorted({r["category"] for r in mine})), "payload_sha256": digest,
                           "obligations": decision.obligations.model_dump() if decision.obligations else None,
                           "extra": {"records": len(mine)}})
        if dropped or withheld or not events:
            over_shared = {"dropped_overshared": dropped} | ({"references_withheld": withheld} if withheld else {})
            events.append({"event_type": EventType.DISCLOSURE, "holder": target.organisation,
                           "categories": tuple(sorted({r.category for r in kept})),
                           "extra": {"records": len(kept)} | over_shared})
        return outcome, events

    # -- discovery -----------------------------------------------------------------------------
    async def discovery(self, principal: Principal, body: DiscoveryRequest, trace: Trace) -> DiscoveryResult:
        discovery_id = new_id()
        return await self._failing_closed(self._discovery(principal, body, trace, discovery_id),
                                          EventType.DISCOVERY_QUERIED, principal, body, trace, discovery_id)

    async def discovery_written_ahead(self, principal: Principal, body: DiscoveryRequest, targets: list[_Target],
                                      base: dict[str, Any], extra: dict[str, Any],
                                      decided: Callable[[list[Decision]], Awaitable[None]] | None = None
                                      ) -> tuple[list[Decision], list[Receipt]]:
        """Decide a discovery (plain or fuzzy) per holder and log it ahead — the query with ``extra`` and every
        decision — counted in rule 6's daily count in the same transaction, as an exchange is.

        ``decided`` is awaited with each set of decisions before anything is written: a refusal of the whole
        request that may only depend on the holders the policy lets the requester ask (fuzzy discovery's
        ``clk-key-mismatch``) raises there, with nothing logged.

        A discovery is a request of its system for its purpose like an exchange ("more than 200 requests per
        system per purpose per day"). Only read, the count let a system ask hit/no-hit without end (and probe
        a holder's records by repeating a fuzzy question with a filter changed bit by bit); counted in, the
        201st question of the day escalates. It is never given back: a logged discovery was asked.
        Decided with the count read just before; if the count crossed the limit meanwhile, nothing is written
        and the discovery is decided again (at most ``DECISION_ROUNDS`` times, then 503)."""
        day = self._day(principal, body.purpose)
        limit = _daily_limit(self.deps.register, body)
        request_fingerprint = fingerprint(principal, body)
        try:
            today = await self._requests_today(day, limit)
            decisions = await self._decide("discovery", body, principal, targets, today, request_fingerprint)
            for _ in range(DECISION_ROUNDS):
                if decided is not None:
                    await decided(decisions)
                events = [AuditEvent(
                    event_type=EventType.DISCOVERY_QUERIED, **base, categories=tuple(body.categories),
                    policy_version=decisions[0].policy_version, extra=extra)] + [
                    AuditEvent(event_type=EventType.POLICY_DECIDED, **base, holder=t.organisation,
                               decision=_AUDIT_DECISION[d.outcome], reasons=tuple(r.code for r in d.reasons),
                               categories=tuple(d.permitted_categories), policy_version=d.policy_version)
                    for t, d in zip(targets, decisions, strict=True)]
                try:
                    return decisions, await self._written_counting(events, day, today, limit)
                except repository.CountMoved as moved:  # nothing was written: decide with the count as it is
                    today = moved.count
                    decisions = await self._decide("discovery", body, principal, targets, today, request_fingerprint)
        except PolicyError as exc:
            await self._deny_all_on_policy_failure(exc, base, targets, EventType.DISCOVERY_QUERIED)
            raise
        raise ServiceUnavailable("the daily count kept moving while the discovery was decided; nothing was "
                                 "asked; try again", headers={"Retry-After": "1"})

    async def _discovery(self, principal: Principal, body: DiscoveryRequest, trace: Trace,
                         discovery_id: str) -> DiscoveryResult:
        register = self.deps.register
        _known_categories(register, body.categories, "requested categories")
        targets = _targets(register, body, "all", principal.organisation)
        base = _audit_base(principal, body, trace, discovery_id, register)
        subjects = [s.ref for s in body.subjects]
        if any(is_match_handle(s) for s in subjects):  # a handle is cited in an exchange, never asked about
            raise Unprocessable("match handles are for exchanges (`POST /v1/exchanges`), not for discovery")
        logged = await self._translated(self._logged, subjects, principal, body.partnership, subjects)
        indexed = None
        if self.deps.pseudonyms is not None and self._pseudonymous(subjects):  # the index answers, not holders
            indexed = await asyncio.to_thread(self.deps.pseudonyms.holders_of, body.partnership,
                                              sorted(set(logged.values())))
        decisions, receipts = await self.discovery_written_ahead(
            principal, body, targets, base, {"case_reference": body.case_reference,
                                             "subjects": [logged[s] for s in subjects]})
        self._logged_ahead.add(discovery_id)

        refusals: dict[str, str] = {}  # holder -> the code of its refusal
        # holder -> (reason code, type of the failure or None) of a holder that gave no answer: logged below as
        # ``holder.unavailable``, as in an exchange, so the log shows every holder asked and what came of it.
        # The failure's kind only: its text may carry the holder's own words (or a subject's reference).
        unavailable: dict[str, tuple[str, str | None]] = {}
        unasked: dict[str, int] = {}  # holder -> its hits for subjects nobody asked about (see ``_hit``)
        minors_allowed = self._minors_allowed(body)

        def refused(target: _Target, reason: str | None) -> DiscoveryTarget:
            """The holder's refusal, whether it said so itself or the index says it for it: the same answer
            and the same ``holder.refused`` audit event (below), for the whole request."""
            code = refusals[target.organisation] = _refusal_code(reason, target.organisation)
            return DiscoveryTarget(holder=target.organisation, outcome="refused-by-holder",
                                   reasons=[_refusal_reason(code)])

        def not_asked(target: _Target, code: str, message: str, error_type: str | None) -> DiscoveryTarget:
            """``holder-unavailable`` with the reason an exchange would give; its log entry is written below."""
            unavailable[target.organisation] = (code, error_type)
            return DiscoveryTarget(holder=target.organisation, outcome="holder-unavailable",
                                   reasons=[Reason(code=code, message=message)])

        async def ask(target: _Target, decision: Decision) -> DiscoveryTarget:
            # For a hit or no-hit: the requested categories the holder was not asked about, each with its reason
            # (an allowed-narrowed decision's), so that no one reads the answer as covering them.
            reasons = [Reason(code=r.code, message=r.message, category=r.category) for r in decision.reasons]
            if not decision.allow:
                return DiscoveryTarget(holder=target.organisation, reasons=reasons,
                                       outcome="escalated" if decision.escalate else "denied")
            if indexed is not None:
                holding = indexed.get(target.organisation)
                refusal = _index_refusal(holding, minors_allowed)
                if refusal is not None:
                    return refused(target, refusal)
                held = holding.categories & set(decision.permitted_categories) if holding else set()
                return DiscoveryTarget(holder=target.organisation, outcome="hit" if held else "no-hit",
                                       reasons=reasons)
            connector = self.deps.connectors.get(target.system) if target.system else None
            if connector is None:
                return not_asked(target, "holder-not-connected",
                                 f"no connector is configured for `{target.system or target.organisation}`", None)
            try:
                found = await connector.discover(HolderDiscovery(
                    request_id=f"{discovery_id}:{target.organisation}", partnership=body.partnership,
                    purpose=body.purpose, subjects=subjects, categories=decision.permitted_categories,
                    minors_allowed=minors_allowed))
            except ConnectorError as exc:
                log.info("holder_unavailable", holder=target.organisation, error_type=type(exc).__name__)
                return not_asked(target, _failure_code(exc), str(exc), type(exc).__name__)
            if found.status == "refused":  # the holder's autonomy: neither hit nor no-hit (Holder.discover)
                return refused(target, found.refusal_reason)
            hit, unasked[target.organisation] = _hit([(found.hits, subjects)], target.organisation, discovery_id)
            return DiscoveryTarget(holder=target.organisation, outcome="hit" if hit else "no-hit", reasons=reasons)

        async def ask_failing_closed(target: _Target, decision: Decision) -> DiscoveryTarget:
            try:
                return await ask(target, decision)
            except Exception as exc:  # as in exchange: any failure answers nothing for that holder, and is logged
                log.error("holder_call_failed", holder=target.organisation, exchange_id=discovery_id,
                          error_type=type(exc).__name__)
                return not_asked(target, _GATEWAY_ERROR, "the gateway failed while asking this holder; nothing of "
                                 "its answer is used", type(exc).__name__)

        answers = await served_together([ask_failing_closed(t, d)  # none outlives the discovery (``siblings``)
                                         for t, d in zip(targets, decisions, strict=True)])
        hits = [(a.holder, d) for a, d in zip(answers, decisions, strict=True) if a.outcome == "hit"]
        receipts += await self._ending(discovery_id, self._record([AuditEvent(
            event_type=EventType.DISCLOSURE, **base, holder=a.holder, categories=(),
            extra={"hit_only": True, "outcome": a.outcome} | _unasked_hits(unasked.get(a.holder, 0)))
            for a in answers if a.outcome in {"hit", "no-hit"}] + (
            _subject_hits(base, [logged[s] for s in subjects], hits) if indexed is not None else []) + [
            AuditEvent(**base | _refusal_event(a.holder, d, refusals[a.holder]))
            for a, d in zip(answers, decisions, strict=True) if a.holder in refusals] + [
            AuditEvent(**base | _unavailable_event(a.holder, d, *unavailable[a.holder]))
            for a, d in zip(answers, decisions, strict=True) if a.holder in unavailable]))
        result = DiscoveryResult(discovery_id=discovery_id, partnership=body.partnership, purpose=body.purpose,
                                 policy_version=decisions[0].policy_version, register_version=register.version,
                                 targets=answers,
                                 receipt=ReceiptView(exchange_id=discovery_id,
                                                     audit_indices=[r.index for r in receipts],
                                                     checkpoint=await self._checkpoint()))
        return result

    # -- storage, replay, review ---------------------------------------------------------------
    async def _checkpoint(self) -> str | None:
        """The latest signed checkpoint for receipts, re-read (and verified) at most once per
        CHECKPOINT_REFRESH_SECONDS. A receipt without one is still a receipt (its indices can be proven later
        through ``/v1/audit/checkpoint?covering=``), so any failure here leaves it out rather than failing the
        answer; but a checkpoint that does not verify against the log's key and tree is never handed out as
        the log's word, and is logged (the audit API reports and records it when it is asked for)."""
        if self._latest_checkpoint and time.monotonic() - self._latest_checkpoint[1] < CHECKPOINT_REFRESH_SECONDS:
            return self._latest_checkpoint[0]

        def read() -> str | None:
            audit_log = self.deps.audit_log
            try:
                audit_log.maybe_issue_checkpoint()
                stored = audit_log.checkpoint()
            except Exception:  # none yet, or the store unreadable: the receipt goes without one
                return None
            try:
                audit_log.check_checkpoint(stored)
            except Exception as exc:
                log.error("receipt_checkpoint_unverified", tree_size=stored.tree_size, error_type=type(exc).__name__)
                return None
            return stored.note

        note = await asyncio.to_thread(read)
        self._latest_checkpoint = (note, time.monotonic()) if note else None
        return note

    def _result(self, principal: Principal, body: ExchangeRequest, exchange_id: str, versions: tuple[str, str],
                targets: list[TargetOutcome], receipts: list[Receipt], checkpoint: str | None) -> ExchangeResult:
        register_version, policy_version = versions
        return ExchangeResult(
            exchange_id=exchange_id, created_at=self.deps.clock.now(), requester=principal.organisation,
            partnership=body.partnership, purpose=body.purpose, case_reference=body.case_reference,
            register_version=register_version, policy_version=policy_version, targets=targets,
            receipt=ReceiptView(exchange_id=exchange_id, audit_indices=[r.index for r in receipts],
                                checkpoint=checkpoint))

    def _outcome_row(self, attempt: _Attempt, result: ExchangeResult) -> dict[str, Any]:
        """The outcome row, durable before the answer (``GET`` and idempotent replays read it): written with
        the disclosures' audit entries when nothing follows them, else with the rows of concurrent requests
        in one transaction of its own.

        It keeps both fingerprints: ``request_sha256``, what the Idempotency-Key binds to (with the decision a
        re-run cites), and ``request_fingerprint``, the request alone, with the cited decision beside it: a
        case about this exchange's outcome binds to the request alone, as escalation decisions do
        (``EscalationService._request_fingerprint``)."""
        principal, body, idempotency_key = attempt.principal, attempt.body, attempt.idempotency_key
        outcome = result.model_dump(mode="json")
        records = {t["holder"]: t.pop("records") for t in outcome["targets"]}
        return {
            "id": result.exchange_id, "kind": "exchange", "created_at": result.created_at,
            "requester_org": principal.organisation, "requester_system": principal.subject,
            "partnership": body.partnership, "purpose": body.purpose, "case_reference": body.case_reference,
            "register_version": result.register_version, "policy_version": result.policy_version,
            "request_sha256": attempt.key_fingerprint, "request_fingerprint": attempt.request_fingerprint,
            "escalation_decision": attempt.grant.decision_id if attempt.grant else None,
            "idempotency_key": idempotency_key, "outcome": outcome,
            "sealed_records": self.deps.sealer.seal(result.exchange_id, records) if idempotency_key else None,
            "sealed_until": result.created_at + IDEMPOTENCY_WINDOW if idempotency_key else None}

    def _replay(self, principal: Principal, key: str, key_fingerprint: str) -> Answer | None:
        """The answer stored under this key, if any (409 if the key was used for another request).

        With its records while they are kept; without them once the window has passed, when they no longer
        open (the seal key was lost or replaced) or once the partnership or the requester's participation is
        retired (``_still_participates``), and then each target that disclosed says so
        (``records_withheld``): an empty ``records`` alone reads as "the holder had nothing". A seal that does
        not open is no reason to fail the retry: the outcome stands, and the first answer had the records."""
        stored = repository.find_by_idempotency_key(self.deps.sessions.kw["bind"], principal.subject, key)
        if stored is None:
            return None
        if stored.request_sha256 != key_fingerprint:
            raise Conflict(_DIFFERENT_REQUEST)
        records: dict[str, Any] = {}
        withheld: str | None = None
        if self._window_passed(stored):
            withheld = "expired"
        elif not self._still_participates(principal, stored.partnership):
            withheld = "retired"
        else:
            try:
                if stored.sealed_records is None:  # within the window they are always there: as unreadable
                    raise SealUnreadable(stored.id)
                records = self.deps.sealer.open(stored.id, stored.sealed_records)
            except SealUnreadable:
                log.warning("sealed_records_unreadable", exchange_id=stored.id)
                withheld = "unavailable"
        outcome = dict(stored.outcome)
        outcome["targets"] = [_withheld(t | {"records": records.get(t["holder"], [])}, withheld)
                              for t in outcome["targets"]]
        log.info("exchange_replayed", exchange_id=stored.id, records_withheld=withheld)
        return Answer(ExchangeResult.model_validate(outcome), replayed=True)

    def _still_participates(self, principal: Principal, partnership_id: str) -> bool:
        """Whether the partnership is active in the register now and the requesting system is listed for an active
        participant of it (as rule 1 asks of a new request). A retry hands the first answer's records over again:
        once the partnership or the participation is retired, it shares nothing, a retry included; the outcome
        stands, without the records."""
        partnership = self.deps.register.partnerships.get(partnership_id)
        participant = partnership.participant_of_system(principal.subject) if partnership else None
        return (partnership is not None and partnership.status == "active" and participant is not None
                and participant.status == "active")

    def _window_passed(self, stored: repository.StoredExchange) -> bool:
        """Whether the idempotency window of a keyed answer has passed (its records are then no longer kept)."""
        return stored.sealed_until is None or as_utc(stored.sealed_until) <= self.deps.clock.now()

    def get(self, principal: Principal, exchange_id: str) -> ExchangeResult:
        with transaction(self.deps.sessions) as session:
            stored = repository.get(session, exchange_id)
        if stored is None or stored.kind != "exchange":
            raise NotFound(f"no exchange `{exchange_id}`")
        own_system = principal.kind == "system" and principal.subject == stored.requester_system
        own_officer = (principal.kind == "person" and principal.organisation == stored.requester_org
                       and principal.roles & {"privacy-officer", "coordinating-privacy-officer"})
        if not (own_system or own_officer):
            # Same answer as for a missing exchange: others may not learn that it exists.
            raise NotFound(f"no exchange `{exchange_id}`")
        # Never the records again; but past a keyed answer's window, each target that disclosed says they are
        # gone (a retry would not get them either).
        expired = "expired" if stored.sealed_until is not None and self._window_passed(stored) else None
        outcome = dict(stored.outcome)
        outcome["targets"] = [_withheld(t | {"records": []}, expired) for t in outcome["targets"]]
        return ExchangeResult.model_validate(outcome)


def _withheld(target: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """A stored target with ``records_withheld`` set to ``reason`` if it disclosed records that this answer cannot
    give (an allowed holder that answers with data), else to null."""
    disclosing = target["outcome"] in _DISCLOSING and not target.get("hit_only")
    return target | {"records_withheld": reason if disclosing else None}


__all__ = ["Answer", "DecisionLost", "EscalationDesk", "ExchangeDeps", "ExchangeService", "Forbidden", "RerunGrant",
           "Trace", "decision_fingerprint", "fingerprint"]
