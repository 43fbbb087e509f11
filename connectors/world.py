"""A deterministic synthetic world: persons, companies, directorships and the DOMAIN.md cases.

Why one world for all simulators: every partner's database is a slice of the same population, so a
subject reference means the same subject at the police, the KvK and the bank — as a pseudonym will once
the pseudonym service is in place. Same seed → byte-identical world (Faker nl_NL and ``random.Random``
seeded once, consumed in a fixed order).

``subject_ref`` is an opaque HMAC of the identifier, never the identifier itself, so no BSN or KvK number
needs to travel between gateway and partners.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from faker import Faker

REFERENCE_DATE = date(2026, 11, 1)


@dataclass(frozen=True)
class Person:
    subject_ref: str
    bsn: str
    name: str
    date_of_birth: date
    address: str

    @property
    def is_minor(self) -> bool:
        return _age(self.date_of_birth) < 18


@dataclass(frozen=True)
class Company:
    subject_ref: str
    kvk_number: str
    rsin: str
    trade_name: str
    legal_form: str
    sbi_code: str
    founded: date
    address: str


@dataclass(frozen=True)
class Record:
    """One record as a partner holds it, tagged with a register data category."""

    record_id: str
    subject: str
    record_type: str
    category: str
    fields: dict[str, Any]


@dataclass
class World:
    seed: int
    persons: list[Person] = field(default_factory=list)
    companies: list[Company] = field(default_factory=list)
    directorships: list[tuple[str, str, str]] = field(default_factory=list)  # (company ref, person ref, role)
    scenario_refs: dict[str, list[str]] = field(default_factory=dict)
    records: dict[str, list[Record]] = field(default_factory=dict)  # system id -> records
    confidential: dict[str, set[str]] = field(default_factory=dict)  # system id -> refused subjects

    def person(self, ref: str) -> Person:
        return next(p for p in self.persons if p.subject_ref == ref)

    def company(self, ref: str) -> Company:
        return next(c for c in self.companies if c.subject_ref == ref)

    def scenarios(self) -> dict[str, list[str]]:
        """Scenario name -> subject refs (see ``SCENARIOS`` for what each is)."""
        return dict(self.scenario_refs)


SCENARIOS = {
    "malafide-network": "three companies sharing one nominee director; [0] is the nominee, [1..3] the companies",
    "malafide-dissolution": "the company of the network that stopped filing and meets dissolution grounds",
    "bibob-applicant": "permit applicant company [0] with directors [1] (police incidents, conviction) and [2]",
    "unexplained-wealth": "a person with low declared income, high assets and directorships",
    "minor": "a 15-year-old with a police incident, school absence and care involvement",
    "bank-customer": "a person with bank accounts and flagged transactions",
    "police-confidential": "a person the police refuses to share about (investigation confidentiality)",
    "no-records": "a person no partner holds records about",
}


def _age(born: date) -> int:
    return REFERENCE_DATE.year - born.year - ((REFERENCE_DATE.month, REFERENCE_DATE.day) < (born.month, born.day))


def subject_ref(seed: int, kind: str, identifier: str) -> str:
    key = hashlib.sha256(f"wgs-world-{seed}".encode()).digest()
    return "subj-" + hmac.new(key, f"{kind}:{identifier}".encode(), hashlib.sha256).hexdigest()[:24]


def _kvk_number(rng: random.Random) -> str:
    return f"{rng.randrange(10_000_000, 99_999_999)}"


def _rsin(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(8)]
        total = sum(d * w for d, w in zip(digits, range(9, 1, -1), strict=True))
        check = total % 11
        if check < 10 and digits[0] != 0:
            return "".join(map(str, digits)) + str(check)


class _Builder:
    def __init__(self, seed: int, persons: int, companies: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.fake = Faker("nl_NL")
        self.fake.seed_instance(seed)
        self.world = World(seed=seed)
        self.n_persons = persons
        self.n_companies = companies
        self.counter = 0

    def rid(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.seed}-{self.counter:06d}"

    def add(self, system: str, subject: str, record_type: str, category: str, fields: dict[str, Any]) -> None:
        self.world.records.setdefault(system, []).append(
            Record(self.rid(record_type), subject, record_type, category, fields))

    def person(self, age: int | None = None) -> Person:
        bsn = self.fake.ssn()
        if age is None:
            born = self.fake.date_of_birth(minimum_age=18, maximum_age=85)
        else:
            born = REFERENCE_DATE - timedelta(days=age * 365 + self.rng.randrange(30, 300))
        person = Person(subject_ref(self.seed, "bsn", bsn), bsn, self.fake.name(), born,
                        self.fake.address().replace("\n", ", "))
        self.world.persons.append(person)
        return person

    def company(self) -> Company:
        kvk = _kvk_number(self.rng)
        company = Company(subject_ref(self.seed, "kvk", kvk), kvk, _rsin(self.rng), self.fake.company(),
                          self.rng.choice(["BV", "VOF", "Eenmanszaak", "Stichting"]),
                          self.rng.choice(["4120", "5610", "6810", "4791", "9602", "4941"]),
                          self.fake.date_between(date(1990, 1, 1), date(2025, 6, 1)),
                          self.fake.address().replace("\n", ", "))
        self.world.companies.append(company)
        return company

    def register_company(self, company: Company, status: str = "active") -> None:
        self.add("kvk-handelsregister", company.subject_ref, "trade-name", "identity",
                 {"trade_name": company.trade_name, "legal_form": company.legal_form})
        self.add("kvk-handelsregister", company.subject_ref, "registered-address", "address",
                 {"address": company.address})
        self.add("kvk-handelsregister", company.subject_ref, "registration", "company_registration",
                 {"kvk_number": company.kvk_number, "status": status, "founded": company.founded.isoformat(),
                  "sbi_code": company.sbi_code})

    def director(self, company: Company, person: Person, role: str = "bestuurder") -> None:
        self.world.directorships.append((company.subject_ref, person.subject_ref, role))
        self.add("kvk-handelsregister", company.subject_ref, "directorship", "directorships",
                 {"director": person.subject_ref, "role": role, "since": company.founded.isoformat()})
        self.add("kvk-handelsregister", person.subject_ref, "directorship", "directorships",
                 {"company": company.subject_ref, "role": role, "since": company.founded.isoformat()})

    def build(self) -> World:
        rng, fake = self.rng, self.fake
        for _ in range(self.n_persons):
            self.person()
        for _ in range(self.n_companies):
            company = self.company()
            self.register_company(company)
            self.director(company, rng.choice(self.world.persons))
        self._background(rng, fake)
        self._scenarios()
        return self.world

    def _background(self, rng: random.Random, fake: Faker) -> None:
        """Ordinary records spread over the population, so hits are not only the scenario subjects."""
        for person in self.world.persons:
            self.add("gemeente-amsterdam-vth", person.subject_ref, "basisregistratie", "identity",
                     {"name": person.name, "date_of_birth": person.date_of_birth.isoformat()})
            self.add("gemeente-amsterdam-vth", person.subject_ref, "registered-address", "address",
                     {"address": person.address})
            if rng.random() < 0.6:
                self.add("belastingdienst-ivs", person.subject_ref, "income-assessment", "income",
                         {"year": 2025, "declared_income_eur": rng.randrange(18_000, 95_000, 500)})
            if rng.random() < 0.08:
                self.add("politie-bvh", person.subject_ref, "incident", "police_incidents",
                         {"date": fake.date_between(date(2022, 1, 1), date(2026, 10, 1)).isoformat(),
                          "kind": rng.choice(["overlast", "verkeer", "diefstal", "mishandeling"])})
            if rng.random() < 0.3:
                self.add("abn-amro-fec", person.subject_ref, "account", "bank_accounts",
                         {"iban_suffix": f"{rng.randrange(1000, 9999)}", "status": "open"})
        for company in self.world.companies:
            if rng.random() < 0.1:
                self.add("belastingdienst-ivs", company.subject_ref, "tax-debt", "tax_debts",
                         {"band": rng.choice(["<10k", "10k-50k"]), "age_months": rng.randrange(1, 24)})
            if rng.random() < 0.1:
                self.add("gemeente-amsterdam-vth", company.subject_ref, "permit", "permits",
                         {"kind": rng.choice(["horeca", "evenement", "bouw"]), "status": "granted"})

    def _scenarios(self) -> None:
        refs = self.world.scenario_refs
        # Malafide company network (case 1): one nominee director, three companies, one stopped filing.
        nominee = self.person()
        network = [self.company() for _ in range(3)]
        for company in network:
            self.register_company(company)
            self.director(company, nominee, "bestuurder (nominee)")
        stopped = network[0]
        self.add("belastingdienst-ivs", stopped.subject_ref, "filing-behaviour", "tax_compliance",
                 {"missing_returns": ["2023", "2024", "2025"], "dissolution_grounds": "BW 2:19a: no returns, "
                  "no activity, no assets", "meets_dissolution_conditions": True})
        self.add("belastingdienst-ivs", stopped.subject_ref, "tax-debt", "tax_debts",
                 {"band": "50k-250k", "age_months": 30})
        refs["malafide-network"] = [nominee.subject_ref, *(c.subject_ref for c in network)]
        refs["malafide-dissolution"] = [stopped.subject_ref]

        # Bibob applicant (case 2): company and its directors.
        applicant = self.company()
        self.register_company(applicant)
        director_a, director_b = self.person(), self.person()
        self.director(applicant, director_a)
        self.director(applicant, director_b, "gevolmachtigde")
        self.add("gemeente-amsterdam-vth", applicant.subject_ref, "permit-application", "permits",
                 {"kind": "exploitatievergunning horeca", "status": "under Bibob review"})
        self.add("gemeente-amsterdam-vth", applicant.subject_ref, "bibob-file", "bibob_files",
                 {"year": 2021, "advice": "mindere mate van gevaar"})
        self.add("belastingdienst-ivs", applicant.subject_ref, "tax-debt", "tax_debts",
                 {"band": "10k-50k", "age_months": 14})
        self.add("belastingdienst-ivs", applicant.subject_ref, "filing-behaviour", "tax_compliance",
                 {"missing_returns": ["2024"], "meets_dissolution_conditions": False})
        self.add("belastingdienst-ivs", applicant.subject_ref, "income-assessment", "income",
                 {"year": 2025, "declared_profit_eur": 12_000})
        self.add("politie-bvh", director_a.subject_ref, "incident", "police_incidents",
                 {"date": "2025-08-14", "kind": "witwassen (melding)", "summary": "cash found in vehicle"})
        self.add("politie-bvh", director_a.subject_ref, "cie-note", "criminal_intelligence",
                 {"reliability": "B2", "note": "CIE information (never shared)"})
        self.add("om-compas", director_a.subject_ref, "conviction", "convictions",
                 {"year": 2019, "offence": "Opiumwet art. 3", "sentence": "werkstraf"})
        self.add("fiod-ois", applicant.subject_ref, "investigation", "ongoing_investigation",
                 {"running": True})
        refs["bibob-applicant"] = [applicant.subject_ref, director_a.subject_ref, director_b.subject_ref]

        # Unexplained wealth (case 3).
        wealthy = self.person()
        self.add("belastingdienst-ivs", wealthy.subject_ref, "income-assessment", "income",
                 {"year": 2025, "declared_income_eur": 21_500})
        self.add("belastingdienst-ivs", wealthy.subject_ref, "asset", "assets",
                 {"kind": "real estate", "value_band": "1M-2M", "count": 3})
        self.add("belastingdienst-ivs", wealthy.subject_ref, "asset", "assets",
                 {"kind": "vehicle", "value_band": "100k-250k", "count": 2})
        self.add("politie-bvh", wealthy.subject_ref, "incident", "police_incidents",
                 {"date": "2024-03-02", "kind": "bedreiging"})
        for company in self.world.companies[:2]:
            self.director(company, wealthy)
        refs["unexplained-wealth"] = [wealthy.subject_ref]

        # A minor (case 5).
        minor = self.person(age=15)
        self.add("politie-bvh", minor.subject_ref, "incident", "police_incidents",
                 {"date": "2026-05-20", "kind": "drugskoerier (aangehouden)"})
        self.add("gemeente-amsterdam-vth", minor.subject_ref, "school-absence", "school_absence",
                 {"school_year": "2025-2026", "unauthorised_hours": 86})
        self.add("gemeente-amsterdam-vth", minor.subject_ref, "care-involvement", "care_involvement",
                 {"service": "jeugdhulp", "since": "2025-11"})
        refs["minor"] = [minor.subject_ref]

        # Bank customer with flagged transactions (case 4).
        customer = self.person()
        self.add("abn-amro-fec", customer.subject_ref, "account", "bank_accounts",
                 {"iban_suffix": "4471", "status": "open"})
        self.add("abn-amro-fec", customer.subject_ref, "flagged-transaction", "flagged_transactions",
                 {"date": "2026-09-03", "amount_band": "10k-50k", "pattern": "structuring cash deposits"})
        self.add("fiod-ois", customer.subject_ref, "investigation", "ongoing_investigation", {"running": True})
        self.add("politie-bvh", customer.subject_ref, "investigation", "ongoing_investigation", {"running": True})
        refs["bank-customer"] = [customer.subject_ref]

        # Police refuses (S9): incidents exist, but an investigation's confidentiality comes first.
        secret = self.person()
        self.add("politie-bvh", secret.subject_ref, "incident", "police_incidents",
                 {"date": "2026-02-11", "kind": "ondermijning"})
        self.world.confidential.setdefault("politie-bvh", set()).add(secret.subject_ref)
        refs["police-confidential"] = [secret.subject_ref]

        nobody = self.person()
        self.world.records["gemeente-amsterdam-vth"] = [
            r for r in self.world.records["gemeente-amsterdam-vth"] if r.subject != nobody.subject_ref]
        refs["no-records"] = [nobody.subject_ref]


def build_world(seed: int = 2025, persons: int = 400, companies: int = 150) -> World:
    """Generate the world for ``seed`` (deterministic)."""
    return _Builder(seed, persons, companies).build()
