"""Everything under ``/console`` answers as the console, also when no console route did.

:class:`~gateway.console.pages.ConsoleRoute` makes a console handler's errors pages and sets the security
headers — but only for a request that reached a console route. An unknown path under ``/console``, a wrong
method (``GET /console/logout``), a database outage, a bug, and the refusals of the middleware (413 body too
large, 429 rate limit) were answered by the JSON API's machinery: problem+json without the console's
Content-Security-Policy, ``frame-ancestors``, ``nosniff``, ``Referrer-Policy`` and ``no-store``. Two pieces
close that, installed by :func:`install_console_boundary`:

* each exception handler of the app (:mod:`gateway.problems`) is wrapped: under ``/console`` its answer —
  status, and the ``Allow`` or ``Retry-After`` it sets — becomes the console's HTML error page in the
  person's language; elsewhere the API's problem+json is unchanged. The API's handler still runs first, so
  the refusal is logged as before (and a bug as ``unexpected_error``);
* :class:`ConsoleHeaders` adds the security headers to any answer under ``/console`` that lacks them, and
  turns the middleware's own refusals (413 body too large, 429 rate limit: problem+json, answered before any
  handler ran) into the console's error page too, keeping their status and ``Retry-After``: a person whose
  form was refused sees a page in their language, not a JSON document.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console.pages import SECURITY_HEADERS, error_page, secure
from gateway.problems import PROBLEM_MEDIA_TYPE

log = structlog.get_logger("gateway.console.boundary")

PREFIX = "/console"
_KEPT = ("allow", "retry-after")  # what an error's answer says that the console's page must say too

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def in_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ConsoleHeaders:
    """Pure ASGI: the console's security headers on every answer under ``/console`` that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not in_console(scope["path"]):
            await self.app(scope, receive, send)
            return

        held: Message | None = None  # a problem document's start, waiting for its body to be replaced
        body = bytearray()

        async def send_secured(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await _as_page(scope, receive, send, held, bytes(body))
                return
            await send(message)

        await self.app(scope, receive, send_secured)


def _page_for(request: Request, status: int, refused_with: Mapping[str, str]) -> Response | None:
    """The console's error page for a refusal with ``status``, keeping the ``Allow`` or ``Retry-After`` the
    refusal's headers said; None (logged) if no page can be made, and the caller sends the refusal itself."""
    try:
        page = error_page(request, status)
    except Exception as failure:
        log.error("console_error_page_failed", error_type=type(failure).__name__)
        return None
    for name in _KEPT:
        if name in refused_with:
            page.headers[name] = refused_with[name]
    return page


async def _as_page(scope: Scope, receive: Receive, send: Send, start: Message, body: bytes) -> None:
    """The console's error page for a problem document the middleware answered under ``/console``; if no page
    can be made, the document as it was (with the security headers it has by now)."""
    page = _page_for(Request(scope, receive), start["status"], MutableHeaders(scope=start))
    if page is None:
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    await page(scope, receive, send)


def as_console_page(api_handler: Handler) -> Handler:
    """``api_handler``, whose answer becomes the console's error page under ``/console``."""

    async def handler(request: Request, exc: Any) -> Response:
        answer = api_handler(request, exc)
        if inspect.isawaitable(answer):
            answer = await answer
        if not in_console(request.url.path):
            return answer
        # The page cannot be made: the API's answer, secured all the same.
        return _page_for(request, answer.status_code, answer.headers) or secure(answer)

    return handler


def install_console_boundary(app: FastAPI) -> None:
    """Wrap the app's exception handlers (install them first) and add :class:`ConsoleHeaders`; add it after
    the middleware whose refusals it is to secure, so that it runs outside them."""
    for key, api_handler in list(app.exception_handlers.items()):
        app.add_exception_handler(key, as_console_page(api_handler))
    app.add_middleware(ConsoleHeaders)
