"""Append-only, tamper-evident audit log: entries, Merkle tree, signed checkpoints, proofs, verifier, export.

Pure Python over SQLAlchemy; it imports nothing else of ours and knows nothing of HTTP, so the gateway,
the escalation workflow and the offline verifier CLI can all use it.

Modules, one job each:

=================  ==========================================================================
``events``         what an event says (Logboek Dataverwerkingen fields + ours)
``guard``          refuse events carrying values shaped like personal data
``canonical``      RFC 8785 bytes of an entry (the Merkle leaf)
``merkle``         RFC 9162 tree hashing, inclusion and consistency proofs
``checkpoint``     C2SP tlog-checkpoint / signed-note format, Ed25519
``keys``           the checkpoint-key history: signed handovers, which key signs which sizes
``tables``         the audit tables in the package's own MetaData
``store``          all SQL: append lock, reads and writes
``log``            ``AuditLog``: append, checkpoint policy, proofs
``on_demand``      checkpoints signed when a reviewer needs one (rate-limited, shared)
``writer``         ``AsyncAuditWriter``: group commit for asyncio callers
``failure_report`` the writer's idle-loop failures logged once, then once a minute, then on recovery
``export``         one-file JSON Lines export
``verify``         full verification of an export or a live database
``query_columns``  a fast verification's check of the searched columns against the entries
``errors``         the exception tree
=================  ==========================================================================
"""

from __future__ import annotations

from audit.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    claimed_checkpoint,
    names_key,
    open_checkpoint,
    sign_checkpoint,
)
from audit.errors import (
    AuditError,
    AuditWriteError,
    CheckpointPending,
    CompanionRefused,
    InvalidEvent,
    MalformedRow,
    PersonalDataError,
    ProofUnavailable,
    StoreUnavailable,
    VerificationError,
)
from audit.events import AuditEvent, DataSubject, Decision, EventType, ProcessingActivity, Requester, Status
from audit.export import ExportSummary, export_log
from audit.keys import Handover, KeyHistory
from audit.log import AuditLog, CheckpointPolicy, ConsistencyProof, InclusionProof, Receipt
from audit.on_demand import OnDemandCheckpoints
from audit.store import StoredCheckpoint, StoredEntry
from audit.verify import Failure, FailureKind, LogVerificationError, VerifyResult, verify_database, verify_export
from audit.writer import AsyncAuditWriter, CompanionRow

__all__ = [
    "AsyncAuditWriter",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "AuditWriteError",
    "Checkpoint",
    "CheckpointPending",
    "CheckpointPolicy",
    "CompanionRefused",
    "CompanionRow",
    "ConsistencyProof",
    "DataSubject",
    "Decision",
    "EventType",
    "ExportSummary",
    "Failure",
    "FailureKind",
    "Handover",
    "InclusionProof",
    "InvalidEvent",
    "KeyHistory",
    "LogVerificationError",
    "MalformedRow",
    "NoteSigner",
    "NoteVerifier",
    "OnDemandCheckpoints",
    "PersonalDataError",
    "ProcessingActivity",
    "ProofUnavailable",
    "Receipt",
    "Requester",
    "Status",
    "StoreUnavailable",
    "StoredCheckpoint",
    "StoredEntry",
    "VerificationError",
    "VerifyResult",
    "claimed_checkpoint",
    "export_log",
    "names_key",
    "open_checkpoint",
    "sign_checkpoint",
    "verify_database",
    "verify_export",
]
