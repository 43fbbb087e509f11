"""Enrolment as a partner developer gets it wrong and an attacker tries it, over real HTTP (a review): one
subject twice in a batch, categories the register does not know, free text where a code belongs. Each batch
is written completely or not at all, and what the index answers afterwards is asserted through discovery."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from connectors import enrolment
from connectors.profiles import PROFILES
from connectors.store import PartnerStore
from gateway.client.api import EnrolledSubject
from gateway.client.pseudonyms import PseudonymClient
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
KVK = "kvk-handelsregister"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-600", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-600"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("enrolment-input")) as running:
        yield running


Item = Callable[..., dict[str, Any]]


@pytest.fixture
async def subject(stack: Stack) -> AsyncIterator[tuple[Item, Callable[[list[str]], str]]]:
    """A subject nobody holds records on: ``item(**fields)`` is one enrolment item for it as the KvK sends it
    (a fresh polymorphic pseudonym each time), ``kvk(categories)`` the KvK's discovery outcome for it."""
    ref = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(ref)
    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    async with stack.client(KVK) as client:
        pseudonyms: PseudonymClient = await client.pseudonym_client(RIEC)

    def item(**fields: Any) -> dict[str, Any]:
        return {"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number), "record_types": ["trade-name"],
                "categories": ["company_registration"]} | fields

    def kvk(categories: list[str]) -> str:
        response = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": [{"ref": p} for p in mine],
                                                                      "categories": categories})
        assert response.status_code == 200, response.text
        return str({t["holder"]: t["outcome"] for t in response.json()["targets"]}["kvk"])

    yield item, kvk
    assert _enrol(stack, [item(record_types=[], categories=[])]).status_code == 200  # out of the index again


def _enrol(stack: Stack, subjects: list[dict[str, Any]], **body: Any) -> Any:
    return stack.post(KVK, "/v1/enrolments", {"partnership": RIEC, "subjects": subjects} | body)


@pytest.mark.parametrize("confidential_first", [True, False])
async def test_a_subject_twice_in_one_batch_keeps_its_confidentiality(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]], confidential_first: bool) -> None:
    """Found by a review: a partner with two references for one person (the partner store enrols per
    reference) sent the subject twice, one entry confidential and one not; the last entry won, so the index
    answered `hit` for a subject the partner refuses discovery on — what the confidentiality protects. Now an
    entry that says confidential keeps the subject confidential, in whatever order the batch lists them."""
    item, kvk = subject
    entries = [item(confidential=True), item()]
    answer = _enrol(stack, entries if confidential_first else entries[::-1], confidential_reason="under-embargo")
    assert answer.status_code == 200, answer.text
    assert answer.json()["indexed"] == 1  # one subject, one index entry
    assert len(set(answer.json()["pseudonyms"])) == 2  # one (fresh) encryption per item sent, in order
    assert kvk(["company_registration"]) == "refused-by-holder"


async def test_a_subject_twice_in_one_batch_is_enrolled_with_the_records_of_both(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]]) -> None:
    """The same: the record types and categories of every entry count (the last one alone dropped the first's
    categories, so discovery in them answered `no-hit`), and an entry without records beside one with records
    does not take the subject out of the index; a minor stays a minor."""
    item, kvk = subject
    answer = _enrol(stack, [item(categories=["directorships"], record_types=["directorship"]), item(),
                            item(record_types=[], categories=[])])
    assert answer.status_code == 200, answer.text
    assert (answer.json()["indexed"], answer.json()["removed"]) == (1, 0)
    assert kvk(["directorships"]) == "hit"
    assert kvk(["company_registration"]) == "hit"
    assert _enrol(stack, [item(minor=True), item()]).status_code == 200
    assert kvk(["company_registration"]) == "refused-by-holder"


async def test_a_subject_under_two_references_is_merged_even_where_the_connector_splits_its_batches(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the HTTP connector enrols in chunks (of 500), and a person held under two references
    whose entries fell into two chunks was still 'last wins' — the gateway merges one subject's entries only
    within one batch — so a confidential entry followed by a plain one made the index answer `hit` where the
    partner refuses. The connector now keeps every person's entries in one chunk (here chunks of 2, with the
    person's two entries on either side of a boundary as the references sort)."""
    _item, kvk = subject
    kind, number = stack.world.identifier_of(stack.world.scenarios()["no-records"][0])
    other = "99999990"  # a company nobody holds records on, enrolled first
    assert other not in {c.kvk_number for c in stack.world.companies}
    store = PartnerStore(tmp_path / "kvk.sqlite")
    with sqlite3.connect(store.path) as db:
        db.executemany("INSERT INTO identifiers VALUES (?, ?, ?)",
                       [("ref-0-other", "kvk", other), ("ref-1-confidential", kind, number),
                        ("ref-2-plain", kind, f" {number} ")])  # another spelling of the same number
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, '{}')",
                       [("rec-0", "ref-0-other", "trade-name", "company_registration"),
                        ("rec-1", "ref-1-confidential", "trade-name", "company_registration"),
                        ("rec-2", "ref-2-plain", "trade-name", "company_registration")])
        db.execute("INSERT INTO confidential VALUES ('ref-1-confidential')")
    monkeypatch.setattr(enrolment, "CHUNK", 2)
    try:
        async with stack.client(KVK) as client:
            try:
                profile = replace(PROFILES[KVK], refusal_reason="under-embargo")
                assert await enrolment.enrol(store, client, [RIEC], profile=profile) == 3
                assert kvk(["company_registration"]) == "refused-by-holder"
            finally:  # the other company out of the index again (the fixture takes the person out)
                await client.enrol(RIEC, [("kvk", other, [], [])])
    finally:
        store.close()


def test_the_connectors_chunks_never_split_a_person() -> None:
    """Every entry in exactly one chunk; a person's entries together and in their order; no chunk over the
    size unless one person alone has more entries; persons in the order of their first entry."""
    people = ["a", "b", "a", "c", "b", "a", "d", "e", "e", "f"]
    numbers = {person: f"{10000000 + n}" for n, person in enumerate(sorted(set(people)))}
    subjects = [EnrolledSubject("kvk", numbers[person], ["trade-name"], ["company_registration"])
                for person in people]
    for size in (1, 2, 3, 4, 10, 500):
        batches = enrolment.chunks(subjects, size)
        sent = [n for batch in batches for n in batch]
        assert sorted(sent) == list(range(len(people)))
        for batch in batches:
            held = [people[n] for n in batch]
            assert len(batch) <= size or len(set(held)) == 1
            for person in set(held):
                assert [n for n in batch if people[n] == person] == [n for n, p in enumerate(people) if p == person]
        assert list(dict.fromkeys(people[n] for n in sent)) == list(dict.fromkeys(people))


async def test_categories_the_register_does_not_know_are_refused_and_nothing_is_written(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]]) -> None:
    """Found by a review: a category the register does not know (a typo, one of a newer register) was indexed
    as it came, and discovery in the category meant answered `no-hit` for ever after — the partner believed
    the subject enrolled. The whole batch is refused (422) naming the unknown category, and nothing of it is
    written: the subject's entry is the one before."""
    item, kvk = subject
    assert _enrol(stack, [item()]).status_code == 200
    assert kvk(["company_registration"]) == "hit"
    typo = _enrol(stack, [item(record_types=[], categories=[]), item(categories=["company_registraton"])])
    assert typo.status_code == 422, typo.text
    assert typo.headers["content-type"].startswith("application/problem+json")
    assert "company_registraton" in typo.json()["detail"]
    assert "item 1" in typo.json()["detail"]
    assert kvk(["company_registration"]) == "hit"  # the first item's removal was not written either


@pytest.mark.parametrize("field", ["record_types", "categories"])
async def test_free_text_where_a_record_type_or_category_belongs_is_refused(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]], field: str) -> None:
    """Record types and categories are codes (``trade-name``, ``company_registration``), as in a holder's
    records: free text there could name the person and would sit in the index; 422 without echoing it."""
    item, _kvk = subject
    text = "Jan Jansen 12-03-1961 Damrak 1"
    refused = _enrol(stack, [item(**{field: [text]})])
    assert refused.status_code == 422, refused.text
    assert text not in refused.text
    assert "Jansen" not in refused.text


async def test_a_record_type_that_is_a_person_s_number_is_refused_not_an_audit_outage(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]]) -> None:
    """Found by a review: a record type is a code by its pattern, and a code can carry a BSN (``x-123456782``,
    ``dossier_111222333``). Enrolment took it and failed only on the audit log's personal-data guard, when
    writing the batch's ``index.enrolment`` entry (which names the record types): 503 "the audit log could not
    be written" and an ``audit_write_failed`` error — a partner's bad input taken for an outage of the log, and
    retried as one. Now it is the partner's error (422, naming the item, the kind found and never the value),
    before any pseudonym is made; nothing is enrolled."""
    item, kvk = subject
    assert _enrol(stack, [item()]).status_code == 200
    for record_type in ("x-123456782", "dossier_111-222-333"):
        refused = _enrol(stack, [item(record_types=[], categories=[]), item(record_types=["trade-name", record_type])])
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "item 1" in refused.json()["detail"]
        assert record_type not in refused.text
        assert "123456782" not in refused.text
        assert kvk(["company_registration"]) == "hit"  # the first item's removal was not written either


async def test_a_batch_of_more_record_types_than_its_audit_entry_can_name_is_refused_not_an_audit_outage(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]]) -> None:
    """Found by a review: a batch's ``index.enrolment`` entry lists its record types, and an audit entry holds at
    most 32 KiB. A batch of 600 subjects with a record type each (of the pattern's length, well inside the
    request's limits) made an entry too large to write: 503 "the audit log could not be written", an
    ``audit_write_failed`` error, and a partner retrying an outage that was its own input. Now 422 with the
    limit, nothing enrolled; a hundred types are still taken."""
    item, kvk = subject
    assert _enrol(stack, [item()]).status_code == 200
    many = [item(record_types=[], categories=[])] + [item(record_types=[f"t{n:03d}-{'x' * 58}"]) for n in range(600)]
    refused = _enrol(stack, many)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "at most 100 different record types" in refused.json()["detail"]
    assert kvk(["company_registration"]) == "hit"  # the first item's removal was not written either
    taken = _enrol(stack, [item(record_types=[f"t{n:03d}-{'x' * 58}"]) for n in range(100)])
    assert taken.status_code == 200, taken.text


@pytest.mark.parametrize("category", ["company_123456782", "dossier_123456782_x"])
async def test_a_person_s_number_in_an_unknown_category_reaches_neither_the_answer_nor_the_log(
        stack: Stack, subject: tuple[Item, Callable[[list[str]], str]], capfd: pytest.CaptureFixture[str],
        category: str) -> None:
    """Found by a review: the 422 for a category the register does not know names it, and the gateway logs the
    problem's detail. The scrubber of both masked a BSN only between word boundaries, and ``_`` is a word
    character: ``company_123456782`` (the category pattern allows it, and the audit log's guard takes it for a
    BSN) reached the operator's log as it came. Masked now wherever the guard would refuse it."""
    item, kvk = subject
    assert _enrol(stack, [item()]).status_code == 200
    capfd.readouterr()
    refused = _enrol(stack, [item(record_types=[], categories=[]), item(categories=[category])])
    logs = capfd.readouterr()
    assert refused.status_code == 422, refused.text
    assert "item 1" in refused.json()["detail"]
    digits = "".join(c for c in category if c.isdigit())
    for said in (refused.text, logs.out, logs.err):
        assert digits[-5:] not in said, said
    assert kvk(["company_registration"]) == "hit"  # nothing of the batch was written
