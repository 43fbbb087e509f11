"""Export the log to one self-contained file that anyone can verify offline.

Format: JSON Lines, UTF-8, one object per line, in this order::

    {"type": "header", "format": "wgs-audit-export", "version": 1, "origin": ..., "verifier_key": ...,
     "tree_size": N, "checkpoint_count": K, "exported_at": ...}
    {"type": "checkpoint", "tree_size": ..., "issued_at": ..., "note": "<signed note text>"}   K times
    {"entry":<the entry's RFC 8785 bytes, verbatim>,"index":i,"leaf_hash":"<hex>","type":"entry"}  N times

Why this shape: line-oriented, so a verifier streams millions of entries in constant memory and
``grep``/``jq`` work on it (``jq .entry.event.event_type``); checkpoints before entries, so the verifier
knows where to check roots while streaming. Each entry line is itself RFC 8785 canonical JSON, with
the canonical entry embedded verbatim, so the verifier takes the exact hashed bytes out of the line
without re-encoding anything (and fast). A file that went through a JSON pretty-printer is therefore
refused as reformatted; canonicalising each line again (RFC 8785) restores it. The header's
``verifier_key`` (Go ``sumdb/note`` form) names the key, but an officer should pin the key they obtained
independently, because whoever can edit the file can also edit the header (see
:func:`audit.verify.verify_export`).

The export covers the first N entries, N being the size when the export starts, and always carries a
checkpoint signed at exactly N (the exporter asks the log for one, which signs the tree if its latest
checkpoint is older): without it, the entries after the last checkpoint would rest on nothing but the file
itself, and whoever holds the file could rewrite them, with their leaf hashes, unnoticed. The verifier
therefore refuses an export with any entry that no checkpoint covers (``uncovered``). Checkpoints beyond N
are left out. Entries are never changed after they are written, so no snapshot transaction is needed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from audit import store
from audit.canonical import MAX_EVENT_BYTES, format_timestamp
from audit.errors import StoreUnavailable
from audit.log import AuditLog

EXPORT_FORMAT = "wgs-audit-export"
EXPORT_VERSION = 1
ENTRY_LINE = re.compile(
    rb'\{"entry":(.*),"index":(0|[1-9][0-9]*),"leaf_hash":"([0-9a-f]{64})","type":"entry"\}\r?\n?\Z')
"""The exact form of an entry line: groups are the entry's canonical bytes, the index, the leaf hash."""
MAX_LINE_BYTES = MAX_EVENT_BYTES + 4096
"""No line of an export is longer: an entry line is its event (at most MAX_EVENT_BYTES, refused when
written) plus the envelope and the line's own members; header and checkpoint lines are far shorter. A
verifier reads no more of any line than this, so a file built with an endless line cannot fill its memory."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export holds: entries ``[0, tree_size)``, the checkpoints up to it, the root its last checkpoint
    signs, and the SHA-256 of the file's bytes (what its audit entry names: an export of the log is itself a
    disclosure, and the digest says which file it was without saying what is in it)."""

    tree_size: int
    checkpoint_count: int
    root_hash: bytes
    sha256: str


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def entry_line(index: int, leaf: bytes, canonical: bytes) -> bytes:
    """One entry line in the exact form :data:`ENTRY_LINE` reads back."""
    return b"".join((b'{"entry":', canonical, b',"index":', str(index).encode("ascii"), b',"leaf_hash":"',
                     leaf.hex().encode("ascii"), b'","type":"entry"}\n'))


@contextmanager
def _open_for_writing(out: Path | BinaryIO) -> Iterator[BinaryIO]:
    """``out`` itself for a stream; for a path, a new file beside it that takes its place only when the
    whole export is written.

    Why: an export that stops half-way (disk full, database gone) left a file that began like an export,
    in place of the last good one. And an export holds what the database holds — every entry's pseudonyms,
    who asked whom for what — so it is created readable by its owner only (0600), whatever the umask.
    """
    if not isinstance(out, Path):
        yield out
        return
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(out))
    partial = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def export_log(log: AuditLog, out: Path | BinaryIO, *, exported_at: datetime | None = None,
               batch_size: int = 2000, before_publish: Callable[[ExportSummary], None] | None = None) -> ExportSummary:
    """Write entries ``[0, N)``, the checkpoints up to N and the verifier key to ``out``.

    N is the size of the checkpoint the log signs now (or already signed at its current size): signing is
    the log's job, so an export needs the log with its signing key, not only its public key. Raises what
    :meth:`AuditLog.issue_checkpoint` raises when the checkpoint cannot be written.

    ``before_publish(summary)`` runs once the whole file is written, before it takes its place at a path
    ``out``: what it raises leaves no file (the caller's audit entry of the export, say: no export without it).

    A database that fails while the log is read (it went away mid-export) raises
    :class:`~audit.errors.StoreUnavailable`, whichever layer noticed (SQLAlchemy's pool, or the driver under
    the lean read of :func:`audit.store.leaf_batches`), and leaves no file either.
    """
    database_errors = store.database_errors(log.engine.dialect)
    covering = log.issue_checkpoint()
    try:
        return _export_covered(log, out, covering, exported_at, batch_size, before_publish)
    except database_errors as exc:
        raise StoreUnavailable(f"audit log read failed ({type(exc).__name__})") from exc


def _export_covered(log: AuditLog, out: Path | BinaryIO, covering: store.StoredCheckpoint,
                    exported_at: datetime | None, batch_size: int,
                    before_publish: Callable[[ExportSummary], None] | None) -> ExportSummary:
    """:func:`export_log` once the checkpoint ``covering`` its size is signed."""
    size = covering.tree_size
    with store.read_connection(log.engine) as connection:
        checkpoints = store.all_checkpoints(connection, up_to_size=size)
    verifier = log.verifier
    header = {
        "type": "header", "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "origin": verifier.name,
        "verifier_key": verifier.vkey, "tree_size": size, "checkpoint_count": len(checkpoints),
        "exported_at": format_timestamp(exported_at or datetime.now(UTC)),
    }
    digest = hashlib.sha256()
    with _open_for_writing(out) as handle:

        def write(data: bytes) -> None:
            handle.write(data)
            digest.update(data)

        write(_line(header))
        for checkpoint in checkpoints:
            write(_line({"type": "checkpoint", "tree_size": checkpoint.tree_size,
                         "issued_at": format_timestamp(checkpoint.issued_at), "note": checkpoint.note}))
        for index, canonical, leaf in store.iter_leaves(log.engine, stop=size, batch_size=batch_size):
            write(entry_line(index, leaf, canonical))
        summary = ExportSummary(size, len(checkpoints), covering.root_hash, digest.hexdigest())
        if before_publish is not None:
            before_publish(summary)
    return summary
