"""The signed checkpoint the gateway hands out (API and console): found or signed on demand, then verified.

Two things are decided here, once for both channels:

* **Covering a fresh entry.** ``covering=N`` asks for a checkpoint of at least N entries. When none covers
  them yet, :class:`audit.OnDemandCheckpoints` signs one (at most one a second by all gateway processes on the
  database together, shared by all who wait); a request that comes within that second is held until the
  second ends — a short, bounded wait on the event loop, no thread — and only refused (503, ``Retry-After``)
  if it is still too soon then. So a receipt can be checked right away, and asking cannot keep the gateway
  signing.
* **Never vouching for a checkpoint that does not verify.** The stored checkpoint is checked against the
  log's own key and tree (:meth:`audit.AuditLog.check_checkpoint`) before it is served. One that fails — a
  forged or garbled note, a row that disagrees with its note or the tree, a row no checkpoint row can be —
  fails closed as a 503 problem (``audit-checkpoint-unverified``), never a 500 or the bad note itself. Each
  distinct failure is logged once per process and written once to the audit log as an unattributed
  ``console.action`` (``checkpoint-check``, status ``error``): it concerns the log, not whoever happened to
  ask, and coordinating privacy officers see such entries (:mod:`gateway.auditing.review`).
"""

from __future__ import annotations

import asyncio
import math

import structlog
from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from audit import (
    AuditError,
    CheckpointPending,
    MalformedRow,
    ProofUnavailable,
    StoredCheckpoint,
    StoreUnavailable,
    VerificationError,
)
from gateway.auditing.actions import action_event, position
from gateway.auditing.setup import AuditServices, audit_services
from gateway.container import Container
from gateway.errors import AuditCheckpointPending, AuditCheckpointUnverified, NotFound, ServiceUnavailable

log = structlog.get_logger("gateway.auditing")

ACTION = "checkpoint-check"
UNVERIFIED = ("the audit log's checkpoint failed verification; it is not served until an operator has "
              "checked the log (`wgs-gateway audit verify`)")


async def served_checkpoint(container: Container, request: Request | None, *, covering: int | None = None,
                            channel: str = "api") -> StoredCheckpoint:
    """The latest checkpoint (``covering``: one of at least that many entries), verified; see the module."""
    services = audit_services(container)
    stored: StoredCheckpoint | None = None
    try:
        stored = await _find(services, covering)
        await run_in_threadpool(services.log.check_checkpoint, stored)
    except (VerificationError, MalformedRow) as exc:
        await _report(container, request, exc, None if stored is None else stored.tree_size, channel)
        raise AuditCheckpointUnverified(UNVERIFIED) from None
    except StoreUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    return stored


async def _find(services: AuditServices, covering: int | None) -> StoredCheckpoint:
    try:
        if covering is None:
            return await run_in_threadpool(_latest, services)
        try:
            return await run_in_threadpool(services.on_demand.covering, covering)
        except CheckpointPending as pending:
            await asyncio.sleep(min(pending.retry_after, services.on_demand.min_interval))
        try:
            return await run_in_threadpool(services.on_demand.covering, covering)
        except CheckpointPending as pending:
            raise AuditCheckpointPending(
                "no checkpoint covers these entries yet; one can be signed in a moment",
                headers={"Retry-After": str(max(1, math.ceil(pending.retry_after)))}) from None
    except ProofUnavailable as exc:
        raise NotFound(str(exc)) from None


def _latest(services: AuditServices) -> StoredCheckpoint:
    """The latest checkpoint, after signing one if the policy says it is due (the first one if there is none).

    A GET that may sign, on purpose: it signs only what :class:`audit.CheckpointPolicy` calls due (new entries
    and 60 s since the last checkpoint, or 100 entries), which the audit writer's idle loop signs within a
    second anyway, so asking makes a due checkpoint come a moment sooner and never makes one more (the log signs
    its own current tree, so repeating the GET changes nothing a checkpoint proves). Caching the answer instead
    would only serve a staler one; the bound on signing *more* than the policy is ``covering``'s, shared by
    every process (:mod:`audit.on_demand`)."""
    log_ = services.log
    log_.maybe_issue_checkpoint()
    try:
        return log_.checkpoint()
    except ProofUnavailable:
        if log_.size() == 0:
            raise NotFound("the log is empty: no checkpoint yet") from None
        return log_.issue_checkpoint()


async def _report(container: Container, request: Request | None, failure: AuditError, tree_size: int | None,
                  channel: str) -> None:
    """Log and audit one failed check, once per distinct failure and process (each request still gets its 503).

    The audit entry is tried again on the next request if it could not be written (the log may be what is
    broken); the application log line is written once regardless."""
    reason = "malformed-row" if isinstance(failure, MalformedRow) else "verification"
    marker = f"{reason}|{tree_size}|{failure}"
    seen: dict[str, bool] = container.services.setdefault("unverified_checkpoints", {})
    if marker not in seen:
        seen[marker] = False
        log.error("audit_checkpoint_unverified", reason=reason, tree_size=tree_size, check=str(failure))
    if seen[marker]:
        return
    event = action_event(request, ACTION, organisation=None, account_id=None, ok=False, channel=channel,
                         details={"reason": reason, "tree_size": position(tree_size)})
    try:
        await audit_services(container).writer.record([event])
    except AuditError as exc:
        log.error("audit_checkpoint_unverified_not_audited", error_type=type(exc).__name__)
        return
    seen[marker] = True
