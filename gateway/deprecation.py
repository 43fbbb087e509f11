"""Deprecated forms of the API say so in their answers, not only in the OpenAPI document.

Why at runtime too: an integration written once is rarely regenerated from the document, but its HTTP
library, an API gateway or a log search sees every answer. A deprecated form answers with

* ``Deprecation`` (RFC 9745): the moment it was deprecated, as a structured-field date (``@`` and Unix
  seconds). RFC 9745 replaced the drafts' ``Deprecation: true``, which its parsers reject as no date;
* ``Link`` (RFC 8288) with ``rel="successor-version"`` (RFC 5829): the route that replaces it, below the
  gateway's root path when a proxy mounts it under one.

No ``Sunset`` (RFC 8594): a deprecated form here has no removal date until a release sets one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request, Response


def announce(request: Request, response: Response, since: datetime, successor: str) -> None:
    """Mark ``response`` as the answer of a form deprecated at ``since``, replaced by the route ``successor``
    (a path from the API's root, e.g. ``/v1/audit/entries/search``)."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    response.headers["Deprecation"] = f"@{int(since.timestamp())}"
    response.headers["Link"] = f'<{root}{successor}>; rel="successor-version"'


def documented_headers(successor: str, when: str) -> dict[str, Any]:
    """The OpenAPI ``headers`` of an answer that carries :func:`announce`'s headers ``when`` (a phrase)."""
    return {
        "Deprecation": {"description": f"{when}: the moment this form was deprecated (RFC 9745: `@` and Unix "
                                       "seconds).", "schema": {"type": "string", "example": "@1796428800"}},
        "Link": {"description": f'{when}: its successor, `<{successor}>; rel="successor-version"` (RFC 8288, '
                                "RFC 5829).",
                 "schema": {"type": "string", "example": f'<{successor}>; rel="successor-version"'}},
    }
