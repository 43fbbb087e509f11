"""Real HTTP servers for tests: an ASGI app served by uvicorn on a free loopback port in a thread, and a proxy
in front of one that closes kept-alive connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

STAND_IN_TOKEN = {"access_token": "T", "token_type": "Bearer", "expires_in": 300}
"""What a stand-in gateway's token endpoint answers: a token the client sends back unread."""


def stand_in_gateway() -> FastAPI:
    """A stand-in for the gateway's token side, for tests of ``gateway.client`` that do not need a real one:
    the authorisation server metadata naming its own token endpoint. A test adds the token endpoint (most
    answer :data:`STAND_IN_TOKEN`) and the API routes it plays."""
    app = FastAPI()

    @app.get("/.well-known/oauth-authorization-server")
    async def metadata(request: Request) -> dict[str, str]:
        return {"issuer": str(request.base_url).rstrip("/"), "token_endpoint": f"{request.base_url}oauth/token"}

    return app


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1", **config: Any) -> Iterator[str]:
    """Serve ``app`` on ``host`` (a loopback address, IPv4 or IPv6; free port); yields its base URL; stops it
    afterwards. ``config`` goes to uvicorn (e.g. ``ssl_certfile``/``ssl_keyfile``: then the URL is https)."""
    ipv6 = ":" in host
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    scheme = "https" if config.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://[{host}]:{port}" if ipv6 else f"{scheme}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class KeepAliveCloser:
    """A TCP proxy in front of a test server (``upstream``: its base URL) that closes kept-alive connections
    the way a server closing idle ones does at the worst moment: the next ``closing`` requests that arrive on a
    connection after an answer on it are not forwarded — each one's connection is closed instead, as if the
    server's keep-alive timeout fired just as the request went out (with ``reset``: closed with a TCP reset,
    not a FIN). So the server behind it never sees such a request. ``unanswered`` numbers connections (from 1,
    in the order they are made) whose first answer is not passed on either: the connection is closed once
    the server answered — a server that read the request and died. Counts what it did."""

    upstream: str
    closing: int = 0
    reset: bool = False
    unanswered: set[int] = field(default_factory=set)
    connections: int = 0
    closed_unforwarded: int = 0  # requests that met a closed connection (never forwarded)
    closed_unanswered: int = 0  # requests forwarded whose answer was not passed on
    _open: list[asyncio.StreamWriter] = field(default_factory=list)
    _running: set[asyncio.Task[None]] = field(default_factory=set)

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        url = httpx.URL(self.upstream)
        server_in, server_out = await asyncio.open_connection(url.host, url.port)
        self._open += [client_out, server_out]
        answered = False

        def close() -> None:
            if self.reset:  # SO_LINGER 0: close() sends a reset
                client_out.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
            client_out.close()
            server_out.close()

        async def requests() -> None:
            while data := await client_in.read(65536):
                if answered and self.closing > 0:
                    self.closing -= 1
                    self.closed_unforwarded += 1
                    close()
                    return
                server_out.write(data)
            server_out.close()

        async def answers() -> None:
            nonlocal answered
            while data := await server_in.read(65536):
                if number in self.unanswered:
                    self.closed_unanswered += 1
                    close()
                    return
                answered = True
                client_out.write(data)
            client_out.close()

        await asyncio.gather(requests(), answers(), return_exceptions=True)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Run the proxy on a free loopback port in the running event loop; yields its base URL."""
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:  # every connection closed, so that each one's task ends by itself before the loop does
            server.close()
            for stream in self._open:
                stream.close()
            await asyncio.gather(*self._running, return_exceptions=True)
            await server.wait_closed()
