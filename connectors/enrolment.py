"""A partner's enrolment: every subject it holds records on goes to the gateway as a polymorphic pseudonym
(made here, from the identifier in its own database), and comes back as the partner's own pseudonym, which
it keeps next to its reference. From then on requests and answers carry only those pseudonyms.

Run once per partnership the partner takes part in, and again after the gateway rotates its keys (the new
key version gives new pseudonyms). Re-enrolling replaces the index entries, so it is safe to repeat.
"""

from __future__ import annotations

from connectors.store import PartnerStore
from gateway.client.api import GatewayClient

CHUNK = 500


async def enrol(store: PartnerStore, client: GatewayClient, partnerships: list[str]) -> int:
    """Enrol the store's subjects in each partnership; returns how many (subject, partnership) pairs."""
    subjects = store.enrolment()
    done = 0
    for partnership in partnerships:
        for start in range(0, len(subjects), CHUNK):
            chunk = subjects[start:start + CHUNK]
            own = await client.enrol(partnership, [(kind, number, types, categories)
                                                   for _ref, kind, number, types, categories in chunk])
            store.remember_pseudonyms(partnership, [(pseudonym, item[0]) for pseudonym, item in zip(own, chunk,
                                                                                                    strict=True)])
            done += len(chunk)
    return done
