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

CHUNK = 500


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
    done = 0
    for partnership in partnerships:
        for start in range(0, len(subjects), CHUNK):
            chunk = subjects[start:start + CHUNK]
            own = await client.enrol(partnership, chunk, confidential_reason=profile.refusal_reason)
            store.remember_pseudonyms(partnership, list(zip(own, refs[start:start + CHUNK], strict=True)))
            done += len(chunk)
    return done
