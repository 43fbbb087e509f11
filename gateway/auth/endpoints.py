"""HTTP surface of authentication: token endpoint, JWKS, server metadata, people's login.

What of it is audited, and why:

* a person's sign-in at ``POST /v1/auth/login`` is a ``console.action`` entry (``sign-in``, ``channel: api``),
  as at the console, failed ones too (:mod:`gateway.console.signins`): people sign in a few times a day, and
  who signed in to review the log or to decide escalations is itself what an officer reviews;
* a token request the token endpoint refuses is an ``auth.rejected`` entry naming the partner system it
  named, bounded per window like failed sign-ins (:mod:`gateway.console.signins`): a wrong key or secret, or
  a replayed assertion, for a system is what its organisation's officers should see, and only the
  application log had it;
* a token issued to a partner system is no entry. Systems fetch one every few minutes per process, so the
  entries would outnumber everything else a quiet partnership logs, and say nothing an officer can act on:
  what a system does with its token (every exchange, discovery and enrolment) is an entry of its own, under
  the system's id. A refused request that names no system at all (a malformed body) stays in the application
  log only: it names nobody an officer could be responsible for.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from audit import AuditWriteError
from gateway.auditing.actions import action_event
from gateway.auditing.setup import audit_services
from gateway.auth.accounts import (
    MAX_PASSWORD_LENGTH,
    MAX_USERNAME_LENGTH,
    USERNAME_PATTERN,
    UnknownRole,
    authenticate_person,
)
from gateway.auth.certificate_binding import binding_configured, presented_thumbprint
from gateway.auth.client_assertion import ASSERTION_ALGORITHMS
from gateway.auth.jose_segments import MalformedSegment, decode_segment
from gateway.auth.keys import SIGNING_ALGORITHM
from gateway.auth.password_checks import PasswordChecksBusy
from gateway.auth.server import GatewayAuthorizationServer, TokenRequest
from gateway.auth.setup import auth_services
from gateway.client.models import SLUG_PATTERN
from gateway.console.signins import (
    THROTTLED,
    TOKEN_CHANNEL,
    UNKNOWN_ROLE,
    WRONG_CREDENTIALS,
    Target,
    record_failed_sign_in,
    target_of,
)
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.deps import get_container
from gateway.errors import NotFound, ServiceUnavailable, TooManyRequests, Unauthorized
from gateway.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from gateway.register.model import Register
from gateway.register.setup import register_service

router = APIRouter(tags=["authentication"])
log = structlog.get_logger("gateway.auth")

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 16
TOKEN_PARAMETERS = frozenset({"grant_type", "scope", "client_id", "client_secret", "client_assertion_type",
                              "client_assertion"})
"""The token request's parameters: only these are named back in an error (any other name is the caller's text)."""
TOKEN_ANSWER_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""What every answer carrying an access token says (RFC 6749 §5.1): no cache, shared or the browser's, keeps it.
The token endpoint's and the people's login alike: both answer a credential."""


def token_endpoint_url(container: Container) -> str:
    return container.settings.issuer.rstrip("/") + "/oauth/token"


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = Field(examples=["Bearer"])
    expires_in: int = Field(examples=[300])
    scope: str = Field(examples=["exchange discovery"])


def _oauth_error(status: int, error: str, description: str, headers: list[tuple[str, str]] | None = None
                 ) -> JSONResponse:
    """RFC 6749 §5.2 error members inside an RFC 9457 problem document (both kinds of client understand it)."""
    body = {"type": PROBLEM_TYPE_BASE + "oauth-" + error.replace("_", "-"), "title": "Token request refused",
            "status": status, "detail": description, "error": error, "error_description": description}
    extra = {k: v for k, v in (headers or []) if k.lower() == "www-authenticate"}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE,
                        headers={"Cache-Control": "no-store", **extra})


@router.post("/oauth/token", response_model=TokenResponse, summary="OAuth2 token endpoint (client credentials)",
             responses={400: {"description": "invalid_request / invalid_grant / invalid_scope / "
                                             "unsupported_grant_type / replayed assertion (invalid_client)"},
                        401: {"description": "invalid_client (also: a certificate-bound client without its "
                                             "TLS client certificate)"},
                        503: {"description": "Refused, and the refusal could not be written to the audit log"}},
             openapi_extra={"requestBody": {"content": {FORM_MEDIA_TYPE: {"schema": {
                 "type": "object", "required": ["grant_type"], "properties": {
                     "grant_type": {"type": "string", "enum": ["client_credentials"]},
                     "scope": {"type": "string"}, "client_id": {"type": "string"},
                     "client_assertion_type": {"type": "string"}, "client_assertion": {"type": "string"},
                     "client_secret": {"type": "string"}}}}}, "required": True}})
async def token(request: Request, container: Container = Depends(get_container)) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_MEDIA_TYPE:
        log.info("token_rejected", error="invalid_request", reason="content type")
        return _oauth_error(400, "invalid_request", f"the token endpoint takes {FORM_MEDIA_TYPE}")
    try:
        parsed = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    except Exception:  # malformed form bodies are the client's error, never a 500
        log.info("token_rejected", error="invalid_request", reason="malformed form")
        return _oauth_error(400, "invalid_request", "the form body could not be parsed")
    repeated = sorted(key for key in parsed if len(parsed.getlist(key)) > 1)
    if repeated:  # RFC 6749 §3.2; a parser keeps the last, a proxy or a log may read the first
        named = ", ".join(key for key in repeated if key in TOKEN_PARAMETERS) or "an unknown one"
        log.info("token_rejected", error="invalid_request", reason="repeated parameter")
        return _oauth_error(400, "invalid_request", f"a parameter must not be repeated: {named}")
    form = {key: value for key, value in parsed.items() if isinstance(value, str)}
    headers = request.headers  # case-insensitive: authlib looks up "Authorization"
    methods = _client_authentications(form, headers)
    if len(methods) > 1:  # RFC 6749 §2.3, and §5.2's invalid_request: see _client_authentications
        log.info("token_rejected", error="invalid_request", reason="more than one client authentication")
        return _oauth_error(400, "invalid_request", "a token request must authenticate the client one way, not "
                                                    + " and ".join(methods))
    basic_user = _basic_user(headers)
    if basic_user is not None and form.get("client_id", basic_user) != basic_user:
        # authlib authenticates the Basic user and ignores the form's client_id, while a refusal's entry named
        # the form's: guesses at one system's secret were written down as another's failures.
        log.info("token_rejected", error="invalid_request", reason="client_id is not the Basic credentials' user")
        return _oauth_error(400, "invalid_request", "client_id names another client than the Basic credentials")
    auth = auth_services(container)
    endpoint = token_endpoint_url(container)
    register = register_service(container).current()
    certificate = presented_thumbprint(request, container.settings)  # RFC 8705: only from a trusted proxy

    def run() -> tuple[int, Any, list[tuple[str, str]]]:
        with transaction(container.sessions) as session:
            server = GatewayAuthorizationServer(session, auth.tokens, container.clock, endpoint,
                                                container.settings.client_assertion_max_age_seconds, register,
                                                certificate)
            try:
                result: tuple[int, Any, list[tuple[str, str]]] = server.create_token_response(
                    TokenRequest(endpoint, form, headers))
            except UnicodeDecodeError:  # authlib decodes Basic credentials as UTF-8 without catching this
                return 401, {"error": "invalid_client",
                             "error_description": "client credentials are not valid UTF-8"}, []
            return result

    if _carries_secret(form, headers):  # argon2 per guess: a few at a time, of their own (see _carries_secret)
        try:
            status, body, response_headers = await auth.secret_checks.run(run)
        except PasswordChecksBusy:  # accounted for as a throttled sign-in is: per system and window
            log.info("token_rejected", error=THROTTLED, reason="too many secret checks at once",
                     client_id=_loggable_client_id(form))
            try:
                await record_failed_sign_in(container, request, THROTTLED, _named_system(form, headers, register),
                                            channel=TOKEN_CHANNEL)
            except AuditWriteError as failed:
                raise ServiceUnavailable("the token request was refused and the audit log could not be written",
                                         headers={"Retry-After": "5"}) from failed
            raise
    else:
        status, body, response_headers = await run_in_threadpool(run)
    if status != 200:
        error = str(body.get("error", "invalid_request"))
        if error == "invalid_client":  # one answer for every client-authentication failure (RFC 6749 §5.2)
            status = 401
            response_headers = [("WWW-Authenticate", 'Bearer error="invalid_client"')]
        description = str(body.get("error_description", error))
        log.info("token_rejected", error=error, reason=description, client_id=_loggable_client_id(form))
        try:
            await record_failed_sign_in(container, request, error if error in OAUTH_ERRORS else "invalid_request",
                                        _named_system(form, headers, register), channel=TOKEN_CHANNEL)
        except AuditWriteError as failed:  # refused all the same; unaccounted for, so not as if nothing happened
            raise ServiceUnavailable("the token request was refused and the audit log could not be written",
                                     headers={"Retry-After": "5"}) from failed
        return _oauth_error(status, error, description, response_headers)
    # An issued token is no entry: see the module's docstring.
    log.info("token_issued", scope=body.get("scope"))
    return JSONResponse(body, headers=TOKEN_ANSWER_HEADERS)


JWKS_MAX_AGE_SECONDS = 60
"""How long a reader may keep the JWKS (``Cache-Control: max-age``): holder systems read it again after this
long (``connectors.holder_auth``, bounded by their own maximum), so a key retired at once after a leak (``keys
retire``) stops being accepted by them within a minute. Routine rotations need no shorter time: a superseded
key stays published for the access-token lifetime and more, and a new ``kid`` makes holders read the set."""


@router.get("/.well-known/jwks.json", summary="Public keys that sign the gateway's access tokens")
async def jwks(answer: Response, container: Container = Depends(get_container)) -> dict[str, Any]:
    answer.headers["Cache-Control"] = f"max-age={JWKS_MAX_AGE_SECONDS}"
    return auth_services(container).keys.jwks()


METADATA_PATH = "/.well-known/oauth-authorization-server"


@router.get(METADATA_PATH, summary="Authorization server metadata (RFC 8414)")
async def metadata(container: Container = Depends(get_container)) -> dict[str, Any]:
    return _metadata(container)


@router.get(METADATA_PATH + "/{issuer_path:path}", include_in_schema=False)  # the document above, elsewhere
async def metadata_of_issuer_path(issuer_path: str, container: Container = Depends(get_container)
                                  ) -> dict[str, Any]:
    """The metadata where RFC 8414 section 3.1 puts it for an issuer with a path component (``WGS_ISSUER``
    ``https://gw.example/wgs`` → ``https://gw.example/.well-known/oauth-authorization-server/wgs``): the well-known
    path goes between the host and the issuer's path, so a proxy that publishes the gateway under ``/wgs`` passes
    this one request on from the host's root. Only the issuer's own path answers: metadata under any other path
    would be this gateway's posing as another issuer's on the same host."""
    if "/" + issuer_path.rstrip("/") != _issuer_path(container) or not issuer_path.strip("/"):
        raise NotFound("no authorization server metadata for this issuer")
    return _metadata(container)


def _issuer_path(container: Container) -> str:
    return urlsplit(container.settings.issuer).path.rstrip("/")


def _metadata(container: Container) -> dict[str, Any]:
    issuer = container.settings.issuer.rstrip("/")
    bound = {"tls_client_certificate_bound_access_tokens": True} if binding_configured(container.settings) else {}
    return {
        "issuer": issuer, "token_endpoint": token_endpoint_url(container),
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "scopes_supported": ["exchange", "discovery", "enrol", "register:read", "audit:read", "audit:receipts",
                             "escalation", "admin"],
        "access_token_signing_alg_values_supported": [SIGNING_ALGORITHM],
    } | bound  # RFC 8705 §3.3: only where a proxy forwards client certificates (WGS_CLIENT_CERT_HEADER)


_SYSTEM_ID = re.compile(SLUG_PATTERN)


def _carries_secret(form: dict[str, str], headers: Any) -> bool:
    """Whether the client authenticates with a secret (``client_secret_post`` or ``client_secret_basic``),
    whose check is an argon2 hash: a worker thread and 64 MiB for a fraction of a second per guess. A flood of
    guesses against a known client id took every worker thread as a sign-in flood did (see
    :mod:`gateway.auth.password_checks`); such requests now wait for slots of their own (``secret_checks``, as
    many as ``password_checks``), so that a sign-in flood cannot block partner systems' token requests, nor
    the other way round. ``private_key_jwt`` (a signature check, far cheaper) is not limited."""
    authorization = str(headers.get("authorization", ""))
    return "client_secret" in form or authorization[:6].lower() == "basic "


def _client_authentications(form: Mapping[str, str], headers: Mapping[str, str]) -> list[str]:
    """The client-authentication methods a token request uses, by what it carries.

    A client MUST NOT use more than one in a request (RFC 6749 §2.3). authlib tries them in turn and takes the
    first that succeeds: a wrong secret in Basic credentials only made it go on to the client assertion beside
    it, so anyone with a key of their own could guess another system's secret and learn from the token which
    system it was issued to, each wrong guess an unremarkable 200 (no ``auth.rejected`` entry, no failed
    attempt). The request is refused before any of them is checked."""
    methods = []
    if str(headers.get("authorization", ""))[:6].lower() == "basic ":
        methods.append("client_secret_basic")
    if "client_secret" in form:
        methods.append("client_secret_post")
    if "client_assertion" in form or "client_assertion_type" in form:
        methods.append("private_key_jwt")
    return methods


OAUTH_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                          "unsupported_grant_type", "invalid_scope"})
"""RFC 6749 §5.2's error codes: the only reasons an ``auth.rejected`` entry gives."""


def _named_system(form: Mapping[str, Any], headers: Mapping[str, str], register: Register) -> Target:
    """The partner system a refused token request named, if it is one in the register in force (with its
    organisation), else nobody: ``client_id`` in the form, the user of Basic credentials, or the subject of the
    client assertion, none of them verified (the request was refused). Whoever calls the endpoint chooses the
    text, so only the id of a system the register lists is ever written, never the text as sent."""
    named: list[Any] = [form.get("client_id"), _basic_user(headers)]
    assertion = form.get("client_assertion")
    if isinstance(assertion, str) and assertion.count(".") == 2:
        with contextlib.suppress(MalformedSegment):
            named.append(decode_segment(assertion.split(".")[1]).get("sub"))
    for candidate in named:
        organisation = register.organisation_of_system(candidate) if isinstance(candidate, str) else None
        if organisation is not None:
            return Target(organisation=organisation, system=candidate)
    return Target()


def _basic_user(headers: Mapping[str, str]) -> str | None:
    """The client id of the request's Basic credentials (RFC 6749 §2.3.1: form-encoded), unverified; None
    without Basic credentials or when they cannot be read (authlib then refuses them)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    with contextlib.suppress(ValueError):  # not base64, or not UTF-8 (a ValueError too)
        return unquote(base64.b64decode(credentials, validate=True).decode().partition(":")[0])
    return None


def _loggable_client_id(form: Mapping[str, Any]) -> str | None:
    """The ``client_id`` a refused token request named, for the log line, if it looks like a system id (what
    the register names systems with); otherwise a marker. Whoever calls the token endpoint chooses the value:
    logged as sent it could be a megabyte, a forged log line or someone's name."""
    value = form.get("client_id")
    if value is None:
        return None
    return value if isinstance(value, str) and _SYSTEM_ID.fullmatch(value) else "<not a system id>"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # No control characters: no account has one (a NUL cannot even be stored on PostgreSQL), and a name that
    # cannot be an account is bad input (422, nothing written), not a failed sign-in to account for.
    username: str = Field(min_length=1, max_length=MAX_USERNAME_LENGTH, pattern=USERNAME_PATTERN)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


@router.post("/v1/auth/login", response_model=TokenResponse, summary="People: exchange a password for a token",
             responses={401: {"description": "Wrong username or password"},
                        429: {"description": "Throttled: too many failed sign-ins, or too many at once (Retry-After)"},
                        403: {"description": "The account has a role this gateway does not know"},
                        503: {"description": "The sign-in could not be written to the audit log: no token"}})
async def login(body: LoginRequest, request: Request, answer: Response, container: Container = Depends(get_container)
                ) -> TokenResponse:
    auth = auth_services(container)
    answer.headers.update(TOKEN_ANSWER_HEADERS)  # the token it answers is a credential, as the token endpoint's

    def run() -> tuple[TokenResponse, str, str]:
        with transaction(container.sessions) as session:
            account = authenticate_person(session, body.username, body.password, auth.login_throttle,
                                          request.client.host if request.client else None)
        issued = auth.person_token(account)
        return (TokenResponse(access_token=issued.access_token, token_type="Bearer", expires_in=issued.expires_in,
                              scope=issued.scope), account.id, account.organisation)

    try:
        response, account_id, organisation = await auth.password_checks.run(run)
    except (Unauthorized, TooManyRequests, UnknownRole) as exc:
        # The console's doors and this one check the same passwords under one throttle: accounted for alike.
        reason = (THROTTLED if isinstance(exc, TooManyRequests) else UNKNOWN_ROLE if isinstance(exc, UnknownRole)
                  else WRONG_CREDENTIALS)
        target = await run_in_threadpool(target_of, container, body.username)
        try:
            await record_failed_sign_in(container, request, reason, target, channel="api")
        except AuditWriteError as failed:  # refused all the same; unaccounted for, so not as if nothing happened
            raise ServiceUnavailable("the sign-in was refused and the audit log could not be written",
                                     headers={"Retry-After": "5"}) from failed
        raise
    # A sign-in is an entry, as at the console (who reviewed the log, and since when, is itself reviewed), and
    # written before the token is handed out: a sign-in that cannot be accounted for gets none.
    try:
        await audit_services(container).writer.record([action_event(
            request, "sign-in", organisation=organisation, account_id=account_id, channel="api")])
    except AuditWriteError as failed:
        raise ServiceUnavailable("the sign-in could not be written to the audit log; no token was issued",
                                 headers={"Retry-After": "5"}) from failed
    # The account id, never the username: people choose usernames (a name, an e-mail address), and the
    # application log must hold references only, as the audit log's entries do.
    log.info("person_logged_in", account_id=account_id, organisation=organisation)
    return response
