"""FastAPI dependencies that authenticate the caller and check the scope of its token.

Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))`` (or ``require_any_scope``, or a
``TokenRequired`` with a rule of its own). Missing or bad tokens → 401 with ``WWW-Authenticate``; a valid token
without the scope → 403. Both are problem+json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from gateway.auth.accounts import check_person_token
from gateway.auth.certificate_binding import check_presented
from gateway.auth.principal import Principal, Scope
from gateway.auth.setup import auth_services
from gateway.auth.tokens import VERIFIED_IN_SCOPE
from gateway.db.engine import transaction
from gateway.deps import container_of
from gateway.errors import Forbidden, Unauthorized

_DESCRIPTION = "An access token from POST /oauth/token or /v1/auth/login."


def _verified(request: Request) -> Principal:
    """The token's principal, checked in memory only: signature and claims, a system's not disabled, and a
    certificate-bound token presented over its certificate. Signature and claims are the rate limiter's check
    when it checked this request's token already (:data:`~gateway.auth.tokens.VERIFIED_IN_SCOPE`): the same
    service a few microseconds earlier; the rest is checked here every time.

    A person's token is not checked against the in-memory list of disabled accounts: :class:`TokenRequired`
    reads the account itself on every use, which says whether it is active *now*. The list, read every few
    seconds, lagged behind a ``users enable``: a person who signed in right after it (the sign-in reads the
    account, so it succeeded) got a token refused until the list was next read."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer access token is required", error="invalid_request")
    token = token.strip()
    container = container_of(request)
    auth = auth_services(container)
    handed = request.scope.get(VERIFIED_IN_SCOPE)  # the rate limiter's verification of this very token
    principal = handed[1] if handed is not None and handed[0] == token else auth.tokens.verify(token)
    if principal.kind != "person":  # a token outlives the disabling of its client otherwise
        auth.disabled.check(principal)
    if principal.certificate_thumbprint is not None:  # RFC 8705 §3: a bound token only with its certificate
        check_presented(request, container.settings, principal.certificate_thumbprint)
    return principal


def _check_account(request: Request, principal: Principal) -> str:
    """A person's token against the account as it is now (one read; blocking): see
    :func:`gateway.auth.accounts.check_person_token`. The account's id."""
    container = container_of(request)
    with transaction(container.sessions) as session:
        return check_person_token(session, principal, auth_services(container).credential_key).id


class TokenRequired(SecurityBase):
    """A dependency that yields the caller's Principal if its token is valid and ``authorise`` accepts it.

    A security scheme itself (the OpenAPI document shows the bearer scheme, named ``HTTPBearer``, on every
    route that uses it) rather than a function depending on FastAPI's ``HTTPBearer``: one dependency to solve
    per request instead of two levels of them (with the container read in the route, the exchange's dependency
    solving went from ~0.068 to ~0.051 ms of the event loop per request, token check included). The check is
    ours, so every failure is a problem+json. Async so that FastAPI runs it on the event loop: a signature
    verification against keys in memory (a stat of the key file at most) is far cheaper than the hop to a
    worker thread a sync one costs (a person's token alone costs that hop, for the read of its account).
    Nothing is cached between requests: every call verifies the token and asks whether it, its client or its
    account was revoked or disabled meanwhile, and whether a person's account still is what the token was
    issued for.

    Every route that needs a token takes it through this class (or :class:`ScopeRequired`), never by checking
    the header from a plain function or the handler: FastAPI documents a security requirement only for a
    dependency that is a ``SecurityBase``, so such a route was shown as public in ``/openapi.json``."""

    def __init__(self, authorise: Callable[[Principal], None]) -> None:
        self.model = HTTPBearerModel(description=_DESCRIPTION)
        self.scheme_name = "HTTPBearer"
        self.authorise = authorise

    async def __call__(self, request: Request) -> Principal:
        principal = _verified(request)  # inlined: no coroutine of its own on the exchange's hot path
        if principal.kind == "person":
            # kept on the principal the route gets: its audit entries name the account by id without reading
            # it again
            account_id = await run_in_threadpool(_check_account, request, principal)
            principal = dataclasses.replace(principal, account_id=account_id)
        request.state.principal = principal
        self.authorise(principal)
        return principal


class ScopeRequired(TokenRequired):
    """A token carrying ``scope`` (403 problem+json with ``required_scope`` otherwise)."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(self._check)
        self.scope = scope

    def _check(self, principal: Principal) -> None:
        if not principal.has_scope(self.scope.value):
            raise Forbidden(f"the access token lacks the scope `{self.scope.value}`",
                            extra={"required_scope": self.scope.value})


def require_scope(scope: Scope) -> ScopeRequired:
    """Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))``."""
    return ScopeRequired(scope)


def require_any_scope(*scopes: Scope) -> TokenRequired:
    """A token carrying at least one of ``scopes``, e.g. the requester system or its privacy officer."""
    names = [scope.value for scope in scopes]

    def check(principal: Principal) -> None:
        if not any(principal.has_scope(name) for name in names):
            raise Forbidden("the access token lacks the scope " + " or ".join(f"`{name}`" for name in names))
    return TokenRequired(check)
