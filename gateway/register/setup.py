"""Wiring of the register into the container (called from ``gateway.app.start_services``)."""

from __future__ import annotations

from gateway.container import Container
from gateway.db.engine import transaction
from gateway.register.loader import load_register
from gateway.register.service import RegisterService, record_version, service_for


def install_register(container: Container) -> RegisterService:
    """Load, validate and record the register file; a bad file stops the start with line and reason.

    Gateway processes starting at once on one database (uvicorn workers, containers on one volume) each
    record the version, and exactly one of them records a new one (``record_version``: insert first, read
    only when nothing was inserted). The file is read and validated before the transaction, which on SQLite
    begins ``IMMEDIATE``: it holds the write lock from its start, so a process that meets another's lock
    waits for it in SQLite's busy timeout, and none holds the lock while parsing a file.

    Nothing is tried again: with the lock taken first, every wait for another process is SQLite's busy
    timeout (30 s) or PostgreSQL's, and an ``OperationalError`` left after it is a database that stays
    locked or cannot be reached — the start fails with it at once. (Five attempts stood here for two of
    four processes that once failed together in CI; never reproduced, and a retry of an error nobody
    identified would also have retried those that do not pass.)
    """
    path = container.settings.register_file
    register, _text = load_register(path)
    with transaction(container.sessions, immediate=True) as session:
        is_new = record_version(session, register, path.name, container.clock)
    service = service_for(register, is_new)
    container.services["register"] = service
    return service


def register_service(container: Container) -> RegisterService:
    return container.service("register", RegisterService)
