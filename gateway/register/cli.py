"""CLI: ``wgs-gateway register check|show|versions``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from gateway.db.engine import existing_engine_for, make_session_factory, transaction
from gateway.errors import InvalidRegister
from gateway.register import repository
from gateway.register.loader import load_register
from gateway.settings import Settings

register_app = typer.Typer(help="The partnership register.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@register_app.command("check")
def check(file: Path = typer.Argument(..., help="The register file (YAML) to check."),
          audience: str = typer.Option(Settings.model_fields["audience"].default, envvar="WGS_AUDIENCE",
                                       help="The gateway's token audience: no partner system may have it as its "
                                            "id (the gateway refuses to start with such a register).")
          ) -> None:
    """Validate a register file as the start does; prints every problem with its line. Exit 1 when invalid."""
    try:
        register, _ = load_register(file, audience=audience)
    except InvalidRegister as exc:
        problems = exc.extra.get("problems", [])
        if not problems:  # the file as a whole (unreadable, not YAML): the detail names it already
            err.print(exc.detail, markup=False, highlight=False, soft_wrap=True)
        for problem in problems:
            where = " ".join(filter(None, [problem.get("path", ""), problem["reason"]]))
            err.print(f"{file}:{problem['line']}:{problem['column']}: {where}", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1) from None
    # As the refusals: the path is no markup, and a long one is not wrapped into two lines.
    out.print(f"{file}: valid, version {register.version}, {len(register.partnerships)} partnerships",
              markup=False, highlight=False, soft_wrap=True)


@register_app.command("show")
def show() -> None:
    """Summarise the configured register file."""
    register, _ = load_register(Settings().register_file)
    table = Table("partnership", "status", "participants", "purposes", title=f"register {register.version}")
    for pid, partnership in register.partnerships.items():
        table.add_row(pid, partnership.status.value, str(len(partnership.participants)),
                      ", ".join(partnership.purposes))
    out.print(table)


@register_app.command("versions")
def versions() -> None:
    """List the register versions recorded in the database."""
    settings = Settings()
    with transaction(make_session_factory(existing_engine_for(settings))) as session:
        table = Table("version", "sha256", "source", "loaded at")
        for version in repository.list_versions(session):
            table.add_row(version.version, version.sha256[:16], version.source, version.loaded_at.isoformat())
    out.print(table)
