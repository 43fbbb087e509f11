"""All SQL of the exchange pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from audit import CompanionRefused, CompanionRow, Receipt
from audit.direct_insert import first_row
from gateway.clock import as_utc
from gateway.db.batched_insert import BatchedInsert
from gateway.db.upsert import insert_on_conflict
from gateway.exchange.tables import daily_request_counts, exchange_claims, exchanges


@dataclass(frozen=True)
class StoredExchange:
    id: str
    kind: str
    requester_org: str
    requester_system: str
    request_sha256: str
    outcome: dict[str, Any]
    sealed_records: bytes | None
    sealed_until: datetime | None
    partnership: str = ""
    purpose: str = ""
    register_version: str = ""
    request_fingerprint: str | None = None  # without a cited decision; None in rows from before 0031
    escalation_decision: str | None = None  # the decision a re-run cited; None otherwise and in such rows


def _stored(row: Any) -> StoredExchange:
    return StoredExchange(row.id, row.kind, row.requester_org, row.requester_system, row.request_sha256,
                          dict(row.outcome), row.sealed_records, row.sealed_until, row.partnership, row.purpose,
                          row.register_version, row.request_fingerprint, row.escalation_decision)


_STORED_UNDER_KEY = select(exchanges).where(exchanges.c.requester_system == bindparam("system"),
                                            exchanges.c.idempotency_key == bindparam("key"))


def find_by_idempotency_key(engine: Engine, system: str, key: str) -> StoredExchange | None:
    """The outcome stored under ``key``. Asked when a keyed request's claim is refused because an answer is
    stored under the key, or when the request cannot be decided (a retry gets the first answer all the same):
    one prepared statement on a pooled connection rather than an ORM session (a fifth of the cost)."""
    with engine.connect() as connection:
        row = connection.execute(_STORED_UNDER_KEY, {"system": system, "key": key}).first()
    return _stored(row) if row else None


def get(session: Session, exchange_id: str) -> StoredExchange | None:
    row = session.execute(select(exchanges).where(exchanges.c.id == exchange_id)).first()
    return _stored(row) if row else None


def count_since(connection: Connection, system: str, purpose: str, since: datetime) -> int:
    """The exchanges of ``system`` for ``purpose`` stored since ``since``."""
    return int(connection.execute(select(func.count()).select_from(exchanges).where(
        exchanges.c.requester_system == system, exchanges.c.purpose == purpose,
        exchanges.c.created_at >= since)).scalar_one())


@dataclass(frozen=True)
class Day:
    """Whose requests rule 6 counts together: a system's, for a purpose, on a local ``day`` (ISO date) that
    began at ``since``."""

    system: str
    purpose: str
    day: str
    since: datetime


_DAILY = daily_request_counts
_THIS_DAY = and_(_DAILY.c.requester_system == bindparam("the_system"),
                 _DAILY.c.purpose == bindparam("the_purpose"), _DAILY.c.day == bindparam("the_day"))
_COUNT_IN = update(_DAILY).where(_THIS_DAY).values(requests=_DAILY.c.requests + 1).returning(_DAILY.c.requests)
_GIVE_BACK = update(_DAILY).where(_THIS_DAY, _DAILY.c.requests > 0).values(requests=_DAILY.c.requests - 1)
_COUNTED = select(_DAILY.c.requests).where(_THIS_DAY)


def _day_parameters(day: Day) -> dict[str, str]:
    return {"the_system": day.system, "the_purpose": day.purpose, "the_day": day.day}


def count_in(connection: Connection, day: Day) -> int:
    """Count one more request in ``day`` and return how many were counted before it. One statement, atomic
    in the database, so requests decided at once in several gateway processes each get a count of their own.
    The day's first request seeds the count with the exchanges stored that day before it was kept here (the
    day the counter was installed), and removes the counts of earlier days."""
    counted = first_row(connection, _COUNT_IN, _day_parameters(day))  # every request: straight to the driver
    if counted is not None:
        return int(counted[0]) - 1
    stored = count_since(connection, day.system, day.purpose, day.since)
    connection.execute(delete(_DAILY).where(_DAILY.c.day < day.day))
    statement = insert_on_conflict(connection, _DAILY).values(
        requester_system=day.system, purpose=day.purpose, day=day.day, requests=stored + 1)
    statement = statement.on_conflict_do_update(  # another process counted the day's first meanwhile
        index_elements=[_DAILY.c.requester_system, _DAILY.c.purpose, _DAILY.c.day],
        set_={"requests": _DAILY.c.requests + 1})
    return int(connection.execute(statement.returning(_DAILY.c.requests)).scalar_one()) - 1


class CountMoved(CompanionRefused):
    """Rule 6's count, taken in the write-ahead's transaction, is on the other side of the daily limit than the
    count the request was decided with (requests of other processes, or of this one, were counted meanwhile):
    the transaction is refused, nothing of it is written, and the request is decided again with ``count``."""

    def __init__(self, count: int) -> None:
        super().__init__("the daily count crossed the limit while the request was decided")
        self.count = count


def count_in_unless_moved(day: Day, decided_on: int, limit: int | None,
                          seen: Callable[[int], None] | None = None) -> Callable[[Connection], None]:
    """The write-ahead's precondition that counts the request in (:func:`count_in`), if the count is on the
    same side of ``limit`` as ``decided_on``, the count the policy decided with; else :class:`CountMoved`.
    ``seen`` is told the count with this request in on every run, also one that then refuses or whose transaction
    is rolled back: only the last run before a commit told what the database holds.

    The same side suffices: rule 6 compares the count with the limit and nothing else. So a request is counted
    in the transaction that logs it, and is decided with a count read (or known) beforehand without a write of
    its own. A decision past the limit may cite a count a few requests too low; it escalates all the same."""

    def precondition(connection: Connection) -> None:
        counted = count_in(connection, day)
        if seen is not None:
            seen(counted + 1)
        if limit is not None and (counted >= limit) != (decided_on >= limit):
            raise CountMoved(counted)

    return precondition


def give_back(connection: Connection, day: Day) -> None:
    """Un-count a request :func:`count_in` counted that ended without its outcome stored."""
    connection.execute(_GIVE_BACK, _day_parameters(day))


def counted(connection: Connection, day: Day) -> int:
    """How many requests are counted in ``day`` (stored and being answered), counting none in."""
    found = connection.execute(_COUNTED, _day_parameters(day)).scalar()
    return int(found) if found is not None else count_since(connection, day.system, day.purpose, day.since)


def outcome_writer(engine: Engine) -> BatchedInsert:
    """Inserts outcome rows (a dict of ``exchanges`` columns each) with group commit."""
    return BatchedInsert(engine, exchanges)


@dataclass(frozen=True)
class Claim:
    """Who holds an ``Idempotency-Key`` while its first attempt is answered: ``system`` and ``key`` name it,
    ``exchange_id`` is the attempt, ``claimed_at`` tells a live attempt from an abandoned one. ``answers_logged``:
    the attempt logged its holders' answers before its outcome (an escalation followed them), so the key's request
    has been run: the claim is never taken over, given up on failure, nor removed as abandoned."""

    system: str
    key: str
    exchange_id: str
    request_sha256: str
    claimed_at: datetime
    answers_logged: bool = False


class ClaimLost(CompanionRefused):
    """The attempt may not write under its key (any more): another attempt holds the key or answered it, or
    this attempt outlived its lease and the key may be taken over. Raised inside the attempt's transaction,
    so nothing of that transaction is written."""


def find_claim(session: Session, system: str, key: str) -> Claim | None:
    row = session.execute(select(exchange_claims).where(exchange_claims.c.requester_system == system,
                                                        exchange_claims.c.idempotency_key == key)).first()
    return Claim(system, key, row.exchange_id, row.request_sha256, as_utc(row.claimed_at),
                 row.answers_logged) if row else None


# The claim statements run on every keyed request, under the audit log's write lock: built once, with bound
# parameters (building a statement costs more than running it), and the two of every keyed request (the claim's
# INSERT in the write-ahead, its DELETE with the outcome) sent straight to the driver, compiled once
# (:func:`audit.direct_insert.first_row`), as rule 6's count and the outcome row are. A DELETE says by what it
# RETURNS whether it removed the claim (at most one row: the key is the table's primary key).
_THIS_CLAIM = and_(exchange_claims.c.requester_system == bindparam("system"),
                   exchange_claims.c.idempotency_key == bindparam("key"),
                   exchange_claims.c.exchange_id == bindparam("attempt"))  # not a column's name: UPDATE uses it
_NOTHING_LOGGED = exchange_claims.c.answers_logged.is_(False)
_DELETE_CLAIM = delete(exchange_claims).where(_THIS_CLAIM).returning(exchange_claims.c.exchange_id)
_DELETE_CLAIM_UNLESS_ANSWERS_LOGGED = delete(exchange_claims).where(_THIS_CLAIM, _NOTHING_LOGGED).returning(
    exchange_claims.c.exchange_id)
_CLAIM_HELD = select(exchange_claims.c.exchange_id).where(_THIS_CLAIM)
_MARK_ANSWERS_LOGGED = update(exchange_claims).where(_THIS_CLAIM).values(answers_logged=True)
_CLAIM_COLUMNS = [exchange_claims.c.requester_system, exchange_claims.c.idempotency_key,
                  exchange_claims.c.exchange_id, exchange_claims.c.request_sha256, exchange_claims.c.claimed_at]
_INSERT_CLAIM_UNLESS_ANSWERED = insert(exchange_claims).from_select(
    [column.name for column in _CLAIM_COLUMNS],
    select(*(bindparam(f"new_{column.name}", type_=column.type) for column in _CLAIM_COLUMNS)).where(
        ~exists().where(exchanges.c.requester_system == bindparam("new_requester_system"),
                        exchanges.c.idempotency_key == bindparam("new_idempotency_key"))),
).returning(exchange_claims.c.exchange_id)  # the row count of INSERT ... SELECT read -1 on PostgreSQL


def _claim_parameters(claim: Claim) -> dict[str, str]:
    return {"system": claim.system, "key": claim.key, "attempt": claim.exchange_id}


def _delete_claim(connection: Connection, claim: Claim, *, unless_answers_logged: bool = False) -> int:
    """Delete exactly this attempt's claim; how many rows went (0 when another attempt holds the key, or, with
    ``unless_answers_logged``, when its attempt logged its holders' answers)."""
    statement = _DELETE_CLAIM_UNLESS_ANSWERS_LOGGED if unless_answers_logged else _DELETE_CLAIM
    return 0 if first_row(connection, statement, _claim_parameters(claim)) is None else 1


def claim_companion(claim: Claim, abandoned: Claim | None) -> CompanionRow:
    """Audit entries (the attempt's write-ahead) that commit only with ``claim`` inserted in their transaction,
    which happens only if no outcome is stored under the key yet; an ``abandoned`` claim on the key is removed
    first, only if it is still the one this attempt saw and its attempt logged no holder's answer (then the
    request has been run under the key, and running it again would ask the holders twice). If another attempt
    holds the key (the insert clashes) or answered it, or took the abandoned claim over first, or the abandoned
    attempt logged answers, the transaction is refused (the clash, or :class:`ClaimLost`): nothing of it is
    written. One statement when nothing is taken over."""
    row = {"new_requester_system": claim.system, "new_idempotency_key": claim.key,
           "new_exchange_id": claim.exchange_id, "new_request_sha256": claim.request_sha256,
           "new_claimed_at": claim.claimed_at}

    def precondition(connection: Connection) -> None:
        if abandoned is not None and _delete_claim(connection, abandoned, unless_answers_logged=True) != 1:
            raise ClaimLost("the abandoned claim was taken over meanwhile, or its attempt logged answers")
        if first_row(connection, _INSERT_CLAIM_UNLESS_ANSWERED, row) is None:
            raise ClaimLost("the key was answered meanwhile")

    return only_if(precondition)


def claim_held(claim: Claim, valid_until: datetime, now: Callable[[], datetime], *, release: bool,
               answers_logged: bool = False, lease: bool = True) -> Callable[[Connection], None]:
    """A precondition: the attempt still holds ``claim`` and its lease runs until ``valid_until`` (after that a
    retry may take the key over at any moment, so the attempt writes nothing more under it). With
    ``release``, the claim goes in the same statement (the outcome is being stored); with ``answers_logged``,
    the claim is marked in the same statement as one whose attempt logged its holders' answers (they commit
    before an escalation, and the outcome after it): from that commit on, no retry takes the key over. Without
    ``lease`` only the claim counts (a marked claim's outcome: nobody takes a marked claim over, so its lease
    guards nothing, and a takeover by code that ignores the mark changes or removes the row, which shows)."""
    def precondition(connection: Connection) -> None:
        if lease and now() >= valid_until:
            raise ClaimLost(f"exchange `{claim.exchange_id}` outlived its claim on the Idempotency-Key")
        if release:
            held = _delete_claim(connection, claim)
        elif answers_logged:
            held = connection.execute(_MARK_ANSWERS_LOGGED, _claim_parameters(claim)).rowcount
        else:
            held = len(connection.execute(_CLAIM_HELD, _claim_parameters(claim)).all())
        if held != 1:
            raise ClaimLost(f"exchange `{claim.exchange_id}` no longer holds its Idempotency-Key")
    return precondition


def outcome_companion(build: Callable[[list[Receipt]], dict[str, Any]],
                      precondition: Callable[[Connection], None] | None = None) -> CompanionRow:
    """An outcome row (``build`` makes it from the receipts) that commits with the audit entries it cites,
    if ``precondition`` (e.g. :func:`claim_held` with ``release``) holds in the same transaction."""
    return CompanionRow(exchanges, build, precondition)


def only_if(precondition: Callable[[Connection], None]) -> CompanionRow:
    """Audit entries that commit only if ``precondition`` holds in their transaction (no row of their own)."""
    return CompanionRow(None, None, precondition)


def remove_abandoned_claims(engine: Engine, claimed_before: datetime) -> int:
    """Delete the claims made before ``claimed_before`` (their attempts died: a retry could take them over
    anyway); how many went. Claims of live attempts, in any process, are younger and stay, and so do claims
    whose attempts logged their holders' answers: they keep the key from being run a second time."""
    with engine.begin() as connection:
        return connection.execute(delete(exchange_claims).where(
            exchange_claims.c.claimed_at < claimed_before, _NOTHING_LOGGED)).rowcount


def drop_expired_seals(engine: Engine, now: datetime) -> int:
    """Remove the sealed records of the answers whose idempotency window has ended by ``now`` (a replay no longer
    opens them); how many went. The outcome rows stay: only the records were kept for the window alone."""
    with engine.begin() as connection:
        return connection.execute(update(exchanges).where(
            exchanges.c.sealed_until <= now, exchanges.c.sealed_records.is_not(None)).values(
            sealed_records=None)).rowcount


def release_claim(connection: Connection, claim: Claim) -> None:
    """Give up a failed attempt's claim (the outcome's commit gives it up otherwise), so a retry runs at once; a
    claim another attempt holds by now is left alone, and so is one whose attempt logged its holders' answers:
    a retry would ask them again."""
    _delete_claim(connection, claim, unless_answers_logged=True)
