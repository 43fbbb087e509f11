"""HEAD wherever GET is answered (RFC 9110 §9.3.2), by :class:`gateway.middleware.HeadMiddleware`: the GET's
status and headers without its body, and nothing a GET meets left out — authentication, scopes, the 404 that
hides an object, and the audit entry a GET writes (a HEAD's ``Content-Length`` tells how much there is).

The authorisation matrix (``test_authorisation_matrix.py``) sends a HEAD for every GET route and caller; the
rate limit's test is in ``test_rate_limits.py``, the console's own-page rule in ``tests/console``."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audit.tables import audit_entries
from gateway.app import create_app
from gateway.middleware import HeadMiddleware
from gateway.settings import Settings
from tests.migrated import migrated_sqlite
from tests.security.world import (
    ANONYMOUS,
    CONTACT,
    PO_OTHER,
    PO_OWN,
    SUBJECT,
    SYS,
    SYS_NO_SCOPE,
    World,
    running_world,
)
from tests.servers import serve_app


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("head")) as running:
        yield running


_SAME = ("content-type", "content-length", "cache-control", "x-content-type-options")


def test_a_head_of_a_public_get_has_its_status_and_headers_and_no_body(world: World) -> None:
    for path in ("/health/live", "/.well-known/jwks.json", "/console/static/console.css"):
        got, head = world.client.get(path), world.client.head(path)
        assert (got.status_code, head.status_code) == (200, 200), path
        assert head.content == b""
        assert int(head.headers["content-length"]) == len(got.content) > 0, path  # the GET's length, not 0
        assert {name: head.headers.get(name) for name in _SAME} == {name: got.headers.get(name) for name in _SAME}


def test_a_head_of_an_authenticated_get_is_answered_as_the_get(world: World) -> None:
    exchange = f"/v1/exchanges/{world.ids['exchange']}"
    for path, scopes in (("/v1/register", ("register:read",)), (exchange, ("exchange",))):
        headers = world.headers_for(SYS, scopes)
        got, head = world.client.get(path, headers=headers), world.client.head(path, headers=headers)
        assert (got.status_code, head.status_code) == (200, 200), path
        assert head.content == b""
        assert head.headers["content-length"] == str(len(got.content))
        assert head.headers["cache-control"] == "no-store"  # personal data: no cache keeps even the headers' answer


def test_a_head_without_a_token_or_without_the_scope_is_refused_as_the_get(world: World) -> None:
    """Negative: HEAD is no way around authentication, the route's scope or the hiding of another's object."""
    exchange = f"/v1/exchanges/{world.ids['exchange']}"
    cases = ((ANONYMOUS, "/v1/register", ("register:read",), 401),
             (SYS_NO_SCOPE, "/v1/register", ("register:read",), 403),
             (SYS_NO_SCOPE, exchange, ("exchange",), 403),
             (PO_OTHER, exchange, (), 404),  # another organisation's exchange: hidden, as from the GET
             (PO_OWN, "/v1/audit/subjects/" + SUBJECT + "/disclosures", (), 403))  # the contact point's only
    for caller, path, scopes, status in cases:
        headers = world.headers_for(caller, scopes)
        got, head = world.client.get(path, headers=headers), world.client.head(path, headers=headers)
        assert (got.status_code, head.status_code) == (status, status), (caller, path)
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"] == "application/problem+json"
        assert head.headers.get("www-authenticate") == got.headers.get("www-authenticate")
    assert world.client.head("/v1/register").headers["www-authenticate"].startswith("Bearer")


def test_where_no_get_is_answered_a_head_is_refused_as_the_get_is(world: World) -> None:
    """A HEAD of a POST-only route is 405 naming POST, of an unknown path 404, without a body; a 405 of a GET
    route names HEAD beside GET in ``Allow`` now (RFC 9110 §10.2.1: what the resource supports)."""
    for path in ("/v1/exchanges", "/oauth/token", "/console/logout"):
        head = world.client.head(path, headers=world.headers_for(SYS, ("exchange",)))
        assert (head.status_code, head.headers["allow"], head.content) == (405, "POST", b""), path
    for path in ("/v1/nothing-here", "/console/nothing-here", "/v1/register/"):
        got, head = world.client.get(path), world.client.head(path)
        assert (got.status_code, head.status_code) == (404, 404), path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    for path in ("/health/live", "/v1/register", "/console/register"):
        refused = world.client.post(path, headers=world.headers_for(SYS, ("register:read",)))
        assert refused.status_code == 405, path
        assert sorted(method.strip() for method in refused.headers["allow"].split(",")) == ["GET", "HEAD"], path


def _audit_size(world: World) -> int:
    with world.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _last_action(world: World) -> dict[str, Any]:
    with world.container.engine.connect() as connection:
        row = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index.desc())
                                 .limit(1)).scalar_one()
    entry: dict[str, Any] = json.loads(row)
    return entry


def test_a_head_of_a_get_that_is_audited_is_audited_as_the_get(world: World) -> None:
    """The contact point's look-up by pseudonym and the statistics' CSV export write an entry as they answer: a
    HEAD's ``Content-Length`` tells how many disclosures or rows there are, so it is recorded as its GET is,
    never less; a refused HEAD writes nothing, as a refused GET does."""
    lookup = "/v1/audit/subjects/" + SUBJECT + "/disclosures"
    for caller, path, params, action in ((CONTACT, lookup, None, "subject-lookup"),
                                         (PO_OWN, "/v1/audit/statistics", {"format": "csv"}, "export")):
        headers = world.headers_for(caller)
        for method in ("GET", "HEAD"):
            before = _audit_size(world)
            answer = world.client.request(method, path, params=params, headers=headers)
            assert answer.status_code == 200, (method, path, answer.text[:200])
            assert _audit_size(world) == before + 1, (method, path)
            assert action in json.dumps(_last_action(world)), (method, path)
    for caller, path in ((PO_OWN, lookup), (SYS, "/v1/audit/statistics")):
        before = _audit_size(world)
        assert world.client.head(path, params={"format": "csv"}, headers=world.headers_for(caller)).status_code == 403
        assert _audit_size(world) == before


def test_the_access_log_names_the_method_asked(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    world.client.head("/health/live")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"gateway.access"' in line]
    assert [(line["method"], line["route"], line["status"]) for line in lines] == [("HEAD", "/health/live", 200)]


async def test_no_body_goes_out_for_a_head_whatever_the_app_sends() -> None:
    """The middleware on its own: an answer streamed in parts (a CSV, the console's error page sent by an
    inner layer) loses every part, keeps its headers, and ends once; the app is asked the GET."""
    asked: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        asked.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})
        await send({"type": "http.response.body", "body": b"def", "more_body": False})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    for method in ("HEAD", "GET"):
        sent.clear()
        await HeadMiddleware(app)({"type": "http", "method": method, "path": "/", "headers": []}, receive, send)
        bodies = [message.get("body") for message in sent if message["type"] == "http.response.body"]
        assert sent[0] == {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"6")]}
        assert bodies == ([b""] if method == "HEAD" else [b"abc", b"def"])
        assert sent[-1].get("more_body", False) is False
    assert asked == ["GET", "GET"]


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_over_uvicorn_a_head_leaves_the_connection_fit_for_the_next_request(tmp_path: Path, http: str) -> None:
    """The server's framing: a HEAD's answer carries the GET's ``Content-Length`` and no body bytes, so the
    next answer on the same keep-alive connection is read whole (a stray body would be read as its start)."""
    app = create_app(Settings(data_dir=tmp_path, database_url=migrated_sqlite(tmp_path)))
    with serve_app(app, http=http) as url, httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(2):
            head = client.head("/health/live")
            assert (head.status_code, head.headers["content-length"], head.content) == (200, "15", b"")
            got = client.get("/health/live")
            assert got.json() == {"status": "ok"}
        assert client.head("/v1/register").status_code == 401
        assert client.get("/health/live").json() == {"status": "ok"}
