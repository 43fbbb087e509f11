"""FastAPI dependencies that authenticate the caller and check the scope of its token.

Use as ``principal: Principal = Depends(require_scope(Scope.EXCHANGE))``. Missing or bad tokens → 401
with ``WWW-Authenticate``; a valid token without the scope → 403. Both are problem+json.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.auth.principal import Principal, Scope
from gateway.auth.setup import auth_services
from gateway.deps import container_of
from gateway.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /oauth/token or /v1/auth/login.")
# Declared through Depends so the OpenAPI document shows the bearer security scheme on every route;
# the check itself is ours (authenticate), so every failure is a problem+json.
_security = Depends(_bearer)


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


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that yields the caller's Principal if its token carries ``scope``."""

    # async so that FastAPI runs it on the event loop: the check is a signature verification against keys in
    # memory (a stat of the key file at most), far cheaper than the hop to a worker thread a sync one costs.
    async def dependency(request: Request,
                         _credentials: HTTPAuthorizationCredentials | None = _security) -> Principal:
        principal = authenticate(request)
        if not principal.has_scope(scope.value):
            raise Forbidden(f"the access token lacks the scope `{scope.value}`",
                            extra={"required_scope": scope.value})
        return principal

    dependency.__name__ = f"require_scope_{scope.name.lower()}"
    return dependency


