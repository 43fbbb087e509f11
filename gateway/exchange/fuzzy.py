"""Fuzzy discovery (``POST /v1/discovery/fuzzy``): hit/no-hit for subjects without a shared number.

The requester sends the CLKs of the subjects it looks for (encoded on its side, ``gateway.client.matching``);
the participants have enrolled the CLKs of the records they hold (``gateway.enrolment.filters``). The order of
work is ``POST /v1/discovery``'s, with the filter index where the pseudonym index was:

1. the targets: every participant the purpose lets supply a requested category (as discovery);
2. the discovery policy decides per target with the request's purpose, legal basis, signal, categories and
   subject count, and rule 6's count of today's requests read exactly as discovery reads it — the same
   ``wgs.discovery`` rules, so a purpose, a requester or a holder discovery refuses is refused here too; an
   engine failure denies everything (503);
3. write-ahead: the request (counts, never a filter) and every decision are logged before anything is compared;
   Before that (once decided), a request whose CLK key id (``clk_key_id``) no allowed target's filters carry —
   every allowed target holding filters holds filters of another secret — is refused whole (422
   ``clk-key-mismatch``; :mod:`gateway.enrolment.clk_keys`): a rotated or mistyped secret, which would
   otherwise read as no-hit everywhere. Only the targets the policy allows count: of the others the requester
   learns nothing;
4. per allowed target whose filters carry another key id: ``not-comparable`` (nothing compared: no no-hit);
   per other allowed target: its records of the record type in a permitted category are compared with the subjects
   (``gateway.matching.lookup``: blocking, Dice at the schema's threshold, each subject on its own); a matched
   record it keeps confidential, or a minor where the purpose allows none, is its refusal, as in the pseudonym
   index;
5. the hit/no-hit disclosures and refusals are logged (counts of subjects hit, never which record, and the
   SHA-256 of each hit's match handle), with the handles stored in the same commit, then the answer goes out:
   per target an outcome, per subject hit/no-hit and per hit a match handle (:mod:`gateway.exchange.
   match_handles`), which a follow-up exchange cites to ask that holder about that record. No score, no holder
   reference, no position of a holder's record ever leaves the gateway.

The subjects have no pseudonym, so the log names none: it carries how many were asked and how many hit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy.exc import DataError, OperationalError

from audit import AuditEvent, EventType
from gateway.auth.principal import Principal
from gateway.client.fuzzy import FuzzyDiscoveryRequest, FuzzyDiscoveryResult, FuzzyTarget
from gateway.client.models import DiscoveryRequest, Reason, Subject
from gateway.client.models import Receipt as ReceiptView
from gateway.enrolment.clk_keys import MISMATCH, comparable, none_comparable
from gateway.enrolment.filters import FilterService, encoded, schema_for
from gateway.enrolment.held import HeldRecords
from gateway.enrolment.service import IndexHolding
from gateway.errors import ServiceUnavailable, Unprocessable
from gateway.exchange.match_handles import Issued, MatchHandles, handle_digest
from gateway.exchange.repository import only_if
from gateway.exchange.service import (
    ExchangeService,
    Trace,
    _audit_base,
    _index_refusal,
    _known_categories,
    _refusal_code,
    _refusal_event,
    _refusal_reason,
    _targets,
    _unavailable_event,
)
from gateway.ids import new_id
from gateway.matching.encoding import EncodedDataset
from gateway.matching.lookup import alike, matches
from gateway.matching.schema import Schema
from gateway.policy.model import Decision

log = structlog.get_logger("gateway.exchange.fuzzy")
_Read = TypeVar("_Read")


def _as_discovery(body: FuzzyDiscoveryRequest) -> DiscoveryRequest:
    """What the discovery policy and the log see of the request: the same fields, with a stand-in per subject
    (its position; a subject without a shared number has no pseudonym) carrying the requester's minor flag."""
    return DiscoveryRequest(
        partnership=body.partnership, purpose=body.purpose, legal_basis=body.legal_basis,
        case_reference=body.case_reference, signal=body.signal, categories=body.categories,
        subjects=[Subject(ref=f"fuzzy-subject-{n:03d}", minor=s.minor) for n, s in enumerate(body.subjects)])


def _matched(subjects: EncodedDataset, held: HeldRecords | None, permitted: set[str],
             threshold: float) -> tuple[list[tuple[str, str] | None], IndexHolding | None]:
    """Per subject the record of the holder in a permitted category that matched it (its reference and row
    digest, for the hit's match handle; None for a no-hit), and what the matched records say of the holder's
    grounds to refuse (None when nothing matched).

    A subject's answer depends on it and the holder's records alone, never on the other subjects asked with it
    (:func:`gateway.matching.lookup.matches`): which of them hit must not tell which scores higher.
    The grounds are read from every record with grounds that matches a subject, not only from each subject's
    best match: a holder that keeps a person twice, once confidential, refuses about that person even when the
    requester's spelling happens to be closer to the other record."""
    if held is None:
        return [None] * len(subjects), None
    usable = held.permitted(permitted)
    pairs = matches(subjects, usable.dataset, threshold, usable.blocker, usable.counts)
    grounds, refusers = usable.grounds, usable.refusers  # both kept with the set: no pass over every record
    refusing = matches(subjects, refusers.dataset, threshold, refusers.blocker,
                       refusers.counts) if grounds and pairs else {}
    records = set(pairs.values()) | {grounds[r] for r in refusing.values()}
    if not records:
        return [None] * len(subjects), None
    reasons = {usable.confidential_reason[r] for r in records} - {None}
    holding = IndexHolding(categories=frozenset().union(*(usable.categories[r] for r in records)),
                           confidential_reason=min(r for r in reasons if r is not None) if reasons else None,
                           minor=any(usable.minor[r] for r in records))
    return [(usable.refs[pairs[n]], usable.digests[pairs[n]]) if n in pairs else None
            for n in range(len(subjects))], holding


class FuzzyDiscovery:
    """Fuzzy discovery on top of the exchange service's decision, log and receipt (the hot exchange path is
    not involved)."""

    def __init__(self, exchange: ExchangeService, filters: FilterService, handles: MatchHandles) -> None:
        self.exchange = exchange
        self.filters = filters
        self.handles = handles

    async def discover(self, principal: Principal, body: FuzzyDiscoveryRequest, trace: Trace) -> FuzzyDiscoveryResult:
        """Fails closed as an exchange and a discovery do (``ExchangeService._failing_closed``): what escapes the
        work is audited as a defect, a cancellation raised inside it included (then the generic 500); the
        request's own cancellation goes on, with the log's ending for it once the write-ahead is logged."""
        discovery_id = new_id()
        stand_in = _as_discovery(body)
        work = self._discover(principal, body, stand_in, trace, discovery_id)
        return await self.exchange._failing_closed(work, EventType.DISCOVERY_QUERIED, principal, stand_in, trace,
                                                   discovery_id)

    @staticmethod
    async def _read_index(read: Callable[..., _Read], *args: Any) -> _Read:
        """``read(*args)`` on a worker thread; a database failure is a 503. After the write-ahead the log must
        end such a request (``request.failed``, written by ``ExchangeService._audit_defect`` for a 503 after the
        write-ahead); as a bare database error it would be answered 503 with the request left pending. Before
        it, nothing is logged either way."""
        try:
            return await asyncio.to_thread(read, *args)
        except (OperationalError, DataError) as exc:
            log.error("fuzzy_index_unreadable", error_type=type(exc).__name__)
            raise ServiceUnavailable("the discovery index could not be read; nothing was disclosed") from exc

    async def _held(self, partnership: str, schema: Schema, allowed: list[str]) -> dict[str, HeldRecords]:
        """The allowed holders' records (the request is logged ahead by now)."""
        return await self._read_index(self.filters.held, partnership, schema, allowed)

    async def _not_comparable(self, body: FuzzyDiscoveryRequest, record_type: str,
                              targets: list[str]) -> tuple[set[str], dict[str, str]]:
        """The targets whose filters carry another key id than the request's, and the known key ids of the
        targets' filters (:meth:`_refuse_if_none_comparable` decides from them once the policy has). Read before
        the write-ahead, so that a database failure there is a plain 503 with nothing logged."""
        if body.clk_key_id is None or not targets:
            return set(), {}
        keys = await self._read_index(self.filters.key_ids, body.partnership, record_type, targets)
        return {t for t in targets if not comparable(body.clk_key_id, keys, t)}, keys

    async def _refuse_if_none_comparable(self, body: FuzzyDiscoveryRequest, record_type: str, allowed: list[str],
                                         others: set[str], keys: dict[str, str]) -> None:
        """422 when none of the holders the policy lets the requester ask can be compared (none carries the
        request's key id, and none of unknown key id holds any filter): a rotated or mistyped secret.

        Why only those the policy allows: decided over every target, before the policy, the 422 told a requester
        the policy denies everything (a non-participant, a purpose that does not allow it) which participants hold
        filters of a record type under a known secret — by a question refused before the log records it. Still
        before the write-ahead: nothing is logged of a request refused here."""
        if body.clk_key_id is None or not others.intersection(allowed):
            return
        if any(keys.get(t) == body.clk_key_id for t in allowed):
            return
        unknown = [t for t in allowed if t not in keys]
        holding: set[str] = await self._read_index(self.filters.holding, body.partnership, record_type, unknown) \
            if unknown else set()
        if holding:  # filters of unknown key id: compared as before
            return
        raise none_comparable(body.clk_key_id)

    async def _discover(self, principal: Principal, body: FuzzyDiscoveryRequest, stand_in: DiscoveryRequest,
                        trace: Trace, discovery_id: str) -> FuzzyDiscoveryResult:
        service = self.exchange
        register = service.deps.register
        _known_categories(register, body.categories, "requested categories")
        schema = schema_for(body.record_type, body.schema_version)
        subjects = encoded(body.subjects, schema, "subjects")
        twice = alike(subjects.filters, schema.threshold)
        if twice is not None:  # by position only: the filters are the requester's encoding of a person
            raise Unprocessable(f"subjects {twice[0]} and {twice[1]} match each other: one person asked twice "
                                "(ask about each subject once)")
        targets = _targets(register, stand_in, "all", principal.organisation)
        others, keys = await self._not_comparable(body, schema.id, [t.organisation for t in targets])
        base = _audit_base(principal, stand_in, trace, discovery_id, register)
        fuzzy: dict[str, Any] = {"record_type": schema.id, "schema_version": schema.version,
                                 "subject_count": len(body.subjects)}
        if body.clk_key_id is not None:  # beside the schema version: which secret (its non-secret id)
            fuzzy["clk_key_id"] = body.clk_key_id

        async def comparable_or_refused(decisions: list[Decision]) -> None:
            allowed = [t.organisation for t, d in zip(targets, decisions, strict=True) if d.allow]
            await self._refuse_if_none_comparable(body, schema.id, allowed, others, keys)

        decisions, receipts = await service.discovery_written_ahead(
            principal, stand_in, targets, base,
            {"case_reference": body.case_reference, "signal_type": body.signal.type, "fuzzy": fuzzy},
            comparable_or_refused)
        service._logged_ahead.add(discovery_id)

        allowed = [t.organisation for t, d in zip(targets, decisions, strict=True)
                   if d.allow and t.organisation not in others]
        held = await self._held(body.partnership, schema, allowed) if allowed else {}
        minors_allowed = service._minors_allowed(stand_in)
        issued: list[Issued] = []

        def handles_for(organisation: str, matched: list[tuple[str, str] | None]) -> list[str | None]:
            """A new match handle per hit at ``organisation`` (kept in ``issued``), None per no-hit."""
            handles: list[str | None] = []
            for record in matched:
                handle = None if record is None else self.handles.issue(
                    principal, discovery_id, body.partnership, body.purpose, organisation, schema.id, *record)
                if handle is not None:
                    issued.append(handle)
                handles.append(None if handle is None else handle.handle)
            return handles

        def answer(organisation: str, decision: Decision) -> tuple[FuzzyTarget, dict[str, Any] | None]:
            reasons = [Reason(code=r.code, message=r.message, category=r.category) for r in decision.reasons]
            if not decision.allow:
                return FuzzyTarget(holder=organisation, reasons=reasons,
                                   outcome="escalated" if decision.escalate else "denied"), None
            if organisation in others:  # its filters are of another secret: not compared, and no no-hit
                return (FuzzyTarget(holder=organisation, outcome="not-comparable", reasons=[Reason(
                    code=MISMATCH, message="this holder's filters were encoded with another CLK secret: nothing "
                    "was compared")]), _unavailable_event(organisation, decision, MISMATCH, None))
            matched, holding = _matched(subjects, held.get(organisation), set(decision.permitted_categories),
                                        schema.threshold)
            refusal = _index_refusal(holding, minors_allowed)
            if refusal is not None:
                code = _refusal_code(refusal, organisation)
                return (FuzzyTarget(holder=organisation, outcome="refused-by-holder",
                                    reasons=[_refusal_reason(code)]), _refusal_event(organisation, decision, code))
            hits = [record is not None for record in matched]
            handles = handles_for(organisation, matched)
            target = FuzzyTarget(holder=organisation, outcome="hit" if any(hits) else "no-hit", reasons=reasons,
                                 subjects=["hit" if hit else "no-hit" for hit in hits], match_handles=handles)
            extra: dict[str, Any] = {"hit_only": True, "outcome": target.outcome, "fuzzy": True,
                                     "subjects_hit": sum(hits)}
            if any(hits):  # what links a follow-up exchange (its subjects are logged by these hashes) to this
                extra["match_handles"] = sorted(handle_digest(h) for h in handles if h is not None)
            return target, {"event_type": EventType.DISCLOSURE, "holder": organisation, "categories": (),
                            "extra": extra}

        def compare() -> list[tuple[FuzzyTarget, dict[str, Any] | None]]:  # NumPy/numba work: off the loop
            return [answer(t.organisation, d) for t, d in zip(targets, decisions, strict=True)]

        answers = await asyncio.to_thread(compare)
        # The handles are stored in the commit that logs the disclosures: none is valid without its entry.
        receipts += await service._ending(discovery_id, service._record(
            [AuditEvent(**base | event) for _, event in answers if event is not None],
            only_if(self.handles.stored(issued)) if issued else None))
        log.info("fuzzy_discovery_answered", discovery_id=discovery_id, subjects=len(body.subjects),
                 outcomes=[a.outcome for a, _ in answers])
        return FuzzyDiscoveryResult(
            discovery_id=discovery_id, partnership=body.partnership, purpose=body.purpose, record_type=schema.id,
            policy_version=decisions[0].policy_version, register_version=register.version,
            targets=[a for a, _ in answers],
            receipt=ReceiptView(exchange_id=discovery_id, audit_indices=[r.index for r in receipts],
                                checkpoint=await service._checkpoint()))
