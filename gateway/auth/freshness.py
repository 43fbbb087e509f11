"""One request's record of the key files whose freshness it has checked: each is ``stat``ed once per request.

Why: the token-signing key store reads its file's stamp on every use (:mod:`gateway.auth.keys`), so that a key
retired by another process stops counting from the next use on. An exchange request used it three times (the
rate limiter's token check, the route's, the token for the holder), a few microseconds to a few milliseconds
apart: three ``stat`` calls and three comparisons where one says the same. Within one request the order of a
retirement and the request's own uses cannot be told apart anyway; across requests nothing changes: every
request checks the file again, at its first use.

:class:`~gateway.middleware.RequestContextMiddleware` opens a :class:`RequestChecks` per HTTP request
(:func:`begin`) and closes it when the request ends (:func:`end`). Closed, it skips nothing, also for a task the
request started and that outlives it (a task keeps the context it was started in, so it still sees the record).
Code that runs outside a request (the CLI, periodic jobs, tests calling a store directly) sees none and checks on
every use, as before.
"""

from __future__ import annotations

from contextvars import ContextVar, Token


class RequestChecks:
    """The stores (by identity) that checked their file during one open request."""

    __slots__ = ("checked", "open")

    def __init__(self) -> None:
        self.checked: list[object] = []
        self.open = True

    def has_checked(self, store: object) -> bool:
        """Whether ``store`` checked its file in this request, which is still running."""
        return self.open and any(seen is store for seen in self.checked)

    def note(self, store: object) -> None:
        if self.open:
            self.checked.append(store)


_CURRENT: ContextVar[RequestChecks | None] = ContextVar("wgs_key_file_checks", default=None)


def current() -> RequestChecks | None:
    """The running request's record, or None outside a request."""
    return _CURRENT.get()


def begin() -> tuple[RequestChecks, Token[RequestChecks | None]]:
    """Open a record for the request about to run in this context."""
    checks = RequestChecks()
    return checks, _CURRENT.set(checks)


def end(checks: RequestChecks, token: Token[RequestChecks | None]) -> None:
    """Close the request's record (for every context that copied it too) and restore the context."""
    checks.open = False
    checks.checked.clear()
    _CURRENT.reset(token)
