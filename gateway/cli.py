"""The ``wgs-gateway`` command line: database migrations, serving, the demo, accounts and keys."""

from __future__ import annotations

import sys

import typer
from alembic import command
from rich.console import Console

from gateway.auditing.cli import audit_app
from gateway.auth.cli import clients_app, keys_app, users_app
from gateway.db.engine import alembic_config
from gateway.enrolment.cli import pseudonyms_app
from gateway.escalations.cli import escalations_app
from gateway.register.cli import register_app
from gateway.settings import Settings

app = typer.Typer(help="WGS data-sharing gateway.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
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


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.effective_database_url), revision)
    console.print(f"[green]database at {revision}[/green]")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base or -1.")) -> None:
    """Migrate the database down to REVISION."""
    command.downgrade(alembic_config(_settings().effective_database_url), revision)
    console.print(f"[yellow]database at {revision}[/yellow]")


@db_app.command("current")
def db_current() -> None:
    """Show the database's current revision."""
    command.current(alembic_config(_settings().effective_database_url))


@app.command("serve")
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the gateway HTTP service (refuses to start on an un-migrated database)."""
    import uvicorn

    uvicorn.run("gateway.asgi:app", host=host, port=port, workers=workers, factory=False,
                log_config=None, timeout_graceful_shutdown=10)


@app.command("demo")
def demo(port: int = typer.Option(8000, help="Gateway port (another free one is used if taken)."),
         once: bool = typer.Option(False, help="Run the scenarios once and stop (used by the tests).")) -> None:
    """Run the gateway and the simulated partners locally, then the acceptance scenarios through them."""
    from gateway.demo import run_demo

    raise typer.Exit(run_demo(_settings(), port=port, once=once))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # python -m gateway.cli
    app()
