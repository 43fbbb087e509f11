"""The OpenAPI document as the gateway really answers: every error is RFC 9457 problem+json.

FastAPI documents its own validation error (``HTTPValidationError``, ``application/json``) and only the
statuses a route lists. The gateway answers every error through ``gateway.problems``, so the document is
post-processed once: each 4xx/5xx response is described as ``application/problem+json`` with the
``Problem`` schema and an example (the route's own examples where it gives them, else the usual problem for
that status); every operation with a body documents 400 (unparsable body) and 413 (too large); every
protected route documents 401 and 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.errors import GatewayError
from gateway.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

PUBLIC_PREFIXES = ("/health", "/.well-known/", "/oauth/", "/v1/auth/login")
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. Never contains personal data.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference",
                 "description": "Identifies the kind of problem; the last segment is a stable slug."},
        "title": {"type": "string", "description": "Short summary of the kind of problem."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong with this request, and what to do about "
                                                    "it; identifier-shaped input is masked."},
        "instance": {"type": "string", "description": "The request path."},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "For 422 validation errors: per field its location, message and error type "
                                  "(never the value sent)."},
        "outcome": {"type": "string", "description": "On a refusal that is itself a decision (policy engine "
                                                    "down: fail closed), the outcome: `denied`."},
    },
    "additionalProperties": True,
}
_DEFAULT_DESCRIPTIONS = {
    "400": "The body is not valid JSON", "401": "Missing, expired or forged access token",
    "403": "The token lacks the scope or role", "413": "Body too large", "429": "Too many requests",
}


_USUAL_PROBLEMS: dict[str, tuple[str, str, str]] = {
    "400": ("bad-request", "Bad request", "The body is not valid JSON."),
    "401": ("unauthorized", "Unauthorized", "the access token has expired"),
    "403": ("forbidden", "Forbidden", "the access token lacks the scope this route needs"),
    "404": ("not-found", "Not found", "no such resource (or not yours to see)"),
    "409": ("conflict", "Conflict", "the resource changed meanwhile; read it again"),
    "413": ("payload-too-large", "Payload too large", "Request body exceeds 1048576 bytes."),
    "422": ("validation-error", "Request validation failed", "body.purpose: Field required"),
    "429": ("too-many-requests", "Too many requests", "too many requests; retry after Retry-After seconds"),
    "500": ("internal-error", "Internal error", "The gateway could not complete the request; nothing was disclosed."),
    "503": ("service-unavailable", "Service unavailable", "the database is unavailable; nothing was done"),
}


_TOKEN_PROBLEMS = {"400": ("invalid_request", "the form body could not be parsed"),
                   "401": ("invalid_client", "the client assertion's signature does not verify")}


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """An example problem document, as ``gateway.problems`` writes them."""
    return {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail} | extra


def problem_of(error: GatewayError, instance: str) -> dict[str, Any]:
    """The problem document ``gateway.problems`` writes for ``error`` at ``instance``: an example that is the
    refusal itself, so that it cannot drift from it."""
    return problem(error.status, error.slug, error.title, error.detail, instance=instance, **error.extra)


def named_examples(**examples: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``examples`` from problem documents, each summarised by its detail."""
    return {name: {"summary": value["detail"], "value": value} for name, value in examples.items()}


def problem_examples(**examples: dict[str, Any]) -> dict[str, Any]:
    """``content`` of an error response with named examples (the post-processing below adds the schema)."""
    return {PROBLEM_MEDIA_TYPE: {"examples": named_examples(**examples)}}


def _usual_problem(status: str, path: str) -> dict[str, Any]:
    """The usual problem document for ``status`` on ``path``, for a response the route gives no example of."""
    if path == "/oauth/token" and status in _TOKEN_PROBLEMS:  # RFC 6749 error members in the problem
        error, description = _TOKEN_PROBLEMS[status]
        return problem(int(status), "oauth-" + error.replace("_", "-"), "Token request refused", description,
                       error=error, error_description=description)
    slug, title, detail = _USUAL_PROBLEMS.get(status, ("http-error", "HTTP error", "the request failed"))
    if status == "422":
        return problem(422, slug, title, detail, instance=path,
                       errors=[{"loc": ["body", "purpose"], "msg": "Field required", "type": "missing"}])
    return problem(int(status), slug, title, detail, instance=path)


def _plain_json(response: dict[str, Any]) -> bool:
    """A route's error that is no problem document (the readiness probe's 503) documents its own JSON example."""
    return "example" in response.get("content", {}).get("application/json", {})


def _problem_content(response: dict[str, Any], status: str, path: str) -> dict[str, Any]:
    """The response's problem+json content: the Problem schema, and the route's examples or the usual one."""
    given = response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {}).get("examples")
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"},
                                "examples": given or named_examples(usual=_usual_problem(status, path))}}


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """Build (once) and return the post-processed document."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            wanted = ["429"]
            if "requestBody" in operation:
                wanted += ["400", "413"]
            if path.startswith("/v1/") and not path.startswith(PUBLIC_PREFIXES):
                wanted += ["401", "403"]
            for status in wanted:
                responses.setdefault(status, {"description": _DEFAULT_DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status[0] in {"4", "5"} and not _plain_json(response):
                    response["content"] = _problem_content(response, status, path)
    app.openapi_schema = document
    return document
