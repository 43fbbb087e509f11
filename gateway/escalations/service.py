"""The escalation workflow as the gateway runs it: permissions, audit entries, notifications, re-runs.

Every step is logged in the transaction that takes it (the audit writer runs the step as its entries'
companion, :class:`audit.writer.CompanionRow`): the entry names the case, the action, the tier and the state
it leads to, and it is durable exactly when the step is — a process that dies in between leaves neither, so
no entry ever claims a step that was not taken. A step refused by the database (a race lost: 409) writes
nothing; one that fails for a reason nobody foresaw (a defect) is logged as tried and not applied, and the
caller gets the failure. Motivations and comments stay in the case tables; the audit log holds their
SHA-256 only (free text may name people).

This service is also the exchange's ``EscalationDesk``: it opens a case when policy escalates or a holder
refuses, and turns an allow decision into a ``RerunGrant`` for the requester's re-run.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from audit import AsyncAuditWriter, AuditError, AuditEvent, CompanionRow, EventType, PersonalDataError
from audit.events import CASE_REQUESTER, LEGAL_GAP_ACTIVITY, ProcessingActivity, Requester
from audit.events import Decision as AuditDecision
from connectors.holder_auth import DECISION_TYPE
from escalation import cases as case_store
from escalation import comments as comment_store
from escalation import legal_gaps as gap_store
from escalation.calendar import add_months, add_working_days, local_date
from escalation.cases import (
    Actor,
    Case,
    CaseNotFound,
    ConcurrentUpdate,
    EscalationError,
    FourEyesViolation,
    MotivationRequired,
)
from escalation.queries import ACTIVE_STATES, CaseFilter, list_cases, metrics, visible_case_ids
from escalation.states import MAX_TIER, Action, CaseState, InvalidTransition, State
from gateway.auth import repository as accounts
from gateway.auth.principal import Principal
from gateway.auth.tokens import AccessTokenService
from gateway.client.models import ExchangeRequest, Outcome, TargetOutcome
from gateway.clock import Clock, as_utc
from gateway.db.engine import transaction
from gateway.errors import Conflict, Forbidden, GatewayError, NotFound, ServiceUnavailable, Unprocessable
from gateway.escalations import access
from gateway.escalations.deadlines import FINAL_DEADLINE_AUDIENCE as FINAL_DEADLINE_AUDIENCE  # re-exported
from gateway.escalations.deadlines import SCHEDULER, DeadlineScan
from gateway.escalations.deadlines import ScanResult as ScanResult  # re-exported: the scan's answer
from gateway.escalations.gap_export import gap_view, gaps_csv
from gateway.escalations.models import (
    CaseDetail,
    CasePage,
    CaseView,
    Comment,
    CommentView,
    Decide,
    FeedItem,
    FlagLegalGap,
    GapStatusChange,
    HistoryItem,
    LegalGapView,
    OpenCase,
    Review,
    Withdraw,
)
from gateway.escalations.notifications import WebhookNotifier
from gateway.exchange import repository as exchanges
from gateway.exchange.lease import CLAIM_ABANDONED_AFTER
from gateway.exchange.service import (
    CaseOpening,
    CaseStepNotTaken,
    DecisionLost,
    RerunGrant,
    RerunStep,
    Trace,
    decision_fingerprint,
)
from gateway.policy.model import EscalationDecisionInput
from gateway.register.model import Register

log = structlog.get_logger("gateway.escalations")
T = TypeVar("T")
DEFAULT_DEADLINES = {1: 5, 2: 10, 3: 20}
AWAITING_STATES = frozenset(ACTIVE_STATES) | {State.DECIDED.value}
"""The states in which a case can await an organisation (the feed): a decision, or a re-run of an allow."""
STATEMENT_TTL_SECONDS = 300
EXCHANGE = Requester(org="wgs-gateway", system="exchange")
"""Who takes the steps a re-run brings about (closing the case whose decision it used, a holder not following
the decision): the gateway's exchange, not the scheduler they used to be named as (no timer took them), nor
the requesting system (it asked for the re-run, not for the step: the re-run's own entries name it, and the
step's ``rerun_exchange_id`` and trace lead to them). Kept in the gateway's organisation, as the scheduler
is, so who may read the entry (:func:`audit.review.scope_condition`: the case's parties) is unchanged."""
_OBJECTIONS = {  # who objects to which outcome of an exchange target
    "requester-objection": {Outcome.DENIED.value, Outcome.ALLOWED_NARROWED.value},
    "holder-objection": {Outcome.ALLOWED.value, Outcome.ALLOWED_NARROWED.value},
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _failure_kind(exc: Exception) -> str:
    """What a "not applied" entry says about a failure: its kind only (an exception's text may name a person)."""
    return "conflict" if isinstance(exc, Conflict) else type(exc).__name__.lower()


def _refusal(exc: Exception) -> GatewayError | None:
    """The answer to a step the workflow refused (``exc``), or None if ``exc`` is no refusal (a defect, or a
    failure of the database)."""
    if isinstance(exc, GatewayError):
        return exc
    # The reason's code and values go along, for the console to word (gateway.errors)
    named: dict[str, Any] = {"code": exc.code, "values": getattr(exc, "values", None)} if isinstance(
        exc, EscalationError | InvalidTransition) else {}
    if isinstance(exc, CaseNotFound | gap_store.GapNotFound):
        return NotFound(str(exc), **named)
    if isinstance(exc, ConcurrentUpdate | InvalidTransition | gap_store.InvalidGapTransition
                  | gap_store.GapResolved | comment_store.CaseEnded):
        return Conflict(str(exc), **named)
    if isinstance(exc, FourEyesViolation):
        return Forbidden(str(exc), **named)
    if isinstance(exc, MotivationRequired | EscalationError):
        return Unprocessable(str(exc), **named)
    return None


def _expect(case: Case, version: int) -> None:
    """A step based on another version of the case is refused before anything is logged or tried."""
    if case.version != version:
        raise ConcurrentUpdate(f"case `{case.id}` is at version {case.version}, not {version}")


class _Defect(Exception):
    """A step failed for a reason no refusal explains; ``cause`` is what was raised (``_logged``)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def _last_run(work: Callable[[Session], T]) -> tuple[Callable[[Connection], None], list[T]]:
    """``work`` as a precondition in the audit log's transaction (:func:`_in_session`), and the list that holds
    what its last run returned. The writer may run a precondition more than once (a batch begun again with a
    savepoint per caller, then each caller alone), the earlier runs rolled back: only the last one counts."""
    results: list[T] = []

    def precondition(connection: Connection) -> None:
        results[:] = [_in_session(connection, work)]

    return precondition, results


def _in_session(connection: Connection, work: Callable[[Session], T]) -> T:
    """``work`` in a session on ``connection``, inside the audit log's transaction (a companion's precondition).

    The log opens its transaction on the driver, unseen by SQLAlchemy; a session bound to a connection outside
    a transaction would begin its own and roll it back when closed — the driver's, entries and all. So
    SQLAlchemy is told of it first (no statement is sent: both drivers begin implicitly), and the session joins
    it and never ends it: the log commits."""
    if not connection.in_transaction():
        connection.begin()
    with Session(bind=connection, join_transaction_mode="rollback_only") as session:
        return work(session)  # Core statements only: nothing for the session to flush


def _actor(principal: Principal) -> Actor:
    return Actor(principal.organisation, principal.subject)


@dataclass(frozen=True)
class _Step:
    """One predicted step: what the audit entry says before the change is applied."""

    action: str
    after: CaseState | None = None
    decision: AuditDecision | None = None
    categories: tuple[str, ...] = ()
    extra: dict[str, Any] | None = None


class EscalationService:
    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock, register: Register,
                 writer: AsyncAuditWriter, tokens: AccessTokenService, notifier: WebhookNotifier,
                 decision_valid_days: int) -> None:
        self.sessions = sessions
        self.clock = clock
        self.register = register
        self.writer = writer
        self.tokens = tokens
        self.notifier = notifier
        self.valid_for = timedelta(days=decision_valid_days)
        self._deadline_scan = DeadlineScan(self)

    # -- plumbing ------------------------------------------------------------------------------
    def deadlines(self, partnership: str) -> dict[int, int]:
        """Working days per tier, from the partnership's register entry."""
        found = self.register.partnerships.get(partnership)
        if found is None:
            return DEFAULT_DEADLINES
        return {t.tier: t.deadline_working_days for t in found.escalation.tiers}

    async def _db(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with transaction(self.sessions) as session:
                return work(session)

        try:
            return await asyncio.to_thread(run)
        except Exception as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc

    async def _logged(self, events: list[AuditEvent], apply: Callable[[Session], T]) -> T:
        """Write ``events`` and apply the step they describe in one transaction: both or neither.

        ``apply`` runs on the audit writer's thread inside the transaction that appends the entries, so a
        crash, a lost race or a failed commit cannot leave an entry for a step that was not taken (nor a step
        without its entry). It may run more than once (:func:`_last_run`). Raises the refusal (4xx) of a step
        the database refused, with nothing written; 422 for an entry the log's guard refuses (a value the caller
        typed that looks like personal data); ``_Defect`` for a failure no refusal explains (nothing written
        either); 503 when the log could not be written."""
        within, applied = _last_run(apply)
        try:
            await self.writer.record(events, CompanionRow(None, None, within))
        except PersonalDataError as exc:  # the caller's input, refused before anything was written: a 422
            # An attachment reference is what the commenter typed (a document number of nine digits passes the
            # eleven-test one time in eleven): the log's guard refusing it is no failure of the log, and a 503
            # would tell the person to retry what can never succeed — and page the operators for it.
            raise Unprocessable("a reference in the request looks like personal data (a BSN, an IBAN or an "
                                "e-mail address); use one that identifies no one; nothing was changed",
                                code="personal-data-reference") from exc
        except AuditError as exc:
            cause = exc.__cause__
            if isinstance(cause, Exception) and not isinstance(cause, AuditError | SQLAlchemyError):
                refusal = _refusal(cause)
                if refusal is not None:
                    raise refusal from cause
                raise _Defect(cause) from exc
            log.error("audit_write_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("the audit log could not be written; nothing was changed") from exc
        except Exception as exc:  # the guard refused an entry, or the writer is not running: no entry, no step
            log.error("audit_write_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("the audit log could not be written; nothing was changed") from exc
        return applied[0]

    async def _record(self, events: list[AuditEvent]) -> None:
        try:
            await self.writer.record(events)
        except (AuditError, Exception) as exc:  # no entry, no step
            log.error("audit_write_failed", error_type=type(exc).__name__)
            raise ServiceUnavailable("the audit log could not be written; nothing was changed") from exc

    async def _requester(self, principal: Principal | None) -> Requester:
        """Who takes a step, as its audit entry names them: the organisation with its system, or with the
        person's account id — never the username, as in the console's own entries (:mod:`gateway.console.
        actions`). A username is what people choose to type: an e-mail address, which the log's guard refuses
        (so every step of that officer failed with 503), or a name, which a log that can never be cleaned
        must not hold. The account id is a reference their organisation can resolve; an account that is gone
        is named by its organisation alone.

        The id the request's token check read (``principal.account_id``) when there is one: the account was
        read moments ago to check the token, and a second read per action (per step) cost a query each. Read
        here only for a principal that did not come from that check."""
        if principal is None:
            return SCHEDULER
        if principal.kind != "person":
            return Requester(org=principal.organisation, system=principal.subject)
        if principal.account_id is not None:
            return Requester(org=principal.organisation, user=principal.account_id)

        def account_id(session: Session) -> str | None:
            found = accounts.get_account(session, principal.subject)
            return found.id if found is not None else None

        return Requester(org=principal.organisation, user=await self._db(account_id))

    def _event(self, case: Case, step: _Step, requester: Requester, trace: Trace | None, *,
               status: str = "ok", motivation: str | None = None) -> AuditEvent:
        after = step.after
        extra: dict[str, Any] = {"case_id": case.id, "action": step.action, "trigger": case.trigger,
                                 CASE_REQUESTER: case.requester_org, "tier_before": case.tier,
                                 "state_before": case.state.value,
                                 "tier": after.tier if after else case.tier,
                                 "state": after.state.value if after else case.state.value}
        if motivation:
            extra["motivation_sha256"] = _sha256(motivation)
        extra |= step.extra or {}
        return AuditEvent(
            event_type=EventType.ESCALATION_STEP, trace_id=trace.trace_id if trace else secrets.token_hex(16),
            span_id=trace.span_id if trace else secrets.token_hex(8), status=status,
            processing_activity=ProcessingActivity(partnership=case.partnership, purpose=case.purpose),
            requester=requester, holder=case.holder_org, decision=step.decision, reasons=tuple(case.policy_reasons),
            categories=step.categories, register_version=case.register_version or None,
            exchange_id=case.exchange_id, extra=extra)

    async def _perform(self, case_id: str, principal: Principal | None, trace: Trace | None,
                       plan: Callable[[Session, Case], list[_Step]],
                       apply: Callable[[Session], Case], motivation: str | None = None,
                       notify: Callable[[Case], None] | None = None, by: Requester | None = None) -> Case:
        """Check and predict (read), then log and apply together with the optimistic lock (``_applied``); then
        tell those concerned (``notify``, by default the parties and whoever must act next). ``by`` names the
        gateway's part that takes a step nobody asked for (``EXCHANGE``); without it, ``principal``'s
        (``_requester``: the scheduler when None)."""

        def predict(session: Session) -> tuple[Case, list[_Step]]:
            case = case_store.get_case(session, case_id)
            return case, plan(session, case)

        case, steps = await self._db(predict)
        requester = by or await self._requester(principal)
        events = [self._event(case, s, requester, trace, motivation=motivation) for s in steps]
        changed = await self._applied(case, events, apply, principal, trace, by)
        (notify or self._notify)(changed)
        return changed

    async def _applied(self, case: Case, events: list[AuditEvent], apply: Callable[[Session], T],
                       principal: Principal | None, trace: Trace | None, by: Requester | None = None) -> T:
        """Log the steps ``events`` describe and apply them, in one transaction (``_logged``: all or none take
        effect, with their entries). A defect is logged as tried and not applied (by whoever tried: ``by``,
        else ``principal``), then raised."""
        try:
            return await self._logged(events, apply)
        except _Defect as defect:
            actions = [str(event.extra.get("action")) for event in events]
            await self._not_applied(case, actions, defect.cause, principal, trace, by)
            raise defect.cause from None

    async def _not_applied(self, case: Case, actions: list[str], exc: Exception, principal: Principal | None,
                           trace: Trace | None, by: Requester | None = None) -> None:
        """Steps were tried and failed for a reason no refusal explains (a defect): say so of every one of
        them, naming the kind of failure only (an exception's text may name a person). Nothing of them was
        written (``_logged``), so these entries are the only trace of the attempt — as for any unexpected
        failure, which fails closed and is audited.

        Every one, not the last: a decision is logged as up to three steps (start_review, decide, close)."""
        kind = _failure_kind(exc)
        requester = by or await self._requester(principal)
        await self._record([self._event(case, _Step(action, extra={"not_applied": kind}), requester, trace,
                                        status="error") for action in actions])

    def _notify(self, case: Case) -> None:
        partnership = self.register.partnerships.get(case.partnership)
        recipients = {case.requester_org, case.holder_org}
        if case.active and partnership is not None:
            recipients |= access.tier_deciders(partnership, case.tier, case)
        self.notifier.notify(recipients, {"event": "escalation.step", "case_id": case.id, "state": case.state.value,
                                          "tier": case.tier, "deadline": case.deadline.isoformat(),
                                          "partnership": case.partnership, "version": case.version})

    def _visible(self, principal: Principal, case: Case) -> Case:
        if not access.case_scope(principal, self.register).allows(case):
            raise NotFound(f"no escalation case `{case.id}`")  # others may not learn that it exists
        return case

    def _view(self, principal: Principal, case: Case) -> CaseView:
        partnership = self.register.partnerships.get(case.partnership)
        deciders = sorted(access.tier_deciders(partnership, case.tier, case)) if partnership else []
        return CaseView(
            id=case.id, partnership=case.partnership, purpose=case.purpose, requester_org=case.requester_org,
            holder_org=case.holder_org, trigger=case.trigger, state=case.state.value, tier=case.tier,
            version=case.version, deadline=case.deadline, overdue=case.active and case.deadline < self.today(),
            opened_at=as_utc(case.opened_at) if case.opened_at else None,
            updated_at=as_utc(case.updated_at) if case.updated_at else None, exchange_id=case.exchange_id,
            register_version=case.register_version, policy_reasons=case.policy_reasons,
            requested_categories=case.requested_categories,
            pending_votes=[{"organisation": v["organisation"], "outcome": v["outcome"],
                            "permitted_categories": v["permitted_categories"]} for v in case.votes],
            decision=case.decision, legal_gap=case.legal_gap, deciders=deciders,
            may_decide=case.active and access.may_decide(principal, case, self.register)
            and case_store.may_vote(case, principal.organisation) and not self._lapsed(case))

    @property
    def timezone(self) -> str:
        """The register's office-hours timezone: working-day deadlines run by the calendar there."""
        return self.register.office_hours.timezone

    def day_of(self, moment: datetime) -> date:
        """The day ``moment`` is in the register's timezone (the clock is UTC; a Dutch deadline is not)."""
        return local_date(moment, self.timezone)

    def today(self) -> date:
        """The day every deadline and overdue judgement starts from: API, console, scheduler and CLI alike."""
        return self.day_of(self.clock.now())

    def _act(self, session: Session, case_id: str, expected_version: int, action: Action, actor: Actor | None, *,
             now: datetime | None = None, motivation: str | None = None) -> Case:
        """``case_store.act`` with this gateway's deadlines and calendar (the register's), so no step counts a
        new tier's deadline by any other."""
        return case_store.act(session, case_id, expected_version, action, actor, now=now or self.clock.now(),
                              deadlines=self.deadlines, timezone=self.timezone, motivation=motivation)

    # -- opening -------------------------------------------------------------------------------
    async def case_opening(self, principal: Principal, body: ExchangeRequest, exchange_id: str,
                           request_fingerprint: str, target: TargetOutcome, trace: Trace) -> CaseOpening:
        """The case the gateway opens itself (policy escalated, or the holder refused what policy allowed),
        prepared to commit with the exchange's outcome row: its id (for the outcome to cite), its ``opened``
        entry, and the case row, written in that transaction (``CaseOpening``).

        Why not a transaction of its own, as it was: the case was opened before the outcome was stored, so an
        exchange that failed in between (the outcome's commit failed, the audit log was down, the gateway died)
        answered 5xx and left an open case in the deciders' queue for a request whose outcome, and case id,
        the requester never saw — and its retry opened a second case for the same request. With the outcome
        the case is both or neither: a request that failed is accounted for by its own entries (the decision
        or refusal that escalated, then ``request.failed``), and its retry opens the one case."""
        trigger = "policy-escalated" if target.outcome is Outcome.ESCALATED else "holder-refused"
        case_id = case_store.new_case_id()
        now = self.clock.now()
        reasons = [r.code for r in target.reasons]
        requested = self._requested(body, target)
        draft = Case(case_id, body.partnership, body.purpose, principal.organisation, target.holder, trigger,
                     State.OPEN, 1, 0, add_working_days(self.day_of(now), self.deadlines(body.partnership)[1]), None,
                     reasons, exchange_id, request_fingerprint, self.register.version)
        opened = _Step("opened", CaseState(State.OPEN, 1, 1))
        entry = self._event(draft, opened, await self._requester(principal), trace)
        open_case, cases = _last_run(lambda s: case_store.open_case(
            s, partnership=body.partnership, purpose=body.purpose, requester_org=principal.organisation,
            holder_org=target.holder, trigger=trigger, register_version=self.register.version,
            policy_reasons=reasons, deadlines=self.deadlines, now=now, exchange_id=exchange_id,
            request_fingerprint=request_fingerprint, requested_categories=requested, case_id=case_id,
            timezone=self.timezone))

        def opened_now() -> None:
            log.info("escalation_opened", case_id=case_id, trigger=trigger, holder=target.holder)
            self._notify(cases[-1])

        return CaseOpening(case_id=case_id, events=[entry], apply=open_case, taken=opened_now)

    def _supplied(self, partnership_id: str, purpose_id: str, holder: str) -> set[str]:
        """The categories ``holder`` supplies for the purpose, by its role in the register (empty if unknown)."""
        partnership = self.register.partnerships.get(partnership_id)
        participant = partnership.participant_of_organisation(holder) if partnership else None
        purpose = partnership.purposes.get(purpose_id) if partnership else None
        return set(purpose.supplies.get(participant.role, [])) if purpose and participant else set()

    def _requested(self, body: ExchangeRequest, target: TargetOutcome) -> list[str]:
        """What the dispute is about: the requested categories this holder supplies for the purpose (an
        escalated decision names no permitted categories, so the register says which were in play)."""
        supplied = self._supplied(body.partnership, body.purpose, target.holder)
        return sorted((set(body.categories) & supplied) | set(target.permitted_categories)
                      | set(target.removed_categories)) or sorted(set(body.categories))

    async def open_objection(self, principal: Principal, body: OpenCase, trace: Trace) -> CaseDetail:
        """A party objects to one target's outcome: the requester to a denial or narrowing, the holder to
        a disclosure. The exchange must exist and the caller's organisation must be that party."""
        if not (access.is_worker(principal) or principal.kind == "system"):
            raise Forbidden("only privacy officers, administrators or the requesting system open a case")
        stored = await self._db(lambda s: exchanges.get(s, body.exchange_id))
        target = None
        if stored is not None and stored.kind == "exchange":
            target = next((t for t in stored.outcome["targets"] if t["holder"] == body.holder), None)
        if (stored is None or target is None or principal.organisation not in {stored.requester_org, body.holder}
                or (principal.kind == "system"  # only where the register lists the system (``case_scope``)
                    and stored.partnership not in access.system_partnerships(principal, self.register))):
            raise NotFound(f"no exchange `{body.exchange_id}` with holder `{body.holder}` of yours")
        trigger = "requester-objection" if principal.organisation == stored.requester_org else "holder-objection"
        if trigger == "holder-objection" and not access.may_object_as_holder(principal):
            raise Forbidden("a holder's objection is made by its privacy officer")
        if target["outcome"] not in _OBJECTIONS[trigger]:
            raise Unprocessable(f"a {trigger.replace('-', ' ')} is against "
                                f"{' or '.join(sorted(_OBJECTIONS[trigger]))}, not `{target['outcome']}`")
        # Checked here so that a plain repeat logs nothing; the database refuses the one that races this check.
        existing = await self._db(lambda s: list_cases(s, access.case_scope(principal, self.register),
                                                       CaseFilter(organisation=body.holder), limit=1000))
        if any(c.exchange_id == body.exchange_id and c.holder_org == body.holder and c.active for c in existing):
            raise Conflict("an open case about this exchange and holder exists already")
        now = self.clock.now()
        case_id = case_store.new_case_id()
        requested = self._objected(stored.partnership, stored.purpose, body, target)
        reasons = [r["code"] for r in target.get("reasons", [])]
        request_fingerprint = await self._db(lambda s: self._request_fingerprint(s, stored))
        draft = Case(case_id, stored.partnership, stored.purpose, stored.requester_org, body.holder, trigger,
                     State.OPEN, 1, 0, add_working_days(self.day_of(now), self.deadlines(stored.partnership)[1]), None,
                     reasons, stored.id, request_fingerprint, stored.register_version)
        opened = _Step("opened", CaseState(State.OPEN, 1, 1))
        entry = self._event(draft, opened, await self._requester(principal), trace, motivation=body.motivation)
        case = await self._applied(draft, [entry], lambda s: case_store.open_case(
            s, partnership=stored.partnership, purpose=stored.purpose, requester_org=stored.requester_org,
            holder_org=body.holder, trigger=trigger, register_version=stored.register_version,
            policy_reasons=reasons, deadlines=self.deadlines, now=now, exchange_id=stored.id,
            request_fingerprint=request_fingerprint, opened_by=_actor(principal), motivation=body.motivation,
            requested_categories=requested, case_id=case_id, timezone=self.timezone), principal,
            trace)
        self._notify(case)
        return await self.detail(principal, case.id)

    @staticmethod
    def _request_fingerprint(session: Session, stored: exchanges.StoredExchange) -> str:
        """The fingerprint of the request the exchange ``stored`` ran, which an allow on the case is bound to.

        An exchange row's ``request_sha256`` is what its Idempotency-Key binds to: for a re-run, the request
        *and* the decision it cited (``keyed_fingerprint``). A case copying that was a dead end: a decision
        binds to the request without the citation (``fingerprint``), so the policy never matched a later
        re-run to an allow on it. The case gets the request alone, so an allow is honoured by re-running the
        same request, citing the new decision.

        Why an objection to a re-run's outcome is taken, and not refused as contesting a binding decision: the
        gateway treats no decision as the last word elsewhere either — only an *active* case about an
        exchange and holder bars another, so an outcome whose case was decided and closed can be objected to
        again — and a re-run's other targets are outcomes like any other exchange's. Which tier
        hears the new case is the workflow's rule for every objection (tier 1), not this one's.

        Rows from migration 0031 on store the request alone (``request_fingerprint``) beside the decision a
        re-run cited: that is the answer, read with the row. It holds also for a re-run that cited a decision
        made for another request (the policy ignored the citation), which the rows before could not tell.
        A row from before stores the keyed fingerprint only; a re-run's is recognised, as it was, by its
        citing a decision of one of the requester's cases for that case's request (``decision_fingerprint``,
        tried against every decided case of the requester in that partnership and purpose), and any other
        keeps its own fingerprint."""
        if stored.request_fingerprint is not None:
            return stored.request_fingerprint
        for request, decision_id in case_store.decided_requests(
                session, requester_org=stored.requester_org, partnership=stored.partnership, purpose=stored.purpose):
            if decision_fingerprint(request, decision_id) == stored.request_sha256:
                return request
        return stored.request_sha256

    def _objected(self, partnership_id: str, purpose_id: str, body: OpenCase, target: dict[str, Any]) -> list[str]:
        """What an objection is about: the categories the outcome permitted or removed, plus those the
        objector names — which must be ones this holder supplies for the purpose (a denial keeps no list)."""
        supplied = self._supplied(partnership_id, purpose_id, body.holder)
        known = set(target.get("permitted_categories", [])) | set(target.get("removed_categories", []))
        unknown = sorted(set(body.categories) - supplied - known)
        if unknown:
            raise Unprocessable(f"`{body.holder}` does not supply {', '.join(unknown)} for `{purpose_id}`")
        if target.get("outcome") == Outcome.DENIED.value:  # nothing was weighed per category: all it supplies
            known |= supplied
        return sorted(known | set(body.categories))

    # -- reading -------------------------------------------------------------------------------
    async def cases(self, principal: Principal, filters: CaseFilter, *, limit: int, after: str | None) -> CasePage:
        scope = access.case_scope(principal, self.register)
        found = await self._db(lambda s: list_cases(s, scope, filters, limit=limit + 1, after=after))
        page = found[:limit]
        return CasePage(cases=[self._view(principal, c) for c in page],
                        next_cursor=page[-1].id if len(found) > limit else None)

    async def detail(self, principal: Principal, case_id: str) -> CaseDetail:
        def read(session: Session) -> tuple[Case, list[dict[str, Any]], list[comment_store.Comment]]:
            case = self._visible(principal, case_store.get_case(session, case_id))
            return case, case_store.history(session, case_id), comment_store.comments(session, case_id)

        case, events, notes = await self._db(read)
        return CaseDetail(
            **self._view(principal, case).model_dump(),
            history=[HistoryItem(at=as_utc(e["at"]), action=e["action"], actor_org=e["actor_org"],
                                 actor_user=e["actor_user"], tier=e["tier"], state=e["state"],
                                 motivation=e["motivation"]) for e in events],
            comments=[CommentView(id=c.id, at=as_utc(c.at), author_org=c.author_org, author=c.author, text=c.text,
                                  attachments=c.attachments) for c in notes])

    async def feed(self, principal: Principal) -> list[FeedItem]:
        """Cases awaiting the caller's organisation, most urgent first: a decision at the current tier (by when
        its deadline runs out), or an allow decision its system can re-run with (by when the decision expires)."""
        scope = access.case_scope(principal, self.register)
        # Only cases that can await anyone: the list is in opening order and bounded, so with every state in
        # it an organisation's closed and withdrawn cases filled the bound over the years and the newest cases,
        # those awaiting it, were silently left out.
        found = await self._db(lambda s: list_cases(s, scope, CaseFilter(states=AWAITING_STATES), limit=10_000))
        now = self.clock.now()  # an allow past its validity awaits nothing, even before the scan expires it
        items: list[tuple[datetime, str, FeedItem]] = []
        for case in found:
            if (case.active and access.may_decide(principal, case, self.register)
                    and case_store.may_vote(case, principal.organisation)  # four eyes: never its own request
                    and not self._lapsed(case)):  # its tier's time passed: the next tier's, once moved up
                items.append((self._deadline_ends(case.deadline), case.id,
                              FeedItem(case=self._view(principal, case), awaiting="decision")))
            elif case.decision_usable(now) and case.requester_org == principal.organisation:
                assert case.valid_until is not None  # ``decision_usable`` says so
                items.append((case.valid_until, case.id, FeedItem(case=self._view(principal, case), awaiting="rerun")))
        return [item for *_, item in sorted(items, key=lambda i: (i[0], i[1]))]

    def _deadline_ends(self, deadline: date) -> datetime:
        """When a tier's deadline runs out: the case is overdue from midnight after it, in the register's
        timezone. The feed compares it with a decision's expiry (a moment) to put the most urgent first: a
        re-run is urgent by when its decision expires, not by the deadline of the tier that decided it, which
        has passed or no longer matters (the case left that tier when it was decided)."""
        return datetime.combine(deadline + timedelta(days=1), time(), tzinfo=ZoneInfo(self.timezone))

    async def metrics(self, principal: Principal) -> dict[str, Any]:
        scope = access.case_scope(principal, self.register)
        return await self._db(lambda s: metrics(s, scope, self.today()))

    # -- working a case ------------------------------------------------------------------------
    async def comment(self, principal: Principal, case_id: str, body: Comment, trace: Trace) -> CaseDetail:
        """A person's comment on a case it may see, while the case has not ended (closed, withdrawn or expired: 409,
        :mod:`escalation.comments`). Checked before the entry is made, so a plain refusal logs nothing, and
        again where the comment is written, so a case that ended meanwhile takes it neither."""
        if principal.kind != "person":
            raise Forbidden("comments are made by people", code="comments-by-people")

        def check(session: Session) -> Case:
            case = self._visible(principal, case_store.get_case(session, case_id))
            comment_store.check_open_for_comments(case.state)  # before the entry; the write checks it again
            return case

        case = await self._db(check)
        # The log names the comment and each attachment reference by SHA-256, as the case file holds them: both
        # are typed by people (a reference such as ``dms://x/jdevries-memo`` can name someone), and the log holds
        # no free text; a reviewer matches the digests against the case's comments.
        entry = self._event(case, _Step("comment", extra={
            "comment_sha256": _sha256(body.text),
            "attachment_sha256": [_sha256(a.reference) for a in body.attachments]}),
            await self._requester(principal), trace)
        await self._applied(case, [entry], lambda s: comment_store.add_comment(
            s, case_id, author_org=principal.organisation, author=principal.subject, text=body.text,
            attachments=[a.model_dump(exclude_none=True) for a in body.attachments], now=self.clock.now()),
            principal, trace)
        return await self.detail(principal, case_id)

    def _lapsed(self, case: Case) -> bool:
        return case.active and self.tier_lapsed(case.tier, case.deadline)

    def tier_lapsed(self, tier: int, deadline: date) -> bool:
        """An active case's tier let its deadline pass, below the last tier: the tier no longer reviews or decides
        it, the next one does (the scan moves it up; a missed tier-3 deadline leaves the case to tier 3, the
        last). The console asks it too, to offer such a tier only the referral."""
        return tier < MAX_TIER and deadline < self.today()

    def _in_time(self, case: Case) -> None:
        """Refuse a review or a vote of a tier whose deadline passed (``_lapsed``): a missed deadline escalates
        the case whether or not the scan has run yet — the scan runs every few minutes, or from cron, and a
        decision taken meanwhile by the tier that let its time pass would stand for good, the next tier
        never hearing the case. Referring it up is still possible: that is what the deadline does anyway."""
        if self._lapsed(case):
            raise Conflict(f"the deadline of tier {case.tier} passed on {case.deadline.isoformat()}: the case "
                           f"goes to tier {case.tier + 1}, whose deciders take it up; it can only be referred up",
                           code="tier-lapsed", values={"tier": str(case.tier), "next": str(case.tier + 1)})

    def _must_decide(self, principal: Principal, case: Case) -> None:
        self._visible(principal, case)
        if not case.active:
            raise Conflict(f"case `{case.id}` is {case.state.value}; nothing to decide", code="not-active")
        if not access.may_decide(principal, case, self.register):
            raise Forbidden(f"your organisation does not decide at tier {case.tier} of this partnership",
                            code="not-decider", values={"tier": str(case.tier)})

    @staticmethod
    def _review_first(case: Case) -> list[tuple[Action, CaseState]]:
        """Deciding or referring up implies taking the case into review when it is not yet."""
        if case.state in {State.OPEN, State.ESCALATED}:
            return [(Action.START_REVIEW, CaseState(case.state, case.tier, case.version).apply(Action.START_REVIEW))]
        return []

    async def review(self, principal: Principal, case_id: str, body: Review, trace: Trace) -> CaseDetail:
        def plan(_session: Session, case: Case) -> list[_Step]:
            self._must_decide(principal, case)
            _expect(case, body.expected_version)
            self._in_time(case)
            after = CaseState(case.state, case.tier, case.version).apply(Action.START_REVIEW)
            return [_Step(Action.START_REVIEW.value, after)]

        await self._perform(case_id, principal, trace, plan, lambda s: self._act(
            s, case_id, body.expected_version, Action.START_REVIEW, _actor(principal)))
        return await self.detail(principal, case_id)

    async def decide(self, principal: Principal, case_id: str, body: Decide, trace: Trace) -> CaseDetail:
        """Refer up, or vote allow/deny (the decision is taken when the tier's number of deciders agree)."""
        now = self.clock.now()
        obligations = body.obligations.model_dump(mode="json", exclude_none=True) if body.obligations else {}
        partnership = self.register.partnerships.get

        def plan(_session: Session, case: Case) -> list[_Step]:
            self._must_decide(principal, case)
            if not body.motivation.strip():
                raise MotivationRequired("a decision or referral needs a written motivation")
            _expect(case, body.expected_version)
            steps = [_Step(a.value, after) for a, after in self._review_first(case)]
            state = steps[-1].after if steps else CaseState(case.state, case.tier, case.version)
            assert state is not None
            if body.outcome == "refer-up":
                return [*steps, _Step(Action.REFER_UP.value, state.apply(Action.REFER_UP))]
            if not case_store.may_vote(case, principal.organisation):
                raise FourEyesViolation("the decider must be outside the requesting organisation")
            self._in_time(case)
            self._check_retain_until(case, body)
            unknown = sorted(set(body.permitted_categories) - set(case.requested_categories))
            rule = ("an allow names the permitted categories, all of them among the requested ones "
                    f"({', '.join(case.requested_categories)})")
            if body.outcome == "allow" and not body.permitted_categories:
                raise EscalationError(rule, code="allow-without-categories")
            if body.outcome == "allow" and unknown:
                raise EscalationError(f"{rule}; not requested: {', '.join(unknown)}", code="allow-not-requested",
                                      values={"categories": ", ".join(unknown)})
            barred = sorted(set(body.permitted_categories) & self.register.never_disclosed(case.partnership))
            if body.outcome == "allow" and barred:  # requested, and removed by policy: no re-run would disclose it
                raise EscalationError(f"an allow cannot permit {', '.join(barred)}: never disclosed in "
                                      f"`{case.partnership}`, whatever a decision says",
                                      code="allow-never-disclosed", values={"categories": ", ".join(barred)})
            beyond = sorted(set(body.permitted_categories) - self.register.disclosable(
                case.partnership, case.purpose, case.requester_org, case.holder_org))
            if body.outcome == "allow" and beyond:  # rule 3 bounds the re-run: a decision only narrows it
                raise EscalationError(
                    f"an allow cannot permit {', '.join(beyond)}: the register does not let `{case.holder_org}` "
                    f"disclose it to `{case.requester_org}` for `{case.purpose}` (rule 3), whatever a decision "
                    "says; if it should, flag the case as a legal gap",
                    code="allow-not-disclosable", values={"categories": ", ".join(beyond)})
            found = partnership(case.partnership)
            needed = case_store.votes_needed(case, access.min_deciders(found, case.tier) if found else 1)
            proposal = case_store.proposal_of(body.outcome, body.permitted_categories, obligations)
            completes = case_store.completes(case, _actor(principal), proposal, needed)
            narrowed = body.outcome == "allow" and set(body.permitted_categories) < set(case.requested_categories)
            verdict = (AuditDecision.DENY if body.outcome == "deny" else
                       AuditDecision.NARROWED if narrowed else AuditDecision.ALLOW)
            action = Action.DECIDE.value if completes else "vote"
            after = state.apply(Action.DECIDE) if completes else state
            # The entry names what the decision (or vote) holds: a deny permits nothing and adds no obligation,
            # whatever else the body carried (``proposal_of``), so the log says what the case file says.
            steps.append(_Step(action, after, verdict, tuple(proposal["permitted_categories"]),
                               {"votes_needed": needed}
                               | ({"obligations": proposal["obligations"]} if proposal["obligations"] else {})))
            if completes and self._settled_by_decision(case, body):  # nothing to re-run: it closes at once
                steps.append(_Step(Action.CLOSE.value, after.apply(Action.CLOSE)))
            return steps

        def apply(session: Session) -> Case:
            case = case_store.get_case(session, case_id)
            version = body.expected_version
            for action, _after in self._review_first(case):
                version = self._act(session, case_id, version, action, _actor(principal), now=now).version
            if body.outcome == "refer-up":
                return self._act(session, case_id, version, Action.REFER_UP, _actor(principal), now=now,
                                 motivation=body.motivation)
            found = partnership(case.partnership)
            decided = case_store.vote(
                session, case_id, version, _actor(principal), body.motivation, outcome=body.outcome,
                permitted_categories=body.permitted_categories, now=now, deadlines=self.deadlines,
                timezone=self.timezone, min_deciders=access.min_deciders(found, case.tier) if found else 1,
                obligations=obligations, valid_for=self._validity(now, body))  # its date checked by ``plan``
            if decided.state is State.DECIDED and self._settled_by_decision(decided, body):  # nothing to re-run
                decided = self._act(session, case_id, decided.version, Action.CLOSE, None, now=now,
                                    motivation="denied: closed" if body.outcome == "deny" else
                                    "holder's objection decided: closed")
            return decided

        await self._perform(case_id, principal, trace, plan, apply, motivation=body.motivation)
        return await self.detail(principal, case_id)

    @staticmethod
    def _settled_by_decision(case: Case, body: Decide) -> bool:
        """The decision leaves nothing to re-run, so the case closes with it: a deny, or any decision on a
        holder's objection (``Case.grants_rerun``)."""
        return body.outcome == "deny" or not case.grants_rerun

    def _validity(self, now: datetime, body: Decide) -> timedelta:
        """How long an allow taken ``now`` may be re-run: ``WGS_ESCALATION_DECISION_VALID_DAYS``, and never past
        the end of the decision's own deletion date (``retain_until``, a day in the register's timezone).
        The policy gives a re-run the earlier of that date and the purpose's, so a re-run after it would
        disclose data due for deletion before it arrived; ``_check_retain_until`` keeps the date from
        being past when the decision is taken, this keeps it so for as long as the decision can be used. Asked
        only of a date that check let through (``date.max`` has no day after it)."""
        retain_until = body.obligations.retain_until if body.obligations and body.outcome == "allow" else None
        if retain_until is None:
            return self.valid_for
        day_ends = datetime.combine(retain_until + timedelta(days=1), time(), tzinfo=ZoneInfo(self.timezone))
        return min(self.valid_for, day_ends - now)

    def _check_retain_until(self, case: Case, body: Decide) -> None:
        """A decision's deletion date only tightens the purpose's (``ExtraObligations``), and the decision is
        stored and shown as its deciders wrote it: one that says something the policy will not do is refused.
        Only an allow's: a deny holds no obligations (the stored decision and its entry drop them), so its
        date is ignored like any other obligation it carries — a past date used to refuse a deny (422)
        although nothing of it would have been kept.

        * not in the past: data disclosed on a re-run would be due for deletion before it arrived;
        * not later than the purpose's retention counted from today, in the register's timezone (rule 9, as
          the policy counts it: ``add_months``). A re-run comes today or later, so the policy's date is never
          earlier than that: a date up to it is what the re-run's obligations say, one past it is replaced
          by the policy's earlier one, and the decision on record would promise a retention nobody gets."""
        retain_until = body.obligations.retain_until if body.obligations and body.outcome == "allow" else None
        if retain_until is None:  # a deny holds no obligation (``proposal_of``): its date is ignored, not judged
            return
        today = self.today()
        if retain_until < today:
            raise EscalationError(f"obligation retain_until {retain_until.isoformat()} is in the past "
                                  f"(today is {today.isoformat()})", code="retain-until-past",
                                  values={"date": retain_until.isoformat(), "today": today.isoformat()})
        found = self.register.partnerships.get(case.partnership)
        purpose = found.purposes.get(case.purpose) if found else None
        if purpose is None:  # fail closed: no retention to judge the date by
            raise EscalationError(f"obligation retain_until cannot be checked: purpose `{case.purpose}` of "
                                  f"`{case.partnership}` is not in the register", code="retain-until-unchecked")
        latest = add_months(today, purpose.retention.months)
        if retain_until > latest:
            raise EscalationError(
                f"obligation retain_until {retain_until.isoformat()} is later than the retention of "
                f"`{case.purpose}` allows ({purpose.retention.months} months: {latest.isoformat()} at the latest); "
                "a decision can only shorten it", code="retain-until-too-late",
                values={"date": retain_until.isoformat(), "latest": latest.isoformat()})

    async def withdraw(self, principal: Principal, case_id: str, body: Withdraw, trace: Trace) -> CaseDetail:
        def plan(_session: Session, case: Case) -> list[_Step]:
            self._visible(principal, case)
            if not access.may_withdraw(principal, case):
                raise Forbidden("only the organisation that asked may withdraw the case", code="not-withdrawer")
            if not body.motivation.strip():
                raise MotivationRequired("a withdrawal needs a written motivation")
            _expect(case, body.expected_version)
            return [_Step(Action.WITHDRAW.value, CaseState(case.state, case.tier, case.version).apply(Action.WITHDRAW))]

        await self._perform(case_id, principal, trace, plan, lambda s: self._act(
            s, case_id, body.expected_version, Action.WITHDRAW, _actor(principal), motivation=body.motivation),
            motivation=body.motivation)
        return await self.detail(principal, case_id)

    # -- the scan: deadlines and decisions whose time has passed (gateway.escalations.deadlines) --------------
    async def scan(self) -> ScanResult:
        """The scheduler's job, and ``wgs-gateway escalations scan``'s (:class:`DeadlineScan`)."""
        return await self._deadline_scan.scan()

    async def escalate_overdue(self) -> list[Case]:
        """Every active case past its deadline: below tier 3 it goes one tier up; at tier 3, the last, it
        stays and its missed deadline is reported once. The cases moved up."""
        return (await self._deadline_scan.deadlines_passed())[0]

    async def expire_decisions(self) -> list[Case]:
        """Allow decisions whose validity passed expire (or, used by a re-run, are closed); the expired ones."""
        return await self._deadline_scan.expire_decisions()

    @staticmethod
    def _plan_listed(listed: Case, action: Action, extra: dict[str, Any] | None = None,
                     check: Callable[[Session, Case], None] | None = None) -> Callable[[Session, Case], list[_Step]]:
        """The scan's step (:mod:`gateway.escalations.deadlines`) for a case as it was listed — if it still is
        when read again before logging. Another
        gateway process on the database scans too: a case it moved (or a person acted on) since our listing
        is left alone before anything is logged, not logged once more (at its new tier) and then retracted."""
        def plan(session: Session, current: Case) -> list[_Step]:
            if current.version != listed.version:
                raise ConcurrentUpdate(f"case `{listed.id}` changed since the scan listed it")
            if check is not None:
                check(session, current)
            after = CaseState(current.state, current.tier, current.version).apply(action)
            return [_Step(action.value, after, extra=extra)]

        return plan

    def _apply_listed(self, case: Case, action: Action, motivation: str) -> Callable[[Session], Case]:
        return lambda session: self._act(session, case.id, case.version, action, None, motivation=motivation)

    # -- re-running a decided request ----------------------------------------------------------
    async def grant_for_rerun(self, principal: Principal, decision_id: str) -> RerunGrant:
        """Check the cited decision and reserve it for this re-run before any holder is asked: a decision is
        used once, so of two re-runs citing it at the same moment one gets it and the other 409 (nothing of
        it is logged or asked). The holder's disclosure marks it used (``RerunGrant.mark_used``),
        ``rerun_completed`` then closes the case, and ``rerun_ended`` gives back a decision its re-run did
        not use (the requester may re-run again).

        A decision that was used although its case is still ``decided`` (closing it failed after the
        disclosure) is refused all the same, and its close is finished here, logged like any other."""
        case = await self._db(lambda s: case_store.find_by_decision(s, decision_id))
        if (case is None or case.requester_org != principal.organisation or principal.kind != "system"
                or not access.case_scope(principal, self.register).allows(case)):
            raise Unprocessable(f"unknown escalation decision `{decision_id}`")
        decision = case.decision or {}
        if decision.get("outcome") != "allow":
            raise Unprocessable(f"escalation decision `{decision_id}` did not allow the request")
        if not case.grants_rerun:  # also one decided before such cases closed with their decision
            raise Unprocessable(f"escalation decision `{decision_id}` settled the holder's objection to a "
                                "disclosure; it allows no re-run")
        if case.state is State.EXPIRED:  # not used: nobody re-ran with it in time, and now nobody can
            raise Unprocessable(f"escalation decision `{decision_id}` expired at {decision['valid_until']}; "
                                "ask for a new decision")
        used = Conflict(f"escalation decision `{decision_id}` has been used already")
        if case.state is State.DECIDED and case.rerun_exchange_id is not None:  # its close failed: finish it
            await self._close_used(case.id, case.rerun_exchange_id, None, EXCHANGE)
            raise used
        if case.state is not State.DECIDED:
            raise used
        valid_until = datetime.fromisoformat(decision["valid_until"])
        if as_utc(valid_until) <= self.clock.now():
            raise Unprocessable(f"escalation decision `{decision_id}` expired at {decision['valid_until']}")
        claim = await self._claim(case, decision_id)
        policy_input = EscalationDecisionInput(
            id=decision_id, request_fingerprint=case.request_fingerprint or "", holder=case.holder_org,
            valid_until=as_utc(valid_until).strftime("%Y-%m-%dT%H:%M:%SZ"),
            permitted_categories=list(decision["permitted_categories"]), obligations=decision.get("obligations", {}))

        def sign(system: str, request_id: str, categories: list[str]) -> str:
            return self.tokens.sign_statement(
                typ=DECISION_TYPE, audience=system, ttl_seconds=STATEMENT_TTL_SECONDS,
                claims={"decision_id": decision_id, "case_id": case.id, "tier": decision.get("tier"),
                        "request_id": request_id, "categories": sorted(categories)})

        def mark_used(connection: Connection, exchange_id: str) -> None:
            try:
                case_store.use_decision(connection, case.id, claim, exchange_id)
            except case_store.DecisionInUse as exc:
                raise DecisionLost(f"escalation decision `{decision_id}` was taken over by another re-run") from exc

        return RerunGrant(decision_id=decision_id, case_id=case.id, holder=case.holder_org, claim=claim,
                          policy_input=policy_input, sign_for_holder=sign, mark_used=mark_used)

    async def _claim(self, case: Case, decision_id: str) -> str:
        """The decision, reserved in one conditional update (a re-run that died leaves a claim that may be
        taken over once it is older than ``CLAIM_ABANDONED_AFTER``, as for Idempotency-Keys, unless that
        re-run used the decision)."""
        claim, now = secrets.token_hex(16), self.clock.now()
        try:
            await self._db(lambda s: case_store.claim_decision(s, case.id, claim, now=now,
                                                               stale_before=now - CLAIM_ABANDONED_AFTER))
        except Conflict as exc:
            raise Conflict(f"escalation decision `{decision_id}` is being used by another re-run, or has been "
                           "used already; nothing was asked", headers={"Retry-After": "1"}) from exc
        return claim

    async def rerun_completed(self, grant: RerunGrant, exchange_id: str, trace: Trace) -> None:
        """The holder disclosed under the decision in the re-run ``exchange_id``, whose disclosure marked the
        decision used: the case is closed, citing the exchange."""
        await self._close_used(grant.case_id, exchange_id, trace, EXCHANGE)

    async def _close_used(self, case_id: str, exchange_id: str, trace: Trace | None, by: Requester, *,
                          quiet: bool = True) -> None:
        """Close a case whose decision the re-run ``exchange_id`` used (the database says so: a case whose
        decision is unused, or was used by another re-run, is left alone), as ``by``: the exchange after its
        re-run (or a later re-run citing the decision), or the scan. The decision is used whatever happens
        here, so a close that is refused (a concurrent close, the audit log unwritable) fails nothing: it is
        logged, and the next re-run citing the decision (or the next scan) tries again. ``quiet=False`` (the
        scan) raises the refusal instead, so that the scan counts a close that failed."""

        def used(case: Case) -> Case:
            if case.rerun_exchange_id != exchange_id:
                raise case_store.DecisionInUse(f"the decision of case `{case.id}` was not used by this re-run")
            return case

        def plan(_session: Session, case: Case) -> list[_Step]:
            after = CaseState(used(case).state, case.tier, case.version).apply(Action.CLOSE)
            return [_Step(Action.CLOSE.value, after, extra={"rerun_exchange_id": exchange_id})]

        def apply(session: Session) -> Case:
            case = used(case_store.get_case(session, case_id))
            return self._act(session, case.id, case.version, Action.CLOSE, None,
                             motivation=f"decision applied in exchange {exchange_id}")

        try:
            await self._perform(case_id, None, trace, plan, apply, by=by)
        except GatewayError as exc:
            log.error("escalation_close_failed", case_id=case_id, error_type=type(exc).__name__)
            if not quiet:
                raise

    def _not_applied_step(self, grant: RerunGrant, exchange_id: str, outcome: Outcome,
                          reason: str) -> tuple[Action, Callable[[Session, Case], list[_Step]],
                                                Callable[[Session], Case], Callable[[Case], None]]:
        """The step for a re-run whose holder did not follow the decision (``rerun_not_applied``): its action,
        and its plan, apply and notify for ``_perform`` — or for the transaction of the re-run's own entries
        (``rerun_not_applied_step``)."""
        action = (Action.DECISION_REFUSED_BY_HOLDER if outcome is Outcome.REFUSED_BY_HOLDER
                  else Action.DECISION_HOLDER_UNAVAILABLE)
        extra = {"rerun_exchange_id": exchange_id, "decision_id": grant.decision_id, "holder_reason": reason}

        def held(case: Case) -> Case:
            if not (case.state is State.DECIDED and case.rerun_claim == grant.claim
                    and case.rerun_exchange_id is None):
                raise ConcurrentUpdate(f"the decision of case `{case.id}` is no longer held by re-run `{exchange_id}`")
            return case

        def plan(_session: Session, case: Case) -> list[_Step]:
            after = CaseState(held(case).state, case.tier, case.version).apply(action)
            return [_Step(action.value, after, extra=extra)]

        def apply(session: Session) -> Case:
            case = held(case_store.get_case(session, grant.case_id))
            return self._act(session, case.id, case.version, action, None,
                             motivation=f"re-run {exchange_id}: {outcome.value} ({reason})")

        def notify(case: Case) -> None:
            self.notifier.notify(set(self._decision_audience(case)), {
                "event": f"escalation.{action.value}", "case_id": case.id, "state": case.state.value,
                "tier": case.tier, "deadline": case.deadline.isoformat(), "partnership": case.partnership,
                "version": case.version, "decision_id": grant.decision_id, "rerun_exchange_id": exchange_id,
                "holder_reason": reason})

        return action, plan, apply, notify

    async def rerun_not_applied_step(self, grant: RerunGrant, exchange_id: str, outcome: Outcome, reason: str,
                                     trace: Trace) -> RerunStep | None:
        """The step ``rerun_not_applied`` takes, prepared to commit with the re-run's own audit entries (the
        holder's refusal or unavailability): its entry, predicted from the case as read now, and the case row,
        written in that transaction only if the case is still at that version and the re-run still holds the
        decision. Else, or if the step fails there, ``CaseStepNotTaken`` refuses the transaction, and the
        exchange logs its entries without the step and calls ``rerun_not_applied`` (which logs a defect as
        tried). None when the case cannot be read now: ``rerun_not_applied`` then says why.

        Why one transaction: the step taken in its own, after the re-run's entries, was lost when the gateway
        died in between — the refusal in the log, not on the case, and the deciders never told."""
        action, plan, apply, notify = self._not_applied_step(grant, exchange_id, outcome, reason)

        def predict(session: Session) -> tuple[Case, list[_Step]]:
            case = case_store.get_case(session, grant.case_id)
            return case, plan(session, case)

        try:
            predicted, steps = await self._db(predict)
        except Exception as exc:  # not held any more, or unreadable: the step on its own says so
            log.info("escalation_rerun_step_not_prepared", case_id=grant.case_id, error_type=type(exc).__name__)
            return None
        taken: list[Case] = []

        def take(connection: Connection) -> None:
            def step(session: Session) -> Case:
                _expect(case_store.get_case(session, predicted.id), predicted.version)  # what the entry says
                return apply(session)

            try:
                taken.append(_in_session(connection, step))
            except Exception as exc:  # refuse the transaction: the answers are logged without the step
                raise CaseStepNotTaken(f"case `{predicted.id}`: {type(exc).__name__}") from exc

        def told() -> None:
            notify(taken[-1])
            log.info("escalation_decision_not_applied", case_id=grant.case_id, action=action.value)

        return RerunStep(events=[self._event(predicted, s, EXCHANGE, trace) for s in steps], apply=take,
                         taken=told)

    async def rerun_not_applied(self, grant: RerunGrant, exchange_id: str, outcome: Outcome, reason: str,
                                trace: Trace) -> None:
        """The policy applied the decision in the re-run ``exchange_id`` and its holder still gave nothing:
        it refused (``outcome`` refused-by-holder) or was unavailable. A binding decision the holder does not
        follow must not lapse unseen: the case gets a step (``decision_refused_by_holder`` or
        ``decision_holder_unavailable``) naming the re-run and the reason's code (``reason``: a code, never the
        holder's words) in its history and the audit log, and the parties and the deciders of the tier that
        decided are told. The case stays ``decided``: the decision is given back (``rerun_ended``) and may be
        re-run until it expires — a holder that was down may answer next time, and after a refusal the deciders
        can act meanwhile (comment, flag a legal gap) and the requester may try again.

        The exchange takes this step with the re-run's own entries (``rerun_not_applied_step``) when it can;
        this, in a transaction of its own after them, is for when it could not.

        Only while this re-run still holds the decision (a re-run that lost it to another records nothing; that
        one speaks for the decision now). Never raises: the re-run's answer stands, the failure is logged."""
        action, plan, apply, notify = self._not_applied_step(grant, exchange_id, outcome, reason)
        try:
            await self._perform(grant.case_id, None, trace, plan, apply, notify=notify, by=EXCHANGE)
        except Exception as exc:  # the re-run is answered whatever happens here; a defect is logged as tried
            log.error("escalation_rerun_not_applied_unrecorded", case_id=grant.case_id,
                      error_type=type(exc).__name__)
        else:
            log.info("escalation_decision_not_applied", case_id=grant.case_id, action=action.value)

    def _decision_audience(self, case: Case) -> list[str]:
        """Who hears that a decision was not applied: the two parties and the deciders of the tier that took
        the decision (they made it binding, and are the ones to act on a holder that ignores it)."""
        recipients = {case.requester_org, case.holder_org}
        partnership = self.register.partnerships.get(case.partnership)
        tier = int((case.decision or {}).get("tier") or case.tier)
        if partnership is not None:
            recipients |= access.tier_deciders(partnership, tier, case)
        return sorted(recipients)

    async def rerun_ended(self, grant: RerunGrant) -> None:
        """The re-run is over. Unless it used the decision (its disclosure marked it so), the decision is given
        back so the requester can re-run again: it was refused before any holder was asked, the holder was
        unavailable or refused, the policy did not honour it, or its disclosure could not be logged. Never
        raises: the re-run's own answer stands (a claim left behind is taken over once it is stale)."""
        try:
            await self._db(lambda s: case_store.release_decision(s, grant.case_id, grant.claim))
        except Exception as exc:
            log.warning("escalation_decision_not_released", case_id=grant.case_id, error_type=type(exc).__name__)

    # -- legal gaps ----------------------------------------------------------------------------
    def _seen_cases(self, principal: Principal, session: Session, found: list[gap_store.LegalGap]) -> set[str]:
        """Which of the cases linked to ``found`` ``principal`` may see. A gap is read by the whole
        partnership, its cases are not — a case id the reader gets 404 for must not be learnt from a gap
        (that a case exists, and when it was opened: the id is a UUIDv7)."""
        return visible_case_ids(session, access.case_scope(principal, self.register),
                                {i for gap in found for i in gap.case_ids})

    def _scoped_view(self, gap: gap_store.LegalGap, seen: set[str]) -> LegalGapView:
        """``gap`` naming only the linked cases in ``seen`` (see ``_seen_cases``)."""
        return gap_view(replace(gap, case_ids=[i for i in gap.case_ids if i in seen]))

    def _gap_views(self, principal: Principal, session: Session, found: list[gap_store.LegalGap]) -> list[LegalGapView]:
        """The gaps as ``principal`` may read them: each names only the linked cases it may see."""
        seen = self._seen_cases(principal, session, found)
        return [self._scoped_view(gap, seen) for gap in found]

    async def _scoped_gap(self, principal: Principal, gap: gap_store.LegalGap) -> LegalGapView:
        return (await self._db(lambda s: self._gap_views(principal, s, [gap])))[0]

    async def flag_gap(self, principal: Principal, case_id: str, body: FlagLegalGap, trace: Trace) -> LegalGapView:
        if not access.is_worker(principal):
            raise Forbidden("legal gaps are flagged by privacy officers and administrators", code="gap-flaggers")
        def check(session: Session) -> tuple[Case, gap_store.LegalGap | None]:
            """The case, and the gap if the case is linked to it already (a link that changes nothing)."""
            case = self._visible(principal, case_store.get_case(session, case_id))
            if body.gap_id is None:
                if not (body.title and body.title.strip() and body.description and body.description.strip()):
                    raise EscalationError("a new legal gap needs a title and a description of the missing basis",
                                          code="gap-description-required")
                return case, None
            gap = gap_store.get_gap(session, body.gap_id)
            if gap.partnership != case.partnership:
                raise gap_store.GapNotFound(f"no legal gap `{body.gap_id}` in partnership `{case.partnership}`")
            if case_id in gap.case_ids:
                return case, gap
            if gap.status is gap_store.GapStatus.RESOLVED:  # a new problem is a new gap
                raise gap_store.GapResolved(gap.id)
            return case, None

        case, linked = await self._db(check)  # refusals before the entry: the log shows only flags that happened
        if linked is not None:  # linked already: nothing to do, so nothing to log
            return await self._scoped_gap(principal, linked)
        # A new gap's id is made here, so that its entry names it like every later entry about the gap does.
        new_id = gap_store.new_gap_id() if body.gap_id is None else None
        entry = self._event(case, _Step("legal_gap_flagged", extra={
            "gap_id": body.gap_id or new_id, "new_gap": new_id is not None}), await self._requester(principal),
            trace)
        try:
            gap = await self._applied(case, [entry], lambda s: gap_store.flag_case(
                s, case_id, organisation=principal.organisation, now=self.clock.now(), gap_id=body.gap_id,
                title=body.title, description=body.description, new_id=new_id), principal, trace)
        except Unprocessable as refused:  # linked meanwhile by a flag that committed first: neither step nor entry
            done = refused.__cause__
            if not isinstance(done, gap_store.AlreadyLinked):
                raise
            gap = await self._db(lambda s: gap_store.get_gap(s, done.gap_id))
        return await self._scoped_gap(principal, gap)

    async def gaps(self, principal: Principal, *, partnership: str | None, status: str | None) -> list[LegalGapView]:
        visible = access.gap_partnerships(principal, self.register)
        if partnership:
            visible &= {partnership}
        wanted = gap_store.GapStatus(status) if status else None
        return await self._db(lambda s: self._gap_views(
            principal, s, gap_store.list_gaps(s, partnerships=visible, status=wanted)))

    def _readable_gap(self, principal: Principal, session: Session, gap_id: str) -> gap_store.LegalGap:
        """The gap, if ``principal``'s partnerships may read it (404 otherwise, as for one that does not exist)."""
        gap = gap_store.get_gap(session, gap_id)
        if gap.partnership not in access.gap_partnerships(principal, self.register):
            raise gap_store.GapNotFound(f"no legal gap `{gap_id}`")
        return gap

    async def gap(self, principal: Principal, gap_id: str) -> LegalGapView:
        def read(session: Session) -> LegalGapView:
            return self._gap_views(principal, session, [self._readable_gap(principal, session, gap_id)])[0]

        return await self._db(read)

    async def change_gap(self, principal: Principal, gap_id: str, body: GapStatusChange,
                         trace: Trace) -> LegalGapView:
        """A status change changes no links, so the cases the reader may see are looked up once, with the gap
        before the change, and the changed gap is shown with those."""
        def read(session: Session) -> tuple[gap_store.LegalGap, set[str]]:
            gap = self._readable_gap(principal, session, gap_id)
            return gap, self._seen_cases(principal, session, [gap])

        current, seen = await self._db(read)
        if not access.may_manage_gaps(principal, current.partnership, self.register):
            raise Forbidden("only the coordinating privacy officer and the tier-2/3 organisations manage gaps",
                            code="gap-managers")
        status = gap_store.GapStatus(body.status)
        if status not in gap_store.GAP_TRANSITIONS[current.status]:
            raise Conflict(f"a legal gap cannot go from `{current.status.value}` to `{status.value}`",
                           code="gap-transition")
        if current.version != body.expected_version:
            raise Conflict(f"legal gap `{gap_id}` is at version {current.version}, not {body.expected_version}",
                           code="gap-stale-version")

        requester = await self._requester(principal)
        # Under the gap's partnership: the coordinating privacy officer reviews the partnership's entries by
        # it, and the organisation changing the status is often another (a tier-2/3 desk).
        activity = ProcessingActivity(partnership=current.partnership, purpose=LEGAL_GAP_ACTIVITY)

        def entry(**extra: Any) -> AuditEvent:
            return AuditEvent(
                event_type=EventType.ESCALATION_STEP, trace_id=trace.trace_id, span_id=trace.span_id,
                status="error" if extra else "ok", requester=requester, processing_activity=activity,
                extra={"action": "legal_gap_status", "gap_id": gap_id, "partnership": current.partnership,
                       "status_before": current.status.value, "status": status.value} | extra)

        try:  # the entry and the change commit together (``_logged``)
            gap = await self._logged([entry()], lambda s: gap_store.change_status(
                s, gap_id, body.expected_version, status, now=self.clock.now(), note=body.note,
                actor_org=principal.organisation, actor_user=principal.subject))
        except _Defect as defect:  # tried and failed unforeseen: on record as not applied
            await self._record([entry(not_applied=_failure_kind(defect.cause))])
            raise defect.cause from None
        return self._scoped_view(gap, seen)  # a link made meanwhile is left out: shown at the next read

    async def gaps_csv(self, principal: Principal, *, partnership: str | None, status: str | None) -> str:
        """The register of legal gaps for the steering group's agenda: the cases the reader may see, and no
        cell a spreadsheet would run as a formula (the same export as `wgs-gateway escalations gaps`)."""
        return gaps_csv(await self.gaps(principal, partnership=partnership, status=status))
