"""A simulated partner's match filters (``connectors.filters``) and the demo's misspelt subjects
(``gateway.demo_fuzzy``): which records a partner enrols, with which refusal grounds, and that what the demo's
requester knows of a person still matches the holder's record while someone nobody holds matches nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from connectors import world as w
from connectors.filters import filter_records, person_fields
from connectors.profiles import PROFILES
from connectors.store import PartnerStore, store_path
from connectors.world import World, build_world
from gateway import demo_fuzzy
from gateway.matching.encoding import CLKEncoder
from gateway.matching.schema import shipped_schema
from gateway.matching.similarity import dice_join

SCHEMA = shipped_schema("person")


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2025)


@pytest.fixture
def store(tmp_path: Path, world: World) -> Iterator[PartnerStore]:
    opened = PartnerStore(store_path(tmp_path, w.POLICE))
    opened.seed_from(world, w.POLICE)
    yield opened
    opened.close()


def _people(world: World) -> dict[str, w.Person]:
    return {p.subject_ref: p for p in world.persons}


def test_person_fields_use_the_schemas_names_and_lose_nothing(world: World) -> None:
    names = {f.name for f in SCHEMA.fields}
    for person in world.persons:
        fields = person_fields(person)
        assert set(fields) <= names
        assert f"{fields['given_name']} {fields['surname']}" == person.name
        assert f"{fields['address_1']} {fields['street_number']}" == person.postal_address.street
        assert fields["postcode"] == person.postal_address.postcode.replace(" ", "")
        assert fields["date_of_birth"] == person.date_of_birth.strftime("%Y%m%d")


def test_a_partner_enrols_its_persons_with_the_grounds_it_refuses_on(store: PartnerStore, world: World) -> None:
    records = filter_records(store, _people(world), profile=PROFILES[w.POLICE])
    persons = {p.subject_ref for p in world.persons}
    held = {r.subject for r in world.records[w.POLICE]} & persons
    assert sorted(r.ref for r in records) == sorted(held)  # under the references its records are held under
    for record in records:
        assert set(record.categories) == {r.category for r in world.records_of(w.POLICE, record.ref)}
        assert record.confidential == (record.ref in world.confidential[w.POLICE])
        assert record.minor == world.person(record.ref).is_minor
    assert any(r.confidential for r in records)
    assert any(r.minor for r in records)


def test_a_partner_without_a_refusal_reason_never_marks_a_record_confidential(store: PartnerStore,
                                                                              world: World) -> None:
    never = dataclasses.replace(PROFILES[w.POLICE], refusal_reason=None)
    assert not any(r.confidential for r in filter_records(store, _people(world), profile=never))


def test_companies_are_not_enrolled_as_persons(tmp_path: Path, world: World) -> None:
    tax = PartnerStore(store_path(tmp_path, w.TAX))
    try:
        tax.seed_from(world, w.TAX)
        refs = {r.ref for r in filter_records(tax, _people(world), profile=PROFILES[w.TAX])}
    finally:
        tax.close()
    companies = {co.subject_ref for co in world.companies}
    assert companies & {r.subject for r in world.records[w.TAX]}  # the tax office holds companies too
    assert refs
    assert not refs & companies


def _matches(left: list[dict[str, str]], right: list[dict[str, str]]) -> set[tuple[int, int]]:
    encoder = CLKEncoder(SCHEMA, demo_fuzzy.CLK_SECRET)
    joined = dice_join(encoder.encode(left), encoder.encode(right), SCHEMA.threshold)
    return set(zip(joined.left_index.tolist(), joined.right_index.tolist(), strict=True))


def test_the_misspelt_person_still_matches_the_holders_record(world: World) -> None:
    """Misspelt, every person of the world still matches its own record at the schema's threshold (so the
    demo's hit does not hang on one lucky name)."""
    misspelt = [demo_fuzzy.as_the_application_spells(p) for p in world.persons]
    exact = [person_fields(p) for p in world.persons]
    for asked, held in zip(misspelt, exact, strict=True):
        assert asked["surname"] != held["surname"]
        assert asked["address_1"] != held["address_1"]
    assert {(n, n) for n in range(len(exact))} <= _matches(misspelt, exact)


def test_the_demo_asks_about_someone_the_police_hold_and_someone_nobody_holds(store: PartnerStore,
                                                                               world: World) -> None:
    held, nobody = demo_fuzzy.subjects(world.scenarios())
    records = filter_records(store, _people(world), profile=PROFILES[w.POLICE])
    police = next(r for r in records if r.ref == held)
    assert "police_incidents" in police.categories
    assert not police.confidential
    assert not police.minor
    assert not any(r.subject == nobody for rs in world.records.values() for r in rs)
    # among everyone the filter holders enrol, the director matches only the director, the other nobody
    enrolled = [world.person(ref) for ref in sorted({r.subject for system in demo_fuzzy.FILTER_HOLDERS
                                                     for r in world.records[system]} & set(_people(world)))]
    asked = [demo_fuzzy.as_the_application_spells(world.person(ref)) for ref in (held, nobody)]
    assert _matches(asked, [person_fields(p) for p in enrolled]) == {
        (0, next(n for n, p in enumerate(enrolled) if p.subject_ref == held))}
    request = demo_fuzzy.discovery_request(_people(world), [held, nobody])
    assert len(request.subjects) == 2
    assert np.unique([s.clk for s in request.subjects]).size == 2
