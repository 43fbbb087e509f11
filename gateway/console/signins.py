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
  ``last_at``) is written when the window ends — by a timer, at the next failed sign-in, or when the
  gateway stops. So a flood costs at most two entries per account and window.

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

The counts are per gateway process and kept in memory until their summary is written: a crashed process
loses the counts of its open windows, not the entry that opened each window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fastapi import Request
from pydantic import JsonValue

from audit import AuditEvent
from gateway.auditing.actions import action_event, rejection_event
from gateway.auditing.setup import audit_services
from gateway.auth.repository import get_account
from gateway.auth.setup import auth_services
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.periodic import PeriodicJob

log = structlog.get_logger("gateway.console.signins")

THROTTLED = "throttled"
WRONG_CREDENTIALS = "wrong-credentials"
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


@dataclass
class Burst:
    """The failed sign-ins of one kind on one target within one window, after the one that was audited."""

    reason: str
    target: Target
    opened: float  # when the audited attempt opened the window
    last: float
    more: int = 0
    channel: str = "console"


class FailedSignIns:
    """Which failed sign-ins get an entry of their own, and the count of the others per window."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self._open: dict[tuple[str, str, Target], Burst] = {}  # per channel: two per account, two for nobody
        self._ended: list[Burst] = []
        self._lock = threading.Lock()
        self.timer: PeriodicJob | None = None

    def note(self, reason: str, target: Target, now: float, channel: str = "console") -> bool:
        """True: audit this attempt (it opens a window); False: it is counted into the window's summary."""
        if reason == WRONG_CREDENTIALS and target.account_id is not None:
            return True  # the throttle bounds these per account
        key = (channel, reason, target)
        with self._lock:
            burst = self._open.get(key)
            if burst is not None and now - burst.opened < self.window:
                burst.more += 1
                burst.last = now
                return False
            if burst is not None:
                self._ended.append(burst)
            self._open[key] = Burst(reason, target, now, now, channel=channel)
            return True

    def ended(self, now: float) -> list[Burst]:
        """Take the windows that ended with attempts left to summarise (``now=inf``: all of them)."""
        with self._lock:
            for key, burst in list(self._open.items()):
                if now - burst.opened >= self.window:
                    self._ended.append(self._open.pop(key))
            taken, self._ended = [b for b in self._ended if b.more], []
            return taken

    def put_back(self, bursts: list[Burst]) -> None:
        """Summaries that could not be written, to be tried again."""
        with self._lock:
            self._ended.extend(bursts)


def _started(container: Container) -> FailedSignIns | None:
    """The tracker, if a failed sign-in has made one in this process."""
    found = container.services.get("console_sign_ins")
    return found if isinstance(found, FailedSignIns) else None


def failed_sign_ins(container: Container) -> FailedSignIns:
    found = _started(container)
    if found is not None:
        return found
    tracker = FailedSignIns(auth_services(container).login_throttle.window.total_seconds())
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


def _summary(burst: Burst) -> AuditEvent:
    details: dict[str, JsonValue] = {"more_attempts": burst.more, "first_at": _at(burst.opened),
                                     "last_at": _at(burst.last)}
    return _entry(None, burst.reason, burst.target, burst.channel, details)


async def _write(container: Container, tracker: FailedSignIns, due: list[Burst],
                 attempt: AuditEvent | None = None) -> None:
    """Write the summaries of ``due`` (and the attempt's own entry) in one batch; on failure the summaries
    are kept for the next try and the error is raised (the sign-in's page says the log is unavailable)."""
    events = [_summary(burst) for burst in due] + ([attempt] if attempt is not None else [])
    if not events:
        return
    try:
        await audit_services(container).writer.record(events)
    except BaseException:
        tracker.put_back(due)
        raise


def target_of(container: Container, username: str) -> Target:
    """The account a failed sign-in tried, if the typed username is one (the name itself is never kept).
    Blocking: call it in a worker thread."""
    with transaction(container.sessions) as session:
        found = get_account(session, username)
    return Target(found.organisation, found.id) if found is not None else Target()


async def record_failed_sign_in(container: Container, request: Request, reason: str, target: Target,
                                channel: str = "console") -> None:
    """Account for one failed sign-in at the console or (``channel="api"``) at ``POST /v1/auth/login``, or for
    a refused token request (``channel=TOKEN_CHANNEL``; see the module's docstring); raises
    :class:`audit.AuditWriteError` when an entry that is due cannot be written."""
    tracker = failed_sign_ins(container)
    now = container.clock.now().timestamp()
    due = tracker.ended(now)
    audited = tracker.note(reason, target, now, channel)
    attempt = _entry(request, reason, target, channel) if audited else None
    if tracker.timer is None:
        tracker.timer = PeriodicJob(lambda: summarise_ended(container), SUMMARY_SECONDS,
                                    name="console_sign_in_summaries")
        tracker.timer.start()
    await _write(container, tracker, due, attempt)


async def summarise_ended(container: Container, *, everything: bool = False) -> None:
    """Write the summaries of the windows that ended (``everything``: of all windows, as the gateway stops)."""
    tracker = _started(container)
    if tracker is None:
        return
    now = float("inf") if everything else container.clock.now().timestamp()
    await _write(container, tracker, tracker.ended(now))


async def close_sign_ins(container: Container) -> None:
    """Stop the timer and write what is still counted (the app's shutdown, before the audit writer closes)."""
    tracker = _started(container)
    if tracker is None:
        return
    if tracker.timer is not None:
        await tracker.timer.aclose()
        tracker.timer = None
    try:
        await summarise_ended(container, everything=True)
    except Exception as exc:  # the gateway stops all the same; the windows' first entries are in the log
        log.error("console_sign_in_summaries_lost", error_type=type(exc).__name__)
