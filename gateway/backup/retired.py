"""Whether a restored checkpoint key is one the lost log had retired, judged from a checkpoint kept before the restore.

A backup taken before a rotation of the checkpoint key holds the key that rotation retired, and a database with
no record of the handover: restored, the retired key is the log's current key again, and whoever kept a copy of
it (an older backup, the thief of a leaked key) signs checkpoints the restored log accepts. The restored files
cannot tell: the handover was among the entries lost. What can tell is a checkpoint kept from before the
restore (an officer's, one fetched with ``GET /v1/audit/checkpoint``, an export's last): ``db record-restore
--latest-checkpoint FILE`` reads it here, before anything is written.

1. A handover checkpoint whose old key is the restored key, with valid signatures by both keys it names: the
   restored key was retired there, certainly (and leaked, if it says ``compromised-after``).
2. A checkpoint the restored key signed (any size): nothing is known of a later rotation.
3. A checkpoint of this log's origin that the restored key did not sign: the log was signed by another key after
   the backup, so the restored key was retired (or the file is not this deployment's). Nothing here can check
   the other key's signature; the answer to either is a rotation, which costs nothing but a new pin.

A file that is no checkpoint of this log's origin is refused: it would say nothing and could hide a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit import NoteVerifier, VerificationError
from audit.checkpoint import Checkpoint, SignedNote
from audit.keys import handover_of, open_handover


class NotAKeptCheckpoint(ValueError):
    """The kept file is not a checkpoint of this log's origin (the message says why, one line)."""


@dataclass(frozen=True)
class Retired:
    """What the kept checkpoint shows of the restored key's retirement: the size it states, the key id(s) that
    signed it (the successor's, for a handover) and the compromise point a handover stated."""

    size: int
    successors: tuple[str, ...]
    compromised_after: int | None
    certain: bool
    """Whether the restored key's own signature on a handover says so (1.), not only another key's (3.)."""


def retired_by(note: str, restored: NoteVerifier) -> Retired | None:
    """Whether ``note`` (a checkpoint kept before the restore) shows ``restored`` retired (see the module);
    :class:`NotAKeptCheckpoint` for a file that is no checkpoint of the restored key's origin."""
    try:
        signed = SignedNote.parse(note)
        checkpoint = Checkpoint.parse_body(signed.text)
        handover = handover_of(checkpoint)
    except (VerificationError, ValueError) as exc:
        raise NotAKeptCheckpoint(f"the kept checkpoint cannot be read as one ({exc})") from None
    if checkpoint.origin != restored.name:
        raise NotAKeptCheckpoint(f"the kept checkpoint is of origin {checkpoint.origin!r}, not this log's "
                                 f"{restored.name!r}")
    if handover is not None and handover.old.vkey == restored.vkey:
        try:
            open_handover(note)
        except VerificationError as exc:
            raise NotAKeptCheckpoint(f"the kept checkpoint states a handover of the restored key but its "
                                     f"signatures do not verify ({exc})") from None
        return Retired(checkpoint.tree_size, (handover.new.key_id.hex(),), handover.compromised_after, True)
    try:
        restored.verify(signed)
    except VerificationError:
        return Retired(checkpoint.tree_size, tuple(s.key_id.hex() for s in signed.signatures), None, False)
    return None
