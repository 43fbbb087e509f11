"""Liveness and readiness probes.

``/health/live`` answers as long as the process serves HTTP. ``/health/ready`` runs every registered
readiness check (database, policy engine, key store, ...) and answers 503 with the failing names, so a
load balancer stops routing to a gateway that would have to deny everything.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gateway.container import Container, ReadinessCheck

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="Liveness probe")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready", summary="Readiness probe (database, policy engine, key store)",
            responses={503: {"description": "A dependency is not ready (plain JSON, not a problem document)",
                             "content": {"application/json": {"example": {
                                 "status": "unavailable", "checks": {"database": "failed: OperationalError",
                                                                     "policy": "ok", "keys": "ok"}}}}}})
async def ready(request: Request) -> JSONResponse:
    container: Container = request.app.state.container
    results: dict[str, str] = {}
    for name, check in container.readiness.items():
        try:
            await asyncio.wait_for(check(), timeout=3.0)
            results[name] = "ok"
        except Exception as exc:  # a probe reports, it never raises
            results[name] = f"failed: {type(exc).__name__}"
    healthy = all(value == "ok" for value in results.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": results},
                        status_code=200 if healthy else 503)


def database_check(container: Container) -> ReadinessCheck:
    async def check() -> None:
        def ping() -> None:
            with container.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        await asyncio.to_thread(ping)
    return check
