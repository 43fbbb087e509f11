"""FastAPI dependencies shared by routers: the container and one DB session per request.

The session dependency commits when the handler returns normally and rolls back on any error, so a
rejected request never leaves a partial write (polar's pattern).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from gateway.container import Container
from gateway.db.engine import transaction


def container_of(request: Request) -> Container:
    """The app's container, for code that has the request at hand."""
    container: Container = request.app.state.container
    return container


async def get_container(request: Request) -> Container:
    """The container as a dependency: async so that FastAPI calls it on the event loop (a sync dependency
    costs a hop to a worker thread on every request, for one attribute read)."""
    return container_of(request)


def get_session(request: Request) -> Iterator[Session]:
    with transaction(container_of(request).sessions) as session:
        yield session
