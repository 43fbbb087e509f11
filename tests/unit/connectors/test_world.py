"""The synthetic world is deterministic, valid, and holds the DOMAIN.md cases where scenarios expect them."""

from __future__ import annotations

import pytest

from connectors.world import SCENARIOS, World, build_world


def _eleven_test(number: str) -> bool:
    digits = [int(d) for d in number]
    return len(digits) == 9 and (sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True))
                                 - digits[8]) % 11 == 0


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2025)


def test_same_seed_same_world_and_other_seed_other_world(world: World) -> None:
    again = build_world(2025)
    assert again.persons == world.persons
    assert again.records == world.records
    other = build_world(7)
    assert other.persons != world.persons


def test_persons_have_valid_bsns_and_companies_kvk_numbers(world: World) -> None:
    assert all(_eleven_test(p.bsn) for p in world.persons)
    assert all(len(c.kvk_number) == 8 and c.kvk_number.isdigit() for c in world.companies)
    assert all(_eleven_test(c.rsin) for c in world.companies)


def test_subject_refs_are_opaque_and_unique(world: World) -> None:
    refs = [p.subject_ref for p in world.persons] + [c.subject_ref for c in world.companies]
    assert len(set(refs)) == len(refs)
    assert not any(p.bsn in p.subject_ref for p in world.persons)


def test_every_scenario_exists(world: World) -> None:
    assert set(world.scenarios()) == set(SCENARIOS)


def _categories(world: World, system: str, ref: str) -> set[str]:
    return {r.category for r in world.records.get(system, []) if r.subject == ref}


def test_bibob_applicant_has_hits_at_every_holder(world: World) -> None:
    company, director_a, _director_b = world.scenarios()["bibob-applicant"]
    assert {"identity", "company_registration", "directorships"} <= _categories(world, "kvk-handelsregister", company)
    assert {"tax_debts", "tax_compliance", "income"} <= _categories(world, "belastingdienst-ivs", company)
    assert "police_incidents" in _categories(world, "politie-bvh", director_a)
    assert "criminal_intelligence" in _categories(world, "politie-bvh", director_a)
    assert "convictions" in _categories(world, "om-compas", director_a)
    assert "ongoing_investigation" in _categories(world, "fiod-ois", company)


def test_malafide_network_shares_a_nominee_and_one_company_meets_dissolution_grounds(world: World) -> None:
    nominee, *companies = world.scenarios()["malafide-network"]
    assert {c for c, p, _ in world.directorships if p == nominee} >= set(companies)
    stopped = world.scenarios()["malafide-dissolution"][0]
    grounds = [r for r in world.records["belastingdienst-ivs"]
               if r.subject == stopped and r.category == "tax_compliance"]
    assert grounds[0].fields["meets_dissolution_conditions"] is True


def test_unexplained_wealth_minor_bank_and_confidential_cases(world: World) -> None:
    wealthy = world.scenarios()["unexplained-wealth"][0]
    assert {"income", "assets"} <= _categories(world, "belastingdienst-ivs", wealthy)
    minor = world.scenarios()["minor"][0]
    assert world.person(minor).is_minor
    assert {"school_absence", "care_involvement"} <= _categories(world, "gemeente-amsterdam-vth", minor)
    customer = world.scenarios()["bank-customer"][0]
    assert {"bank_accounts", "flagged_transactions"} <= _categories(world, "abn-amro-fec", customer)
    secret = world.scenarios()["police-confidential"][0]
    assert secret in world.confidential["politie-bvh"]
    nobody = world.scenarios()["no-records"][0]
    assert not any(r.subject == nobody for records in world.records.values() for r in records)
