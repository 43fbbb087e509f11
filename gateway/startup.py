"""Why the gateway would refuse to start, as one line per problem for the operator.

Two ways start the gateway: ``wgs-gateway serve`` (and the demo, which starts it the same way), and the ASGI
entry point run by hand — ``uvicorn gateway.asgi:app``, gunicorn with uvicorn workers, a container's command
line. Both check the same things before the app is built, with the same lines: the ``WGS_`` and
``WGS_CONSOLE_`` settings (one line per bad variable, naming it and the rule, never the value: it may be a
password or a webhook secret, and pydantic's own rendering repeats it), the database (there, reachable, at
the code's migration head — a missing SQLite file is not created by looking), the register file and the key
files' modes (none that other users can read or write). Without
the check the app refuses all the same, but in a traceback of some sixty lines, after SQLite has created an
empty database file.

``serve`` with several workers checks once, in its own process: each worker imports the entry point, which
skips the check when that process (:data:`CHECKED_BY_SERVE`) says so, see :func:`checked_for_workers`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import SQLAlchemyError

from gateway.console.settings import ConsoleSettings
from gateway.db.engine import (
    current_heads,
    encoding_refusal,
    engine_for,
    expected_heads,
    migration_gap,
    missing_database_file,
)
from gateway.environment import environment_variable
from gateway.errors import InvalidRegister
from gateway.keyfiles import exposed_key_files
from gateway.peer import binding_refusal
from gateway.register.loader import load_register
from gateway.settings import Settings, settings_problems, url_without_password
from gateway.settings import without_password as without_password  # re-exported: its callers import it here

SETTINGS_PREFIXES = {group.__name__: str(group.model_config.get("env_prefix", ""))
                     for group in (Settings, ConsoleSettings)}
"""The settings groups whose refusal is turned into lines, by the title of pydantic's error."""

STARTUP_FAILURE = 3
"""The exit status of a server process that cannot start: uvicorn's supervisor and gunicorn's arbiter both
take a worker exiting with 3 for one that would fail the same way again, and stop instead of restarting it."""


def unreachable(exc: SQLAlchemyError, url: str) -> str:
    """The one line an operator gets for a database the command could not use."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
    return f"database unreachable: {without_password(lines[0], url)}"


def schema_refusal(settings: Settings) -> str | None:
    """Why ``settings``' database cannot serve this code, as one line, or None: no SQLite file (not
    created by looking: probing it would), a database that cannot be reached, one not in UTF-8
    (:func:`gateway.db.engine.encoding_refusal`), or one not at the code's migration head. What a start checks
    and what a failed command is explained with."""
    url = settings.effective_database_url
    missing = missing_database_file(url)
    if missing is not None:
        return no_database_file(missing)
    try:
        engine = engine_for(settings)
    except SQLAlchemyError as exc:  # e.g. an unknown dialect or driver (ArgumentError, NoSuchModuleError)
        return unreachable(exc, url)
    try:
        refusal = encoding_refusal(engine, settings.db_connect_timeout_seconds)
        if refusal is not None:
            return refusal
        gap = migration_gap(current_heads(engine), expected_heads())
    except SQLAlchemyError as exc:
        return unreachable(exc, url)
    finally:
        engine.dispose()
    return f"database not migrated: run `wgs-gateway db upgrade` first ({gap})" if gap else None


def no_database_file(path: Path) -> str:
    return f"database not migrated: run `wgs-gateway db upgrade` first (no database file at {path})"


def start_refusal(settings: Settings) -> str | None:
    """Why the server would refuse to start with valid ``settings``, as one line, or None: the database
    (:func:`schema_refusal`), the register file (the app checks both again in its lifespan, see the module) or a
    key file others can read or write (:func:`gateway.keyfiles.exposed_key_files`)."""
    refusal = schema_refusal(settings)
    if refusal is not None:
        return refusal
    try:
        load_register(settings.register_file, audience=settings.audience)
    except InvalidRegister as exc:
        return exc.detail.replace("\n", " ")
    exposed = exposed_key_files(settings.key_dir)
    if exposed:
        return (f"key files other users than their owner can read or write: {', '.join(map(str, exposed))}: "
                "chmod 600 them (they sign the gateway's tokens and checkpoints and make its pseudonyms)")
    return None


def settings_refusal(exc: ValidationError | SettingsError) -> list[str] | None:
    """The lines for a settings group's refusal (one per bad variable), or None for any other validation
    error (which is no operator's setting, and is not turned into lines)."""
    if isinstance(exc, SettingsError):
        return settings_problems(exc)
    if exc.title not in SETTINGS_PREFIXES:
        return None
    return settings_problems(exc, SETTINGS_PREFIXES[exc.title])


def start_problems(*, trust_serve: bool = False) -> list[str]:
    """Every reason the server would not start, from the environment as it is: the settings groups' lines,
    else the database's or the register's line; empty when it can start. With ``trust_serve`` (the entry
    point) the database and the register are not checked again when ``serve`` checked them for this process
    with these settings (:func:`checked_for_workers`); the settings are always read (and refused) here, and so
    is certificate binding where the server may apply its own proxy handling (:func:`gateway.peer.binding_refusal`)."""
    try:
        settings = Settings()
        console = ConsoleSettings()
    except (ValidationError, SettingsError) as exc:
        lines = settings_refusal(exc)
        if lines is None:
            raise
        return lines
    if trust_serve and (refusal := binding_refusal(settings.client_cert_header)):  # the entry point's server
        return [refusal]
    if trust_serve and _checked_by_serve(settings, console):
        return []
    refusal = start_refusal(settings)
    return [refusal] if refusal else []


CHECKED_BY_SERVE = "WGS_START_CHECKED_BY"
"""The environment variable ``serve`` sets, once its check passed, for the worker processes it starts:
``<its process id>:<fingerprint of the settings it checked>`` (:func:`checked_for_workers`,
:func:`settings_fingerprint`: no digest of a secret)."""


MIN_TRUSTED_PID = 2
"""The lowest process id a start-checked marker may name (:func:`_checked_by_serve`)."""


def settings_fingerprint(settings: Settings, console: ConsoleSettings) -> str:
    """A digest of both settings groups without their secrets: a worker reading other settings than ``serve``
    checked (another ``.env``, another variable) does not match it.

    Why without secrets: the marker sits in every worker's environment, where more than the gateway may see
    it (a process listing with environments, a crash report). A digest over a password lets whoever reads it
    test guesses offline, one hash each. Left out are the fields that do not show in a repr (the OPA token,
    a webhook's secret, the console's session secret), the database URL's password and that of any other URL
    (a connector endpoint, a webhook's URL, the OPA URL); none of them is what the skipped checks look at,
    and a worker still reads and validates every setting itself."""
    material = json.dumps([_shown(settings), _shown(console)], sort_keys=True, default=str)
    return hashlib.sha256(b"wgs-start-checked/2\0" + material.encode()).hexdigest()


def _shown(value: object) -> object:
    """``value`` as plain data, without the fields of a model that its repr hides and without a database
    URL's password (:func:`settings_fingerprint`)."""
    if isinstance(value, Settings):
        shown = _shown_fields(value)
        shown["database_url"] = without_password(value.effective_database_url, value.effective_database_url)
        return shown
    if isinstance(value, BaseModel):
        return _shown_fields(value)
    if isinstance(value, dict):
        return {str(key): _shown(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(item) for item in value]
    if isinstance(value, str):  # a webhook's or the OPA URL may carry a password
        return url_without_password(value)
    return value


def _shown_fields(model: BaseModel) -> dict[str, object]:
    return {name: _shown(getattr(model, name)) for name, field in type(model).model_fields.items() if field.repr}


@contextmanager
def checked_for_workers(settings: Settings, console: ConsoleSettings) -> Iterator[None]:
    """Tell the server processes started inside (uvicorn's workers, or ``serve``'s own process with one
    worker) that ``serve`` checked ``settings`` and ``console`` before starting them; the variable is taken
    away again afterwards.

    Why: every worker imports :mod:`gateway.asgi`, whose check opened a database connection, read the
    migration state and parsed the register once more per worker, although ``serve`` had just done so. A
    worker skips it only when the variable names its parent process (or itself) and the fingerprint of
    the settings it reads: a variable left in a shell, copied to another host's environment or inherited
    through anything but ``serve``'s workers names another process, so ``uvicorn gateway.asgi:app`` started
    by hand still checks (and exits with :data:`STARTUP_FAILURE` on a refusal). The app's lifespan still
    refuses a database or register gone bad between the check and a worker's start."""
    with environment_variable(CHECKED_BY_SERVE, f"{os.getpid()}:{settings_fingerprint(settings, console)}"):
        yield


def _checked_by_serve(settings: Settings, console: ConsoleSettings) -> bool:
    """Whether this process's parent (a worker) or this process itself (one worker) is the ``serve`` that
    checked these settings.

    A process id below 2 is never trusted: 0 is no process, and 1 is init, which is a worker's parent once
    ``serve`` has gone and the worker was re-parented (to whatever then holds pid 1), or a marker forged to
    name it. The cost: ``serve`` run as a container's first process (pid 1) has its check repeated by each
    worker, as a start by hand does."""
    pid, _, fingerprint = os.environ.get(CHECKED_BY_SERVE, "").partition(":")
    return (pid.isascii() and pid.isdigit() and int(pid) >= MIN_TRUSTED_PID
            and int(pid) in (os.getpid(), os.getppid()) and fingerprint.isascii()
            and hmac.compare_digest(fingerprint, settings_fingerprint(settings, console)))
