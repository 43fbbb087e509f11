"""Baseline (b) of the exchange benchmark: a bare FastAPI pass-through that forwards the request to the same
partner — no auth, no policy, no pseudonyms, no audit. Run: uvicorn bench.passthrough_app:app.

It forwards with the same HTTP client library and pool settings as the gateway's holder connector
(aiohttp, ``connectors.http_connector``), so that the comparison measures the gateway's own work.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request, Response

PARTNER = os.environ.get("PASSTHROUGH_PARTNER_URL", "http://127.0.0.1:9103")
TOKEN = os.environ.get("PASSTHROUGH_PARTNER_TOKEN", "")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=128, keepalive_timeout=4.0)
    async with aiohttp.ClientSession(PARTNER, connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        app.state.http = http
        gc.collect()
        gc.freeze()  # as the gateway and the partner simulator do: no full collection rescans start-up objects
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/forward")
async def forward(request: Request) -> Response:
    async with request.app.state.http.post("/holder/v1/query", data=await request.body(),
                                           headers={"Authorization": f"Bearer {TOKEN}",
                                                    "Content-Type": "application/json"}) as answer:
        return Response(await answer.read(), status_code=answer.status, media_type="application/json")
