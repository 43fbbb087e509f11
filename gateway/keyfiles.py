"""Key files that the first gateway process to need them creates: whole or not at all, for every process.

Several processes (uvicorn workers, containers on one volume) start together and each may find a key file
missing. Created in place (``O_CREAT | O_EXCL``, then written), the file exists empty for a moment: another
process that found it then read an empty key. A worker failed to start on an empty record-sealing key, and
one that read an empty console-session secret signed and accepted session cookies under an empty HMAC key,
which anyone can forge. Here the key is written to a file of its own and published under its name with a
hard link, which either makes the whole file appear at once or fails because another process published its
key first: then that one is read, so every process uses the same key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


class EmptyKeyFile(RuntimeError):
    """A key file holds nothing (left by an interrupted start of an older version): it is never used as a key."""


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes of the key file ``path``; when there is none, a new key ``make()`` published as it (0600) —
    or, when another process published one meanwhile, that one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.new")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(make())
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process published its key first: use that
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    content = path.read_bytes()
    if not content.strip():
        raise EmptyKeyFile(f"the key file {path} is empty; remove it (a new key is made on the next start)")
    return content
