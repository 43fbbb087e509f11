"""Hostile input: SQL-ish strings in path, query and JSON; oversized and deeply nested bodies; unicode edge
cases; page-size limits; request smuggling against a real uvicorn server. Every answer is a 4xx
problem+json (never a 5xx), no injection widens what a caller sees, nothing is written for a refused request,
and no error body or log line carries personal data of the synthetic world (BSNs, names, addresses)."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audit.review import MAX_PAGE
from audit.tables import audit_entries
from connectors.world import Person, build_world
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.container import build_container
from gateway.settings import Settings
from tests.auth_helpers import bearer
from tests.migrated import migrated_sqlite
from tests.security.world import (
    BIBOB_REQUEST,
    CONTACT,
    NOW,
    PO_OWN,
    RIEC,
    SYSTEM,
    World,
    running_world,
)
from tests.servers import serve_app

SQLISH = [
    "' OR '1'='1",
    "1; DROP TABLE audit_entries;--",
    "') UNION SELECT password_hash, username FROM accounts--",
    "riec-amsterdam-amstelland' OR 'x'='x",
    "%' OR 1=1 OR '%'='",
    "1 AND (SELECT 1 FROM pg_sleep(5)) $(id) {{7*7}} ../../etc/passwd <script>",
]
UNICODE = [
    "\u0000", "a\u0000b", "\u202eevil\u202c", "\u200b\u200d\ufeff", "\U0001f4a9" * 50, "e\u0301" * 100,
    "x" * 20_000,
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("abuse")) as running:
        yield running


@pytest.fixture(scope="module")
def personal_data() -> list[str]:
    """Names, BSNs and addresses of the synthetic population (the values that must never leak)."""
    people: list[Person] = build_world(2025).persons[:40]
    return [value for p in people for value in (p.bsn, p.name, p.address)]


def _audit_size(world: World) -> int:
    with world.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json"), response.text[:200]
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert {"type", "title", "detail"} <= set(body)
    return body


def _system(world: World) -> dict[str, str]:
    return bearer(world.system_token(SYSTEM))


def _officer(world: World) -> dict[str, str]:
    return bearer(world.person_token(PO_OWN))


# -- SQL-ish and other injection strings -------------------------------------------------------------------


@pytest.mark.parametrize("payload", SQLISH)
def test_injection_in_path_parameters_is_a_plain_404(world: World, payload: str) -> None:
    segment = quote(payload, safe="")
    officer, system = _officer(world), _system(world)
    for path, headers in [(f"/v1/register/partnerships/{segment}", system),
                          (f"/v1/register/partnerships/{RIEC}/purposes/{segment}", system),
                          (f"/v1/register/versions/{segment}", system),
                          (f"/v1/exchanges/{segment}", system),
                          (f"/v1/escalations/{segment}", officer),
                          (f"/v1/legal-gaps/{segment}", officer)]:
        assert_problem(world.client.get(path, headers=headers), 404)
    contact = bearer(world.person_token(CONTACT))
    answer = world.client.get(f"/v1/audit/subjects/{segment}/disclosures", headers=contact)
    assert answer.status_code in {200, 404, 422}, answer.text
    if answer.status_code == 200:
        assert answer.json() == []


@pytest.mark.parametrize("payload", SQLISH)
def test_injection_in_filters_never_widens_what_a_caller_sees(world: World, payload: str) -> None:
    officer = _officer(world)
    for name in ("partnership", "purpose", "organisation", "event_type", "decision", "subject"):
        answer = world.client.get("/v1/audit/entries", params={name: payload}, headers=officer)
        assert answer.status_code in {200, 422}, answer.text  # the ids and words are refused by their pattern
        if answer.status_code == 200:
            assert answer.json()["entries"] == [], name
        else:
            assert_problem(answer, 422)
    for name in ("partnership", "state", "trigger", "organisation"):
        answer = world.client.get("/v1/escalations", params={name: payload}, headers=officer)
        assert answer.status_code in {200, 422}, answer.text
        if answer.status_code == 200:
            assert answer.json()["cases"] == [], name
    cursor = world.client.get("/v1/escalations", params={"cursor": payload[:64]}, headers=officer)
    assert cursor.status_code in {200, 422}, cursor.text
    statistics = world.client.get("/v1/audit/statistics", params={"partnership": payload}, headers=officer)
    assert statistics.status_code in {200, 422}
    if statistics.status_code == 200:
        assert statistics.json() == []
    else:
        assert_problem(statistics, 422)


@pytest.mark.parametrize("payload", SQLISH)
def test_injection_in_json_fields_is_refused_and_writes_nothing(world: World, payload: str) -> None:
    before = _audit_size(world)
    system = _system(world)
    for field, value in [("partnership", payload), ("purpose", payload), ("case_reference", payload),
                         ("legal_basis", payload), ("signal", {"type": payload, "reference": "B-1"}),
                         ("subjects", [{"ref": payload}]), ("categories", [payload]), ("holders", [payload])]:
        answer = world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {field: value}, headers=system)
        if field == "legal_basis":
            # Free text: answered, audited, and nothing disclosed (a category must look like one: 422).
            assert answer.status_code == 200, answer.text
            assert all(t["records"] == [] for t in answer.json()["targets"])
            assert all(t["outcome"] != "allowed" for t in answer.json()["targets"])
            continue
        assert_problem(answer, 422)
    assert _audit_size(world) >= before
    login = world.client.post("/v1/auth/login", json={"username": payload[:64], "password": payload})
    assert_problem(login, 401)
    objection = world.client.post("/v1/escalations", headers=system, json={
        "exchange_id": payload[:64], "holder": payload[:64], "motivation": payload + " (ten chars)"})
    assert_problem(objection, 404, 422)
    with world.container.engine.connect() as connection:  # the tables are all still there
        assert connection.execute(select(func.count()).select_from(audit_entries)).scalar_one() > 0


# -- sizes and shapes --------------------------------------------------------------------------------------


def test_oversized_bodies_get_413_problem_json(world: World) -> None:
    limit = world.container.settings.max_body_bytes
    system = _system(world) | {"content-type": "application/json"}
    declared = world.client.post("/v1/exchanges", content=b" " * (limit + 1), headers=system)
    assert_problem(declared, 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds on the streamed body as well
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = world.client.post("/v1/exchanges", content=chunks(), headers=system)
    assert_problem(streamed, 413)
    lying = world.client.post("/v1/exchanges", content=b"{}", headers=system | {"content-length": "-1"})
    assert lying.status_code in {400, 413}
    form = world.client.post("/oauth/token", content=b"a=" + b"b" * (limit + 1),
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert_problem(form, 413)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_refused_not_a_crash(world: World, depth: int) -> None:
    system = _system(world) | {"content-type": "application/json"}
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    for body in (arrays, objects):
        if len(body) > world.container.settings.max_body_bytes:
            continue
        for path in ("/v1/exchanges", "/v1/discovery", "/v1/escalations", "/v1/auth/login"):
            assert_problem(world.client.post(path, content=body, headers=system), 400, 413, 422)
    nested_field = BIBOB_REQUEST | {"signal": json.loads("[" * 500 + "]" * 500)}
    assert_problem(world.client.post("/v1/exchanges", json=nested_field, headers=_system(world)), 422)


@pytest.mark.parametrize("text", UNICODE, ids=lambda t: repr(t[:8]))
def test_unicode_edge_cases_are_422_not_500(world: World, text: str) -> None:
    system = _system(world)
    for field in ("partnership", "case_reference", "legal_basis", "purpose"):
        answer = world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {field: text}, headers=system)
        assert answer.status_code in {200, 422}, answer.text  # legal_basis is free text
        if answer.status_code != 200:
            assert_problem(answer, 422)
    answer = world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"subjects": [{"ref": text}]}, headers=system)
    assert_problem(answer, 422)
    officer = _officer(world)
    listing = world.client.get("/v1/audit/entries", params={"subject": text[:1024], "partnership": text},
                               headers=officer)
    assert listing.status_code in {200, 422}
    path = world.client.get(f"/v1/escalations/{quote(text[:200], safe='')}", headers=officer)
    assert_problem(path, 404)


@pytest.mark.parametrize("escaped", ["\\ud800", "\\udfff", "\\ud800\\u202e", "\\u0000", "\\udbff\\udfff"])
def test_escaped_lone_surrogates_and_nul_in_json(world: World, escaped: str) -> None:
    """JSON may spell a lone surrogate as an escape; it is not a Unicode string and must be refused cleanly."""
    for field in ("case_reference", "legal_basis"):
        raw = json.dumps(BIBOB_REQUEST | {field: "MARK"}).replace('"MARK"', f'"{escaped}"').encode()
        answer = world.client.post("/v1/exchanges", content=raw,
                                   headers=_system(world) | {"content-type": "application/json"})
        assert answer.status_code in {200, 422}, answer.text
        if answer.status_code == 422:
            assert_problem(answer, 422)
    login = b'{"username": "' + escaped.encode() + b'", "password": "x"}'
    answer = world.client.post("/v1/auth/login", content=login, headers={"content-type": "application/json"})
    assert_problem(answer, 401, 422)


@pytest.mark.parametrize("raw", ["%00", "%ED%A0%80", "%FF%FE", "%C0%AF", "..%2F..%2Fetc%2Fpasswd", "%25"])
def test_invalid_utf8_and_encoded_separators_in_urls(world: World, raw: str) -> None:
    officer = _officer(world)
    assert_problem(world.client.get(f"/v1/escalations/{raw}", headers=officer), 404)
    answer = world.client.get(f"/v1/audit/entries?partnership={raw}", headers=officer)
    assert answer.status_code in {200, 400, 422}
    if answer.status_code == 200:
        assert answer.json()["entries"] == []
    else:
        assert_problem(answer, 400, 422)


def test_bad_headers_are_problems(world: World) -> None:
    system = _system(world)
    idempotency = world.client.post("/v1/exchanges", json=BIBOB_REQUEST,
                                    headers=system | {"Idempotency-Key": "k\u202e-key-0001".encode()})
    assert_problem(idempotency, 422)
    long_key = world.client.post("/v1/exchanges", json=BIBOB_REQUEST, headers=system | {"Idempotency-Key": "k" * 500})
    assert_problem(long_key, 422)
    for authorization in ("Bearer", "Bearer " + "a" * 8000, "Bearer a.b.c", "Bearer \u00e9.x.y".encode(),
                          "Basic Zm9vOmJhcg==", "Bearer " + "eyJhbGciOiJub25lIn0" + ".e30."):
        answer = world.client.get("/v1/register", headers={"Authorization": authorization})
        assert_problem(answer, 401)
    wrong_type = world.client.post("/v1/exchanges", content=json.dumps(BIBOB_REQUEST).encode(),
                                   headers=system | {"content-type": "text/plain"})
    assert_problem(wrong_type, 415, 422)


# -- page sizes --------------------------------------------------------------------------------------------


def test_page_size_limits(world: World) -> None:
    officer = _officer(world)
    for params in ({"limit": MAX_PAGE + 1}, {"limit": 0}, {"limit": -1}, {"limit": 10**30}, {"limit": "ten"},
                   {"cursor": -2}, {"cursor": "x"}):
        assert_problem(world.client.get("/v1/audit/entries", params=params, headers=officer), 422)
    for params in ({"limit": 201}, {"limit": 0}, {"cursor": "c" * 65}, {"tier": 4}, {"tier": 10**30}):
        assert_problem(world.client.get("/v1/escalations", params=params, headers=officer), 422)
    assert world.client.get("/v1/audit/entries", params={"limit": MAX_PAGE}, headers=officer).status_code == 200
    assert_problem(world.client.get("/v1/audit/entries/0/proof", params={"size": 0}, headers=officer), 422)
    assert_problem(world.client.get("/v1/audit/entries/-1/proof", params={"size": 1}, headers=officer), 422)
    assert_problem(world.client.get("/v1/audit/consistency", params={"from": 2, "to": 1}, headers=officer), 422)
    huge = world.client.get("/v1/audit/entries/99999999999999999999/proof", params={"size": 10**20},
                            headers=officer)
    assert_problem(huge, 404, 422)


def test_cursor_beyond_64_bits_is_422(world: World) -> None:
    quiet = TestClient(world.app, raise_server_exceptions=False)
    answer = quiet.get("/v1/audit/entries", params={"cursor": 2**63}, headers=_officer(world))
    assert_problem(answer, 422)


def test_unknown_routes_and_methods_are_problems(world: World) -> None:
    assert_problem(world.client.get("/v1/nothing-here"), 404)
    assert_problem(world.client.delete("/v1/exchanges"), 405)
    assert_problem(world.client.put("/v1/register", headers=_system(world)), 405)


# -- request smuggling against a real server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("live")
    settings = Settings(data_dir=tmp, database_url=migrated_sqlite(tmp), log_json=True)
    container = build_container(settings, FixedClock(NOW))
    with serve_app(create_app(container=container)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)
    container.close()


def _raw(server: tuple[str, int], data: bytes) -> bytes:
    """Send bytes on one connection; read until the server closes it or goes quiet."""
    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(5.0)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


LOGIN = b'{"username":"nobody-here","password":"x"}'
SMUGGLED = b"GET /v1/register HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(LOGIN) + LOGIN,
                 id="duplicate-content-length"),
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED))
                 + SMUGGLED, id="te-and-cl"),
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked"
                 b"\r\n\r\nabcd", id="obfuscated-te"),
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nabcd", id="space-before-colon"),
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n abc\r\n\r\nabcd", id="obs-fold"),
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", id="signed-length"),
    pytest.param(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\nabcd\r\n0\r\n\r\n", id="bad-chunk-size"),
])
def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(live: tuple[str, int], request_bytes: bytes) -> None:
    answer = _raw(live, request_bytes)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"400"], f"refused once, nothing smuggled: {answer[:600]!r}"
    assert b"connection: close" in answer.lower()  # the server drops a connection it cannot frame


def test_pipelined_requests_are_framed_by_content_length(live: tuple[str, int]) -> None:
    """Two honest pipelined requests: two answers, the second one the 401 of the register (no body bleed)."""
    first = (b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(LOGIN) + LOGIN)
    answer = _raw(live, first + SMUGGLED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"401", b"401"], answer[:600]
    assert answer.count(b"application/problem+json") == 2


# -- no personal data in error bodies or logs --------------------------------------------------------------


def test_personal_data_in_refused_bodies_is_never_echoed_or_logged(
        world: World, personal_data: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    """Validation errors name the field, never the value: BSNs, names and addresses sent where they do not
    belong come back neither in the problem document nor in a log line."""
    capfd.readouterr()
    system, officer = _system(world), _officer(world)
    bodies: list[str] = []
    for position, value in enumerate(personal_data[:45]):
        answers = [
            world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"subjects": [{"ref": value}]}, headers=system),
            world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"surprise": value}, headers=system),
            world.client.post("/v1/discovery", json={"subjects": [{"ref": value}]}, headers=system),
            world.client.get("/v1/escalations", params={"tier": value}, headers=officer),
            world.client.get("/v1/audit/entries", params={"limit": value}, headers=officer),
            world.client.post("/v1/escalations", json={"exchange_id": "x", "holder": "politie", "motivation": value,
                                                       "extra": value}, headers=system),
            # Ids typed where a name was meant: refused by their shape, not looked up and named in a 404.
            world.client.post("/v1/escalations", json={"exchange_id": value[:64], "holder": "politie",
                                                       "motivation": "Please review this outcome."}, headers=system),
            world.client.post("/v1/escalations", json={"exchange_id": str(uuid.uuid4()), "holder": value[:64],
                                                       "motivation": "Please review this outcome."}, headers=system),
        ]
        if position < 3:  # argon2 makes each login slow on purpose: a few suffice
            answers.append(world.client.post("/v1/auth/login", json={"username": value[:64], "password": value}))
        for answer in answers:
            assert answer.status_code >= 400, (answer.request.url, answer.text[:200])
            assert_problem(answer, answer.status_code)
            bodies.append(answer.text)
    leaked_bodies = sorted({body for value in personal_data for body in bodies if value in body})
    assert leaked_bodies == []
    logs = capfd.readouterr().err
    assert "request_rejected" in logs
    leaked_logs = sorted({line for value in personal_data for line in logs.splitlines() if value in line})
    assert leaked_logs == []


def test_identifiers_are_not_echoed_into_404_bodies_or_logs(
        world: World, personal_data: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    bsn = personal_data[0]
    system = _system(world)
    answers = [world.client.get(f"/v1/exchanges/{bsn}", headers=system),
               world.client.post("/v1/escalations", headers=system, json={
                   "exchange_id": bsn, "holder": "politie", "motivation": "Looking for this one."}),
               world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"holders": [bsn]}, headers=system),
               world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"partnership": bsn}, headers=system)]
    assert [a.status_code for a in answers] == [404, 422, 422, 422]  # an exchange id is a UUID: no lookup
    logs = capfd.readouterr().err
    assert all(bsn not in answer.text for answer in answers)
    assert bsn not in logs


def test_bsn_shaped_case_reference_is_422_not_503(world: World, personal_data: list[str]) -> None:
    answer = world.client.post("/v1/exchanges", json=BIBOB_REQUEST | {"case_reference": personal_data[0]},
                               headers=_system(world))
    assert_problem(answer, 422)
