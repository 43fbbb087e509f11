"""Registration of partner systems as OAuth clients (used by the CLI, the demo and tests).

A client id must be a partner system that the register lists for an organisation: the token's ``org``
claim comes from the register, never from the caller.
"""

from __future__ import annotations

from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from gateway.auth import repository
from gateway.auth.passwords import generate_secret, hash_secret
from gateway.auth.principal import Scope
from gateway.clock import Clock
from gateway.errors import Unprocessable
from gateway.register.model import Register

SYSTEM_SCOPES = {Scope.EXCHANGE, Scope.DISCOVERY, Scope.ENROL, Scope.REGISTER_READ}


def _check(register: Register, system_id: str, scopes: list[str]) -> str:
    organisation = register.organisation_of_system(system_id)
    if organisation is None:
        raise Unprocessable(f"`{system_id}` is not a partner system in register {register.version}")
    bad = [scope for scope in scopes if scope not in {s.value for s in SYSTEM_SCOPES}]
    if not scopes or bad:
        raise Unprocessable(f"invalid scope(s) for a partner system: {', '.join(bad) or 'none given'}")
    return organisation


def register_key_client(session: Session, register: Register, system_id: str, scopes: list[str],
                        jwks: dict[str, Any], clock: Clock) -> repository.ClientRecord:
    """Register (or re-key) a system that authenticates with ``private_key_jwt``."""
    organisation = _check(register, system_id, scopes)
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise Unprocessable("the JWKS could not be read") from exc
    if any(key.is_private for key in keys.keys):
        raise Unprocessable("the JWKS contains private key material; register public keys only")
    public = {"keys": [key.as_dict(private=False) for key in keys.keys]}
    record = repository.ClientRecord(system_id, organisation, "private_key_jwt", None, public, sorted(scopes), True)
    repository.upsert_client(session, record, clock.now())
    return record


def register_secret_client(session: Session, register: Register, system_id: str, scopes: list[str],
                           clock: Clock, secret: str | None = None) -> tuple[repository.ClientRecord, str]:
    """Register a system that authenticates with a client secret; returns the secret (shown once)."""
    organisation = _check(register, system_id, scopes)
    secret = secret or generate_secret()
    record = repository.ClientRecord(system_id, organisation, "client_secret", hash_secret(secret), None,
                                     sorted(scopes), True)
    repository.upsert_client(session, record, clock.now())
    return record, secret
