"""Tables of authentication (schema by migration 0002_auth; ``accounts.access_generation`` by 0024,
``oauth_clients.key_generation`` by 0026, ``oauth_clients.certificate_bound`` by 0032,
``oauth_clients.certificate_pins`` by 0036)."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Integer, String, Table, Text, UniqueConstraint, false

from gateway.db.metadata import metadata

oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),  # the partner system id from the register
    Column("organisation", String(64), nullable=False),
    Column("auth_method", String(32), nullable=False),  # private_key_jwt | client_secret
    Column("secret_hash", Text, nullable=True),
    Column("jwks", JSON, nullable=True),
    Column("scopes", JSON, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Bumped by every re-registration (new credentials) and every disabling: a system's token carries it as
    # ``gen`` (gateway.auth.revocation refuses a token under an older one)
    Column("key_generation", Integer, nullable=False, server_default="0"),
    # Tokens only over a TLS client certificate, bound to it (RFC 8705; gateway.auth.certificate_binding)
    Column("certificate_bound", Boolean, nullable=False, server_default=false()),
    # The thumbprints (x5t#S256) of the certificates a bound client may get tokens over, a JSON list; NULL: any
    # certificate the trusted proxy verified (gateway.auth.certificate_pins)
    Column("certificate_pins", JSON, nullable=True),
)

used_client_assertions = Table(
    "used_client_assertions",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(128), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("organisation", String(64), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Bumped by every disabling: part of a person's token fingerprint (gateway.auth.accounts.credential_fingerprint)
    Column("access_generation", Integer, nullable=False, server_default="0"),
    UniqueConstraint("username", name="uq_accounts_username"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("username_key", String(64), primary_key=True),  # HMAC of the typed username, never the name itself
    Column("attempts", JSON, nullable=False),  # start times (POSIX seconds) of the attempts in the window
    Column("last_at", DateTime(timezone=True), nullable=False, index=True),
    # HMAC of the address that typed the username first (migration 0027): distinct usernames per address are capped
    Column("source_key", String(64), nullable=True, index=True),
)
"""The login throttle's failed attempts per username (migration 0020), shared by every gateway process."""
