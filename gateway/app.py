"""The FastAPI application factory: wires settings, container, middleware, routers and start-up checks."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from gateway import api_docs, health
from gateway.auditing import endpoints as audit_endpoints
from gateway.auditing import review as audit_review
from gateway.auditing.setup import audit_services, install_audit
from gateway.auth import endpoints as auth_endpoints
from gateway.auth.setup import auth_services, install_auth
from gateway.clock import Clock
from gateway.console import endpoints as console_endpoints
from gateway.console.boundary import install_console_boundary
from gateway.console.sessions import CONSOLE_SETTINGS, close_sign_out_retries, start_sign_out_retries
from gateway.console.settings import ConsoleSettings
from gateway.console.signins import close_sign_ins, start_sign_ins
from gateway.container import Container, build_container
from gateway.db.engine import assert_migrated, encoding_refusal, expected_heads
from gateway.enrolment import endpoints as enrolment_endpoints
from gateway.enrolment import fuzzy_endpoints
from gateway.enrolment.setup import (
    install_filters,
    install_pseudonyms,
    remove_abandoned_at_start,
    remove_retired_at_start,
)
from gateway.errors import ServiceUnavailable
from gateway.escalations import endpoints as escalation_endpoints
from gateway.escalations.setup import escalation_scheduler, escalation_service, install_escalations
from gateway.exchange import endpoints as exchange_endpoints
from gateway.exchange.setup import exchange_service, install_exchange, install_policy
from gateway.logging import configure_logging
from gateway.middleware import (
    BodySizeLimitMiddleware,
    HeadMiddleware,
    RequestContextMiddleware,
    StrictJsonMiddleware,
)
from gateway.openapi import problem_openapi
from gateway.problems import install_problem_handlers
from gateway.ratelimit import RateLimitMiddleware
from gateway.register import endpoints as register_endpoints
from gateway.register.setup import install_register
from gateway.settings import Settings

log = structlog.get_logger("gateway.app")

API_DESCRIPTION = """
Purpose-bound exchange of personal data between participants of partnerships designated under the
Dutch *Wet gegevensverwerking door samenwerkingsverbanden* (WGS).

Partner systems authenticate with OAuth2 client credentials (`POST /oauth/token`, `private_key_jwt` or a
client secret) and send the access token as `Authorization: Bearer ...`. Every error is an RFC 9457
`application/problem+json` document.
"""


def start_services(container: Container) -> None:
    """Start-up, in order: refuse a database not in UTF-8 or not migrated, then bring up each service.

    The migration heads are read from the scripts once, here; the readiness probe compares the database
    with them on every call (a schema migrated or downgraded under the running process makes it not ready).
    """
    heads = expected_heads()
    refusal = encoding_refusal(container.engine, container.settings.db_connect_timeout_seconds)
    if refusal is not None:
        raise ServiceUnavailable(refusal)
    assert_migrated(container.engine, heads)
    container.readiness["database"] = health.database_check(container)
    container.readiness["schema"] = health.schema_check(container, heads)
    install_register(container)
    install_auth(container)
    install_audit(container)
    install_policy(container)
    install_exchange(container)
    install_pseudonyms(container)
    install_filters(container)
    remove_retired_at_start(container)
    remove_abandoned_at_start(container)
    install_escalations(container)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None,
               container: Container | None = None, freeze_heap: bool = False,
               console_settings: ConsoleSettings | None = None) -> FastAPI:
    """Build the gateway app. Nothing touches the database until the lifespan starts.

    Both settings groups are read here, so a bad ``WGS_`` or ``WGS_CONSOLE_`` value stops the start with
    pydantic's ``ValidationError`` (``wgs-gateway serve`` checks first and prints one line) instead of
    failing requests later; the console uses the ``console_settings`` read here, not the environment.

    ``freeze_heap`` (the server process, :mod:`gateway.asgi`): once started, move everything built so far
    (register, policies, engines, keys, imported modules) out of the cyclic garbage collector's reach
    (``gc.freeze``). It lives as long as the process anyway, and every collection during requests would
    otherwise scan all of it again; measured, that is up to a third of an audit append's CPU time.
    """
    settings = settings or (container.settings if container else Settings())
    console_settings = console_settings or ConsoleSettings()
    configure_logging(settings.log_level, settings.log_json)
    owned = container is None
    the_container = container or build_container(settings, clock)
    the_container.services[CONSOLE_SETTINGS] = console_settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_services(the_container)
        audit_services(the_container).writer.start()
        exchange_service(the_container).start()
        auth_services(the_container).disabled.start()
        start_sign_ins(the_container)
        start_sign_out_retries(the_container)
        escalation_scheduler(the_container).start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        log.info("gateway_started", database=the_container.engine.url.render_as_string(hide_password=True),
                 policy_engine=settings.policy_engine)
        try:
            yield
        finally:
            # Graceful shutdown: uvicorn has stopped accepting and drained requests before this runs.
            log.info("gateway_stopping")
            await escalation_scheduler(the_container).aclose()
            await auth_services(the_container).disabled.aclose()
            await escalation_service(the_container).notifier.aclose()
            await exchange_service(the_container).aclose()
            await close_sign_ins(the_container)  # its summaries are audit entries: before the writer closes
            await close_sign_out_retries(the_container)
            await audit_services(the_container).writer.aclose()
            await the_container.services["connectors"].aclose()
            await the_container.services["policy"].aclose()
            if owned:
                the_container.close()

    # The documentation pages are api_docs' (pinned, integrity-checked assets: they share the console's origin).
    # No slash redirects: Starlette's answered a path with a trailing slash by a 307 to an absolute URL built
    # from the request's Host header (http:// unless a trusted proxy said otherwise), which sent a caller, and a
    # partner system's re-posted exchange body, wherever that header named. No route ends in a slash: a 404.
    app = FastAPI(title="WGS data-sharing gateway", version="0.1.0", description=API_DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=api_docs.OPENAPI_URL,
                  redirect_slashes=False)
    app.state.container = the_container
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    install_problem_handlers(app)
    app.add_middleware(StrictJsonMiddleware)  # inside the body limit, which bounds what it reads
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
    app.add_middleware(RequestContextMiddleware)
    install_console_boundary(app)  # after the handlers and the middleware whose answers it makes the console's
    app.add_middleware(HeadMiddleware)  # last, so outermost: no inner layer's body goes out for a HEAD
    # The exchange first: a request is matched against the routes in this order, and nearly every request is
    # an exchange (no other router has a path it takes, so the order changes no answer).
    app.include_router(exchange_endpoints.router)
    app.include_router(health.router)
    app.include_router(api_docs.router)
    # Routers of each domain are included below (one line each).
    app.include_router(auth_endpoints.router)
    app.include_router(register_endpoints.router)
    app.include_router(audit_endpoints.router)
    app.include_router(audit_review.router)
    app.include_router(console_endpoints.router)
    app.include_router(enrolment_endpoints.router)
    app.include_router(fuzzy_endpoints.router)
    app.include_router(escalation_endpoints.router)
    return app
