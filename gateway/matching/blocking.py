"""Blocking: propose candidate pairs cheaply so that only those are compared with Dice.

Comparing every record of one party with every record of another grows with n·m. Two blockers, both run on
the gateway over what partners sent:

**P-Sig-style signatures** (:class:`SignatureBlocker`, the default): partners send, per record, keyed hashes of
a few signatures chosen in the schema (``soc_sec_id``; ``given_name + surname``; ``surname + postcode``; …,
see :mod:`gateway.matching.encoding`). Two records are candidates when they share any signature. On FEBRL4
this keeps ≥ 99.9 % of true pairs while proposing ~0.03 % of all pairs. Signatures so common that their block
would exceed ``max_block_pairs`` are skipped (P-Sig's frequency filter). Cost in privacy: the gateway learns
which records share a signature value (never the value), and could count how often a key occurs.

**Hamming LSH on bit samples** (:class:`BitSampleLSH`): needs nothing beyond the filters, so it reveals nothing
the filters do not, but with dense person CLKs it finds fewer of the weaker true matches (use more bands and
fewer bits per band, at the price of more candidates). A *band* is a fixed random sample of ``b`` bit
positions; a filter's key in that band is the sampled bits. Two filters collide in a band iff they agree on
all sampled bits, with probability ``a^b`` where ``a = 1 - hamming/L`` is the fraction of positions on which
they agree. Over ``bands`` independent bands a pair is proposed with probability ``1 - (1 - a^b)^bands``:
close to 1 for near-identical filters and tiny for unrelated ones (a ≈ 0.5), because of the power b. Band
positions come from a public seed; they need not be secret.

Blocks whose pair count exceeds ``max_block_pairs`` (e.g. all-empty filters sharing one key) are skipped
rather than exploding the candidate set; empty filters are never proposed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gateway.matching.encoding import EncodedDataset, Filters
from gateway.matching.errors import EncodingError

__all__ = ["BitSampleLSH", "Blocker", "CandidatePairs", "KeyIndex", "SignatureBlocker"]

IntArray = npt.NDArray[np.intp]
_ROWS_PER_CHUNK = 2048


@dataclass(frozen=True, slots=True)
class CandidatePairs:
    """Candidate pairs ``(left_index[i], right_index[i])``, unique, sorted by left then right."""

    left_index: IntArray
    right_index: IntArray

    def __len__(self) -> int:
        return len(self.left_index)


class Blocker(Protocol):
    """Proposes candidate pairs between two encoded datasets."""

    def candidate_pairs(self, left: EncodedDataset, right: EncodedDataset) -> CandidatePairs: ...


def _unique_pairs(li: IntArray, ri: IntArray, right_size: int) -> CandidatePairs:
    if len(li) == 0:
        return CandidatePairs(li, ri)
    width = np.intp(max(right_size, 1))
    codes = np.unique(li.astype(np.intp) * width + ri)
    return CandidatePairs((codes // width).astype(np.intp), (codes % width).astype(np.intp))


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """One side of an equi-join on keys, sorted once: the row of each key, the (stable) sort order of the keys,
    and per distinct key where its run starts in that order and how long it is. Built per call, or once for a
    dataset that is joined again and again (a holder's enrolled records in fuzzy discovery: sorting 100,000
    records' keys was most of a request's comparison)."""

    rows: IntArray
    order: IntArray
    unique: npt.NDArray[np.uint64]
    start: IntArray
    count: IntArray

    @classmethod
    def of(cls, keys: npt.NDArray[np.uint64], rows: IntArray) -> KeyIndex:
        order = np.argsort(keys, kind="stable")
        unique, start, count = np.unique(keys[order], return_index=True, return_counts=True)
        return cls(rows, order, unique, start, count)

    @classmethod
    def of_blocking_keys(cls, block_keys: npt.NDArray[np.uint64]) -> KeyIndex:
        """The index of a dataset's blocking keys (empty keys left out), as :class:`SignatureBlocker` joins them."""
        keys, rows = _present_keys(block_keys)
        return cls.of(keys, rows)

    @classmethod
    def _of_sorted(cls, keys: npt.NDArray[np.uint64], rows: IntArray) -> KeyIndex:
        """The index of keys sorted already (``rows`` in the same order): no sort, one pass for the runs."""
        first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else \
            np.empty(0, dtype=np.intp)
        count = np.diff(np.append(first, len(keys))).astype(np.intp)
        return cls(rows, np.arange(len(keys), dtype=np.intp), keys[first], first.astype(np.intp), count)

    def updated(self, moved: IntArray, block_keys: npt.NDArray[np.uint64], rows: IntArray) -> KeyIndex:
        """This index after its dataset changed, without sorting it again (a holder's enrolled records after a
        batch of a few: :meth:`gateway.enrolment.held.HeldRecords.updated`).

        ``moved[i]``: where the row ``i`` of the old dataset is in the new one, or -1 when it is gone; the new
        dataset's other rows are ``rows``, with the blocking keys ``block_keys`` (empty keys left out, as
        :meth:`of_blocking_keys` leaves them out). The result joins exactly as the index of the new dataset's
        keys built from scratch: the same (key, row) entries, sorted by key (:func:`_join` does not depend on
        the order of the rows within a key's run)."""
        keys = np.repeat(self.unique, self.count)
        kept_rows = moved[self.rows[self.order]]
        keep = kept_rows >= 0
        keys, kept_rows = keys[keep], kept_rows[keep]
        new_keys, at_rows = _present_keys(block_keys)
        order = np.argsort(new_keys, kind="stable")
        new_keys, new_rows = new_keys[order], rows[at_rows[order]]
        at = np.searchsorted(keys, new_keys, side="right")
        return KeyIndex._of_sorted(np.insert(keys, at, new_keys), np.insert(kept_rows, at, new_rows).astype(np.intp))


@dataclass(frozen=True, slots=True)
class SignatureBlocker:
    """Candidates are records that share at least one blocking key (P-Sig style).

    ``right_index``: the :meth:`KeyIndex.of_blocking_keys` of a right dataset's keys, used when the right dataset
    passed is that one (the very same key array), instead of sorting its keys again.

    ``left_rows_alone``: a block is skipped when one left row's pairs with it would pass ``max_block_pairs``, not
    when all of the left side's would — for a look-up whose left rows are subjects each answered as if asked alone
    (:func:`gateway.matching.lookup.matches`). Counted over the whole left side, a block compared for a subject
    asked alone was skipped for it when others asked with it shared the key: its answer depended on them."""

    max_block_pairs: int = 10_000
    right_index: tuple[npt.NDArray[np.uint64], KeyIndex] | None = field(default=None, compare=False, repr=False)
    left_rows_alone: bool = False

    def candidate_pairs(self, left: EncodedDataset, right: EncodedDataset) -> CandidatePairs:
        if left.block_keys is None or right.block_keys is None:
            raise EncodingError("signature blocking needs blocking keys from both parties")
        if left.block_keys.shape[1] != right.block_keys.shape[1]:
            raise EncodingError("the parties' blocking keys come from different schemas")
        kept = self.right_index
        right_index = kept[1] if kept is not None and kept[0] is right.block_keys else \
            KeyIndex.of_blocking_keys(right.block_keys)
        li, ri = _join(KeyIndex.of_blocking_keys(left.block_keys), right_index, self.max_block_pairs,
                       left_rows_alone=self.left_rows_alone)
        return _unique_pairs(li, ri, len(right))


def _present_keys(keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.uint64], IntArray]:
    rows, columns = np.nonzero(keys)
    return keys[rows, columns], rows.astype(np.intp)


@dataclass(frozen=True, slots=True)
class BitSampleLSH:
    """Hamming LSH: ``bands`` random samples of ``bits_per_band`` bit positions each."""

    bands: int = 60
    bits_per_band: int = 20
    seed: int = 0x5EED
    max_block_pairs: int = 1_000_000

    def __post_init__(self) -> None:
        if not 1 <= self.bits_per_band <= 56:
            raise ValueError("bits_per_band must be between 1 and 56")
        if not 1 <= self.bands <= 255:
            raise ValueError("bands must be between 1 and 255")

    def _positions(self, filter_bits: int) -> npt.NDArray[np.intp]:
        rng = np.random.default_rng(self.seed)
        return np.stack([rng.choice(filter_bits, size=self.bits_per_band, replace=False)
                         for _ in range(self.bands)]).astype(np.intp)

    def keys(self, filters: Filters) -> npt.NDArray[np.uint64]:
        """``(n, bands)`` band keys; the band number is folded into the top byte so bands never collide."""
        if filters.ndim != 2 or filters.dtype != np.uint64:
            raise EncodingError("filters must be a 2-D uint64 array")
        positions = self._positions(filters.shape[1] * 64)  # (bands, b)
        weights = (np.uint64(1) << np.arange(self.bits_per_band, dtype=np.uint64))
        band_tag = np.arange(self.bands, dtype=np.uint64) << np.uint64(56)
        out = np.empty((len(filters), self.bands), dtype=np.uint64)
        for start in range(0, len(filters), _ROWS_PER_CHUNK):
            chunk = np.ascontiguousarray(filters[start:start + _ROWS_PER_CHUNK])
            bits = np.unpackbits(chunk.view(np.uint8), axis=1, bitorder="little")  # (rows, L); see encoding
            sampled = bits[:, positions].astype(np.uint64)  # (rows, bands, b)
            out[start:start + len(chunk)] = (sampled * weights).sum(axis=2, dtype=np.uint64) | band_tag
        return out

    def candidate_pairs(self, left: EncodedDataset, right: EncodedDataset) -> CandidatePairs:
        if left.filters.shape[1] != right.filters.shape[1]:
            raise EncodingError("both filter sets must have the same width")
        left_keys, left_rows = _flatten(self.keys(left.filters), left.filters)
        right_keys, right_rows = _flatten(self.keys(right.filters), right.filters)
        li, ri = _equi_join(left_keys, left_rows, right_keys, right_rows, self.max_block_pairs)
        return _unique_pairs(li, ri, len(right))


def _flatten(keys: npt.NDArray[np.uint64], filters: Filters) -> tuple[npt.NDArray[np.uint64], IntArray]:
    """One (key, row) entry per band per non-empty filter."""
    nonempty = np.flatnonzero(filters.any(axis=1))
    selected = keys[nonempty]
    rows = np.repeat(nonempty, keys.shape[1]).astype(np.intp)
    return selected.reshape(-1), rows


def _equi_join(left_keys: npt.NDArray[np.uint64], left_rows: IntArray, right_keys: npt.NDArray[np.uint64],
               right_rows: IntArray, max_block_pairs: int) -> tuple[IntArray, IntArray]:
    """All (left row, right row) with equal keys: sort both sides, intersect the key runs, expand products."""
    return _join(KeyIndex.of(left_keys, left_rows), KeyIndex.of(right_keys, right_rows), max_block_pairs)


def _common(left: npt.NDArray[np.uint64], right: npt.NDArray[np.uint64]) -> tuple[IntArray, IntArray]:
    """Where the keys both sorted, distinct arrays hold are in each, in key order (``np.intersect1d``'s
    indices), by bisecting ``right`` for each of ``left``'s: the left side is a request's few subjects, the
    right a holder's kept keys, so the cost follows the subjects, not the holder's records (``intersect1d``
    sorts both sides together, every request)."""
    at = np.searchsorted(right, left)
    found = at < len(right)
    found[found] = right[at[found]] == left[found]
    return np.flatnonzero(found).astype(np.intp), at[found].astype(np.intp)


def _join(left: KeyIndex, right: KeyIndex, max_block_pairs: int, *,
          left_rows_alone: bool = False) -> tuple[IntArray, IntArray]:
    """:func:`_equi_join` of two sides sorted already; ``left_rows_alone``: see :class:`SignatureBlocker`."""
    left_rows, right_rows, lo, ro = left.rows, right.rows, left.order, right.order
    l_pos, r_pos = _common(left.unique, right.unique)
    lc, rc = left.count[l_pos].astype(np.intp), right.count[r_pos].astype(np.intp)
    ls, rs = left.start[l_pos].astype(np.intp), right.start[r_pos].astype(np.intp)
    sizes = lc * rc
    keep = (rc if left_rows_alone else sizes) <= max_block_pairs
    lc, rc, ls, rs, sizes = lc[keep], rc[keep], ls[keep], rs[keep], sizes[keep]
    total = int(sizes.sum())
    if total == 0:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    block = np.repeat(np.arange(len(sizes), dtype=np.intp), sizes)
    offset = np.arange(total, dtype=np.intp) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    i = offset // rc[block]
    j = offset % rc[block]
    return left_rows[lo[ls[block] + i]], right_rows[ro[rs[block] + j]]
