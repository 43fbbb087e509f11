"""The ``wgs-gateway`` command line: database migrations and backups, serving, the demo, accounts and keys."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from alembic import command
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError
from typer.core import TyperGroup

from gateway.auditing.cli import audit_app
from gateway.auth.cli import clients_app, keys_app, users_app
from gateway.backup.cli import backup, record_restore_command, verify_backup
from gateway.console.settings import ConsoleSettings
from gateway.db.engine import alembic_config_for, encoding_refusal, engine_for, require_database
from gateway.enrolment.cli import pseudonyms_app
from gateway.errors import DatabaseNotMigrated, InvalidRegister
from gateway.escalations.cli import escalations_app
from gateway.logging import configure_logging
from gateway.peer import uvicorn_proxy_handling_off
from gateway.register.cli import register_app
from gateway.settings import Settings, without_password
from gateway.startup import (
    checked_for_workers,
    schema_refusal,
    settings_refusal,
    start_problems,
    unreachable,
)


class _SettingsCheckedGroup(TyperGroup):
    """The top-level command group; a bad ``WGS_`` variable ends any command with one line per problem.

    Every command (here and in the sub-apps) builds :class:`Settings` itself (``serve`` and ``demo`` also
    :class:`ConsoleSettings`), so the refusal is turned into lines here, once, rather than in each: without it
    the operator gets typer's traceback, whose rendering of pydantic's error repeats the value, which may be a
    password or a webhook secret. The same for a register file the command cannot use (a mistyped
    ``WGS_REGISTER_FILE``): the loader's lines, as ``register check`` and the start give them, not its traceback.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context; its type is private
        try:
            return super().invoke(ctx)
        except (ValidationError, SettingsError) as exc:
            refused = settings_refusal(exc)
            if refused is None:
                raise
            problems = refused
        except (SQLAlchemyError, DatabaseNotMigrated) as exc:  # a command using the database before `db upgrade`
            problems = [_database_refusal(exc)]
        except InvalidRegister as exc:  # each problem with its file:line, as `register check` prints them
            problems = exc.detail.splitlines()
        for line in problems:
            typer.echo(line, err=True)  # not rich: a message may hold [brackets] and must stay one line
        raise typer.Exit(1)


app = typer.Typer(help="WGS data-sharing gateway.", no_args_is_help=True, cls=_SettingsCheckedGroup)
db_app = typer.Typer(help="Database schema (Alembic) and backups.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(register_app, name="register")
app.add_typer(clients_app, name="clients")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(escalations_app, name="escalations")
app.add_typer(pseudonyms_app, name="pseudonyms")

console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


def _database_refusal(exc: SQLAlchemyError | DatabaseNotMigrated) -> str:
    """The one line for a database error that ended a command: most often a database not migrated yet (the
    command ran before `db upgrade`, or in another directory than the one holding the relative default data
    directory), which the driver reports as a missing table; else the driver's first line, without the password.
    The group's settings check has passed by then, so ``Settings()`` builds."""
    settings = Settings()
    refusal = schema_refusal(settings)
    if refusal is not None:
        return refusal
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
    return f"database error: {without_password(lines[0], settings.effective_database_url)}"


@contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """A database that is down or refuses the login ends the command with one line and exit code 1."""
    try:
        yield
    except SQLAlchemyError as exc:
        typer.echo(unreachable(exc, url), err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    settings = _settings()
    try:  # a WGS_DATA_DIR that is a file, or under one, or where it cannot be made: its line, not a traceback
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the database and the keys: owner only
    except OSError as exc:
        typer.echo(f"cannot make the data directory {settings.data_dir} ({exc.strerror or type(exc).__name__}): "
                   "check WGS_DATA_DIR", err=True)
        raise typer.Exit(1) from None
    with _database_errors(settings.effective_database_url):
        engine = engine_for(settings)
        try:  # before any table is made in a database the gateway cannot use
            refusal = encoding_refusal(engine, settings.db_connect_timeout_seconds)
        finally:
            engine.dispose()
        if refusal is not None:
            typer.echo(refusal, err=True)
            raise typer.Exit(1)
        command.upgrade(alembic_config_for(settings), revision)
    console.print(f"[green]database at {revision}[/green]")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base or -1.")) -> None:
    """Migrate the database down to REVISION."""
    settings = _settings()
    require_database(settings)  # Alembic would create an empty SQLite file to downgrade
    with _database_errors(settings.effective_database_url):
        command.downgrade(alembic_config_for(settings), revision)
    console.print(f"[yellow]database at {revision}[/yellow]")


@db_app.command("current")
def db_current() -> None:
    """Show the database's current revision."""
    settings = _settings()
    require_database(settings)  # Alembic would create an empty SQLite file to look at
    with _database_errors(settings.effective_database_url):
        command.current(alembic_config_for(settings))


db_app.command("backup")(backup)
db_app.command("verify-backup")(verify_backup)
db_app.command("record-restore")(record_restore_command)


GRACEFUL_SHUTDOWN_SECONDS = 10
"""How long ``serve`` lets requests in flight finish after SIGTERM before the app's shutdown (which writes the
queued audit rows) runs; docker-compose.yml's ``stop_grace_period`` for the gateway must leave room for both."""


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    """After a graceful shutdown uvicorn restores the previous handler and raises the signal again; with
    Python's default handlers the process would then die of SIGTERM (exit status 143) or end in click's
    "Aborted!" (SIGINT), although it stopped cleanly. With this one it exits with code 0, which is what
    service managers and ``docker stop`` expect; a signal before uvicorn took over also just ends it."""
    raise SystemExit(0)


@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
          port: int = typer.Option(8000, help="Port to listen on."),
          workers: int = typer.Option(1, help="Worker processes (more than one: run `keys init` first).")) -> None:
    """Run the gateway's HTTP service; refuses to start on an un-migrated database or a bad register file.

    SIGTERM or Ctrl+C stops it gracefully: requests in flight finish, the audit log is written, exit code 0.
    \f
    Logging is configured before uvicorn starts and uvicorn gets ``log_config=None``, so its own lines
    ("Started server process", shutdown) are rendered as the gateway's JSON lines instead of through the
    plain formatters of uvicorn's default configuration. SIGTERM (or Ctrl+C) stops accepting, lets requests
    in flight finish (at most ``timeout_graceful_shutdown`` seconds), runs the app's shutdown and exits 0.
    """
    import uvicorn

    settings = _settings()
    problems = start_problems()  # the entry point's own check, here before logging is set up (Alembic's info
    for line in problems:        # lines would surround it) and before uvicorn (a traceback); see gateway.startup
        typer.echo(line, err=True)  # not rich: a reason may hold [brackets] and must stay one line
    if problems:
        raise typer.Exit(1)
    configure_logging(settings.log_level, settings.log_json)
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_cleanly)
    # The workers need not check again (gateway.startup). proxy_headers off: the app applies FORWARDED_ALLOW_IPS
    # itself, after noting who connected (gateway.peer); said to the workers, which refuse certificate binding
    # where uvicorn's own handling might be on.
    with checked_for_workers(settings, ConsoleSettings()), uvicorn_proxy_handling_off():
        uvicorn.run("gateway.asgi:app", host=host, port=port, workers=workers, factory=False,
                    log_config=None, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, proxy_headers=False)


@app.command("demo")
def demo(port: int = typer.Option(8000, help="Gateway port (another free one is used if taken)."),
         once: bool = typer.Option(False, help="Run the scenarios once and stop (used by the tests).")) -> None:
    """Run the gateway and the simulated partners locally, then the acceptance scenarios through them."""
    from gateway.demo import run_demo

    settings = _settings()
    ConsoleSettings()  # the demo's gateway process would refuse to start over a bad WGS_CONSOLE_ value
    raise typer.Exit(run_demo(settings, port=port, once=once))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # python -m gateway.cli
    app()
