"""Sørensen-Dice similarity of Bloom filters, vectorised with NumPy popcount.

``dice(A, B) = 2·|A ∧ B| / (|A| + |B|)`` where ``|·|`` counts set bits (0 when both are empty).

* :func:`popcounts` — bits set per filter (``np.bitwise_count`` on NumPy ≥ 2.0, a byte lookup table before).
* :func:`dice_pairs` — similarities of given candidate pairs (after blocking): gather, AND, popcount.
* :func:`dice_join` — every pair of two sets at or above a threshold, without blocking. The inner kernel
  works word by word on a transposed copy of the right-hand side (``16 x m`` contiguous rows), so each NumPy
  call is a long SIMD loop (AND, popcount, add) instead of a short reduction per pair. **Length-filter
  pruning**: since ``dice ≤ 2·min(|A|,|B|) / (|A|+|B|)``, a filter A can only reach threshold t against
  filters with ``|A|·t/(2-t) ≤ |B| ≤ |A|·(2-t)/t``; both sides are sorted by popcount and each block of A
  is compared only with that window of B. Blocks run on a thread pool (NumPy releases the GIL).

Scores computed here stay inside the gateway; see :mod:`gateway.matching.linkage`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.matching.encoding import Filters
from gateway.matching.errors import EncodingError

__all__ = ["DiceJoin", "dice_join", "dice_pairs", "popcounts"]

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_PAIR_CHUNK = 1 << 16
_ROW_BLOCK = 32


def _popcount_words(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Per-word popcount (same shape), with a lookup-table fallback for NumPy < 2.0."""
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape(*words.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)  # type: ignore[no-any-return]


def popcounts(filters: Filters) -> IntArray:
    """Number of set bits of each filter."""
    _check(filters)
    return _popcount_words(filters).sum(axis=1, dtype=np.intp)  # type: ignore[no-any-return]


def _check(filters: Filters, words: int | None = None) -> None:
    if filters.ndim != 2 or filters.dtype != np.uint64 or (words is not None and filters.shape[1] != words):
        raise EncodingError("filters must be a 2-D uint64 array with one filter per row, of equal width")


def dice_pairs(left: Filters, right: Filters, left_index: IntArray, right_index: IntArray, *,
               left_counts: IntArray | None = None, right_counts: IntArray | None = None) -> FloatArray:
    """Dice similarity for each candidate pair ``(left[left_index[i]], right[right_index[i]])``."""
    _check(left)
    _check(right, left.shape[1])
    if left_index.shape != right_index.shape:
        raise EncodingError("candidate index arrays differ in length")
    lc = popcounts(left) if left_counts is None else left_counts
    rc = popcounts(right) if right_counts is None else right_counts
    out = np.empty(len(left_index), dtype=np.float64)
    for start in range(0, len(left_index), _PAIR_CHUNK):
        li = left_index[start:start + _PAIR_CHUNK]
        ri = right_index[start:start + _PAIR_CHUNK]
        inter = _popcount_words(left[li] & right[ri]).sum(axis=1, dtype=np.intp)
        total = lc[li] + rc[ri]
        out[start:start + len(li)] = np.divide(2.0 * inter, total, out=np.zeros(len(li)), where=total > 0)
    return out


@dataclass(frozen=True, slots=True)
class DiceJoin:
    """Pairs at or above the threshold, plus how much work it took (for benchmarks and statistics)."""

    left_index: IntArray
    right_index: IntArray
    scores: FloatArray
    pairs_total: int
    """``len(left) · len(right)``: the comparisons a naive join would make."""
    pairs_compared: int
    """Comparisons actually computed after length-filter pruning."""


def _window(counts_sorted: IntArray, low: float, high: float) -> tuple[int, int]:
    start = int(np.searchsorted(counts_sorted, low, side="left"))
    stop = int(np.searchsorted(counts_sorted, high, side="right"))
    return start, stop


def dice_join(left: Filters, right: Filters, threshold: float, *, workers: int | None = None,
              prune: bool = True) -> DiceJoin:
    """All pairs with ``dice ≥ threshold`` between two filter sets (no blocking; pruned by length)."""
    _check(left)
    _check(right, left.shape[1])
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    lc, rc = popcounts(left), popcounts(right)
    lorder = np.argsort(lc, kind="stable")
    rorder = np.argsort(rc, kind="stable")
    left_sorted = np.ascontiguousarray(left[lorder])
    right_t = np.ascontiguousarray(right[rorder].T)  # (words, m)
    lc_sorted, rc_sorted = lc[lorder], rc[rorder]
    lo_factor = threshold / (2.0 - threshold)
    hi_factor = (2.0 - threshold) / threshold
    # Integer Dice test without division: 2·inter ≥ t·(|A|+|B|), with a small epsilon for float rounding.
    eps = 1e-9

    def block(start: int) -> tuple[IntArray, IntArray, FloatArray, int]:
        rows = left_sorted[start:start + _ROW_BLOCK]
        counts = lc_sorted[start:start + _ROW_BLOCK]
        if prune:
            first, last = _window(rc_sorted, counts[0] * lo_factor - eps, counts[-1] * hi_factor + eps)
        else:
            first, last = 0, right_t.shape[1]
        if last <= first:
            empty = np.empty(0, dtype=np.intp)
            return empty, empty, np.empty(0), 0
        words = right_t[:, first:last]
        acc = np.zeros((len(rows), last - first), dtype=np.uint16)
        tmp = np.empty((len(rows), last - first), dtype=np.uint64)
        cnt = np.empty((len(rows), last - first), dtype=np.uint8)
        for w in range(words.shape[0]):
            np.bitwise_and(rows[:, w, None], words[w][None, :], out=tmp)
            if _HAS_BITWISE_COUNT:
                np.bitwise_count(tmp, out=cnt)
            else:
                cnt[...] = _popcount_words(tmp)
            np.add(acc, cnt, out=acc)
        total = counts[:, None] + rc_sorted[None, first:last]
        hit_r, hit_c = np.nonzero(2.0 * acc >= threshold * total - eps)
        sums = total[hit_r, hit_c]
        scores = np.divide(2.0 * acc[hit_r, hit_c], sums, out=np.zeros(len(hit_r)), where=sums > 0)
        keep = scores >= threshold - eps
        return (lorder[start + hit_r[keep]], rorder[first + hit_c[keep]], scores[keep],
                len(rows) * (last - first))

    starts = range(0, len(left_sorted), _ROW_BLOCK)
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(block, starts))
    else:
        parts = [block(start) for start in starts]
    if parts:
        li = np.concatenate([p[0] for p in parts])
        ri = np.concatenate([p[1] for p in parts])
        sc = np.concatenate([p[2] for p in parts])
    else:
        li = ri = np.empty(0, dtype=np.intp)
        sc = np.empty(0)
    return DiceJoin(li.astype(np.intp), ri.astype(np.intp), sc, len(left) * len(right),
                    sum(p[3] for p in parts))
