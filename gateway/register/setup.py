"""Wiring of the register into the container (called from ``gateway.app.start_services``)."""

from __future__ import annotations

import random
import time

import structlog
from sqlalchemy.exc import OperationalError

from gateway.container import Container
from gateway.db.engine import transaction
from gateway.register.service import RegisterService, load_and_record

log = structlog.get_logger("gateway.register")

# Attempts at recording the register version on SQLite before the start fails; the waits between them
# double from RETRY_PAUSE_SECONDS (about 1.5 s in all), with jitter so that processes do not retry in step.
RECORD_ATTEMPTS = 5
RETRY_PAUSE_SECONDS = 0.1


def install_register(container: Container) -> RegisterService:
    """Load, validate and record the register file; a bad file stops the start with line and reason.

    Gateway processes starting at once on one SQLite file (uvicorn workers, containers on one volume) each
    record the version. SQLite answers some of the lock states of a file that other processes are opening and
    closing at that moment with an error at once instead of waiting its busy timeout; in CI two of four
    processes starting together failed on it (OperationalError) and would have left workers dead. Recording a
    version is idempotent and the failed attempt rolled back, so on SQLite it is tried again a few times. On
    PostgreSQL an OperationalError means the server is unreachable, which its connect timeout already bounds:
    the start fails at once.
    """
    attempt = 1
    while True:
        try:
            with transaction(container.sessions) as session:
                service, is_new = load_and_record(session, container.settings.register_file, container.clock)
            break
        except OperationalError as exc:
            if attempt == RECORD_ATTEMPTS or container.engine.dialect.name != "sqlite":
                raise
            log.warning("register_record_retried", attempt=attempt, error=str(exc.orig))
            time.sleep(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
            attempt += 1
    service.newly_recorded = is_new
    container.services["register"] = service
    return service


def register_service(container: Container) -> RegisterService:
    return container.service("register", RegisterService)
