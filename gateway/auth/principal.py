"""Who is calling: the result of checking an access token, handed to every route."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Scope(StrEnum):
    """OAuth2 scopes of the gateway's API."""

    EXCHANGE = "exchange"  # request data (POST /v1/exchanges, GET own exchanges)
    DISCOVERY = "discovery"  # hit/no-hit (POST /v1/discovery)
    ENROL = "enrol"  # enrol pseudonyms of own records
    REGISTER_READ = "register:read"  # read the partnership register
    AUDIT_READ = "audit:read"  # privacy officers: review the audit log
    AUDIT_RECEIPTS = "audit:receipts"  # partner systems: proofs of the entries of their own receipts only
    ESCALATION = "escalation"  # open/comment/decide escalation cases
    ADMIN = "admin"  # administrators: register changes, escalations, accounts


class Role(StrEnum):
    """Roles of people (accounts created by the CLI)."""

    PRIVACY_OFFICER = "privacy-officer"
    COORDINATING_PRIVACY_OFFICER = "coordinating-privacy-officer"
    ADMINISTRATOR = "administrator"
    CONTACT_POINT = "contact-point"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a partner system (client credentials) or a person (account)."""

    kind: Literal["system", "person"]
    subject: str  # system id (e.g. "politie-bvh") or username
    organisation: str  # organisation id from the register
    scopes: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    token_id: str = ""
    credential: str = ""  # a person's token: the fingerprint of the account it was issued for (accounts.py)
    generation: int = 0  # a system's token: the client's key generation it was issued under (revocation.py)
    # A bound token's: the thumbprint of the TLS client certificate every use must come over (RFC 8705 ``cnf``;
    # certificate_binding.py)
    certificate_thumbprint: str | None = None
    # A person's: the id of the account this request's token check read (TokenRequired, dependencies.py), so
    # that an audit entry names it without reading the account again. Never from the token: None until checked.
    account_id: str | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_role(self, role: str) -> bool:
        return role in self.roles
