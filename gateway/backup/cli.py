"""CLI: ``wgs-gateway db backup|verify-backup|record-restore DEST`` (in the ``db`` group)."""

from __future__ import annotations

from pathlib import Path

import typer

from gateway.auditing.setup import KEY_LOCK_BUSY
from gateway.backup.check import check_backup
from gateway.backup.restore import record_restore
from gateway.backup.take import BackupRefused, take_backup
from gateway.settings import Settings


def _one_line(line: str) -> None:
    """On stderr, not rich: a path may hold [brackets], and a reason must stay one line."""
    typer.echo(line, err=True)


def backup(destination: Path = typer.Argument(..., help="A new (or empty) directory for the backup.")) -> None:
    """Back up the database and the key directory while the gateways keep running. Audited.

    SQLite is copied consistently into DEST/gateway.sqlite; PostgreSQL is backed up with its own tools
    (pg_dump, pg_basebackup). The key directory goes to DEST/keys, readable by its owner only, and
    DEST/MANIFEST.json lists every file with its SHA-256 (never key material)."""
    try:
        manifest = take_backup(Settings(), destination, busy=lambda: _one_line(KEY_LOCK_BUSY))
    except BackupRefused as exc:
        _one_line(str(exc))
        raise typer.Exit(1) from None
    if manifest.database == "postgresql":
        _one_line("PostgreSQL is not copied here: back it up with its own tools (pg_dump or pg_basebackup), "
                  "now, beside these keys")
    state = manifest.state
    checkpoint = "no checkpoint" if state.checkpoint_size is None else f"checkpoint at {state.checkpoint_size}"
    typer.echo(f"backup {manifest.backup_id} written to {destination}: {len(manifest.files)} files, audit log "
               f"{state.audit_size} entries ({checkpoint}); check it with `wgs-gateway db verify-backup`")


def verify_backup(destination: Path = typer.Argument(..., help="The backup's directory."),
                  fast: bool = typer.Option(False, "--fast", help="Verify the copy's audit log as `audit verify "
                                            "--fast` does: no entry re-parsed for the canonical-JSON and schema "
                                            "checks (much faster on a large log); the tree, signatures, "
                                            "consistency and the columns searches use are checked either way.")
                  ) -> None:
    """Check a backup before restoring it: file digests, the database copy and its audit log.

    Exit code 0 when it can be restored; else 1, with one line per reason. Run with the environment of the
    deployment to restore: what a restore would replace there (another deployment's log or key, the audit
    entries written since the backup) is said in a warning line."""
    if not destination.is_dir():
        _one_line(f"backup NOT intact: {destination} is not a directory")
        raise typer.Exit(1)
    check = check_backup(Settings(), destination, fast=fast)
    for problem in check.problems:
        _one_line(f"backup NOT intact: {problem}")
    if check.problems:
        raise typer.Exit(1)
    for note in check.notes:
        _one_line(f"note: {note}")
    for warning in check.warnings:
        _one_line(f"warning: {warning}")
    typer.echo(check.summary)


def record_restore_command(
        destination: Path = typer.Argument(..., help="The backup's directory that was restored."),
        latest_checkpoint: Path | None = typer.Option(
            None, "--latest-checkpoint", help="A checkpoint of this log kept from before the restore (an "
            "officer's, `GET /v1/audit/checkpoint`, an export's last): when it shows the restored checkpoint key "
            "retired by a rotation after the backup, the key is rotated again right after the restore's entry."),
) -> None:
    """Write the restored audit log's first entry: restored from this backup, at this size.

    Run it after putting the backup back and before starting the gateways: officers whose kept checkpoints now
    report the log as rolled back find, where the log forks, which backup it was restored from."""
    kept = None
    if latest_checkpoint is not None:
        try:
            kept = latest_checkpoint.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _one_line(f"the restore was not recorded: {latest_checkpoint} cannot be read "
                      f"({getattr(exc, 'strerror', None) or type(exc).__name__})")
            raise typer.Exit(1) from None
    try:
        done = record_restore(Settings(), destination, kept=kept)
    except BackupRefused as exc:
        _one_line(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"restore of backup {done.manifest.backup_id} recorded at index {done.size} of the audit log")
    if done.rotation is not None and done.retired is not None:
        how = "handed over to" if done.retired.certain else "the kept checkpoint is signed by"
        where = "" if done.rotation.handover is None else f" at size {done.rotation.handover.tree_size}"
        typer.echo(f"the restored checkpoint key {done.rotation.old.key_id.hex()} was retired after this backup "
                   f"({how} {', '.join(done.retired.successors)}, at size {done.retired.size}): rotated again{where} "
                   f"to {done.rotation.new.key_id.hex()}; officers pin the new key: {done.rotation.new.vkey}")
    elif latest_checkpoint is None:
        typer.echo("if the audit checkpoint key was rotated after this backup, the restored key is a retired one: "
                   "run `wgs-gateway audit key rotate` now (`--compromised-after N` if it leaked), or pass "
                   "`--latest-checkpoint FILE`, a checkpoint kept from before the restore, to have it checked")
    # What the backup cannot know: access taken away after it was made is back with the restored files.
    typer.echo("now, before starting the gateways, redo what was changed after the backup: retire again any "
               "token-signing key retired since (`keys retire KID`), disable or re-key clients and accounts again")
