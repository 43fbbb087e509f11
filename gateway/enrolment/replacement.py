"""Replacements of a participant's match filters sent in several batches, taking effect all at once.

Why: ``replace`` in one batch withdraws everything and enrols the batch's records in one transaction — but a
set larger than a batch (:data:`gateway.client.fuzzy.MAX_FILTER_BATCH`) took several, and the first one's
replace withdrew the old set at once. A later batch that failed (a bad filter, the audit log unavailable, the
partner's process stopped) left the participant's index half-replaced: records it holds no-hit, for as long
as nobody noticed.

Now the batches of such a replacement carry the id the participant gave it (``replacement``) and are kept
aside (``match_filter_staged``); discovery answers from the earlier set meanwhile. The last batch declares how
many records the replacement holds in all (``total``): in its transaction the kept records take the earlier
set's place — or, when they are not that many (a batch lost, or the replacement abandoned and removed), the
batch is refused and nothing changes. A reader sees the earlier set or the new one, never part of each: the
swap is one transaction, and the participant's generation (:func:`gateway.enrolment.filter_cache.bump`, with
``forget``) makes every process read the new set in full.

A replacement whose next batch does not come within the time allowed (``WGS_MATCH_FILTER_REPLACEMENT_TTL_
SECONDS``; each batch extends it) is abandoned: its records are removed (:func:`remove_abandoned`, before any
replacement batch is written), and a batch of it sent later starts an incomplete one that its last batch's
count refuses. They are removed at every start too (:func:`gateway.enrolment.setup.remove_abandoned_at_start`),
so that a participant that never comes back leaves nothing behind for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from gateway.enrolment.audited import add_or_update, held_among
from gateway.enrolment.tables import match_filter_staged as staged
from gateway.enrolment.tables import match_filters

_STAGED_REPLACED = ("schema_version", "clk", "blocks", "categories", "confidential", "confidential_reason",
                    "minor", "updated_at", "expires_at", "clk_key_id")
_COPIED = ("partnership", "organisation", "record_type", "local_ref", "schema_version", "clk", "blocks",
           "categories", "confidential", "confidential_reason", "minor", "updated_at")


def of(partnership: str, organisation: str, record_type: str, replacement: str) -> tuple[ColumnElement[bool], ...]:
    """The kept rows of one replacement."""
    return (staged.c.partnership == partnership, staged.c.organisation == organisation,
            staged.c.record_type == record_type, staged.c.replacement == replacement)


def count(session: Session | Connection, mine: Sequence[ColumnElement[bool]]) -> int:
    """How many records the replacement ``mine`` selects holds so far."""
    return int(session.execute(select(func.count()).select_from(staged).where(*mine)).scalar_one())


def kept_among(session: Session, mine: Sequence[ColumnElement[bool]], refs: Sequence[str]) -> set[str]:
    """Which of ``refs`` the replacement holds already (a batch sent again updates them)."""
    return held_among(session, staged.c.local_ref, mine, refs)


def stage(connection: Connection, mine: Sequence[ColumnElement[bool]], replacement: str,
          rows: list[dict[str, Any]], expires_at: datetime, clk_key_id: str | None = None) -> tuple[int, int]:
    """Keep ``rows`` aside for the replacement (a reference sent again is updated: a batch may be repeated),
    with the key id of their CLK secret, and move the whole replacement's expiry to ``expires_at``; (added,
    updated)."""
    kept = {"replacement": replacement, "expires_at": expires_at, "clk_key_id": clk_key_id}
    added, updated = add_or_update(
        connection, staged, staged.c.local_ref,
        [staged.c.partnership, staged.c.organisation, staged.c.record_type, staged.c.replacement,
         staged.c.local_ref], mine, [row | kept for row in rows],
        _STAGED_REPLACED, "a kept record of the replacement was removed meanwhile")
    connection.execute(update(staged).where(*mine).values(expires_at=expires_at))
    return added, updated


def swap_in(connection: Connection, mine: Sequence[ColumnElement[bool]],
            current: Sequence[ColumnElement[bool]], generation: int) -> int:
    """Put the replacement's records in the place of the participant's ``current`` rows of ``match_filters``,
    stamped with ``generation``, and drop them from the kept ones; how many rows were withdrawn. Called after
    :func:`~gateway.enrolment.filter_cache.bump` in the same transaction, so that readers queue on nothing and
    see the earlier set until it commits."""
    removed = connection.execute(delete(match_filters).where(*current)).rowcount
    connection.execute(insert(match_filters).from_select(
        [*_COPIED, "generation"],
        select(*(staged.c[name] for name in _COPIED), literal(generation, Integer)).where(*mine)))
    connection.execute(delete(staged).where(*mine))
    return int(removed)


def remove_abandoned(connection: Connection, now: datetime) -> int:
    """Remove the kept records of every replacement whose time ran out (any participant's); how many. Looked
    for first (the expiry's index), so that finding none takes no write lock."""
    if connection.execute(select(staged.c.expires_at).where(staged.c.expires_at < now).limit(1)).first() is None:
        return 0
    return int(connection.execute(delete(staged).where(staged.c.expires_at < now)).rowcount)


def forget_participation(connection: Connection, partnership: str, organisation: str) -> int:
    """Remove every kept record of ``organisation`` in ``partnership`` (a retired participation: nothing of it
    is kept); how many."""
    return int(connection.execute(delete(staged).where(
        staged.c.partnership == partnership, staged.c.organisation == organisation)).rowcount)
