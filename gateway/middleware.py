"""ASGI middleware: request id + W3C trace context, caching and sniffing defaults, access log, a hard
request-body limit, JSON bodies that every reader reads alike, and HEAD wherever GET is answered.

Pure ASGI (not BaseHTTPMiddleware) so it adds little latency on the exchange hot path.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import structlog
from fastapi.routing import iter_route_contexts
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.logs import parse_traceparent
from gateway.logging import scrub_text
from gateway.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DEFAULT_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
"""Added to every answer that does not set the header itself. Why: the API answers personal data (an
exchange's records, audit entries, a legal-gap export) and nothing told a cache not to keep it; without
``Cache-Control`` a browser's cache (behind the documentation's *try it out*), an HTTP cache in a partner's
client library or a proxy may store a 200 and hand it out later (RFC 9111 §4.2.2, heuristic freshness).
``nosniff``: a CSV or JSON answer holding text people typed is never to be read as a page. An answer meant to
be cached says so itself (the JWKS, the console's static files) and keeps what it says."""

UNMATCHED = "<unmatched>"
"""The access log's ``route`` for a request no route took: a 404, or a refusal before routing (413, 429, 400)."""
ASKED_METHOD = "asked_method"
"""Where in the request's state :class:`HeadMiddleware` keeps the method asked (``HEAD``) while the app answers
it as ``GET``: the access log names the method the caller sent."""

log = structlog.get_logger("gateway.access")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RouteTemplates:
    """The full template of the route that took a request (``/console/escalations/{case_id}``), None if none did.

    Why the template and not the path: a path is the caller's text. A name can stand in it (a 404 for
    ``/v1/subjects/Jan de Vries``, or a path parameter of a real route), and the log's mask knows identifiers'
    shapes, not names; the template is the app's own text. The router records the route it picked in the scope,
    a 405's too (the route whose method was wrong), as its own router declared it: a route of a router included
    in another (the console's escalation pages) lacks the outer prefix there. So the full template is looked up
    among the app's routes, read once, and read again only for a route not seen before."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[object, str]] = {}

    def of(self, scope: Scope) -> str | None:
        route = scope.get("route")
        if route is None:
            return None
        known = self._known.get(id(route))
        if known is None or known[0] is not route:
            self._known = _full_templates(scope.get("app"))
            known = self._known.get(id(route))
            if known is None or known[0] is not route:  # not among the app's routes: its own template, if any
                own = getattr(route, "path", None)
                if not isinstance(own, str):
                    return None
                known = self._known[id(route)] = (route, own)
        return known[1]


def _full_templates(app: Any) -> dict[int, tuple[object, str]]:
    """Each route of ``app`` (by identity: routes compare by value) with its full template."""
    found: dict[int, tuple[object, str]] = {}
    for context in iter_route_contexts(getattr(app, "routes", [])):
        if isinstance(context.path, str):
            found[id(context.original_route)] = (context.original_route, context.path)
    return found


def _callers_request_id(sent: str | None) -> str | None:
    """The caller's ``X-Request-ID`` if the gateway may take it as the request's id, else None.

    Why: the id is echoed in the answer's header and written unscrubbed into every log line of the request
    (the personal-data scrubber leaves ``request_id`` alone), so the caller chooses part of the gateway's
    logs. Taken are only up to 64 of ``[A-Za-z0-9._-]`` and nothing more (``fullmatch``: a ``$`` let a final
    line break through), and nothing the scrubber would mask (a BSN, an IBAN): an id is no channel for a
    person's identifier into the logs. Another caller's id can be sent too; the gateway's own ``span_id``
    on each line tells two requests under one id apart."""
    if sent is None or not _REQUEST_ID.fullmatch(sent) or scrub_text(sent) != sent:
        return None
    return sent


class RequestContextMiddleware:
    """Bind request id, trace id and span id to the log context; echo them in response headers, with the
    ``_DEFAULT_HEADERS`` an answer does not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # one read of the system's randomness for the three ids (each read is a system call that lets go of the
        # interpreter lock, which the audit writer's thread then often takes: a hand-over per read)
        fresh = secrets.token_hex(32)
        request_id = _callers_request_id(_header(scope, b"x-request-id")) or fresh[:16]
        parent = parse_traceparent(_header(scope, b"traceparent"))
        trace_id = parent[0] if parent else fresh[16:48]
        span_id = fresh[48:]
        scope.setdefault("state", {})
        scope["state"].update(request_id=request_id, trace_id=trace_id, span_id=span_id,
                              parent_span_id=parent[1] if parent else None)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id, span_id=span_id)
        if parent is not None:
            # The caller's trace id is the caller's choice: holders get a trace of the gateway's own (a
            # requester must not be able to hand holders a value of its choosing, nor let them link its
            # requests). Both ids are on this request's gateway lines, which is where they are joined.
            structlog.contextvars.bind_contextvars(holder_trace_id=secrets.token_hex(16))
        started = time.perf_counter()
        status_holder: dict[str, int] = {}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in _DEFAULT_HEADERS if header[0] not in present)
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"traceparent", f"00-{trace_id}-{span_id}-01".encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info("request", method=scope["state"].get(ASKED_METHOD, scope["method"]), **self._where(scope),
                     status=status_holder.get("status", 500),
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            structlog.contextvars.clear_contextvars()

    def _where(self, scope: Scope) -> dict[str, Any]:
        """The access log's fields for what was asked: the route's template (:class:`RouteTemplates`), or for a
        request no route took a fixed placeholder and the path's length (a 30,000-letter path is worth seeing,
        its letters are not)."""
        template = self.templates.of(scope)
        if template is not None:
            return {"route": template}
        return {"route": UNMATCHED, "path_length": len(scope["path"])}


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it through unchanged."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body exceeds {max_bytes} bytes.")


class BodySizeLimitMiddleware:
    """Refuse request bodies above ``max_bytes`` with 413 problem+json, before any handler runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        log.info("request_rejected", status=413, problem="payload-too-large")
        await _send_problem(send, 413, "payload-too-large", "Payload too large",
                            f"Request body exceeds {self.max_bytes} bytes.")


async def _send_problem(send: Send, status: int, slug: str, title: str, detail: str, **extra: str) -> None:
    """Answer with a problem document from middleware, where no route and no exception handler runs."""
    payload = json.dumps({"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
                         | extra).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class _RepeatedName(ValueError):
    """A JSON object names a member twice."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _RepeatedName
    return members


def _ambiguity(body: bytes) -> str | None:
    """Why two JSON readers could read ``body`` differently, or None. A body that is no JSON at all is left to
    the route (FastAPI's 400/422, as before); a UTF-8 byte order mark is ignored, as RFC 8259 §8.1 allows."""
    try:
        json.loads(body.decode("utf-8-sig"), object_pairs_hook=_unique_members)
        return None
    except _RepeatedName:
        return "A JSON object in the body names a member more than once (RFC 7493 section 2.3)."
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        pass
    try:
        json.loads(body)  # what the route's reader does: it guesses UTF-16 and UTF-32 from the bytes
    except (ValueError, RecursionError):
        return None
    return "JSON request bodies must be encoded in UTF-8 (RFC 8259 section 8.1)."


def _is_json(scope: Scope) -> bool:
    media_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class StrictJsonMiddleware:
    """Refuse, with 400 problem+json, a JSON request body that two JSON readers could read differently.

    Why: Python's reader keeps the last of two members of one name and guesses UTF-16 or UTF-32 from the bytes;
    a proxy, a filter or a log on the way in may keep the first, or read the bytes as UTF-8 (RFC 8259 §8.1:
    JSON between systems is UTF-8). Such a body lets a request past whatever inspects it while the gateway acts
    on, and writes to its audit log, something else — the reason the token endpoint refuses a repeated form
    parameter. I-JSON (RFC 7493 §2.3) forbids repeated names. The body is read here once more than the route
    reads it (a request's JSON is small; the body limit, outside this, bounds it) and handed on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        reason = _ambiguity(body)
        if reason is not None:
            log.info("request_rejected", status=400, problem="bad-request", reason=reason)
            await _send_problem(send, 400, "bad-request", "Bad request", reason, instance=scrub_text(scope["path"]))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class HeadMiddleware:
    """Answer ``HEAD`` wherever ``GET`` is answered: the same status and headers, no body (RFC 9110 §9.3.2).

    FastAPI's routes take only the methods they name, so every GET route answered HEAD with 405. Here a HEAD is
    handed to the app as the GET it asks about, and the body of the answer is dropped on its way out; so it
    meets everything a GET meets, in the same order — the rate limit, authentication, the scope and role
    checks, the 404 that hides an object, the console's own-page check — and its ``Content-Length`` is the
    GET's. A route's handler is asked the GET: a HEAD writes exactly what its GET writes, no more and no less.
    That is meant where a GET writes to the audit log (an export, a data-subject look-up, anomaly flags, a
    checkpoint signed on demand): a HEAD's headers are made from the whole answer (its length says roughly how
    many rows or disclosures there are), so it is recorded as the GET is, and a HEAD is no way to learn that
    much unrecorded.

    Outermost, so that nothing an inner layer sends (the console's error page, a middleware's refusal) keeps
    its body; a bug's 500, which Starlette answers outside every middleware, is left to the server, which sends
    no body for a HEAD either. A 405's ``Allow`` that names GET names HEAD too, whatever method was asked."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def allowing_head(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                _allow_head(message)
            await send(message)

        if scope["method"] != "HEAD":
            await self.app(scope, receive, allowing_head)
            return
        as_get = {**scope, "method": "GET", "state": {**scope.get("state", {}), ASKED_METHOD: "HEAD"}}

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await allowing_head(message)

        await self.app(as_get, receive, headers_only)


def _allow_head(start: Message) -> None:
    headers = MutableHeaders(scope=start)
    allowed = [method.strip() for method in headers.get("allow", "").split(",") if method.strip()]
    if "GET" in allowed and "HEAD" not in allowed:
        headers["allow"] = ", ".join([*allowed, "HEAD"])
