"""The escalation scan: deadlines and decisions whose time has passed (``EscalationService.scan``).

Its own module because it is its own job: nobody asks for it, a timer does (:mod:`gateway.escalations.
scheduler`, or ``wgs-gateway escalations scan`` from cron), every gateway process runs it on the same
database, and its rules are about time rather than about who may do what. Kept apart from the service's
requests (opening, reading, deciding, re-runs, legal gaps), each can be read — and reviewed — on its own.
Every step still goes through the service's one path (``EscalationService._perform``): checked against the
case as listed, logged in the transaction that takes it, then announced.

What a scan does:

* a case past its deadline below tier 3 moves one tier up (``deadline_missed``);
* at tier 3, the last, there is nobody to refer it to: its missed deadline is reported once
  (``final_deadline_missed``, naming who was told) to the parties, the tier-3 deciders and the coordinating
  privacy officer, and the case stays where it is; a case whose report is on record is never reported again;
* an allow decision whose validity passed expires when nobody used it; one a re-run used but could not close
  is closed, whether or not its validity passed; one a live re-run holds is left to that re-run until the
  next scan; whoever hears of an expiry are the parties and the deciders of the tier that took the decision
  (``_expire``).

Another process may scan at the same moment: a case it moved (or a person acted on) since ours listed it is
left alone before anything is logged, never logged twice.

Each case is a step of its own (``_each``): one that fails for any other reason (a defect, the audit log or
the database failing for it) is logged — its id and the kind of failure, never the error's text — and the
scan goes on with the others. One bad case used to end the whole run, every run, so every decision listed
after it stopped expiring and every case after it stopped moving up. The ids of the cases that failed are
the scan's answer too (``ScanResult.failed``): ``wgs-gateway escalations scan`` prints them and exits 1, so a
cron job notices a case that fails on every run instead of it living in the log alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy.orm import Session

from audit.events import Requester
from escalation import cases as case_store
from escalation.cases import Case, ConcurrentUpdate
from escalation.queries import CaseFilter, CaseScope, list_cases
from escalation.states import MAX_TIER, Action
from gateway.auth.principal import Role
from gateway.clock import as_utc
from gateway.errors import Conflict
from gateway.escalations import access
from gateway.exchange.lease import CLAIM_ABANDONED_AFTER

if TYPE_CHECKING:  # the service builds the scan; the scan takes its steps through the service
    from gateway.escalations.service import EscalationService

log = structlog.get_logger("gateway.escalations")
T = TypeVar("T")

SCHEDULER = Requester(org="wgs-gateway", system="escalation-scheduler")
"""Who takes the scan's steps, as their audit entries name it (a missed deadline, an expiry, a close the scan
finishes); the steps a re-run brings about name the exchange instead (``service.EXCHANGE``)."""

FINAL_DEADLINE_AUDIENCE = frozenset({Role.ADMINISTRATOR.value, Role.PRIVACY_OFFICER.value})
"""Whom a receiving organisation should route a missed tier-3 deadline to (the notification names them)."""


@dataclass(frozen=True)
class ScanResult:
    """What one scan did: cases moved up a tier, missed tier-3 deadlines reported, decisions expired, and the
    ids of the cases whose step failed (each once, in the order they failed; see ``_each``)."""

    moved: list[Case]
    reported: list[Case]
    expired: list[Case]
    failed: list[str] = field(default_factory=list)


class DeadlineScan:
    """The scan of one :class:`~gateway.escalations.service.EscalationService` (see the module)."""

    def __init__(self, service: EscalationService) -> None:
        self.service = service

    async def scan(self) -> ScanResult:
        """The scheduler's job, and ``wgs-gateway escalations scan``'s: every missed deadline (one tier up,
        or at the last tier reported once), and every allow decision whose validity passed (expired)."""
        failed: list[str] = []
        moved, reported = await self.deadlines_passed(failed)
        expired = await self.expire_decisions(failed)
        return ScanResult(moved=moved, reported=reported, expired=expired, failed=list(dict.fromkeys(failed)))

    async def deadlines_passed(self, failed: list[str] | None = None) -> tuple[list[Case], list[Case]]:
        """Every active case past its deadline: below tier 3 it goes one tier up; at tier 3, the last, it
        stays and its missed deadline is reported once (see ``_report_final``). The cases moved up a tier,
        and those whose missed tier-3 deadline was reported now; the ids of those that failed are added to
        ``failed``."""
        service = self.service
        today = service.today()
        overdue = await service._db(lambda s: [c for c in list_cases(
            s, CaseScope(everything=True), CaseFilter(overdue_on=today), limit=100_000) if c.tier < MAX_TIER])
        moved = []
        for case in overdue:
            step = await _each(Action.DEADLINE_MISSED, case, lambda c: service._perform(
                c.id, None, None, service._plan_listed(c, Action.DEADLINE_MISSED),
                service._apply_listed(c, Action.DEADLINE_MISSED, "deadline missed")), failed)
            if step is not None:
                moved.append(step)
        if moved:
            log.info("escalations_overdue_moved", cases=len(moved))
        final = await service._db(lambda s: case_store.unreported_final_overdue(s, today))
        reported = []
        for case in final:
            report = await _each(Action.FINAL_DEADLINE_MISSED, case, self._report_final, failed)
            if report is not None:
                reported.append(report)
        if reported:
            log.info("escalations_final_deadline_missed", cases=len(reported))
        return moved, reported

    def _final_recipients(self, case: Case) -> list[str]:
        """Who hears that the last tier's deadline passed: there is nobody to refer the case to, so those who
        can still settle it or must answer for it — the two parties (their privacy officers work tier 1),
        the tier-3 deciders (the administrative steering group) and the coordinating privacy officer."""
        recipients = {case.requester_org, case.holder_org}
        partnership = self.service.register.partnerships.get(case.partnership)
        if partnership is not None:
            recipients |= access.tier_deciders(partnership, MAX_TIER, case)
            recipients.add(partnership.coordinating_privacy_officer)
        return sorted(recipients)

    async def _report_final(self, listed: Case) -> Case | None:
        """Log and announce one missed tier-3 deadline, once: the step is skipped before anything is logged
        if the case changed since it was listed or its report is on record already (another gateway process
        scans too), and its entry names who was told. None if skipped."""
        service = self.service
        told = self._final_recipients(listed)

        def not_yet(session: Session, current: Case) -> None:
            if case_store.final_deadline_reported(session, current.id):
                raise ConcurrentUpdate(f"the missed deadline of case `{current.id}` was reported already")

        def notify(case: Case) -> None:
            service.notifier.notify(set(told), {
                "event": "escalation.final_deadline_missed", "case_id": case.id, "state": case.state.value,
                "tier": case.tier, "deadline": case.deadline.isoformat(), "partnership": case.partnership,
                "version": case.version, "roles": sorted(FINAL_DEADLINE_AUDIENCE)})

        extra = {"deadline": listed.deadline.isoformat(), "notified": told}
        try:
            return await service._perform(
                listed.id, None, None, service._plan_listed(listed, Action.FINAL_DEADLINE_MISSED, extra, not_yet),
                service._apply_listed(listed, Action.FINAL_DEADLINE_MISSED, "deadline of the last tier missed"),
                notify=notify)
        except Conflict:
            return None  # someone acted on it meanwhile, or it was reported; the next run looks again

    async def expire_decisions(self, failed: list[str] | None = None) -> list[Case]:
        """Allow decisions whose validity passed: one nobody used expires (the case leaves ``decided``, so no
        list offers it for a re-run and a re-run citing it is refused as expired). One a re-run used but could
        not close is closed, whether or not its validity has passed, once that re-run is over. A decision held
        by a live re-run is left to it (the policy refuses it past its validity anyway; a re-run that used it
        closes the case itself) and looked at again on the next scan. The ids of the cases that failed are
        added to ``failed``."""
        service = self.service
        now = service.clock.now()
        found = await service._db(lambda s: case_store.expirable_decisions(s, now))
        expired = []
        for case in found:
            if _claim_live(case, now):
                continue
            if case.rerun_exchange_id is not None:
                await _each(Action.CLOSE, case, self._close_used, failed)
                continue
            step = await _each(Action.EXPIRE, case, self._expire, failed)
            if step is not None:  # None: claimed, used or changed meanwhile, or failed; the next run looks again
                expired.append(step)
        if expired:
            log.info("escalation_decisions_expired", cases=len(expired))
        return expired

    async def _expire(self, listed: Case) -> Case:
        """Expire one unused allow, and tell the parties and the deciders of the tier that took it
        (``EscalationService._decision_audience``), as a re-run the holder did not follow is told: they made
        the decision binding, and learn that it lapsed unused. The step's default notification left them out
        (an expired case is no longer active, so it has no deciders to act)."""
        service = self.service

        def notify(case: Case) -> None:
            service.notifier.notify(set(service._decision_audience(case)), {
                "event": "escalation.step", "case_id": case.id, "state": case.state.value, "tier": case.tier,
                "deadline": case.deadline.isoformat(), "partnership": case.partnership, "version": case.version,
                "decision_id": listed.decision_id})

        return await service._perform(
            listed.id, None, None, service._plan_listed(listed, Action.EXPIRE, {"valid_until": str(
                (listed.decision or {}).get("valid_until")), "decision_id": listed.decision_id}),
            service._apply_listed(listed, Action.EXPIRE, "decision not used before its validity ended"),
            notify=notify)

    async def _close_used(self, case: Case) -> None:
        """Close a case whose decision a re-run used but could not close (``EscalationService._close_used``);
        a close that fails is raised, so that ``_each`` counts it."""
        assert case.rerun_exchange_id is not None
        await self.service._close_used(case.id, case.rerun_exchange_id, None, SCHEDULER, quiet=False)


async def _each(action: Action, case: Case, step: Callable[[Case], Awaitable[T]],
                failed: list[str] | None = None) -> T | None:
    """One case's step of the scan, on its own: None when it did not happen — someone acted on the case
    meanwhile (a 409: the next run looks again), or it failed. A failure is logged with the case's id and the
    kind of failure only (an error's text may name a person), its id added to ``failed``, and does not stop
    the scan: the other cases' deadlines and decisions are not held hostage by one. A defect's step is on
    record as tried and not applied (``EscalationService._applied``); the next run tries the case again."""
    try:
        return await step(case)
    except Conflict:
        return None
    except Exception as exc:
        log.error("escalation_scan_case_failed", case_id=case.id, action=action.value,
                  error_type=type(exc).__name__)
        if failed is not None:
            failed.append(case.id)
        return None


def _claim_live(case: Case, now: datetime) -> bool:
    """A re-run holds the decision and may still use it (a claim older than that is abandoned)."""
    return (case.rerun_claim is not None and case.rerun_claimed_at is not None
            and as_utc(case.rerun_claimed_at) >= now - CLAIM_ABANDONED_AFTER)
