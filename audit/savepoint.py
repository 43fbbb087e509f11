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

from sqlalchemy import Connection

from audit.store import run_on_driver

_NAME = "audit_caller"


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
