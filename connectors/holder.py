"""How a simulated partner answers as a holder: the rules, without HTTP.

A cautious holder: it answers only in the categories asked, refuses (with its profile's reason) when any
asked subject is one whose disclosure would harm an investigation, answers a retried request id once, echoes
the request id of every query and discovery it answers (so the gateway can tell its answer from another's), and
answers discovery with record types only, or with a refusal on the same grounds as a query; it refuses
(``minor-not-allowed``) when it knows an asked person is under 18 and the purpose does not allow minors,
whatever the requester declared — also under a binding escalation decision, which overrules the holder's own
objection (rules 6-8) but never rule 5, the law on minors. ``over_share`` makes it deliberately misbehave —
it adds the records of one unasked category — so the gateway's defence-in-depth filter can be tested against
a real holder.
"""

from __future__ import annotations

from connectors.dedup import REPLAY_IDS, ReplayCache, fingerprint
from connectors.profiles import PartnerProfile
from connectors.protocol import (
    MINOR_NOT_ALLOWED,
    DiscoveryAnswer,
    HolderAnswer,
    HolderDiscovery,
    HolderQuery,
    HolderRecord,
)
from connectors.store import PartnerStore
from connectors.world import Record

_REF = "subj-"  # the simulated world's own subject references


def _wire(record: Record, subject: str) -> HolderRecord:
    """A record as it leaves the partner: about ``subject`` as the gateway asked (its own pseudonym)."""
    return HolderRecord(record_id=record.record_id, record_type=record.record_type, subject=subject,
                        category=record.category, fields=record.fields)


def _references(own: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """Every own reference of the asked subjects (a person may be held under several, all of them are asked
    about, and all of them count for a refusal), and each reference back to the subject it was asked as."""
    back = {ref: asked for asked, refs in own.items() for ref in refs}
    return list(back), back


class Holder:
    """One partner system's answering logic over its own store."""

    def __init__(self, profile: PartnerProfile, store: PartnerStore, *, over_share: bool = False,
                 replay_ids: int = REPLAY_IDS) -> None:
        """``replay_ids``: how many answered request ids are remembered for replays (see ``connectors.dedup``)."""
        self.profile = profile
        self.store = store
        self.over_share = over_share
        self._replays: ReplayCache[HolderAnswer] = ReplayCache(size=replay_ids)

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
        # asked (pseudonym or reference) -> own references
        refs, back = _references(self.store.resolve(query.partnership, query.subjects))
        refusal = self._refusal(refs, query.minors_allowed, bound)
        if refusal is not None:
            # Provided records are taken in only once the holder answers: one that refuses to deal with these
            # subjects keeps nothing about them either (and says so: ``received`` 0).
            return HolderAnswer(request_id=query.request_id, status="refused", refusal_reason=refusal)
        received = 0
        if query.provided:
            # Once per request id, also when an earlier attempt failed after taking them in (the replay cache
            # forgets a failed attempt, and a restarted holder all of them): the store deduplicates.
            received = self.store.receive(query.request_id, [r.model_dump() for r in query.provided])
        records = self.store.records(refs, list(query.categories))
        if self.over_share:
            records += self._unasked(query, refs)
        wired = [_wire(r, back[r.subject]) for r in records]
        # Asked in pseudonyms, or told to (a follow-up by match handle asks by reference, which the requester
        # may not learn): related subjects by pseudonyms only.
        if query.related_subjects_as_pseudonyms or any(asked != ref for ref, asked in back.items()):
            wired = self._pseudonymise_fields(query.partnership, wired)
        return HolderAnswer(request_id=query.request_id, status="answered", received=received, records=wired)

    def _refusal(self, refs: list[str], minors_allowed: bool, bound: bool) -> str | None:
        """Why the holder answers nothing about ``refs`` (its own references), or None. Decided on the
        holder's own lists only — never on which records it holds in the asked categories — so that a
        refusal is the same whether or not there would have been anything to answer."""
        if self.profile.refusal_reason and not bound and self.store.is_confidential(refs):
            return self.profile.refusal_reason
        if not minors_allowed and self.store.any_minor(refs):
            # Rule 5 rests on the requester's `minor` flag; a holder that knows better does not disclose. Not
            # even when `bound`: rule 8 lets a decision override rules 6-7, never rule 5 (REGISTER rules).
            return MINOR_NOT_ALLOWED
        return None

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

    def discover(self, discovery: HolderDiscovery, *, bound: bool = False) -> DiscoveryAnswer:
        """Per subject with records (in the given categories), the record types held; nothing else — or a
        refusal, on the same grounds as a query's (a subject it keeps confidential, a minor the purpose does
        not allow), without any hit.

        Why a refusal, and why so: a hit is itself data about the person — that this holder has a file on
        them — so answering it for a confidential subject gives away what the confidentiality protects, and
        answering it about a minor processes a minor's data for a purpose the law does not allow it for.
        Hence:

        - the grounds are those of ``query`` and are checked the same way, on the holder's own lists and
          before any records are looked at: the refusal comes whether or not the subject has records in the
          asked categories, so it says neither hit nor no-hit there (no hit-oracle per category), and it
          tells a requester no more than an exchange about the same subject would (that refuses on the same
          grounds, and that refusal is what the escalation model settles);
        - it covers the whole discovery: hits of the other subjects asked are withheld too, so one refusal
          cannot be narrowed to the subject that caused it by what is still answered beside it;
        - ``bound`` (a verified binding escalation decision, as for ``query``) lifts the holder's own
          objection, never rule 5;
        - not a silent no-hit: that would hide the refusal from the requester, the audit log and escalation,
          and mislead the requester into treating the holder as having nothing.
        """
        refs, back = _references(self.store.resolve(discovery.partnership, discovery.subjects))
        refusal = self._refusal(refs, discovery.minors_allowed, bound)
        if refusal is not None:
            return DiscoveryAnswer(request_id=discovery.request_id, status="refused", refusal_reason=refusal)
        hits: dict[str, list[str]] = {}
        for record in self.store.records(refs, discovery.categories or None):
            types = hits.setdefault(back[record.subject], [])
            if record.record_type not in types:
                types.append(record.record_type)
        return DiscoveryAnswer(request_id=discovery.request_id, hits=hits)
