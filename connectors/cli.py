"""``wgs-partner``: run a simulated partner system."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from connectors.holder_auth import JwksSource
from connectors.profiles import PROFILES
from connectors.simulator import create_partner_app

app = typer.Typer(help="Simulated WGS partner systems.", no_args_is_help=True)


@app.command("serve")
def serve(partner: str = typer.Option(..., help="Partner system id, see `wgs-partner list`."),
          host: str = "127.0.0.1", port: int | None = None,
          data_dir: Path = typer.Option(Path("var/partners"), envvar="WGS_PARTNER_DATA_DIR"),
          seed: int = typer.Option(2025, envvar="WGS_PARTNER_SEED"),
          jwks_url: str | None = typer.Option(None, envvar="WGS_PARTNER_JWKS_URL",
                                              help="The gateway's /.well-known/jwks.json."),
          no_auth: bool = typer.Option(False, help="Accept unauthenticated queries (tests only)."),
          over_share: bool = typer.Option(False, help="Answer with an unasked category (filter tests).")) -> None:
    """Serve one simulated partner system over HTTP."""
    if partner not in PROFILES:
        raise typer.BadParameter(f"unknown partner {partner}; see `wgs-partner list`")
    application = create_partner_app(partner, data_dir, seed=seed,
                                      jwks=JwksSource(url=jwks_url) if jwks_url else None,
                                      require_auth=not no_auth, over_share=over_share)
    uvicorn.run(application, host=host, port=port or PROFILES[partner].default_port, log_level="warning")


@app.command("list")
def list_partners() -> None:
    """Show the simulated partner systems."""
    table = Table("system", "organisation", "default port", "title")
    for profile in PROFILES.values():
        table.add_row(profile.system, profile.organisation, str(profile.default_port), profile.title)
    Console().print(table)


if __name__ == "__main__":  # python -m connectors.cli
    app()
