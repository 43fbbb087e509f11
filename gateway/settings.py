"""The one settings object of the gateway.

Everything configurable comes from environment variables prefixed ``WGS_`` (or a ``.env`` file), so the
same code runs as the one-command demo (SQLite file, embedded policy engine) and in production
(PostgreSQL, OPA server) without code changes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, FilePath, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gateway.exchange.lease import leased_work_problem
from gateway.resources import resource_dir
from gateway.urls import EXPECTED, INSECURE_OPA, holder_url, http_url, remote_plain_http

SHIPPED_REGISTER = Path(__file__).parent / "data" / "register.yaml"
_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_NOT_A_CERTIFICATE_HEADER = frozenset({"authorization", "cookie", "host", "content-type", "content-length",
                                       "x-forwarded-for", "x-forwarded-proto", "forwarded", "traceparent"})
POLICIES_DIR = resource_dir("policies")


def without_password(message: str, url: str) -> str:
    """``message`` with the database password (and the URL as written) taken out.

    Drivers quote what they were given: a host they could not resolve, or the whole URL. With an unescaped
    character in the password either may carry (part of) it to the operator's terminal and the logs.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return message.replace(url, "<database URL>")
    message = message.replace(url, parsed.render_as_string(hide_password=True))
    if parsed.password:
        message = message.replace(str(parsed.password), "***")
    return message



def url_without_password(url: str) -> str:
    """``url`` with the password of its user part (``scheme://user:password@host``) shown as ``***``.

    For the http(s) URLs a settings repr shows: a webhook's URL is passed on as written and may carry
    credentials, and an OPA URL with them is refused only when the OPA engine is used (holder endpoints with
    them are refused, ``gateway.urls.holder_url``). Anything that does not parse, or has no password, is
    returned as it is.
    """
    try:
        parsed = urlsplit(url)
        password = parsed.password
    except ValueError:
        return url
    if not password:
        return url
    user, _, host = parsed.netloc.rpartition("@")
    return parsed._replace(netloc=f"{user.partition(':')[0]}:***@{host}").geturl()


def _without_secrets(value: object) -> object:
    """``value`` as a settings repr shows it: URL passwords masked, in dictionaries too (models mask their own)."""
    if isinstance(value, str):
        return url_without_password(value)
    if isinstance(value, dict):
        return {key: _without_secrets(item) for key, item in value.items()}
    return value


class _ReprWithoutSecrets(BaseModel):
    """A repr (and str) that shows no URL's password; the secret fields themselves are ``repr=False``.

    Why: a settings object ends up in a log line, a traceback's locals or a debugger's output, and those
    reach more people than the environment does.
    """

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _without_secrets(value)


class WebhookTarget(_ReprWithoutSecrets):
    """Where an organisation wants escalation notifications, and the secret that signs them."""

    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=16, repr=False)


class Settings(_ReprWithoutSecrets, BaseSettings):
    """Gateway configuration; see docs/configuration.md for every variable."""

    model_config = SettingsConfigDict(env_prefix="WGS_", env_file=".env", extra="ignore")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The database URL is an SQLAlchemy URL (its password may hold characters urlsplit takes apart).
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str) and self.database_url:
                value = without_password(self.database_url, self.database_url)
            yield name, value

    data_dir: Path = Field(default=Path("var"), description="Directory for the SQLite file and key store.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is an SQLite file in data_dir. Use postgresql+psycopg://...",
    )
    # Whole seconds from 2: libpq's (and psycopg's) unit and minimum; a fraction or 1 would silently become
    # another value. An int is finite by construction.
    db_connect_timeout_seconds: int = Field(
        default=5, ge=2, le=300,
        description="How long opening a PostgreSQL connection may take before the command, start-up or request "
                    "fails (a connect_timeout in the database URL takes precedence).")
    register_file: Path = Field(default=SHIPPED_REGISTER, description="Partnership register (YAML).")
    issuer: str = Field(default="https://gateway.wgs.local", description="OAuth2 issuer (iss claim).")
    audience: str = Field(default="wgs-gateway", description="Audience (aud) of access tokens.")
    access_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    revocation_refresh_seconds: float = Field(
        default=5.0, gt=0, le=60, allow_inf_nan=False,
        description="How often each process re-reads the disabled clients and accounts (and the key "
                    "generations of re-keyed or disabled clients): a disabled one's tokens, and a re-keyed or "
                    "re-enabled client's earlier ones, are refused within this time.")
    client_assertion_max_age_seconds: int = Field(default=300, ge=30, le=3600)
    password_checks: int = Field(
        default=2, ge=1, le=64,
        description="Sign-ins (console and POST /v1/auth/login) whose password one process checks at a time; "
                    "each argon2 check takes a worker thread and 64 MiB for a fraction of a second "
                    "(gateway.auth.password_checks).")
    password_check_wait_seconds: float = Field(
        default=2.0, gt=0, le=30, allow_inf_nan=False,
        description="How long a sign-in waits for one of those before it is refused (429, Retry-After).")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Request bodies above this get 413.")
    client_cert_header: str | None = Field(
        default=None,
        description="Header in which the TLS-terminating proxy forwards the caller's client certificate as "
                    "URL-encoded PEM (nginx $ssl_client_escaped_cert); unset: no certificate-bound tokens "
                    "(gateway.auth.certificate_binding).")
    client_cert_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, validate_default=True,
        description="Comma-separated addresses or networks (CIDR) of the proxies trusted to set that header; "
                    "from any other peer it is ignored.")

    policy_engine: Literal["embedded", "opa"] = "embedded"
    policies_dir: Path = POLICIES_DIR
    # Declared before the URL: its check reads it.
    opa_allow_insecure_http: bool = Field(
        default=False,
        description="Accept a plain http:// OPA server on another machine (a private network you trust); without "
                    "it only https:// and loopback http:// (a sidecar) are accepted.")
    opa_url: str = "http://127.0.0.1:8181"
    # Positive, finite and bounded: 0 or less fails every call, and NaN or infinity makes asyncio.timeout()
    # never fire, so a hung OPA server would hold each decision for ever instead of denying it.
    opa_timeout_seconds: float = Field(default=2.0, gt=0, le=60, allow_inf_nan=False)
    opa_token: str | None = Field(default=None, repr=False)
    opa_ca_file: Path | None = Field(default=None, description="CA bundle for an https OPA URL; must exist "
                                                               "when the OPA engine is used.")

    # Declared before the endpoints: their check reads it.
    connector_allow_insecure_http: bool = Field(
        default=False,
        description="Accept plain http:// holder endpoints on other machines (a private network you trust); "
                    "without it only https:// and loopback http:// (the demo, tests) are accepted.")
    connector_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description='Partner system id -> base URL of its holder service, e.g. {"politie-bvh": "http://..."}.',
    )
    require_pseudonyms: bool = Field(
        default=False, description="Refuse subjects that are not the requester's own pseudonyms (no references).")
    connector_timeout_seconds: float = Field(default=5.0, gt=0, le=90, allow_inf_nan=False)  # the lease's bound
    # Declared after the timeout and the policy engine's settings: its check reads them (together they must
    # fit the lease on an Idempotency-Key, gateway.exchange.lease).
    connector_retries: int = Field(default=2, ge=0, le=5)
    connector_ca_file: FilePath | None = Field(
        default=None, description="CA bundle to verify https holder endpoints against (default: the system's "
                                  "trust store); must exist.")

    escalation_scan_seconds: float = Field(
        default=300.0, ge=0, le=86_400, allow_inf_nan=False,
        description="How often overdue escalation cases move up a tier (0: never, use the CLI).")
    escalation_decision_valid_days: int = Field(default=30, ge=1, le=365,
                                                description="How long an allow decision may be cited for a re-run.")
    match_handle_ttl_seconds: int = Field(
        default=86_400, ge=60, le=30 * 86_400,
        description="How long a fuzzy discovery's match handle may be cited in a follow-up exchange (default 24 h); "
                    "expired handles are refused and removed.")
    fuzzy_cache_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0, le=64 * 1024 ** 3,
        description="What each gateway process keeps in memory of the decoded fuzzy discovery index (least "
                    "recently used holder and record type out first; 0 keeps nothing): a fuzzy discovery then "
                    "reads one counter per holder instead of all its records.")
    match_filter_limit: int = Field(
        default=250_000, ge=1, le=10_000_000,
        description="Match-filter records (fuzzy discovery) one participant may have enrolled per partnership and "
                    "record type; a batch that would pass it is refused whole (422, naming the limit). Every "
                    "process keeps each holder's set in memory and compares each fuzzy discovery with all of it.")
    match_filter_replacement_ttl_seconds: int = Field(
        default=3600, ge=60, le=7 * 86_400,
        description="How long a match-filter replacement sent in several batches waits for its next batch before "
                    "it is abandoned and its kept records removed (the earlier set answers meanwhile).")
    escalation_webhooks: dict[str, WebhookTarget] = Field(
        default_factory=dict,
        description='Organisation id -> {"url": ..., "secret": ...}: cases awaiting its action are POSTed there '
                    "with an HMAC-SHA256 signature header.")

    log_level: str = "INFO"
    log_json: bool = True

    # The validators below refuse at start-up what would otherwise fail later, at the first request or
    # deep in a lifespan traceback. Their messages never repeat the value: it may hold a password.

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not an SQLAlchemy URL (dialect+driver://user:password@host:port/database)") from None
        if url.host and "@" in url.host:  # an unescaped '@' in the password: the driver would print part of it
            raise ValueError("the host part contains '@': percent-encode '@' in the password as %40") from None
        return value

    @field_validator("client_cert_header")
    @classmethod
    def _client_cert_header_is_a_name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().lower()
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError("not an HTTP header name (letters, digits and '-')")
        if name in _NOT_A_CERTIFICATE_HEADER:
            raise ValueError("a header the gateway reads for something else; use the proxy's own, e.g. "
                             "X-Client-Cert")
        return name

    @field_validator("client_cert_proxies", mode="before")
    @classmethod
    def _client_cert_proxies_split(cls, value: object) -> object:
        """Comma-separated, as FORWARDED_ALLOW_IPS is; each an address or a network (``10.0.0.0/24``). Parsed
        here so that a mistake is one line naming the rule (the union type's own errors are two long ones)."""
        parts = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(parts, list):
            return value
        try:
            return [ip_network(part, strict=True) if isinstance(part, str) else part for part in parts]
        except ValueError:
            raise ValueError("each entry is an IP address or a network in CIDR form without host bits "
                             "(10.0.0.0/24), separated by commas") from None

    @field_validator("client_cert_proxies")
    @classmethod
    def _client_cert_proxies_with_header(cls, value: list[IPv4Network | IPv6Network], info: ValidationInfo
                                         ) -> list[IPv4Network | IPv6Network]:
        # Both or neither: a header without proxies could never be believed (every bound client refused), and
        # proxies without a header would read as if certificates were checked while nothing is.
        header = info.data.get("client_cert_header")
        if header and not value:
            raise ValueError("WGS_CLIENT_CERT_HEADER is set: list the proxies trusted to set it")
        if value and not header and "client_cert_header" in info.data:
            raise ValueError("set WGS_CLIENT_CERT_HEADER too, or leave both unset")
        return value

    @field_validator("opa_url")
    @classmethod
    def _opa_url_is_http(cls, value: str, info: ValidationInfo) -> str:
        # Only the OPA server engine reads the URL: an operator of the embedded default is not refused over
        # a variable it never uses. (policy_engine is declared, so validated, first; if it was refused,
        # that is the one problem reported.)
        if info.data.get("policy_engine") != "opa":
            return value
        from gateway.policy.engine import _opa_address
        from gateway.policy.errors import PolicyUnavailable

        try:
            _opa_address(value)
        except PolicyUnavailable:
            raise ValueError(f"{EXPECTED}, without credentials, query or fragment") from None
        # As for holders (gateway.urls.holder_url): the token, the register and the decisions in the clear, and
        # a decision anyone on the path can forge, only where the operator said the network is trusted.
        if remote_plain_http(http_url(value)) and not info.data.get("opa_allow_insecure_http", False):
            raise ValueError(INSECURE_OPA)
        return value

    @field_validator("opa_token")
    @classmethod
    def _opa_token_is_a_header_value(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Set but empty (``WGS_OPA_TOKEN=`` in a .env) sent no Authorization header at all; a control character
        # (a token file's CR) fails every call; a blank around it is dropped from the header, so the server
        # compares another token than its own. Unset is a server that asks for none.
        if value is None or info.data.get("policy_engine") != "opa":
            return value
        if not value.strip():
            raise ValueError("empty: give the token the OPA server requires, or leave the variable unset for a "
                             "server that asks for none")
        if value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("holds a control character or a blank at either end, which a bearer token cannot "
                             "carry as written; give the token alone, or leave the variable unset")
        return value

    @field_validator("opa_ca_file")
    @classmethod
    def _opa_ca_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # As for the URL: only the OPA server engine reads the file, and it must then exist at start, not at
        # the first decision (where its absence would deny every request).
        if value is not None and info.data.get("policy_engine") == "opa" and not value.is_file():
            raise ValueError("no such file")
        return value

    @field_validator("connector_endpoints")
    @classmethod
    def _endpoints_are_http(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # Plain http:// to another machine would carry the holder's bearer token and the answered records in
        # the clear, credentials fail every call, a query or fragment swallows the fixed paths: refused at
        # start-up, not discovered on the wire (gateway.urls.holder_url). The line names the system, not the URL.
        allow = bool(info.data.get("connector_allow_insecure_http", False))
        for system, url in value.items():
            try:
                holder_url(url, allow_insecure_http=allow)
            except ValueError as exc:
                raise ValueError(f"{system}: {exc}") from None
        return value

    @field_validator("connector_retries")
    @classmethod
    def _holder_calls_fit_the_lease(cls, value: int, info: ValidationInfo) -> int:
        # A holder call outlasting the lease on the attempt's Idempotency-Key (or a re-run's decision) let a
        # retry take it over and ask the holders a second time: refused at start-up, in every process alike.
        timeout = info.data.get("connector_timeout_seconds")
        if timeout is None:  # refused itself: that is the problem reported
            return value
        policy_timeout = info.data.get("opa_timeout_seconds") if info.data.get("policy_engine") == "opa" else None
        problem = leased_work_problem(timeout, value, policy_timeout)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_is_known(cls, value: str) -> str:
        if value.upper() not in logging.getLevelNamesMapping():
            raise ValueError("unknown log level: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @cached_property
    def effective_database_url(self) -> str:
        """The URL actually used: explicit, or an SQLite file under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gateway.sqlite').resolve()}"

    @property
    def key_dir(self) -> Path:
        """Where the file key store keeps signing keys (created on first use)."""
        return self.data_dir / "keys"

    # Per-client rate limits (gateway.ratelimit): a token bucket per verified client (else per peer address).
    rate_limit_per_second: float = Field(
        default=500.0, ge=0, allow_inf_nan=False,
        description="Sustained requests per second per client and process (0: no limit).")
    rate_limit_burst: int = Field(default=1000, ge=1, description="Requests a client may send at once.")
    pseudonym_daily_limit: int = Field(
        default=250_000, ge=0, description="Pseudonyms (look-ups and enrolments) one partner system may have made "
                                           "per UTC day, all gateway processes together (0: no limit); bounds guessing "
                                           "identifiers.")


def settings_problems(exc: ValidationError | SettingsError, prefix: str = "WGS_") -> list[str]:
    """One ``<prefix><FIELD>: <message>`` line per problem, for an operator who set a bad environment variable.

    Pydantic's own rendering repeats each input value (``input_value=...``), and a value may be a password,
    token or webhook secret; these lines name the variable and the rule, never the value. ``prefix`` is the
    settings group's ``env_prefix`` (``WGS_CONSOLE_`` for :class:`gateway.console.settings.ConsoleSettings`),
    so the line names the variable the operator actually set.
    """
    if isinstance(exc, SettingsError):  # a complex value (JSON) that did not parse; its message names no value
        match = re.search(r'field "(\w+)"', str(exc))
        return [f"{prefix}{match.group(1).upper()}: not valid JSON" if match else "settings: a value is not valid JSON"]
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        field, *inner = [str(part) for part in error["loc"]] or ["settings"]
        message = error["msg"].removeprefix("Value error, ")
        where = f"{prefix}{field.upper()}" + (f" ({'.'.join(inner)})" if inner else "")
        lines.append(f"{where}: {message}")
    return lines
