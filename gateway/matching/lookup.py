"""Fuzzy discovery's comparison: which of a requester's subjects match one holder's records.

The gateway's comparison (:func:`gateway.matching.linkage.scored_pairs`: signature blocking when both sides sent
blocking keys, else the length-pruned full join; Dice at the schema's threshold) run for two datasets, the
requester's subjects and one holder's records, and each subject answered on its own (no 1-to-1 solver: see
:func:`matches`). What comes out is only *which subject matched which record*: the caller turns that into
hit/no-hit, and the scores stay in here.

:func:`implausible` (:mod:`gateway.matching.plausibility`, re-exported here) refuses empty filters, which match
nothing, and saturated ones, which would match almost anyone: the wildcard a probe would send.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gateway.matching.blocking import KeyIndex, SignatureBlocker
from gateway.matching.encoding import EncodedDataset, Filters
from gateway.matching.linkage import DEFAULT_BLOCKER, scored_pairs
from gateway.matching.plausibility import MAX_DENSITY, implausible
from gateway.matching.similarity import IntArray, dice_join

__all__ = ["MAX_DENSITY", "alike", "held_blocker", "implausible", "matches"]


def alike(filters: Filters, threshold: float) -> tuple[int, int] | None:
    """The positions of the first two filters that match each other at ``threshold`` (one person twice), or None.

    A request's subjects are distinct people: two subjects of one person (the same filter spelt differently in
    base64, or with a bit cleared) are one subject counted twice. When :func:`matches` still paired each held
    record with at most one subject, this was also what kept "hit, hit" against "hit, no-hit" from telling how
    many records the holder keeps of the person; :func:`matches` now answers each subject on its own."""
    if len(filters) < 2:
        return None
    joined = dice_join(filters, filters, threshold)
    pairs = sorted((int(a), int(b)) for a, b in zip(joined.left_index, joined.right_index, strict=True) if a < b)
    return pairs[0] if pairs else None


def matches(subjects: EncodedDataset, held: EncodedDataset, threshold: float,
            blocker: SignatureBlocker = DEFAULT_BLOCKER, held_counts: IntArray | None = None) -> dict[int, int]:
    """Subject position → the position of the held record it matches best (at ``threshold``; ties: the first
    record), for every subject that matches any. ``blocker``: one that carries ``held``'s key index sorted
    already (:func:`held_blocker`), and ``held_counts`` the set bits of each of ``held``'s filters, for records
    compared again and again: neither is then worked out from every record on each comparison.

    Each subject is answered on its own, as if it had been asked alone: one held record may answer for several
    subjects. A 1-to-1 solver (each record for its best subject only) made a subject's answer depend on the others
    asked with it — two subjects that both reach the threshold against one record got "hit" for the closer one
    only, which told the requester which of its two probes scores higher against the holder's record."""
    if len(subjects) == 0 or len(held) == 0:
        return {}
    alone = replace(blocker, left_rows_alone=True)  # a block too large is skipped per subject, never for the others
    pairs = scored_pairs(subjects, held, threshold=threshold, blocker=alone, right_counts=held_counts)
    order = np.lexsort((pairs.right_index, -pairs.scores))  # per subject: best score first, then the first record
    best: dict[int, int] = {}
    for subject, record in zip(pairs.left_index[order].tolist(), pairs.right_index[order].tolist(), strict=True):
        best.setdefault(subject, record)
    return best


def held_blocker(held: EncodedDataset, index: KeyIndex | None = None) -> SignatureBlocker:
    """The default blocker with ``held``'s blocking keys sorted once (the default itself without keys); ``index``:
    that sorted index, when the caller has it already (:meth:`KeyIndex.updated`)."""
    if held.block_keys is None:
        return DEFAULT_BLOCKER
    return replace(DEFAULT_BLOCKER, right_index=(
        held.block_keys, KeyIndex.of_blocking_keys(held.block_keys) if index is None else index))
