"""Failed console sign-ins in the audit log: every one accounted for, without letting a flood of them grow
the log without bound.

Every failed sign-in used to write its own ``console.action`` entry. The login throttle stops a username
after a few failures, but a refused (throttled) attempt was still an entry, and so was each wrong password
for a username that is no account; only the per-address rate limit bounded how fast anyone could grow the
append-only log that way. Now:

* a wrong password (or a disabled account) for a username that *is* an account is an entry of its own, as
  before — the throttle already allows only a few per account and window;
* a throttled attempt, and a wrong password for a username that is *no* account, is an entry only when it
  is the first of its kind for that account (or for "no account") in a window of the throttle's length;
  later ones in the window are counted, and one summary entry (``more_attempts``, ``first_at``,
  ``last_at``) is written when the window ends — by a timer in every process, at the next failed sign-in,
  or when a gateway process stops. So a flood costs at most two entries per account and window.

The same holds for ``POST /v1/auth/login``, which checks the same passwords under the same throttle: its
failed sign-ins are entries too (``channel: api``; windows are per channel). Before, five guesses there left
no entry, and a console sign-in afterwards showed the account's officers only that it was throttled.

What a privacy officer sees: entries of a failed sign-in name the account that was tried, by its id and
organisation, when the typed username is an account — that organisation's officers see the attempts on
their people's accounts in the audit explorer (the entry's ``status`` is ``error`` and its ``reason``
says why). The typed username itself is never written (it could be an e-mail address, or a password typed
in the wrong field); an attempt on a username that is no account names nobody.

Token requests that ``POST /oauth/token`` refuses are accounted for the same way (``channel: token``), as
``auth.rejected`` entries: the first per system named and OAuth error code in a window, then a summary. A
partner system has no throttle (its secret or key cannot be guessed), so none of its refusals is an entry of
its own; the system is named (with its organisation, whose officers see it) only when the request named a
system of the register, unverified: that someone tries to get tokens as their system is what they need to
see.

The windows are kept in the database (:mod:`gateway.console.signin_windows`), shared by every gateway
process: a flood spread over N worker processes is still two entries per window, where counts kept in each
process's memory made it up to 2N, and a process that stops or crashes loses no count (its open windows
are summarised by whichever process runs when they end). Windows are fixed periods of the throttle's length
(a burst across the end of one is two windows).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import JsonValue

from audit import AuditEvent, AuditWriteError, CompanionRow
from gateway.auditing.actions import action_event, rejection_event
from gateway.auditing.setup import audit_services
from gateway.auth.repository import get_account
from gateway.auth.setup import auth_services
from gateway.console import signin_windows
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import cause_of
from gateway.periodic import PeriodicJob

log = structlog.get_logger("gateway.console.signins")

THROTTLED = "throttled"
WRONG_CREDENTIALS = "wrong-credentials"
UNKNOWN_ROLE = "unknown-role"
"""The right password of an account whose roles hold a value this gateway does not know: refused (403)."""
SUMMARY_SECONDS = 60.0
"""How often the timer looks for windows that ended (a summary is at most this late)."""
TOKEN_CHANNEL = "token"
"""The channel of refused token requests (``auth.rejected`` entries), beside ``console`` and ``api`` sign-ins."""


@dataclass(frozen=True)
class Target:
    """The account a typed username names (its reference and organisation), the partner system a token request
    named (its id and organisation), or nobody."""

    organisation: str | None = None
    account_id: str | None = None
    system: str | None = None

    @property
    def key(self) -> str:
        """The target as its window's row names it: the account id or system id, "" for nobody."""
        return self.account_id or self.system or ""


def _target_of(channel: str, key: str, organisation: str | None) -> Target:
    if not key:
        return Target()
    return Target(organisation, system=key) if channel == TOKEN_CHANNEL else Target(organisation, account_id=key)


class FailedSignIns:
    """Which failed sign-ins get an entry of their own; the others are counted in their window's row."""

    def __init__(self, container: Container, window_seconds: float) -> None:
        self._container = container
        self.window = window_seconds
        self.timer: PeriodicJob | None = None
        self.summarised_before = -1  # this process wrote the summaries of the windows before this period

    def period(self, now: float) -> int:
        return int(now // self.window)

    def note(self, reason: str, target: Target, now: float, channel: str = "console") -> bool:
        """True: audit this attempt (it opens a window, or the throttle bounds it); False: it is counted into
        the window's summary. Blocking: call it in a worker thread."""
        if reason == WRONG_CREDENTIALS and target.account_id is not None:
            return True  # the throttle bounds these per account
        with transaction(self._container.sessions) as session:
            return signin_windows.count(session, channel, reason, target.key, target.organisation,
                                        self.period(now), now)

    def claim_ended(self, now: float, claim: str) -> list[signin_windows.Window]:
        """Claim the windows that ended with attempts to summarise (blocking: a worker thread)."""
        with transaction(self._container.sessions) as session:
            return signin_windows.claim_ended(session, self.period(now), now, claim)


def _started(container: Container) -> FailedSignIns | None:
    """The tracker, if this process made one."""
    found = container.services.get("console_sign_ins")
    return found if isinstance(found, FailedSignIns) else None


def failed_sign_ins(container: Container) -> FailedSignIns:
    found = _started(container)
    if found is not None:
        return found
    tracker = FailedSignIns(container, auth_services(container).login_throttle.window.total_seconds())
    container.services["console_sign_ins"] = tracker
    return tracker


def _at(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _entry(request: Request | None, reason: str, target: Target, channel: str,
           details: dict[str, JsonValue] | None = None) -> AuditEvent:
    """The entry of a failed sign-in (``console.action``) or of a refused token request (``auth.rejected``)."""
    if channel == TOKEN_CHANNEL:
        return rejection_event(request, reason, organisation=target.organisation, system=target.system,
                               details=details)
    return action_event(request, "sign-in", organisation=target.organisation, account_id=target.account_id,
                        ok=False, details={"reason": reason, **(details or {})}, channel=channel)


def _summary(window: signin_windows.Window) -> AuditEvent:
    details: dict[str, JsonValue] = {"more_attempts": window.more, "first_at": _at(window.first_at),
                                     "last_at": _at(window.last_at)}
    return _entry(None, window.reason, _target_of(window.channel, window.target, window.organisation),
                  window.channel, details)


def target_of(container: Container, username: str) -> Target:
    """The account a failed sign-in tried, if the typed username is one (the name itself is never kept).
    Blocking: call it in a worker thread."""
    with transaction(container.sessions) as session:
        found = get_account(session, username)
    return Target(found.organisation, found.id) if found is not None else Target()


def start_sign_ins(container: Container) -> None:
    """Start this process's timer that summarises ended windows (the app's start-up): a window's summary is
    written even when its process stopped and no other failed sign-in comes."""
    tracker = failed_sign_ins(container)
    if tracker.timer is None:
        tracker.timer = PeriodicJob(lambda: summarise_ended(container), SUMMARY_SECONDS,
                                    name="console_sign_in_summaries")
        tracker.timer.start()


async def record_failed_sign_in(container: Container, request: Request, reason: str, target: Target,
                                channel: str = "console") -> None:
    """Account for one failed sign-in at the console or (``channel="api"``) at ``POST /v1/auth/login``, or for
    a refused token request (``channel=TOKEN_CHANNEL``; see the module's docstring); raises
    :class:`audit.AuditWriteError` when an entry that is due cannot be written."""
    tracker = failed_sign_ins(container)
    now = container.clock.now().timestamp()
    if tracker.period(now) > tracker.summarised_before:  # a window ended since: not a claim per failure
        await summarise_ended(container)
    if await run_in_threadpool(tracker.note, reason, target, now, channel):
        await audit_services(container).writer.record([_entry(request, reason, target, channel)])


async def summarise_ended(container: Container) -> None:
    """Write the summaries of the windows that ended, each once over every process; raises
    :class:`audit.AuditWriteError` when they cannot be written (their claim lapses and they are tried again)."""
    tracker = failed_sign_ins(container)
    claim, now = secrets.token_hex(16), container.clock.now().timestamp()
    ended = await run_in_threadpool(tracker.claim_ended, now, claim)
    if ended:
        try:
            await audit_services(container).writer.record([_summary(window) for window in ended], CompanionRow(
                None, None, precondition=lambda connection: signin_windows.release(connection, ended, claim)))
        except AuditWriteError as failed:
            if not _taken_over(failed):
                raise
            # Another process writes these summaries: not a failure of the log, and no reason to refuse the
            # request that looked for them (it was answered 503 before).
            log.info("console_sign_in_summaries_taken_over", windows=len(ended))
    tracker.summarised_before = max(tracker.summarised_before, tracker.period(now))


def _taken_over(failed: BaseException) -> bool:
    """Whether the write failed because another process took the windows over (:class:`SummaryTaken`)."""
    return cause_of(failed, signin_windows.SummaryTaken) is not None


async def close_sign_ins(container: Container) -> None:
    """Stop the timer and write the summaries of the windows that ended (the app's shutdown, before the audit
    writer closes); open windows stay in the database for the process that runs when they end."""
    tracker = _started(container)
    if tracker is None:
        return
    if tracker.timer is not None:
        await tracker.timer.aclose()
        tracker.timer = None
    try:
        await summarise_ended(container)
    except Exception as exc:  # the gateway stops all the same; the windows stay for the next process
        log.error("console_sign_in_summaries_lost", error_type=type(exc).__name__)
