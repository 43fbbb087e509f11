"""Greedy solver: scored candidate pairs → groups of records that denote the same entity.

Records are ``(dataset, record index)``. Candidate pairs are visited in order of decreasing similarity
(ties: lower dataset/record indices first, so the result is deterministic). A pair joins its two records'
groups when

1. the two groups hold no record of the same dataset (one record per party per entity: *1-to-1*), and
2. every cross pair between the two groups is itself a candidate pair at or above the threshold
   (so a group is never glued together through one weak link).

With two datasets this is exactly greedy 1-to-1 matching: each record ends in at most one pair, best first.
Only groups of two or more records are returned; scores are consumed here and never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MatchGroup", "ScoredPairs", "greedy_solve"]

Record = tuple[int, int]
MatchGroup = tuple[Record, ...]
"""Records ``(dataset, index)`` of one entity, sorted."""


@dataclass(frozen=True, slots=True)
class ScoredPairs:
    """Candidate pairs between datasets with their similarity (already filtered by the threshold)."""

    left_dataset: npt.NDArray[np.intp]
    left_index: npt.NDArray[np.intp]
    right_dataset: npt.NDArray[np.intp]
    right_index: npt.NDArray[np.intp]
    scores: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.scores)
        if any(len(a) != n for a in (self.left_dataset, self.left_index, self.right_dataset, self.right_index)):
            raise ValueError("scored pair arrays differ in length")

    @classmethod
    def between(cls, left_dataset: int, right_dataset: int, left_index: npt.NDArray[np.intp],
                right_index: npt.NDArray[np.intp], scores: npt.NDArray[np.float64]) -> ScoredPairs:
        return cls(np.full(len(scores), left_dataset, dtype=np.intp), left_index.astype(np.intp),
                   np.full(len(scores), right_dataset, dtype=np.intp), right_index.astype(np.intp), scores)

    @classmethod
    def concatenate(cls, parts: Sequence[ScoredPairs]) -> ScoredPairs:
        if not parts:
            empty = np.empty(0, dtype=np.intp)
            return cls(empty, empty, empty, empty, np.empty(0))
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("left_dataset", "left_index", "right_dataset", "right_index", "scores")))


def greedy_solve(pairs: ScoredPairs) -> list[MatchGroup]:
    """Greedy grouping of records (see module docstring); returns groups of ≥ 2 records, sorted."""
    order = np.lexsort((pairs.right_index, pairs.right_dataset, pairs.left_index, pairs.left_dataset,
                        -pairs.scores))
    lds, lix = pairs.left_dataset[order].tolist(), pairs.left_index[order].tolist()
    rds, rix = pairs.right_dataset[order].tolist(), pairs.right_index[order].tolist()
    two_party = len(set(lds) | set(rds)) <= 2
    group_of: dict[Record, int] = {}
    groups: dict[int, list[Record]] = {}
    edges: set[tuple[Record, Record]] | None = None
    if not two_party:
        edges = set()
        for a_ds, a_ix, b_ds, b_ix in zip(lds, lix, rds, rix, strict=True):
            edges.add(((a_ds, a_ix), (b_ds, b_ix)))
            edges.add(((b_ds, b_ix), (a_ds, a_ix)))
    next_id = 0
    for a_ds, a_ix, b_ds, b_ix in zip(lds, lix, rds, rix, strict=True):
        if a_ds == b_ds:
            continue  # never match two records of one party
        a, b = (a_ds, a_ix), (b_ds, b_ix)
        ga, gb = group_of.get(a), group_of.get(b)
        if ga is not None and ga == gb:
            continue
        members_a = groups[ga] if ga is not None else [a]
        members_b = groups[gb] if gb is not None else [b]
        if {ds for ds, _ in members_a} & {ds for ds, _ in members_b}:
            continue
        if edges is not None and (len(members_a) > 1 or len(members_b) > 1) and not all(
                (x, y) in edges for x in members_a for y in members_b):
            continue
        merged = members_a + members_b
        for group_id in (ga, gb):
            if group_id is not None:
                del groups[group_id]
        groups[next_id] = merged
        for record in merged:
            group_of[record] = next_id
        next_id += 1
    return sorted(tuple(sorted(members)) for members in groups.values())
