"""A fuzzy discovery's per-request work on a holder's kept records (``gateway.exchange.fuzzy._matched`` on a
``HeldRecords`` kept by ``filter_cache``) does not visit every record: what is derived from all of them — the
records with grounds to refuse, the distinct category sets, the subset a purpose may ask about — is derived once
per kept set, so that a request's cost follows the subjects asked and the candidates blocking returns.

Before: every request scanned every record for grounds (about 30 ms at 100,000 records under load) and collected
the distinct category sets, and a purpose permitted part of a holder's categories copied the holder's records.
The record lists here count each item read (a hook, not a clock), so the test says what is touched, not how
fast."""

from __future__ import annotations

from typing import Any, SupportsIndex

import numpy as np
import pytest

from gateway.enrolment.held import HeldRecords, size_of
from gateway.exchange.fuzzy import _matched
from gateway.matching import linkage
from gateway.matching.encoding import EncodedDataset, Filters
from gateway.matching.schema import shipped_schema
from gateway.matching.similarity import IntArray, popcounts

PERSON = shipped_schema("person")
RECORDS = 3000
OURS = frozenset({"police_incidents"})
BOTH = frozenset({"police_incidents", "criminal_records"})


class Counted(list[Any]):
    """A list that counts the items read from it: by iteration, by index and by slice."""

    touched = 0

    def __iter__(self) -> Any:
        self.touched += len(self)
        return super().__iter__()

    def __getitem__(self, at: SupportsIndex | slice) -> Any:
        self.touched += len(range(*at.indices(len(self)))) if isinstance(at, slice) else 1
        return super().__getitem__(at)


def _held(seed: int) -> tuple[HeldRecords, list[Counted]]:
    """Random half-dense filters (no two match) with blocking keys; every 7th record kept confidential, every
    11th a minor; a third of them also in ``criminal_records``."""
    rng = np.random.default_rng(seed)
    filters = rng.integers(0, 2**63, size=(RECORDS, PERSON.words), dtype=np.uint64)
    keys = rng.integers(1, 2**40, size=(RECORDS, len(PERSON.signatures)), dtype=np.uint64)
    lists = [Counted(BOTH if n % 3 == 0 else OURS for n in range(RECORDS)),
             Counted("investigation-confidentiality" if n % 7 == 0 else None for n in range(RECORDS)),
             Counted(n % 11 == 0 for n in range(RECORDS)), Counted(f"ref/{n:05d}" for n in range(RECORDS)),
             Counted(f"{n:064x}" for n in range(RECORDS))]
    for counted in lists:
        counted.touched = 0
    return HeldRecords(EncodedDataset(filters, keys), *lists), lists


def _subjects(held: HeldRecords, positions: list[int]) -> EncodedDataset:
    """The records at ``positions`` as subjects (each its record's twin), and a few that match nothing."""
    rng = np.random.default_rng(1)
    keys = held.dataset.block_keys
    assert keys is not None
    return EncodedDataset(
        np.concatenate([held.dataset.filters[positions], rng.integers(0, 2**63, size=(3, PERSON.words),
                                                                      dtype=np.uint64)]),
        np.concatenate([keys[positions], rng.integers(1, 2**40, size=(3, keys.shape[1]), dtype=np.uint64)]))


def _plain(held: HeldRecords) -> HeldRecords:
    """The same records in plain lists, nothing derived yet: what a cold read gives."""
    return HeldRecords(held.dataset, list(held.categories), list(held.confidential_reason), list(held.minor),
                       list(held.refs), list(held.digests))


@pytest.mark.parametrize("permitted", [{"police_incidents"}, {"criminal_records"}],
                         ids=["all-permitted", "part-permitted"])
def test_a_request_on_a_kept_set_touches_only_what_it_matched(permitted: set[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    counted_bits: list[int] = []  # how many filters each comparison counts the set bits of

    def counting(filters: Filters) -> IntArray:
        counted_bits.append(len(filters))
        return popcounts(filters)

    monkeypatch.setattr(linkage, "popcounts", counting)
    held, lists = _held(7)
    positions = [3, 14, 21, 22, 600, 1001, 2999]  # records with and without grounds, in both category sets
    subjects = _subjects(held, positions)
    first = _matched(subjects, held, permitted, PERSON.threshold)  # derives what the kept set keeps, once
    assert sum(counted.touched for counted in lists) >= RECORDS  # (the hook sees a pass over the records)
    for counted in lists:
        counted.touched = 0
    counted_bits.clear()

    for _ in range(3):  # every later request
        assert _matched(subjects, held, permitted, PERSON.threshold) == first
    # at most a handful of reads per subject (its matched record's reference, digest, categories and grounds)
    assert sum(counted.touched for counted in lists) <= 3 * 5 * len(subjects)
    assert counted_bits  # the subjects' filters are counted per request; the holder's were counted once
    assert max(counted_bits) == len(subjects)
    assert _matched(subjects, _plain(held), permitted, PERSON.threshold) == first  # as from scratch
    matched, holding = first
    assert holding is not None
    assert any(matched)
    if permitted == {"criminal_records"}:  # only the records also in criminal_records can hit
        assert [record is not None for record in matched] == [p % 3 == 0 for p in positions] + [False] * 3


def test_the_size_estimate_counts_the_records_with_grounds_kept_again() -> None:
    """A kept set keeps its records with grounds a second time (``refusers``, with their sorted keys): the
    cache's bound (``size_of``) must count them, or a holder with many confidential records overruns it."""
    held, _ = _held(7)
    none = HeldRecords(held.dataset, list(held.categories), [None] * RECORDS, [False] * RECORDS,
                       list(held.refs), list(held.digests))
    keys = held.refusers.dataset.block_keys
    assert keys is not None
    assert size_of(held) - size_of(none) >= held.refusers.dataset.filters.nbytes + keys.nbytes
