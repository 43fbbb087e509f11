"""Wiring of the auth services into the container (called from ``gateway.app.start_services``)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from gateway.auth.accounts import LoginThrottle, credential_fingerprint, scopes_for_roles
from gateway.auth.keys import SigningKeyStore
from gateway.auth.password_checks import PasswordChecks
from gateway.auth.repository import AccountRecord
from gateway.auth.revocation import DisabledPrincipals
from gateway.auth.tokens import AccessTokenService, IssuedToken
from gateway.container import Container, one_run_at_a_time
from gateway.keyfiles import read_or_create

LOGIN_THROTTLE_KEY_FILE = "login-throttle.key"
"""The key of the HMAC under which the login throttle keeps usernames (made on first start); the key of
people's token fingerprints is derived from it (:func:`credential_key`)."""


@dataclass
class AuthServices:
    keys: SigningKeyStore
    tokens: AccessTokenService
    login_throttle: LoginThrottle
    password_checks: PasswordChecks  # every sign-in's password check waits for a slot of these
    secret_checks: PasswordChecks  # a token request with a client secret (argon2 too) waits for one of these
    disabled: DisabledPrincipals
    credential_key: bytes

    def person_token(self, account: AccountRecord) -> IssuedToken:
        """The access token of a person who signed in: the account's roles as scopes, and the fingerprint
        of the account (``cred``) that every use of the token is checked against."""
        return self.tokens.issue(subject=account.username, organisation=account.organisation,
                                 scopes=scopes_for_roles(account.roles), kind="person", roles=account.roles,
                                 credential=credential_fingerprint(self.credential_key, account))


def credential_key(installation_key: bytes) -> bytes:
    """The key of people's token fingerprints, derived from the installation's key of account HMACs: one
    file (made once, shared by every process) rather than another, and still never the same key for two
    purposes."""
    return hmac.new(installation_key, b"wgs-gateway person-token credential key/1", hashlib.sha256).digest()


def install_auth(container: Container) -> AuthServices:
    settings = container.settings
    keys = SigningKeyStore(settings.key_dir, container.clock,
                           timedelta(seconds=settings.access_token_ttl_seconds + 300))
    keys.load_or_create()
    installation_key = read_or_create(settings.key_dir / LOGIN_THROTTLE_KEY_FILE, lambda: secrets.token_bytes(32))
    services = AuthServices(
        keys=keys,
        tokens=AccessTokenService(keys, container.clock, settings.issuer, settings.audience,
                                  settings.access_token_ttl_seconds),
        login_throttle=LoginThrottle(container.sessions, container.clock, installation_key),
        password_checks=PasswordChecks(settings.password_checks, settings.password_check_wait_seconds),
        secret_checks=PasswordChecks(settings.password_checks, settings.password_check_wait_seconds),
        disabled=DisabledPrincipals(container.sessions, settings.revocation_refresh_seconds),
        credential_key=credential_key(installation_key),
    )
    container.services["auth"] = services

    current_key = one_run_at_a_time(keys.current)

    async def key_store_ready() -> None:
        await current_key()

    async def disabled_list_current() -> None:
        services.disabled.ensure_current()

    container.readiness["key_store"] = key_store_ready
    container.readiness["disabled_principals"] = disabled_list_current
    return services


def auth_services(container: Container) -> AuthServices:
    return container.service("auth", AuthServices)
