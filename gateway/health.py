"""Liveness and readiness probes.

``/health/live`` answers as long as the process serves HTTP. ``/health/ready`` runs every registered
readiness check (database, schema, policy engine, key store, ...) and answers 503 with the failing names, so a
load balancer stops routing to a gateway that would have to deny everything. The checks run concurrently, each
within its own bound: two slow dependencies cost the probe one bound, not two, so a probe with an
orchestrator's few-second timeout does not take a gateway with merely slow dependencies for a dead one.

A container orchestrator should restart on the liveness probe and route on the readiness probe: restarting
a gateway whose database is down or behind only makes it refuse to start (``serve`` checks both first).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gateway.cancellation import cancelled_from_outside
from gateway.container import Container, NotReady, ReadinessCheck, one_run_at_a_time
from gateway.db.engine import current_heads, migration_gap

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 3.0
"""How long ``/health/ready`` waits for each check. A probe must answer within its orchestrator's timeout
(often a few seconds) whatever a dependency's own may be: ``WGS_OPA_TIMEOUT_SECONDS`` may be up to 60, and a
policy engine slower than this bound is reported as such (the reason names it), not waited for."""


@router.get("/health/live", summary="Liveness probe")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="Readiness probe (database, policy engine, key store)",
            responses={503: {"description": "A dependency is not ready (plain JSON, not a problem document)",
                             "content": {"application/json": {"example": {
                                 "status": "unavailable", "checks": {"database": "failed: OperationalError",
                                                                     "schema": "failed: OperationalError",
                                                                     "policy_engine": "ok", "key_store": "ok"}}}}}})
async def ready(request: Request) -> JSONResponse:
    container: Container = request.app.state.container
    async with asyncio.TaskGroup() as group:  # every check ends (answers, fails or is cancelled) before the answer
        outcomes = {name: group.create_task(_outcome(check)) for name, check in container.readiness.items()}
    results = {name: outcome.result() for name, outcome in outcomes.items()}  # in the order they were registered
    healthy = all(value == "ok" for value in results.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": results},
                        status_code=200 if healthy else 503)


async def _outcome(check: ReadinessCheck) -> str:
    """``ok`` or ``failed: <why>`` for one check, waited for at most ``CHECK_TIMEOUT_SECONDS``. Never raises
    (but for the probe's own cancellation): a check that fails in an unforeseen way makes the gateway not ready
    (fail closed), it does not turn the probe into a 500 or take the other checks' answers with it. A check
    past the bound is cancelled; what it runs in a thread (a database query) cannot be interrupted and ends at its
    driver's own timeout (``WGS_DB_CONNECT_TIMEOUT_SECONDS`` for a connection): such checks run their thread
    through :func:`gateway.container.one_run_at_a_time`, so the next probe waits for that run, not another."""
    bound = asyncio.timeout(CHECK_TIMEOUT_SECONDS)
    try:
        async with bound:
            await check()
        return "ok"
    except TimeoutError:
        # Slow, not necessarily down: say so, and which bound (a check's own timeout is its NotReady's).
        return (f"failed: no answer within {CHECK_TIMEOUT_SECONDS:g} s (the readiness probe's bound)"
                if bound.expired() else "failed: TimeoutError")
    except NotReady as exc:  # a reason its check vouches for: no secret in it
        return f"failed: {exc}"
    except asyncio.CancelledError:
        if cancelled_from_outside():
            raise  # the request went away (or the server stops): nothing to answer
        return "failed: CancelledError"  # the check's own (e.g. a task it awaited was cancelled), not the probe's
    except Exception as exc:  # a probe reports, it never raises
        return f"failed: {type(exc).__name__}"


def database_check(container: Container) -> ReadinessCheck:
    def ping() -> None:
        with container.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    return one_run_at_a_time(ping)


def schema_check(container: Container, expected: set[str]) -> ReadinessCheck:
    """Not ready while the database is not at ``expected``, the migration heads this code ships.

    ``serve`` and the app's start-up refuse such a database already; this covers a schema that changes
    under a running process: a newer gateway version migrated it during a rolling upgrade (this one no
    longer matches its tables), or an operator downgraded it. Either way the same condition as at start-up
    (anything but exactly the head), so a process never serves on a schema it would refuse to start on.
    ``expected`` is computed once at start-up (it parses every migration script); each probe reads only
    ``alembic_version``. The reason names revisions, never the database URL."""
    heads = one_run_at_a_time(lambda: current_heads(container.engine))

    async def check() -> None:
        gap = migration_gap(await heads(), expected)
        if gap:
            raise NotReady(f"not migrated: {gap}; run `wgs-gateway db upgrade`")
    return check
