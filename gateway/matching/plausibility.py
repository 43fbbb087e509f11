"""Which match filters the gateway takes: an empty filter matches nothing, and a saturated one is a wildcard.

All bits set scores Dice ``2|x| / (L + |x|)`` against any record ``x``, which passes the person schema's 0.72 for
every record with more than 56 % of its bits set (about half of FEBRL4), so one such "subject" would ask "does
this holder hold anyone at all", and filters with chosen bits cleared would map out a holder's records. Encoded
FEBRL4 persons set 38-67 % of their bits; above :data:`MAX_DENSITY` a filter against a typical record (60 %) can
no longer reach 0.72 by chance, so the gateway refuses such filters (:func:`implausibilities`).

Real records can encode that densely all the same: every field sets its ``k`` bits per n-gram, so very long names
(``Johannes Cornelis Maria van Oldenbarnevelt-Schimmelpenninck`` with a full address: 79 %; a foundation with a
65-character name: 77 %) pass the bound. The gateway cannot tell such a record from a probe, and does not try:
it refuses both, naming each filter by position. The partner's client applies this same rule before sending
(:mod:`gateway.client.fuzzy_requests`): it leaves such records out of an enrolment and reports them, and refuses
such a subject of a discovery — one function for both sides, so they cannot drift apart. Raising the bound, or
encoding long fields with fewer bits, would change every filter (a new schema version, every partner enrolling
again): that is the maintainers' choice, not something to slip in here.

Pure NumPy (no numba): the partner side imports it.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from gateway.matching.encoding import Filters

__all__ = ["MAX_DENSITY", "Implausibility", "implausibilities", "implausible"]

MAX_DENSITY = 0.75
"""The largest fraction of a filter's bits that may be set."""


class Implausibility(StrEnum):
    """Why a filter is refused: a stable code (the gateway's problem and the client's results carry it)."""

    EMPTY = "empty"
    """No bit set (no field of the record had a value): it would match nothing."""
    TOO_DENSE = "too-dense"
    """More than :data:`MAX_DENSITY` of its bits set: it would match almost any record (very long names)."""


def implausibilities(filters: Filters) -> dict[int, Implausibility]:
    """Position → why, for every filter of ``filters`` that is empty or sets more than :data:`MAX_DENSITY` of its
    bits (in order; empty when all are plausible)."""
    if len(filters) == 0:
        return {}
    bits = filters.shape[1] * 64
    counts = np.unpackbits(np.ascontiguousarray(filters).view(np.uint8), axis=1).sum(axis=1)
    found: dict[int, Implausibility] = {}
    for position, count in enumerate(counts.tolist()):
        if count == 0:
            found[position] = Implausibility.EMPTY
        elif count > MAX_DENSITY * bits:
            found[position] = Implausibility.TOO_DENSE
    return found


def implausible(filters: Filters) -> int | None:
    """The position of the first filter that is empty or sets more than :data:`MAX_DENSITY` of its bits."""
    return next(iter(implausibilities(filters)), None)
