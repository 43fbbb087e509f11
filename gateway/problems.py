"""RFC 9457 problem+json for every error response, in one place.

Why here and nowhere else: routers stay thin, and no error path can leak a stack trace or the
caller's input (which may contain personal data) into a response body.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.errors import AuditWriteError, StoreUnavailable
from gateway.errors import GatewayError, cause_of
from gateway.logging import database_fault, scrub_text

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://wgs-gateway.example/problems/"

log = structlog.get_logger("gateway.problems")
_NUL_REFUSED = "cannot contain NUL (0x00)"
"""psycopg's refusal of a NUL character in a text value (PostgreSQL text cannot hold one)."""


def problem_response(status: int, slug: str, title: str, detail: str, *,
                     extra: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None,
                     instance: str | None = None) -> JSONResponse:
    """Build one problem document response."""
    # Details and paths may echo the caller's input (an id, a holder name): identifier-shaped parts are
    # masked, so a BSN sent where an id belongs never comes back in a body (nor, via the log, goes anywhere).
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status,
                            "detail": scrub_text(detail)}
    if instance:
        body["instance"] = scrub_text(instance)
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


_FIELD_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}(\[[a-z0-9_,'\[\]()-]{1,64}\])?")
"""What a name in an error's location must look like to be named back: the API's field, parameter and header
names all do (``case_reference``, ``idempotency-key``), as do pydantic's tags of a union's members
(``list[str]``, ``literal['all']``)."""
MASKED_NAME = "[name not shown]"
FROM_THE_PATH = "[from the path]"
"""What a refusal's logged reason says in place of a value the caller put in the request's path."""


def _location_part(part: object) -> str:
    """One step of an error's location: a list position, or a name shaped like the API's own. Other names are
    the caller's text, not ours (a member the model does not know, a key of a free-form object), and may be
    personal data sent as a name — ``{"Jan de Vries": ...}`` — which the identifier mask does not recognise."""
    text = str(part)
    if isinstance(part, int) or (_FIELD_NAME.fullmatch(text) and scrub_text(text) == text):
        return text
    return MASKED_NAME


def logged_reason(request: Request, detail: str) -> str:
    """``detail`` as the log line of a refusal says it: each value of the request's path parameters replaced by
    :data:`FROM_THE_PATH`.

    Why: a refusal may name what was asked for (``no escalation case `...```) and a path is the caller's text;
    a name can stand there, which the log's identifier mask does not recognise (the access log names the
    route's template, never the path, for the same reason). The caller still gets the detail as it was: it
    only echoes what they sent. A value of digits only, or of one character, is no name and is left, so that
    replacing it does not garble the rest of the reason (the mask takes identifier-shaped digits anyway)."""
    values = {str(value) for value in request.path_params.values()}
    for value in sorted(values, key=len, reverse=True):
        if len(value) > 1 and not value.isdigit():
            detail = detail.replace(value, FROM_THE_PATH)
    return detail


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the offending input values (they may be personal data), nor names in their
    location that the caller made up (:func:`_location_part`)."""
    cleaned = []
    for err in exc.errors():
        loc = [_location_part(part) for part in err.get("loc", ())]
        cleaned.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return cleaned


def validation_detail(errors: list[dict[str, Any]]) -> str:
    """What a validation problem's ``detail`` says (the first five complaints: where, and what is wrong); the
    console's error page names the same fields, in the person's language (:mod:`gateway.console.pages`)."""
    return "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into problem+json."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        log.info("request_rejected", status=exc.status, problem=exc.slug, reason=logged_reason(request, exc.detail))
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, extra=exc.extra,
                                headers=exc.headers, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        log.info("request_rejected", status=422, problem="validation-error",
                 fields=[".".join(e["loc"]) for e in errors])
        return problem_response(422, "validation-error", "Request validation failed", validation_detail(errors),
                                extra={"errors": errors}, instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden",
                413: "payload-too-large"}.get(
            exc.status_code, "http-error")
        log.info("request_rejected", status=exc.status_code, problem=slug)
        return problem_response(exc.status_code, slug, slug.replace("-", " ").capitalize(), str(exc.detail),
                                headers=getattr(exc, "headers", None), instance=request.url.path)

    @app.exception_handler(OperationalError)
    async def _database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        # The database went away or cannot write (connection lost, disk full, a table gone): not the
        # caller's fault and not a bug of ours, so 503 like any other unavailable dependency — fail closed.
        # The driver's first line says which (no statement parameters: those are not part of it), masked like
        # every log value; a schema bug ("no such column") is then visible here rather than hidden as an outage.
        log.error("database_unavailable", **database_fault(exc))
        return problem_response(503, "service-unavailable", "Service unavailable",
                                "The database is unavailable; the request is denied and nothing was disclosed.",
                                instance=request.url.path)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL text cannot hold a NUL character (psycopg refuses to send one; SQLite stores it): one in
        # an id, a username or a path segment is the caller's bad input, refused like any other, not a 500.
        if _NUL_REFUSED in str(exc.orig):
            log.info("request_rejected", status=422, problem="unprocessable", reason="NUL character in input")
            return problem_response(422, "unprocessable", "Unprocessable request",
                                    "The request contains a NUL character.", instance=request.url.path)
        raise exc  # any other DataError is a bug: the generic 500, with its traceback in the server's log

    @app.exception_handler(AuditWriteError)
    @app.exception_handler(StoreUnavailable)
    async def _audit_log_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A request that must be logged (a look-up, an export, a flag) when the log cannot be written or read:
        # the log is an unavailable dependency like the database, so 503 and nothing answered (fail closed).
        # Routes that answer more specifically (the exchange, escalations) catch it themselves first.
        fault = exc if isinstance(exc, OperationalError) else cause_of(exc, OperationalError)
        log.error("audit_log_unavailable", **(database_fault(fault) if fault else {"error_type": type(exc).__name__}))
        return problem_response(503, "service-unavailable", "Service unavailable",
                                "The audit log is unavailable; the request is denied and nothing was disclosed.",
                                instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Fail closed: a bug must never become a disclosure or a stack trace in the body.
        log.error("unexpected_error", error_type=type(exc).__name__)
        return problem_response(500, "internal-error", "Internal error",
                                "The gateway could not complete the request; nothing was disclosed.",
                                instance=request.url.path)
