"""FastAPI dependencies that authenticate the caller and check the scope of its token.

Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))``. Missing or bad tokens → 401
with ``WWW-Authenticate``; a valid token without the scope → 403. Both are problem+json.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from gateway.auth.principal import Principal, Scope
from gateway.auth.setup import auth_services
from gateway.deps import container_of
from gateway.errors import Forbidden, Unauthorized

_DESCRIPTION = "An access token from POST /oauth/token or /v1/auth/login."


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer access token is required", error="invalid_request")
    auth = auth_services(container_of(request))
    principal = auth.tokens.verify(token.strip())
    auth.disabled.check(principal)  # a token outlives the disabling of its client or account otherwise
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
    the hop to a worker thread a sync one costs. Nothing is cached between requests: every call verifies the
    token and asks whether it, its client or its account was revoked or disabled meanwhile."""

    def __init__(self, scope: Scope) -> None:
        self.model = HTTPBearerModel(description=_DESCRIPTION)
        self.scheme_name = "HTTPBearer"
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:
        principal = authenticate(request)
        if not principal.has_scope(self.scope.value):
            raise Forbidden(f"the access token lacks the scope `{self.scope.value}`",
                            extra={"required_scope": self.scope.value})
        return principal


def require_scope(scope: Scope) -> ScopeRequired:
    """Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))``."""
    return ScopeRequired(scope)
