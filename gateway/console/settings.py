"""Console settings, from environment variables prefixed ``WGS_CONSOLE_`` (or a ``.env`` file).

Kept apart from :class:`gateway.settings.Settings` so the console can be switched and tuned without touching
the API's configuration; tests hand their own instance to :func:`gateway.console.sessions.install_console`.

Read and validated at start-up, like ``Settings``: :func:`gateway.app.create_app` builds the instance the
console uses (``wgs-gateway serve`` first, turning a bad value into one ``WGS_CONSOLE_<FIELD>: ...`` line).
Built lazily on the first console request instead, a bad value let the gateway start and then made every
console page a 500.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WGS_CONSOLE_", env_file=".env", extra="ignore")

    idle_timeout_seconds: int = Field(default=900, ge=30, le=86_400,
                                      description="Sign out after this long without a request.")
    max_session_seconds: int = Field(default=43_200, ge=60, le=604_800,
                                     description="Sign out after this long whatever the activity.")
    cookie_secure: bool | None = Field(
        default=None,
        description="Secure flag of the session cookie. Unset: Secure, except for plain HTTP on a loopback "
                    "address (the demo); set true behind a TLS-terminating proxy.")
    session_secret: str | None = Field(
        default=None, min_length=32, repr=False,
        description="Key that signs session cookies; default: a random key kept in the key store directory.")
    default_language: str = Field(default="nl", pattern="^(nl|en)$")
    page_size: int = Field(default=50, ge=5, le=500, description="Rows per page of the audit explorer.")
