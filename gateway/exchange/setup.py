"""Wiring of the exchange pipeline: policy engine, connectors to holders, the service itself."""

from __future__ import annotations

from connectors.http_connector import ConnectorRegistry
from gateway.auditing.setup import audit_services
from gateway.auth.setup import auth_services
from gateway.auth.tokens import HolderTokenCache
from gateway.container import Container, NotReady, ReadinessCheck
from gateway.exchange.lease import HOLDER_RETRY_BACKOFF_SECONDS
from gateway.exchange.sealing import RecordSealer
from gateway.exchange.service import ExchangeDeps, ExchangeService
from gateway.policy.engine import PolicyEngine, build_policy_engine
from gateway.policy.errors import PolicyError
from gateway.register.setup import register_service


def install_policy(container: Container) -> PolicyEngine:
    """The policy engine, deciding under the register in force and citing it by the digest the gateway
    recorded for it (``RegisterService.digest``), the one the exchange records each decision with."""
    settings, register = container.settings, register_service(container)
    engine = build_policy_engine(settings.policy_engine, settings.policies_dir, register.as_opa_data(),
                                 register.digest, opa_url=settings.opa_url,
                                 timeout=settings.opa_timeout_seconds, token=settings.opa_token,
                                 ca_file=str(settings.opa_ca_file) if settings.opa_ca_file else None)
    container.services["policy"] = engine
    container.readiness["policy_engine"] = _policy_check(engine)
    return engine


def _policy_check(engine: PolicyEngine) -> ReadinessCheck:
    """The engine's readiness, its reason shown: an operator reads why the gateway denies everything (the OPA
    server redirects, answers 401, keeps no register, decides with older policies) in the probe, not a bare
    ``PolicyUnavailable``. The engines word every ``PolicyError`` themselves, naming no URL, token or input
    (a failure of the outside library by its type only), so the unauthenticated probe may show it."""
    async def check() -> None:
        try:
            await engine.check()
        except PolicyError as exc:
            raise NotReady(str(exc)) from exc
    return check


def install_exchange(container: Container) -> ExchangeService:
    settings = container.settings
    audit = audit_services(container)
    connectors = ConnectorRegistry(settings.connector_endpoints,
                                   HolderTokenCache(auth_services(container).tokens, container.clock),
                                   timeout=settings.connector_timeout_seconds, retries=settings.connector_retries,
                                   backoff=HOLDER_RETRY_BACKOFF_SECONDS,  # what the settings' lease check counts
                                   ca_file=settings.connector_ca_file,
                                   allow_insecure_http=settings.connector_allow_insecure_http)
    policy = container.services["policy"]
    service = ExchangeService(ExchangeDeps(
        sessions=container.sessions, clock=container.clock, register=register_service(container).current(),
        policy=policy, connectors=connectors, writer=audit.writer, audit_log=audit.log,
        sealer=RecordSealer(settings.key_dir), require_pseudonyms=settings.require_pseudonyms))
    container.services["exchange"] = service
    container.services["connectors"] = connectors
    service.remove_abandoned_claims()
    service.drop_expired_seals_now()
    return service


def exchange_service(container: Container) -> ExchangeService:
    return container.service("exchange", ExchangeService)
