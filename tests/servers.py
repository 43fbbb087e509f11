"""Real HTTP servers for tests: an ASGI app served by uvicorn on a free loopback port in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
        return {"token_endpoint": f"{request.base_url}oauth/token"}

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
