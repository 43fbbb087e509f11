"""Dice on bit arrays: vectorised kernels against a naive Python definition; pruning loses nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.matching import similarity
from gateway.matching.errors import EncodingError
from gateway.matching.similarity import dice_join, dice_pairs, popcounts


def _naive_dice(a: np.ndarray, b: np.ndarray) -> float:
    ia = int.from_bytes(a.astype("<u8").tobytes(), "little")
    ib = int.from_bytes(b.astype("<u8").tobytes(), "little")
    total = bin(ia).count("1") + bin(ib).count("1")
    return 0.0 if total == 0 else 2 * bin(ia & ib).count("1") / total


def _random_filters(seed: int, n: int, density: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.random((n, 1024)) < density
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def _with_near_copies(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = _random_filters(seed, n, rng.uniform(0.1, 0.6))
    right = left.copy()
    flips = rng.integers(0, 2**63, size=right.shape, dtype=np.uint64) & rng.integers(
        0, 2**63, size=right.shape, dtype=np.uint64) & rng.integers(0, 2**63, size=right.shape, dtype=np.uint64)
    right ^= flips  # ~1/8 of the bits flipped: similar, not equal
    rng.shuffle(right)
    return left, right


def test_popcounts_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    filters = _random_filters(1, 50, 0.3)
    expected = [bin(int.from_bytes(row.astype("<u8").tobytes(), "little")).count("1") for row in filters]
    assert popcounts(filters).tolist() == expected
    monkeypatch.setattr(similarity, "_HAS_BITWISE_COUNT", False)
    assert popcounts(filters).tolist() == expected
    joined = dice_join(filters, filters, 0.99, workers=1)
    assert sorted(zip(joined.left_index.tolist(), joined.right_index.tolist(), strict=True)) == [
        (i, i) for i in range(50)]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 70))
def test_dice_pairs_matches_naive(seed: int, n: int) -> None:
    left, right = _with_near_copies(seed, n)
    rng = np.random.default_rng(seed)
    li = rng.integers(0, n, size=40).astype(np.intp)
    ri = rng.integers(0, n, size=40).astype(np.intp)
    got = dice_pairs(left, right, li, ri)
    want = [_naive_dice(left[i], right[j]) for i, j in zip(li, ri, strict=True)]
    assert np.allclose(got, want)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 90), threshold=st.floats(0.3, 1.0))
def test_dice_join_equals_brute_force_with_and_without_pruning(seed: int, n: int, threshold: float) -> None:
    left, right = _with_near_copies(seed, n)
    want = {(i, j) for i in range(n) for j in range(n) if _naive_dice(left[i], right[j]) >= threshold - 1e-9}
    for prune in (True, False):
        for workers in (1, 2):
            joined = dice_join(left, right, threshold, workers=workers, prune=prune)
            got = set(zip(joined.left_index.tolist(), joined.right_index.tolist(), strict=True))
            assert got == want
            for i, j, score in zip(joined.left_index, joined.right_index, joined.scores, strict=True):
                assert score == pytest.approx(_naive_dice(left[i], right[j]))
            assert joined.pairs_total == n * n
            assert joined.pairs_compared <= n * n


def test_pruning_skips_pairs_of_very_different_density() -> None:
    sparse = _random_filters(2, 64, 0.05)
    dense = _random_filters(3, 64, 0.6)
    joined = dice_join(sparse, dense, 0.8)
    assert joined.pairs_compared == 0
    assert len(joined.scores) == 0


def test_empty_filters_and_bad_input() -> None:
    empty = np.zeros((3, 16), dtype=np.uint64)
    assert dice_pairs(empty, empty, np.arange(3), np.arange(3)).tolist() == [0.0, 0.0, 0.0]
    assert len(dice_join(empty, empty, 0.5).scores) == 0
    with pytest.raises(EncodingError):
        popcounts(np.zeros((2, 16), dtype=np.int64))
    with pytest.raises(EncodingError):
        dice_pairs(empty, np.zeros((3, 8), dtype=np.uint64), np.arange(3), np.arange(3))
    with pytest.raises(ValueError, match="threshold"):
        dice_join(empty, empty, 0.0)
