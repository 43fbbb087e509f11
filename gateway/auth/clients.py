"""Registration of partner systems as OAuth clients (used by the CLI, the demo and tests).

A client id must be a partner system that the register lists for an organisation: the token's ``org``
claim comes from the register, never from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from gateway.auth import repository
from gateway.auth.certificate_pins import checked_pins
from gateway.auth.client_assertion import ASSERTION_ALGORITHMS, ASSERTION_KEY_TYPES
from gateway.auth.passwords import generate_secret, hash_secret
from gateway.auth.principal import Scope
from gateway.clock import Clock
from gateway.errors import Conflict, Unprocessable
from gateway.register.model import Register

SYSTEM_SCOPES = {Scope.EXCHANGE, Scope.DISCOVERY, Scope.ENROL, Scope.REGISTER_READ, Scope.AUDIT_RECEIPTS}


class ClientDisabled(Conflict):
    """Registering a disabled client again, without saying to keep it disabled."""


def _active_after(session: Session | Connection, system_id: str, keep_disabled: bool) -> bool:
    """Whether the client is active once registered (again): a new one or an enabled one is; a disabled one
    stays disabled, and only when ``keep_disabled`` says so is it registered at all.

    Why: registering a client again (new keys, a new secret) used to enable a disabled one by the way. An
    operator who disabled a system whose key leaked, and then gave it a new key, had it working again before
    deciding to: enabling is its own, audited step (``wgs-gateway clients enable``,
    :mod:`gateway.auth.access_changes`), and new credentials for a disabled client are given with the client
    kept disabled. ``keep_disabled`` for a client that is not disabled is refused rather than ignored: it
    would look as if it disabled one."""
    existing = repository.get_client(session, system_id)
    if existing is not None and not existing.active:
        if not keep_disabled:
            raise ClientDisabled(f"client {system_id} is disabled; registering it again does not enable it")
        return False
    if keep_disabled:
        raise Unprocessable(f"client {system_id} is not disabled; keeping it disabled applies to a disabled one")
    return True


def _store(session: Session | Connection, record: repository.ClientRecord, clock: Clock) -> None:
    """Write the registration, or refuse it (nothing written) when the client was enabled or disabled since it
    was read: see :func:`repository.upsert_client`."""
    if not repository.upsert_client(session, record, clock.now()):
        raise Conflict(f"client {record.client_id} was enabled or disabled meanwhile; nothing was registered, "
                       "try again")


def _check(register: Register, system_id: str, scopes: list[str]) -> str:
    organisation = register.organisation_of_system(system_id)
    if organisation is None:
        raise Unprocessable(f"`{system_id}` is not a partner system in register {register.version}")
    bad = [scope for scope in scopes if scope not in {s.value for s in SYSTEM_SCOPES}]
    if not scopes or bad:
        raise Unprocessable(f"invalid scope(s) for a partner system: {', '.join(bad) or 'none given'}")
    return organisation


def register_key_client(session: Session | Connection, register: Register, system_id: str, scopes: list[str],
                        jwks: dict[str, Any], clock: Clock, *, keep_disabled: bool = False,
                        certificate_bound: bool = False, certificate_pins: Sequence[str] = ()
                        ) -> repository.ClientRecord:
    """Register (or re-key) a system that authenticates with ``private_key_jwt`` (a disabled one only with
    ``keep_disabled``: :func:`_active_after`); ``certificate_bound`` binds its tokens to TLS client
    certificates, ``certificate_pins`` to those certificates only (an existing binding and its pins stay:
    :func:`repository.upsert_client`)."""
    organisation = _check(register, system_id, scopes)
    pins = _pins(certificate_bound, certificate_pins)
    active = _active_after(session, system_id, keep_disabled)
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise Unprocessable('the JWKS could not be read (expected a JWK set: a JSON object with a "keys" list '
                            "of the system's public keys)") from exc
    if any(key.is_private for key in keys.keys):
        raise Unprocessable("the JWKS contains private key material; register public keys only")
    _check_assertion_keys(jwks, keys)
    public = {"keys": [key.as_dict(private=False) for key in keys.keys]}
    record = repository.ClientRecord(system_id, organisation, "private_key_jwt", None, public, sorted(scopes), active,
                                     certificate_bound=certificate_bound, certificate_pins=pins)
    _store(session, record, clock)
    return record


def _pins(certificate_bound: bool, certificate_pins: Sequence[str]) -> tuple[str, ...]:
    """The pins to store (:func:`~gateway.auth.certificate_pins.checked_pins`). Pins without binding are refused
    rather than ignored: the operator meant the client to be bound to those certificates."""
    if certificate_pins and not certificate_bound:
        raise Unprocessable("certificates are pinned for a certificate-bound client only; bind it too")
    return checked_pins(certificate_pins)


def _check_assertion_keys(jwks: dict[str, Any], keys: KeySet) -> None:
    """Every key can verify a client assertion, and has a key id no other key has.

    Why: a key that no assertion algorithm uses (RSA, P-384, Ed448, X25519, one marked for encryption), or the
    second of two keys under one ``kid`` (an assertion's ``kid`` finds the first only), would be stored as if
    it were fine, and the system's assertions signed with it would fail with nothing to say why. The JOSE
    library drops a key of a type it does not know without a word (RFC 7517 §5 lets a reader do so), which
    is as silent: registration refuses all of these, naming the key."""
    if len(keys.keys) != len(jwks["keys"]):
        raise Unprocessable("the JWKS has a key of an unsupported type; only Ed25519 (OKP) and P-256 (EC) keys "
                            "can sign client assertions")
    seen: set[str] = set()
    for key in keys.keys:
        kid = str(key.kid)
        if kid in seen:
            raise Unprocessable(f"the JWKS has more than one key with kid `{kid}`; give each key its own kid")
        seen.add(kid)
        if not _verifies_assertions(key):
            raise Unprocessable(f"key `{kid}` cannot verify client assertions: only Ed25519 (OKP) and P-256 (EC) "
                                f"signing keys can ({', '.join(ASSERTION_ALGORITHMS)})")


def _verifies_assertions(key: Key) -> bool:
    """Whether one of the assertion algorithms verifies with ``key``, as its ``use``, ``key_ops`` and ``alg``
    (when given) allow."""
    algorithms = [alg for alg in ASSERTION_ALGORITHMS
                  if ASSERTION_KEY_TYPES[alg] == (key.key_type, key.get("crv"))]
    if key.get("alg") is not None:
        algorithms = [alg for alg in algorithms if alg == key.get("alg")]
    key_ops = key.get("key_ops")
    return (bool(algorithms) and key.get("use") in (None, "sig")
            and (key_ops is None or (isinstance(key_ops, list) and "verify" in key_ops)))


@dataclass(frozen=True)
class NewSecret:
    """A client secret (shown once) with its argon2 hash, made before any transaction that stores it.

    Why: hashing is deliberately slow (tens of milliseconds, most of a core). A re-key is written inside the
    audit log's append transaction, which holds the log's write lock; hashing in there made every audited
    write of every process wait for it. Made beforehand, only the stored hash goes into the transaction."""

    secret: str
    hashed: str


def new_secret(secret: str | None = None) -> NewSecret:
    """``secret`` (or a new random one) and its hash: call it before opening a transaction."""
    secret = secret or generate_secret()
    return NewSecret(secret, hash_secret(secret))


def register_secret_client(session: Session | Connection, register: Register, system_id: str, scopes: list[str],
                           clock: Clock, secret: NewSecret | None = None, *, keep_disabled: bool = False,
                           certificate_bound: bool = False, certificate_pins: Sequence[str] = ()
                           ) -> tuple[repository.ClientRecord, str]:
    """Register a system that authenticates with a client secret; returns the secret (shown once). A disabled
    one only with ``keep_disabled`` (:func:`_active_after`). ``secret`` is hashed already (:func:`new_secret`);
    without it a new one is made here, in the caller's transaction. ``certificate_bound`` and
    ``certificate_pins`` as for :func:`register_key_client`."""
    organisation = _check(register, system_id, scopes)
    pins = _pins(certificate_bound, certificate_pins)
    active = _active_after(session, system_id, keep_disabled)
    secret = secret or new_secret()
    record = repository.ClientRecord(system_id, organisation, "client_secret", secret.hashed, None,
                                     sorted(scopes), active, certificate_bound=certificate_bound,
                                     certificate_pins=pins)
    _store(session, record, clock)
    return record, secret.secret
