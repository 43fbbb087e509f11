"""CLI: ``wgs-gateway pseudonyms status|rotate|rekey|remove-retired`` — the pseudonymisation keys and their
rotation, and the discovery indexes' rows of retired participations.

Rotating is two steps, kept apart so that either can be repeated safely: adding a key version (the new current
one) to the key store, and moving the discovery index to the current version (``gateway.enrolment.rekey``),
without ever decrypting anything — each partnership-domain pseudonym is multiplied by ``s_new / s_old``.

* ``rotate`` first looks for index rows under a version other than the current one. If there are any (a
  previous run was interrupted after the key store rotated, or a request in flight during the rotation
  enrolled under the old version), it only finishes moving those and adds **no** version: a rerun after an
  interruption must not strand the index one version further behind. Otherwise it adds a version and re-keys
  the whole index. Running gateway processes follow the key file (``gateway.pseudonyms.following``): each
  uses the new version from its next request on, with no restart.
* ``rekey`` only moves rows to the current version; it never touches the key store. It is the last step of a
  rotation: it moves whatever an enrolment still in flight when the key file changed wrote under the old
  version.
* ``status`` shows the key versions (never the secrets), rows per version and how many rows wait for ``rekey``.

``remove-retired`` removes what both discovery indexes hold for participants (or partnerships) the register
retires (:mod:`gateway.enrolment.retired`), as every gateway start does: for what a process still running on the
previous register enrolled after the others started on the new one.

The procedure (docs/pseudonyms.md) is therefore ``rotate``, then ``rekey`` for enrolments that were in flight
during it, then ``status`` until it shows 0 rows not under the current version. Nobody restarts a gateway and no
participant re-enrols: the index is moved to the new version without any identifier. (Only rows under a version
already retired from the ring cannot be moved; those subjects need re-enrolling, which ``rekey`` says.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import typer
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import Connection

from audit import AuditError, AuditLog
from gateway.auditing.setup import CheckpointKeyError, writing_signer
from gateway.db.engine import existing_engine_for, make_session_factory, require_database
from gateway.enrolment.rekey import (
    Command,
    IndexKeptMoving,
    RekeyResult,
    pending_rows,
    rekey_index,
    rotation_entry,
    rows_per_version,
    untagged_rows,
)
from gateway.enrolment.retired import IndexKeptChanging, remove_retired
from gateway.errors import InvalidRegister
from gateway.pseudonyms.errors import KeyStoreError
from gateway.pseudonyms.keys import KeyRing
from gateway.pseudonyms.keystore import FileKeyStore
from gateway.register.loader import load_register
from gateway.settings import Settings

pseudonyms_app = typer.Typer(help="Pseudonymisation keys and the discovery index.\n\nTo rotate: `rotate` (running "
                             "gateway processes use the new key version from their next request), `rekey`, then "
                             "`status` shows 0 rows not under the current key version.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _store(settings: Settings) -> FileKeyStore:
    return FileKeyStore(settings.key_dir / "pseudonyms")


def _existing_ring(settings: Settings, doing: str) -> KeyRing:
    """The key ring as stored, or one line on stderr and exit code 1.

    Never creates one (only ``keys init`` and the gateway starting do): a ring made by a
    command that only looks would be a new pseudonym identity for every participant, and would hide a
    wrong data directory behind a fresh version 1.
    """
    store = _store(settings)
    try:
        return asyncio.run(store.load())
    except KeyStoreError as exc:
        if not store.path.exists() and not store.path.is_symlink():
            err.print(f"no pseudonym key ring at {store.path}: is the data directory right? (`wgs-gateway keys "
                      "init` or starting the gateway creates it)", markup=False, highlight=False, soft_wrap=True)
        else:
            err.print(f"{doing}: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _counted(settings: Settings, count: Callable[[Connection, int], int], current: int) -> int:
    """``count`` (:func:`pending_rows`, :func:`untagged_rows`) of the index, on an engine of its own."""
    engine = existing_engine_for(settings)
    try:
        with engine.connect() as connection:
            return count(connection, current)
    finally:
        engine.dispose()


def _pending(settings: Settings, current: int) -> int:
    return _counted(settings, pending_rows, current)


def _audit_log(settings: Settings, doing: str) -> AuditLog:
    """The gateway's audit log, which every re-keyed batch is written to with its entries; without it (no
    checkpoint key: a wrong data directory, or keys never made) one line on stderr and exit code 1, before
    anything — the key store included — is changed."""
    engine = existing_engine_for(settings)
    try:
        return AuditLog(engine, writing_signer(engine, settings))
    except CheckpointKeyError as exc:
        engine.dispose()
        err.print(f"{doing}: the re-keying cannot be audited, so nothing was changed: {exc}", markup=False,
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _rekey(settings: Settings, ring: KeyRing, pending: int, log: AuditLog, command: Command) -> RekeyResult:
    """Move the index to ``ring.current`` with a progress bar, each batch audited in ``log``; a version missing
    from the ring, or a batch that cannot be audited, exits 1 (that batch is not written; a rerun resumes)."""
    engine = existing_engine_for(settings)
    try:
        with Progress(console=out) as progress:
            task = progress.add_task(f"re-keying the index to v{ring.current}",
                                     total=pending + _counted(settings, untagged_rows, ring.current))
            return rekey_index(make_session_factory(engine), ring, log, command=command,
                               on_batch=lambda handled: progress.advance(task, handled))
    except KeyStoreError as exc:  # a row under a retired version: its batch was rolled back, nothing half-written
        err.print(f"re-keying stopped: {exc}; rows under a retired version need their participants to re-enrol")
        raise typer.Exit(1) from None
    except AuditError as exc:
        err.print(f"re-keying stopped: the audit log could not be written ({type(exc).__name__}); the batch "
                  f"was not written; run `wgs-gateway pseudonyms {command}` again", markup=False, highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1) from None
    except IndexKeptMoving as exc:
        err.print(f"re-keying stopped: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        log.engine.dispose()
        engine.dispose()


def _report(settings: Settings, result: RekeyResult) -> None:
    left = _pending(settings, result.version)  # an old gateway process may have enrolled meanwhile
    out.print(f"key version {result.version} is current; {result.moved} index rows re-keyed"
              + (f", {result.superseded} older duplicate(s) dropped" if result.superseded else "")
              + (f", {result.tagged} given the tag of their participant's own pseudonym" if result.tagged else "")
              + ".")
    if left:
        out.print(f"{left} index rows are still under an older key version; run `wgs-gateway pseudonyms rekey`.")
    else:
        out.print("every index row is under the current key version.")


@pseudonyms_app.command("status")
def status() -> None:
    """Show the key versions (never the secrets), enrolments per version and rows waiting for `rekey`."""
    settings = Settings()
    require_database(settings)  # a wrong data directory: the database says so first
    ring = _existing_ring(settings, "cannot read the pseudonym key ring")
    out.print(f"key versions: {sorted(ring.versions)}; current: {ring.current}")
    engine = existing_engine_for(settings)
    try:
        with engine.connect() as connection:
            counts = rows_per_version(connection)
            untagged = untagged_rows(connection, ring.current) if counts.get(ring.current) else 0
    finally:
        engine.dispose()
    for version, count in sorted(counts.items()):
        out.print(f"enrolments under key version {version}: {count}")
    pending = sum(count for version, count in counts.items() if version != ring.current)
    if pending:
        out.print(f"index rows not under the current key version: {pending} (discovery cannot find them); "
                  "run `wgs-gateway pseudonyms rekey`")
    else:
        out.print("index rows not under the current key version: 0")
    if untagged:
        out.print(f"index rows without the tag of their participant's own pseudonym: {untagged} (enrolled "
                  "before migration 0042; a related subject among them costs one conversion more); run "
                  "`wgs-gateway pseudonyms rekey`", soft_wrap=True)


@pseudonyms_app.command("rotate")
def rotate() -> None:
    """Add a pseudonym key version and re-key the discovery index to it.

    If rows are still under an older version (an interrupted rotation), it only finishes moving them and
    adds no version: run it again for a new one. Without a key ring it refuses rather than making one and
    rotating it at once: on a fresh install there is nothing to rotate, and with a wrong data directory a new
    ring would be a new pseudonym identity for every participant."""
    settings = Settings()
    require_database(settings)  # before the key store: a wrong data directory gets no key ring either
    store = _store(settings)
    ring = _existing_ring(settings, "cannot rotate")
    log = _audit_log(settings, "cannot rotate")
    pending = _pending(settings, ring.current)
    finishing = pending > 0
    if finishing:
        out.print(f"{pending} index rows are not under the current key version {ring.current} yet: finishing "
                  "that re-key first; no new key version is added.")
    else:
        previous = ring.current
        ring = asyncio.run(store.rotate())
        _audit_rotation(log, previous, ring.current)
        pending = _pending(settings, ring.current)
    _report(settings, _rekey(settings, ring, pending, log, "rotate"))
    _next_steps(ring.current, added=not finishing)


def _audit_rotation(log: AuditLog, previous: int, current: int) -> None:
    """The rotation's own entry (:func:`~gateway.enrolment.rekey.rotation_entry`), so that a rotation is in the
    log even when no row moves; if it cannot be written, one line and exit code 1 (the version is added)."""
    try:
        log.append([rotation_entry(previous, current)])
    except AuditError as exc:
        log.engine.dispose()
        err.print(f"key version {current} was added, but its audit entry could not be written "
                  f"({type(exc).__name__}); the index was not re-keyed: run `wgs-gateway pseudonyms rekey`",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _next_steps(current: int, *, added: bool) -> None:
    """The rest of docs/pseudonyms.md's procedure. Running gateways follow the key file
    (:mod:`gateway.pseudonyms.following`) and the index was moved without identifiers, so neither a restart nor
    a re-enrolment is part of it; one printed line each, short enough not to be wrapped mid-command."""
    if added:
        out.print(f"key version {current} added: running gateway processes use it from their next request "
                  "(no restart needed).", soft_wrap=True)
    else:
        out.print("no key version was added: run `wgs-gateway pseudonyms rotate` again to start a new rotation.",
                  soft_wrap=True)
    out.print("next: `wgs-gateway pseudonyms rekey` moves what enrolments in flight during this run wrote under "
              "the old version;", soft_wrap=True)
    out.print("then `wgs-gateway pseudonyms status` must show 0 rows not under the current key version (else "
              "run `rekey` again).", soft_wrap=True)


@pseudonyms_app.command("rekey")
def rekey() -> None:
    """Move index rows still under an older key version to the current one; never adds a version.

    Then rows without the tag of their participant's own pseudonym (enrolled before migration 0042) get it."""
    settings = Settings()
    ring = _existing_ring(settings, "cannot re-key")  # none: nothing was ever pseudonymised, nothing to create
    log = _audit_log(settings, "cannot re-key")
    _report(settings, _rekey(settings, ring, _pending(settings, ring.current), log, "rekey"))


@pseudonyms_app.command("remove-retired")
def remove_retired_command() -> None:
    """Remove both discovery indexes' rows of participants and partnerships the register retires.

    Every gateway start does the same; run it once every gateway process runs on the register that retires
    them. Each batch is written with its `index.retired` audit entry (counts, never a subject) or not at all;
    running it again is harmless."""
    settings = Settings()
    require_database(settings)
    try:
        register, _ = load_register(settings.register_file)
    except InvalidRegister as exc:
        err.print(f"cannot remove retired participations: {exc.detail}", markup=False, highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1) from None
    log = _audit_log(settings, "cannot remove retired participations")
    engine = existing_engine_for(settings)
    try:
        result = remove_retired(make_session_factory(engine), register, log, channel="cli")
    except AuditError as exc:
        err.print(f"removal stopped: the audit log could not be written ({type(exc).__name__}); the batch was not "
                  "removed; run `wgs-gateway pseudonyms remove-retired` again", markup=False, highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1) from None
    except IndexKeptChanging as exc:
        err.print(f"removal stopped: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        log.engine.dispose()
        engine.dispose()
    for removal in result.removals:
        out.print(f"{removal.retirement.organisation} in {removal.retirement.partnership} "
                  f"({removal.retirement.reason}): {removal.removed} {removal.index} index rows removed",
                  markup=False, highlight=False, soft_wrap=True)
    out.print(f"{result.removed} index rows of retired participations removed (register {register.version}).",
              markup=False, highlight=False, soft_wrap=True)
