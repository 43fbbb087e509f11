"""The gateway's linkage pipeline: filters of several parties → groups of matching records.

``link`` takes one filter array per dataset (party), and for every pair of datasets

1. proposes candidate pairs with a :class:`~gateway.matching.blocking.Blocker` (default: P-Sig-style
   signatures when every dataset has blocking keys), or compares everything with length-filter pruning when
   ``blocker=None`` or a dataset has no blocking keys;
2. scores the candidates with Sørensen-Dice (:mod:`gateway.matching.similarity`) and keeps those at or above
   ``threshold``;
3. solves greedily (:func:`~gateway.matching.solving.greedy_solve`): each record ends in at most one group,
   with at most one record per dataset.

The result holds **groups of (dataset, record index)** and counts, never similarity scores: scores would let a
party learn how close another party's record is to its own, which is more than "same entity or not".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.matching.blocking import Blocker, SignatureBlocker
from gateway.matching.encoding import EncodedDataset, Filters
from gateway.matching.errors import EncodingError
from gateway.matching.similarity import IntArray, dice_join, dice_pairs, popcounts
from gateway.matching.solving import MatchGroup, ScoredPairs, greedy_solve

__all__ = ["DEFAULT_BLOCKER", "LinkageResult", "LinkageStats", "link", "scored_pairs"]

DEFAULT_BLOCKER = SignatureBlocker()


@dataclass(frozen=True, slots=True)
class LinkageStats:
    """How much work a linkage took; safe to log (no scores, no records)."""

    pairs_total: int
    candidate_pairs: int
    pairs_above_threshold: int
    seconds_blocking: float
    seconds_scoring: float
    seconds_solving: float


@dataclass(frozen=True, slots=True)
class LinkageResult:
    groups: tuple[MatchGroup, ...]
    stats: LinkageStats = field(repr=False)

    def pairs(self, left_dataset: int = 0, right_dataset: int = 1) -> list[tuple[int, int]]:
        """For two datasets: the matched ``(left index, right index)`` pairs."""
        out = []
        for group in self.groups:
            members = dict(group)
            if left_dataset in members and right_dataset in members:
                out.append((members[left_dataset], members[right_dataset]))
        return sorted(out)


def _compare(left: EncodedDataset, right: EncodedDataset, positions: tuple[int, int], threshold: float,
             blocker: Blocker | None, workers: int | None, bits: tuple[IntArray, IntArray]
             ) -> tuple[ScoredPairs, int, float, float]:
    """Steps 1 and 2 for two datasets: their pairs at or above ``threshold`` (scored), how many pairs were
    compared, and the seconds blocking and scoring took."""
    i, j = positions
    if blocker is None or (isinstance(blocker, SignatureBlocker) and (left.block_keys is None
                                                                      or right.block_keys is None)):
        start = time.perf_counter()
        joined = dice_join(left.filters, right.filters, threshold, workers=workers)
        return (ScoredPairs.between(i, j, joined.left_index, joined.right_index, joined.scores),
                joined.pairs_compared, 0.0, time.perf_counter() - start)
    start = time.perf_counter()
    proposed = blocker.candidate_pairs(left, right)
    t_block = time.perf_counter() - start
    start = time.perf_counter()
    scores = dice_pairs(left.filters, right.filters, proposed.left_index, proposed.right_index,
                        left_counts=bits[0], right_counts=bits[1])
    keep = scores >= threshold
    part = ScoredPairs.between(i, j, proposed.left_index[keep], proposed.right_index[keep], scores[keep])
    return part, len(proposed), t_block, time.perf_counter() - start


def scored_pairs(left: EncodedDataset, right: EncodedDataset, *, threshold: float,
                 blocker: Blocker | None = DEFAULT_BLOCKER, right_counts: IntArray | None = None) -> ScoredPairs:
    """Every pair of ``left`` and ``right`` at or above ``threshold`` that ``blocker`` proposes, scored, not
    solved: for a caller that decides per record of ``left`` on its own (fuzzy discovery's subjects). The scores
    must not leave the gateway."""
    bits = (popcounts(left.filters), popcounts(right.filters) if right_counts is None else right_counts)
    return _compare(left, right, (0, 1), threshold, blocker, None, bits)[0]


def link(datasets: Sequence[EncodedDataset | Filters], *, threshold: float,
         blocker: Blocker | None = DEFAULT_BLOCKER, workers: int | None = None,
         counts: Sequence[IntArray | None] | None = None) -> LinkageResult:
    """Link two or more encoded datasets (same schema and secret) into groups of matching records.

    A bare filter array is accepted as a dataset without blocking keys. ``SignatureBlocker`` falls back to
    the full pruned comparison for a pair of datasets of which one has no blocking keys. ``counts``: per
    dataset, the set bits of each of its filters when the caller kept them (a holder's records compared again
    and again), or None to count them here.
    """
    if len(datasets) < 2:
        raise EncodingError("linkage needs at least two datasets")
    encoded = [item if isinstance(item, EncodedDataset) else EncodedDataset(item) for item in datasets]
    width = encoded[0].filters.shape[1]
    for position, dataset in enumerate(encoded):
        if dataset.filters.shape[1] != width:
            raise EncodingError(f"dataset {position} has filters of a different width")
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    known = list(counts) if counts is not None else [None] * len(encoded)
    if len(known) != len(encoded):
        raise ValueError("one entry of counts per dataset")
    bits = [popcounts(dataset.filters) if kept is None else kept for dataset, kept in zip(encoded, known, strict=True)]
    parts: list[ScoredPairs] = []
    pairs_total = candidates = 0
    t_block = t_score = 0.0
    for i in range(len(encoded)):
        for j in range(i + 1, len(encoded)):
            pairs_total += len(encoded[i]) * len(encoded[j])
            part, compared, blocking, scoring = _compare(encoded[i], encoded[j], (i, j), threshold, blocker,
                                                          workers, (bits[i], bits[j]))
            parts.append(part)
            candidates += compared
            t_block += blocking
            t_score += scoring
    scored = ScoredPairs.concatenate(parts)
    start = time.perf_counter()
    groups = greedy_solve(scored)
    t_solve = time.perf_counter() - start
    stats = LinkageStats(pairs_total, candidates, len(scored.scores), t_block, t_score, t_solve)
    return LinkageResult(tuple(groups), stats)
