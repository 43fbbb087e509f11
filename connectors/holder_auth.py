"""Partner side: only the gateway may query a holder. Its bearer JWT must verify against the gateway's
published JWKS and be addressed to this partner system (``aud``), unexpired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

ALGORITHMS = ["Ed25519", "ES256"]


class TokenRefused(Exception):
    pass


class JwksSource:
    """The gateway's public keys, from a URL (re-fetched on an unknown ``kid``, at most every 10 s) or given."""

    def __init__(self, url: str | None = None, jwks: dict[str, Any] | None = None) -> None:
        self._url = url
        self._jwks = jwks
        self._fetched_at = 0.0

    def point_to(self, url: str) -> None:
        """Set the JWKS URL once the gateway's address is known (partners may start first)."""
        self._url = url
        self._jwks = None

    def keys(self, refresh: bool = False) -> KeySet:
        if self._url and (self._jwks is None or (refresh and time.monotonic() - self._fetched_at > 10)):
            response = httpx.get(self._url, timeout=5.0)
            response.raise_for_status()
            self._jwks = response.json()
            self._fetched_at = time.monotonic()
        if self._jwks is None:
            raise TokenRefused("no gateway keys configured")
        return KeySet.import_key_set(self._jwks)  # type: ignore[arg-type]


def make_verifier(system: str, source: JwksSource, now: Callable[[], float] = time.time) -> Callable[[str], None]:
    def verify(token: str) -> None:
        try:
            try:
                decoded = jwt.decode(token, source.keys(), algorithms=ALGORITHMS)
            except JoseError:
                decoded = jwt.decode(token, source.keys(refresh=True), algorithms=ALGORITHMS)
            JWTClaimsRegistry(now=lambda: int(now()), leeway=30, aud={"essential": True, "value": system},
                              exp={"essential": True}).validate(decoded.claims)
        except (JoseError, ValueError, httpx.HTTPError) as exc:
            raise TokenRefused("the gateway token was not accepted") from exc

    return verify
