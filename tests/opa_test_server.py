"""A small OPA-REST-compatible server backed by the embedded engine, to test the OPA-server client path
over real HTTP (the protocol is what is under test; the rules are the same Rego files).

Implements what ``opa-python-client`` uses: ``GET /health``, ``GET /v1/policies``, ``PUT /v1/data/{path}``
(204) and ``POST /v1/data/{path}`` with ``{"input": ...}`` → ``{"result": ...}`` (no ``result`` member when
the rule is undefined, as OPA does). Switches simulate a slow server, a malformed decision, a server that
rearranges a batch's decisions (``rearrange_batches``: reordered or duplicated, of the right length) and
another gateway that pushes its own register over every one pushed here (``rival_register``);
``register_pushes`` counts the register pushes received.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from gateway.policy.engine import policy_files


@dataclass
class Behaviour:
    delay_seconds: float = 0.0
    malformed: bool = False
    rival_register: dict[str, Any] | None = None  # pushed over every register push, as by another gateway
    rearrange_batches: Callable[[list[Any]], list[Any]] | None = None  # applied to every `decisions` answer
    register_pushes: int = 0


def create_opa_test_app(policies_dir: Path, behaviour: Behaviour | None = None) -> FastAPI:
    app = FastAPI()
    behaviour = behaviour or Behaviour()
    sources = [(str(p), p.read_text()) for p in policy_files(policies_dir)]
    data: dict[str, Any] = {}
    generation = [0]  # bumped on every push: an evaluator is rebuilt for data it has not loaded
    lock = threading.Lock()
    local = threading.local()

    def evaluate(path: str, input_document: Any) -> Any:
        engine = getattr(local, "engine", None)
        if engine is None or getattr(local, "data_version", None) != generation[0]:
            engine = regorus.Engine()
            for name, text in sources:
                engine.add_policy(name, text)
            with lock:
                engine.add_data_json(json.dumps(data))
                loaded = generation[0]
            local.engine, local.data_version = engine, loaded
        engine.set_input_json(json.dumps(input_document))
        return engine.eval_rule("data." + path.replace("/", "."))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {}

    @app.get("/v1/policies")
    async def policies() -> dict[str, Any]:
        return {"result": [{"id": name} for name, _ in sources]}

    @app.put("/v1/data/{path:path}")
    async def put_data(path: str, request: Request) -> Response:
        document = await request.json()
        with lock:
            if path.split("/")[0] == "register":
                behaviour.register_pushes += 1
                if behaviour.rival_register is not None:
                    document = behaviour.rival_register
            data[path.split("/")[0]] = document
            generation[0] += 1
        return Response(status_code=204)

    @app.post("/v1/data/{path:path}")
    async def query(path: str, request: Request) -> JSONResponse:
        body = await request.json()
        if behaviour.delay_seconds:
            await asyncio.sleep(behaviour.delay_seconds)
        result = await asyncio.to_thread(evaluate, path, body.get("input"))
        if behaviour.malformed:
            return JSONResponse({"result": {"allow": "yes please"}})
        if behaviour.rearrange_batches is not None and path.endswith("/decisions") and isinstance(result, list):
            result = behaviour.rearrange_batches(result)
        return JSONResponse({} if result is None else {"result": result})

    return app
