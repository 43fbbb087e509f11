"""A partner's match filters for fuzzy discovery: the persons it holds records about, encoded as CLK Bloom
filters here (with the partnership's CLK secret, which the gateway never has) and enrolled under the
partner's own reference of each — the reference its database holds the records under, so that a follow-up by
match handle, which the gateway sends as that reference, resolves without any mapping.

The counterpart of :mod:`connectors.enrolment` for requesters that have no shared number (a name, a date of
birth, an address, perhaps misspelt): the same subjects, with the same refusal grounds (confidential, minor),
so that fuzzy discovery refuses where this partner would. The simulated databases keep identifiers, not
names: the names, dates of birth and addresses come from the world they were seeded from, as a real partner's
would come from its own administration.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.profiles import PartnerProfile
from connectors.store import PartnerStore
from connectors.world import Person
from gateway.client.api import GatewayClient
from gateway.client.fuzzy_requests import FilterRecordToEnrol


def person_fields(person: Person) -> dict[str, str]:
    """``person`` by the person schema's field names (``gateway/matching/schemas/person.yaml``).

    The first word of the name is the given name, the rest the surname (with its prefixes: ``van der``);
    the street's last word is the house number. Postcodes lose their space (``1234 AB`` and ``1234AB`` are
    one postcode, and the schema compares them character by character)."""
    given, _, surname = person.name.partition(" ")
    street, _, number = person.postal_address.street.rpartition(" ")
    return {"given_name": given, "surname": surname, "date_of_birth": person.date_of_birth.strftime("%Y%m%d"),
            "address_1": street, "street_number": number,
            "postcode": person.postal_address.postcode.replace(" ", ""), "suburb": person.postal_address.city}


def filter_records(store: PartnerStore, people: Mapping[str, Person], *,
                   profile: PartnerProfile) -> list[FilterRecordToEnrol]:
    """The store's persons (companies have no BSN and another schema) as records to enrol: reference, fields,
    the categories held, and the grounds the partner refuses on — decided as :func:`connectors.enrolment.enrol`
    decides them (a partner without a refusal reason never refuses for confidentiality)."""
    refuses = profile.refusal_reason is not None
    return [FilterRecordToEnrol(ref, person_fields(people[ref]), categories, confidential and refuses, minor)
            for ref, kind, _number, _types, categories, confidential, minor in store.enrolment()
            if kind == "bsn" and ref in people]


async def enrol_filters(store: PartnerStore, client: GatewayClient, partnership: str, secret: bytes,
                        people: Mapping[str, Person], *, profile: PartnerProfile) -> int:
    """Enrol the filters of the store's persons in ``partnership``, replacing what this partner enrolled
    there before (safe to repeat); returns how many records. A person whose filter the gateway would refuse
    (very long names encode too densely) is left out by the client, which logs how many, rather than keeping
    everyone else out of the index with it; such a person is still found by number (:mod:`connectors.enrolment`)."""
    records = filter_records(store, people, profile=profile)
    answer = await client.enrol_filters(partnership, "person", secret, records, replace=True,
                                        confidential_reason=profile.refusal_reason)
    return answer.stored
