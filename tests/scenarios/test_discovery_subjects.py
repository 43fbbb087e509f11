"""A data-subject request finds the hits of index-answered discovery, and of hit/no-hit holders in an exchange
(over real HTTP).

A hit is itself a disclosure: it tells the requester that a holder holds data on the person. Before, the
hit's ``disclosure`` entry named no subject (only the ``discovery.queried`` entry listed them, in ``extra``),
so the contact point's look-ups, which search the entries' subject, did not show who learned that. Now each
subject asked gets one ``disclosure`` entry naming it and the holders that answered hit — the same for every
subject of the request, so the requester's own privacy officers read nothing the answer did not say, and
naming no holder as a party, so a holder's officers never learn which of their records were asked about. A
hit/no-hit holder's hit in an exchange was logged the same way (no subject) and is now one entry per subject,
as the exchange logs records."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from connectors.enrolment import enrol
from connectors.profiles import PROFILES
from connectors.store import PartnerStore, store_path
from gateway.client.pseudonyms import PseudonymClient
from gateway.enrolment.setup import pseudonym_service
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
REQUESTER_ORG = "gemeente-amsterdam"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-700", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-700"}}
ASKED = ["company_registration"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose index holds one subject only (no partner enrolled its own): a person, enrolled by the KvK."""
    with running_stack(tmp_path_factory.mktemp("discovery-subjects")) as running:
        kind, number = running.world.identifier_of(_people(running)[0])

        async def enrol() -> None:
            async with running.client("kvk-handelsregister") as kvk:
                await kvk.enrol(RIEC, [(kind, number, ["trade-name"], ASKED)])

        asyncio.run(enrol())
        yield running


def _people(stack: Stack) -> list[str]:
    """Two people of the simulated world: the index holds the first only (see ``stack``)."""
    return [stack.world.scenarios()["no-records"][0], stack.world.scenarios()["unexplained-wealth"][0]]


def _shared(stack: Stack, mine: str) -> str:
    """The partnership-domain pseudonym the log holds for one of the municipality's pseudonyms."""
    return pseudonym_service(stack.container).to_partnership(mine, RIEC, REQUESTER_ORG)


def _discover(stack: Stack, mine: list[str]) -> dict[str, Any]:
    answer = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": [{"ref": p} for p in mine],
                                                                "categories": ASKED})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _contact_point(stack: Stack) -> str:
    return stack.person("cp-discovery", REQUESTER_ORG, ["contact-point"])


def _found(stack: Stack, shared: str, discovery_id: str) -> list[dict[str, Any]]:
    """The contact point's look-up by the log's pseudonym: the entries of one discovery."""
    answer = stack.call(_contact_point(stack), "GET", f"/v1/audit/subjects/{shared}/disclosures")
    assert answer.status_code == 200, answer.text
    return [e["entry"]["event"] for e in answer.json() if e["entry"]["event"]["exchange_id"] == discovery_id]


def _entries_of(stack: Stack, discovery_id: str) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        return [json.loads(c)["event"] for c in connection.execute(select(audit_entries.c.canonical)).scalars()
                if json.loads(c)["event"]["exchange_id"] == discovery_id]


def _hits(answer: dict[str, Any]) -> list[str]:
    return sorted(t["holder"] for t in answer["targets"] if t["outcome"] == "hit")


async def test_the_contact_point_finds_a_discovery_hit_about_the_person(stack: Stack) -> None:
    held = _people(stack)[0]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [held])
    answer = _discover(stack, mine)
    assert _hits(answer) == ["kvk"]
    shared = _shared(stack, mine[0])

    found = _found(stack, shared, answer["discovery_id"])
    assert len(found) == 1, found
    [entry] = found
    assert entry["event_type"] == "disclosure"
    assert entry["data_subject"] == {"pseudonym": shared}
    assert entry["requester"]["org"] == REQUESTER_ORG
    assert entry["processing_activity"] == {"partnership": RIEC, "purpose": "bibob-integrity-check"}
    assert [h["holder"] for h in entry["extra"]["hits"]] == _hits(answer)  # the hit holders only, no no-hit
    assert entry["extra"]["subjects_asked"] == 1
    assert set(entry["categories"]) <= set(ASKED)

    kind, number = stack.world.identifier_of(held)  # the same through the look-up by identifier
    key = stack.get(MUNICIPALITY, "/v1/pseudonyms/key").json()["public_key"]
    by_identifier = stack.call(_contact_point(stack), "POST", "/v1/audit/subjects/disclosures", {
        "partnership": RIEC, "subject": {"type": kind, "polymorphic": PseudonymClient(key).polymorphic(kind, number)}})
    assert by_identifier.status_code == 200, by_identifier.text
    assert [e["entry"]["event"] for e in by_identifier.json()
            if e["entry"]["event"]["exchange_id"] == answer["discovery_id"]] == found

    logged = json.dumps(_entries_of(stack, answer["discovery_id"]))  # no identifier, no reference, no own pseudonym
    assert number not in logged
    assert held not in logged
    assert mine[0] not in logged


async def test_a_no_hit_is_not_listed_as_a_disclosure_about_the_person(stack: Stack) -> None:
    nobody = _people(stack)[1]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [nobody])
    answer = _discover(stack, mine)
    assert _hits(answer) == []
    assert _found(stack, _shared(stack, mine[0]), answer["discovery_id"]) == []
    # The no-hit answers are still in the log, per holder, found through the discovery's id.
    assert any(e["event_type"] == "disclosure" and e["extra"].get("outcome") == "no-hit"
               for e in _entries_of(stack, answer["discovery_id"]))


async def test_several_subjects_tell_no_one_more_than_the_answer_did(stack: Stack) -> None:
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, _people(stack))  # the first is held, the second not
    answer = _discover(stack, mine)
    assert _hits(answer) == ["kvk"]  # a hit for the two together: the answer does not say for which
    held, other = (_found(stack, _shared(stack, p), answer["discovery_id"]) for p in mine)
    assert len(held) == len(other) == 1
    assert held[0]["extra"]["subjects_asked"] == other[0]["extra"]["subjects_asked"] == 2
    # The entries differ only in the subject they name: the requester's privacy officers, who read them, learn
    # nothing about which subject the holder holds.
    assert {k: v for k, v in held[0].items() if k != "data_subject"} == \
        {k: v for k, v in other[0].items() if k != "data_subject"}

    # The holder is no party to them: its privacy officers do not learn which subjects were asked about.
    kvk_officer = stack.person("po-kvk-discovery", "kvk", ["privacy-officer"])
    seen = stack.call(kvk_officer, "GET", "/v1/audit/entries?event_type=disclosure&limit=500")
    assert seen.status_code == 200, seen.text
    mine_seen = [e["entry"]["event"] for e in seen.json()["entries"]
                 if e["entry"]["event"]["exchange_id"] == answer["discovery_id"]]
    assert mine_seen, "the holder still sees its own hit, per holder"
    assert all(e["data_subject"] is None for e in mine_seen)


async def test_the_console_lookup_page_shows_the_hit(stack: Stack) -> None:
    held = _people(stack)[0]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [held])
    answer = _discover(stack, mine)
    _contact_point(stack)  # the account
    csrf = re.compile(r'name="csrf_token" value="([^"]+)"')
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as console:
        form = console.get("/console/login")
        match = csrf.search(form.text)
        assert match
        signed_in = console.post("/console/login", data={
            "username": "cp-discovery", "password": "correct horse battery staple", "csrf_token": match.group(1),
            "next": "/console/subjects"})
        assert signed_in.status_code in {200, 303}, signed_in.text
        page = console.get("/console/subjects")
        assert page.status_code == 200, page.text
        match = csrf.search(page.text)
        assert match
        found = console.post("/console/subjects", data={"pseudonym": _shared(stack, mine[0]),
                                                         "csrf_token": match.group(1)})
    assert found.status_code == 200, found.text
    table = found.text.split('id="disclosures"', 1)[1].split("</table>", 1)[0]
    index = next(e["index"] for e in stack.call(_contact_point(stack), "GET",
                                                f"/v1/audit/subjects/{_shared(stack, mine[0])}/disclosures").json()
                 if e["entry"]["event"]["exchange_id"] == answer["discovery_id"])
    row = next(r for r in table.split("<tr>") if r.startswith(f"<td>{index}</td>"))
    assert "<td>kvk</td>" in row
    assert "company_registration" in row


@pytest.fixture(scope="module")
def fiod_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway where the FIOD (a hit/no-hit holder for Bibob checks) enrolled what it holds, so that it is
    asked by its own pseudonyms."""
    with running_stack(tmp_path_factory.mktemp("hit-only-exchange")) as running:
        store = PartnerStore(store_path(running.partners_dir, "fiod-ois"))

        async def enrolled() -> int:
            register = running.container.services["register"].current()
            async with running.client("fiod-ois") as fiod:
                return await enrol(store, fiod, register.partnerships_of_system("fiod-ois"),
                                   profile=PROFILES["fiod-ois"])

        try:
            assert asyncio.run(enrolled()) > 0
        finally:
            store.close()
        yield running


async def test_a_hit_only_holders_hit_in_an_exchange_is_found_per_subject(fiod_stack: Stack) -> None:
    stack = fiod_stack
    people = [stack.world.scenarios()["bibob-applicant"][0], stack.world.scenarios()["no-records"][0]]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, people)  # the applicant is under investigation
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {
        "subjects": [{"ref": p} for p in mine], "holders": ["fiod"], "categories": ["ongoing_investigation"]})
    assert answer.status_code == 200, answer.text
    [fiod] = answer.json()["targets"]
    assert (fiod["outcome"], fiod["hit_only"], fiod["hit"]) == ("allowed", True, True)
    exchange_id = answer.json()["exchange_id"]

    found = [_found(stack, _shared(stack, p), exchange_id) for p in mine]
    assert [len(f) for f in found] == [1, 1]
    for entry, mine_one in zip((f[0] for f in found), mine, strict=True):
        assert entry["data_subject"] == {"pseudonym": _shared(stack, mine_one)}
        assert entry["holder"] == "fiod"  # asked by its own pseudonyms: it knows whom it answered about
        assert entry["requester"]["org"] == REQUESTER_ORG
        assert entry["categories"] == ["ongoing_investigation"]
        assert entry["extra"] == {"hit_only": True, "hit": True, "subjects_asked": 2}
    # The same entry for both: not which of them the FIOD investigates, which the answer did not say either.
    assert {k: v for k, v in found[0][0].items() if k != "data_subject"} == \
        {k: v for k, v in found[1][0].items() if k != "data_subject"}
    logged = json.dumps(_entries_of(stack, exchange_id))
    assert not any(p in logged for p in people + mine)


async def test_a_hit_only_holders_no_hit_in_an_exchange_names_no_subject(fiod_stack: Stack) -> None:
    stack = fiod_stack
    nobody = stack.world.scenarios()["no-records"][0]
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [nobody])
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {
        "subjects": [{"ref": p} for p in mine], "holders": ["fiod"], "categories": ["ongoing_investigation"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["targets"][0]["hit"] is False
    exchange_id = answer.json()["exchange_id"]
    assert _found(stack, _shared(stack, mine[0]), exchange_id) == []
    [entry] = [e for e in _entries_of(stack, exchange_id) if e["event_type"] == "disclosure"]
    assert (entry["data_subject"], entry["extra"]) == (None, {"hit_only": True, "hit": False})
