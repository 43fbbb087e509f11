"""The fuzzing harness (``tests/security/fuzzing.py``) itself: an operation that schemathesis cannot make a call
from (here: a path whose description is a reference to nothing) is a failure in the report, under its path,
and the other operations are still fuzzed. Found by type-checking the tests: the harness took every operation
schemathesis yields as readable and stopped the whole run with an ``AttributeError`` at such a one."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from gateway.clock import FixedClock
from gateway.container import build_container
from gateway.settings import Settings
from tests.migrated import migrated_sqlite
from tests.security.fuzzing import Live, fuzz
from tests.security.world import NOW
from tests.servers import serve_app

DOCUMENT = {"openapi": "3.0.3", "info": {"title": "two operations, one unreadable", "version": "1"}, "paths": {
    "/readable": {"get": {"responses": {"200": {"description": "ok", "content": {"text/plain": {}}}}}},
    "/unreadable": {"$ref": "#/components/pathItems/Missing"}}}


async def _document(_: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)


async def _readable(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def test_an_operation_that_cannot_be_read_is_reported_and_the_others_are_fuzzed(tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/openapi.json", _document), Route("/readable", _readable)])
    container = build_container(Settings(data_dir=tmp_path, database_url=migrated_sqlite(tmp_path)), FixedClock(NOW))
    try:
        with serve_app(app) as url:
            report = fuzz(Live(url, container, {}, {}), max_examples=2, negative_examples=0)
    finally:
        container.close()
    assert list(report.failures) == ["/unreadable [schema]"]
    assert report.failures["/unreadable [schema]"].startswith("InvalidSchema: ")
    assert report.cases["GET /readable [positive]"] >= 1
    assert report.statuses == {200: report.total}
