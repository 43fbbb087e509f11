"""The synthetic world is deterministic, valid, consistent with the register, and holds every DOMAIN.md case
where the scenarios expect it."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors import categories as c
from connectors import world as w
from connectors.profiles import PROFILES
from connectors.world import SCENARIOS, World, age_on, build_world, eleven_test

REGISTER = Path(__file__).resolve().parents[3] / "gateway" / "data" / "register.yaml"


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2025)


@pytest.fixture(scope="module")
def register() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(REGISTER.read_text())
    return loaded


def _categories(world: World, system: str, ref: str) -> set[str]:
    return {r.category for r in world.records_of(system, ref)}


# -- determinism ---------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_data(world: World) -> None:
    assert build_world(2025).canonical_json() == world.canonical_json()
    assert build_world(2025).digest() == world.digest()


def test_another_seed_gives_another_world(world: World) -> None:
    other = build_world(7)
    assert other.digest() != world.digest()
    assert {p.bsn for p in other.persons}.isdisjoint(p.bsn for p in world.persons[:5])
    assert set(other.scenarios()[w.BIBOB_APPLICANT]).isdisjoint(world.scenarios()[w.BIBOB_APPLICANT])


def test_generation_is_fast_and_modest() -> None:
    """Fast in this process's CPU time (about 0.1 s): wall time is what a loaded machine stretches (1.3 s with
    two busy neighbours on two cores), not what generating costs."""
    started = time.process_time()
    generated = build_world(11)
    assert time.process_time() - started < 1.0
    assert 400 <= len(generated.persons) < 420
    assert 150 <= len(generated.companies) < 160


def test_nothing_depends_on_todays_date(world: World) -> None:
    """Ages are relative to the world's reference date, so the data is the same tomorrow."""
    assert all(p.date_of_birth < w.REFERENCE_DATE for p in world.persons)
    adults = [p for p in world.persons if not p.is_minor]
    assert all(18 <= age_on(p.date_of_birth, w.REFERENCE_DATE) <= 85 for p in adults)


# -- identifiers -----------------------------------------------------------------------------------
def test_bsns_pass_the_eleven_test_and_are_unique(world: World) -> None:
    bsns = [p.bsn for p in world.persons]
    assert all(eleven_test(bsn) for bsn in bsns)
    assert len(set(bsns)) == len(bsns)


def test_companies_have_kvk_numbers_and_rsins(world: World) -> None:
    kvk = [co.kvk_number for co in world.companies]
    assert all(len(n) == 8 and n.isdigit() for n in kvk)
    assert len(set(kvk)) == len(kvk)
    assert all(eleven_test(co.rsin, bsn=False) for co in world.companies)
    assert all(co.trade_name and co.legal_form and len(co.sbi_code) == 4 for co in world.companies)


def test_eleven_test_rejects_a_wrong_check_digit() -> None:
    assert eleven_test("111222333")
    assert not eleven_test("111222334")
    assert not eleven_test("12345678")


def test_subject_refs_are_opaque_stable_and_unique(world: World) -> None:
    refs = [p.subject_ref for p in world.persons] + [co.subject_ref for co in world.companies]
    assert len(set(refs)) == len(refs)
    assert all(ref.startswith("subj-") and len(ref) == 29 for ref in refs)
    assert not any(p.bsn in p.subject_ref for p in world.persons)
    person = world.persons[0]
    assert w.subject_ref(2025, "bsn", person.bsn) == person.subject_ref
    assert w.subject_ref(7, "bsn", person.bsn) != person.subject_ref


def test_records_carry_no_identifier_except_in_their_own_registers(world: World) -> None:
    """BSNs never appear in any record: subjects are refs, and directorships point to refs."""
    everything = world.canonical_json().decode()
    records = str([r.fields for rs in world.records.values() for r in rs])
    assert not any(p.bsn in records for p in world.persons)
    assert all(p.bsn in everything for p in world.persons[:3])  # the persons table itself holds them


# -- categories ------------------------------------------------------------------------------------
def test_category_constants_equal_the_register_vocabulary(register: dict[str, Any]) -> None:
    assert set(register["categories"]) == c.ALL_CATEGORIES


def test_every_record_is_tagged_with_a_category_its_holder_holds(world: World) -> None:
    assert set(world.records) == set(PROFILES)
    for system, records in world.records.items():
        held = {r.category for r in records}
        assert held <= PROFILES[system].holds, system
        assert held == PROFILES[system].holds, f"{system} holds no record of {PROFILES[system].holds - held}"


def test_record_types_map_to_one_category(world: World) -> None:
    for system, records in world.records.items():
        by_type: dict[str, set[str]] = {}
        for record in records:
            by_type.setdefault(record.record_type, set()).add(record.category)
        assert all(len(cats) == 1 for cats in by_type.values()), (system, by_type)


def test_profiles_hold_what_the_register_lets_their_role_supply(register: dict[str, Any]) -> None:
    """Every category the register says a participant supplies for a purpose exists at its simulator."""
    partnerships: dict[str, dict[str, Any]] = register["partnerships"]
    checked = 0
    for partnership in partnerships.values():
        roles = {p["role"]: p["systems"] for p in partnership["participants"]}
        for purpose in partnership["purposes"].values():
            for role, supplied in purpose["supplies"].items():
                for system in roles.get(role, []):
                    if system in PROFILES:
                        assert set(supplied) <= PROFILES[system].holds, (system, supplied)
                        checked += 1
    assert checked >= 10
    organisations: dict[str, dict[str, list[str]]] = register["organisations"]
    for profile in PROFILES.values():
        assert profile.system in organisations[profile.organisation]["systems"]


# -- the DOMAIN.md cases -------------------------------------------------------------------------------
def test_every_scenario_is_named_and_described(world: World) -> None:
    assert set(world.scenarios()) == set(SCENARIOS)
    assert w.scenarios(2025) == world.scenarios()
    known = {p.subject_ref for p in world.persons} | {co.subject_ref for co in world.companies}
    assert all(set(refs) <= known for refs in world.scenarios().values())


def test_malafide_network_shares_a_nominee_and_one_company_meets_dissolution_grounds(world: World) -> None:
    nominee, *companies = world.scenarios()[w.MALAFIDE_NETWORK]
    assert len(companies) == 3
    assert {co for co, p, _ in world.directorships if p == nominee} >= set(companies)
    assert len({world.company(co).address for co in companies}) == 1  # one letterbox address
    assert all("tax_debts" in _categories(world, w.TAX, co) for co in companies)
    stopped = world.scenarios()[w.MALAFIDE_DISSOLUTION][0]
    assert stopped in companies
    grounds = [r for r in world.records_of(w.TAX, stopped) if r.category == c.TAX_COMPLIANCE]
    assert grounds[0].fields["meets_dissolution_conditions"] is True
    assert grounds[0].fields["missing_returns"]
    assert {c.COMPANY_REGISTRATION, c.DIRECTORSHIPS} <= _categories(world, w.KVK, stopped)


def test_bibob_applicant_has_hits_at_every_holder(world: World) -> None:
    company, director_a, director_b = world.scenarios()[w.BIBOB_APPLICANT]
    assert {(company, director_a), (company, director_b)} <= {(co, p) for co, p, _ in world.directorships}
    assert {c.IDENTITY, c.ADDRESS, c.COMPANY_REGISTRATION, c.DIRECTORSHIPS} <= _categories(world, w.KVK, company)
    assert {c.TAX_DEBTS, c.TAX_COMPLIANCE, c.INCOME} <= _categories(world, w.TAX, company)
    assert {c.PERMITS, c.BIBOB_FILES} <= _categories(world, w.MUNICIPALITY, company)
    assert {c.POLICE_INCIDENTS, c.CRIMINAL_INTELLIGENCE} <= _categories(world, w.POLICE, director_a)
    assert c.CONVICTIONS in _categories(world, w.OM, director_a)
    assert c.ONGOING_INVESTIGATION in _categories(world, w.FIOD, company)
    assert _categories(world, w.POLICE, director_b) == set()


def test_unexplained_wealth_subject(world: World) -> None:
    wealthy = world.scenarios()[w.UNEXPLAINED_WEALTH][0]
    incomes = [r.fields["declared_income_eur"] for r in world.records_of(w.TAX, wealthy) if r.category == c.INCOME]
    assert incomes
    assert max(incomes) < 30_000
    assert any(r.fields["value_band"] == "1M-2M" for r in world.records_of(w.TAX, wealthy) if r.category == c.ASSETS)
    assert len([1 for _, p, _ in world.directorships if p == wealthy]) >= 2
    assert c.POLICE_INCIDENTS in _categories(world, w.POLICE, wealthy)


def test_minor_is_fifteen_with_police_school_and_care_records(world: World) -> None:
    minor = world.person(world.scenarios()[w.MINOR][0])
    assert minor.is_minor
    assert age_on(minor.date_of_birth, w.REFERENCE_DATE) == 15
    assert age_on(minor.date_of_birth, date(2026, 11, 30)) == 15  # still 15 on the scenario tests' clock
    assert c.POLICE_INCIDENTS in _categories(world, w.POLICE, minor.subject_ref)
    assert {c.SCHOOL_ABSENCE, c.CARE_INVOLVEMENT} <= _categories(world, w.MUNICIPALITY, minor.subject_ref)


def test_bank_customer_has_flagged_transactions_and_investigation_hits(world: World) -> None:
    customer = world.scenarios()[w.BANK_CUSTOMER][0]
    assert {c.BANK_ACCOUNTS, c.FLAGGED_TRANSACTIONS} <= _categories(world, w.BANK, customer)
    assert c.ONGOING_INVESTIGATION in _categories(world, w.FIOD, customer)
    assert c.ONGOING_INVESTIGATION in _categories(world, w.POLICE, customer)


def test_police_confidential_subject_has_records_the_police_refuses_to_share(world: World) -> None:
    secret = world.scenarios()[w.POLICE_CONFIDENTIAL][0]
    assert secret in world.confidential[w.POLICE]
    assert c.POLICE_INCIDENTS in _categories(world, w.POLICE, secret)
    assert world.confidential == {w.POLICE: {secret}}


def test_no_records_subject_is_a_no_hit_everywhere(world: World) -> None:
    nobody = world.scenarios()[w.NO_RECORDS][0]
    assert not any(r.subject == nobody for records in world.records.values() for r in records)
