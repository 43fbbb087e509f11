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
_PAIR_CHUNK = 1 << 15
_ROW_BLOCK = 16
"""Left filters per task of :func:`dice_join` (one thread works on one task at a time)."""
_COLUMN_BLOCK = 1024
"""Right filters per inner step: a ``16 x 1024`` uint64 tile is 128 KiB, so the tile, the accumulator and
the scratch space stay in L2 while all words of the filters go through them."""
_MAX_LANE_WORDS = 31
"""Words whose byte-lane popcounts (≤ 8 each) can be summed into one uint8 lane without overflow."""
_LOW_BYTES = np.uint64(0x00FF00FF00FF00FF)
_SUM_U16_LANES = np.uint64(0x0001000100010001)
_SHIFT_8 = np.uint64(8)
_SHIFT_48 = np.uint64(48)


def _popcount_words(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Per-word popcount (same shape), with a lookup-table fallback for NumPy < 2.0."""
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape(*words.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)  # type: ignore[no-any-return]


def _count_bytes_inplace(words: npt.NDArray[np.uint64]) -> None:
    """Replace every byte of ``words`` by its popcount (0..8): SIMD on uint8, unlike the uint64 loop."""
    as_bytes = words.view(np.uint8)
    if _HAS_BITWISE_COUNT:
        np.bitwise_count(as_bytes, out=as_bytes)
    else:
        np.take(_BYTE_POPCOUNT, as_bytes, out=as_bytes)


def _sum_byte_lanes(acc: npt.NDArray[np.uint64], scratch: npt.NDArray[np.uint64]) -> None:
    """In place: each uint64 of byte-lane counts (each lane ≤ 255) becomes the sum of its 8 lanes (≤ 2040).

    Pairs of byte lanes are added into 16-bit lanes (≤ 510), then one multiplication by 0x0001000100010001
    gathers the four 16-bit lanes in the top 16 bits (no lane overflows: the total is < 65536).
    """
    np.right_shift(acc, _SHIFT_8, out=scratch)
    np.bitwise_and(scratch, _LOW_BYTES, out=scratch)
    np.bitwise_and(acc, _LOW_BYTES, out=acc)
    np.add(acc, scratch, out=acc)
    np.multiply(acc, _SUM_U16_LANES, out=acc)
    np.right_shift(acc, _SHIFT_48, out=acc)


def and_popcounts(left: Filters, right: Filters) -> npt.NDArray[np.uint64]:
    """``popcount(left[i] & right[i])`` for rows of two equally shaped filter arrays."""
    words = left.shape[1]
    both = np.bitwise_and(left, right)
    _count_bytes_inplace(both)
    total = np.zeros(len(both), dtype=np.uint64)
    scratch = np.empty(len(both), dtype=np.uint64)
    for start in range(0, words, _MAX_LANE_WORDS):
        part = both[:, start:start + _MAX_LANE_WORDS]
        while part.shape[1] > 1:  # pairwise halving keeps every add a long contiguous SIMD loop
            half = part.shape[1] // 2
            summed = part[:, :half] + part[:, half:2 * half]
            if part.shape[1] % 2:
                summed[:, 0] += part[:, -1]
            part = summed
        acc = np.ascontiguousarray(part[:, 0])
        _sum_byte_lanes(acc, scratch)
        total += acc
    return total


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
        inter = and_popcounts(left[li], right[ri]).astype(np.float64)
        total = (lc[li] + rc[ri]).astype(np.float64)
        np.divide(2.0 * inter, total, out=out[start:start + len(li)], where=total > 0)
        out[start:start + len(li)][total == 0] = 0.0
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


def _intersections(rows: Filters, right_t: Filters, first: int, last: int, acc: npt.NDArray[np.uint64],
                   tmp: npt.NDArray[np.uint64]) -> None:
    """``acc[i, j] = popcount(rows[i] & right[first + j])`` for a tile; ``right_t`` is ``(words, m)``.

    Three NumPy calls do the bulk of the work for the whole tile: one broadcast AND into ``tmp``
    (``rows x words x columns``, contiguous along the columns), an in-place per-byte popcount (a SIMD loop on
    uint8, where the uint64 popcount is a scalar loop) and an add-reduce over the words that accumulates
    eight byte lanes per uint64 at once; the lanes are summed once per pair at the end.
    """
    words = right_t.shape[0]
    width = last - first
    out = acc[:, :width]
    for group in range(0, words, _MAX_LANE_WORDS):
        stop = min(group + _MAX_LANE_WORDS, words)
        part = tmp[:, :stop - group, :width]
        np.bitwise_and(rows[:, group:stop, None], right_t[None, group:stop, first:last], out=part)
        _count_bytes_inplace(part)
        if group == 0:
            np.add.reduce(part, axis=1, out=out)
            _sum_byte_lanes(out, tmp[:, 0, :width])
        else:  # wider than 1984 bits: sum this group's lanes separately and add
            lanes = np.add.reduce(part, axis=1)
            _sum_byte_lanes(lanes, tmp[:, 0, :width])
            out += lanes


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
    half_t = threshold / 2.0

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
        span = min(_COLUMN_BLOCK, last - first)
        acc = np.empty((len(rows), span), dtype=np.uint64)
        tmp = np.empty((len(rows), min(right_t.shape[0], _MAX_LANE_WORDS), span), dtype=np.uint64)
        found_r: list[IntArray] = []
        found_c: list[IntArray] = []
        found_i: list[FloatArray] = []
        for lo in range(first, last, _COLUMN_BLOCK):
            hi = min(lo + _COLUMN_BLOCK, last)
            _intersections(rows, right_t, lo, hi, acc, tmp)
            inter = acc[:, :hi - lo]
            # Cheap filter with one bound for the whole tile (both sides are sorted by popcount), exact below.
            floor = max(int(half_t * float(counts[0] + rc_sorted[lo]) - 1.0), 0)
            hit_r, hit_c = np.nonzero(inter >= floor)
            if len(hit_r):
                found_r.append(hit_r)
                found_c.append(hit_c + (lo - first))
                found_i.append(inter[hit_r, hit_c].astype(np.float64))
        if found_r:
            hit_r, hit_c = np.concatenate(found_r), np.concatenate(found_c)
            inter_hits = np.concatenate(found_i)
        else:
            hit_r = hit_c = np.empty(0, dtype=np.intp)
            inter_hits = np.empty(0)
        sums = counts[hit_r] + rc_sorted[first + hit_c]
        passes = 2.0 * inter_hits >= threshold * sums - eps
        hit_r, hit_c, inter_hits, sums = hit_r[passes], hit_c[passes], inter_hits[passes], sums[passes]
        scores = np.divide(2.0 * inter_hits, sums, out=np.zeros(len(hit_r)), where=sums > 0)
        keep = scores >= threshold - eps
        return (lorder[start + hit_r[keep]], rorder[first + hit_c[keep]], scores[keep],
                len(rows) * (last - first))

    starts = range(0, len(left_sorted), _ROW_BLOCK)
    workers = workers or (os.cpu_count() or 1)
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
