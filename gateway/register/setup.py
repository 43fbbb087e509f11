"""Wiring of the register into the container (called from ``gateway.app.start_services``)."""

from __future__ import annotations

from gateway.container import Container
from gateway.db.engine import transaction
from gateway.register.service import RegisterService, load_and_record


def install_register(container: Container) -> RegisterService:
    """Load, validate and record the register file; a bad file stops the start with line and reason."""
    with transaction(container.sessions) as session:
        service, is_new = load_and_record(session, container.settings.register_file, container.clock)
    service.newly_recorded = is_new
    container.services["register"] = service
    return service


def register_service(container: Container) -> RegisterService:
    return container.service("register", RegisterService)
