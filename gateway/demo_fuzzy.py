"""The demo's fuzzy discovery: finding a person without a shared number, then following the hit up.

The police and the tax office enrol Bloom-filter encodings (CLKs) of the persons they hold records about in
the RIEC (:mod:`connectors.filters`). The municipality has a Bibob application naming a director by name, date
of birth and address only — no BSN, and the surname and street misspelt — and asks, with a second person no
partner holds, which holders hold a matching record. The answer is hit/no-hit per holder and subject, a hit
with a match handle; the municipality cites the police's handle in a formal exchange and gets that record's
permitted data, about the handle. What is printed has no score, no holder's reference and no name.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from connectors.filters import enrol_filters, person_fields
from connectors.profiles import PROFILES
from connectors.store import PartnerStore, store_path
from connectors.world import Person
from gateway.client.api import GatewayClient
from gateway.client.fuzzy import FuzzyDiscoveryRequest, FuzzyDiscoveryResult
from gateway.client.fuzzy_requests import follow_up, fuzzy_request
from gateway.client.models import ExchangeRequest, ExchangeResult, Signal
from gateway.settings import Settings

PARTNERSHIP = "riec-amsterdam-amstelland"
CLK_SECRET = b"riec-amsterdam-amstelland demo CLK secret, not for production"
"""The partnership's CLK secret: shared by its participants, never by the gateway (a demo value)."""
FILTER_HOLDERS = ["politie-bvh", "belastingdienst-ivs"]
"""The partners that enrol match filters: ~300 persons between them, well under a second to encode."""
REQUESTER = "gemeente-amsterdam-vth"
FOLLOWED_UP = "politie"
TITLE = "Fuzzy discovery: a Bibob applicant's director known by name, date of birth and address only"
FOLLOW_UP_TITLE = "Fuzzy discovery (continued): the police's hit followed up by its match handle"


async def enrol_partner_filters(settings: Settings, clients: Mapping[str, GatewayClient],
                                people: Mapping[str, Person], console: Console) -> None:
    """Each filter holder enrols its persons' filters in the RIEC (replacing its earlier ones: the demo can
    run again on the same data directory)."""
    for system in FILTER_HOLDERS:
        if system not in clients:
            continue
        store = PartnerStore(store_path(settings.data_dir / "partners", system))
        try:
            count = await enrol_filters(store, clients[system], PARTNERSHIP, CLK_SECRET, people,
                                        profile=PROFILES[system])
        finally:
            store.close()
        console.print(f"  enrolled {count:>5} match filter(s) of {system}")


def _swapped(word: str) -> str:
    """Two different letters nearest the middle of ``word`` the other way round: the commonest typo (``Hoog``
    becomes ``Hogo``, not itself)."""
    for n in sorted(range(1, len(word)), key=lambda n: abs(n - len(word) // 2)):
        if word[n - 1] != word[n]:
            return word[:n - 1] + word[n] + word[n - 1] + word[n + 1:]
    return word


def as_the_application_spells(person: Person) -> dict[str, str]:
    """What the municipality knows of ``person``: the surname's last word and the street misspelt, the date
    of birth written with dashes. Still a match at the person schema's threshold (every person of the world
    stays above it, spelt so); a requester with the number would use a pseudonym instead."""
    fields = person_fields(person)
    *prefixes, last = fields["surname"].split(" ")
    street = fields["address_1"]
    middle = len(street) // 2
    return fields | {"surname": " ".join([*prefixes, _swapped(last)]),
                     "address_1": street[:middle] + street[middle + 1:],
                     "date_of_birth": person.date_of_birth.isoformat()}


def subjects(scenarios: Mapping[str, list[str]]) -> list[str]:
    """Who is looked for: the Bibob applicant's director with police records, and a person nobody holds."""
    return [scenarios["bibob-applicant"][1], scenarios["no-records"][0]]


def discovery_request(people: Mapping[str, Person], asked: list[str]) -> FuzzyDiscoveryRequest:
    """The municipality's fuzzy discovery, encoded on its side with the partnership's CLK secret."""
    return fuzzy_request(
        partnership=PARTNERSHIP, purpose="bibob-integrity-check", legal_basis="WGS (RIEC) with Wet Bibob",
        case_reference="RIEC-AA-2026-118", signal=Signal(type="bibob-application", reference="BIBOB-2026-43"),
        categories=["police_incidents", "tax_debts"], record_type="person", secret=CLK_SECRET,
        subjects=[as_the_application_spells(people[ref]) for ref in asked])


async def discover_and_follow_up(client: GatewayClient, people: Mapping[str, Person],
                                 scenarios: Mapping[str, list[str]], console: Console) -> ExchangeResult:
    """Run the discovery, print its answer, and return the follow-up exchange's answer (ValueError when the
    police had no hit: then there is nothing to follow up, and the demo counts a failure)."""
    request = discovery_request(people, subjects(scenarios))
    console.print(f"  {REQUESTER} looks for {len(request.subjects)} person(s) without a BSN: name, date of birth "
                  "and address, misspelt, encoded as Bloom filters on its side")
    result = await client.fuzzy_discovery(request)
    show_discovery(result, console)
    exchange: ExchangeRequest = follow_up(request, result, FOLLOWED_UP, categories=["police_incidents"])
    handles = ", ".join(f"{s.ref[:14]}…" for s in exchange.subjects)
    console.print(f"  {REQUESTER} follows up {FOLLOWED_UP}'s hit: POST /v1/exchanges about {handles}")
    return await client.exchange(exchange)


def show_discovery(result: FuzzyDiscoveryResult, console: Console) -> None:
    """A row per holder: its answer, and per subject hit or no-hit (a hit's match handle is shown by the
    follow-up); never a score or a holder's reference, which the answer does not carry."""
    table = Table(title=f"{TITLE}\nrequester: {REQUESTER} · discovery {result.discovery_id}", title_justify="left")
    count = max((len(t.subjects) for t in result.targets), default=0)
    for column in ("holder", "outcome", *(f"subject {n + 1}" for n in range(count)), "reasons"):
        table.add_column(column)
    for target in result.targets:
        cells = [*target.subjects, *[""] * (count - len(target.subjects))]
        table.add_row(target.holder, target.outcome, *cells, "; ".join(r.code for r in target.reasons)[:80])
    console.print(table)
