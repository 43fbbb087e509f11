"""CLI: ``wgs-gateway audit key|export|verify`` — a privacy officer's independent check of the log."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from audit import NoteVerifier, export_log, verify_database, verify_export
from gateway.auditing.setup import audit_verifier
from gateway.db.engine import make_engine
from gateway.settings import Settings

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@audit_app.command("key")
def key() -> None:
    """Print the log's verifier key (pin it; pass it to `audit verify --key`)."""
    typer.echo(audit_verifier(Settings()).vkey)  # plain: a console would wrap the long key


@audit_app.command("export")
def export(out_file: Path = typer.Option(..., "--out", help="File to write (JSON Lines).")) -> None:
    """Export entries, checkpoints and the public key to one file for offline verification."""
    settings = Settings()
    engine = make_engine(settings.effective_database_url)
    summary = export_log(engine, audit_verifier(settings), out_file)
    engine.dispose()
    out.print(f"exported {summary}")


@audit_app.command("verify")
def verify(export_file: Path | None = typer.Option(None, "--export", help="Verify this export instead of the "
                                                                          "live database."),
           vkey: str | None = typer.Option(None, "--key", help="Pinned verifier key (from `audit key`)."),
           checkpoint: list[Path] = typer.Option([], help="Checkpoints kept from earlier (detects rollback)."),
           fast: bool = typer.Option(False, "--fast", help="Tree, signatures and consistency only; skip the "
                                                          "per-entry canonical-JSON and schema checks (much faster)."),
           workers: int | None = typer.Option(None, "--workers", min=1,
                                              help="Processes for a --fast live verification of a large log "
                                                   "(default: one per core).")
           ) -> None:
    """Recompute the tree, check every checkpoint signature and their consistency. Exit 0 only if intact.

    Without ``--fast`` every entry is also re-parsed and checked to be canonical JSON of a valid event and to
    agree with its query columns; a changed byte is caught either way (it changes the tree)."""
    known = [path.read_text() for path in checkpoint]
    if export_file is not None:
        result = verify_export(export_file, verifier=NoteVerifier.from_vkey(vkey) if vkey else None,
                               known_checkpoints=known, deep=not fast)
    else:
        settings = Settings()
        engine = make_engine(settings.effective_database_url)
        verifier = NoteVerifier.from_vkey(vkey) if vkey else audit_verifier(settings)
        # Chunks of a large log are checked by worker processes, one per core unless told: verification is an
        # offline job that a privacy officer waits for, and the chunks are independent.
        result = verify_database(engine, verifier, known_checkpoints=known, deep=not fast,
                                 workers=workers or os.cpu_count() or 1)
        engine.dispose()
    for warning in result.warnings:
        err.print(f"[yellow]warning: {warning}[/yellow]")
    if not result.ok:
        err.print(f"[red]log NOT intact: {result.failure}[/red]")
        raise typer.Exit(1)
    out.print(f"log intact: {result.entries} entries, {result.checkpoints} checkpoints, "
              f"root {result.root_hash.hex() if result.root_hash else '-'}")
