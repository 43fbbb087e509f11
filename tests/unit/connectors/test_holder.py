"""A simulated holder's rules without HTTP: its own store, category-bound answers, refusals, over-sharing,
request-id deduplication and hit/no-hit discovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors import world as w
from connectors.dedup import ReplayCache, RequestIdReused
from connectors.holder import Holder
from connectors.profiles import PROFILES
from connectors.protocol import HolderAnswer, HolderDiscovery, HolderQuery, HolderRecord
from connectors.store import PartnerStore, store_path
from connectors.world import World, build_world


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(2025)


@pytest.fixture
def stores(tmp_path: Path, world: World) -> Iterator[dict[str, PartnerStore]]:
    opened = {system: PartnerStore(store_path(tmp_path, system)) for system in PROFILES}
    for system, store in opened.items():
        store.seed_from(world, system)
    yield opened
    for store in opened.values():
        store.close()


def _query(subjects: list[str], categories: list[str], request_id: str | None = "q-1",
           provided: list[HolderRecord] | None = None) -> HolderQuery:
    return HolderQuery(request_id=request_id, partnership="riec-amsterdam-amstelland",
                       purpose="bibob-integrity-check", requester_organisation="gemeente-amsterdam",
                       categories=categories, subjects=subjects, provided=provided or [])


# -- the store -------------------------------------------------------------------------------------
def test_each_partner_has_its_own_file_with_only_its_slice(tmp_path: Path, stores: dict[str, PartnerStore],
                                                           world: World) -> None:
    assert sorted(p.name for p in tmp_path.glob("partner-*.sqlite")) == sorted(
        f"partner-{s}.sqlite" for s in PROFILES)
    for system, store in stores.items():
        assert store.count() == len(world.records[system])


def test_seeding_is_idempotent_and_a_new_world_reseeds(tmp_path: Path, world: World) -> None:
    store = PartnerStore(tmp_path / "police.sqlite")
    assert store.seed_from(world, w.POLICE) is True
    assert store.seed_from(world, w.POLICE) is False
    other = build_world(7)
    assert store.seed_from(other, w.POLICE) is True
    assert store.count() == len(other.records[w.POLICE])
    store.close()


# -- answering -------------------------------------------------------------------------------------
def test_answers_only_the_asked_categories(stores: dict[str, PartnerStore], world: World) -> None:
    director = world.scenarios()[w.BIBOB_APPLICANT][1]
    answer, replayed = Holder(PROFILES[w.POLICE], stores[w.POLICE]).query(_query([director], ["police_incidents"]))
    assert answer.status == "answered"
    assert not replayed
    assert len(answer.records) == 2
    assert {r.category for r in answer.records} == {"police_incidents"}  # the CIE note stays home


def test_over_share_adds_one_unasked_category(stores: dict[str, PartnerStore], world: World) -> None:
    director = world.scenarios()[w.BIBOB_APPLICANT][1]
    holder = Holder(PROFILES[w.POLICE], stores[w.POLICE], over_share=True)
    answer, _ = holder.query(_query([director], ["police_incidents"]))
    assert {r.category for r in answer.records} == {"police_incidents", "criminal_intelligence"}


def test_police_refuses_for_a_confidential_subject(stores: dict[str, PartnerStore], world: World) -> None:
    secret = world.scenarios()[w.POLICE_CONFIDENTIAL][0]
    answer, _ = Holder(PROFILES[w.POLICE], stores[w.POLICE]).query(_query([secret], ["police_incidents"]))
    assert answer.status == "refused"
    assert answer.refusal_reason == "investigation-confidentiality"
    assert answer.records == []


def test_a_repeated_request_id_gets_the_first_answer_and_provided_records_arrive_once(
        stores: dict[str, PartnerStore], world: World) -> None:
    company = world.scenarios()[w.MALAFIDE_DISSOLUTION][0]
    grounds = HolderRecord(record_id="p-1", record_type="provided", subject=company, category="tax_compliance",
                           fields={"dissolution_grounds": "BW 2:19a"})
    holder = Holder(PROFILES[w.KVK], stores[w.KVK])
    query = _query([company], ["company_registration"], "q-dissolve", [grounds])
    first, first_replayed = holder.query(query)
    second, second_replayed = holder.query(query)
    assert first == second
    assert (first_replayed, second_replayed) == (False, True)
    assert first.received == 1
    assert stores[w.KVK].received(company) == [("tax_compliance", {"dissolution_grounds": "BW 2:19a"})]


def test_a_request_id_reused_for_another_query_is_refused(stores: dict[str, PartnerStore], world: World) -> None:
    holder = Holder(PROFILES[w.POLICE], stores[w.POLICE])
    minor, wealthy = world.scenarios()[w.MINOR][0], world.scenarios()[w.UNEXPLAINED_WEALTH][0]
    holder.query(_query([minor], ["police_incidents"], "q-same"))
    with pytest.raises(RequestIdReused):
        holder.query(_query([wealthy], ["police_incidents"], "q-same"))


def test_without_request_id_every_query_is_answered_afresh(stores: dict[str, PartnerStore], world: World) -> None:
    holder = Holder(PROFILES[w.POLICE], stores[w.POLICE])
    minor = world.scenarios()[w.MINOR][0]
    assert holder.query(_query([minor], ["police_incidents"], None))[1] is False
    assert holder.query(_query([minor], ["police_incidents"], None))[1] is False


def test_every_answer_echoes_the_request_id_it_answers(stores: dict[str, PartnerStore], world: World) -> None:
    """The reference holder always echoes the request id (optional in protocol v1): answered, refused, replayed
    and discovery alike, so the gateway can tell its answer from one to another request."""
    holder = Holder(PROFILES[w.POLICE], stores[w.POLICE])
    director, secret = world.scenarios()[w.BIBOB_APPLICANT][1], world.scenarios()[w.POLICE_CONFIDENTIAL][0]
    answered = holder.query(_query([director], ["police_incidents"], "q-echo"))
    replayed = holder.query(_query([director], ["police_incidents"], "q-echo"))
    refused, _ = holder.query(_query([secret], ["police_incidents"], "q-echo-refused"))
    assert [(a.status, a.request_id, again) for a, again in (answered, replayed)] == [
        ("answered", "q-echo", False), ("answered", "q-echo", True)]
    assert (refused.status, refused.request_id) == ("refused", "q-echo-refused")
    assert holder.query(_query([director], ["police_incidents"], None))[0].request_id is None
    discovery = HolderDiscovery(request_id="d-echo", partnership="riec-amsterdam-amstelland",
                                purpose="bibob-integrity-check", subjects=[director])
    assert holder.discover(discovery).request_id == "d-echo"
    assert holder.discover(discovery.model_copy(update={"subjects": [secret]})).request_id == "d-echo"


def test_discovery_names_record_types_only(stores: dict[str, PartnerStore], world: World) -> None:
    customer, nobody = world.scenarios()[w.BANK_CUSTOMER][0], world.scenarios()[w.NO_RECORDS][0]
    discovery = HolderDiscovery(request_id="d-1", partnership="fec", purpose="taskforce-subject-check",
                                subjects=[customer, nobody])
    hits = Holder(PROFILES[w.BANK], stores[w.BANK]).discover(discovery).hits
    assert hits == {customer: ["account", "flagged-transaction"]}
    narrowed = discovery.model_copy(update={"categories": ["flagged_transactions"]})
    assert Holder(PROFILES[w.BANK], stores[w.BANK]).discover(narrowed).hits == {customer: ["flagged-transaction"]}


# -- the replay cache ------------------------------------------------------------------------------
def test_a_retry_arriving_mid_answer_waits_for_the_first_answer() -> None:
    cache: ReplayCache[int] = ReplayCache()
    calls: list[int] = []
    results: list[tuple[int, bool]] = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 42

    threads = [threading.Thread(target=lambda: results.append(cache.answer_once("r", "f", slow))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(results) == [(42, False), (42, True), (42, True)]


def test_a_failed_first_attempt_is_not_remembered() -> None:
    cache: ReplayCache[int] = ReplayCache()

    def boom() -> int:
        raise RuntimeError("database locked")

    with pytest.raises(RuntimeError):
        cache.answer_once("r", "f", boom)
    assert cache.answer_once("r", "f", lambda: 7) == (7, False)


def test_the_window_is_bounded() -> None:
    cache: ReplayCache[int] = ReplayCache(size=2)
    for n in range(3):
        cache.answer_once(f"r{n}", "f", lambda n=n: n)  # type: ignore[misc]
    assert cache.answer_once("r0", "other", lambda: 9) == (9, False)  # forgotten, so not a reuse


def test_the_window_keeps_ids_in_flight_and_stays_bounded() -> None:
    """An id still being answered is never evicted (a replay of it would be answered afresh); memory stays at
    ``size`` answered ids plus those in flight, and the window counts from the answer."""
    cache: ReplayCache[int] = ReplayCache(size=2)
    release, started = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait(5)
        return 1

    first = threading.Thread(target=cache.answer_once, args=("slow", "f", slow))
    first.start()
    started.wait(5)
    for n in range(5):
        cache.answer_once(f"r{n}", "f", lambda n=n: n)  # type: ignore[misc]
        assert len(cache) <= 3  # two answered, one in flight
    release.set()
    first.join()
    assert len(cache) == 2
    assert cache.answer_once("slow", "f", lambda: 9) == (1, True)  # the last one answered: remembered


# -- the protocol ----------------------------------------------------------------------------------
def test_a_refusal_with_records_is_not_a_valid_answer() -> None:
    record = {"record_id": "r", "record_type": "t", "subject": "subj-x", "category": "income", "fields": {}}
    with pytest.raises(ValidationError):
        HolderAnswer.model_validate({"status": "refused", "records": [record]})
    with pytest.raises(ValidationError):
        HolderAnswer.model_validate({"status": "answered", "records": [], "smuggled": "data"})


# -- related subjects ------------------------------------------------------------------------------
def test_asked_by_reference_a_related_subject_is_named_by_reference_unless_told_otherwise(
        stores: dict[str, PartnerStore], world: World) -> None:
    """Asked by its own reference (before enrolment, or in a follow-up by match handle) the KvK names the company
    a director directs as it holds it. Told to name related subjects by pseudonyms (a follow-up: the requester
    may not learn its references), it names it by its own pseudonym, or — not enrolled — not at all."""
    director = world.scenarios()[w.BIBOB_APPLICANT][1]
    [company] = [r.fields["company"] for r in world.records_of(w.KVK, director) if r.record_type == "directorship"]
    store = stores[w.KVK]
    holder = Holder(PROFILES[w.KVK], store)

    def named(request_id: str, **flag: bool) -> object:
        query = _query([director], ["directorships"], request_id=request_id).model_copy(update=flag)
        [record] = holder.query(query)[0].records
        return record.fields["company"]

    assert named("q-plain") == company
    assert named("q-flag", related_subjects_as_pseudonyms=True) is None  # not enrolled: left out
    store.remember_pseudonyms("riec-amsterdam-amstelland", [("kvk.v1.own-pseudonym-of-the-company", company)])
    assert named("q-enrolled", related_subjects_as_pseudonyms=True) == "kvk.v1.own-pseudonym-of-the-company"


def test_the_flag_is_on_the_wire_only_when_set() -> None:
    """A holder that refuses unknown fields (as the protocol asks) answers every other query as before; one that
    does not know the flag refuses a follow-up rather than ignoring it."""
    plain = _query(["subj-1"], ["police_incidents"])
    assert "related_subjects_as_pseudonyms" not in plain.model_dump_json()
    flagged = plain.model_copy(update={"related_subjects_as_pseudonyms": True})
    assert '"related_subjects_as_pseudonyms":true' in flagged.model_dump_json()
    assert HolderQuery.model_validate_json(flagged.model_dump_json()) == flagged
    assert HolderQuery.model_validate_json(plain.model_dump_json()) == plain
