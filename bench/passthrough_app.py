"""Baseline (b) of the exchange benchmark: a bare FastAPI pass-through that forwards the request to the same
partner — no auth, no policy, no pseudonyms, no audit. Run: uvicorn bench.passthrough_app:app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request

PARTNER = os.environ.get("PASSTHROUGH_PARTNER_URL", "http://127.0.0.1:9103")
TOKEN = os.environ.get("PASSTHROUGH_PARTNER_TOKEN", "")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.http = httpx.AsyncClient(base_url=PARTNER, timeout=10,
                                       limits=httpx.Limits(max_connections=128))
    yield
    await app.state.http.aclose()


app = FastAPI(lifespan=lifespan)


@app.post("/forward")
async def forward(request: Request) -> Any:
    response = await request.app.state.http.post("/holder/v1/query", content=await request.body(),
                                                 headers={"Authorization": f"Bearer {TOKEN}",
                                                          "Content-Type": "application/json"})
    return response.json()
