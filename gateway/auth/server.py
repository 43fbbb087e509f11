"""The OAuth2 authorization server (authlib) for partner systems: client-credentials grant only.

authlib supplies the protocol machinery (grant validation, client-auth method registry, RFC 6749 error
objects); this module adapts it to our storage, our JWT access tokens and Starlette requests. One server
object is built per token request, bound to that request's database session.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from sqlalchemy.orm import Session

from gateway.auth import repository
from gateway.auth.certificate_pins import is_pinned
from gateway.auth.client_assertion import make_private_key_jwt_method
from gateway.auth.passwords import verify_secret
from gateway.auth.tokens import AccessTokenService
from gateway.clock import Clock
from gateway.register.model import Register

PRIVATE_KEY_JWT = "private_key_jwt"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e ]*")
"""A scope parameter as RFC 6749 §3.3 writes it: scope-tokens of printable ASCII (no ``"`` or ``\\``) between
spaces. Anything else (a tab, a line end, a no-break or ideographic space) is refused, not split at: Python's
``str.split()`` splits there too, so the gateway granted two scopes where a proxy, a filter or a log that splits at
spaces reads one unknown scope: a token request two readers read differently, as a repeated parameter is."""


class GatewayClient(ClientMixin):  # type: ignore[misc]
    """authlib's view of a registered partner system."""

    def __init__(self, record: repository.ClientRecord) -> None:
        self.record = record

    def get_client_id(self) -> str:
        return self.record.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return self.record.secret_hash is not None and verify_secret(self.record.secret_hash, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return False
        if self.record.auth_method == PRIVATE_KEY_JWT:
            return method == PRIVATE_KEY_JWT
        return method in SECRET_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return " ".join(self.record.scopes)
        # Each scope once: RFC 6749 §3.3 makes the scope a set, so `exchange exchange` asks
        # for one scope, and the token's `scope` claim says so (a consumer counting or comparing it as text would
        # otherwise read two).
        return " ".join(s for s in dict.fromkeys(scope.split()) if s in self.record.scopes)


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, PRIVATE_KEY_JWT]

    def validate_token_request(self) -> None:
        """authlib's checks (the client authenticated, the grant and the scope), then RFC 8705's: a
        certificate-bound client gets a token only over a client certificate the trusted proxy forwarded
        (:mod:`gateway.auth.certificate_binding`); without one it is no authenticated client of ours. A pinned
        client's certificate must be one of its pins (:mod:`gateway.auth.certificate_pins`): its key together
        with another certificate the proxy verified is not that client either."""
        super().validate_token_request()
        record = self.request.client.record
        presented = self.server.certificate_thumbprint
        if record.certificate_bound and presented is None:
            raise InvalidClientError(description="this client's tokens are bound to its TLS client certificate, "
                                                 "and the request came without one")
        if record.certificate_pins and not is_pinned(presented, record.certificate_pins):
            raise InvalidClientError(description="the TLS client certificate the request came over is not one "
                                                 "registered (pinned) for this client")

    def validate_requested_scope(self) -> None:
        scope = self.request.payload.scope or ""
        if not _SCOPE.fullmatch(scope):
            raise InvalidScopeError(description="the scope must be scope names separated by spaces (RFC 6749 "
                                                "section 3.3)")
        requested = set(scope.split())
        if requested - set(self.request.client.record.scopes):
            raise InvalidScopeError(description="a requested scope is not registered for this client")


class TokenRequest(OAuth2Request):  # type: ignore[misc]
    """An authlib request built from a parsed form and the headers of a Starlette request."""

    def __init__(self, uri: str, form: dict[str, str], headers: Mapping[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class GatewayAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, session: Session, tokens: AccessTokenService, clock: Clock, token_endpoint: str,
                 assertion_max_age_seconds: int, register: Register, certificate_thumbprint: str | None = None
                 ) -> None:
        """``certificate_thumbprint``: of the TLS client certificate the request came over (forwarded by a
        trusted proxy), if any; a certificate-bound client's token is bound to it."""
        super().__init__()
        self.certificate_thumbprint = certificate_thumbprint
        self._session = session
        self._tokens = tokens
        self._register = register
        self.register_grant(_ClientCredentials)
        self.register_token_generator("default", self._generate)
        self.register_client_auth_method(PRIVATE_KEY_JWT, make_private_key_jwt_method(
            session, clock, {token_endpoint, tokens.issuer}, assertion_max_age_seconds))

    def query_client(self, client_id: str) -> GatewayClient | None:
        """The active client of a system in the register in force, with the organisation that register names.

        The client row keeps the organisation of the register it was registered under; a later register (a
        new file, then a restart) may have dropped the system or moved it to another organisation. The
        token's ``org`` decides what the system may enrol, ask and see, so it comes from the register in
        force, and a system that is no longer in it is no client (``invalid_client``)."""
        record = repository.get_client(self._session, client_id)
        if record is None or not record.active:
            return None
        organisation = self._register.organisation_of_system(client_id)
        if organisation is None:
            return None
        return GatewayClient(replace(record, organisation=organisation))

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
        return request

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Access tokens are self-contained JWTs; nothing to store."""

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers or [])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal bus; issuance and rejection are logged by the endpoint."""

    def _generate(self, grant_type: str, client: GatewayClient, user: Any = None, scope: str | None = None,
                  expires_in: int | None = None, include_refresh_token: bool = False) -> dict[str, Any]:
        scopes = client.get_allowed_scope(scope).split()
        issued = self._tokens.issue(subject=client.record.client_id, organisation=client.record.organisation,
                                    scopes=scopes, client_id=client.record.client_id,
                                    generation=client.record.key_generation,
                                    certificate_thumbprint=(self.certificate_thumbprint
                                                            if client.record.certificate_bound else None))
        return {"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
                "scope": issued.scope}
