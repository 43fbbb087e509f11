"""Access tokens: short-lived signed JWTs, issued to partner systems and people, checked on every route.

Checklist applied by ``verify`` (in this order; the first failure rejects with 401):
1. the header names an allowed asymmetric algorithm (never ``none`` or HMAC) and a known ``kid``;
2. the signature verifies under a current or not-yet-retired gateway key (one retired at once after a leak is
   refused from the next check on: :mod:`gateway.auth.key_retirement`);
3. ``iss`` is this gateway and ``aud`` is this gateway's audience;
4. ``exp`` is in the future and ``nbf``/``iat`` not in the future (30 s leeway), by the injected clock;
5. ``sub``, ``org``, ``jti`` and ``kind`` are present.

A person's token also carries ``cred``, the fingerprint of the account it was issued for (its password hash,
organisation and roles: :func:`gateway.auth.accounts.credential_fingerprint`), which
:class:`gateway.auth.dependencies.TokenRequired` compares with the account on every use; a signature says only
what was true when the token was issued.

A partner system's token carries ``gen``, the key generation of its client when it was issued (bumped by every
re-registration and every disabling: :func:`gateway.auth.repository.upsert_client`, :func:`~gateway.auth.repository.
set_client_active`); :class:`gateway.auth.revocation.DisabledPrincipals` refuses a token of an older generation, so
giving a client a new key ends the tokens got with the old one, and enabling a disabled one does not bring back
the tokens it had. A token without ``gen`` is of generation 0.

A system's token may carry ``cnf`` (``x5t#S256``: RFC 8705), the thumbprint of the TLS client certificate it was
issued over (:mod:`gateway.auth.certificate_binding`); ``verify`` reads it onto the principal (a ``cnf`` it
cannot read is a 401), and :class:`gateway.auth.dependencies.TokenRequired` compares it with the certificate of
every request, which the signature cannot say anything about.

A token that passed is remembered by its exact text (so a changed byte is another token) with its
``exp``, and later presentations skip steps 1-5 as long as it has not expired (step 4's rule, same
leeway) and the verification key set is unchanged (a rotation or retirement clears the memory). Why: the
signature check was the largest single cost of an exchange request after the work itself, and a partner
system presents the same token for its whole lifetime. At most ``VERIFIED_TOKENS_KEPT`` are kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from gateway.auth.certificate_binding import CONFIRMATION_CLAIM, bound_thumbprint, confirmation
from gateway.auth.jose_segments import MalformedSegment, decode_segment
from gateway.auth.keys import SIGNING_ALGORITHM, SigningKeyStore
from gateway.auth.principal import Principal
from gateway.clock import Clock
from gateway.errors import Unauthorized
from gateway.ids import new_id

LEEWAY_SECONDS = 30
VERIFIED_IN_SCOPE = "wgs.verified_access_token"
"""ASGI scope key under which the rate limiter hands its verification on to the route, as ``(token text,
principal)``: :meth:`AccessTokenService.verify` once per request, not twice (see :mod:`gateway.ratelimit`)."""
VERIFIED_TOKENS_KEPT = 4096
_ALLOWED_ALGORITHMS = [SIGNING_ALGORITHM]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    jti: str
    kid: str = ""  # the signing key's id


class AccessTokenService:
    def __init__(self, keys: SigningKeyStore, clock: Clock, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._keys = keys
        self._clock = clock
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, tuple[Principal, int]] = {}  # token text -> (principal, exp); oldest first
        self._verified_under: object = None  # the key set those tokens were verified with
        self._verified_lock = threading.Lock()

    def issue(self, *, subject: str, organisation: str, scopes: list[str], kind: str = "system",
              roles: list[str] | None = None, client_id: str | None = None,
              audience: str | None = None, credential: str | None = None,
              generation: int | None = None, certificate_thumbprint: str | None = None) -> IssuedToken:
        now = int(self._clock.now().timestamp())
        key = self._keys.current()
        jti = new_id()
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": audience or self.audience, "sub": subject, "org": organisation,
            "scope": " ".join(sorted(scopes)), "iat": now, "nbf": now, "exp": now + self.ttl_seconds,
            "jti": jti, "kind": kind,
        }
        if client_id:
            claims["client_id"] = client_id
        if roles:
            claims["roles"] = sorted(roles)
        if credential:
            claims["cred"] = credential
        if generation:
            claims["gen"] = generation
        if certificate_thumbprint:
            claims[CONFIRMATION_CLAIM] = confirmation(certificate_thumbprint)
        token = jwt.encode({"alg": SIGNING_ALGORITHM, "kid": key.kid}, claims, key, algorithms=_ALLOWED_ALGORITHMS)
        return IssuedToken(token, self.ttl_seconds, claims["scope"], jti, key.kid or "")

    def signing_kid(self) -> str:
        """The id of the key tokens are signed with now."""
        return self._keys.current_kid()

    def sign_statement(self, *, typ: str, audience: str, claims: dict[str, Any], ttl_seconds: int) -> str:
        """A signed statement of the gateway to one partner system (e.g. a binding escalation decision).

        Its own ``typ`` header keeps it apart from access tokens: a holder accepts neither in place of
        the other, although both are signed by the same published keys."""
        now = int(self._clock.now().timestamp())
        key = self._keys.current()
        body = {**claims, "iss": self.issuer, "aud": audience, "iat": now, "exp": now + max(ttl_seconds, 1),
                "jti": new_id()}
        return jwt.encode({"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": typ}, body, key,
                          algorithms=_ALLOWED_ALGORITHMS)

    def verify(self, token: str) -> Principal:
        keys = self._keys.verification_keys()
        now = int(self._clock.now().timestamp())
        with self._verified_lock:
            if keys is not self._verified_under:
                self._verified.clear()
                self._verified_under = keys
            remembered = self._verified.get(token)
            if remembered is not None:
                if now < remembered[1] + LEEWAY_SECONDS:
                    return remembered[0]
                del self._verified[token]
        principal, expires = self._verify_fully(token, keys)
        with self._verified_lock:
            if keys is self._verified_under:
                if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                    del self._verified[next(iter(self._verified))]
                self._verified[token] = (principal, expires)
        return principal

    def _verify_fully(self, token: str, keys: KeySet) -> tuple[Principal, int]:
        header = _peek_header(token)
        if header.get("typ", "JWT") != "JWT":
            raise Unauthorized("not an access token")
        if header.get("alg") not in _ALLOWED_ALGORITHMS:
            raise Unauthorized("access token uses a disallowed algorithm")
        try:
            decoded = jwt.decode(token, keys, algorithms=_ALLOWED_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise Unauthorized("access token signature is invalid or its key is unknown") from exc
        registry = JWTClaimsRegistry(
            now=lambda: int(self._clock.now().timestamp()), leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer}, aud={"essential": True, "value": self.audience},
            exp={"essential": True}, sub={"essential": True}, jti={"essential": True},
            org={"essential": True}, kind={"essential": True, "values": ["system", "person"]})
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise Unauthorized(f"access token rejected: {exc.description}", extra={"claim_error": exc.error}) from exc
        claims = decoded.claims
        return Principal(kind=claims["kind"], subject=str(claims["sub"]), organisation=str(claims["org"]),
                         scopes=frozenset(str(claims.get("scope", "")).split()),
                         roles=frozenset(claims.get("roles", [])), token_id=str(claims["jti"]),
                         credential=str(claims.get("cred", "")), generation=_generation(claims),
                         certificate_thumbprint=bound_thumbprint(claims)), int(claims["exp"])


def _generation(claims: dict[str, Any]) -> int:
    """The token's ``gen`` (0 when absent); anything but a non-negative integer is a 401, never a 500 (only a
    token signed with the gateway's own key gets here, but a bad claim must still not pass as generation 0)."""
    value = claims.get("gen", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unauthorized("access token rejected: invalid claim `gen`")
    return value


def _peek_header(token: str) -> dict[str, Any]:
    """The JOSE header, parsed defensively before any key lookup."""
    try:
        return decode_segment(token.split(".")[0])
    except MalformedSegment as exc:
        raise Unauthorized("access token is malformed") from exc


class HolderTokenCache:
    """Tokens the gateway presents to holder systems (``aud`` = the holder's system id), reused until
    shortly before they expire so a busy exchange path does not sign one per call, and only while the key that
    signed them is the current one: after a rotation (``keys rotate --retire-previous-now`` above all, whose old
    key no holder should accept any more) the next call signs with the new key."""

    def __init__(self, tokens: AccessTokenService, clock: Clock) -> None:
        self._tokens = tokens
        self._clock = clock
        self._cache: dict[str, tuple[str, float, str]] = {}  # system -> (token, expires at, kid)

    async def __call__(self, system: str) -> str:
        now = self._clock.now().timestamp()
        cached = self._cache.get(system)
        if cached and cached[1] - now > 60 and cached[2] == self._tokens.signing_kid():
            return cached[0]
        issued = self._tokens.issue(subject="wgs-gateway", organisation="wgs-gateway", scopes=["holder"],
                                    kind="system", audience=system)
        self._cache[system] = (issued.access_token, now + issued.expires_in, issued.kid)
        return issued.access_token
