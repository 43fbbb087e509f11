"""Wiring of the auth services into the container (called from ``gateway.app.start_services``)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import timedelta

from gateway.auth.accounts import LoginThrottle
from gateway.auth.keys import SigningKeyStore
from gateway.auth.revocation import DisabledPrincipals
from gateway.auth.tokens import AccessTokenService
from gateway.container import Container
from gateway.keyfiles import read_or_create

LOGIN_THROTTLE_KEY_FILE = "login-throttle.key"
"""The key of the HMAC under which the login throttle keeps usernames (made on first start)."""


@dataclass
class AuthServices:
    keys: SigningKeyStore
    tokens: AccessTokenService
    login_throttle: LoginThrottle
    disabled: DisabledPrincipals


def install_auth(container: Container) -> AuthServices:
    settings = container.settings
    keys = SigningKeyStore(settings.key_dir, container.clock,
                           timedelta(seconds=settings.access_token_ttl_seconds + 300))
    keys.load_or_create()
    services = AuthServices(
        keys=keys,
        tokens=AccessTokenService(keys, container.clock, settings.issuer, settings.audience,
                                  settings.access_token_ttl_seconds),
        login_throttle=LoginThrottle(container.sessions, container.clock,
                                     read_or_create(settings.key_dir / LOGIN_THROTTLE_KEY_FILE,
                                                    lambda: secrets.token_bytes(32))),
        disabled=DisabledPrincipals(container.sessions, settings.revocation_refresh_seconds),
    )
    container.services["auth"] = services

    async def key_store_ready() -> None:
        await asyncio.to_thread(keys.current)

    async def disabled_list_current() -> None:
        services.disabled.ensure_current()

    container.readiness["key_store"] = key_store_ready
    container.readiness["disabled_principals"] = disabled_list_current
    return services


def auth_services(container: Container) -> AuthServices:
    return container.service("auth", AuthServices)
