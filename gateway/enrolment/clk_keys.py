"""Which CLK secret a participant's match filters were encoded with: its key id (:func:`gateway.matching.
encoding.clk_key_id`), kept per participant and record type on the counter row (``match_filter_generations.
clk_key_id``, migration 0038).

Why: nothing in a Bloom filter says which secret made it. A participant with a rotated or mistyped secret got
no-hit everywhere, and its enrolled filters never matched anyone — silently, where the pseudonym side refuses a
wrong key. With the key id beside ``schema_version``:

1. an enrolment batch that adds or updates records with another key id than the participant's current filters
   carry is refused (422 ``clk-key-mismatch``, nothing written) — unless it replaces them all (``replace``: a
   rotation re-enrols everything);
2. a fuzzy discovery reports a holder whose filters carry another key id than the request's as
   ``not-comparable`` (never a no-hit), and is refused whole when no holder could be compared.

Null is *unknown* and accepted as before: filters enrolled before 0038, or by a client that did not send the
key id (optional on the wire for one version), or none held. The stored key id follows the set it describes
(:func:`after_batch`): a batch of unknown key added to a known set makes it unknown; a batch that lost a race
to a replace with another key (checked in :meth:`FilterBatch.expect`, written a moment later) does the same, so
the worst case is today's behaviour, never a wrong "not comparable".
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, select, update
from sqlalchemy.orm import Session

from gateway.enrolment.tables import match_filter_generations as generations
from gateway.enrolment.tables import match_filter_staged as staged
from gateway.enrolment.tables import match_filters
from gateway.errors import Unprocessable

MISMATCH = "clk-key-mismatch"
"""The stable code of both refusals and of a holder's ``not-comparable`` reason."""


class ClkKeyMismatch(Unprocessable):
    """Filters encoded with another CLK secret than the ones they would be compared with (module docstring)."""

    slug, title = MISMATCH, "CLK key mismatch"


def _of(partnership: str, organisation: str, record_type: str) -> tuple[ColumnElement[bool], ...]:
    return (generations.c.partnership == partnership, generations.c.organisation == organisation,
            generations.c.record_type == record_type)


def stored(session: Session | Connection, partnership: str, organisation: str, record_type: str) -> str | None:
    """The key id of ``organisation``'s current filters of ``record_type``; None when unknown."""
    return session.execute(select(generations.c.clk_key_id).where(
        *_of(partnership, organisation, record_type))).scalar_one_or_none()


def stored_for(session: Session, partnership: str, record_type: str,
               organisations: Sequence[str]) -> dict[str, str]:
    """The known key ids of ``organisations`` (one read of the counters' primary key); unknown ones left out."""
    rows = session.execute(select(generations.c.organisation, generations.c.clk_key_id).where(
        generations.c.partnership == partnership, generations.c.record_type == record_type,
        generations.c.organisation.in_(list(organisations)), generations.c.clk_key_id.is_not(None)))
    return {row.organisation: row.clk_key_id for row in rows}


def holding(session: Session, partnership: str, record_type: str, organisations: Sequence[str]) -> set[str]:
    """Which of ``organisations`` hold filters of ``record_type`` at all (one indexed probe each): asked only
    about holders of unknown key id, when none of the known ones is the request's."""
    return {organisation for organisation in organisations if session.execute(select(match_filters.c.local_ref).where(
        match_filters.c.partnership == partnership, match_filters.c.organisation == organisation,
        match_filters.c.record_type == record_type).limit(1)).first() is not None}


def store(connection: Connection, partnership: str, organisation: str, record_type: str,
          key_id: str | None) -> None:
    """Set the key id on the counter row (which :func:`~gateway.enrolment.filter_cache.bump` made, earlier in the
    same transaction)."""
    connection.execute(update(generations).where(
        *_of(partnership, organisation, record_type)).values(clk_key_id=key_id))


def check_replacement(session: Session, kept: Sequence[ColumnElement[bool]], key_id: str | None) -> None:
    """Refuse a batch of a replacement (``kept``: its rows kept aside) whose key id is not its earlier batches':
    the set it swaps in must be of one secret, or its key id would describe part of it."""
    if session.execute(select(staged.c.local_ref).where(
            *kept, staged.c.clk_key_id.is_distinct_from(key_id)).limit(1)).first() is not None:
        raise ClkKeyMismatch("this batch of the replacement was encoded with another CLK secret than its earlier "
                             "batches: nothing was enrolled; send the whole replacement again under a new id",
                             extra={"code": MISMATCH})


def check_addition(current: str | None, key_id: str | None, *, adds: bool) -> None:
    """Refuse a batch that adds or updates records (``adds``) with a key id other than ``current``'s, both known
    (rule 1 of the module docstring). Withdrawals alone need no key."""
    if adds and current is not None and key_id is not None and current != key_id:
        raise addition_mismatch(current, key_id)


def addition_mismatch(current: str, key_id: str) -> ClkKeyMismatch:
    """The refusal of :func:`check_addition` (also the API document's example of it)."""
    return ClkKeyMismatch(
        f"these filters were encoded with another CLK secret (key id {key_id}) than the ones you have enrolled "
        f"(key id {current}): nothing was enrolled. A rotated secret re-enrols everything (`replace`); a "
        "mistyped one is fixed on your side", extra={"code": MISMATCH, "clk_key_id": current})


def none_comparable(key_id: str) -> ClkKeyMismatch:
    """The refusal of a fuzzy discovery of key id ``key_id`` that no allowed target's filters carry (rule 2)."""
    return ClkKeyMismatch(f"no holder's filters were encoded with the CLK secret of key id {key_id}: nothing can be "
                          "compared (a rotated or mistyped secret?); nothing was disclosed", extra={"code": MISMATCH})


def after_batch(current: str | None, key_id: str | None, *, whole: bool, held_before: int, held_after: int,
                adds: bool) -> str | None:
    """The key id of the participant's set after a batch: ``whole`` (a replace) or a set that was empty takes
    the batch's; withdrawals alone keep it; an addition keeps it only when it is the batch's (else: unknown)."""
    if held_after == 0:
        return None
    if whole or held_before == 0:
        return key_id
    if not adds:
        return current
    return current if current == key_id else None


def comparable(requested: str | None, holders: dict[str, str], organisation: str) -> bool:
    """Whether ``organisation``'s filters can be compared with a request's of key id ``requested`` (rule 2):
    unless both are known and differ. ``holders``: :func:`stored_for`."""
    held = holders.get(organisation)
    return requested is None or held is None or held == requested
