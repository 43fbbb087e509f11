"""A requester's own pseudonyms inside the records it provides never reach the holder (real HTTP).

A requester hands a holder records (S2: the Belastingdienst gives the KvK the dissolution grounds). The records'
subject was put into the holder's pseudonym, but their fields went as they were: a related subject named there
by the requester's own pseudonym (the company's director) reached the holder in the requester's domain —
stable, and linkable to every later request of the requester that names it. The other way round (a holder's
pseudonym in its records) the gateway already translated. Now a pseudonym in a provided record's fields is put
into the holder's pseudonym when the requester enrolled that subject (else withheld, so that the gateway is no
translation service for arbitrary points), and a text with one inside is withheld.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request

from connectors import world as w
from tests.stack import Stack, stack_with_holder

RIEC = "riec-amsterdam-amstelland"
TAX = "belastingdienst-ivs"


class _Holder:
    """A KvK that keeps every provided record it is sent and answers with no records."""

    def __init__(self) -> None:
        self.kept: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        provided = (await request.json()).get("provided", [])
        self.kept += provided
        return {"status": "answered", "records": [], "received": len(provided)}


@pytest.fixture(scope="module")
def kvk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, _Holder]]:
    holder = _Holder()
    with stack_with_holder(tmp_path_factory.mktemp("provided-related"), holder.app, [w.KVK]) as stack:
        asyncio.run(stack.enrol_all())  # the Belastingdienst's index entries: whom it may name by pseudonym
        yield stack, holder


def test_the_requesters_pseudonyms_in_provided_records_reach_the_holder_in_its_own(
        kvk: tuple[Stack, _Holder]) -> None:
    stack, holder = kvk
    company = stack.world.scenarios()["malafide-dissolution"][0]
    director = next(ref for ref in stack.world.scenarios()["bibob-applicant"]
                    if ref != company and stack.world.records_of(TAX, ref))  # one the Belastingdienst enrolled
    stranger = stack.world.scenarios()["no-records"][0]  # one it did not
    mine_company, mine_director, mine_stranger = asyncio.run(stack.own_pseudonyms(TAX, RIEC,
                                                                                  [company, director, stranger]))
    theirs_company, theirs_director = asyncio.run(stack.own_pseudonyms(w.KVK, RIEC, [company, director]))
    fields = {"missing_returns": ["2024"], "director": mine_director, "directors": {mine_director: "bestuurder"},
              "note": f"bestuurder {mine_director}", "partner": mine_stranger}
    response = stack.post(TAX, "/v1/exchanges", {
        "partnership": RIEC, "purpose": "malafide-company-dissolution", "legal_basis": "WGS (RIEC) with BW 2:19a",
        "case_reference": "BD-2026-95", "signal": {"type": "missing-returns", "reference": "BD-SIG-95"},
        "subjects": [{"ref": mine_company}], "holders": ["kvk"], "categories": ["company_registration"],
        "provide": [{"subject": mine_company, "category": "tax_compliance", "fields": fields}]})
    assert response.status_code == 200, response.text
    assert response.json()["targets"][0]["outcome"] == "allowed"
    [record] = holder.kept
    assert record["subject"] == theirs_company
    assert record["fields"] == {"missing_returns": ["2024"], "director": theirs_director,
                                "directors": {theirs_director: "bestuurder"}, "note": None, "partner": None}
    assert mine_director not in str(holder.kept)
    assert mine_stranger not in str(holder.kept)
    assert mine_company not in str(holder.kept)
