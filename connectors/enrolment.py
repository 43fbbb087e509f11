"""A partner's enrolment: every subject it holds records on goes to the gateway as a polymorphic pseudonym
(made here, from the identifier in its own database), and comes back as the partner's own pseudonym, which
it keeps next to its reference. From then on requests and answers carry only those pseudonyms.

Run once per partnership the partner takes part in, and again after the gateway rotates its keys (the new
key version gives new pseudonyms). Re-enrolling replaces the index entries, so it is safe to repeat.
"""

from __future__ import annotations

from connectors.profiles import PartnerProfile
from connectors.store import PartnerStore
from gateway.client.api import EnrolledSubject, GatewayClient
from gateway.client.pseudonyms import InvalidIdentifier, parse_identifier

CHUNK = 500


def _person(subject: EnrolledSubject) -> tuple[str, str]:
    """Which person ``subject`` is: its identifier as the gateway pseudonymises it (normalised), so that two
    spellings of one number count as one. One the gateway would refuse stays as it is (the enrolment fails on
    it, as before, in whichever chunk it is)."""
    try:
        identifier = parse_identifier(subject.kind, subject.number)
    except InvalidIdentifier:
        return subject.kind, subject.number
    return identifier.type.value, identifier.value


def chunks(subjects: list[EnrolledSubject], size: int) -> list[list[int]]:
    """The positions of ``subjects`` in batches of at most ``size``, every person's entries in one batch.

    Why: a partner with two references for one person enrols the person twice. Within one batch the gateway
    keeps what every entry says (all record types and categories; confidential or a minor if any says so);
    across batches each enrolment replaces the last, so split over two chunks the second entry alone stood —
    a confidential entry followed by a plain one made the index answer ``hit`` where the partner refuses.
    Persons keep the order of their first entry; one with more entries than ``size`` gets a batch of its own
    (the gateway takes up to 1000 subjects per call)."""
    people: dict[tuple[str, str], list[int]] = {}
    for position, subject in enumerate(subjects):
        people.setdefault(_person(subject), []).append(position)
    batches: list[list[int]] = []
    batch: list[int] = []
    for positions in people.values():
        if batch and len(batch) + len(positions) > size:
            batches.append(batch)
            batch = []
        batch.extend(positions)
    if batch:
        batches.append(batch)
    return batches


async def enrol(store: PartnerStore, client: GatewayClient, partnerships: list[str], *,
                profile: PartnerProfile) -> int:
    """Enrol the store's subjects in each partnership; returns how many (subject, partnership) pairs.

    With each subject go the grounds ``connectors.holder.Holder`` refuses discovery on, decided the same way
    (``profile``: a partner without a refusal reason never refuses for confidentiality): discovery with
    pseudonyms is answered from the gateway's index, which must refuse where this partner would."""
    refuses = profile.refusal_reason is not None
    rows = store.enrolment()
    refs = [row[0] for row in rows]
    subjects = [EnrolledSubject(kind, number, types, categories, confidential and refuses, minor)
                for _ref, kind, number, types, categories, confidential, minor in rows]
    batches = chunks(subjects, CHUNK)
    done = 0
    for partnership in partnerships:
        for batch in batches:
            own = await client.enrol(partnership, [subjects[n] for n in batch],
                                     confidential_reason=profile.refusal_reason)
            store.remember_pseudonyms(partnership, list(zip(own, [refs[n] for n in batch], strict=True)))
            done += len(batch)
    return done
