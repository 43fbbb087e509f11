"""Proof endpoints of the audit log (scope ``audit:read``): the signed checkpoint, inclusion and
consistency proofs, and the verifier key — what an officer needs to check the log without trusting us.

A partner system with the scope ``audit:receipts`` may check its own receipts the same way: the checkpoint,
the verifier key, and the inclusion proof of an entry whose requester is that system (an entry of its own
exchange, discovery or enrolment: the indices its receipts list). Why: a receipt the system cannot check is
only the gateway's word. Any other entry is a 404 with the same problem as an entry that does not exist, so
the answer says nothing of other systems' entries (not even that there is one at that index); a checkpoint
and the key say only how long the log is, which every receipt's checkpoint says already."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel

from audit import AuditLog, MalformedRow, ProofUnavailable, StoreUnavailable, VerificationError
from gateway.auditing.checkpoints import UNVERIFIED, served_checkpoint
from gateway.auditing.setup import audit_services
from gateway.auth.dependencies import require_any_scope, require_scope
from gateway.auth.principal import Principal, Scope
from gateway.container import Container
from gateway.deps import get_container
from gateway.errors import AuditCheckpointUnverified, NotFound, ServiceUnavailable, Unprocessable

router = APIRouter(prefix="/v1/audit", tags=["audit"])
_reader = require_scope(Scope.AUDIT_READ)
_receipt_checker = require_any_scope(Scope.AUDIT_READ, Scope.AUDIT_RECEIPTS)
_NO_SUCH_ENTRY = "no such entry"
MAX_SIZE = 2**53
"""The largest index or tree size a proof is asked for: far beyond any log, and a number every database column and
driver takes (an index past 64 bits reached the driver as a lookup of whose entry it was, and came back a 500)."""
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such entry or checkpoint"},
                                            422: {"description": "Sizes out of range"}}
_CHECKPOINT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 503: {"description": "The checkpoint failed verification, or one covering the entries asked for "
                                    "can be signed only after Retry-After seconds"}}


class InclusionProofView(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]


class ConsistencyProofView(BaseModel):
    first: int
    second: int
    hashes: list[str]


@router.get("/checkpoint", response_class=PlainTextResponse, responses=_CHECKPOINT_ERRORS,
            summary="The latest signed checkpoint (C2SP tlog-checkpoint / signed note)")
async def checkpoint(request: Request, covering: int | None = Query(
                         None, ge=1, le=MAX_SIZE, description="Answer with a checkpoint of at least this many entries "
                         "(the highest index of a receipt plus one), signed now if none covers them yet."),
                     container: Container = Depends(get_container),
                     _principal: Principal = Depends(_receipt_checker)) -> str:
    """Verified against the log's own key and tree before it is served (a 503 problem if it fails). Without
    ``covering`` the checkpoint may lag the log by up to a minute; with it, a fresh receipt can be checked at
    once (at most one checkpoint a second is signed on demand: a 503 with ``Retry-After`` says when)."""
    return (await served_checkpoint(container, request, covering=covering)).note


class KeyEraView(BaseModel):
    """One checkpoint key of the log and the tree sizes it signs (both ends included; a handover is signed by
    the key before it and the key after it)."""

    key_id: str
    verifier_key: str
    from_size: int
    to_size: int | None
    rotated_at: datetime | None
    compromised_after: int | None


class KeyHistoryView(BaseModel):
    current: str
    keys: list[KeyEraView]


_JSON = "application/json"


@router.get("/key", response_class=PlainTextResponse, summary="The verifier key of the log's checkpoints",
            responses={200: {"content": {"text/plain": {}, _JSON: {}},
                             "description": "The current verifier key as text; with `Accept: application/json` "
                                            "the key history (KeyHistoryView)"},
                       503: {"description": "The key history failed verification"}})
async def verifier_key(request: Request, container: Container = Depends(get_container),
                       _principal: Principal = Depends(_receipt_checker)) -> Response:
    """The current key (as text: the string to pin), or with ``Accept: application/json`` every key of the log
    with the sizes it signs, from the signed key handovers (docs/audit.md, "Rotating the checkpoint key"): an
    officer verifies the handover with the key pinned before, then pins the current one."""
    history = await run_in_threadpool(_key_history, audit_services(container).log)
    if _JSON not in request.headers.get("accept", ""):
        return PlainTextResponse(history.current)
    return Response(history.model_dump_json(), media_type=_JSON)


def _key_history(log: AuditLog) -> KeyHistoryView:
    try:
        keys, rows = log.key_history(), log.key_rows()
    except (VerificationError, MalformedRow):
        raise AuditCheckpointUnverified(UNVERIFIED) from None
    except StoreUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    times = {row.from_size: row.rotated_at for row in rows}
    return KeyHistoryView(current=keys.current.vkey, keys=[
        KeyEraView(key_id=era.verifier.key_id.hex(), verifier_key=era.verifier.vkey, from_size=era.first_size,
                   to_size=era.last_size, rotated_at=times.get(era.first_size),
                   compromised_after=era.compromised_after) for era in keys.eras])


@router.get("/entries/{index}/proof", response_model=InclusionProofView, responses=_ERRORS,
            summary="RFC 9162 inclusion proof of one entry in the tree of `size` entries")
async def inclusion(index: int = Path(ge=0, le=MAX_SIZE), size: int = Query(ge=1, le=MAX_SIZE),
                    container: Container = Depends(get_container),
                    principal: Principal = Depends(_receipt_checker)) -> InclusionProofView:
    """Any entry's proof with ``audit:read``; with ``audit:receipts`` only that of an entry of the caller's own
    (a 404 otherwise, as for an entry that does not exist)."""
    log = audit_services(container).log
    if not 0 <= index < size:
        raise Unprocessable("need 0 <= index < size")
    if not principal.has_scope(Scope.AUDIT_READ.value) and not await run_in_threadpool(
            _requested_by, log, index, principal):
        raise NotFound(_NO_SUCH_ENTRY)
    try:
        proof = await run_in_threadpool(log.inclusion_proof, index, size)
    except ProofUnavailable as exc:
        raise NotFound(str(exc)) from exc
    return InclusionProofView(index=proof.index, tree_size=proof.tree_size, leaf_hash=proof.leaf_hash.hex(),
                              hashes=[h.hex() for h in proof.hashes])


def _requested_by(log: AuditLog, index: int, principal: Principal) -> bool:
    """Whether entry ``index`` exists and names ``principal``'s system (and organisation) as its requester."""
    found = log.entries(index, index + 1)
    if not found or principal.kind != "system":
        return False
    requester = json.loads(found[0].canonical)["event"].get("requester") or {}
    return bool(requester.get("system") == principal.subject and requester.get("org") == principal.organisation)


@router.get("/consistency", response_model=ConsistencyProofView, responses=_ERRORS,
            summary="RFC 9162 consistency proof between the trees of `from` and `to` entries")
async def consistency(first: int = Query(alias="from", ge=1, le=MAX_SIZE),
                      second: int = Query(alias="to", ge=1, le=MAX_SIZE),
                      container: Container = Depends(get_container),
                      _principal: Principal = Depends(_reader)) -> ConsistencyProofView:
    if first > second:
        raise Unprocessable("need from <= to")
    try:
        proof = await run_in_threadpool(audit_services(container).log.consistency_proof, first, second)
    except ProofUnavailable as exc:
        raise NotFound(str(exc)) from exc
    return ConsistencyProofView(first=proof.first, second=proof.second, hashes=[h.hex() for h in proof.hashes])
