"""FastAPI dependencies that authenticate the caller and check the scope of its token.

Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))``. Missing or bad tokens → 401
with ``WWW-Authenticate``; a valid token without the scope → 403. Both are problem+json.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from gateway.auth.accounts import check_person_token
from gateway.auth.principal import Principal, Scope
from gateway.auth.setup import auth_services
from gateway.db.engine import transaction
from gateway.deps import container_of
from gateway.errors import Forbidden, Unauthorized

_DESCRIPTION = "An access token from POST /oauth/token or /v1/auth/login."


def _verified(request: Request) -> Principal:
    """The token's principal, checked in memory only: signature and claims, and not disabled."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer access token is required", error="invalid_request")
    auth = auth_services(container_of(request))
    principal = auth.tokens.verify(token.strip())
    auth.disabled.check(principal)  # a token outlives the disabling of its client or account otherwise
    return principal


def _check_account(request: Request, principal: Principal) -> None:
    """A person's token against the account as it is now (one read; blocking): see
    :func:`gateway.auth.accounts.check_person_token`."""
    container = container_of(request)
    with transaction(container.sessions) as session:
        check_person_token(session, principal, auth_services(container).credential_key)


def authenticate(request: Request) -> Principal:
    """The caller of a sync dependency or route (FastAPI runs those in a worker thread): a person's token
    costs a read of the account here. From async code use :func:`authenticated`, which does that read in a
    worker thread instead of on the event loop."""
    principal = _verified(request)
    if principal.kind == "person":
        _check_account(request, principal)
    request.state.principal = principal
    return principal


async def authenticated(request: Request) -> Principal:
    """:func:`authenticate` for async code. A partner system's token is checked without leaving the event loop
    and without a database round trip (the exchange's hot path); a person's costs one read of the account, in a
    worker thread."""
    principal = _verified(request)
    if principal.kind == "person":
        await run_in_threadpool(_check_account, request, principal)
    request.state.principal = principal
    return principal


class ScopeRequired(SecurityBase):
    """A dependency that yields the caller's Principal if its token carries ``scope``.

    A security scheme itself (the OpenAPI document shows the bearer scheme, named ``HTTPBearer``, on every
    route that uses it) rather than a function depending on FastAPI's ``HTTPBearer``: one dependency to solve
    per request instead of two levels of them (with the container read in the route, the exchange's dependency
    solving went from ~0.068 to ~0.051 ms of the event loop per request, token check included). The check is
    ours (:func:`authenticate`), so every failure is a problem+json. Async so that FastAPI runs it on the event
    loop: a signature verification against keys in memory (a stat of the key file at most) is far cheaper than
    the hop to a worker thread a sync one costs (a person's token alone costs that hop, for the read of its
    account). Nothing is cached between requests: every call verifies the token and asks whether it, its client
    or its account was revoked or disabled meanwhile, and whether a person's account still is what the token
    was issued for."""

    def __init__(self, scope: Scope) -> None:
        self.model = HTTPBearerModel(description=_DESCRIPTION)
        self.scheme_name = "HTTPBearer"
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:
        principal = _verified(request)  # inlined authenticated(): no coroutine of its own on the hot path
        if principal.kind == "person":
            await run_in_threadpool(_check_account, request, principal)
        request.state.principal = principal
        if not principal.has_scope(self.scope.value):
            raise Forbidden(f"the access token lacks the scope `{self.scope.value}`",
                            extra={"required_scope": self.scope.value})
        return principal


def require_scope(scope: Scope) -> ScopeRequired:
    """Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))``."""
    return ScopeRequired(scope)
