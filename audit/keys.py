"""The log's checkpoint-key history: which key may sign a checkpoint of which size, and the signed handovers.

Rotating the checkpoint key must not break an officer who pinned the old key, nor the verification of any
checkpoint signed before. The scheme (docs/audit.md, "Rotating the checkpoint key"):

* A rotation appends one entry (``console.action`` ``checkpoint-key.rotated``) and, in the same transaction,
  signs a **handover checkpoint** over the tree that includes it. Its body carries one extension line (C2SP
  tlog-checkpoint allows extension lines after the root)::

      wgs-key-handover <old verifier key> <new verifier key> [compromised-after=<size>]

  and it carries **two** signature lines, by the old key and by the new one (a signed note may carry several).
  The old key's signature is the old key vouching for its successor; the new key's is the successor accepting
  the tree as it stands. A verifier that pinned either key can follow the chain from there, in both
  directions, because every handover is signed by both ends.
* Key eras: the first key may sign checkpoints of sizes ``0 .. h1``, the key introduced at handover ``h1``
  sizes ``h1 .. h2``, and so on; the current key every size from its handover on. A checkpoint at a handover
  size must be that handover (both signatures); anywhere else, the key of its era must have signed it. So a
  retired key cannot sign a new checkpoint that verifies: its era ended at its handover.
* ``compromised-after=S``: the old key leaked. Its signatures on checkpoints above ``S`` (and below the
  handover) prove nothing any more: :meth:`KeyHistory.distrusted` says which sizes, and the verifier warns. The
  entries stay verifiable: the handover's signature by the new key covers the whole tree up to it, and
  consistency with every earlier checkpoint is checked from the entries.

The history is evidence in the log itself (the handover checkpoints): :meth:`KeyHistory.from_handovers` builds it
from their notes and one trusted key, checking every signature. The ``audit_checkpoint_keys`` table is only an
index of the handovers, which verification compares with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from audit import store
from audit.checkpoint import Checkpoint, NoteVerifier, SignedNote
from audit.errors import VerificationError

HANDOVER_PREFIX = "wgs-key-handover "
HANDOVER_MARKER = "\n" + HANDOVER_PREFIX
"""What a handover checkpoint's note contains and no other checkpoint's does (a quick filter before parsing)."""
_COMPROMISED = re.compile(r"^compromised-after=(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Handover:
    """One rotation as its handover checkpoint states it."""

    tree_size: int
    old: NoteVerifier
    new: NoteVerifier
    compromised_after: int | None = None

    def line(self) -> str:
        """The extension line of the handover checkpoint's body."""
        parts = [HANDOVER_PREFIX + self.old.vkey, self.new.vkey]
        if self.compromised_after is not None:
            parts.append(f"compromised-after={self.compromised_after}")
        return " ".join(parts)

    def same(self, other: Handover) -> bool:
        return (self.tree_size, self.old.vkey, self.new.vkey, self.compromised_after) == (
            other.tree_size, other.old.vkey, other.new.vkey, other.compromised_after)


def handover_of(checkpoint: Checkpoint) -> Handover | None:
    """The handover a checkpoint's body states, if any; :class:`VerificationError` for a malformed one."""
    lines = [line for line in checkpoint.extensions if line.startswith(HANDOVER_PREFIX)]
    if not lines:
        return None
    if len(lines) > 1:
        raise VerificationError(f"checkpoint at {checkpoint.tree_size} states more than one key handover")
    parts = lines[0][len(HANDOVER_PREFIX):].split(" ")
    try:
        if len(parts) not in (2, 3):
            raise ValueError("a handover names an old and a new key")
        compromised = None
        if len(parts) == 3:
            match = _COMPROMISED.match(parts[2])
            if match is None:
                raise ValueError("malformed compromised-after")
            compromised = int(match.group(1))
        old, new = NoteVerifier.from_vkey(parts[0]), NoteVerifier.from_vkey(parts[1])
    except ValueError as exc:
        raise VerificationError(f"malformed key handover at {checkpoint.tree_size}: {exc}") from None
    if old.key_id == new.key_id or old.name != new.name or old.name != checkpoint.origin:
        raise VerificationError(f"key handover at {checkpoint.tree_size} does not hand the log's key to another")
    if compromised is not None and compromised >= checkpoint.tree_size:
        raise VerificationError(f"key handover at {checkpoint.tree_size} has a compromise point beyond itself")
    return Handover(checkpoint.tree_size, old, new, compromised)


def open_handover(note: str) -> tuple[Checkpoint, Handover]:
    """A handover note's checkpoint and handover, with both signatures checked (by the keys it names)."""
    signed = SignedNote.parse(note)
    checkpoint = Checkpoint.parse_body(signed.text)
    handover = handover_of(checkpoint)
    if handover is None:
        raise VerificationError(f"checkpoint at {checkpoint.tree_size} is no key handover")
    handover.old.verify(signed)
    handover.new.verify(signed)
    return checkpoint, handover


@dataclass(frozen=True)
class KeyEra:
    """One key and the checkpoint sizes it may sign: ``first_size`` to ``last_size`` (``None``: current)."""

    verifier: NoteVerifier
    first_size: int
    last_size: int | None
    compromised_after: int | None = None

    def covers(self, size: int) -> bool:
        return self.first_size <= size and (self.last_size is None or size <= self.last_size)


class KeyHistory:
    """The log's keys in order, each with its era; see the module docstring."""

    def __init__(self, first: NoteVerifier, handovers: Sequence[Handover] = ()) -> None:
        eras, previous, start = [], first, 0
        for handover in handovers:
            if handover.old.vkey != previous.vkey or handover.tree_size <= start:
                raise VerificationError(f"key handover at {handover.tree_size} does not follow the previous one")
            eras.append(KeyEra(previous, start, handover.tree_size, handover.compromised_after))
            previous, start = handover.new, handover.tree_size
        eras.append(KeyEra(previous, start, None))
        self.eras: tuple[KeyEra, ...] = tuple(eras)
        self.handovers: tuple[Handover, ...] = tuple(handovers)

    @classmethod
    def from_handovers(cls, trusted: NoteVerifier, notes: Iterable[str]) -> KeyHistory:
        """The history the handover notes state, trusted through ``trusted`` (any key of the chain).

        1. Every handover note carries valid signatures by both keys it names (a forged one signed by only one
           of them, or by neither, is refused).
        2. The handovers form one chain: each hands over the key the previous one handed to, at a larger size.
        3. ``trusted`` is one of the chain's keys (else nothing in the chain is vouched for by what was pinned).
        """
        handovers = sorted((open_handover(note)[1] for note in notes), key=lambda handover: handover.tree_size)
        first = handovers[0].old if handovers else trusted
        history = cls(first, handovers)
        if all(era.verifier.vkey != trusted.vkey for era in history.eras):
            raise VerificationError(f"the pinned key {trusted.key_id.hex()} is not one of the log's checkpoint keys")
        return history

    @property
    def current(self) -> NoteVerifier:
        return self.eras[-1].verifier

    @property
    def name(self) -> str:
        return self.current.name

    def handover_at(self, size: int) -> Handover | None:
        return next((handover for handover in self.handovers if handover.tree_size == size), None)

    def open(self, note: str, *, origin: str | None = None) -> Checkpoint:
        """Verify a checkpoint with the key(s) of its size's era and return what it states.

        1. The note is signed by every key whose era covers its size (two at a handover size).
        2. A note stating a handover is the history's handover at that size, and no other note is.
        3. Its origin is the log's.
        """
        signed = SignedNote.parse(note)
        claimed = Checkpoint.parse_body(signed.text)
        size = claimed.tree_size
        for era in (era for era in self.eras if era.covers(size)):
            try:
                era.verifier.verify(signed)
            except VerificationError as exc:
                raise VerificationError(self._why(signed, size, exc)) from None
        stated, expected = handover_of(claimed), self.handover_at(size)
        if (stated is None) != (expected is None) or (stated is not None and expected is not None
                                                       and not stated.same(expected)):
            raise VerificationError(f"checkpoint at {size} disagrees with the key handover the history holds there")
        wanted = self.name if origin is None else origin
        if claimed.origin != wanted:
            raise VerificationError(f"checkpoint is for origin {claimed.origin!r}, expected {wanted!r}")
        return claimed

    def _why(self, signed: SignedNote, size: int, failure: VerificationError) -> str:
        """Name a retired key that signed past its era: the case rotation exists to stop."""
        for era in self.eras:
            if era.last_size is not None and era.last_size < size and any(
                    s.key_id == era.verifier.key_id for s in signed.signatures):
                return (f"checkpoint at {size} is signed by key {era.verifier.key_id.hex()}, retired at "
                        f"{era.last_size}: not the key current for that size")
        return str(failure)

    def distrusted(self, size: int) -> bool:
        """Whether the checkpoint at ``size`` rests only on a key's signature made after it leaked."""
        return any(era.compromised_after is not None and era.last_size is not None
                   and era.compromised_after < size < era.last_size for era in self.eras)


def stored_history(connection: Connection, trusted: NoteVerifier) -> KeyHistory:
    """The history the database holds: its key rows, each checked against the handover checkpoint at its size
    (:meth:`KeyHistory.from_handovers` checks their signatures from ``trusted``). A row that names another key
    than its handover, a row without its handover checkpoint, or a handover without its row is a
    :class:`VerificationError` (rows edited behind the log's back): the gateway then signs nothing."""
    rows = store.key_rows(connection)
    notes = []
    for row in rows:
        stored = store.checkpoint_at(connection, row.from_size)
        if stored is None:
            raise VerificationError(f"the key history names a handover at {row.from_size} that no checkpoint is")
        notes.append(stored.note)
    history = KeyHistory.from_handovers(trusted, notes)
    check_key_rows(history, rows)
    return history


def check_key_rows(history: KeyHistory, rows: Sequence[store.KeyRow]) -> None:
    """:class:`VerificationError` unless the key rows state exactly the history's handovers."""
    stated = [(row.from_size, row.previous_key, row.verifier_key, row.compromised_after) for row in rows]
    signed = [(h.tree_size, h.old.vkey, h.new.vkey, h.compromised_after) for h in history.handovers]
    if stated != signed:
        first = next((i for i, (a, b) in enumerate(zip(stated, signed, strict=False)) if a != b),
                     min(len(stated), len(signed)))
        where = stated[first][0] if first < len(stated) else signed[first][0]
        raise VerificationError(f"the key history (audit_checkpoint_keys) disagrees with the signed key handovers "
                                f"(at size {where})")
