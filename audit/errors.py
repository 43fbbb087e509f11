"""The audit package's exception tree.

    AuditError                     base; never raised directly
    ├── InvalidEvent               an event cannot be logged as it is (too large, not serialisable)
    │   └── PersonalDataError      an event carries a value shaped like personal data (BSN, IBAN, e-mail)
    ├── VerificationError          a proof, signature, checkpoint or log failed verification
    ├── ProofUnavailable           a proof was asked for sizes or indices the log does not have
    ├── CheckpointPending          a checkpoint over the entries asked for is not signed yet: ask again shortly
    ├── StoreUnavailable           the log could not be read (database down); a 503, not a verdict
    ├── MalformedRow               a stored row holds a value no log row can hold (edited behind our back)
    └── AuditWriteError            the log could not be written; the caller must deny (fail closed)

    CompanionRefused               raised by a caller's own companion-row precondition (not by this package):
                                   an expected refusal the caller handles, logged quietly by the writer

Messages never contain the offending values: only field paths, indices and kinds, so that an error that
ends up in a log file or a problem document cannot leak what it was raised to keep out.
The gateway maps these to problem+json; this package knows nothing of HTTP.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error raised by the audit package."""


class InvalidEvent(AuditError):
    """The event cannot become a log entry (for example: too large after canonicalisation)."""


class PersonalDataError(InvalidEvent):
    """A value in the event looks like personal data; the event is refused, nothing is written.

    ``path`` names the field (``extra.note``), ``kind`` the shape that matched (``bsn``, ``iban``,
    ``email``). The value itself is deliberately not kept.
    """

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"audit event field {path!r} holds a value shaped like personal data ({kind})")
        self.path = path
        self.kind = kind


class VerificationError(AuditError):
    """A Merkle proof, a checkpoint signature or the log itself did not verify.

    One exception for every verification failure, in the style of sigstore-python: callers cannot
    forget to check a boolean, and the message says which check failed.
    """


class ProofUnavailable(AuditError):
    """A proof or checkpoint was requested for an index or tree size the log does not (yet) have."""


class CheckpointPending(AuditError):
    """No checkpoint covers the entries asked for yet, and one may not be signed on demand right now (one was
    signed less than the minimum interval ago). ``retry_after`` says in how many seconds one may."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"a checkpoint over these entries can be signed in {retry_after:.1f} s")
        self.retry_after = retry_after


class StoreUnavailable(AuditError):
    """Reading the log failed (the database is unreachable or broken); says nothing about integrity."""


class MalformedRow(AuditError):
    """A stored row holds a value that the log never writes and the reader cannot convert (SQLite keeps any
    text in any column: a time that is no time, an id that is no UUID, an index that is no number).

    Only someone editing the database outside the gateway puts it there, so a verifier reports it as a
    verdict, not as a database that is down. ``index`` is the first log index that could not be read (the
    row at it, or — when its own index is what is malformed — the row standing where it should be);
    ``table`` names the table. The value itself is never quoted.
    """

    def __init__(self, table: str, index: int | None) -> None:
        where = f" at or after index {index}" if index is not None else ""
        super().__init__(f"a row of {table}{where} holds a value the log never writes")
        self.table = table
        self.index = index


class AuditWriteError(AuditError):
    """Writing to the log failed. Whatever the request was, it must now be denied."""


class CompanionRefused(Exception):
    """A companion row's precondition refused its transaction for a reason its caller expects and handles (a
    lost claim, a count that moved, a decision taken over): nothing of that caller is written, as with any
    failure, but the writer does not report it as a fault of the log.

    Not an :class:`AuditError`: the audit package never raises it, callers' preconditions do (subclassing it)."""

