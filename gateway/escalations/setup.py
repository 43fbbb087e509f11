"""Wiring of the escalation workflow: the service, its webhook notifier and scheduler, and the exchange's
link to it (so escalated and refused requests open cases and decisions can be re-run)."""

from __future__ import annotations

from gateway.auditing.setup import audit_services
from gateway.auth.setup import auth_services
from gateway.container import Container
from gateway.escalations.notifications import WebhookNotifier
from gateway.escalations.scheduler import OverdueScheduler
from gateway.escalations.service import EscalationService
from gateway.exchange.setup import exchange_service
from gateway.register.setup import register_service


def install_escalations(container: Container) -> EscalationService:
    settings = container.settings
    service = EscalationService(
        sessions=container.sessions, clock=container.clock, register=register_service(container).current(),
        writer=audit_services(container).writer, tokens=auth_services(container).tokens,
        notifier=WebhookNotifier(settings.escalation_webhooks),
        decision_valid_days=settings.escalation_decision_valid_days)
    container.services["escalations"] = service
    container.services["escalation_scheduler"] = OverdueScheduler(service.scan,
                                                                  settings.escalation_scan_seconds)
    exchange_service(container).deps.escalations = service
    return service


def escalation_service(container: Container) -> EscalationService:
    return container.service("escalations", EscalationService)


def escalation_scheduler(container: Container) -> OverdueScheduler:
    return container.service("escalation_scheduler", OverdueScheduler)
