"""A holder's own pseudonyms inside records never reach a requester that asked by opaque references.

An exchange by opaque references (partners that have not enrolled yet) passes the subjects through as they are,
but the holder may still name a related subject inside a record by its *own* pseudonym (it enrolled that
subject). The gateway translated such pseudonyms only when the request's subjects were pseudonyms, so in an
exchange by references the holder's pseudonym reached the requester as it was: stable, linkable to the holder's
records and to every later answer that names it. Now related subjects are translated (or withheld) whatever the
request's subjects are, as in an exchange by pseudonyms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request

from connectors import world as w
from tests.stack import Stack, stack_with_holder

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-960", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-960"},
         "categories": ["directorships"], "holders": ["kvk"]}
UNTRANSLATABLE = "kvk.v1." + "A" * 43  # pseudonym-shaped, but of no subject the KvK enrolled


class _Holder:
    """A KvK answering by reference that names the related company by its own pseudonym (as a value, a key and
    inside a text), and a partner by a pseudonym the gateway cannot translate."""

    def __init__(self) -> None:
        self.related = ""
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        body = await request.json()
        return {"status": "answered", "records": [
            {"record_id": f"DIR-{n}", "record_type": "directorship", "subject": subject, "category": "directorships",
             "fields": {"company": self.related, "companies": {self.related: {"role": "bestuurder"}},
                        "note": f"bestuurder van {self.related}", "partner": UNTRANSLATABLE, "role": "bestuurder"}}
            for n, subject in enumerate(body["subjects"])]}


@pytest.fixture(scope="module")
def kvk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, _Holder]]:
    holder = _Holder()
    with stack_with_holder(tmp_path_factory.mktemp("opaque-related"), holder.app, [w.KVK]) as stack:
        asyncio.run(stack.enrol_all())  # the KvK's index entries, the company among them
        yield stack, holder


def test_a_holder_pseudonym_in_an_exchange_by_references_comes_in_the_requesters_own(
        kvk: tuple[Stack, _Holder]) -> None:
    stack, holder = kvk
    director = stack.world.scenarios()["bibob-applicant"][1]
    [directorship] = [r for r in stack.world.records_of(w.KVK, director) if r.record_type == "directorship"]
    company = str(directorship.fields["company"])
    [holders] = asyncio.run(stack.own_pseudonyms(w.KVK, RIEC, [company]))
    [mine] = asyncio.run(stack.own_pseudonyms(MUNICIPALITY, RIEC, [company]))
    holder.related = holders
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {"subjects": [{"ref": director}]})
    assert answer.status_code == 200, answer.text
    [target] = answer.json()["targets"]
    assert target["outcome"] == "allowed", target
    [record] = target["records"]
    assert record["subject"] == director  # the reference asked about, as it was
    assert record["fields"] == {"company": mine, "companies": {mine: {"role": "bestuurder"}}, "note": None,
                                "partner": None, "role": "bestuurder"}
    assert holders not in answer.text
    assert UNTRANSLATABLE not in answer.text
    logged = json.dumps(stack.logged(answer.json()))
    assert holders not in logged
    assert mine not in logged
