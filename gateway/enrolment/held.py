"""One participant's enrolled records of a record type as the gateway compares them, decoded from the rows of
``match_filters`` (:func:`decoded`) and brought up to date from the rows changed since (:meth:`HeldRecords.
updated`, :mod:`gateway.enrolment.filter_cache`).

Kept apart from :mod:`gateway.enrolment.filters` (the enrolment batches and the service): this is what a fuzzy
discovery reads, and what each process keeps in memory.
"""

from __future__ import annotations

import hashlib
import json
import sys
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.clock import as_utc
from gateway.enrolment.tables import match_filters
from gateway.matching.blocking import SignatureBlocker
from gateway.matching.encoding import EncodedDataset
from gateway.matching.lookup import held_blocker
from gateway.matching.schema import Schema
from gateway.matching.similarity import IntArray, popcounts

__all__ = ["DIGESTED", "MAX_VIEWS", "HeldRecords", "decoded", "row_digest", "size_of"]


@dataclass(frozen=True)
class HeldRecords:
    """One participant's enrolled records of a record type, as a fuzzy discovery compares them (in the
    gateway only): the filters (with blocking keys when every record has them) and, per record, what the
    participant said of it, its reference (never shown to another participant) and the digest of its row as
    read (:func:`row_digest`: a match handle resolves only while the row is still the same)."""

    dataset: EncodedDataset
    categories: list[frozenset[str]]
    confidential_reason: list[str | None]
    minor: list[bool]
    refs: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    _views: dict[frozenset[frozenset[str]], HeldRecords] = field(
        default_factory=dict, init=False, compare=False, repr=False)
    """The subsets :meth:`permitted` made, by the category sets they keep (at most :data:`MAX_VIEWS`)."""

    _watchers: list[Callable[[int], None]] = field(default_factory=list, init=False, compare=False, repr=False)
    """Told what each subset kept with this set takes (:meth:`watch`)."""

    def watch(self, grown: Callable[[int], None]) -> None:
        """Call ``grown`` with the estimated size (:func:`size_of`) of each subset :meth:`permitted` keeps with
        this set from now on: the cache that keeps the set counts them in its bound — up to :data:`MAX_VIEWS`
        subsets, each up to the set's own size, which the estimate made when it was kept cannot know of."""
        self._watchers.append(grown)

    @cached_property
    def category_sets(self) -> frozenset[frozenset[str]]:
        """The distinct category sets of these records (few: they are shared, :func:`decoded`), collected once
        per set: :meth:`permitted` decides from these, not from every record, on each request."""
        return frozenset(self.categories)

    def permitted(self, categories: set[str]) -> HeldRecords:
        """Only the records of which some category may be asked about: the others cannot make a hit, and
        must not take a subject's one-to-one match from a record that can. All of them (the usual case): these
        records themselves, not a copy — a kept set (``filter_cache``) is then compared without copying it.

        Otherwise the subset is made once per kept set and combination of permitted category sets, and kept
        with it (with its sorted keys and records with grounds): a purpose that may ask about part of a
        holder's categories does not copy the holder's records on every request."""
        allowed = frozenset(held for held in self.category_sets if held & categories)
        if allowed == self.category_sets:
            return self
        view = self._views.get(allowed)
        if view is None:
            view = self.subset([i for i, held in enumerate(self.categories) if held in allowed])
            # a race between two requests keeps one of two equal subsets, and counts that one
            if len(self._views) < MAX_VIEWS and self._views.setdefault(allowed, view) is view:
                for grown in list(self._watchers):
                    grown(size_of(view))
        return view

    @cached_property
    def blocker(self) -> SignatureBlocker:
        """The blocker for these records, their blocking keys sorted once (:func:`~gateway.matching.lookup.
        held_blocker`): a kept set (``filter_cache``) is not sorted again on every request."""
        return held_blocker(self.dataset)

    @cached_property
    def counts(self) -> IntArray:
        """The set bits of each record's filter, counted once per kept set (each comparison needs them)."""
        return popcounts(self.dataset.filters)

    @cached_property
    def ref_bytes(self) -> int:
        """What the references take (:func:`size_of`): summed once per set, and by an update from the changed
        references alone."""
        return sum(map(sys.getsizeof, self.refs))

    def __len__(self) -> int:
        return len(self.refs)

    @classmethod
    def empty(cls, schema: Schema) -> HeldRecords:
        """No records (what a participant that holds none of the type is updated from)."""
        width = len(schema.signatures)
        return cls(EncodedDataset(np.zeros((0, schema.words), dtype=np.uint64),
                                  np.zeros((0, width), dtype=np.uint64) if width else None), [], [], [])

    def updated(self, gone: set[str], fresh: HeldRecords) -> HeldRecords | None:
        """These records without those under the references ``gone`` and with ``fresh`` (whose references must
        all be in ``gone``), in reference order: the set a full read of the rows now stored gives. None when it
        cannot be told from these records (some had no blocking keys, which a record's removal may change).

        Only the changed records are looked up (by bisection: both sets are sorted by reference, :func:`decoded`)
        and the arrays are copied once, not decoded. When this set's blocking keys were sorted already
        (:attr:`blocker`), the new set's index is that one updated (:meth:`~gateway.matching.blocking.KeyIndex.
        updated`), not sorted again at its first comparison."""
        old_keys, fresh_keys = self.dataset.block_keys, fresh.dataset.block_keys
        if old_keys is None and len(self) and fresh_keys is not None:
            return None  # which of these records lack keys is not known here
        refs = self.refs
        removed = sorted(at for at, ref in ((bisect_left(refs, ref), ref) for ref in gone)
                         if at < len(refs) and refs[at] == ref)
        inserted = [bisect_left(refs, ref) for ref in fresh.refs]  # before which old record each new one goes
        keep = np.ones(len(refs), dtype=bool)
        keep[removed] = False
        kept = np.flatnonzero(keep)
        kept_before = np.concatenate(([0], np.cumsum(keep))).astype(np.intp)[np.array(inserted, dtype=np.intp)]
        fresh_at = kept_before + np.arange(len(fresh), dtype=np.intp)  # the new ones are in order too
        kept_at = np.arange(len(kept), dtype=np.intp) + np.searchsorted(kept_before, np.arange(len(kept)),
                                                                        side="right")
        total = len(kept) + len(fresh)

        def placed(old: npt.NDArray[Any], new: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.empty((total, *old.shape[1:]), dtype=old.dtype)
            out[kept_at], out[fresh_at] = old[kept], new
            return out

        # the lists: runs of old items copied by slice, the new ones put in between (few changes, n items)
        steps = sorted([(at, 0, n) for n, at in enumerate(inserted)] + [(at, 1, -1) for at in removed])

        def listed(old: list[Any], new: list[Any]) -> list[Any]:
            out: list[Any] = []
            cursor = 0
            for at, kind, n in steps:
                out.extend(old[cursor:at])
                if kind == 0:
                    out.append(new[n])
                    cursor = at
                else:
                    cursor = at + 1
            out.extend(old[cursor:])
            return out

        keys = None if old_keys is None or fresh_keys is None else placed(old_keys, fresh_keys)
        result = HeldRecords(EncodedDataset(placed(self.dataset.filters, fresh.dataset.filters), keys),
                             listed(self.categories, fresh.categories),
                             listed(self.confidential_reason, fresh.confidential_reason),
                             listed(self.minor, fresh.minor), listed(self.refs, fresh.refs),
                             listed(self.digests, fresh.digests))
        moved = np.full(len(refs), -1, dtype=np.intp)
        moved[kept] = kept_at
        # a cached_property's value lives in the instance's __dict__ (a frozen dataclass's too): what this set
        # derived once is carried over, updated, so that the new set's first request does not derive it again
        sorted_keys = self.__dict__.get("blocker")
        if keys is not None and fresh_keys is not None and isinstance(sorted_keys, SignatureBlocker) \
                and sorted_keys.right_index is not None:
            result.__dict__["blocker"] = held_blocker(result.dataset, sorted_keys.right_index[1].updated(
                moved, fresh_keys, fresh_at))
        ref_bytes = self.__dict__.get("ref_bytes")
        if ref_bytes is not None:
            result.__dict__["ref_bytes"] = ref_bytes - sum(sys.getsizeof(refs[at]) for at in removed) \
                + fresh.ref_bytes
        grounds = self.__dict__.get("grounds")
        if grounds is not None:
            old_grounds = moved[np.array(grounds, dtype=np.intp)]
            result.__dict__["grounds"] = np.sort(np.concatenate((
                old_grounds[old_grounds >= 0], fresh_at[np.array(fresh.grounds, dtype=np.intp)]))).tolist()
        refusers = self.__dict__.get("refusers")
        if isinstance(refusers, HeldRecords):  # the same update, on the records with grounds (in order too)
            updated_refusers = refusers.updated(gone, fresh.refusers)
            if updated_refusers is not None:
                result.__dict__["refusers"] = updated_refusers
        return result

    @cached_property
    def grounds(self) -> list[int]:
        """The positions of the records on which the holder would refuse (kept confidential, or a minor), in
        order: found once per kept set, not by a pass over every record on each request."""
        return [i for i, reason in enumerate(self.confidential_reason) if reason is not None or self.minor[i]]

    @cached_property
    def refusers(self) -> HeldRecords:
        """The records at :attr:`grounds` (their :attr:`blocker` sorted once as well): what a discovery
        compares the subjects with again to find every matching record with grounds."""
        return self.subset(self.grounds)

    def subset(self, keep: list[int]) -> HeldRecords:
        """The records at the positions ``keep``, in that order."""
        keys = self.dataset.block_keys
        return HeldRecords(EncodedDataset(self.dataset.filters[keep], None if keys is None else keys[keep]),
                           [self.categories[i] for i in keep], [self.confidential_reason[i] for i in keep],
                           [self.minor[i] for i in keep], [self.refs[i] for i in keep],
                           [self.digests[i] for i in keep])


MAX_VIEWS = 4
"""How many subsets of one kept set :meth:`HeldRecords.permitted` keeps: one per combination of permitted
categories that left some records out (purposes that may ask about part of a holder's categories); further
combinations are made per request. They are not in :func:`size_of`'s estimate of the set (made before any exists):
the cache is told of each as it is made (:meth:`HeldRecords.watch`)."""

_DIGEST_BYTES = sys.getsizeof("0" * 64)
"""What one row digest (64 hex digits) takes."""


def size_of(held: HeldRecords | None) -> int:
    """An estimate of what ``held`` takes in memory: the arrays, the sorted index of its blocking keys built at
    its first comparison (:attr:`HeldRecords.blocker`: at most five integers a key), and per record its
    reference, digest, list slots and bit count (the category sets and reasons are shared between records,
    :func:`decoded`) — and the records with grounds once more (:attr:`HeldRecords.refusers`: their filters, keys,
    slots and position; the references and digests are the same objects)."""
    if held is None:
        return 64
    keys = held.dataset.block_keys
    arrays = held.dataset.filters.nbytes + (0 if keys is None else 6 * keys.nbytes)
    again = len(held.grounds) * (arrays // len(held) + 7 * 8 + 36) if len(held) else 0
    return arrays + held.ref_bytes + len(held.digests) * _DIGEST_BYTES + 7 * 8 * len(held.refs) + again + 1024


def decoded(rows: Sequence[Any], schema: Schema) -> HeldRecords:
    """``rows`` (the :data:`DIGESTED` columns and ``local_ref``) decoded, in the order of their references.

    That order is Python's (code points), not the database's collation: a copy brought up to date
    (:meth:`HeldRecords.updated`) keeps it, so that it is in every respect the set a full read gives — down to
    which of two equally good records a subject's match handle is bound to."""
    refs = [row.local_ref for row in rows]
    if any(left >= right for left, right in pairwise(refs)):
        rows = sorted(rows, key=lambda row: str(row.local_ref))
    filters = np.frombuffer(b"".join(row.clk for row in rows), dtype="<u8").reshape(len(rows), schema.words)
    width = len(schema.signatures)
    keys = None
    if width and all(len(row.blocks) == 8 * width for row in rows):
        keys = np.frombuffer(b"".join(row.blocks for row in rows), dtype="<u8").reshape(len(rows), width)
        keys = keys.astype(np.uint64)
    # Kept and shared between requests (``filter_cache``); nothing writes to these arrays. They are not marked
    # read-only: numba compiles its Dice kernels again for read-only arrays (another signature, seconds of JIT
    # at a request), which warm_up does not cover.
    filters = filters.astype(np.uint64)
    shared: dict[frozenset[str], frozenset[str]] = {}  # one set per distinct list: a kept copy is smaller
    return HeldRecords(EncodedDataset(filters, keys),
                       [shared.setdefault(frozenset(row.categories), frozenset(row.categories)) for row in rows],
                       [None if row.confidential_reason is None else sys.intern(row.confidential_reason)
                        for row in rows],
                       [bool(row.minor) for row in rows], [row.local_ref for row in rows],
                       [row_digest(row) for row in rows])


DIGESTED = (match_filters.c.schema_version, match_filters.c.clk, match_filters.c.blocks, match_filters.c.categories,
             match_filters.c.confidential, match_filters.c.confidential_reason, match_filters.c.minor,
             match_filters.c.updated_at)


def row_digest(row: Any) -> str:
    """SHA-256 of an enrolled record's row (the ``DIGESTED`` columns) as the database returns it: the same
    for a row that was not touched, another once the holder re-enrolled the reference (a new filter, other
    categories or grounds, a later ``updated_at``) — so a match handle stops resolving when the record it
    matched is no longer the one enrolled."""
    text = json.dumps([row.schema_version, bytes(row.clk).hex(), bytes(row.blocks).hex(), sorted(row.categories),
                       bool(row.confidential), row.confidential_reason, bool(row.minor),
                       as_utc(row.updated_at).timestamp()], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
