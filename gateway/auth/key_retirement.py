"""Retiring token-signing keys at once, after one leaked: ``wgs-gateway keys retire KID`` and ``keys rotate
--retire-previous-now``, each with its audit entry.

A routine ``keys rotate`` keeps the previous key valid for the access-token lifetime and a margin
(:mod:`gateway.auth.keys`), so that tokens in flight still verify. That margin is what an operator must not
have when the key leaked: a retired key is removed from the key file, so every gateway process refuses the
tokens it signed from its next token check on (each reads the file's stamp on every check) and the JWKS no
longer publishes it. Tokens in flight signed by it are refused too: their partner systems fetch new ones
(the client does so on a 401), signed by the new key.

Who retired which key, and when, is what a privacy officer reviewing an incident needs to see: a
``console.action`` entry with ``channel: cli``, action ``signing-keys-retired``, the retired ``kids``, and the
new key's ``kid`` (``successor``) when the current key was replaced. It names no organisation: the keys are the
gateway's own. The key file changes within the audit log's transaction that writes the entry, as its last step:
when the log cannot be written, no key is retired and the command fails (fail closed: the operator learns it
at once and can fix the log or stop the gateway); a commit that fails after the file was written leaves the
key retired without its entry, and the command says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue
from sqlalchemy import Connection, Engine

from gateway.auditing.actions import action_event
from gateway.auth.access_changes import audited
from gateway.auth.keys import KeyRetirementRefused, SigningKeyStore
from gateway.errors import Conflict, NotFound, ServiceUnavailable
from gateway.ids import new_id
from gateway.settings import Settings

ACTION = "signing-keys-retired"


@dataclass(frozen=True)
class Retirement:
    """The keys a command retired, and the new current key when it replaced the current one."""

    retired: tuple[str, ...]
    successor: str | None


def retire_signing_keys(settings: Settings, engine: Engine, store: SigningKeyStore, kid: str | None) -> Retirement:
    """Retire the superseded key ``kid``, or (``kid`` None) make a new current key and retire every other key,
    audited (see the module's docstring). Raises :class:`NotFound` when there is no such key (or none at all),
    :class:`Conflict` when ``kid`` is the current key or the key file changed meanwhile, and
    :class:`ServiceUnavailable` when the retirement cannot be audited (then nothing changed)."""
    if not store.load():
        raise NotFound(f"no token-signing keys at {store.path}")
    stored = [key["kid"] or "" for key in store.describe()]
    if kid is not None and kid not in stored:
        raise NotFound(f"no token-signing key {kid}")
    if kid is not None and kid == store.current_kid():
        raise Conflict(f"{kid} is the current signing key: `wgs-gateway keys rotate --retire-previous-now` replaces "
                       "it and retires it; nothing was changed")
    retiring = frozenset(stored if kid is None else [kid])
    successor = new_id() if kid is None else None
    details: dict[str, JsonValue] = {"kids": list(sorted(retiring))}
    if successor is not None:
        details["successor"] = successor
    event = action_event(None, ACTION, organisation=None, account_id=None, details=details, channel="cli")
    changed: list[bool] = []

    def change(_connection: Connection) -> None:
        try:
            store.retire(retiring, successor=successor)
        except KeyRetirementRefused as exc:
            raise Conflict(str(exc)) from exc
        changed.append(True)

    try:
        audited(settings, engine, event, change)
    except ServiceUnavailable as exc:
        if changed:
            raise ServiceUnavailable("the keys were retired, but their audit entry could not be committed: "
                                     "record the retirement by hand") from exc
        raise
    return Retirement(tuple(sorted(retiring)), successor)
