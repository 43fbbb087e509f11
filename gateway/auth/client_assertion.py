"""``private_key_jwt`` client authentication (RFC 7523 §2.2) as an authlib client-auth method.

Checklist for a client assertion (any failure → ``invalid_client``, nothing else is revealed):
1. ``client_assertion_type`` is the JWT-bearer URN and an assertion is present;
2. the header's algorithm is Ed25519 or ES256 (never ``none``/HMAC);
3. ``iss`` names a registered, active client that authenticates by ``private_key_jwt``, of a system in the
   register in force;
4. the signature verifies under that client's registered public keys;
5. ``iss`` == ``sub`` == client id; ``aud`` is this token endpoint or the issuer, or a list of those alone
   (an assertion also meant for another server could be replayed here by that server);
6. ``exp`` is in the future, and no further out than the configured maximum assertion age;
7. ``jti`` is present and has never been seen for this client (replay guard in the database, so it
   holds across gateway processes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy.orm import Session

from gateway.auth import repository
from gateway.auth.jose_segments import decode_segment
from gateway.client.models import SLUG_PATTERN
from gateway.clock import Clock

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_KEY_TYPES = {"Ed25519": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}
"""Each algorithm a client assertion may use, with the key type and curve it verifies with."""
ASSERTION_ALGORITHMS = list(ASSERTION_KEY_TYPES)
LEEWAY_SECONDS = 30


def _claims_unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header_b64, payload_b64, _signature = assertion.split(".")
        return decode_segment(header_b64), decode_segment(payload_b64)
    except ValueError as exc:  # a wrong number of segments, or a MalformedSegment
        raise InvalidClientError(description="client assertion is malformed") from exc


def make_private_key_jwt_method(session: Session, clock: Clock, audiences: set[str],
                                max_age_seconds: int) -> Callable[[Any, Any], Any]:
    """Build the authlib auth-method function bound to this request's session and clock."""

    def authenticate(query_client: Callable[[str], Any], request: Any) -> Any:
        form = request.form
        if form.get("client_assertion_type") != JWT_BEARER:
            return None
        assertion = form.get("client_assertion")
        if not assertion:
            raise InvalidClientError(description="client_assertion is missing")
        header, unverified = _claims_unverified(assertion)
        if header.get("alg") not in ASSERTION_ALGORITHMS:
            raise InvalidClientError(description="client assertion uses a disallowed algorithm")
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or (form.get("client_id") and form.get("client_id") != client_id):
            raise InvalidClientError(description="client assertion issuer does not match the client")
        if not re.fullmatch(SLUG_PATTERN, client_id):  # every client is a system of the register
            raise InvalidClientError(description="client assertion issuer is no client id")
        client = query_client(client_id)
        if client is None or client.record.auth_method != "private_key_jwt" or not client.record.jwks:
            raise InvalidClientError(description="unknown client or client does not use private_key_jwt")
        try:
            keys = KeySet.import_key_set(client.record.jwks)
            decoded = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="client assertion signature is invalid") from exc
        now = int(clock.now().timestamp())
        registry = JWTClaimsRegistry(
            now=lambda: now, leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": client_id}, sub={"essential": True, "value": client_id},
            aud={"essential": True, "values": sorted(audiences)}, exp={"essential": True},
            jti={"essential": True})
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidClientError(description=f"client assertion rejected: {exc.description}") from exc
        audience = decoded.claims["aud"]  # a string or a list of strings: the registry checked that
        if any(value not in audiences for value in ([audience] if isinstance(audience, str) else audience)):
            # Any other audience named could replay the assertion here (RFC 7523bis, audience injection).
            raise InvalidClientError(description="client assertion aud names another audience besides this server")
        expires = int(decoded.claims["exp"])
        if expires - now > max_age_seconds + LEEWAY_SECONDS:
            raise InvalidClientError(description="client assertion lives longer than allowed")
        jti = str(decoded.claims["jti"])[:128]
        # Remembered for as long as the assertion is accepted, leeway included: forgotten at its bare ``exp``
        # it could be replayed during the leeway that follows.
        if not repository.remember_assertion(session, client_id, jti,
                                             datetime.fromtimestamp(expires + LEEWAY_SECONDS, UTC), clock.now()):
            raise InvalidClientError(description="client assertion was already used (replay)")
        return client

    return authenticate
