"""One caller's statements inside a shared transaction, taken back alone when they refuse: an SQL SAVEPOINT.

Why: the audit writer commits many callers' entries in one transaction (group commit), and a caller's companion
may refuse (:class:`audit.writer.CompanionRow`: a retry of an answered ``Idempotency-Key``, rule 6's count moved).
Without a savepoint the refusal could only be undone with the whole transaction, every other caller's work too,
and on PostgreSQL a failed statement leaves the transaction unusable until it is rolled back to a savepoint.

Sent straight to the driver, as the log's own BEGIN and COMMIT are (:mod:`audit.store`): the transaction is the
driver's, unseen by SQLAlchemy, so SQLAlchemy's ``begin_nested`` would not nest inside it. A driver error here
(a connection gone) is raised as the driver's: the log counts those among its database errors.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Dialect

from audit.store import run_on_driver

_NAME = "audit_caller"

_POSTGRESQL_CACHED_SUBTRANSACTIONS = 64
"""PostgreSQL's ``PGPROC_MAX_CACHED_SUBXIDS``: the subtransaction ids a backend keeps in shared memory."""


def per_transaction(dialect: Dialect) -> int | None:
    """How many savepoints one transaction should take on ``dialect`` (None: no limit).

    Why a limit on PostgreSQL: :func:`refusal` releases each savepoint before the next, so one is open at a time,
    but a released subtransaction that wrote (rule 6's count, an ``Idempotency-Key``'s claim: nearly every
    caller's precondition) keeps its transaction id in its backend's cache until the whole transaction ends (only
    one rolled back leaves it). Past 64 the cache overflows, and while that transaction runs every other session's
    snapshot has to look subtransactions up in ``pg_subtrans``: a known performance cliff. SQLite's savepoints are
    marks in its journal, with no such cost."""
    return _POSTGRESQL_CACHED_SUBTRANSACTIONS if dialect.name == "postgresql" else None


def refusal(connection: Connection, work: Callable[[Connection], None]) -> Exception | None:
    """Run ``work`` in a savepoint: None when it returns (its statements kept), else the exception it raised,
    its statements undone and the transaction usable as before it. A failure of the savepoint's own statements
    is raised (the transaction's state is then unknown: it must fail as a whole), and so is whatever ``work``
    raises that is not an ``Exception`` (after undoing its statements)."""
    run_on_driver(connection, f"SAVEPOINT {_NAME}")
    try:
        work(connection)
    except Exception as exc:
        _undo(connection)
        return exc
    except BaseException:
        _undo(connection)
        raise
    run_on_driver(connection, f"RELEASE SAVEPOINT {_NAME}")
    return None


def _undo(connection: Connection) -> None:
    run_on_driver(connection, f"ROLLBACK TO SAVEPOINT {_NAME}")
    run_on_driver(connection, f"RELEASE SAVEPOINT {_NAME}")
