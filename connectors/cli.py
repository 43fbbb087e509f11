"""``wgs-partner``: run a simulated partner system (also ``python -m connectors.simulator``)."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path
from typing import NoReturn

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from connectors.holder_auth import MAX_AGE_SECONDS, STALE_GRACE_SECONDS, JwksSource, TokenRefused
from connectors.logs import configure_logging
from connectors.profiles import PROFILES
from connectors.simulator import create_partner_app

err = Console(stderr=True)
app = typer.Typer(help="Simulated WGS partner systems (synthetic data only).", no_args_is_help=True)


@app.command("serve")
def serve(partner: str = typer.Option(..., help="Partner system id, see `wgs-partner list`."),
          host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int | None = typer.Option(None, help="Port (default: the profile's, see `wgs-partner list`)."),
          data_dir: Path = typer.Option(Path("var/partners"), envvar="WGS_PARTNER_DATA_DIR",
                                        help="Directory of the partner's own SQLite file."),
          seed: int = typer.Option(2025, envvar="WGS_PARTNER_SEED", help="Seed of the synthetic world."),
          jwks_url: str | None = typer.Option(None, envvar="WGS_PARTNER_JWKS_URL",
                                              help="The gateway's /.well-known/jwks.json."),
          jwks_file: Path | None = typer.Option(None, envvar="WGS_PARTNER_JWKS_FILE",
                                                help="The gateway's JWKS as a file (instead of a URL)."),
          jwks_ca_file: Path | None = typer.Option(
              None, envvar="WGS_PARTNER_JWKS_CA_FILE",
              help="CA bundle to verify an https --jwks-url against (the partnership's own CA), instead of "
                   "the system's trust store."),
          jwks_max_age: float = typer.Option(
              MAX_AGE_SECONDS, min=1.0, envvar="WGS_PARTNER_JWKS_MAX_AGE",
              help="Seconds before the gateway's keys are read again (less when its answer says so): the longest "
                   "a key the gateway retired is still accepted."),
          jwks_stale_grace: float = typer.Option(
              STALE_GRACE_SECONDS, min=0.0, envvar="WGS_PARTNER_JWKS_STALE_GRACE",
              help="Seconds past their max age the gateway's keys are still used while they cannot be read "
                   "again; then every token is refused until they can."),
          issuer: str | None = typer.Option(None, envvar="WGS_PARTNER_GATEWAY_ISSUER",
                                            help="The gateway's issuer (iss); tokens must carry it."),
          no_auth: bool = typer.Option(False, "--no-auth", help="Accept unauthenticated queries (tests only)."),
          over_share: bool = typer.Option(False, "--over-share", envvar="WGS_PARTNER_OVER_SHARE",
                                          help="Misbehave: add an unasked category (gateway filter tests)."),
          log_level: str = typer.Option("INFO", envvar="WGS_PARTNER_LOG_LEVEL",
                                        help="JSON log lines on stderr at this level.")) -> None:
    """Serve one simulated partner system over HTTP."""
    if partner not in PROFILES:
        raise typer.BadParameter(f"unknown partner {partner!r}; see `wgs-partner list`", param_hint="--partner")
    if not no_auth and not (jwks_url or jwks_file):
        raise typer.BadParameter("give the gateway's keys with --jwks-url or --jwks-file, or pass --no-auth",
                                 param_hint="--jwks-url")
    try:
        configure_logging(log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from exc
    try:
        keys = None if no_auth else JwksSource(url=jwks_url, file=jwks_file, ca_file=jwks_ca_file,
                                                 max_age=jwks_max_age, stale_grace=jwks_stale_grace)
    except OSError as exc:  # ssl.SSLError too; read now, so that a bad bundle fails here, not token by token
        raise typer.BadParameter(f"cannot read the CA bundle ({type(exc).__name__})",
                                 param_hint="--jwks-ca-file") from exc
    if keys is not None and jwks_file is not None and not jwks_url:
        _read_at_start(keys, jwks_file)
    try:
        application = create_partner_app(partner, data_dir, seed=seed, jwks=keys, require_auth=not no_auth,
                                         over_share=over_share, issuer=issuer)
    except (OSError, sqlite3.Error) as exc:  # the message names the path and the reason, no record
        _fail(f"cannot use the data directory {data_dir}: "
              f"{getattr(exc, 'strerror', None) or exc or type(exc).__name__}")
    # The app, its store and the synthetic world live as long as the process: move them out of the cyclic
    # collector's reach, or every full collection scans them all again (measured: 50-60 ms pauses, which
    # every caller of the simulator — the gateway and the benchmarks' baselines alike — sees as latency).
    gc.collect()
    gc.freeze()
    # log_config=None: uvicorn's default configuration would put its plain-text handlers back over our JSON
    uvicorn.run(application, host=host, port=port or PROFILES[partner].default_port, log_level="warning",
                access_log=False, log_config=None)


def _read_at_start(keys: JwksSource, jwks_file: Path) -> None:
    """The key file read once before serving. Why: a file is on this machine and is either there or not — a
    mistyped ``--jwks-file`` started a partner that then refused every token the gateway sent, which showed up
    only as the gateway's holders being unavailable. (A URL is not read here: the gateway may start later.)"""
    try:
        keys.keys()
    except TokenRefused as exc:
        _fail(f"{exc}: {jwks_file}")


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 1: a configuration the partner cannot start with, no traceback."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command("list")
def list_partners() -> None:
    """Show the simulated partner systems and the data categories each holds."""
    table = Table(title="Simulated partner systems")
    for column in ("system", "organisation", "port"):
        table.add_column(column, no_wrap=True)
    table.add_column("holds")
    for profile in PROFILES.values():
        table.add_row(profile.system, profile.organisation, str(profile.default_port),
                      ", ".join(sorted(profile.holds)))
    Console().print(table)


if __name__ == "__main__":  # python -m connectors.cli
    app()
