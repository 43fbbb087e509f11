"""The gateway's exception tree; mapped to RFC 9457 problem+json in one place (``gateway.problems``).

    GatewayError                      500  (never raised directly)
    ├── BadRequest                    400
    │   └── InvalidRegister           400  register file refused (line + reason)
    ├── Unauthorized                  401  missing/expired/forged credentials
    ├── Forbidden                     403  authenticated, but not allowed (scope, role, organisation)
    ├── NotFound                      404
    ├── Conflict                      409  idempotency clash, optimistic-lock loss, duplicates
    ├── PayloadTooLarge               413
    ├── Unprocessable                 422  well-formed but semantically wrong input
    │   └── PseudonymKeyUnknown       422  a polymorphic pseudonym under none of the gateway's keys (rotated)
    ├── TooManyRequests               429
    ├── OutcomeNotStored              500  holders were asked, the outcome not stored: do not retry
    │                                 503  no holder was asked: a retry is harmless
    └── ServiceUnavailable            503  a dependency (database, policy engine, partner) failed
        ├── DatabaseNotMigrated       503  schema is behind the code: run ``wgs-gateway db upgrade``
        ├── AuditCheckpointPending    503  no checkpoint covers the entries yet; one may be signed shortly
        └── AuditCheckpointUnverified 503  the log's stored checkpoint failed the gateway's own verification

``detail`` texts must never contain personal data: only references, pseudonyms and field names.

A refusal a person may read on the console's pages carries a ``code`` (and the ``values`` its words need):
the console words it in the page's language (``gateway.console.i18n``, ``refusal.<code>``), while the API's
problem document keeps the English ``detail``. Matching the English text instead would break, silently, at
the first rewording.
"""

from __future__ import annotations

from typing import Any, TypeVar

_E = TypeVar("_E", bound=BaseException)


class GatewayError(Exception):
    """Base of every error the gateway maps to a problem document."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, code: str | None = None,
                 values: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}
        self.code = code  # the reason, for a reader that words it itself; never in the problem document
        self.values = values or {}  # what the reason's words name (a tier, categories); no personal data


class BadRequest(GatewayError):
    status, slug, title = 400, "bad-request", "Bad request"


class InvalidRegister(BadRequest):
    slug, title = "invalid-register", "Invalid partnership register"


class Unauthorized(GatewayError):
    status, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token", extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail, extra=extra,
                         headers={"WWW-Authenticate": f'Bearer error="{error}"'})


class Forbidden(GatewayError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(GatewayError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(GatewayError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(GatewayError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class Unprocessable(GatewayError):
    status, slug, title = 422, "unprocessable", "Unprocessable request"


class PseudonymKeyUnknown(Unprocessable):
    """A polymorphic pseudonym made under none of the gateway's public keys: typically a partner's key fetched
    before that version was retired. A type of its own so that the partner client fetches the keys again for
    this refusal only, not for every 422 (a category the register does not know says nothing about keys)."""

    slug, title = "pseudonym-key-unknown", "Not under the gateway's keys"


class TooManyRequests(GatewayError):
    status, slug, title = 429, "too-many-requests", "Too many requests"


class ServiceUnavailable(GatewayError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class OutcomeNotStored(GatewayError):
    """An exchange's outcome row (which an Idempotency-Key retry would be answered from) could not be written, so
    nothing is answered. The status depends on whether holders were asked (``holders_asked``: their answers are
    logged). If they were, a 500, not a 503: a client retries 503s with the same key, and that retry would find
    no outcome and ask the holders a second time (without a key, a retry is a new exchange that asks them
    again). If none was (every target denied or escalated by policy), a retry asks no one twice, and opens no
    escalation case twice (the cases commit with the row): a 503, which clients retry.

    ``claim_lost``: the attempt lost its claim on the Idempotency-Key before the row (only where holders were
    asked: otherwise the attempt answers 409 and a retry runs the request again)."""

    slug, title = "outcome-not-stored", "Outcome not stored"

    def __init__(self, exchange_id: str, *, holders_asked: bool, claim_lost: bool = False) -> None:
        if not holders_asked:
            detail = (f"the outcome of exchange `{exchange_id}` could not be stored; no holder was asked and nothing "
                      "was disclosed or answered; retry it")
        elif claim_lost:
            detail = (f"exchange `{exchange_id}` lost its claim on the Idempotency-Key before its outcome was "
                      "stored: what its holders answered is logged (audit indices in the log) but is not answered; "
                      "do not retry it, ask your privacy officer")
        else:
            detail = (f"exchange `{exchange_id}` was logged (audit indices in the log) but its outcome could not be "
                      "stored; nothing is answered; do not retry it, ask your privacy officer")
        super().__init__(detail)
        self.status = 500 if holders_asked else 503


class DatabaseNotMigrated(ServiceUnavailable):
    slug, title = "database-not-migrated", "Database not migrated"


class AuditCheckpointPending(ServiceUnavailable):
    """A checkpoint over the entries asked for may be signed on demand in a moment, not now (``Retry-After``)."""

    slug, title = "checkpoint-pending", "Checkpoint pending"


class AuditCheckpointUnverified(ServiceUnavailable):
    """The checkpoint the log would serve failed verification against the log's own key and tree: the log is
    not vouched for (fail closed) until an operator has looked; the verifier CLI says what is wrong."""

    slug, title = "audit-checkpoint-unverified", "Audit checkpoint failed verification"


def cause_of(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of ``kind`` among ``exc``'s explicit causes (``raise ... from``), if any.

    Layers wrap what went wrong below them (the audit writer wraps the database's fault, a transaction wraps a
    precondition's refusal); whoever answers the request must still tell *which* fault it was — a lost race
    from a broken database, a take-over from a failure. Only ``__cause__`` is followed: an implicit
    ``__context__`` is whatever happened to be handled nearby, not what this failure was about.
    """
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__
    return cause
