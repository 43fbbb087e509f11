"""The statements a test's own work runs on the gateway's engine, without those of the gateway's timers.

A running app re-reads the disabled clients and accounts every ``revocation_refresh_seconds`` (5 s by default:
:class:`gateway.auth.revocation.DisabledPrincipals`). A listener on the engine sees that read as well when it
falls inside the counted block, and a CI run failed on one "FROM accounts" too many. Its statements are left
out by where they come from (``DisabledPrincipals.load`` on the calling thread's stack), not by their text, so
that any other read the block makes — of the same table, from the request, the service or the audit writer's
thread — is still counted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from sqlalchemy import event
from sqlalchemy.engine import Engine

from gateway.auth.revocation import DisabledPrincipals

_TIMER_CODE = (DisabledPrincipals.load.__code__,)


def _from_a_timer() -> bool:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code in _TIMER_CODE:
            return True
        frame = frame.f_back
    return False


@contextmanager
def statements_run(engine: Engine, keep: Callable[[str], bool] = lambda _statement: True) -> Iterator[list[str]]:
    """The statements (those ``keep`` accepts) run on every connection of ``engine`` while the block runs, but
    for the disabled list's re-reads."""
    seen: list[str] = []

    def remember(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if keep(statement) and not _from_a_timer():
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def reads_accounts(statement: str) -> bool:
    return "FROM accounts" in statement
