"""CLI: ``wgs-gateway clients ...``, ``users ...`` and ``keys ...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from gateway.auth import repository
from gateway.auth.access_changes import Kind, register_client, set_active, set_certificate_bound
from gateway.auth.accounts import create_account, set_password
from gateway.auth.certificate_pins import NotCertificates, pins_from_pem
from gateway.auth.clients import ClientDisabled
from gateway.auth.keys import SigningKeyStore
from gateway.clock import SystemClock
from gateway.db.engine import existing_engine_for, make_session_factory, transaction
from gateway.errors import GatewayError
from gateway.register.loader import load_register
from gateway.settings import Settings

clients_app = typer.Typer(help="Partner systems (OAuth clients).", no_args_is_help=True)
users_app = typer.Typer(help="People's accounts (privacy officers, administrators, contact point).",
                        no_args_is_help=True)
keys_app = typer.Typer(help="The gateway's keys: all of them at once, and the token-signing keys.",
                       no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _sessions(settings: Settings):  # type: ignore[no-untyped-def]
    return make_session_factory(existing_engine_for(settings))


def _fail(exc: GatewayError) -> NoReturn:
    err.print(f"[red]{exc.detail}[/red]")
    raise typer.Exit(1)


def _refuse(line: str) -> NoReturn:
    """One line on stderr and exit code 1: not rich, which would wrap a long line and read [brackets] as markup."""
    typer.echo(line, err=True)
    raise typer.Exit(1)


def _jwks_from(path: Path) -> Any:
    """The parsed ``--jwks-file``. A mistyped path or a file that is no JSON is one line naming the file, not a
    traceback; the line never quotes the content (the operator may have picked the private key by mistake)."""
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        _refuse(f"{path}: cannot read the JWKS file ({exc.strerror or type(exc).__name__})")
    except (ValueError, RecursionError):  # also a file that is not UTF-8 text, or arrays nested past the stack
        _refuse(f"{path}: the JWKS file is not JSON")


def _pins_from(paths: list[Path] | None) -> list[str]:
    """The thumbprints of the certificates in the ``--certificate`` files (each one or more PEM certificates),
    in the order given. An unreadable file, one that is no PEM certificate or that holds a private key is one
    line naming the file, never quoting it (:func:`~gateway.auth.certificate_pins.pins_from_pem`)."""
    pins: dict[str, None] = {}
    for path in paths or []:
        try:
            data = path.read_bytes()
        except OSError as exc:
            _refuse(f"{path}: cannot read the certificate file ({exc.strerror or type(exc).__name__})")
        try:
            pins.update(dict.fromkeys(pins_from_pem(data)))
        except NotCertificates as exc:
            _refuse(f"{path}: {exc}")
    return list(pins)


def _pinned(pins: tuple[str, ...]) -> str:
    """What the output says of a bound client's pins (thumbprints only: a subject may name a person)."""
    return f", pinned to {len(pins)} certificate(s) ({', '.join(pins)})" if pins else ""


def _warn_unpinned(system_id: str) -> None:
    """Why: a bound client that is not pinned gets tokens over any certificate the proxy verified, so its leaked
    key together with another system's certificate of the same CA gets a bound token."""
    typer.echo(f"warning: client {system_id} is not pinned to a certificate: it gets tokens over any certificate "
               "the proxy verified; give --certificate FILE to pin its own", err=True)


_CERTIFICATE_HELP = ("PEM file of a TLS client certificate to pin (thumbprint x5t#S256); repeatable, and a file may "
                     "hold several (a renewal overlapping the old one). Tokens then only over these certificates.")


@clients_app.command("add")
def clients_add(system_id: str = typer.Argument(..., help="The system's id in the register."),
                scopes: str = typer.Option("exchange,discovery,enrol", help="Comma-separated scopes."),
                jwks_file: Path | None = typer.Option(None, help="Public JWKS of the system (private_key_jwt)."),
                generate_secret: bool = typer.Option(False, help="Use a client secret (printed once)."),
                keep_disabled: bool = typer.Option(False, help="Give a disabled client new credentials and keep "
                                                                "it disabled (`clients enable` enables it)."),
                certificate_bound: bool = typer.Option(
                    False, help="Bind its tokens to its TLS client certificate (RFC 8705): tokens only over a "
                                "certificate the proxy forwards. Left out, an existing binding stays."),
                certificate: list[Path] | None = typer.Option(
                    None, "--certificate", help=_CERTIFICATE_HELP + " With --certificate-bound; left out, the pins "
                                                                   "an existing client has stay.")
                ) -> None:
    """Register a partner system from the register as an OAuth client, or give it new credentials.

    New credentials end the tokens the client got before (within seconds) and are audited (`client-rekeyed`).

    A disabled client is not enabled by this: it is refused, or with --keep-disabled re-keyed and left disabled."""
    settings = Settings()
    register, _ = load_register(settings.register_file)
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
    if bool(jwks_file) == generate_secret:
        err.print("[red]give exactly one of --jwks-file or --generate-secret[/red]")
        raise typer.Exit(2)
    if certificate and not certificate_bound:
        err.print("[red]--certificate pins the certificates of a certificate-bound client: give "
                  "--certificate-bound too[/red]")
        raise typer.Exit(2)
    state = "; it stays disabled" if keep_disabled else ""
    jwks = _jwks_from(jwks_file) if jwks_file else None
    pins = _pins_from(certificate)
    engine = existing_engine_for(settings)
    try:
        done = register_client(settings, engine, register, system_id, scope_list, SystemClock(), jwks=jwks,
                               keep_disabled=keep_disabled, certificate_bound=certificate_bound,
                               certificate_pins=pins)
    except ClientDisabled as exc:
        _refuse(f"{exc.detail}: give --keep-disabled to give it new credentials and keep it disabled, or enable it "
                f"first with `wgs-gateway clients enable {system_id}`")
    except GatewayError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    if done.rekeyed:
        state += (f"; tokens it got before are refused within {settings.revocation_refresh_seconds:g} s "
                  "(audited)")
    if done.record.certificate_bound:
        state += "; its tokens are bound to its TLS client certificate" + _pinned(done.record.certificate_pins)
        if settings.client_cert_header is None:
            state += " (WGS_CLIENT_CERT_HEADER is not set here: it gets no token until it is)"
    method = " (private_key_jwt)" if done.secret is None else ""
    secret = f"; secret (shown once): {done.secret}" if done.secret is not None else ""
    message = f"client {system_id} registered{method}{state}{secret}"
    out.print(message)  # only once committed: a secret shown for a rolled-back registration would be no secret
    if done.record.certificate_bound and not done.record.certificate_pins:
        _warn_unpinned(system_id)


@clients_app.command("list")
def clients_list() -> None:
    """List the partner systems registered as OAuth clients: organisation, method, scopes, active, bound.

    And pins: how many certificates a bound one is pinned to (0: any certificate the proxy verified)."""
    with transaction(_sessions(Settings())) as session:
        table = Table("client", "organisation", "method", "scopes", "active", "certificate-bound", "pins")
        for client in repository.list_clients(session):
            table.add_row(client.client_id, client.organisation, client.auth_method, " ".join(client.scopes),
                          str(client.active), str(client.certificate_bound), str(len(client.certificate_pins)))
    out.print(table)


@clients_app.command("disable")
def clients_disable(system_id: str = typer.Argument(..., help="The system's client id.")) -> None:
    """Disable a partner system's client: its tokens (issued ones too) are refused within seconds. Audited.

    Those tokens stay refused when it is enabled again: it fetches new ones."""
    _set_active("client", system_id, False)


@clients_app.command("enable")
def clients_enable(system_id: str = typer.Argument(..., help="The system's client id.")) -> None:
    """Enable a disabled partner system's client again: it gets new tokens, not its old ones. Audited."""
    _set_active("client", system_id, True)


@clients_app.command("bind")
def clients_bind(system_id: str = typer.Argument(..., help="The system's client id."),
                 certificate: list[Path] | None = typer.Option(None, "--certificate", help=_CERTIFICATE_HELP)
                 ) -> None:
    """Bind a partner system's tokens to its TLS client certificate (RFC 8705). Audited.

    It then gets tokens only over a client certificate the trusted proxy forwards (WGS_CLIENT_CERT_HEADER), and
    each is good only over that certificate. The tokens it got before are refused within seconds.

    With --certificate only over the certificates given (pinned), replacing the pins it had; without, any
    certificate the proxy verified will do (a warning says so), and a pinned client keeps its pins."""
    _set_certificate_bound(system_id, True, _pins_from(certificate))


@clients_app.command("unbind")
def clients_unbind(system_id: str = typer.Argument(..., help="The system's client id.")) -> None:
    """No longer bind a partner system's new tokens to a client certificate. Audited.

    Its pinned certificates are cleared. Tokens it got bound keep asking for their certificate until they expire."""
    _set_certificate_bound(system_id, False)


def _set_certificate_bound(system_id: str, bound: bool, pins: list[str] | None = None) -> None:
    settings = Settings()
    engine = existing_engine_for(settings)
    try:
        changed = set_certificate_bound(settings, engine, system_id, bound, pins or ())
        with transaction(make_session_factory(engine)) as session:
            client = repository.get_client(session, system_id)  # what it is now, to say so
    except GatewayError as exc:
        _refuse(exc.detail)
    finally:
        engine.dispose()
    now = client.certificate_pins if client is not None and bound else ()
    word = f"bound to its TLS client certificate{_pinned(now)}" if bound else "not certificate-bound"
    if not changed:
        out.print(f"client {system_id} is already {word}; nothing changed")
    else:
        note = ""
        if bound:
            note = f"; tokens it got before are refused within {settings.revocation_refresh_seconds:g} s"
            if settings.client_cert_header is None:
                note += " (WGS_CLIENT_CERT_HEADER is not set here: it gets no token until it is)"
        out.print(f"client {system_id} {word}{note} (audited)")
    if bound and not now:
        _warn_unpinned(system_id)


def _set_active(kind: Kind, name: str, active: bool) -> None:
    """Enable or disable a client or an account, with its audit entry (:mod:`gateway.auth.access_changes`)."""
    settings = Settings()
    engine = existing_engine_for(settings)
    try:
        change = set_active(settings, engine, kind, name, active)
    except GatewayError as exc:
        _refuse(exc.detail)
    finally:
        engine.dispose()
    word = "enabled" if active else "disabled"
    out.print(f"{kind} {name} {word}" if change.changed else f"{kind} {name} is already {word}; nothing changed")


def _stdin_password() -> str:
    """The password's line on standard input. Bytes that are not UTF-8 (a file saved in another encoding) fail
    to decode under a UTF-8 locale, or reach Python as surrogates under the C locale, which no password hash can
    take: either way refused in one line, never quoting the input, instead of a traceback."""
    try:
        password = sys.stdin.readline().rstrip("\n")
        password.encode("utf-8")
    except UnicodeError:
        _refuse("the password on standard input is not UTF-8 text")
    return password


@users_app.command("add")
def users_add(username: str = typer.Argument(..., help="The name the person signs in with."),
              organisation: str = typer.Option(..., help="The person's organisation, as in the register."),
              role: list[str] = typer.Option(..., help="privacy-officer, coordinating-privacy-officer, "
                                                      "administrator, contact-point (repeatable)"),
              password_stdin: bool = typer.Option(False, help="Read the password from standard input.")) -> None:
    """Create a person's account."""
    settings = Settings()
    register, _ = load_register(settings.register_file)
    if organisation not in register.organisations:
        err.print(f"[red]unknown organisation {organisation}[/red]")
        raise typer.Exit(1)
    password = _stdin_password() if password_stdin else typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    try:
        with transaction(_sessions(settings)) as session:
            create_account(session, username, organisation, role, password, SystemClock())
    except GatewayError as exc:
        _fail(exc)
    out.print(f"account {username} created")


@users_app.command("set-password")
def users_set_password(username: str = typer.Argument(..., help="The account's username."),
                       password_stdin: bool = typer.Option(False, help="Read the password from standard input.")
                       ) -> None:
    """Give an account a new password (forgotten or leaked): its sessions and API tokens end at once."""
    password = _stdin_password() if password_stdin else typer.prompt(
        "New password", hide_input=True, confirmation_prompt=True)
    try:
        with transaction(_sessions(Settings())) as session:
            set_password(session, username, password)
    except GatewayError as exc:
        _fail(exc)
    out.print(f"password of {username} set; the account's console sessions and API tokens have ended")


@users_app.command("list")
def users_list() -> None:
    """List people's accounts: organisation, roles, active."""
    with transaction(_sessions(Settings())) as session:
        table = Table("username", "organisation", "roles", "active")
        for account in repository.list_accounts(session):
            table.add_row(account.username, account.organisation, ", ".join(account.roles), str(account.active))
    out.print(table)


@users_app.command("disable")
def users_disable(username: str = typer.Argument(..., help="The account's username.")) -> None:
    """Disable a person's account: sign-in and their tokens (issued ones too) are refused at once. Audited."""
    _set_active("account", username, False)


@users_app.command("enable")
def users_enable(username: str = typer.Argument(..., help="The account's username.")) -> None:
    """Enable a disabled person's account again: they can sign in again. Audited."""
    _set_active("account", username, True)


def _key_store(settings: Settings) -> SigningKeyStore:
    """The token-signing key store, not read yet: whether a missing key is created is each command's choice."""
    from datetime import timedelta

    return SigningKeyStore(settings.key_dir, SystemClock(), timedelta(seconds=settings.access_token_ttl_seconds + 300))


@keys_app.command("init")
def keys_init() -> None:
    """Create every key the gateway needs that is missing; keeps the ones there.

    The token-signing key, the audit checkpoint key and the pseudonymisation key ring. Run it once before
    starting several worker processes, so that they never race to create them. Over an audit log that has
    checkpoints it makes no checkpoint key, and refuses one that did not sign them, as the gateway's start does:
    the log's own key is to be restored (a new one would give the log a second identity)."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from gateway.auditing.setup import CheckpointKeyError, install_checkpoint_key
    from gateway.pseudonyms.keystore import FileKeyStore

    settings = Settings()
    try:  # first: a refusal makes no key at all
        install_checkpoint_key(settings)
    except CheckpointKeyError as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:
        err.print(f"cannot read the database to see whether its audit log has a key already "
                  f"({type(exc).__name__}): start the database first", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # a key directory that cannot be made (WGS_DATA_DIR a file, or under one): no traceback
        _refuse(f"cannot make the keys in {settings.key_dir} ({exc.strerror or type(exc).__name__}): check "
                "WGS_DATA_DIR")
    _key_store(settings).load_or_create()
    ring = asyncio.run(FileKeyStore(settings.key_dir / "pseudonyms").initialise())
    out.print(f"keys ready in {settings.key_dir} (pseudonym key version {ring.current})")


@keys_app.command("rotate")
def keys_rotate(retire_previous_now: bool = typer.Option(
        False, help="The old key leaked: retire it (and every older one) now, so that the tokens it signed are "
                    "refused at once. Audited.")) -> None:
    """Make a new signing key; tokens signed by the old one stay valid until they expire.

    Gateway processes sign with the new key from their next token on. After a leak, --retire-previous-now ends
    the old key's tokens at once instead."""
    settings = Settings()
    store = _key_store(settings)
    if retire_previous_now:
        _retire(settings, store, None)
        return
    store.load_or_create()  # as before: a first key, then its successor
    kid = store.rotate()
    out.print(f"new signing key {kid}; gateway processes sign with it from their next token on")


@keys_app.command("retire")
def keys_retire(kid: str = typer.Argument(..., help="The superseded key's id (`keys list`).")) -> None:
    """Retire a superseded signing key now (it leaked): the tokens it signed are refused at once.

    Every gateway process using this key directory refuses them from its next request on, and the JWKS no longer
    has the key. Audited. For the current key: `keys rotate --retire-previous-now`."""
    settings = Settings()
    _retire(settings, _key_store(settings), kid)


def _retire(settings: Settings, store: SigningKeyStore, kid: str | None) -> None:
    from gateway.auth.key_retirement import retire_signing_keys

    engine = existing_engine_for(settings)
    try:
        done = retire_signing_keys(settings, engine, store, kid)
    except GatewayError as exc:
        _refuse(exc.detail)
    except OSError as exc:  # the key file could not be written (disk full, permissions): the audit entry rolled back
        _refuse(f"the signing keys could not be written ({exc.strerror or type(exc).__name__}); nothing was retired")
    finally:
        engine.dispose()
    new = f"new signing key {done.successor}; " if done.successor else ""
    signed_by = "it" if len(done.retired) == 1 else "them"
    out.print(f"{new}retired {', '.join(done.retired)}: tokens signed by {signed_by} are refused from now on by every "
              "gateway process using this key directory (audited)", soft_wrap=True)


@keys_app.command("list")
def keys_list() -> None:
    """List the token-signing keys: id, created, superseded (never the key material)."""
    store = _key_store(Settings())
    if not store.load():  # never a key made for the listing: nobody's tokens would be signed with it
        err.print(f"no token-signing keys at {store.path}: is the data directory right? (`wgs-gateway keys init` "
                  "or starting the gateway creates them)", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    table = Table("kid", "created", "superseded")
    for key in store.describe():
        table.add_row(key["kid"] or "", key["created_at"] or "", key["superseded_at"] or "")
    out.print(table)
