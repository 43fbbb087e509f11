"""A gateway process's kept copy of a holder's match filters is brought up to date from the rows changed since
it was read (``gateway.enrolment.filter_cache``, migration 0030), on SQLite and PostgreSQL.

Before: any enrolment batch made the next fuzzy discovery reaching the holder read and decode the holder's whole
set again in every process (4 s at 100,000 records). Now the next request reads only the rows written and the
references withdrawn since — and whatever it keeps must be exactly what a cold full read gives: a withdrawn,
replaced or retired record never hits. When the change log cannot vouch for that (a writer that did not stamp
its rows, removals forgotten, a count that does not add up) the set is read in full.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, event, func, select, update

from audit import AuditLog
from gateway.clock import FixedClock
from gateway.db.engine import make_session_factory
from gateway.enrolment import filter_cache
from gateway.enrolment.filters import FilterBatch, FilterService
from gateway.enrolment.held import HeldRecords
from gateway.enrolment.retired import remove_retired
from gateway.enrolment.tables import match_filter_generations, match_filter_removals, match_filters
from gateway.exchange.fuzzy import _matched
from gateway.matching.blocking import KeyIndex
from gateway.matching.encoding import EncodedDataset
from gateway.matching.schema import shipped_schema
from gateway.register.loader import load_register
from gateway.settings import SHIPPED_REGISTER
from tests.audit_support import log_signer
from tests.integration.test_retired_participations import retiring

RIEC = "riec-amsterdam-amstelland"
PERSON = shipped_schema("person")
CATEGORIES = (["police_incidents"], ["police_incidents", "criminal_records"], ["criminal_records"])
PERMITTED = {"police_incidents", "criminal_records"}
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class Holders:
    """Writes holders' filter batches as an enrolment batch's transaction writes them (its audit entry aside),
    with made-up filters: random half-dense filters never match each other, so a subject that is a record's own
    filter hits that record and no other."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.rng = random.Random(seed)
        self.ticks = count(1)
        self.filters: dict[tuple[str, str], tuple[bytes, bytes]] = {}  # filter and keys of each ever enrolled

    def row(self, organisation: str, ref: str, *, blocks: bool = True, version: int = PERSON.version,
            when: datetime | None = None) -> dict[str, Any]:
        clk = self.rng.getrandbits(PERSON.filter_bits).to_bytes(PERSON.filter_bits // 8, "little")
        keys = [self.rng.randrange(1, 40) + (column << 32) for column in range(len(PERSON.signatures))]
        self.filters[(organisation, ref)] = (clk, np.array(keys if blocks else [0] * len(keys), "<u8").tobytes())
        confidential = self.rng.random() < 0.1
        return {"partnership": RIEC, "organisation": organisation, "record_type": PERSON.id, "local_ref": ref,
                "schema_version": version, "clk": clk,
                "blocks": np.array(keys, dtype="<u8").tobytes() if blocks else b"",
                "categories": self.rng.choice(CATEGORIES), "confidential": confidential,
                "confidential_reason": "investigation-confidentiality" if confidential else None,
                "minor": self.rng.random() < 0.1,
                "updated_at": when or START + timedelta(seconds=next(self.ticks))}

    def write(self, organisation: str, rows: Sequence[dict[str, Any]] = (), withdrawn: Sequence[str] = (), *,
              replace: bool = False) -> None:
        with self.engine.begin() as connection:
            FilterBatch(RIEC, organisation, "test", PERSON.id, PERSON.version, replace,
                        sorted(rows, key=lambda row: row["local_ref"]), sorted(set(withdrawn))).apply(connection)

    def refs(self, organisation: str) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(match_filters.c.local_ref).where(
                match_filters.c.organisation == organisation)).scalars())


def _service(engine: Engine, **options: Any) -> FilterService:
    register, _ = load_register(SHIPPED_REGISTER)
    return FilterService(sessions=make_session_factory(engine), clock=FixedClock(START), register=register,
                         **options)


def _cold(engine: Engine, organisations: list[str]) -> dict[str, HeldRecords]:
    """What a process without a copy reads: everything, decoded."""
    return _service(engine, cache_bytes=0).held(RIEC, PERSON, organisations)


def assert_same(kept: HeldRecords, cold: HeldRecords) -> None:
    """The same records in the same order, with the same filters, keys, grounds, references and digests."""
    assert kept.refs == cold.refs
    assert kept.digests == cold.digests
    assert np.array_equal(kept.dataset.filters, cold.dataset.filters)
    assert (kept.dataset.block_keys is None) == (cold.dataset.block_keys is None)
    if cold.dataset.block_keys is not None:
        assert kept.dataset.block_keys is not None
        assert np.array_equal(kept.dataset.block_keys, cold.dataset.block_keys)
    assert kept.categories == cold.categories
    assert kept.confidential_reason == cold.confidential_reason
    assert kept.minor == cold.minor
    index = kept.blocker.right_index  # an updated copy's sorted keys: as sorting the new keys from scratch
    if index is not None and cold.dataset.block_keys is not None:
        fresh = KeyIndex.of_blocking_keys(cold.dataset.block_keys)
        assert np.array_equal(index[1].unique, fresh.unique)
        assert np.array_equal(index[1].count, fresh.count)
    # what a kept set derived once (after a comparison) and an update carried over: as derived from scratch
    for derived in ("counts", "ref_bytes"):
        if derived in kept.__dict__:
            assert np.array_equal(getattr(kept, derived), getattr(cold, derived)), derived
    if "grounds" in kept.__dict__:
        assert kept.grounds == cold.grounds
    if "refusers" in kept.__dict__:
        assert_same(kept.refusers, cold.refusers)


def _subjects(holders: Holders, keys: list[tuple[str, str]]) -> EncodedDataset:
    """The enrolled filters of ``keys``, with their blocking keys, as subjects: each is its record's twin."""
    filters = np.frombuffer(b"".join(holders.filters[key][0] for key in keys), "<u8").reshape(len(keys), -1)
    blocks = np.frombuffer(b"".join(holders.filters[key][1] for key in keys), "<u8").reshape(len(keys), -1)
    return EncodedDataset(filters.astype(np.uint64), blocks.astype(np.uint64))


def _hits(subjects: EncodedDataset, held: HeldRecords | None) -> list[str | None]:
    found, _ = _matched(subjects, held, PERMITTED, PERSON.threshold)
    return [None if hit is None else hit[0] for hit in found]


def test_a_batch_on_top_of_a_kept_set_reads_only_the_changed_rows(engine: Engine) -> None:
    holders = Holders(engine, seed=1)
    holders.write("politie", [holders.row("politie", f"ref/{n:05d}") for n in range(3000)])
    service = _service(engine)
    held = service.held(RIEC, PERSON, ["politie"])["politie"]
    assert (service.rows_read, service.full_reads) == (3000, 1)
    held.blocker  # noqa: B018 - compared once: its keys are sorted and kept with it

    replaced_before = {ref: holders.filters[("politie", ref)] for ref in ("ref/00010", "ref/01500")}
    withdrawn = ["ref/00000", "ref/02999", "ref/00777"]
    holders.write("politie", [holders.row("politie", ref) for ref in ["ref/00010", "ref/01500", "new/a", "new/b",
                                                                     "ref/01234x", "zzz"]], withdrawn)

    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        updated = service.held(RIEC, PERSON, ["politie"])["politie"]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert service.rows_read == 3000 + 6  # the six rows written, not the 3,000 held
    assert (service.full_reads, service.updates) == (1, 1)
    reads = [s for s in statements if "match_filters.clk" in s]
    assert reads
    assert all("match_filters.generation >" in s for s in reads)  # no statement read every row

    assert "blocker" in updated.__dict__  # the sorted keys came along, updated rather than sorted again
    cold = _cold(engine, ["politie"])["politie"]
    assert_same(updated, cold)
    assert len(updated) == 3000 - 3 + 4

    asked = [("politie", ref) for ref in withdrawn] + [("politie", "new/a"), ("politie", "ref/01500"),
                                                        ("politie", "ref/00001")]
    subjects = _subjects(holders, asked)
    assert _hits(subjects, updated) == _hits(subjects, cold) == [None, None, None, "new/a", "ref/01500", "ref/00001"]
    holders.filters.update({("old", ref): clk for ref, clk in replaced_before.items()})
    assert _hits(_subjects(holders, [("old", ref) for ref in replaced_before]), updated) == [None, None]

    assert service.held(RIEC, PERSON, ["politie"])["politie"] is updated  # and kept: nothing read again
    assert service.rows_read == 3006


def test_without_the_change_log_a_kept_copy_is_read_in_full(engine: Engine) -> None:
    """Each way the change log cannot vouch for an update makes the next request read everything — and the
    answer is the set stored: a writer that bumped without stamping (code from before 0030, during an
    upgrade), a removal it did not record, removals forgotten (older than the history), a replace."""
    holders = Holders(engine, seed=2)
    holders.write("politie", [holders.row("politie", f"ref/{n:03d}") for n in range(50)])
    service = _service(engine)

    def refreshed() -> tuple[int, int]:
        full, updates = service.full_reads, service.updates
        held = service.held(RIEC, PERSON, ["politie"])["politie"]
        assert_same(held, _cold(engine, ["politie"])["politie"])
        return service.full_reads - full, service.updates - updates

    assert refreshed() == (1, 0)
    # an unstamped writer: the counter moves, the row changes, its generation stays
    with engine.begin() as connection:
        connection.execute(update(match_filter_generations).values(
            generation=match_filter_generations.c.generation + 1))
        connection.execute(update(match_filters).where(match_filters.c.local_ref == "ref/007").values(
            clk=holders.row("politie", "ref/007")["clk"], updated_at=START + timedelta(days=1)))
    assert refreshed() == (1, 0)
    holders.write("politie", [holders.row("politie", "ref/100")])  # the next stamped writer: not across the gap
    assert refreshed() == (0, 1)

    # a removal that was not recorded (stamped, but no reference left behind): the count gives it away
    with engine.begin() as connection:
        filter_cache.bump(connection, RIEC, "politie", PERSON.id)
        connection.execute(match_filters.delete().where(match_filters.c.local_ref == "ref/008"))
    assert refreshed() == (1, 0)

    # removals older than the history are forgotten: a copy that old is read in full
    stale = _service(engine)
    stale.held(RIEC, PERSON, ["politie"])
    for n in range(filter_cache.HISTORY + 2):
        if n % 200 == 0 or n >= filter_cache.HISTORY:
            holders.write("politie", [], [f"ref/{n % 40:03d}"])
        else:
            with engine.begin() as connection:  # only the counter: many batches, cheaply
                filter_cache.bump(connection, RIEC, "politie", PERSON.id)
    before = stale.full_reads
    assert_same(stale.held(RIEC, PERSON, ["politie"])["politie"], _cold(engine, ["politie"])["politie"])
    assert stale.full_reads == before + 1
    with engine.connect() as connection:  # and the record of removals stays bounded
        assert connection.execute(select(func.count()).select_from(match_filter_removals)).scalar_one() <= 2

    # a replace removes everything: read in full, and the recorded removals are gone
    holders.write("politie", [], ["ref/020"])
    holders.write("politie", [holders.row("politie", f"other/{n}") for n in range(5)], replace=True)
    assert refreshed() == (1, 0)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(match_filter_removals)).scalar_one() == 0


@pytest.mark.parametrize("seed", [11, 12])
def test_updated_copies_answer_exactly_as_a_cold_read(engine: Engine, tmp_path: Path, seed: int) -> None:
    """A seeded random sequence of batches — records added, enrolled again, withdrawn, a replace, rows of
    another schema version or without blocking keys — and a retirement, for two holders. After each step,
    copies that are asked at every step, every few steps, and never between, hold exactly what a cold read
    gives, and give the same hits; a withdrawn, replaced or retired record never hits."""
    rng = random.Random(seed)
    holders = Holders(engine, seed)
    organisations = ["politie", "kvk"]
    pool = [f"r{n:03d}" for n in range(120)]
    for organisation in organisations:
        holders.write(organisation, [holders.row(organisation, ref) for ref in rng.sample(pool, 60)])
    every, sometimes, once = _service(engine), _service(engine), _service(engine)
    for service in (every, sometimes, once):
        for held in service.held(RIEC, PERSON, organisations).values():
            held.blocker  # noqa: B018 - as after a first comparison
    retired = False
    gone: set[tuple[str, str]] = set()  # filters that must not hit: withdrawn, replaced, retired
    for step in range(40):
        organisation = "politie" if retired else rng.choice(organisations)
        held_now = set(holders.refs(organisation))
        kind = rng.choices(["batch", "withdraw", "mixed", "replace", "no-keys", "other-version", "retire"],
                           [6, 3, 4, 1, 1, 1, 0 if retired or step < 20 else 2])[0]
        if kind == "retire":
            gone |= {("kvk", ref) for ref in holders.refs("kvk")}
            register, _ = retiring(tmp_path, RIEC, "kvk")
            remove_retired(make_session_factory(engine), register, AuditLog(engine, log_signer()), channel="cli",
                           batch=25)
            retired = True
        else:
            sent = rng.sample(pool, rng.randint(1, 8))
            withdrawn = [ref for ref in rng.sample(pool, rng.randint(1, 6)) if ref not in sent]
            if kind == "batch":
                withdrawn = []
            elif kind == "withdraw":
                sent = []
            rows = [holders.row(organisation, ref, blocks=kind != "no-keys",
                                version=PERSON.version + (1 if kind == "other-version" else 0)) for ref in sent]
            gone |= {(organisation, ref) for ref in withdrawn if ref in held_now}
            gone |= {(organisation, ref) for ref in held_now if kind == "replace"}
            if kind == "other-version":  # a full read leaves rows of another version out
                gone |= {(organisation, ref) for ref in sent}
            else:
                gone -= {(organisation, ref) for ref in sent}
            holders.write(organisation, rows, withdrawn if kind != "replace" else [], replace=kind == "replace")
            if kind == "no-keys":  # enrolled again with keys, so that blocking comes back
                holders.write(organisation, [holders.row(organisation, ref) for ref in sent])
        cold = _cold(engine, organisations)
        stored = {(name, ref) for name in organisations for ref in holders.refs(name)}
        asked = rng.sample(sorted(stored - gone), min(6, len(stored - gone)))
        asked += rng.sample(sorted(gone), min(6, len(gone)))
        subjects = _subjects(holders, asked) if asked else None
        for service, due in ((every, True), (sometimes, step % 5 == 4), (once, step == 39)):
            if not due:
                continue
            found = service.held(RIEC, PERSON, organisations)
            assert set(found) == set(cold), step
            for name, held in found.items():
                assert_same(held, cold[name])
                if subjects is not None:
                    hits = _hits(subjects, held)
                    assert hits == _hits(subjects, cold[name]), step
                    assert not {(name, ref) for ref in hits if ref is not None} & gone, step
    assert every.updates > 20  # most steps were updates, not full reads
    assert every.full_reads < 12


def test_copies_updated_while_batches_commit_end_as_a_cold_read(engine: Engine) -> None:
    """Two writers enrol and withdraw for one holder while a process keeps answering from its copy (on
    PostgreSQL each statement of a read sees what committed before it, so a copy can be read across a commit):
    every answer holds only records that were enrolled at some point, and once the writers are done the copy
    is exactly what a cold read gives."""
    holders = Holders(engine, seed=5)
    holders.write("politie", [holders.row("politie", f"base/{n:03d}") for n in range(200)])
    service = _service(engine)
    service.held(RIEC, PERSON, ["politie"])["politie"].blocker  # noqa: B018
    rows = {writer: [[holders.row("politie", f"{writer}/{batch}/{n}") for n in range(5)] for batch in range(12)]
            for writer in ("a", "b")}
    ever = {row["local_ref"] for batches in rows.values() for batch in batches for row in batch}
    ever |= {f"base/{n:03d}" for n in range(200)}
    failures: list[BaseException] = []

    def write(writer: str) -> None:
        try:
            for batch, sent in enumerate(rows[writer]):
                withdrawn = [f"base/{n:03d}" for n in range(batch * 8 + (writer == "b") * 4,
                                                              batch * 8 + (writer == "b") * 4 + 4)]
                holders.write("politie", sent, withdrawn)
        except BaseException as exc:  # reported below
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(writer,)) for writer in ("a", "b")]
    for thread in writers:
        thread.start()
    answers = 0
    while any(thread.is_alive() for thread in writers) or answers < 3:
        held = service.held(RIEC, PERSON, ["politie"]).get("politie")
        assert held is not None
        assert set(held.refs) <= ever
        assert held.refs == sorted(held.refs)
        answers += 1
    for thread in writers:
        thread.join(timeout=60)
    assert not failures
    assert_same(service.held(RIEC, PERSON, ["politie"])["politie"], _cold(engine, ["politie"])["politie"])
    assert service.updates > 0


class _CommitBefore:
    """Commits a writer's batch just before the reader's first statement that reads ``marker`` — between two
    statements of one read, where each statement sees what committed before it (PostgreSQL's READ COMMITTED;
    a read-only transaction on SQLite through pysqlite, which begins none for a SELECT). ``times``: before each
    of the first that many such statements (a writer committing during every attempt of an update)."""

    def __init__(self, engine: Engine, marker: str, write: Any, *, times: int = 1) -> None:
        self.engine, self.marker, self.write, self.times = engine, marker, write, times
        self.commits = 0
        self.writing = False

    @property
    def fired(self) -> bool:
        return self.commits > 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (self.writing or self.commits >= self.times or not statement.lstrip().upper().startswith("SELECT")
                or self.marker not in statement):
            return
        self.commits += 1
        self.writing = True  # the writer's own statements pass through here too
        try:
            self.write()
        finally:
            self.writing = False

    def __enter__(self) -> _CommitBefore:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


def test_a_replace_committed_while_a_copy_is_updated_never_leaves_a_withdrawn_record(engine: Engine) -> None:
    """The reader reads the counter, then the rows changed since its copy, then the removals: a replace that
    commits between the rows and the removals deletes the recorded removals (``forget``) the reader was about
    to apply. Before: the copy kept the withdrawn record (and the replaced ones), and as the replace happened
    to enrol as many records as the stale copy held, the count check passed — the withdrawn record hit."""
    holders = Holders(engine, seed=21)
    holders.write("politie", [holders.row("politie", ref) for ref in ("a", "b", "c")])
    service = _service(engine)
    service.held(RIEC, PERSON, ["politie"])
    holders.write("politie", [], ["c"])  # recorded: the copy drops it at its next request
    replaced = {("politie", ref): holders.filters[("politie", ref)] for ref in ("a", "b", "c")}
    with _CommitBefore(engine, "match_filter_removals", lambda: holders.write(
            "politie", [holders.row("politie", ref) for ref in ("x", "y", "z")], replace=True)) as race:
        held = service.held(RIEC, PERSON, ["politie"])["politie"]
    assert race.fired
    assert held.refs in (["a", "b"], ["x", "y", "z"])  # the set before the replace, or after it
    holders.filters.update({("before", ref[1]): value for ref, value in replaced.items()})
    assert _hits(_subjects(holders, [("before", "c")]), held) == [None]  # withdrawn before either
    assert_same(service.held(RIEC, PERSON, ["politie"])["politie"], _cold(engine, ["politie"])["politie"])


def test_removals_pruned_while_a_copy_is_updated_never_leave_a_withdrawn_record(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy just within the history: a batch that commits between the reader's read of the rows and its read
    of the removals moves the history on and prunes the removal the copy needs. Before: the copy kept the
    withdrawn record, and as that batch added one record the count check passed — the withdrawn record hit."""
    monkeypatch.setattr(filter_cache, "HISTORY", 3)
    holders = Holders(engine, seed=22)
    holders.write("politie", [holders.row("politie", ref) for ref in ("a", "b", "c")])  # generation 1
    service = _service(engine)
    service.held(RIEC, PERSON, ["politie"])
    holders.write("politie", [], ["c"])  # generation 2
    for _ in range(2):  # generations 3 and 4: the copy (1) is still within the history
        with engine.begin() as connection:
            filter_cache.bump(connection, RIEC, "politie", PERSON.id)
    with _CommitBefore(engine, "match_filter_removals", lambda: holders.write(
            "politie", [holders.row("politie", "d")])) as race:  # generation 5 forgets the removals up to 2
        held = service.held(RIEC, PERSON, ["politie"])["politie"]
    assert race.fired
    assert held.refs in (["a", "b"], ["a", "b", "d"])
    assert _hits(_subjects(holders, [("politie", "c")]), held) == [None]
    assert_same(service.held(RIEC, PERSON, ["politie"])["politie"], _cold(engine, ["politie"])["politie"])


def test_a_batch_committed_while_a_copy_is_updated_is_retried_not_read_in_full(engine: Engine) -> None:
    """A plain batch (a withdrawal and a new record) commits between the reader's read of the rows and its read of
    the removals: the counter moved, so that update is not kept. Before: the holder's whole set was read again.
    Now the update is done again from the kept copy, against the counter just read — the withdrawn records never
    hit, the copy is what a cold read gives, and it is kept under the new counter (the next request reads no
    row)."""
    holders = Holders(engine, seed=24)
    holders.write("politie", [holders.row("politie", ref) for ref in ("a", "b", "c")])
    service = _service(engine)
    service.held(RIEC, PERSON, ["politie"])
    holders.write("politie", [], ["c"])  # recorded: the copy drops it at its next request
    full_reads, updates = service.full_reads, service.updates
    with _CommitBefore(engine, "match_filter_removals", lambda: holders.write(
            "politie", [holders.row("politie", "d")], ["b"])) as race:
        held = service.held(RIEC, PERSON, ["politie"])["politie"]
    assert race.commits == 1
    assert (service.full_reads - full_reads, service.updates - updates) == (0, 1)  # not read in full
    assert service.update_retries == 1
    assert held.refs == ["a", "d"]
    assert _hits(_subjects(holders, [("politie", "b"), ("politie", "c")]), held) == [None, None]
    assert_same(held, _cold(engine, ["politie"])["politie"])
    rows_read = service.rows_read
    assert service.held(RIEC, PERSON, ["politie"])["politie"] is held  # kept under the counter it agreed with
    assert service.rows_read == rows_read


def test_an_update_that_a_writer_overtakes_every_time_ends_in_one_full_read(engine: Engine) -> None:
    """A writer commits during every attempt of the update: after ``UPDATE_RETRIES`` retries the set is read in
    full (the number of reads is bounded), and no withdrawn record is kept."""
    holders = Holders(engine, seed=25)
    holders.write("politie", [holders.row("politie", f"ref/{n}") for n in range(6)])
    service = _service(engine)
    service.held(RIEC, PERSON, ["politie"])
    holders.write("politie", [], ["ref/0"])
    withdrawn = iter(range(1, 6))
    full_reads = service.full_reads

    def batch() -> None:
        n = next(withdrawn)
        holders.write("politie", [holders.row("politie", f"new/{n}")], [f"ref/{n}"])

    with _CommitBefore(engine, "match_filter_removals", batch, times=filter_cache.UPDATE_RETRIES + 2) as race:
        held = service.held(RIEC, PERSON, ["politie"])["politie"]
    assert race.commits == filter_cache.UPDATE_RETRIES + 1  # one per attempt; the full read reads no removals
    assert (service.update_retries, service.full_reads - full_reads) == (filter_cache.UPDATE_RETRIES, 1)
    gone = [("politie", f"ref/{n}") for n in range(race.commits + 1)]
    assert _hits(_subjects(holders, gone), held) == [None] * len(gone)
    assert_same(held, _cold(engine, ["politie"])["politie"])


def test_the_subsets_a_purpose_may_ask_about_count_in_the_cache_bound(engine: Engine) -> None:
    """A purpose permitted part of a holder's categories compares a subset of the kept set, kept with it (up to
    ``MAX_VIEWS``, each up to the set's size). Before: the cache's bound counted the set alone, so a process could
    keep several times its bound. Now each kept subset is counted, and the bound holds."""
    holders = Holders(engine, seed=23)
    holders.write("politie", [holders.row("politie", f"ref/{n:03d}") for n in range(300)])
    holders.write("kvk", [holders.row("kvk", f"ref/{n:03d}") for n in range(300)])
    service = _service(engine)
    held = service.held(RIEC, PERSON, ["politie", "kvk"])
    before = service.cache.bytes
    subjects = _subjects(holders, [("politie", "ref/001")])
    for permitted in ({"police_incidents"}, {"criminal_records"}):
        _matched(subjects, held["politie"], permitted, PERSON.threshold)
    views = [held["politie"].permitted(permitted) for permitted in ({"police_incidents"}, {"criminal_records"})]
    assert all(0 < len(view) < len(held["politie"]) for view in views)  # subsets, kept with the set
    assert service.cache.bytes >= before + sum(view.dataset.filters.nbytes for view in views)

    bounded = _service(engine, cache_bytes=before + 1024)  # room for both sets, not for a subset as well
    kept = bounded.held(RIEC, PERSON, ["politie", "kvk"])
    assert len(bounded.cache) == 2
    _matched(subjects, kept["politie"], {"criminal_records"}, PERSON.threshold)
    assert bounded.cache.bytes <= bounded.cache.max_bytes
    assert len(bounded.cache) == 1
    # a copy that replaced the one a subset was made of is not charged for it
    holders.write("politie", [holders.row("politie", "ref/new")])
    updated = bounded.held(RIEC, PERSON, ["politie"])["politie"]
    charged = bounded.cache.bytes
    _matched(subjects, kept["politie"], {"police_incidents"}, PERSON.threshold)  # the old copy's subset
    assert bounded.cache.bytes == charged
    assert updated is not kept["politie"]
