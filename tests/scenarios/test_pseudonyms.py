"""Pseudonymised exchange end to end (issue 4) over real HTTP: every simulated partner enrols the subjects it
holds (polymorphic pseudonyms made on its side, its own pseudonyms back), a requester asks with its own
pseudonyms, the gateway translates per holder and back, discovery is answered from the index, and no
identifier or shared reference reaches a holder, an answer or the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import delete, func, select, update

from audit.tables import audit_entries
from connectors.store import PartnerStore, store_path
from gateway.client.api import EnrolledSubject
from gateway.enrolment.quota import DailyPseudonymQuota
from gateway.enrolment.setup import pseudonym_service
from gateway.enrolment.tables import enrolments, pseudonyms_made
from tests.stack import Stack, running_stack, stack_with_holder

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
BIBOB: dict[str, Any] = {  # a request body's common fields (JSON)
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-500", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-500"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import asyncio

    with running_stack(tmp_path_factory.mktemp("pseudonyms")) as running:
        enrolled = asyncio.run(running.enrol_all())
        assert all(count > 0 for count in enrolled.values()), enrolled
        yield running


def _subjects(pseudonyms: list[str]) -> list[dict[str, Any]]:
    return [{"ref": p} for p in pseudonyms]


def _audit_text(stack: Stack, exchange_id: str) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical)
                                  .where(audit_entries.c.canonical.contains(exchange_id))).all()
    return [json.loads(r.canonical)["event"] for r in rows]


async def test_participants_get_different_stable_pseudonyms(stack: Stack) -> None:
    ref = stack.world.scenarios()["bibob-applicant"][0]
    municipality = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    again = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    police = await stack.own_pseudonyms("politie-bvh", RIEC, [ref])
    other_partnership = await stack.own_pseudonyms(MUNICIPALITY, "zvh-amsterdam", [ref])
    assert municipality == again  # stable
    assert len({municipality[0], police[0], other_partnership[0]}) == 3  # unlinkable without the gateway
    _kind, number = stack.world.identifier_of(ref)
    assert number not in municipality[0]
    assert ref not in municipality[0]
    kvk_store = PartnerStore(store_path(stack.partners_dir, "kvk-handelsregister"))
    try:
        held = kvk_store.resolve(RIEC, [await stack.own_pseudonyms("kvk-handelsregister", RIEC, [ref])][0])
    finally:
        kvk_store.close()
    assert list(held.values()) == [[ref]]  # the KvK finds its own record by its own pseudonym


async def test_exchange_with_pseudonyms_translates_per_holder_and_back(stack: Stack) -> None:
    refs = stack.world.scenarios()["bibob-applicant"]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, refs)
    body = BIBOB | {"subjects": _subjects(mine), "holders": ["kvk", "belastingdienst"],
                    "categories": ["company_registration", "directorships", "tax_debts"]}
    response = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert response.status_code == 200, response.text
    targets = {t["holder"]: t for t in response.json()["targets"]}
    kvk = targets["kvk"]
    assert kvk["outcome"] == "allowed"
    assert {r["category"] for r in kvk["records"]} == {"company_registration", "directorships"}
    assert {r["subject"] for r in kvk["records"]} <= set(mine)  # back in the requester's own pseudonyms
    expected = {r.record_id for ref in refs for r in stack.world.records_of("kvk-handelsregister", ref)
                if r.category in {"company_registration", "directorships"}}
    assert {r["record_id"] for r in kvk["records"]} == expected
    assert targets["belastingdienst"]["records"]
    text = response.text
    for ref in refs:  # no shared reference anywhere; numbers only as disclosed content, never as a subject
        assert ref not in text
        assert not any(stack.world.identifier_of(ref)[1] in r["subject"] for t in targets.values()
                       for r in t["records"])
    # Related subjects named in records (company ↔ director) come as the requester's pseudonyms too: the
    # directors are among the subjects asked about, so they must map onto exactly those pseudonyms.
    related = [r["fields"].get("director") or r["fields"].get("company") for r in kvk["records"]
               if r["record_type"] == "directorship"]
    assert related
    assert set(related) <= set(mine)
    entries = _audit_text(stack, response.json()["exchange_id"])
    shared = {pseudonym_service(stack.container).to_partnership(p, RIEC, "gemeente-amsterdam") for p in mine}
    requested = next(e for e in entries if e["event_type"] == "exchange.requested")
    assert set(requested["extra"]["subjects"]) == shared
    assert not set(mine) & shared  # the log holds partnership-domain pseudonyms, not the requester's
    disclosed = {e["data_subject"]["pseudonym"] for e in entries
                 if e["event_type"] == "disclosure" and e.get("data_subject")}
    assert disclosed
    assert disclosed <= shared
    logged = json.dumps(entries)
    assert not any(ref in logged or stack.world.identifier_of(ref)[1] in logged for ref in refs)


async def test_discovery_is_answered_from_the_index(stack: Stack) -> None:
    applicant = stack.world.scenarios()["bibob-applicant"][0]
    nobody = stack.world.scenarios()["no-records"][0]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [applicant, nobody])
    categories = ["company_registration", "tax_debts", "ongoing_investigation"]
    hit = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": _subjects(mine[:1]),
                                                             "categories": categories})
    assert hit.status_code == 200, hit.text
    outcomes = {t["holder"]: t["outcome"] for t in hit.json()["targets"]}
    held = {system: {r.category for r in stack.world.records_of(system, applicant)} & set(categories)
            for system in ("kvk-handelsregister", "belastingdienst-ivs", "fiod-ois")}
    assert outcomes["kvk"] == ("hit" if held["kvk-handelsregister"] else "no-hit")
    assert outcomes["belastingdienst"] == ("hit" if held["belastingdienst-ivs"] else "no-hit")
    assert outcomes["fiod"] == ("hit" if held["fiod-ois"] else "no-hit")
    assert "hit" in outcomes.values()
    miss = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": _subjects(mine[1:]),
                                                              "categories": categories})
    assert {t["outcome"] for t in miss.json()["targets"] if t["outcome"] != "denied"} == {"no-hit"}


async def test_another_participants_pseudonym_finds_nothing_and_is_never_translated_into_a_hit(stack: Stack) -> None:
    """A pseudonym is only its own participant's: the police's pseudonym of a subject the index holds, sent by the
    municipality as if it were its own, is no-hit everywhere and gets no records (the gateway reads it in the
    municipality's domain, where it is nobody), while the municipality's own pseudonym of that subject hits."""
    applicant = stack.world.scenarios()["bibob-applicant"][0]
    [mine] = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [applicant])
    [polices] = await stack.own_pseudonyms("politie-bvh", RIEC, [applicant])
    [kvks] = await stack.own_pseudonyms("kvk-handelsregister", RIEC, [applicant])
    categories = ["company_registration", "tax_debts"]

    def outcomes(subject: str) -> set[str]:
        answer = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": _subjects([subject]),
                                                                    "categories": categories})
        assert answer.status_code == 200, answer.text
        return {t["outcome"] for t in answer.json()["targets"] if t["outcome"] != "denied"}

    assert "hit" in outcomes(mine)
    for foreign in (polices, kvks):  # the KvK's is the holder's own: not even it is found by it
        assert outcomes(foreign) == {"no-hit"}
        answer = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {
            "subjects": _subjects([foreign]), "holders": ["kvk"], "categories": ["company_registration"]})
        assert answer.status_code == 200, answer.text
        [target] = answer.json()["targets"]
        assert target["outcome"] == "allowed"
        assert target["records"] == []


async def test_enrolment_updates_the_index_incrementally(stack: Stack) -> None:
    ref = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(ref)
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    ask = BIBOB | {"subjects": _subjects(mine), "categories": ["company_registration"]}

    def kvk_outcome() -> str:
        return str({t["holder"]: t["outcome"] for t in stack.post(MUNICIPALITY, "/v1/discovery", ask).json()[
            "targets"]}["kvk"])

    assert kvk_outcome() == "no-hit"
    async with stack.client("kvk-handelsregister") as kvk:
        await kvk.enrol(RIEC, [(kind, number, ["trade-name"], ["company_registration"])])
        assert kvk_outcome() == "hit"
        await kvk.enrol(RIEC, [(kind, number, [], [])])  # no record types: out of the index again
    assert kvk_outcome() == "no-hit"


async def test_mixed_subjects_and_foreign_polymorphic_pseudonyms_are_refused(stack: Stack) -> None:
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, stack.world.scenarios()["no-records"])
    body = BIBOB | {"subjects": [{"ref": mine[0]}, {"ref": stack.world.scenarios()["no-records"][0]}],
                    "holders": ["kvk"], "categories": ["company_registration"]}
    mixed = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert mixed.status_code == 422
    assert mixed.headers["content-type"].startswith("application/problem+json")
    forged = stack.post(MUNICIPALITY, "/v1/enrolments", {"partnership": RIEC, "subjects": [
        {"type": "bsn", "polymorphic": "A" * 128, "record_types": ["x"], "categories": ["identity"]}]})
    assert forged.status_code == 422
    outsider = stack.post("abn-amro-fec", "/v1/pseudonyms", {"partnership": "zvh-amsterdam", "subjects": [
        {"type": "bsn", "polymorphic": "A" * 128}]})
    assert outsider.status_code == 403  # the bank takes no part in the ZVH


async def test_an_encryption_of_the_identity_point_is_refused_not_a_server_error(stack: Stack) -> None:
    """(r·G, r·Y) decodes as a well-formed polymorphic pseudonym; only transforming it shows it hides nothing."""
    from gateway.pseudonyms.pep import Point, PolymorphicPseudonym, Scalar

    key = Point.decode(stack.get(MUNICIPALITY, "/v1/pseudonyms/key").json()["public_key"])
    r = Scalar.random()
    hollow = PolymorphicPseudonym(r.times_base(), r.times(key), key).encode()  # (b, c) = (r·G, identity + r·Y)
    for path, item in (("/v1/pseudonyms", {}), ("/v1/enrolments", {"record_types": ["x"], "categories": ["identity"]})):
        answer = stack.post(MUNICIPALITY, path, {"partnership": RIEC,
                                                 "subjects": [{"type": "bsn", "polymorphic": hollow} | item]})
        assert answer.status_code == 422, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")


async def test_a_batch_refused_for_a_hollow_pseudonym_takes_none_of_the_daily_quota(stack: Stack) -> None:
    """Found by a review: the quota was taken before the pseudonyms were made, and an item that decodes but
    cannot be transformed (an encryption of the identity point) failed the batch with 422 after that: every
    item of the refused batch was counted, so a partner re-sending a corrected batch ran into the cap (422
    must write nothing). The quota now takes only what a batch gives out."""
    from gateway.pseudonyms.pep import Point, PolymorphicPseudonym, Scalar

    service = stack.container.services["pseudonyms"]
    kept = service.quota
    with stack.container.engine.begin() as connection:
        connection.execute(delete(pseudonyms_made))
    service.quota = DailyPseudonymQuota(stack.container.sessions, stack.clock, 2)
    key = Point.decode(stack.get(MUNICIPALITY, "/v1/pseudonyms/key").json()["public_key"])
    r = Scalar.random()
    hollow = PolymorphicPseudonym(r.times_base(), r.times(key), key).encode()
    async with stack.client(MUNICIPALITY) as client:
        pseudonyms = await client.pseudonym_client(RIEC)
    kind, number = stack.world.identifier_of(stack.world.scenarios()["bibob-applicant"][0])
    good = {"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number)}
    enrolled = {"record_types": ["x"], "categories": ["identity"]}
    try:
        refused = [stack.post(MUNICIPALITY, path, {"partnership": RIEC, "subjects": [
            good | item, {"type": "bsn", "polymorphic": hollow} | item]}).status_code
            for path, item in (("/v1/pseudonyms", {}), ("/v1/enrolments", enrolled))]
        with stack.container.engine.connect() as connection:
            made = connection.execute(select(func.coalesce(func.sum(pseudonyms_made.c.made), 0))).scalar_one()
        after = stack.post(MUNICIPALITY, "/v1/pseudonyms", {"partnership": RIEC, "subjects": [good, good]})
    finally:
        service.quota = kept
    assert refused == [422, 422]
    assert made == 0
    assert after.status_code == 200, after.text  # the whole day's quota is still there


async def test_contact_point_finds_every_disclosure_by_identifier(stack: Stack) -> None:
    from gateway.client.pseudonyms import PseudonymClient

    ref = stack.world.scenarios()["bibob-applicant"][0]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    body = BIBOB | {"subjects": _subjects(mine), "holders": ["kvk"], "categories": ["company_registration"]}
    exchange = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert exchange.status_code == 200, exchange.text
    contact = stack.person("cp-gemeente", "gemeente-amsterdam", ["contact-point"])
    key = stack.call(stack.token(MUNICIPALITY), "GET", "/v1/pseudonyms/key").json()["public_key"]
    kind, number = stack.world.identifier_of(ref)
    lookup = {"partnership": RIEC, "subject": {"type": kind, "polymorphic": PseudonymClient(key).polymorphic(
        kind, number)}}
    found = stack.call(contact, "POST", "/v1/audit/subjects/disclosures", lookup)
    assert found.status_code == 200, found.text
    disclosures = [e["entry"] for e in found.json()]
    assert any(d["event"]["exchange_id"] == exchange.json()["exchange_id"] for d in disclosures)
    assert all(d["event"]["event_type"] == "disclosure" for d in disclosures)
    officer = stack.person("po-gemeente-lookup", "gemeente-amsterdam", ["privacy-officer"])
    assert stack.call(officer, "POST", "/v1/audit/subjects/disclosures", lookup).status_code == 403


async def test_opaque_references_can_be_switched_off(stack: Stack) -> None:
    refs = stack.world.scenarios()["bibob-applicant"][:1]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, refs)
    body = BIBOB | {"holders": ["kvk"], "categories": ["company_registration"]}
    deps = stack.container.services["exchange"].deps
    deps.require_pseudonyms = True  # as WGS_REQUIRE_PSEUDONYMS=true sets it at start-up
    try:
        refused = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"subjects": [{"ref": refs[0]}]})
        served = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"subjects": _subjects(mine)})
    finally:
        deps.require_pseudonyms = False
    assert refused.status_code == 422
    assert "own pseudonyms" in refused.json()["detail"]
    assert served.status_code == 200, served.text


async def test_a_pseudonym_of_an_unknown_key_version_is_the_callers_error_and_writes_nothing(stack: Stack) -> None:
    """It decodes (a valid point) and fails only in the transcryptor: a 422 like any other bad subject, not a
    500, and nothing in the log (found by a review: a defect entry per such request, at any caller's will)."""
    from gateway.pseudonyms.pep import Pseudonym

    mine = Pseudonym.decode((await stack.own_pseudonyms(MUNICIPALITY, RIEC, stack.world.scenarios()["no-records"]))[0])
    unknown = Pseudonym(mine.identifier_type, mine.key_version + 97, mine.point).encode()
    with stack.container.engine.connect() as connection:
        before = connection.execute(select(func.count()).select_from(audit_entries)).scalar_one()
    for path, extra in (("/v1/exchanges", {"holders": ["kvk"]}), ("/v1/discovery", {})):
        answer = stack.post(MUNICIPALITY, path, BIBOB | {"subjects": [{"ref": unknown}],
                                                         "categories": ["company_registration"]} | extra)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    with stack.container.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(audit_entries)).scalar_one() == before


class _NamingHolder:
    """A KvK that names a related subject by its own pseudonym where the gateway once did not look: as an
    object's key and inside a longer text."""

    def __init__(self) -> None:
        self.related = ""  # the KvK's own pseudonym for the related subject, set by the test
        self.ids_from_pseudonyms = False  # record ids made of its pseudonyms (the subject's, the related one's)
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        subject = (await request.json())["subjects"][0]
        fields = {"directors": {self.related: {"role": "director"}}, "note": f"director {self.related}"}
        if self.ids_from_pseudonyms:
            return {"status": "answered", "records": [
                {"record_id": record_id, "record_type": "directorship", "subject": subject,
                 "category": "directorships", "fields": {"n": n}}
                for n, record_id in enumerate([subject, f"DIR:{self.related}", f"DIR:{self.related}", "KVK-DIR-1"])]}
        return {"status": "answered", "records": [
            {"record_id": "KVK-DIR-1", "record_type": "directorship", "subject": subject, "category": "directorships",
             "fields": fields}]}


def test_a_related_subject_as_a_key_or_inside_a_text_never_reaches_the_requester_in_the_holders_pseudonym(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Found by a review: only whole string values were translated, so the holder's pseudonym as a key or in a
    text reached the requester as it was, linkable to the holder's records."""
    import asyncio

    holder = _NamingHolder()
    with stack_with_holder(tmp_path_factory.mktemp("naming"), holder.app, ["kvk-handelsregister"]) as naming:
        asyncio.run(naming.enrol_all())  # the simulated KvK's index entries; the gateway asks the holder above
        applicant, related = [ref for ref in naming.world.scenarios()["bibob-applicant"]
                              if naming.world.records_of("kvk-handelsregister", ref)][:2]
        holder.related = asyncio.run(naming.own_pseudonyms("kvk-handelsregister", RIEC, [related]))[0]
        mine, mine_related = asyncio.run(naming.own_pseudonyms(MUNICIPALITY, RIEC, [applicant, related]))
        response = naming.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {
            "subjects": _subjects([mine]), "holders": ["kvk"], "categories": ["directorships"]})
    assert response.status_code == 200, response.text
    assert holder.related not in response.text
    (record,) = response.json()["targets"][0]["records"]
    assert record["subject"] == mine
    assert record["fields"] == {"directors": {mine_related: {"role": "director"}}, "note": None}


def test_a_holder_s_pseudonym_in_a_record_id_never_reaches_the_requester(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Found by a review: pseudonyms were looked for in a record's fields only, and a record id may hold one
    (its pattern takes the dots, letters and digits a pseudonym is made of): a holder that built its ids from
    its pseudonyms handed the requester its pseudonym of the subject, or of a related one, as it was —
    stable and linkable to the holder's records. Such an id becomes an opaque one (the same for the same id
    within the answer, so records stay told apart and alike), and the holder's over-sharing is logged."""
    import asyncio

    holder = _NamingHolder()
    holder.ids_from_pseudonyms = True
    with stack_with_holder(tmp_path_factory.mktemp("naming-ids"), holder.app, ["kvk-handelsregister"]) as naming:
        asyncio.run(naming.enrol_all())
        applicant, related = [ref for ref in naming.world.scenarios()["bibob-applicant"]
                              if naming.world.records_of("kvk-handelsregister", ref)][:2]
        theirs, holder.related = asyncio.run(naming.own_pseudonyms("kvk-handelsregister", RIEC, [applicant, related]))
        [mine] = asyncio.run(naming.own_pseudonyms(MUNICIPALITY, RIEC, [applicant]))
        response = naming.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {
            "subjects": _subjects([mine]), "holders": ["kvk"], "categories": ["directorships"]})
        assert response.status_code == 200, response.text
        logged = json.dumps(naming.logged(response.json()))
    for pseudonym in (theirs, holder.related):
        assert pseudonym not in response.text
        assert pseudonym not in logged
    records = response.json()["targets"][0]["records"]
    assert [r["fields"] for r in records] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
    ids = [r["record_id"] for r in records]
    assert ids[1] == ids[2]  # one id of the holder's is one id in the answer
    assert len({ids[0], ids[1], ids[3]}) == 3
    assert ids[3] == "KVK-DIR-1"  # an id without a pseudonym stays as it was
    assert '"references_withheld": 3' in logged


async def test_a_system_gets_only_its_daily_number_of_pseudonyms(stack: Stack) -> None:
    """The cap that keeps a requester from trying every BSN against a pseudonym it was given: past it, 429
    with Retry-After and nothing made; other systems keep theirs; enrolment counts towards it too."""
    service = stack.container.services["pseudonyms"]
    kept = service.quota
    with stack.container.engine.begin() as connection:  # the day's counts start here (other tests made some)
        connection.execute(delete(pseudonyms_made))
    service.quota = DailyPseudonymQuota(stack.container.sessions, stack.clock, 3)
    refs = stack.world.scenarios()["bibob-applicant"][:2]
    async with stack.client(MUNICIPALITY) as client:
        pseudonyms = await client.pseudonym_client(RIEC)
    body = {"partnership": RIEC, "subjects": [
        {"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number)}
        for kind, number in (stack.world.identifier_of(r) for r in refs)]}
    try:
        first = stack.post(MUNICIPALITY, "/v1/pseudonyms", body)
        over = stack.post(MUNICIPALITY, "/v1/pseudonyms", body)  # 2 + 2 > 3
        police = await stack.own_pseudonyms("politie-bvh", RIEC, refs)
        one_more = stack.post(MUNICIPALITY, "/v1/pseudonyms", body | {"subjects": body["subjects"][:1]})
    finally:
        service.quota = kept
    assert first.status_code == 200, first.text
    assert over.status_code == 429, over.text
    assert over.headers["content-type"] == "application/problem+json"
    assert 0 < int(over.headers["retry-after"]) <= 86_400
    assert "1 are left" in over.json()["detail"]
    assert len(police) == 2  # another system's count is its own
    assert one_more.status_code == 200  # the refused request took nothing


def _discover(stack: Stack, body: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The discovery's targets by holder, and the audit events its receipt cites."""
    response = stack.post(MUNICIPALITY, "/v1/discovery", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    return {t["holder"]: t for t in answer["targets"]}, stack.logged(answer)


def _holder_events(events: list[dict[str, Any]], holder: str) -> list[tuple[str, Any]]:
    return [(e["event_type"], e.get("reasons")) for e in events
            if e.get("holder") == holder and e["event_type"] != "policy.decided"]


async def test_index_discovery_of_a_confidential_subject_is_the_holders_refusal(stack: Stack) -> None:
    """Found by a review: the index answered `hit` for the subject the police keep confidential (S9), which
    the police refuse when asked directly. The police said so at enrolment, and the index refuses for them as
    they would — same code, same audit event, for the whole request — while the others answer as before."""
    secret = stack.world.scenarios()["police-confidential"][0]
    director = stack.world.scenarios()["bibob-applicant"][1]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [secret, director])
    categories = ["police_incidents", "company_registration", "tax_debts"]
    alone, _ = _discover(stack, BIBOB | {"subjects": _subjects(mine[1:]), "categories": categories})
    assert alone["politie"]["outcome"] == "hit"  # the director, asked alone: a hit at the police
    targets, events = _discover(stack, BIBOB | {"subjects": _subjects(mine), "categories": categories})
    politie = targets["politie"]
    assert politie["outcome"] == "refused-by-holder"  # the director's hit is withheld as well
    assert {r["code"] for r in politie["reasons"]} == {"refused-by-holder"}
    assert any("investigation-confidentiality" in r["message"] for r in politie["reasons"])
    assert _holder_events(events, "politie") == [("holder.refused", ["holder:investigation-confidentiality"])]
    for holder in ("kvk", "belastingdienst"):  # the others are unchanged: the index's hit/no-hit
        assert targets[holder]["outcome"] == alone[holder]["outcome"]
        assert _holder_events(events, holder) == [("disclosure", [])]


async def test_index_discovery_of_a_minor_is_refused_where_the_purpose_allows_no_minors(stack: Stack) -> None:
    """As the holder does (rule 5 on what it knows, whatever the requester declared): a minor under Bibob is
    the police's and the municipality's refusal, the same subject for youth prevention a hit."""
    minor = stack.world.scenarios()["minor"][0]
    categories = ["police_incidents", "school_absence", "company_registration"]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [minor])
    targets, events = _discover(stack, BIBOB | {"subjects": _subjects(mine), "categories": categories})
    assert targets["politie"]["outcome"] == "refused-by-holder"
    assert any("minor-not-allowed" in r["message"] for r in targets["politie"]["reasons"])
    assert _holder_events(events, "politie") == [("holder.refused", ["holder:minor-not-allowed"])]
    assert targets["kvk"]["outcome"] == "no-hit"  # holds nothing on the minor: no refusal either
    youth: dict[str, Any] = {
        "partnership": "zvh-amsterdam", "purpose": "youth-prevention", "legal_basis": "WGS (ZVH)",
        "case_reference": "ZVH-2026-4", "signal": {"type": "school-report", "reference": "LPA-2026-6"},
        "subjects": _subjects(await stack.own_pseudonyms(MUNICIPALITY, "zvh-amsterdam", [minor])),
        "categories": ["police_incidents"]}
    allowed, _ = _discover(stack, youth | {"subjects": [s | {"minor": True} for s in youth["subjects"]]})
    assert allowed["politie"]["outcome"] == "hit"


async def test_a_refusal_code_that_is_a_person_s_number_is_not_enrolled_nor_answered(stack: Stack) -> None:
    """Found by a review: enrolment took a refusal code of a code's shape, and a BSN is of that shape
    (``111222333``): a person's number kept in the index, and every later discovery of the subject failed its
    holder's refusal entry on the audit log's personal-data guard after the write-ahead — 422 "a reference in
    the request looks like personal data" for the requester (the other holders' answers lost) and a
    write-ahead with no ending in the log. Now enrolment refuses such a code (422, nothing changed), and one
    that is in the index already (enrolled before) is refused with as ``unspecified``."""
    ref = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(ref)
    ask = BIBOB | {"subjects": _subjects(await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])),
                   "categories": ["company_registration"]}
    async with stack.client("kvk-handelsregister") as client:
        pseudonyms = await client.pseudonym_client(RIEC)
        confidential = {"partnership": RIEC, "confidential_reason": "111-222-333", "subjects": [{
            "type": kind, "polymorphic": pseudonyms.polymorphic(kind, number), "record_types": ["trade-name"],
            "categories": ["company_registration"], "confidential": True}]}
        refused = stack.post("kvk-handelsregister", "/v1/enrolments", confidential)
        assert refused.status_code == 422, refused.text
        assert "111-222-333" not in refused.text
        targets, _ = _discover(stack, ask)
        assert targets["kvk"]["outcome"] == "no-hit"  # the refused batch enrolled nothing
        try:
            await client.enrol(RIEC, [EnrolledSubject(kind, number, ["trade-name"], ["company_registration"],
                                                      confidential=True)], confidential_reason="under-embargo")
            with stack.container.engine.begin() as connection:  # as a gateway before the check kept it
                connection.execute(update(enrolments).where(enrolments.c.confidential_reason == "under-embargo")
                                   .values(confidential_reason="111222333"))
            targets, events = _discover(stack, ask)
        finally:
            await client.enrol(RIEC, [(kind, number, [], [])])  # out of the index again
    assert targets["kvk"]["outcome"] == "refused-by-holder"
    assert [r["message"] for r in targets["kvk"]["reasons"]] == ["the holder refused: unspecified"]
    assert _holder_events(events, "kvk") == [("holder.refused", ["holder:unspecified"])]
    assert "111222333" not in json.dumps(targets) + json.dumps(events)


async def test_re_enrolment_replaces_the_refusal_grounds_and_old_clients_enrol_without_them(stack: Stack) -> None:
    """The grounds are part of the subject's entry: enrolled again, the entry has the new ones (a subject no
    longer confidential is a hit again); a client that does not send them enrols none (additive); a reason
    that is no code is refused (422) and changes nothing."""
    ref = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(ref)
    ask = BIBOB | {"subjects": _subjects(await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])),
                   "categories": ["company_registration"]}

    def kvk() -> dict[str, Any]:
        targets, _ = _discover(stack, ask)
        return targets["kvk"]

    async with stack.client("kvk-handelsregister") as client:
        try:
            await client.enrol(RIEC, [EnrolledSubject(kind, number, ["trade-name"], ["company_registration"],
                                                      confidential=True)], confidential_reason="under-embargo")
            assert kvk()["outcome"] == "refused-by-holder"
            assert any("under-embargo" in r["message"] for r in kvk()["reasons"])
            pseudonyms = await client.pseudonym_client(RIEC)
            old_client: dict[str, Any] = {"partnership": RIEC, "subjects": [{
                "type": kind, "polymorphic": pseudonyms.polymorphic(kind, number), "record_types": ["trade-name"],
                "categories": ["company_registration"]}]}
            free_text = old_client | {"confidential_reason": "Jan Jansen is under investigation",
                                      "subjects": [old_client["subjects"][0] | {"confidential": False}]}
            assert stack.post("kvk-handelsregister", "/v1/enrolments", free_text).status_code == 422
            assert kvk()["outcome"] == "refused-by-holder"  # the refused request changed nothing
            assert stack.post("kvk-handelsregister", "/v1/enrolments", old_client).status_code == 200
            assert kvk()["outcome"] == "hit"  # re-enrolled without the flag: no longer confidential
            await client.enrol(RIEC, [EnrolledSubject(kind, number, ["trade-name"], ["company_registration"],
                                                      minor=True)])
            assert kvk()["outcome"] == "refused-by-holder"
            assert any("minor-not-allowed" in r["message"] for r in kvk()["reasons"])
        finally:
            await client.enrol(RIEC, [(kind, number, [], [])])  # out of the index again
    assert kvk()["outcome"] == "no-hit"
