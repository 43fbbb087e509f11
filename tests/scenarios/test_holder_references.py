"""A holder that keeps one person under two references, over real HTTP (a review): both references enrol as the
same person and come back with the same pseudonym. The simulated partner kept only the last pair, so an
exchange about the person found one reference's records — fewer than the holder has — and, when the reference
it forgot was a confidential one, the holder answered where it refuses. Now a pseudonym stands for every
reference of the person."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.store import PartnerStore, store_path
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
POLICE = "politie-bvh"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-700", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-700"}}


def _second_reference(stack: Stack, ref: str, second: str, record_id: str, *, confidential: bool) -> None:
    """The police hold ``ref``'s person a second time, as ``second`` with one more incident (a second file)."""
    kind, number = stack.world.identifier_of(ref)
    with sqlite3.connect(store_path(stack.partners_dir, POLICE)) as db:
        db.execute("INSERT INTO identifiers VALUES (?, ?, ?)", (second, kind, number))
        db.execute("INSERT INTO records VALUES (?, ?, 'incident', 'police_incidents', '{}')", (record_id, second))
        if confidential:
            db.execute("INSERT INTO confidential VALUES (?)", (second,))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("holder-references")) as running:
        plain = running.world.scenarios()["bibob-applicant"][1]
        _second_reference(running, plain, f"{plain}-second-file", "incident-second-file", confidential=False)
        other = running.world.scenarios()["unexplained-wealth"][0]
        # sorts before the plain reference, so it was the one the store forgot
        _second_reference(running, other, f"subj-0{other[5:]}", "incident-confidential", confidential=True)
        asyncio.run(running.enrol_all())
        yield running


def _police(stack: Stack, pseudonyms: list[str]) -> dict[str, Any]:
    body = BIBOB | {"subjects": [{"ref": p} for p in pseudonyms], "holders": ["politie"],
                    "categories": ["police_incidents"]}
    response = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert response.status_code == 200, response.text
    return dict({t["holder"]: t for t in response.json()["targets"]}["politie"])


def _held(stack: Stack, refs: list[str]) -> set[str]:
    """The police's own incident records under ``refs``, read from their database."""
    store = PartnerStore(store_path(stack.partners_dir, POLICE))
    try:
        return {r.record_id for r in store.records(refs, ["police_incidents"])}
    finally:
        store.close()


async def test_an_exchange_about_a_person_under_two_references_answers_the_records_of_both(stack: Stack) -> None:
    ref = stack.world.scenarios()["bibob-applicant"][1]
    held = _held(stack, [ref, f"{ref}-second-file"])
    assert "incident-second-file" in held
    assert len(held) > 1  # records under both references
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    target = _police(stack, mine)
    assert target["outcome"] == "allowed", target
    assert {r["record_id"] for r in target["records"]} == held
    assert {r["subject"] for r in target["records"]} == set(mine)  # all about the one person asked


async def test_a_confidential_second_reference_keeps_the_holder_refusing(stack: Stack) -> None:
    """The attack the forgotten reference allowed: the police keep the person confidential under one of their
    two references; asked by pseudonym, they must refuse, not answer from the other reference."""
    ref = stack.world.scenarios()["unexplained-wealth"][0]
    assert _held(stack, [ref])  # the plain reference alone has records to give away
    target = _police(stack, await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref]))
    assert target["outcome"] == "refused-by-holder", target
    assert target["records"] == []


def test_a_store_made_before_keeps_its_pseudonyms_and_takes_a_second_reference(tmp_path: Any) -> None:
    """A partner database made when a pseudonym stood for one reference is moved on opening, losing nothing."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE pseudonyms (partnership TEXT NOT NULL, pseudonym TEXT NOT NULL, "
                   "subject TEXT NOT NULL, PRIMARY KEY (partnership, pseudonym))")
        db.execute("INSERT INTO pseudonyms VALUES ('p', 'pseudonym-1', 'subj-a')")
    db.close()
    store = PartnerStore(path)
    try:
        assert store.resolve("p", ["pseudonym-1"]) == {"pseudonym-1": ["subj-a"]}
        store.remember_pseudonyms("p", [("pseudonym-1", "subj-b"), ("pseudonym-1", "subj-a")])
        assert store.resolve("p", ["pseudonym-1", "unknown"]) == {"pseudonym-1": ["subj-a", "subj-b"],
                                                                  "unknown": ["unknown"]}
    finally:
        store.close()
