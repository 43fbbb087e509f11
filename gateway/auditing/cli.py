"""CLI: ``wgs-gateway audit key|checkpoint|export|verify`` — a privacy officer's independent check of the log.

These commands read the log; they never create its checkpoint key (only ``keys init`` and the gateway
starting do, see :mod:`gateway.auditing.setup`). Run against an empty or wrong data directory, they say so in
one line and exit 1, instead of printing, signing with or verifying against a key nobody pinned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from audit import (
    AuditLog,
    AuditWriteError,
    ExportSummary,
    KeyHistory,
    MalformedRow,
    NoteSigner,
    NoteVerifier,
    ProofUnavailable,
    StoreUnavailable,
    VerificationError,
    claimed_checkpoint,
    export_log,
    verify_database,
    verify_export,
)
from audit.store import KeyRow
from gateway.auditing.actions import export_event
from gateway.auditing.setup import (
    KEY_LOCK_BUSY,
    CheckpointKeyError,
    audit_signer,
    audit_verifier,
    writing_signer,
)
from gateway.db.engine import existing_engine_for, missing_database_file
from gateway.keyfiles import replace_whole
from gateway.settings import Settings

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _one_line(message: str) -> None:
    """A refusal as one line on stderr: no markup (a path may hold [brackets]), no wrapping."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)


def _existing_signer(settings: Settings) -> NoteSigner:
    """The log's signer from its existing key, or one line on stderr and exit code 1."""
    try:
        return audit_signer(settings)
    except CheckpointKeyError as exc:
        _one_line(str(exc))
        raise typer.Exit(1) from None


def _pinned(vkey: str) -> NoteVerifier:
    try:
        return NoteVerifier.from_vkey(vkey)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--key") from None


def _export_verifier(vkey: str | None) -> NoteVerifier:
    """The key an export is checked against: ``--key``, else the log's own from the key store (as for the live
    log), else a usage error. Never the key the export names itself: whoever can rewrite the file's entries and
    checkpoints can rewrite its header too, and the forgery then verified as "log intact" (exit 0, a warning)."""
    if vkey:
        return _pinned(vkey)
    try:
        return audit_verifier(Settings())
    except CheckpointKeyError:
        raise typer.BadParameter("needed to verify an export away from the log's key store: the log's pinned "
                                 "verifier key (`wgs-gateway audit key`); the key an export names itself proves "
                                 "nothing", param_hint="--key") from None


def _kept(paths: list[Path]) -> list[str]:
    """The checkpoints an officer kept, as texts; a file that is not one ends the command with a format
    verdict naming it (exit 1). Left to the verifier, it would be a numbered kept checkpoint, not a file."""
    notes = []
    for path in paths:
        try:
            note = path.read_text(encoding="utf-8")
            claimed_checkpoint(note)
        except (UnicodeDecodeError, VerificationError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            _one_line(f"log NOT verified: format: {path} is not a signed checkpoint ({reason})")
            raise typer.Exit(1) from None
        notes.append(note)
    return notes


class _NotAudited(Exception):
    """The export's audit entry could not be written (its cause says why)."""


def _record_export(log: AuditLog, summary: ExportSummary) -> None:
    try:
        log.append([export_event(summary)])
    except AuditWriteError as exc:
        raise _NotAudited from exc


key_app = typer.Typer(help="The log's checkpoint key: print it (pin it), or rotate it.", invoke_without_command=True)
audit_app.add_typer(key_app, name="key")


@key_app.callback()
def key(ctx: typer.Context,
        history: bool = typer.Option(False, "--history", help="Also print every key of the log with the tree "
                                     "sizes it signs, from the signed handovers (after the current key's line).")
        ) -> None:
    """Print the log's current verifier key (pin it; pass it to `audit verify --key`)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings()
    signer = _existing_signer(settings)
    keys, rows = _key_history(settings, signer)
    typer.echo(keys.current.vkey)  # plain: a console would wrap the long key
    if history:
        times = {row.from_size: row.rotated_at.isoformat() for row in rows}
        for era in keys.eras:
            until = "current" if era.last_size is None else f"to size {era.last_size}"
            when = f" rotated in at {times[era.first_size]}" if era.first_size in times else ""
            leaked = ("" if era.compromised_after is None
                      else f" compromised: not trusted above size {era.compromised_after}")
            typer.echo(f"{era.verifier.key_id.hex()} from size {era.first_size} {until}{when}{leaked} "
                       f"{era.verifier.vkey}")


def _key_history(settings: Settings, signer: NoteSigner) -> tuple[KeyHistory, list[KeyRow]]:
    """The log's key history from its database (verified from the key in the key store); just that key while
    there is no database yet (``keys init`` makes the key before ``db upgrade`` makes the database)."""
    if missing_database_file(settings.effective_database_url) is not None:
        return KeyHistory(signer.verifier), []
    with _reading_log(settings, signer, "the log's key history") as log:
        return log.key_history(), log.key_rows()


@contextmanager
def _reading_log(settings: Settings, signer: NoteSigner, what: str) -> Iterator[AuditLog]:
    """The live log, to read ``what`` from: a verification failure (naming ``what``) or an unreachable database
    is one line and exit code 1; the engine is disposed of either way."""
    engine = existing_engine_for(settings)
    try:
        yield AuditLog(engine, signer)
    except (VerificationError, MalformedRow) as exc:
        _one_line(f"{what} does not verify ({exc}): run `wgs-gateway audit verify`")
        raise typer.Exit(1) from None
    except StoreUnavailable as exc:
        _one_line(str(exc))
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@key_app.command("rotate")
def rotate(compromised_after: int | None = typer.Option(
        None, "--compromised-after", min=0, help="The current key leaked: its signatures on checkpoints above "
        "this tree size are not to be trusted (the size of the last checkpoint you know is genuine, e.g. one an "
        "officer kept)."),
           ) -> None:
    """Hand the log over to a new checkpoint key (a handover checkpoint signed by the old and the new key).

    Audited (`checkpoint-key.rotated`). The retired private key is removed from the key store; officers verify
    the handover with the key they pinned (`audit verify --key OLD`), then pin the new one."""
    from gateway.auditing.rotation import RotationUnfinished, rotate_checkpoint_key

    settings = Settings()
    _existing_signer(settings)  # before the database: a wrong data directory stops here
    engine = existing_engine_for(settings)
    try:
        done = rotate_checkpoint_key(settings, engine, compromised_after=compromised_after,
                                     busy=lambda: _one_line(KEY_LOCK_BUSY))
    except (CheckpointKeyError, ValueError) as exc:
        _one_line(f"rotation failed: {exc}")
        raise typer.Exit(1) from None
    except (AuditWriteError, StoreUnavailable) as exc:
        _one_line(f"rotation failed, nothing was rotated: {exc}")
        raise typer.Exit(1) from None
    except RotationUnfinished as exc:
        _one_line(str(exc))
        raise typer.Exit(1) from None
    except OSError as exc:  # the key store: before the transaction, so nothing was rotated
        _one_line(f"rotation failed, nothing was rotated: the key store cannot be written ({exc.strerror or exc})")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    if done.handover is None:
        typer.echo(f"finished an interrupted rotation: key {done.new.key_id.hex()} is in place")
    else:
        typer.echo(f"rotated the checkpoint key at size {done.handover.tree_size}: "
                   f"{done.old.key_id.hex()} -> {done.new.key_id.hex()}")
    typer.echo(done.new.vkey)


@audit_app.command("checkpoint")
def checkpoint(out_file: Path | None = typer.Option(
        None, "--out", dir_okay=False, help="Write the checkpoint to this file (whole or not at all) instead of "
        "standard output.")) -> None:
    """Print the log's latest signed checkpoint, verified against the log's key history and tree.

    What an officer keeps apart from the gateway (pass it to `audit verify --checkpoint` later, to detect a log
    rolled back behind it) and what `db record-restore --latest-checkpoint` reads after a restore: saved from
    the live log before restoring, it says whether the restored checkpoint key was retired since. Reads only:
    it signs nothing, so it works while the gateways run and against a log a restore is about to replace."""
    settings = Settings()
    signer = _existing_signer(settings)  # before the database: a wrong data directory stops here
    with _reading_log(settings, signer, "the latest checkpoint") as log:
        try:
            stored = log.checkpoint()
        except ProofUnavailable:
            _one_line("no checkpoint has been signed yet: start the gateway (it signs one within a minute of the "
                      "first entries) or run `wgs-gateway audit export`")
            raise typer.Exit(1) from None
        log.check_checkpoint(stored)
    if out_file is None:
        typer.echo(stored.note, nl=False)  # the note's own last newline ends it
        return
    try:
        replace_whole(out_file, stored.note.encode("utf-8"))
    except OSError as exc:
        _one_line(f"cannot write {out_file} ({exc.strerror or type(exc).__name__})")
        raise typer.Exit(1) from None
    typer.echo(f"wrote the checkpoint at size {stored.tree_size} to {out_file}")


@audit_app.command("export")
def export(out_file: Path = typer.Option(..., "--out", help="File to write (JSON Lines).")) -> None:
    """Export entries, checkpoints and the public key to one file for offline verification.

    Signs a checkpoint at the exported size when the latest one does not cover it, so that every exported
    entry is covered by a signature (the verifier refuses entries that are not). The file is readable by its
    owner only and appears whole or not at all: an export that fails leaves what was at that path before.
    The export is itself an audit entry (the number of entries, the file's SHA-256 digest), written once the
    file is and before it appears: an export whose entry cannot be written fails and leaves no file."""
    settings = Settings()
    _existing_signer(settings)  # before the database: a wrong data directory stops here
    engine = existing_engine_for(settings)
    try:
        log = AuditLog(engine, writing_signer(engine, settings))
        summary = export_log(log, out_file, before_publish=lambda done: _record_export(log, done))
    except _NotAudited as exc:
        _one_line(f"export failed: its audit entry could not be written ({exc.__cause__}); nothing was exported")
        raise typer.Exit(1) from None
    except CheckpointKeyError as exc:  # another key than the log's: it must not sign the exported size
        _one_line(f"export failed: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        _one_line(f"export failed: cannot write {out_file} ({exc.strerror or type(exc).__name__})")
        raise typer.Exit(1) from None
    except (MalformedRow, ValueError, TypeError) as exc:  # a stored value no log row holds (an edited table)
        _one_line(f"export failed: the log's tables hold a value the log never writes ({type(exc).__name__}); "
                  "check the log with `wgs-gateway audit verify`")
        raise typer.Exit(1) from None
    except AuditWriteError as exc:  # the checkpoint at the exported size could not be signed or stored
        _one_line(f"export failed: no checkpoint could be signed at the exported size ({exc}); "
                  "check the log with `wgs-gateway audit verify`")
        raise typer.Exit(1) from None
    except StoreUnavailable as exc:  # the database went away mid-export: nothing is left under --out
        _one_line(f"export failed: {exc}; nothing was exported")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"exported {summary.tree_size} entries and {summary.checkpoint_count} checkpoints to {out_file}")


@audit_app.command("verify")
def verify(export_file: Path | None = typer.Option(None, "--export", exists=True, dir_okay=False, readable=True,
                                                   help="Verify this export instead of the live database."),
           vkey: str | None = typer.Option(None, "--key", help="Pinned verifier key (from `audit key`; one of an "
                                           "earlier key era too, rotated since); default: the log's key in the "
                                           "key store (never the key an export names itself)."),
           checkpoint: list[Path] = typer.Option([], exists=True, dir_okay=False, readable=True,
                                                 help="A signed checkpoint kept from earlier, one per option "
                                                      "(detects a log rolled back behind it)."),
           fast: bool = typer.Option(False, "--fast", help="Skip re-parsing every entry for the canonical-JSON "
                                                          "and schema checks (much faster); the tree, signatures, "
                                                          "consistency and the columns searches use are checked "
                                                          "either way."),
           workers: int | None = typer.Option(None, "--workers", min=1,
                                              help="Processes for a --fast live verification of a large log "
                                                   "(default: one per core).")
           ) -> None:
    """Recompute the tree, check every checkpoint signature and their consistency. Exit 0 only if intact.

    Without --fast every entry is also re-parsed and checked to be canonical JSON of a valid event (and its
    entry id column compared); the columns searches use are compared with every entry either way, as is a
    changed byte (it changes the tree)."""
    known = _kept(checkpoint)
    if export_file is not None:
        try:
            result = verify_export(export_file, verifier=_export_verifier(vkey), known_checkpoints=known,
                                   deep=not fast)
        except OSError as exc:  # the file went away or could not be read part-way
            _one_line(f"log NOT verified: cannot read {export_file} ({exc.strerror or type(exc).__name__})")
            raise typer.Exit(1) from None
    else:
        settings = Settings()
        verifier = _pinned(vkey) if vkey else _existing_signer(settings).verifier
        engine = existing_engine_for(settings)
        # Chunks of a large log are checked by worker processes, one per core unless told: verification is an
        # offline job that a privacy officer waits for, and the chunks are independent.
        try:
            result = verify_database(engine, verifier, known_checkpoints=known, deep=not fast,
                                     workers=workers or os.cpu_count() or 1)
        except StoreUnavailable as exc:  # no verdict either way: say so, in one line
            _one_line(f"log NOT verified: {exc}")
            raise typer.Exit(1) from None
        finally:
            engine.dispose()
    for warning in result.warnings:
        err.print(f"[yellow]warning: {warning}[/yellow]")
    if not result.ok:
        err.print(f"[red]log NOT intact: {result.failure}[/red]")
        raise typer.Exit(1)
    out.print(f"log intact: {result.entries} entries, {result.checkpoints} checkpoints, "
              f"root {result.root_hash.hex() if result.root_hash else '-'}")
