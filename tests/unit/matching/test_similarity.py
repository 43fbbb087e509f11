"""Dice on bit arrays: the compiled kernels against a NumPy reference and a naive Python definition.

Both code paths of the kernels are covered: 1024-bit filters (16 words, the specialised LLVM vector kernel)
and other widths (the word-by-word loop). Edge cases: empty filters, filters with every bit set, scores exactly
at the threshold, more hits than the kernel's initial output buffer, non-contiguous input.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.dispatcher import Dispatcher

from gateway.matching import similarity
from gateway.matching.errors import EncodingError
from gateway.matching.similarity import dice_join, dice_pairs, popcounts

TOLERANCE = 1e-9
WIDTHS = [16, 1, 5, 17]  # 16: the specialised 1024-bit kernel; the others: the generic loop


def _naive_dice(a: np.ndarray, b: np.ndarray) -> float:
    ia = int.from_bytes(a.astype("<u8").tobytes(), "little")
    ib = int.from_bytes(b.astype("<u8").tobytes(), "little")
    total = bin(ia).count("1") + bin(ib).count("1")
    return 0.0 if total == 0 else 2 * bin(ia & ib).count("1") / total


def _reference(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """All-pairs Dice with NumPy (``np.bitwise_count``), the computation the kernels replace."""
    inter = np.bitwise_count(left[:, None, :] & right[None, :, :]).sum(axis=2, dtype=np.int64)
    totals = (np.bitwise_count(left).sum(axis=1, dtype=np.int64)[:, None]
              + np.bitwise_count(right).sum(axis=1, dtype=np.int64)[None, :])
    out = np.zeros(inter.shape)
    np.divide(2.0 * inter, totals, out=out, where=totals > 0)
    return out


def _random_filters(seed: int, n: int, density: float, words: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.random((n, words * 64)) < density
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def _with_near_copies(seed: int, n: int, words: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = _random_filters(seed, n, rng.uniform(0.1, 0.6), words)
    right = left.copy()
    flips = rng.integers(0, 2**63, size=right.shape, dtype=np.uint64) & rng.integers(
        0, 2**63, size=right.shape, dtype=np.uint64) & rng.integers(0, 2**63, size=right.shape, dtype=np.uint64)
    right ^= flips  # ~1/8 of the bits flipped: similar, not equal
    rng.shuffle(right)
    if n > 2:  # edge cases on both sides: an empty filter and a full one
        left[0] = 0
        right[1] = np.uint64(2**64 - 1)
    return left, right


def _join_set(joined: similarity.DiceJoin) -> set[tuple[int, int]]:
    return set(zip(joined.left_index.tolist(), joined.right_index.tolist(), strict=True))


@pytest.mark.parametrize("words", WIDTHS)
def test_popcounts(words: int) -> None:
    filters = _random_filters(1, 50, 0.3, words)
    filters[0] = 0
    filters[1] = np.uint64(2**64 - 1)
    expected = [bin(int.from_bytes(row.astype("<u8").tobytes(), "little")).count("1") for row in filters]
    assert popcounts(filters).tolist() == expected
    assert popcounts(np.asfortranarray(filters)).tolist() == expected
    assert popcounts(filters[:0]).tolist() == []


@pytest.mark.parametrize("words", WIDTHS)
def test_dice_pairs_equals_numpy_reference(words: int) -> None:
    left, right = _with_near_copies(7, 40, words)
    reference = _reference(left, right)
    li, ri = (a.ravel() for a in np.meshgrid(np.arange(40), np.arange(40), indexing="ij"))
    got = dice_pairs(left, right, li, ri)
    assert np.array_equal(got, reference[li, ri])  # same float expression: bit-identical
    assert got[li == 0].max() == 0.0  # the empty filter
    counts = popcounts(right)
    assert np.array_equal(dice_pairs(left, right, li, ri, right_counts=counts), got)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 70), words=st.sampled_from(WIDTHS))
def test_dice_pairs_matches_naive(seed: int, n: int, words: int) -> None:
    left, right = _with_near_copies(seed, n, words)
    rng = np.random.default_rng(seed)
    li = rng.integers(0, n, size=40).astype(np.intp)
    ri = rng.integers(0, n, size=40).astype(np.intp)
    got = dice_pairs(left, right, li, ri)
    want = [_naive_dice(left[i], right[j]) for i, j in zip(li, ri, strict=True)]
    assert got.tolist() == want


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 90), threshold=st.floats(0.3, 1.0),
       words=st.sampled_from(WIDTHS))
def test_dice_join_equals_brute_force_with_and_without_pruning(seed: int, n: int, threshold: float,
                                                               words: int) -> None:
    left, right = _with_near_copies(seed, n, words)
    reference = _reference(left, right)
    want = {(int(i), int(j)) for i, j in zip(*np.nonzero(reference >= threshold - TOLERANCE), strict=True)}
    for prune in (True, False):
        for workers in (1, 2):
            joined = dice_join(left, right, threshold, workers=workers, prune=prune)
            assert _join_set(joined) == want
            assert np.array_equal(joined.scores, reference[joined.left_index, joined.right_index])
            assert joined.pairs_total == n * n
            assert joined.pairs_compared <= n * n
            if not prune:
                assert joined.pairs_compared == n * n


def _filter_with_bits(positions: list[int], words: int = 16) -> np.ndarray:
    value = sum(1 << p for p in positions)
    return np.frombuffer(value.to_bytes(words * 8, "little"), dtype="<u8").astype(np.uint64)


@pytest.mark.parametrize("words", [16, 3])
def test_scores_exactly_at_the_threshold(words: int) -> None:
    # |A| = 13, |B| = 12, |A ∧ B| = 9: dice = 18/25 = 0.72, the person schema's threshold
    a = _filter_with_bits(list(range(0, 13)), words)
    b = _filter_with_bits([*range(4, 13), 100, 101, 150], words)
    left, right = a[None, :], b[None, :]
    assert dice_pairs(left, right, np.array([0]), np.array([0])).tolist() == [0.72]
    for prune in (True, False):
        assert _join_set(dice_join(left, right, 0.72, prune=prune)) == {(0, 0)}
        assert _join_set(dice_join(left, right, 0.72 + 1e-7, prune=prune)) == set()
    identical = dice_join(left, np.vstack([a, b]), 1.0)
    assert _join_set(identical) == {(0, 0)}
    assert identical.scores.tolist() == [1.0]


def test_minimum_intersections_table() -> None:
    for threshold in (0.72, 1 / 3, 0.1 + 0.2, 0.5, 1.0, 0.999, 1e-12):
        need = similarity._minimum_intersections(threshold, 256)
        for total in range(1, len(need)):
            m = int(need[total])
            assert 2 * m / total >= threshold - TOLERANCE
            assert m == 0 or 2 * (m - 1) / total < threshold - TOLERANCE
        steps = np.diff(need[1:])
        assert steps.min() >= 0
        assert steps.max() <= 1
        assert need[0] == (0 if threshold <= TOLERANCE else 2 * 256 + 1)


@pytest.mark.parametrize("threshold", [0.72, 0.3, 1.0, 0.95])
def test_count_window_is_the_feasible_interval(threshold: float) -> None:
    bits = 128
    need = similarity._minimum_intersections(threshold, bits)
    for count in range(bits + 1):
        feasible = [b for b in range(bits + 1) if min(count, b) >= need[count + b]]
        low, high = similarity._count_window(count, need, bits)
        assert feasible == list(range(low, high + 1))


def test_more_hits_than_the_initial_buffer() -> None:
    filters = np.repeat(_random_filters(3, 1, 0.5), 90, axis=0)  # 8,100 identical pairs > 1,024
    joined = dice_join(filters, filters, 0.9, workers=1)
    assert len(joined.scores) == 90 * 90
    assert _join_set(joined) == {(i, j) for i in range(90) for j in range(90)}


def test_non_contiguous_and_integer_inputs() -> None:
    left, right = _with_near_copies(11, 30)
    wide = np.hstack([left, left])[:, :16]  # a non-contiguous view
    assert not wide.flags.c_contiguous
    li = np.arange(30, dtype=np.int32)
    assert np.array_equal(dice_pairs(wide, right, li, li), dice_pairs(left, right, li, li))
    assert _join_set(dice_join(wide, right[::-1], 0.5)) == _join_set(dice_join(left, right[::-1], 0.5))


def test_pruning_skips_pairs_of_very_different_density() -> None:
    sparse = _random_filters(2, 64, 0.05)
    dense = _random_filters(3, 64, 0.6)
    joined = dice_join(sparse, dense, 0.8)
    assert joined.pairs_compared == 0
    assert len(joined.scores) == 0


def test_empty_filters_and_bad_input() -> None:
    empty = np.zeros((3, 16), dtype=np.uint64)
    assert dice_pairs(empty, empty, np.arange(3), np.arange(3)).tolist() == [0.0, 0.0, 0.0]
    for prune in (True, False):
        assert len(dice_join(empty, empty, 0.5, prune=prune).scores) == 0
        assert len(dice_join(empty, empty, 1e-12, prune=prune).scores) == 9  # score 0 ≥ threshold - tolerance
    assert len(dice_join(empty[:0], empty, 0.5).scores) == 0
    assert len(dice_join(empty, empty[:0], 0.5).scores) == 0
    assert dice_pairs(empty, empty, np.arange(0), np.arange(0)).tolist() == []
    with pytest.raises(EncodingError):
        popcounts(np.zeros((2, 16), dtype=np.int64))
    with pytest.raises(EncodingError):
        dice_pairs(empty, np.zeros((3, 8), dtype=np.uint64), np.arange(3), np.arange(3))
    with pytest.raises(EncodingError):
        dice_pairs(empty, empty, np.arange(3), np.arange(2))
    for bad in (np.array([0, 3]), np.array([-1, 0])):
        with pytest.raises(IndexError):
            dice_pairs(empty, empty, bad, np.arange(2))
        with pytest.raises(IndexError):
            dice_pairs(empty, empty, np.arange(2), bad)
    with pytest.raises(ValueError, match="threshold"):
        dice_join(empty, empty, 0.0)


def test_warm_up_compiles_every_kernel() -> None:
    similarity.warm_up()
    for kernel in (similarity._join_rows, similarity._pair_intersections, similarity._row_popcounts):
        assert isinstance(kernel, Dispatcher), kernel  # numba's, not the plain function
        assert kernel.signatures, kernel  # compiled (or loaded from the cache) for the one signature used
        assert len(kernel.signatures) == 1


def test_kernels_compile_without_a_writable_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from numba.core import caching

    def no_locator(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(caching.FunctionCache, "__init__", no_locator)

    def twice(x: int) -> int:
        return 2 * x

    assert similarity._compiled(twice)(21) == 42
