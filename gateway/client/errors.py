"""The typed errors of the partner client, and how an HTTP answer becomes one.

Why a module of their own: callers catch these (``from gateway.client.api import ...`` re-exports them), and
the rule they keep matters on its own — an error's message carries the problem document's ``title`` and
``detail`` (RFC 9457, which the gateway keeps free of personal data) and never a raw answer body or a
validation error's input values, since messages end up in partner systems' logs.
"""

from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import ValidationError

_MESSAGE_LIMIT = 300
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # what the gateway accepts and echoes as X-Request-ID


class GatewayClientError(Exception):
    """The gateway refused or failed a call; ``problem`` is its problem+json body (``type``, ``title`` and
    ``detail`` are its members, None where absent). ``status`` is the HTTP status, or 0 when no answer came
    (see ``GatewayUnavailable``). ``idempotency_key`` is set on errors of ``exchange()``/``rerun()``: pass
    it back to resume that exchange. ``retry_after`` is the answer's ``Retry-After`` in seconds, where it
    had one. ``request_id`` is the ``X-Request-ID`` of the HTTP request the error came from (the gateway
    echoes the one the client sends, and writes it on every log line of that request): quote it to the
    gateway's operators to find the request in their logs; it is in the message too. It is set also when no
    answer came (the id the request was sent with), and is None only for an error no request was sent for."""

    def __init__(self, status: int, problem: dict[str, Any], *, idempotency_key: str | None = None,
                 retry_after: float | None = None, request_id: str | None = None) -> None:
        self.status = status
        self.problem = problem
        self.idempotency_key = idempotency_key
        self.retry_after = retry_after
        self.request_id = request_id
        super().__init__(f"{status}: {(self.detail or self.title or 'error')[:_MESSAGE_LIMIT]}")

    def __reduce__(self) -> tuple[Any, ...]:
        # What Exception's own reduce does, cls(*args), fails here (the message is no status and problem),
        # so an error that crosses a process boundary — a worker pool, a task queue — would turn into a
        # TypeError on arrival. Rebuilt from the message and every attribute instead.
        return _restored, (type(self), self.args, dict(self.__dict__))

    def __str__(self) -> str:
        # The id is read when the message is made, not at construction: the client fills it in on errors
        # made before the request was known (the call's deadline).
        said = super().__str__()
        return f"{said} (request {self.request_id})" if self.request_id else said

    @property
    def type(self) -> str | None:
        """The problem type URI (a stable, machine-readable kind of error)."""
        return _text(self.problem.get("type"))

    @property
    def title(self) -> str | None:
        """The problem's short, human-readable summary of its type."""
        return _text(self.problem.get("title"))

    @property
    def detail(self) -> str | None:
        """The problem's explanation of this occurrence (free of personal data: the gateway masks it)."""
        return _text(self.problem.get("detail"))

    @property
    def instance(self) -> str | None:
        """The problem's ``instance`` (the path the gateway answered for), where it has one."""
        return _text(self.problem.get("instance"))


class GatewayUnavailable(GatewayClientError):
    """No answer (connection failure or timeout: ``status == 0``, the transport exception is the
    ``__cause__``; or the call's deadline passed: ``DeadlineExceeded``) or 502/503/504 once the retries are
    spent. Whether an exchange happened is unknown: resume it with its ``idempotency_key``."""


class DeadlineExceeded(GatewayUnavailable):
    """The call's ``deadline`` passed before it ended (``status == 0``): the request still running was
    abandoned, or none was made yet. ``deadline`` is the bound in seconds; ``request_ids`` the
    ``X-Request-ID`` of every HTTP request the call made, in order (``request_id`` is the last, the one the
    gateway may still be answering). Whether an exchange happened is unknown: resume it with its
    ``idempotency_key``."""

    def __init__(self, deadline: float, request_ids: tuple[str, ...]) -> None:
        super().__init__(0, {"title": "no answer from the gateway",
                             "detail": f"the call's deadline of {deadline:g} s passed"},
                         request_id=request_ids[-1] if request_ids else None)
        self.deadline = deadline
        self.request_ids = request_ids


class GatewayThrottled(GatewayClientError):
    """429 once the retries or the wait allowed for back-pressure are spent: the gateway's rate limit refused
    every attempt. The limit refuses a call before anything of it is done, so it was not acted on;
    ``retry_after`` says when to try again. When an earlier attempt of the same call may have reached the
    gateway (a timeout, a 5xx, a busy 409), the last 429 proves nothing about it: that ends as
    ``GatewayUnavailable`` (status 429), to be resumed with the ``idempotency_key``."""


class GatewayBusy(GatewayClientError):
    """The first attempt of this exchange was still being answered (409 with ``Retry-After``) when
    ``busy_wait`` ran out; resume it later with its ``idempotency_key``."""


class ClientClosed(GatewayClientError):
    """A call on a ``GatewayClient`` after its ``aclose()`` (or after leaving its ``async with``): nothing more
    is sent (``status == 0``). From ``exchange()``/``rerun()`` it carries the ``idempotency_key`` as the other
    errors do: an earlier attempt of the same call (before a retry met the closed client) may have reached the
    gateway, so resume it with that key on a new client."""

    def __init__(self, *, detail: str = "the GatewayClient was closed (aclose() or the end of its async with): make "
                                        "a new one", request_id: str | None = None) -> None:
        super().__init__(0, {"title": "client closed", "detail": detail}, request_id=request_id)


class ClosedInFlight(ClientClosed, GatewayUnavailable):
    """The client was closed (``aclose()``, the end of its ``async with``, in another task) while a request of
    this call was waiting for its answer: the request was abandoned, and nothing more is sent — no retry, even
    of an exchange with its ``Idempotency-Key``. Both a ``ClientClosed`` and a ``GatewayUnavailable``
    (``status == 0``): the request may have reached the gateway, so whether an exchange happened is unknown —
    resume it with its ``idempotency_key`` on a new client. ``request_id`` is the abandoned request's; what
    httpx raised when its connection was closed under it is the ``__cause__``.

    Why a type of its own: httpx's error there (a ``ReadError`` with no message, or a ``RuntimeError``) read as
    a network failure — retried after a pause on a client that could no longer send, or raised as "no answer
    from the gateway" — when the caller's own program had ended the client."""

    def __init__(self, *, request_id: str | None = None) -> None:
        super().__init__(detail="the GatewayClient was closed while this call's request was in flight: whether "
                                "the gateway received it is unknown", request_id=request_id)


class InvalidResponse(GatewayClientError):
    """An answer the API does not promise (not JSON, fields missing); ``status`` is its HTTP status."""


class MetadataMismatch(InvalidResponse):
    """The gateway's authorization server metadata (RFC 8414) names another issuer than the one this client
    was made for (``issuer=``, else ``base_url``), or a token endpoint on another origin: no client assertion
    is signed for it. Why refused rather than used: the token endpoint named there is the audience of the
    assertion (RFC 7523), and a metadata document that names another authorization server's endpoint would
    have this system sign an assertion that server accepts — one the server answering could pass on within its
    minute of validity and be given a token as this system (RFC 8414 section 3.3: the issuer in the metadata
    must be identical to the one the client expected). ``status`` is the metadata answer's (200)."""


class UnopenablePseudonym(InvalidResponse):
    """An encrypted pseudonym in the gateway's answer that this partner cannot open: malformed, or not made
    for its recipient key (the gateway's keys changed since the key was fetched, or the gateway is not the
    one the key came from). ``index`` is its position in the answer, i.e. that of the subject in the call;
    the pseudonym itself is never in the error. The pseudonym layer's own error is the ``__cause__``
    (:class:`~gateway.pseudonyms.errors.WrongKey` or ``InvalidPseudonym``, whose messages hold no values)."""

    def __init__(self, status: int, problem: dict[str, Any], *, index: int, request_id: str | None = None) -> None:
        super().__init__(status, problem, request_id=request_id)
        self.index = index


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def copied(error: GatewayClientError) -> GatewayClientError:
    """A new error of the same kind and content: for a failure shared by several calls (one token fetch they
    all waited for), so that what one call sets on its error (``idempotency_key``) is not set on another's."""
    copy = _restored(type(error), error.args, dict(error.__dict__))
    copy.__cause__ = error.__cause__
    return copy


def _restored(cls: type[GatewayClientError], args: tuple[Any, ...], state: dict[str, Any]) -> GatewayClientError:
    """An error of ``cls`` with the message ``args`` and the attributes ``state``, without its ``__init__``."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def request_id(response: httpx.Response) -> str | None:
    """The id of the request ``response`` answers: the gateway's ``X-Request-ID`` (the one the client sent,
    echoed), else the one it was sent with — an answer of something in between (a proxy's 502) has none, and
    a value not shaped like an id is not taken into messages."""
    answered: str = response.headers.get("x-request-id", "")
    if _REQUEST_ID.fullmatch(answered):
        return answered
    sent: str | None = response.request.headers.get("x-request-id")
    return sent


def sent_request_id(failure: httpx.HTTPError) -> str | None:
    """The ``X-Request-ID`` a request that got no (usable) answer was sent with."""
    try:
        sent: str | None = failure.request.headers.get("x-request-id")
    except RuntimeError:  # httpx raises this when the exception carries no request
        return None
    return sent


def retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date, relative to ``now``),
    or None without a usable one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit() alone also accepts "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(0.0, when.timestamp() - now)


def problem(response: httpx.Response) -> dict[str, Any]:
    """The answer's problem document; for an answer that is not one, only what kind of answer it was (its
    body may be anything, e.g. a proxy's page echoing the request)."""
    try:
        body = response.json()
    except ValueError:
        return {"title": "non-JSON error", "status": response.status_code}
    if not isinstance(body, dict):
        return {"title": "error answer that is not a JSON object", "status": response.status_code}
    return body


def throttled(response: httpx.Response, now: float) -> GatewayThrottled:
    return GatewayThrottled(429, problem(response), retry_after=retry_after(response, now),
                            request_id=request_id(response))


def invalid(response: httpx.Response, detail: str) -> InvalidResponse:
    return InvalidResponse(response.status_code, {"title": "invalid answer from the gateway", "detail": detail,
                                                  "status": response.status_code}, request_id=request_id(response))


def unopenable(response: httpx.Response, index: int, wrong_key: bool) -> UnopenablePseudonym:
    why = "was not made for this partner's recipient key" if wrong_key else "is malformed"
    detail = f"{response.request.url.path}: pseudonym {index} of the answer {why}"
    return UnopenablePseudonym(response.status_code, {"title": "invalid answer from the gateway", "detail": detail,
                                                      "status": response.status_code}, index=index,
                               request_id=request_id(response))


def unusable(exc: httpx.HTTPError) -> InvalidResponse:
    return InvalidResponse(0, {"title": "invalid answer from the gateway", "detail": f"{type(exc).__name__}: {exc}"},
                           request_id=sent_request_id(exc))


def undecodable(response: httpx.Response, exc: Exception) -> InvalidResponse:
    """An answer that could not be read as promised. For a validation error only where and what (pydantic's
    own message quotes the offending input, e.g. a disclosed record's fields: personal data)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        what = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in errors[:5])
        reason = f"{len(errors)} invalid field(s): {what}"
    elif isinstance(exc, json.JSONDecodeError):
        reason = "not JSON"
    elif isinstance(exc, KeyError):
        reason = f"missing {exc}"
    else:  # other messages may quote the value they refused
        reason = f"unexpected content ({type(exc).__name__})"
    return invalid(response, f"{response.request.url.path}: {reason}"[:500])
