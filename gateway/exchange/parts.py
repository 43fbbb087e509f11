"""One target's question to its holder in parts, when it does not fit one holder query.

Why: after a pseudonym key rotation a holder is asked by its pseudonyms of every key version the ring still
holds (``ExchangeService._for_holder``), since one that has not enrolled again knows only the older ones. A
holder query names at most :data:`~connectors.protocol.MAX_SUBJECTS` subjects, so 51 to 100 subjects under two
versions do not fit one. Asked under the current version only, a holder that had not enrolled again answered
nothing for them while the index said ``hit``, and nothing said so. So the pseudonyms go out in several queries
(parts) instead, the current version's first: a request has at most 100 subjects, so every subject's current
pseudonym is in the first part, which alone carries the records the requester provides.

What holds for the parts (the exchange merges their answers into the one outcome of the target):

1. each part has its own request id (the holder deduplicates by it, and refuses an id reused for another
   body): the first the target's own, ``<exchange>:<holder>``, the others ``:2``, ``:3``...; a re-run's binding
   escalation decision is signed for each part's id;
2. they go out together, so the target takes no longer than one query does: each part is bounded by the
   connector's timeout per attempt and its retries, as a single query is;
3. all of them are awaited, also when one fails early: what the first part handed the holder is known
   before the target's outcome is written (``received``);
4. any part that fails makes the target ``holder-unavailable`` and any that refuses ``refused-by-holder``
   (a failure first: the holder's answer to the whole question is not known), and nothing of the other parts
   is disclosed, as for one query that failed or refused; so does any part answered with records about none
   of its own subjects (``holder-answered-unasked-subjects``: an answer to another question);
5. a record counts only for a subject asked in its own part (anything else is over-sharing), and a record
   answered under two versions of one subject, in one part or in two, is disclosed once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from connectors.protocol import MAX_SUBJECTS, ConnectorError

_A = TypeVar("_A")


def in_parts(asked: list[str]) -> list[list[str]]:
    """``asked`` (in the order to ask them: the current version's pseudonyms first) in parts of at most
    ``MAX_SUBJECTS``; one part when they fit one query."""
    return [asked[start:start + MAX_SUBJECTS] for start in range(0, len(asked), MAX_SUBJECTS)] or [[]]


def part_request_ids(request_id: str, parts: int) -> list[str]:
    """The request id of each part: the target's own for the first (a question in one part is asked exactly
    as before), ``<request id>:<n>`` for the n-th after it."""
    return [request_id] + [f"{request_id}:{n}" for n in range(2, parts + 1)]


async def asked_together(calls: Sequence[Awaitable[_A]]) -> list[_A | Exception]:
    """Each part's answer, or the exception its call raised, in part order: the calls are made at once and
    every one is awaited. A cancellation is raised (the others are cancelled with it by ``gather``). One call,
    the usual question, is awaited as it is: no task is made for it (a loop iteration on every exchange)."""
    if len(calls) == 1:
        try:
            return [await calls[0]]
        except Exception as exc:
            return [exc]
    results = await asyncio.gather(*calls, return_exceptions=True)
    kept: list[_A | Exception] = []
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
        kept.append(result)
    return kept


def failure_of(results: list[_A | Exception]) -> Exception | None:
    """What fails the target, if anything: a defect (any exception that is no ``ConnectorError``) before a
    holder's failure, so that it is failed closed and logged as the gateway's own; else the first part's
    failure in part order."""
    failures = [r for r in results if isinstance(r, Exception)]
    defects = [f for f in failures if not isinstance(f, ConnectorError)]
    if defects:
        return defects[0]
    return failures[0] if failures else None
