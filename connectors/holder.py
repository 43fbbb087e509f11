"""How a simulated partner answers as a holder: the rules, without HTTP.

A cautious holder: it answers only in the categories asked, refuses (with its profile's reason) when any
asked subject is one whose disclosure would harm an investigation, answers a retried request id once, and
answers discovery with record types only; it refuses (``minor-not-allowed``) when it knows an asked person
is under 18 and the purpose does not allow minors, whatever the requester declared — also under a binding
escalation decision, which overrules the holder's own objection (rules 6-8) but never rule 5, the law on
minors. ``over_share`` makes it
deliberately misbehave — it adds the records of one unasked category — so the gateway's defence-in-depth
filter can be tested against a real holder.
"""

from __future__ import annotations

from connectors.dedup import ReplayCache, fingerprint
from connectors.profiles import PartnerProfile
from connectors.protocol import DiscoveryAnswer, HolderAnswer, HolderDiscovery, HolderQuery, HolderRecord
from connectors.store import PartnerStore
from connectors.world import Record

_REF = "subj-"  # the simulated world's own subject references
MINOR_NOT_ALLOWED = "minor-not-allowed"


def _wire(record: Record, subject: str) -> HolderRecord:
    """A record as it leaves the partner: about ``subject`` as the gateway asked (its own pseudonym)."""
    return HolderRecord(record_id=record.record_id, record_type=record.record_type, subject=subject,
                        category=record.category, fields=record.fields)


class Holder:
    """One partner system's answering logic over its own store."""

    def __init__(self, profile: PartnerProfile, store: PartnerStore, *, over_share: bool = False) -> None:
        self.profile = profile
        self.store = store
        self.over_share = over_share
        self._replays: ReplayCache[HolderAnswer] = ReplayCache()

    def query(self, query: HolderQuery, *, bound: bool = False) -> tuple[HolderAnswer, bool]:
        """The answer and whether it is a replay of an earlier answer to the same request id.

        ``bound``: the query carries a binding escalation decision (already verified by the caller) — the
        holder's own objection (confidentiality) was overruled at a higher tier, so it answers instead of
        refusing; rule 5 (minors) is no objection of the holder's and no decision lifts it.
        Raises ``dedup.RequestIdReused`` when the request id was used for a different query."""
        if query.request_id is None:
            return self._answer(query, bound), False
        return self._replays.answer_once(query.request_id, fingerprint(query.model_dump(mode="json")),
                                         lambda: self._answer(query, bound))

    def _answer(self, query: HolderQuery, bound: bool) -> HolderAnswer:
        received = 0
        if query.provided:
            received = self.store.receive(query.request_id or "-", [r.model_dump() for r in query.provided])
        own = self.store.resolve(query.partnership, query.subjects)  # asked (pseudonym or reference) -> own ref
        if self.profile.refusal_reason and not bound and self.store.is_confidential(list(own.values())):
            return HolderAnswer(status="refused", refusal_reason=self.profile.refusal_reason, received=received)
        if not query.minors_allowed and self.store.any_minor(list(own.values())):
            # Rule 5 rests on the requester's `minor` flag; a holder that knows better does not disclose. Not
            # even when `bound`: rule 8 lets a decision override rules 6-7, never rule 5 (REGISTER rules).
            return HolderAnswer(status="refused", refusal_reason=MINOR_NOT_ALLOWED, received=received)
        records = self.store.records(list(own.values()), list(query.categories))
        if self.over_share:
            records += self._unasked(query, list(own.values()))
        back = {ref: asked for asked, ref in own.items()}
        wired = [_wire(r, back[r.subject]) for r in records]
        if any(asked != ref for asked, ref in own.items()):  # asked in pseudonyms: answer in pseudonyms only
            wired = self._pseudonymise_fields(query.partnership, wired)
        return HolderAnswer(status="answered", received=received, records=wired)

    def _pseudonymise_fields(self, partnership: str, records: list[HolderRecord]) -> list[HolderRecord]:
        """A record may name a related subject (a directorship names the director): by this partner's own
        pseudonym for it when enrolled, otherwise not at all — never by a shared reference."""
        related = {v for r in records for v in r.fields.values() if isinstance(v, str) and v.startswith(_REF)}
        mine = self.store.own_pseudonyms(partnership, sorted(related))
        return [r.model_copy(update={"fields": {k: (mine.get(v) if isinstance(v, str) and v.startswith(_REF) else v)
                                                for k, v in r.fields.items()}}) for r in records]

    def _unasked(self, query: HolderQuery, refs: list[str]) -> list[Record]:
        others = [r for r in self.store.records(refs) if r.category not in query.categories]
        return [r for r in others if r.category == others[0].category] if others else []

    def discover(self, discovery: HolderDiscovery) -> DiscoveryAnswer:
        """Per subject with records (in the given categories), the record types held; nothing else."""
        hits: dict[str, list[str]] = {}
        own = self.store.resolve(discovery.partnership, discovery.subjects)
        back = {ref: asked for asked, ref in own.items()}
        for record in self.store.records(list(own.values()), discovery.categories or None):
            types = hits.setdefault(back[record.subject], [])
            if record.record_type not in types:
                types.append(record.record_type)
        return DiscoveryAnswer(hits=hits)
