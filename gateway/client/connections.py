"""Telling a kept-alive connection the gateway had closed from a request that failed, by what httpcore reports
of one request's progress (httpx's ``trace`` request extension).

Why it matters: HTTP/1.1 keeps connections open between requests, and a server closes one it finds idle (a
keep-alive timeout, a restart) whenever it likes. The client checks a pooled connection before using it, but
a close on its way over the network is not seen yet: the request goes out on a connection whose other end is
gone, and fails with the connection closed or reset before any byte of an answer — the race RFC 9112 section
9.3.1 describes. A request without an ``Idempotency-Key`` (a discovery) must not be repeated after a failure
that may have reached the gateway's handlers; one sent on a connection the server had already let go of did
not, and should not end the call as "no answer from the gateway".

What counts, all of it: the request was sent on a connection an earlier request opened (no connect during
this one), no byte of an answer came (the response headers were never read), and the failure is the
connection closed (``RemoteProtocolError``: "Server disconnected without sending a response") or reset
(``ReadError``/``WriteError``). A timeout is none of these (the server may be working on it), nor is any
failure on a connection opened for this very request.

What it cannot tell: a gateway that read the request and died before answering closes the connection the
same way. The client repeats such a request once per call only, so at worst a discovery is logged twice.
"""

from __future__ import annotations

from typing import Any

import httpx

_CLOSED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class RequestProgress:
    """The ``trace`` extension of one HTTP request: notes whether it opened a connection of its own and whether
    an answer's headers came. Called by httpcore with each event's name (``connection.connect_tcp.started``,
    ``http11.receive_response_headers.complete``, ...); a transport that does not trace leaves it unset, and
    then no failure is taken for a closed kept-alive connection."""

    def __init__(self) -> None:
        self.sent = False  # the request began to go out on a connection
        self.connected = False  # a connection was opened for this request
        self.answered = False  # the headers of an answer were read

    async def __call__(self, event: str, _info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_"):  # connect_tcp / connect_unix_socket, also when failing
            self.connected = True
        elif event.endswith(".send_request_headers.started"):
            self.sent = True
        elif event.endswith(".receive_response_headers.complete"):
            self.answered = True

    def closed_before_answering(self, failure: httpx.TransportError) -> bool:
        """``failure`` is a kept-alive connection closed by the server before the request reached it (see the
        module's docstring for what that is taken from)."""
        return self.sent and not self.connected and not self.answered and isinstance(failure, _CLOSED)
