"""A deterministic synthetic world: persons, companies, directorships, each partner's records, and the
DOMAIN.md cases as named scenarios.

Why one world for all simulators: every partner's database is a slice of the same population, so a
subject reference means the same subject at the police, the KvK and the bank — as a pseudonym will once
partners enrol through the pseudonym service. Same seed → byte-identical world (see ``World.canonical_json``):
Faker nl_NL and ``random.Random`` are seeded once and consumed in a fixed order, and no value depends on
today's date (everything is relative to ``REFERENCE_DATE``). Byte-identity holds for one Faker version;
Faker's word lists may change between releases.

``subject_ref`` is an opaque keyed hash (HMAC-SHA256) of the identifier, never the identifier itself, so no
BSN or KvK number needs to travel between gateway and partners.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, Final

from faker import Faker

from connectors import categories as c

REFERENCE_DATE: Final = date(2026, 11, 1)
"""The world's "today": ages, founding dates and record dates are relative to it, never to the clock."""

POLICE: Final = "politie-bvh"
TAX: Final = "belastingdienst-ivs"
KVK: Final = "kvk-handelsregister"
MUNICIPALITY: Final = "gemeente-amsterdam-vth"
FIOD: Final = "fiod-ois"
BANK: Final = "abn-amro-fec"
OM: Final = "om-compas"

# Scenario names (keys of ``World.scenarios()``); ``SCENARIOS`` says what each list holds, in order.
MALAFIDE_NETWORK: Final = "malafide-network"
MALAFIDE_DISSOLUTION: Final = "malafide-dissolution"
BIBOB_APPLICANT: Final = "bibob-applicant"
UNEXPLAINED_WEALTH: Final = "unexplained-wealth"
MINOR: Final = "minor"
BANK_CUSTOMER: Final = "bank-customer"
POLICE_CONFIDENTIAL: Final = "police-confidential"
NO_RECORDS: Final = "no-records"

SCENARIOS: Final = {
    MALAFIDE_NETWORK: "DOMAIN case 1: [0] a nominee director, [1..3] three companies he directs, registered at one "
                      "letterbox address; [1] stopped filing (see malafide-dissolution), all three owe tax",
    MALAFIDE_DISSOLUTION: "[0] the company of the network that stopped filing: tax_compliance with missing "
                          "returns and dissolution grounds (BW 2:19a) at the Belastingdienst (S2)",
    BIBOB_APPLICANT: "DOMAIN case 2 / S1: [0] permit applicant company (KvK registration, permit application and "
                     "an earlier Bibob file, tax debts, FIOD investigation), [1] its director with police incidents, "
                     "a CIE note and an OM conviction, [2] a second director without records",
    UNEXPLAINED_WEALTH: "DOMAIN case 3: [0] a person with low declared income, high registered assets, "
                        "directorships of two companies and a police incident",
    MINOR: "DOMAIN case 5 / S4, S5: [0] a 15-year-old with a police incident, school absence and care "
           "involvement at the municipality",
    BANK_CUSTOMER: "DOMAIN case 4 / S10: [0] a bank customer with accounts and flagged transactions, under "
                   "investigation at the FIOD and the police",
    POLICE_CONFIDENTIAL: "S9: [0] a person with police incidents for whom the police refuses to answer "
                         "(investigation-confidentiality)",
    NO_RECORDS: "[0] a person no partner holds any record about (no-hit everywhere)",
}


@dataclass(frozen=True)
class Address:
    street: str
    postcode: str
    city: str

    def fields(self) -> dict[str, str]:
        return {"street": self.street, "postcode": self.postcode, "city": self.city}

    def __str__(self) -> str:
        return f"{self.street}, {self.postcode} {self.city}"


@dataclass(frozen=True)
class Person:
    subject_ref: str
    bsn: str
    name: str
    date_of_birth: date
    postal_address: Address

    @property
    def address(self) -> str:
        return str(self.postal_address)

    @property
    def is_minor(self) -> bool:
        return age_on(self.date_of_birth, REFERENCE_DATE) < 18


@dataclass(frozen=True)
class Company:
    subject_ref: str
    kvk_number: str
    rsin: str
    trade_name: str
    legal_form: str
    sbi_code: str
    founded: date
    postal_address: Address

    @property
    def address(self) -> str:
        return str(self.postal_address)


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
    """The generated population and every partner's records; read-only once built."""

    seed: int
    persons: list[Person] = field(default_factory=list)
    companies: list[Company] = field(default_factory=list)
    directorships: list[tuple[str, str, str]] = field(default_factory=list)  # (company ref, person ref, role)
    scenario_refs: dict[str, list[str]] = field(default_factory=dict)
    records: dict[str, list[Record]] = field(default_factory=dict)  # system id -> records
    confidential: dict[str, set[str]] = field(default_factory=dict)  # system id -> subjects it refuses about
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)
    _identifiers: dict[str, tuple[str, str]] | None = field(default=None, init=False, repr=False, compare=False)

    def person(self, ref: str) -> Person:
        return next(p for p in self.persons if p.subject_ref == ref)

    def company(self, ref: str) -> Company:
        return next(co for co in self.companies if co.subject_ref == ref)

    def identifier_of(self, ref: str) -> tuple[str, str]:
        """(``bsn`` or ``kvk``, the number) behind a subject reference: what the partner itself knows."""
        if self._identifiers is None:
            self._identifiers = {p.subject_ref: ("bsn", p.bsn) for p in self.persons}
            self._identifiers.update({c.subject_ref: ("kvk", c.kvk_number) for c in self.companies})
        return self._identifiers[ref]

    def scenarios(self) -> dict[str, list[str]]:
        """Scenario name -> subject refs, in the order ``SCENARIOS`` describes."""
        return {name: list(refs) for name, refs in self.scenario_refs.items()}

    def records_of(self, system: str, subject: str) -> list[Record]:
        """What ``system`` holds about ``subject`` (for tests and fixtures; the simulators use their database)."""
        return [r for r in self.records.get(system, []) if r.subject == subject]

    def canonical_json(self) -> bytes:
        """The whole world as canonical JSON: the byte string "same seed → same data" is asserted on."""
        document = {
            "seed": self.seed, "persons": [asdict(p) for p in self.persons],
            "companies": [asdict(co) for co in self.companies], "directorships": self.directorships,
            "scenarios": self.scenario_refs,
            "records": {s: [asdict(r) for r in rs] for s, rs in sorted(self.records.items())},
            "confidential": {s: sorted(refs) for s, refs in sorted(self.confidential.items())},
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()

    def digest(self) -> str:
        """SHA-256 of ``canonical_json``: a partner database seeded from another world is re-seeded.
        Computed once; the world is not modified after ``build_world``."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.canonical_json()).hexdigest()
        return self._digest


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def subject_ref(seed: int, kind: str, identifier: str) -> str:
    """The world's opaque, stable reference for an identifier (``kind`` is ``bsn`` or ``kvk``)."""
    key = hashlib.sha256(f"wgs-world-{seed}".encode()).digest()
    return "subj-" + hmac.new(key, f"{kind}:{identifier}".encode(), hashlib.sha256).hexdigest()[:24]


def eleven_test(number: str, *, bsn: bool = True) -> bool:
    """The Dutch "11-proef" for 9-digit numbers; a BSN weighs its last digit -1, an RSIN the same way."""
    if len(number) != 9 or not number.isdigit():
        return False
    digits = [int(d) for d in number]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0 and (not bsn or number != "000000000")


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


class _Builder:
    """Draws the world in a fixed order; every random choice comes from ``rng`` or the seeded Faker."""

    def __init__(self, seed: int, persons: int, companies: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.fake = Faker("nl_NL")
        self.fake.seed_instance(seed)
        self.world = World(seed=seed)
        self.n_persons = persons
        self.n_companies = companies
        self.counter = 0
        self.used: set[str] = set()

    # -- identities -----------------------------------------------------------------------------
    def _unique(self, draw: Any) -> str:
        while True:
            value = str(draw())
            if value not in self.used:
                self.used.add(value)
                return value

    def _address(self) -> Address:
        return Address(self.fake.street_address(), self.fake.postcode(), self.fake.city())

    def _date(self, start: date, end: date) -> date:
        return start + timedelta(days=self.rng.randrange((end - start).days + 1))

    def person(self, age: int | None = None) -> Person:
        bsn = self._unique(self.fake.ssn)
        if age is None:
            born = self._date(_years_before(REFERENCE_DATE, 85), _years_before(REFERENCE_DATE, 18))
        else:  # exactly `age` today and still `age` a month from now
            born = self._date(_years_before(REFERENCE_DATE, age + 1) + timedelta(days=60),
                              _years_before(REFERENCE_DATE, age) - timedelta(days=1))
        person = Person(subject_ref(self.seed, "bsn", bsn), bsn, self.fake.name(), born, self._address())
        self.world.persons.append(person)
        return person

    def _rsin(self) -> str:
        while True:
            candidate = f"{self.rng.randrange(10_000_000, 99_999_999)}"
            check = sum(int(d) * w for d, w in zip(candidate, range(9, 1, -1), strict=True)) % 11
            if check < 10:
                return candidate + str(check)

    def company(self, address: Address | None = None) -> Company:
        kvk = self._unique(lambda: self.rng.randrange(10_000_000, 100_000_000))
        rsin = self._unique(self._rsin)
        company = Company(subject_ref(self.seed, "kvk", kvk), kvk, rsin, self.fake.company(),
                          self.rng.choice(["BV", "BV", "VOF", "Eenmanszaak", "Stichting"]),
                          self.rng.choice(["4120", "5610", "5630", "6810", "4791", "9602", "4941", "8610"]),
                          self._date(date(1990, 1, 1), date(2025, 6, 1)), address or self._address())
        self.world.companies.append(company)
        return company

    # -- records --------------------------------------------------------------------------------
    def add(self, system: str, subject: str, record_type: str, category: str, fields: dict[str, Any]) -> None:
        self.counter += 1
        record_id = f"{record_type}-{self.seed}-{self.counter:06d}"
        self.world.records.setdefault(system, []).append(Record(record_id, subject, record_type, category, fields))

    def resident(self, person: Person) -> None:
        """The municipality's basic registration (BRP) of a person."""
        self.add(MUNICIPALITY, person.subject_ref, "basisregistratie", c.IDENTITY,
                 {"name": person.name, "date_of_birth": person.date_of_birth.isoformat()})
        self.add(MUNICIPALITY, person.subject_ref, "registered-address", c.ADDRESS, person.postal_address.fields())

    def register_company(self, company: Company, status: str = "active") -> None:
        """The KvK's registration of a company: trade name, address, registration."""
        self.add(KVK, company.subject_ref, "trade-name", c.IDENTITY,
                 {"trade_name": company.trade_name, "legal_form": company.legal_form})
        self.add(KVK, company.subject_ref, "registered-address", c.ADDRESS, company.postal_address.fields())
        self.add(KVK, company.subject_ref, "registration", c.COMPANY_REGISTRATION,
                 {"kvk_number": company.kvk_number, "rsin": company.rsin, "status": status,
                  "founded": company.founded.isoformat(), "sbi_code": company.sbi_code,
                  "legal_form": company.legal_form})

    def director(self, company: Company, person: Person, role: str = "bestuurder") -> None:
        """A directorship, held at the KvK under both the company and the person; the person's functionary
        registration (identity) is added once."""
        if not any(p == person.subject_ref for _, p, _ in self.world.directorships):
            self.add(KVK, person.subject_ref, "functionary", c.IDENTITY,
                     {"name": person.name, "date_of_birth": person.date_of_birth.isoformat()})
        self.world.directorships.append((company.subject_ref, person.subject_ref, role))
        since = company.founded.isoformat()
        self.add(KVK, company.subject_ref, "directorship", c.DIRECTORSHIPS,
                 {"director": person.subject_ref, "role": role, "since": since})
        self.add(KVK, person.subject_ref, "directorship", c.DIRECTORSHIPS,
                 {"company": company.subject_ref, "role": role, "since": since})

    def incident(self, person: Person, day: date, kind: str, summary: str | None = None) -> None:
        fields: dict[str, Any] = {"date": day.isoformat(), "kind": kind}
        if summary:
            fields["summary"] = summary
        self.add(POLICE, person.subject_ref, "incident", c.POLICE_INCIDENTS, fields)

    def investigation(self, system: str, subject: str, record_type: str = "investigation") -> None:
        """Only whether an investigation runs: the category is hit/no-hit by nature."""
        self.add(system, subject, record_type, c.ONGOING_INVESTIGATION, {"running": True})

    # -- the world ------------------------------------------------------------------------------
    def build(self) -> World:
        population = [self.person(age=self.rng.randrange(4, 18) if self.rng.random() < 0.05 else None)
                      for _ in range(self.n_persons)]
        adults = [p for p in population if not p.is_minor]
        for _ in range(self.n_companies):
            company = self.company()
            self.register_company(company, "active" if self.rng.random() < 0.93 else "dissolved")
            self.director(company, self.rng.choice(adults))
        self._background(population)
        self._scenarios()
        return self.world

    def _background(self, population: list[Person]) -> None:
        """Ordinary records over the population, so that hits are not only the scenario subjects."""
        rng = self.rng
        for person in population:
            self.resident(person)
            if person.is_minor:
                if rng.random() < 0.2:
                    self.add(MUNICIPALITY, person.subject_ref, "school-absence", c.SCHOOL_ABSENCE,
                             {"school_year": "2025-2026", "unauthorised_hours": rng.randrange(8, 60)})
                continue
            if rng.random() < 0.6:
                self.add(TAX, person.subject_ref, "income-assessment", c.INCOME,
                         {"year": 2025, "declared_income_eur": rng.randrange(18_000, 95_000, 500)})
            if rng.random() < 0.15:
                self.add(TAX, person.subject_ref, "asset", c.ASSETS,
                         {"kind": "real estate", "value_band": rng.choice(["250k-500k", "500k-1M"]), "count": 1})
            if rng.random() < 0.08:
                self.incident(person, self._date(date(2022, 1, 1), date(2026, 10, 1)),
                              rng.choice(["overlast", "verkeer", "diefstal", "mishandeling"]))
            if rng.random() < 0.01:
                self.add(POLICE, person.subject_ref, "cie-note", c.CRIMINAL_INTELLIGENCE,
                         {"reliability": rng.choice(["A1", "B2", "C3"]), "note": "CIE information (never shared)"})
            if rng.random() < 0.01:
                self.investigation(OM, person.subject_ref, "pending-case")
            if rng.random() < 0.03:
                self.add(OM, person.subject_ref, "conviction", c.CONVICTIONS,
                         {"year": rng.randrange(2010, 2026), "sentence": rng.choice(["boete", "werkstraf"]),
                          "offence": rng.choice(["WvSr art. 310", "WVW art. 8", "WvSr art. 300"])})
            if rng.random() < 0.3:
                self.add(BANK, person.subject_ref, "account", c.BANK_ACCOUNTS,
                         {"iban_suffix": f"{rng.randrange(1000, 9999)}", "kind": "betaalrekening", "status": "open"})
            if rng.random() < 0.005:
                self.add(BANK, person.subject_ref, "flagged-transaction", c.FLAGGED_TRANSACTIONS,
                         {"date": self._date(date(2025, 1, 1), date(2026, 10, 1)).isoformat(),
                          "amount_band": "1k-10k", "pattern": "cash deposits"})
        for company in self.world.companies:
            if rng.random() < 0.1:
                self.add(TAX, company.subject_ref, "tax-debt", c.TAX_DEBTS,
                         {"band": rng.choice(["<10k", "10k-50k"]), "age_months": rng.randrange(1, 24)})
            if rng.random() < 0.1:
                self.add(MUNICIPALITY, company.subject_ref, "permit", c.PERMITS,
                         {"kind": rng.choice(["horeca", "evenement", "bouw"]), "status": "granted"})
            if rng.random() < 0.02:
                self.investigation(FIOD, company.subject_ref)

    def _scenarios(self) -> None:
        refs = self.world.scenario_refs

        # Case 1, malafide company network: one nominee, three letterbox companies, one stopped filing.
        nominee = self.person()
        self.resident(nominee)
        letterbox = self._address()
        network = [self.company(letterbox) for _ in range(3)]
        for company in network:
            self.register_company(company)
            self.director(company, nominee, "bestuurder (nominee)")
            self.add(TAX, company.subject_ref, "tax-debt", c.TAX_DEBTS,
                     {"band": "10k-50k", "age_months": self.rng.randrange(6, 30)})
        stopped = network[0]
        self.add(TAX, stopped.subject_ref, "filing-behaviour", c.TAX_COMPLIANCE,
                 {"missing_returns": ["2023", "2024", "2025"], "meets_dissolution_conditions": True,
                  "dissolution_grounds": "BW 2:19a: no returns filed, no activity, no assets"})
        refs[MALAFIDE_NETWORK] = [nominee.subject_ref, *(co.subject_ref for co in network)]
        refs[MALAFIDE_DISSOLUTION] = [stopped.subject_ref]

        # Case 2, Bibob applicant: the company and its directors.
        applicant = self.company()
        self.register_company(applicant)
        director_a, director_b = self.person(), self.person()
        for person in (director_a, director_b):
            self.resident(person)
        self.director(applicant, director_a)
        self.director(applicant, director_b, "gevolmachtigde")
        self.add(MUNICIPALITY, applicant.subject_ref, "permit-application", c.PERMITS,
                 {"kind": "exploitatievergunning horeca", "status": "under Bibob review", "filed": "2026-09-15"})
        self.add(MUNICIPALITY, applicant.subject_ref, "bibob-file", c.BIBOB_FILES,
                 {"year": 2021, "advice": "mindere mate van gevaar"})
        self.add(TAX, applicant.subject_ref, "tax-debt", c.TAX_DEBTS, {"band": "10k-50k", "age_months": 14})
        self.add(TAX, applicant.subject_ref, "filing-behaviour", c.TAX_COMPLIANCE,
                 {"missing_returns": ["2024"], "meets_dissolution_conditions": False})
        self.add(TAX, applicant.subject_ref, "income-assessment", c.INCOME,
                 {"year": 2025, "declared_profit_eur": 12_000})
        self.incident(director_a, date(2025, 8, 14), "witwassen (melding)", "cash found in vehicle")
        self.incident(director_a, date(2023, 4, 2), "mishandeling")
        self.add(POLICE, director_a.subject_ref, "cie-note", c.CRIMINAL_INTELLIGENCE,
                 {"reliability": "B2", "note": "CIE information (never shared)"})
        self.add(OM, director_a.subject_ref, "conviction", c.CONVICTIONS,
                 {"year": 2019, "offence": "Opiumwet art. 3", "sentence": "werkstraf"})
        self.investigation(FIOD, applicant.subject_ref)
        refs[BIBOB_APPLICANT] = [applicant.subject_ref, director_a.subject_ref, director_b.subject_ref]

        # Case 3, unexplained wealth: low income, high assets, directorships.
        wealthy = self.person()
        self.resident(wealthy)
        for year, income in ((2024, 19_000), (2025, 21_500)):
            self.add(TAX, wealthy.subject_ref, "income-assessment", c.INCOME,
                     {"year": year, "declared_income_eur": income})
        self.add(TAX, wealthy.subject_ref, "asset", c.ASSETS, {"kind": "real estate", "value_band": "1M-2M",
                                                                "count": 3})
        self.add(TAX, wealthy.subject_ref, "asset", c.ASSETS, {"kind": "vehicle", "value_band": "100k-250k",
                                                                "count": 2})
        self.incident(wealthy, date(2024, 3, 2), "bedreiging")
        for company in self.world.companies[:2]:
            self.director(company, wealthy)
        refs[UNEXPLAINED_WEALTH] = [wealthy.subject_ref]

        # Case 5, a minor: police, school absence and care involvement.
        minor = self.person(age=15)
        self.resident(minor)
        self.incident(minor, date(2026, 5, 20), "drugskoerier (aangehouden)")
        self.add(MUNICIPALITY, minor.subject_ref, "school-absence", c.SCHOOL_ABSENCE,
                 {"school_year": "2025-2026", "unauthorised_hours": 86})
        self.add(MUNICIPALITY, minor.subject_ref, "care-involvement", c.CARE_INVOLVEMENT,
                 {"service": "jeugdhulp", "since": "2025-11"})
        refs[MINOR] = [minor.subject_ref]

        # Case 4, a bank customer with flagged transactions, known to the FIOD and the police.
        customer = self.person()
        self.resident(customer)
        self.add(BANK, customer.subject_ref, "account", c.BANK_ACCOUNTS,
                 {"iban_suffix": "4471", "kind": "betaalrekening", "status": "open"})
        self.add(BANK, customer.subject_ref, "account", c.BANK_ACCOUNTS,
                 {"iban_suffix": "9012", "kind": "spaarrekening", "status": "blocked"})
        for day, band in (("2026-09-03", "10k-50k"), ("2026-09-17", "10k-50k")):
            self.add(BANK, customer.subject_ref, "flagged-transaction", c.FLAGGED_TRANSACTIONS,
                     {"date": day, "amount_band": band, "pattern": "structuring cash deposits"})
        self.investigation(FIOD, customer.subject_ref)
        self.investigation(POLICE, customer.subject_ref)
        refs[BANK_CUSTOMER] = [customer.subject_ref]

        # S9: the police holds incidents but refuses: an investigation's confidentiality comes first.
        secret = self.person()
        self.resident(secret)
        self.incident(secret, date(2026, 2, 11), "ondermijning")
        self.investigation(POLICE, secret.subject_ref)
        self.world.confidential.setdefault(POLICE, set()).add(secret.subject_ref)
        refs[POLICE_CONFIDENTIAL] = [secret.subject_ref]

        nobody = self.person()  # not even a resident: no partner holds anything
        refs[NO_RECORDS] = [nobody.subject_ref]


def build_world(seed: int = 2025, persons: int = 400, companies: int = 150) -> World:
    """Generate the world for ``seed`` (deterministic, ~0.1 s for the default size)."""
    return _Builder(seed, persons, companies).build()


def scenarios(seed: int = 2025) -> dict[str, list[str]]:
    """Scenario name -> subject refs of the default-size world for ``seed``."""
    return build_world(seed).scenarios()
