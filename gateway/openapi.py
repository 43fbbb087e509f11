"""The OpenAPI document as the gateway really answers: every error is RFC 9457 problem+json.

FastAPI documents its own validation error (``HTTPValidationError``, ``application/json``) and only the
statuses a route lists. The gateway answers every error through ``gateway.problems``, so the document is
post-processed once: each 4xx/5xx response is described as ``application/problem+json`` with the
``Problem`` schema; every operation with a body documents 400 (unparsable body) and 413 (too large); every
protected route documents 401 and 403.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.problems import PROBLEM_MEDIA_TYPE

PUBLIC_PREFIXES = ("/health", "/.well-known/", "/oauth/", "/v1/auth/login")
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. Never contains personal data.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
_DEFAULT_DESCRIPTIONS = {
    "400": "The body is not valid JSON", "401": "Missing, expired or forged access token",
    "403": "The token lacks the scope or role", "413": "Body too large", "429": "Too many requests",
}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


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
                if status[0] in {"4", "5"}:
                    response["content"] = _problem_content()
    app.openapi_schema = document
    return document
