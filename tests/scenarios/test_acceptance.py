"""Acceptance scenarios S1-S12 (REGISTER.md) over real HTTP: gateway and simulated partners as separate
servers, real tokens, real Rego decisions. Each asserts per-target outcome, categories disclosed, reasons."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from connectors.store import PartnerStore
from gateway.client.fuzzy_requests import FilterRecordToEnrol
from gateway.enrolment.tables import enrolments
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-117", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-42"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def _subjects(stack: Stack, scenario: str, minor: bool = False) -> list[dict[str, Any]]:
    return [{"ref": ref, "minor": minor} for ref in stack.world.scenarios()[scenario]]


def _by_holder(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {t["holder"]: t for t in response.json()["targets"]}


def _codes(target: dict[str, Any]) -> set[str]:
    return {r["code"] for r in target["reasons"]}


def test_s1_bibob_check_all_holders(stack: Stack) -> None:
    body = BIBOB | {"subjects": _subjects(stack, "bibob-applicant"), "holders": "all",
                    "categories": ["company_registration", "directorships", "tax_debts", "income",
                                   "police_incidents", "convictions"]}
    targets = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))
    assert targets["kvk"]["outcome"] == "allowed"
    assert {r["category"] for r in targets["kvk"]["records"]} == {"company_registration", "directorships"}
    tax = targets["belastingdienst"]
    assert tax["outcome"] == "allowed-narrowed"
    assert tax["removed_categories"] == ["income"]
    assert "category-not-supplied" in _codes(tax)
    assert {r["category"] for r in tax["records"]} == {"tax_debts"}  # the applicant's income record stays home
    assert targets["politie"]["outcome"] == "allowed"
    assert {r["category"] for r in targets["politie"]["records"]} == {"police_incidents"}
    assert targets["om-amsterdam"]["outcome"] == "allowed"
    assert {r["category"] for r in targets["om-amsterdam"]["records"]} == {"convictions"}
    fiod = targets["fiod"]
    assert fiod["outcome"] == "allowed"
    assert fiod["permitted_categories"] == ["ongoing_investigation"]
    assert fiod["hit_only"] is True
    assert fiod["hit"] is True
    assert fiod["records"] == []
    for allowed in ("kvk", "politie", "om-amsterdam", "fiod"):
        assert targets[allowed]["reasons"] == [], allowed
    for allowed in ("kvk", "belastingdienst", "politie", "om-amsterdam", "fiod"):
        obligations = targets[allowed]["obligations"]
        assert obligations["onward_sharing"] is False
        assert obligations["results_only"] is False
        assert obligations["retain_until"] == "2028-11-25"


def test_s2_malafide_dissolution_and_audit_shows_both_sides(stack: Stack) -> None:
    body = {"partnership": RIEC, "purpose": "malafide-company-dissolution", "legal_basis": "WGS (RIEC) with BW 2:19a",
            "case_reference": "BD-2026-9", "signal": {"type": "missing-returns", "reference": "BD-SIG-77"},
            "subjects": _subjects(stack, "malafide-dissolution"), "holders": ["kvk"],
            "categories": ["company_registration", "directorships"],
            "provide": [{"subject": stack.world.scenarios()["malafide-dissolution"][0], "category": "tax_compliance",
                         "fields": {"dissolution_grounds": "BW 2:19a", "missing_returns": ["2023", "2024"]}}]}
    response = stack.post("belastingdienst-ivs", "/v1/exchanges", body)
    target = _by_holder(response)["kvk"]
    assert target["outcome"] == "allowed"
    kvk_store = PartnerStore(stack.container.settings.data_dir / "partners" / "partner-kvk-handelsregister.sqlite")
    received = kvk_store.received(stack.world.scenarios()["malafide-dissolution"][0])
    kvk_store.close()
    assert [category for category, _ in received] == ["tax_compliance"]  # the KvK got the dissolution grounds
    assert {r["category"] for r in target["records"]} == {"company_registration", "directorships"}
    exchange_id = response.json()["exchange_id"]
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.event_type, audit_entries.c.requester_org,
                                         audit_entries.c.holder_org, audit_entries.c.canonical)
                                  .where(audit_entries.c.canonical.contains(exchange_id))).all()
    kinds = {row.event_type for row in rows}
    assert any('"direction":"requester-to-holder"' in row.canonical for row in rows)
    assert {"exchange.requested", "policy.decided", "disclosure"} <= kinds
    assert {row.requester_org for row in rows} == {"belastingdienst"}
    assert "kvk" in {row.holder_org for row in rows}
    assert sorted(response.json()["receipt"]["audit_indices"])


def test_s3_bank_is_not_a_riec_participant(stack: Stack) -> None:
    body = BIBOB | {"subjects": _subjects(stack, "bibob-applicant")[:1], "holders": ["politie"],
                    "categories": ["police_incidents"]}
    target = _by_holder(stack.post("abn-amro-fec", "/v1/exchanges", body))["politie"]
    assert target["outcome"] == "denied"
    assert "requester-not-participant" in _codes(target)
    assert target["records"] == []
    # ... and in the FEC, where the bank is a participant, the purpose is not one of the partnership's.
    fec = _by_holder(stack.post("abn-amro-fec", "/v1/exchanges", body | {"partnership": "fec"}))["politie"]
    assert fec["outcome"] == "denied"
    assert _codes(fec) == {"purpose-not-in-partnership"}
    assert fec["records"] == []


def test_s4_youth_prevention_allows_a_minor(stack: Stack) -> None:
    body = {"partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)",
            "case_reference": "ZVH-2026-3", "signal": {"type": "school-report", "reference": "LPA-2026-5"},
            "subjects": _subjects(stack, "minor", minor=True), "holders": ["politie", "gemeente-amsterdam"],
            "categories": ["police_incidents", "school_absence", "care_involvement"]}
    targets = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))
    assert targets["politie"]["outcome"] == "allowed"
    assert {r["category"] for r in targets["politie"]["records"]} == {"police_incidents"}
    assert targets["gemeente-amsterdam"]["outcome"] == "allowed"
    assert {r["category"] for r in targets["gemeente-amsterdam"]["records"]} == {"school_absence", "care_involvement"}
    for holder in ("politie", "gemeente-amsterdam"):
        assert targets[holder]["obligations"] == {"retain_until": "2027-11-25", "onward_sharing": False,
                                                  "results_only": True}


def test_s5_minor_denied_for_bibob(stack: Stack) -> None:
    body = BIBOB | {"subjects": _subjects(stack, "minor", minor=True), "holders": ["politie"],
                    "categories": ["police_incidents"]}
    target = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))["politie"]
    assert target["outcome"] == "denied"
    assert "minors-not-allowed" in _codes(target)
    assert target["records"] == []


def test_s5_one_minor_among_adults_denies_the_whole_request(stack: Stack) -> None:
    """Rule 5 binds the request: a single subject flagged as a minor among others denies it for every holder,
    the adults' data included."""
    subjects = _subjects(stack, "bibob-applicant") + _subjects(stack, "minor", minor=True)
    body = BIBOB | {"subjects": subjects, "holders": ["politie", "kvk"],
                    "categories": ["police_incidents", "company_registration"]}
    targets = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))
    assert set(targets) == {"politie", "kvk"}
    for target in targets.values():
        assert target["outcome"] == "denied"
        assert _codes(target) == {"minors-not-allowed"}
        assert target["records"] == []


def test_s5_a_minor_the_requester_did_not_declare_is_refused_by_the_holder_that_knows(stack: Stack) -> None:
    """Rule 5 rests on the requester's `minor` flag; left out, the policy allows, but the police know the
    subject's date of birth and the purpose allows no minors: refused, nothing disclosed (and, as any
    refusal, a case is opened)."""
    body = BIBOB | {"subjects": _subjects(stack, "minor"), "holders": ["politie"],
                    "categories": ["police_incidents"]}
    target = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))["politie"]
    assert target["outcome"] == "refused-by-holder"
    assert any("minor-not-allowed" in r["message"] for r in target["reasons"])
    assert target["records"] == []


def test_s6_retired_partnership_denies_everything(stack: Stack) -> None:
    body = {"partnership": "nsoc", "purpose": "undermining-analysis", "legal_basis": "WGS (NSOC)",
            "case_reference": "NSOC-1", "signal": {"type": "analysis", "reference": "A-1"},
            "subjects": _subjects(stack, "unexplained-wealth"), "holders": "all", "categories": ["police_incidents"]}
    targets = _by_holder(stack.post("belastingdienst-ivs", "/v1/exchanges", body))
    assert targets
    assert all(t["outcome"] == "denied" and "partnership-retired" in _codes(t) for t in targets.values())


def test_s7_bulk_request_is_escalated(stack: Stack) -> None:
    refs = [{"ref": p.subject_ref} for p in stack.world.persons[:40]]
    body = BIBOB | {"subjects": refs, "holders": "all", "categories": ["police_incidents", "tax_debts"]}
    targets = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))
    assert targets
    assert all(t["outcome"] == "escalated" for t in targets.values())
    assert all("bulk-request" in _codes(t) and t["records"] == [] for t in targets.values())
    # Each escalated target opened a case for the tier-1 privacy officers (issue 6), citing the policy's reasons.
    officer = stack.person("po-s7-politie", "politie", ["privacy-officer"])
    case = stack.call(officer, "GET", f"/v1/escalations/{targets['politie']['escalation_id']}").json()
    assert (case["trigger"], case["state"], case["tier"]) == ("policy-escalated", "open", 1)
    assert "bulk-request" in case["policy_reasons"]
    assert case["requested_categories"] == ["police_incidents"]
    assert len({t["escalation_id"] for t in targets.values()}) == len(targets)


def test_s8_police_may_not_request_for_bibob(stack: Stack) -> None:
    body = BIBOB | {"subjects": _subjects(stack, "bibob-applicant")[:1], "holders": ["kvk"],
                    "categories": ["company_registration"]}
    target = _by_holder(stack.post("politie-bvh", "/v1/exchanges", body))["kvk"]
    assert target["outcome"] == "denied"
    assert "requester-role-not-allowed" in _codes(target)


def test_s9_police_refuses_as_holder(stack: Stack) -> None:
    body = BIBOB | {"subjects": _subjects(stack, "police-confidential"), "holders": ["politie"],
                    "categories": ["police_incidents"]}
    target = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))["politie"]
    assert target["outcome"] == "refused-by-holder"
    assert "refused-by-holder" in _codes(target)
    assert any("investigation-confidentiality" in r["message"] for r in target["reasons"])
    assert target["records"] == []


def test_s9_police_refuse_discovery_too(stack: Stack) -> None:
    """Found by a review: discovery answered `hit` for the subject the police keep confidential — exactly what
    the confidentiality protects. The police refuse discovery on the grounds they refuse an exchange on
    (that the refusal does not depend on the categories asked is tested on the holder itself, in
    tests/integration/connectors). It is logged as the holder's refusal, not as a hit/no-hit disclosure."""
    body = BIBOB | {"subjects": _subjects(stack, "police-confidential"), "categories": ["police_incidents"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body)
    politie = _by_holder(response)["politie"]
    assert politie["outcome"] == "refused-by-holder"
    assert _codes(politie) == {"refused-by-holder"}
    assert any("investigation-confidentiality" in r["message"] for r in politie["reasons"])
    entries = [e for e in stack.logged(response.json()) if e.get("holder") == "politie"]
    assert [(e["event_type"], e.get("reasons")) for e in entries if e["event_type"] != "policy.decided"] == [
        ("holder.refused", ["holder:investigation-confidentiality"])]


def test_s9_a_refused_subject_among_others_withholds_their_hits_too(stack: Stack) -> None:
    """The refusal covers the whole discovery of that holder: the director's police record, a hit on its own,
    is not answered beside it (or the refusal could be narrowed down to the subject that caused it)."""
    director = _subjects(stack, "bibob-applicant")[1:2]
    alone = {"subjects": director, "categories": ["police_incidents"]}
    assert _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | alone))["politie"][
        "outcome"] == "hit"
    both = alone | {"subjects": director + _subjects(stack, "police-confidential")}
    assert _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | both))["politie"][
        "outcome"] == "refused-by-holder"


def test_s5_discovery_of_an_undeclared_minor_is_refused_where_the_purpose_allows_no_minors(stack: Stack) -> None:
    """Found by a review: discovery did not tell holders whether the purpose allows minors, so the police
    answered `hit` on a minor for Bibob. Now it says so, and the police refuse (minor-not-allowed) — while
    for youth prevention, which allows minors, the same subject is a hit."""
    bibob = BIBOB | {"subjects": _subjects(stack, "minor"), "categories": ["police_incidents"]}
    politie = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/discovery", bibob))["politie"]
    assert politie["outcome"] == "refused-by-holder"
    assert any("minor-not-allowed" in r["message"] for r in politie["reasons"])
    youth = {"partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)",
             "case_reference": "ZVH-2026-4", "signal": {"type": "school-report", "reference": "LPA-2026-6"},
             "subjects": _subjects(stack, "minor", minor=True), "categories": ["police_incidents"]}
    assert _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/discovery", youth))["politie"]["outcome"] == "hit"


def test_s10_a_hit_only_holder_refuses_for_a_confidential_subject(stack: Stack) -> None:
    """The hit/no-hit answer of an exchange is discovery at the holder too: for the subject the police keep
    confidential it is their refusal (an escalation case, as any refusal of an allowed request), not a hit."""
    body = {"partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant",
            "case_reference": "FEC-TF-9", "signal": {"type": "unusual-transaction", "reference": "MOT-2026-2"},
            "subjects": _subjects(stack, "police-confidential"), "holders": ["politie"],
            "categories": ["ongoing_investigation"]}
    politie = _by_holder(stack.post("abn-amro-fec", "/v1/exchanges", body))["politie"]
    assert politie["outcome"] == "refused-by-holder"
    assert politie["hit"] is None
    assert any("investigation-confidentiality" in r["message"] for r in politie["reasons"])
    assert politie["escalation_id"]


def test_s10_bank_gets_hit_no_hit_only(stack: Stack) -> None:
    body = {"partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant",
            "case_reference": "FEC-TF-8", "signal": {"type": "unusual-transaction", "reference": "MOT-2026-1"},
            "subjects": _subjects(stack, "bank-customer"), "holders": ["fiod", "politie"],
            "categories": ["ongoing_investigation"]}
    targets = _by_holder(stack.post("abn-amro-fec", "/v1/exchanges", body))
    for holder in ("fiod", "politie"):
        assert targets[holder]["outcome"] == "allowed"
        assert targets[holder]["permitted_categories"] == ["ongoing_investigation"]
        assert targets[holder]["hit_only"] is True
        assert targets[holder]["hit"] is True
        assert targets[holder]["records"] == []


def test_s11_criminal_intelligence_is_always_removed(stack: Stack) -> None:
    body = BIBOB | {"subjects": _subjects(stack, "bibob-applicant")[1:2], "holders": ["politie"],
                    "categories": ["police_incidents", "criminal_intelligence"]}
    target = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))["politie"]
    assert target["outcome"] == "allowed-narrowed"
    assert target["removed_categories"] == ["criminal_intelligence"]
    assert "never-disclosed" in _codes(target)
    assert {r["category"] for r in target["records"]} == {"police_incidents"}


def test_s11_discovery_says_criminal_intelligence_was_not_searched(stack: Stack) -> None:
    """Found by a policy review: discovery answered `hit` on the police's incidents with no word that the
    criminal intelligence asked about was not searched, and logged no reason for it. Now the answer and the
    log carry the removal as an exchange's do."""
    body = BIBOB | {"subjects": _subjects(stack, "bibob-applicant")[1:2],
                    "categories": ["police_incidents", "criminal_intelligence"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body)
    politie = _by_holder(response)["politie"]
    assert politie["outcome"] == "hit"
    assert [(r["code"], r["category"]) for r in politie["reasons"]] == [("never-disclosed", "criminal_intelligence")]
    decided = [e for e in stack.logged(response.json())
               if e["event_type"] == "policy.decided" and e.get("holder") == "politie"]
    assert [(e["decision"], e["reasons"], e["categories"]) for e in decided] == [
        ("narrowed", ["never-disclosed"], ["police_incidents"])]


def test_s12_wrong_legal_basis_is_denied_with_the_reason(stack: Stack) -> None:
    body = BIBOB | {"legal_basis": "WGS (RIEC)", "subjects": _subjects(stack, "bibob-applicant")[:1],
                    "holders": ["kvk"], "categories": ["company_registration"]}
    target = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))["kvk"]
    assert target["outcome"] == "denied"
    assert "legal-basis-mismatch" in _codes(target)
    assert any("WGS (RIEC) with Wet Bibob" in r["message"] for r in target["reasons"])


def test_s2_variant_handing_data_the_register_does_not_allow_is_denied(stack: Stack) -> None:
    subject = stack.world.scenarios()["bibob-applicant"][0]
    body = BIBOB | {"subjects": [{"ref": subject}], "holders": ["kvk"], "categories": ["company_registration"],
                    "provide": [{"subject": subject, "category": "police_incidents", "fields": {"note": "x"}}]}
    target = _by_holder(stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body))["kvk"]
    assert target["outcome"] == "denied"
    assert "provision-not-allowed" in _codes(target)


def test_register_version_is_an_audit_entry(stack: Stack) -> None:
    with stack.container.engine.connect() as connection:
        first = connection.execute(select(audit_entries.c.event_type, audit_entries.c.canonical)
                                   .order_by(audit_entries.c.log_index).limit(1)).one()
    assert first.event_type == "register.changed"
    assert '"register_version":"2026.11.1"' in first.canonical


def test_no_audit_entry_carries_personal_data(stack: Stack) -> None:
    """Runs last in this module: scans every entry the scenarios wrote for the world's identifiers and names —
    after every partner enrolled its subjects and one enrolled match filters of named persons under its own
    references, so that the enrolments' entries (``index.enrolment``) are scanned too, with the pseudonyms
    and references they must leave out."""
    enrolled = asyncio.run(stack.enrol_all())
    assert sum(enrolled.values()) > 0
    persons = stack.world.persons[:5]
    refs = [f"bvh/2026/{n:05d}" for n in range(len(persons))]
    records = [FilterRecordToEnrol(ref, {"given_name": person.name.split()[0], "surname": person.name.split()[-1],
                                         "date_of_birth": person.date_of_birth.strftime("%Y%m%d")},
                                   ["police_incidents"])
               for ref, person in zip(refs, persons, strict=True)]
    asyncio.run(_enrol_filters(stack, records))
    with stack.container.engine.connect() as connection:
        entries = "\n".join(connection.execute(select(audit_entries.c.canonical)).scalars())
        index = list(connection.execute(select(enrolments.c.pseudonym)).scalars())
    assert "disclosure" in entries
    assert '"event_type":"index.enrolment"' in entries
    assert '"index":"filters"' in entries
    leaked = [value for person in stack.world.persons for value in (person.bsn, person.name) if value in entries]
    leaked += [value for company in stack.world.companies
               for value in (company.kvk_number, company.rsin, company.trade_name) if value in entries]
    assert leaked == []
    enrolment_entries = "\n".join(line for line in entries.splitlines() if '"index.enrolment"' in line)
    assert [value for value in (*refs, *index) if value in enrolment_entries] == []


async def _enrol_filters(stack: Stack, records: list[FilterRecordToEnrol]) -> None:
    async with stack.client("politie-bvh") as client:
        await client.enrol_filters(RIEC, "person", b"riec-aa-clk-secret-for-the-tests", records)
