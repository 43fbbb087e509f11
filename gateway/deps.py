"""FastAPI dependencies shared by routers: the container and one DB session per request.

The session dependency commits when the handler returns normally and rolls back on any error, so a
rejected request never leaves a partial write (polar's pattern).
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from gateway.container import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_session(request: Request) -> Iterator[Session]:
    session = get_container(request).sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
