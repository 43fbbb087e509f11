"""``KeyIndex.updated``: a holder's sorted blocking-key index brought up to date after a batch (rows removed,
replaced and added) joins exactly as the index of the new keys sorted from scratch — so a kept filter set is not
sorted again after every enrolment batch (``gateway.enrolment.held.HeldRecords.updated``)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.matching.blocking import KeyIndex, SignatureBlocker
from gateway.matching.encoding import EncodedDataset

WIDTH = 3


def _keys(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Keys from a small alphabet, so runs of equal keys (and empty keys, 0) are common."""
    return rng.integers(0, 6, size=(rows, WIDTH)).astype(np.uint64)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), old=st.integers(0, 40), removed=st.floats(0, 1), added=st.integers(0, 12))
def test_an_updated_index_joins_as_one_sorted_from_scratch(seed: int, old: int, removed: float, added: int) -> None:
    rng = np.random.default_rng(seed)
    before = _keys(rng, old)
    keep = rng.random(old) >= removed
    fresh = _keys(rng, added)
    # the new dataset: the kept rows and the fresh ones, interleaved at random (as references sort)
    total = int(keep.sum()) + added
    places = rng.permutation(total)
    kept_at, fresh_at = np.sort(places[:int(keep.sum())]).astype(np.intp), places[int(keep.sum()):].astype(np.intp)
    after = np.zeros((total, WIDTH), dtype=np.uint64)
    after[kept_at], after[fresh_at] = before[keep], fresh
    moved = np.full(old, -1, dtype=np.intp)
    moved[np.flatnonzero(keep)] = kept_at

    updated = KeyIndex.of_blocking_keys(before).updated(moved, fresh, fresh_at)
    scratch = KeyIndex.of_blocking_keys(after)
    assert np.array_equal(updated.unique, scratch.unique)
    assert np.array_equal(updated.count, scratch.count)
    runs = [sorted(updated.rows[updated.order[s:s + c]].tolist()) for s, c in zip(updated.start, updated.count,
                                                                                  strict=True)]
    assert runs == [sorted(scratch.rows[scratch.order[s:s + c]].tolist())
                    for s, c in zip(scratch.start, scratch.count, strict=True)]

    subjects = EncodedDataset(np.ones((8, 1), dtype=np.uint64), _keys(rng, 8))
    held = EncodedDataset(np.ones((total, 1), dtype=np.uint64), after)
    pairs = SignatureBlocker(max_block_pairs=20, right_index=(after, updated)).candidate_pairs(subjects, held)
    expected = SignatureBlocker(max_block_pairs=20).candidate_pairs(subjects, held)
    assert np.array_equal(pairs.left_index, expected.left_index)
    assert np.array_equal(pairs.right_index, expected.right_index)


@settings(max_examples=120, deadline=None)
@given(left=st.lists(st.integers(0, 30), max_size=20), right=st.lists(st.integers(0, 30), max_size=40))
def test_the_keys_two_sides_share_are_found_as_intersect1d_finds_them(left: list[int], right: list[int]) -> None:
    """The join bisects the holder's sorted distinct keys for a request's few keys (a request's cost follows its
    subjects, not the holder's records); the runs it joins are exactly those ``np.intersect1d`` found."""
    from gateway.matching.blocking import _common

    a, b = np.unique(np.array(left, dtype=np.uint64)), np.unique(np.array(right, dtype=np.uint64))
    _, l_pos, r_pos = np.intersect1d(a, b, assume_unique=True, return_indices=True)
    found = _common(a, b)
    assert np.array_equal(found[0], l_pos)
    assert np.array_equal(found[1], r_pos)
