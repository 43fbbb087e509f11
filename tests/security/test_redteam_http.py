"""Red-team probes of the HTTP surface that the injection, fuzzing and matrix tests do not make: what the
gateway's answers tell caches and browsers, and bodies that two JSON parsers would read differently.

Each test here is an attack that got through before its fix (the attacks the gateway held are listed in
docs/security.md, not repeated here)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audit.tables import audit_entries
from connectors.world import build_world
from gateway.middleware import UNMATCHED
from tests.auth_helpers import bearer
from tests.security.world import (
    ADMIN,
    BIBOB_REQUEST,
    CONTACT,
    PO_OWN,
    SUBJECT,
    SYS,
    SYSTEM,
    SYSTEM_SCOPES,
    World,
    all_routes,
    running_world,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("redteam-http")) as running:
        yield running


def _answers_with_data(world: World) -> dict[str, httpx.Response]:
    """Answers that carry personal data or what the audit log says about it, to a partner system or a person."""
    system, officer = bearer(world.system_token(SYSTEM)), bearer(world.person_token(PO_OWN))
    client = world.client
    return {
        "exchange result": client.post("/v1/exchanges", json=BIBOB_REQUEST, headers=system),
        "exchange read back": client.get(f"/v1/exchanges/{world.ids['exchange']}", headers=system),
        "audit entries": client.get("/v1/audit/entries", headers=officer),
        "escalation case": client.get(f"/v1/escalations/{world.ids['case']}", headers=officer),
        "legal-gap export": client.get("/v1/legal-gaps/export", headers=officer),
        "refusal": client.get("/v1/exchanges/not-an-id", headers=system),
    }


def test_answers_with_data_tell_every_cache_not_to_store_them(world: World) -> None:
    """Attack: read an exchange's records (or an audit page) back out of a cache after the partner system or
    the officer is done: a browser's cache behind the API documentation's *try it out*, an HTTP cache in a
    partner's client library, a forward proxy that ignores ``Authorization``. Without ``Cache-Control`` a
    private cache may keep the answer (RFC 9111 §3, heuristic freshness of a 200); only the token answers said
    ``no-store``."""
    for name, answer in _answers_with_data(world).items():
        assert answer.status_code < 500, (name, answer.text[:200])
        assert answer.headers.get("cache-control") == "no-store", name
        assert answer.headers.get("x-content-type-options") == "nosniff", name


def test_an_answer_that_sets_its_own_caching_keeps_it(world: World) -> None:
    """The published keys are meant to be cached for a minute (holders re-read them after that)."""
    jwks = world.client.get("/.well-known/jwks.json")
    assert jwks.headers["cache-control"].startswith("max-age="), jwks.headers
    static = world.client.get("/console/static/console.css")
    assert static.headers["cache-control"].startswith("public"), static.headers


def _audit_size(world: World) -> int:
    with world.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


_EXCHANGE = json.dumps(BIBOB_REQUEST)
AMBIGUOUS_BODIES = {
    # The last of two members wins in Python's parser; a proxy, a filter or a log that reads the first sees
    # another case reference (or another signal) than the one the gateway decided and wrote down.
    "repeated member": _EXCHANGE[:-1] + ', "case_reference": "RIEC-AA-2026-999"}',
    "repeated nested member": _EXCHANGE.replace('"type": "bibob-application"',
                                                '"type": "bibob-application", "type": "other-signal"'),
    # json.loads guesses UTF-16 and UTF-32 from the bytes; anything on the way that reads JSON as UTF-8 (RFC
    # 8259 §8.1: JSON between systems is UTF-8) sees NUL-ridden text it cannot inspect.
    "UTF-16": _EXCHANGE.encode("utf-16"),
    "UTF-32 without BOM": _EXCHANGE.encode("utf-32-le"),
}


@pytest.mark.parametrize("body", list(AMBIGUOUS_BODIES.values()), ids=list(AMBIGUOUS_BODIES))
def test_a_json_body_two_parsers_would_read_differently_is_refused_and_writes_nothing(
        world: World, body: str | bytes) -> None:
    """Attack: a body that one JSON reader takes one way and another reader another (repeated member names, a
    text encoding other than UTF-8), to get a request past anything that inspects bodies on the way in while
    the gateway acts on something else. RFC 7493 (I-JSON) §2.3 forbids repeated names, RFC 8259 §8.1 asks for
    UTF-8; the token endpoint already refuses a repeated form parameter for the same reason."""
    before = _audit_size(world)
    headers = bearer(world.system_token(SYSTEM)) | {"content-type": "application/json"}
    answer = world.client.post("/v1/exchanges", content=body, headers=headers)
    assert answer.status_code == 400, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert _audit_size(world) == before


def test_a_repeated_username_at_sign_in_is_refused_before_any_password_check(world: World) -> None:
    answer = world.client.post("/v1/auth/login", content=b'{"username": "nobody", "username": "po-gemeente", '
                                                         b'"password": "x"}',
                               headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text


def test_the_same_name_in_different_objects_is_no_repetition(world: World) -> None:
    subjects = [{"ref": SUBJECT}, {"ref": "subj-00000000000000000000000a"}]
    body = json.dumps(BIBOB_REQUEST | {"subjects": subjects}).encode()
    answer = world.client.post("/v1/exchanges", content=body,
                               headers=bearer(world.system_token(SYSTEM)) | {"content-type": "application/json"})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/exchanges/"), ("GET", "/v1/escalations/"),
                                              ("GET", "/console/"), ("GET", "/console/audit/"), ("GET", "/docs/")])
def test_no_answer_sends_the_caller_to_the_host_its_host_header_named(world: World, method: str, path: str) -> None:
    """Attack: a path with a trailing slash was redirected (307) to an absolute URL built from the request's
    ``Host`` header (Starlette's slash redirect), ``http://`` unless a trusted proxy said otherwise: whoever can
    set that header on someone's request (a proxy routing by another header, a shared cache) sends the caller
    elsewhere, and a 307 makes a partner system post the exchange body (subjects, case reference) there again,
    over plain HTTP. No route of the gateway ends in a slash; such a path is a plain 404."""
    answer = world.client.request(method, path, headers=bearer(world.system_token(SYSTEM)) | {
        "Host": "evil.example"}, json=BIBOB_REQUEST if method == "POST" else None, follow_redirects=False)
    assert answer.status_code == 404, (answer.status_code, answer.headers.get("location"))
    assert "location" not in answer.headers


def test_member_names_the_caller_made_up_are_not_echoed_into_errors_or_logs(
        world: World, capfd: pytest.CaptureFixture[str]) -> None:
    """Attack (or a partner system's bug): personal data sent as a member *name* rather than a value —
    ``{"Jan de Vries": ...}``, a BSN or an IBAN as a key. The problem document's ``detail`` masked identifiers,
    but its ``errors`` named the unknown member verbatim, and a name is no identifier the mask knows: it came
    back in the body and went into the ``request_rejected`` log line. Only names shaped like the API's own
    field names are named back."""
    person = build_world(2025).persons[0]
    personal = [person.name, person.bsn, "NL91ABNA0417164300", person.address]
    capfd.readouterr()
    system = bearer(world.system_token(SYSTEM))
    bodies = []
    for value in personal:
        bodies += [
            world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {value: 1}, headers=system),
            world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"signal": {
                "type": "bibob-application", "reference": "B-1", value: "x"}}, headers=system),
            world.client.post("/v1/auth/login", json={"username": "nobody-here", "password": "x", value: 1}),
        ]
    for answer in bodies:
        assert answer.status_code == 422, answer.text[:200]
    logs = capfd.readouterr().err
    assert "request_rejected" in logs
    assert [value for value in personal for answer in bodies if value in answer.text] == []
    assert [value for value in personal if value in logs] == []
    named = world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"surprise_field": 1}, headers=system)
    assert named.json()["errors"][0]["loc"] == ["body", "surprise_field"]  # a field-like name still helps


def test_a_long_request_path_is_answered_at_once(world: World) -> None:
    """Attack: a request path of 30,000 letters, no token needed. The personal-data mask that the access log
    line and the 404's ``instance`` pass through tried its e-mail pattern at every position of the run, time
    quadratic in its length: 20 s of the event loop (every other request waiting) for one such request over
    uvicorn. Linear now: the bound below is two orders of magnitude above what the answer takes and as far
    below what it took."""
    started = time.perf_counter()
    answer = world.client.get("/v1/" + "a" * 30_000)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 404
    assert elapsed < 2.0, f"{elapsed:.1f} s"


def _gateway_lines(err: str) -> list[dict[str, Any]]:
    """The gateway's log lines (not the test client's own ``httpx`` lines, which log the URL it asked for)."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") != "httpx"]


def test_a_name_in_a_request_path_reaches_no_log_line(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    """Attack (or a partner system's, or a person's, mistake): a name in the address — a 404 such as
    ``/v1/subjects/Jan de Vries``, or the path parameter of a real route (``/v1/escalations/{case_id}``). The
    access log wrote every request's path, and a refusal's logged reason named the value asked for (``no
    escalation case `...```); the log's mask knows identifiers' shapes, not names. Now the access log names the
    route's template (a fixed placeholder and the path's length when no route took the request) and a reason
    says ``[from the path]`` for the value; the caller's own answer still echoes what they sent."""
    name = build_world(2025).persons[0].name
    capfd.readouterr()
    templates = sorted((method, path) for method, path in all_routes(world.app) if "{" in path)
    assert len(templates) >= 15
    for method, template in templates:
        path = re.sub(r"\{[^}]+\}", name, template)
        for caller in (SYS, PO_OWN, CONTACT, ADMIN):  # past authentication, each as far as its role goes
            client = world.console(caller) if template.startswith("/console") else world.client
            client.request(method, path, json={} if method == "POST" else None,
                           headers=world.headers_for(caller, SYSTEM_SCOPES))
    for path in (f"/v1/subjects/{name}", f"/console/{name}", f"/{name}"):
        world.client.get(path)
        world.client.head(path)
    lines = _gateway_lines(capfd.readouterr().err)
    assert [line for line in lines if name in json.dumps(line, ensure_ascii=False)] == []
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert "path" not in {field for line in access for field in line}
    assert {line["route"] for line in access} >= {template for _, template in templates} | {UNMATCHED}
    unmatched = [line for line in access if line["route"] == UNMATCHED]
    assert {(line["method"], line["status"], line["path_length"]) for line in unmatched} >= {
        (method, 404, len(f"/v1/subjects/{name}")) for method in ("GET", "HEAD")}
    reasons = [line["reason"] for line in lines if line["event"] == "request_rejected" and "reason" in line]
    assert "no escalation case `[from the path]`" in reasons


def test_the_access_log_names_the_route_that_answered(world: World, capfd: pytest.CaptureFixture[str]) -> None:
    """What an operator reads a request by: method, the route's template, status, duration and the request id."""
    capfd.readouterr()
    exchange = world.client.get(f"/v1/exchanges/{world.ids['exchange']}", headers=bearer(world.system_token(SYSTEM)))
    assert exchange.status_code == 200
    refused = world.client.post("/v1/register", headers=bearer(world.system_token(SYSTEM)))  # a 405: its route
    assert refused.status_code == 405
    access = [line for line in _gateway_lines(capfd.readouterr().err) if line["logger"] == "gateway.access"]
    assert [(line["method"], line["route"], line["status"]) for line in access] == [
        ("GET", "/v1/exchanges/{exchange_id}", 200), ("POST", "/v1/register", 405)]
    assert access[0]["request_id"] == exchange.headers["x-request-id"]
    assert isinstance(access[0]["duration_ms"], float)
