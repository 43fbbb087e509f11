"""Wiring of the register into the container (called from ``gateway.app.start_services``)."""

from __future__ import annotations

import random
import time

import structlog
from sqlalchemy.exc import OperationalError

from gateway.container import Container
from gateway.db.engine import transaction
from gateway.register.loader import load_register
from gateway.register.service import RegisterService, record_version

log = structlog.get_logger("gateway.register")

# Attempts at recording the register version on SQLite before the start fails; the waits between them
# double from RETRY_PAUSE_SECONDS (about 1.5 s in all), with jitter so that processes do not retry in step.
RECORD_ATTEMPTS = 5
RETRY_PAUSE_SECONDS = 0.1


def install_register(container: Container) -> RegisterService:
    """Load, validate and record the register file; a bad file stops the start with line and reason.

    Gateway processes starting at once on one database (uvicorn workers, containers on one volume) each
    record the version, and exactly one of them records a new one (``record_version``: insert first, read
    only when nothing was inserted). The file is read and validated before the transaction, which on SQLite
    begins ``IMMEDIATE``: it holds the write lock from its start, so a process that meets another's lock
    waits for it in SQLite's busy timeout (30 s), and none holds the lock while parsing a file.

    Recording is still tried again on SQLite (``_recorded``): with the above in place, one of four processes
    starting at once still failed now and then on ``database is locked`` raised outside any statement (so
    not while waiting in the busy timeout: on the connection's opening or at the commit) — 3 of some 140
    runs of tests/reliability/test_startup_races.py, all within a quarter of an hour of heavy load on the
    machine; its cause is not known. A persistent error fails the start after RECORD_ATTEMPTS, with the
    database's error.
    """
    path = container.settings.register_file
    register, _text = load_register(path, audience=container.settings.audience)
    service = RegisterService.holding(register)
    service.newly_recorded = _recorded(container, service, path.name)  # the audit log says so when True
    log.info("register_loaded", version=register.version, new_version=service.newly_recorded,
             partnerships=len(register.partnerships))
    container.services["register"] = service
    return service


def _recorded(container: Container, held: RegisterService, source: str) -> bool:
    """``record_version`` in a transaction of its own, tried up to RECORD_ATTEMPTS times on SQLite when the
    database answers with an ``OperationalError`` (the attempt rolled back; recording is idempotent). On
    PostgreSQL that error means the server is unreachable, which its connect timeout already bounds: the
    start fails at once."""
    attempt = 1
    while True:
        try:
            with transaction(container.sessions, immediate=True) as session:
                return record_version(session, held, source, container.clock)
        except OperationalError as exc:
            if attempt == RECORD_ATTEMPTS or container.engine.dialect.name != "sqlite":
                raise
            log.warning("register_record_retried", attempt=attempt, error=str(exc.orig))
            time.sleep(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
            attempt += 1


def register_service(container: Container) -> RegisterService:
    return container.service("register", RegisterService)
