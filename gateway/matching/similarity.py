"""Sørensen-Dice similarity of Bloom filters, with compiled (numba) kernels.

``dice(A, B) = 2·|A ∧ B| / (|A| + |B|)`` where ``|·|`` counts set bits (0 when both are empty).

* :func:`popcounts` — bits set per filter.
* :func:`dice_pairs` — similarities of given candidate pairs (after blocking).
* :func:`dice_join` — every pair of two sets at or above a threshold, without blocking. **Length-filter
  pruning**: since ``dice ≤ 2·min(|A|,|B|) / (|A|+|B|)``, a filter A can only reach the threshold against
  filters B whose popcount lies in a window around ``|A|``; both sides are sorted by popcount and each row of A
  is compared only with its window of B. Blocks of rows run on a thread pool (the kernels release the GIL), so
  a join uses every core.
* :func:`warm_up` — compile the kernels (or load them from numba's cache) before anything is timed.

**Why compiled.** With NumPy every step of a comparison (AND, popcount, sum over the words, the threshold test)
is a separate pass over a temporary array, which topped out at ~15 million comparisons/s per core; anonlink's
C++ does ~60-95 million here. The kernels below do a whole comparison in registers: for 1024-bit filters (the
shipped schemas' width) :func:`_and_popcount_rows` ANDs the two rows as one ``<16 x i64>`` LLVM vector, counts
the bits of its 128 bytes (``llvm.ctpop.v128i8``) and adds them with one ``vector.reduce.add``. On x86-64 with
AVX2 that becomes 4 x (AND, two nibble look-ups with ``vpshufb``, byte add) and a single ``vpsadbw`` per pair.
Measured here (per CPU-second, on a shared machine): ~225 million pairs/s per core, against ~170 million for a
word-by-word ``llvm.ctpop.i64`` loop (which LLVM vectorises with one horizontal sum per four words) and ~150
million for scalar ``popcnt`` (16 ANDs, 16 popcounts and 15 adds per pair keep the integer ALUs busy). Other
widths use the word loop. The threshold test is an integer comparison with a per-sum table
(:func:`_minimum_intersections`), so no division or float conversion happens per pair; scores are computed only
for the pairs that pass.

**Compilation.** Each kernel is compiled on first use for the one signature it is called with (C-contiguous
``uint64`` filters, ``int64`` counts and indices) and cached in ``__pycache__`` (``cache=True``; numba falls
back to a user-wide cache directory, or ``NUMBA_CACHE_DIR``, when that is read-only): ~3-4 s on a fresh
install, then ~1 s per process to load (most of it numba's own start-up). Servers and benchmarks call
:func:`warm_up` before anything is timed.

Scores computed here stay inside the gateway; see :mod:`gateway.matching.linkage`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba import types
from numba.extending import intrinsic

from gateway.matching.encoding import Filters
from gateway.matching.errors import EncodingError

__all__ = ["DiceJoin", "dice_join", "dice_pairs", "popcounts", "warm_up"]

IntArray = npt.NDArray[np.intp]
AnyIntArray = npt.NDArray[np.integer[Any]]  # candidate indices of any integer type: made int64 here
FloatArray = npt.NDArray[np.float64]
Counts = npt.NDArray[np.int64]

_TOLERANCE = 1e-9
"""A pair passes when ``dice ≥ threshold - 1e-9``: a threshold like 0.72 is not exactly representable."""
_FAST_WORDS = 16
"""Filter width (in 64-bit words) of the specialised kernel: 1024 bits."""
_MIN_ROWS_PER_TASK = 32
_MAX_ROWS_PER_TASK = 1024
_INITIAL_HITS = 1024

_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(func: _F, **options: Any) -> _F:
    """``numba.njit`` with the settings of every kernel here, typed so that callers keep the signature.

    Without a writable cache directory (the package's ``__pycache__`` in a read-only install and no writable
    home for numba's user-wide cache, nor ``NUMBA_CACHE_DIR``) numba refuses ``cache=True``; the kernels are
    then compiled once per process instead.
    """
    try:
        return cast(_F, numba.njit(cache=True, nogil=True, **options)(func))
    except RuntimeError:
        return cast(_F, numba.njit(cache=False, nogil=True, **options)(func))


def _inlined(func: _F) -> _F:
    """A helper of the kernels, inlined into them (numba IR): a call per pair would cost more than the pair."""
    return _compiled(func, inline="always")


def _register_intrinsic(typing: Callable[..., Any]) -> Any:
    return intrinsic(typing)


def _declare(module: Any, name: str, function_type: Any) -> Any:
    """An LLVM intrinsic's declaration in ``module`` (each name once per module)."""
    existing = module.globals.get(name)
    return existing if existing is not None else ir.Function(module, function_type, name)


# --- LLVM building blocks ----------------------------------------------------------------------------------------

def _popcount_word_typing(typingctx: Any, word: Any) -> Any:
    if not isinstance(word, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        value = context.cast(builder, args[0], signature.args[0], types.uint64)
        return builder.ctpop(value)  # llvm.ctpop.i64: popcnt, or vectorised by the loop vectoriser

    return types.int64(word), codegen


_popcount_word: Callable[[np.uint64], int] = _register_intrinsic(_popcount_word_typing)
"""Bits set in one 64-bit word."""


def _is_filters(value: Any) -> bool:
    return (isinstance(value, types.Array) and value.ndim == 2 and value.layout == "C"
            and value.dtype == types.uint64)


def _and_popcount_rows_typing(typingctx: Any, left: Any, i: Any, right: Any, j: Any, words: Any) -> Any:
    if not (isinstance(words, types.IntegerLiteral) and _is_filters(left) and _is_filters(right)
            and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None
    width = int(words.literal_value)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64, i16 = ir.IntType(64), ir.IntType(16)
        row_type = ir.VectorType(i64, width).as_pointer()
        byte_type = ir.VectorType(ir.IntType(8), width * 8)
        lane_type = ir.VectorType(i16, width * 8)
        invariant = builder.module.add_metadata([])
        loaded = []
        for array_type, array, index in ((signature.args[0], args[0], args[1]),
                                         (signature.args[2], args[2], args[3])):
            data = context.make_array(array_type)(context, builder, array).data
            offset = builder.mul(index, ir.Constant(i64, width))
            row = builder.load(builder.bitcast(builder.gep(data, [offset], inbounds=True), row_type), align=8)
            row.set_metadata("invariant.load", invariant)  # filters are never written here: LICM may hoist
            loaded.append(row)
        both = builder.bitcast(builder.and_(loaded[0], loaded[1]), byte_type)
        ctpop = _declare(builder.module, f"llvm.ctpop.v{width * 8}i8", ir.FunctionType(byte_type, [byte_type]))
        reduce_add = _declare(builder.module, f"llvm.vector.reduce.add.v{width * 8}i16",
                              ir.FunctionType(i16, [lane_type]))
        total = builder.call(reduce_add, [builder.zext(builder.call(ctpop, [both]), lane_type)])
        return builder.zext(total, i64)

    return types.int64(left, types.intp, right, types.intp, words), codegen


_and_popcount_rows: Callable[[Filters, int, Filters, int, int], int] = _register_intrinsic(
    _and_popcount_rows_typing)
"""``popcount(left[i] & right[j])`` for rows of a compile-time width (a literal ``words`` below 1024, so that
the sum fits the 16-bit lanes it is added in)."""


# --- kernels -----------------------------------------------------------------------------------------------------

@_inlined
def _intersection_words(left: Filters, i: int, right: Filters, j: int) -> int:
    """``popcount(left[i] & right[j])`` for any width, word by word (the kernels' path for widths ≠ 1024)."""
    total = 0
    for w in range(left.shape[1]):
        total += _popcount_word(left[i, w] & right[j, w])
    return total


@_compiled
def _row_popcounts(filters: Filters, out: Counts) -> None:
    for i in range(filters.shape[0]):
        total = 0
        for w in range(filters.shape[1]):
            total += _popcount_word(filters[i, w])
        out[i] = total


@_compiled
def _pair_intersections(left: Filters, right: Filters, left_index: Counts, right_index: Counts,
                        out: Counts) -> None:
    if left.shape[1] == _FAST_WORDS:
        for k in range(left_index.shape[0]):
            out[k] = _and_popcount_rows(left, left_index[k], right, right_index[k], _FAST_WORDS)
    else:
        for k in range(left_index.shape[0]):
            out[k] = _intersection_words(left, left_index[k], right, right_index[k])


@_inlined
def _count_window(count: int, need: Counts, bits: int) -> tuple[int, int]:
    """Popcounts ``[low, high]`` that a filter of ``count`` bits can reach the threshold with (low > high: none).

    ``b`` is feasible when ``min(count, b) ≥ need[count + b]``. ``need`` is non-decreasing with steps of at most
    one, so for ``b ≤ count`` feasibility is monotone increasing in ``b`` and for ``b ≥ count`` decreasing:
    the feasible counts are an interval around ``count`` (empty if ``count`` itself is not feasible).
    """
    if count < need[2 * count]:
        return 1, 0
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if mid >= need[count + mid]:
            hi = mid
        else:
            lo = mid + 1
    low = lo
    lo, hi = count, bits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count >= need[count + mid]:
            lo = mid
        else:
            hi = mid - 1
    return low, lo


@_inlined
def _first_at_least(sorted_counts: Counts, value: int) -> int:
    """``np.searchsorted(sorted_counts, value, "left")``, as a loop: numba's generic one takes seconds to compile."""
    lo, hi = 0, sorted_counts.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_counts[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_compiled
def _grow(array: Counts, needed: int) -> Counts:
    """A copy with room for ``needed`` items (element by element: slice assignment is slow to compile)."""
    bigger = np.empty(max(2 * array.shape[0], needed), dtype=np.int64)
    for k in range(array.shape[0]):
        bigger[k] = array[k]
    return bigger


@_inlined
def _scan_row_1024(left: Filters, i: int, count: int, right: Filters, right_counts: Counts, need: Counts,
                   first: int, last: int, columns: Counts, inters: Counts) -> int:
    """Columns ``first ≤ j < last`` that row ``i`` (``count`` bits) reaches the threshold with, into
    ``columns`` and ``inters``; returns how many. 1024-bit filters (the hot loop of a join)."""
    found = 0
    for j in range(first, last):
        inter = _and_popcount_rows(left, i, right, j, _FAST_WORDS)
        if inter >= need[count + right_counts[j]]:
            columns[found] = j
            inters[found] = inter
            found += 1
    return found


@_inlined
def _scan_row_words(left: Filters, i: int, count: int, right: Filters, right_counts: Counts, need: Counts,
                    first: int, last: int, columns: Counts, inters: Counts) -> int:
    """:func:`_scan_row_1024` for any width (kept as a separate loop: a width test inside the loop is not
    hoisted by LLVM and costs a third of the speed)."""
    found = 0
    for j in range(first, last):
        inter = _intersection_words(left, i, right, j)
        if inter >= need[count + right_counts[j]]:
            columns[found] = j
            inters[found] = inter
            found += 1
    return found


@_compiled
def _join_rows(left: Filters, left_counts: Counts, right: Filters, right_counts: Counts, need: Counts,
               start: int, stop: int, prune: bool) -> tuple[Counts, Counts, Counts, int]:
    """Pairs ``(i, j)`` with ``start ≤ i < stop`` and ``popcount(left[i] & right[j]) ≥ need[|i| + |j|]``.

    Both sides are sorted by popcount. Returns the row and column indices, the intersections and the number of
    pairs compared. A row's hits go to scratch arrays with room for a whole row, so the inner loop never grows
    (reallocating there would make numba count references on every iteration).
    """
    bits = left.shape[1] * 64
    fast = left.shape[1] == _FAST_WORDS
    hits = 0
    compared = 0
    rows = np.empty(_INITIAL_HITS, dtype=np.int64)
    columns = np.empty(_INITIAL_HITS, dtype=np.int64)
    inters = np.empty(_INITIAL_HITS, dtype=np.int64)
    row_columns = np.empty(right.shape[0], dtype=np.int64)
    row_inters = np.empty(right.shape[0], dtype=np.int64)
    for i in range(start, stop):
        first, last = 0, right.shape[0]
        if prune:
            low, high = _count_window(left_counts[i], need, bits)
            if low > high:
                continue
            first = _first_at_least(right_counts, low)
            last = _first_at_least(right_counts, high + 1)
        compared += last - first
        if fast:
            found = _scan_row_1024(left, i, left_counts[i], right, right_counts, need, first, last, row_columns,
                                   row_inters)
        else:
            found = _scan_row_words(left, i, left_counts[i], right, right_counts, need, first, last, row_columns,
                                    row_inters)
        if hits + found > rows.shape[0]:
            rows = _grow(rows, hits + found)
            columns = _grow(columns, hits + found)
            inters = _grow(inters, hits + found)
        for k in range(found):
            rows[hits + k] = i
            columns[hits + k] = row_columns[k]
            inters[hits + k] = row_inters[k]
        hits += found
    return rows[:hits], columns[:hits], inters[:hits], compared


# --- Python side -------------------------------------------------------------------------------------------------

def _check(filters: Filters, words: int | None = None) -> None:
    if filters.ndim != 2 or filters.dtype != np.uint64 or (words is not None and filters.shape[1] != words):
        raise EncodingError("filters must be a 2-D uint64 array with one filter per row, of equal width")


def _contiguous(filters: Filters) -> Filters:
    out: Filters = np.ascontiguousarray(filters, dtype=np.uint64)
    return out


def popcounts(filters: Filters) -> IntArray:
    """Number of set bits of each filter."""
    _check(filters)
    out = np.empty(len(filters), dtype=np.int64)
    _row_popcounts(_contiguous(filters), out)
    return out.astype(np.intp, copy=False)


def _scores(intersections: Counts | IntArray, totals: Counts | IntArray) -> FloatArray:
    """``2·inter / total``, 0 where ``total`` is 0 (two empty filters)."""
    out = np.zeros(len(totals), dtype=np.float64)
    np.divide(2.0 * intersections, totals, out=out, where=totals > 0)
    return out


def _indices(index: AnyIntArray, size: int, side: str) -> Counts:
    out = np.ascontiguousarray(index, dtype=np.int64)
    if len(out) and (int(out.min()) < 0 or int(out.max()) >= size):
        raise IndexError(f"{side} candidate index out of range")
    return out


def dice_pairs(left: Filters, right: Filters, left_index: AnyIntArray, right_index: AnyIntArray, *,
               left_counts: IntArray | None = None, right_counts: IntArray | None = None) -> FloatArray:
    """Dice similarity for each candidate pair ``(left[left_index[i]], right[right_index[i]])``."""
    _check(left)
    _check(right, left.shape[1])
    if left_index.shape != right_index.shape or left_index.ndim != 1:
        raise EncodingError("candidate index arrays differ in length")
    li = _indices(left_index, len(left), "left")
    ri = _indices(right_index, len(right), "right")
    lc = popcounts(left) if left_counts is None else left_counts
    rc = popcounts(right) if right_counts is None else right_counts
    inter = np.empty(len(li), dtype=np.int64)
    _pair_intersections(_contiguous(left), _contiguous(right), li, ri, inter)
    return _scores(inter, lc[li] + rc[ri])


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


def _minimum_intersections(threshold: float, bits: int) -> Counts:
    """``need[s]``: the least intersection with ``2·inter / s ≥ threshold - tolerance`` (``s = |A| + |B|``).

    Evaluated with the same float division as the scores, so the integer test ``inter ≥ need[s]`` in the kernel
    keeps exactly the pairs whose score passes. Non-decreasing in ``s`` with steps of at most one (what
    :func:`_count_window` relies on). ``s = 0`` (two empty filters, score 0) passes only a threshold ≤ tolerance;
    otherwise its entry is unreachable.
    """
    floor = threshold - _TOLERANCE
    sums = np.arange(2 * bits + 1, dtype=np.float64)
    need = np.clip(np.ceil(floor * sums / 2.0), 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:  # fix float rounding of the estimate in either direction (one step at most, in practice)
            lower = (need > 0) & (2.0 * (need - 1) / sums >= floor)
            higher = 2.0 * need / sums < floor
            higher[0] = False
            if not lower[1:].any() and not higher.any():
                break
            need[1:] -= lower[1:]
            need += higher
    need[0] = 0 if floor <= 0 else 2 * bits + 1
    return need.astype(np.int64)


def _rows_per_task(rows: int, workers: int) -> int:
    return min(max(math.ceil(rows / (8 * workers)), _MIN_ROWS_PER_TASK), _MAX_ROWS_PER_TASK)


def dice_join(left: Filters, right: Filters, threshold: float, *, workers: int | None = None,
              prune: bool = True) -> DiceJoin:
    """All pairs with ``dice ≥ threshold`` between two filter sets (no blocking; pruned by length)."""
    _check(left)
    _check(right, left.shape[1])
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    lc, rc = popcounts(left).astype(np.int64), popcounts(right).astype(np.int64)
    lorder = np.argsort(lc, kind="stable")
    rorder = np.argsort(rc, kind="stable")
    left_sorted = _contiguous(left[lorder])
    right_sorted = _contiguous(right[rorder])
    lc_sorted = np.ascontiguousarray(lc[lorder])
    rc_sorted = np.ascontiguousarray(rc[rorder])
    need = _minimum_intersections(threshold, left.shape[1] * 64)

    def task(start: int, stop: int) -> tuple[Counts, Counts, Counts, int]:
        return _join_rows(left_sorted, lc_sorted, right_sorted, rc_sorted, need, start, stop, prune)

    workers = workers or (os.cpu_count() or 1)
    step = _rows_per_task(len(left), workers)
    bounds = [(start, min(start + step, len(left))) for start in range(0, len(left), step)]
    if len(right) == 0:
        bounds = []
    if workers > 1 and len(bounds) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda b: task(*b), bounds))
    else:
        parts = [task(*b) for b in bounds]
    if parts:
        rows = np.concatenate([p[0] for p in parts])
        columns = np.concatenate([p[1] for p in parts])
        inters = np.concatenate([p[2] for p in parts])
    else:
        rows = columns = inters = np.empty(0, dtype=np.int64)
    scores = _scores(inters, lc_sorted[rows] + rc_sorted[columns])
    return DiceJoin(lorder[rows].astype(np.intp), rorder[columns].astype(np.intp), scores,
                    len(left) * len(right), sum(p[3] for p in parts))


def warm_up() -> None:
    """Compile every kernel (or load it from numba's on-disk cache): call before timing anything."""
    for words in (_FAST_WORDS, 1):
        filters = np.zeros((2, words), dtype=np.uint64)
        filters[0, 0] = 1
        dice_join(filters, filters, 0.5, workers=1)
        dice_pairs(filters, filters, np.arange(2), np.arange(2))
