"""Work an exchange request no longer repeats (CPU per request; ``docs/performance.md``, 2026-12-05). Each test
counts what is called (a hook, not a clock), so it says what is done, not how fast, and checks that the answer
is the one the longer way gave."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.testclient import TestClient

from gateway import middleware
from gateway.client.models import ExchangeRequest
from gateway.enrolment import service as enrolment
from gateway.exchange import service as exchange
from gateway.pseudonyms.identifiers import IdentifierType
from gateway.pseudonyms.pep import Pseudonym, hash_to_point


def test_a_text_not_starting_like_a_pseudonym_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exchange asks ``is_pseudonym`` of its subjects several times; a reference was decoded to an exception
    each time. A pseudonym is still decoded, and a corrupted one still refused."""
    pseudonym = Pseudonym(IdentifierType.BSN, 1, hash_to_point(b"someone")).encode()
    decoded: list[str] = []
    real = Pseudonym.decode

    def decode(text: str) -> Pseudonym:
        decoded.append(text)
        return real(text)

    monkeypatch.setattr(Pseudonym, "decode", decode)
    assert not any(enrolment.is_pseudonym(text) for text in ("REF-12345", "kvk:12345678", "", "a.b.c"))
    assert decoded == []
    assert enrolment.is_pseudonym(pseudonym)
    assert not enrolment.is_pseudonym(pseudonym.upper())
    assert not enrolment.is_pseudonym(pseudonym[:-1])
    assert not enrolment.is_pseudonym(123)  # type: ignore[arg-type]
    assert decoded == [pseudonym, pseudonym.upper(), pseudonym[:-1]]


def test_a_requests_three_ids_come_from_one_read_of_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request id, trace id and span id: each read of the system's randomness is a system call that lets go of
    the interpreter lock. The three are still independent parts of fresh random bits, of their lengths."""
    reads: list[int] = []

    def token_hex(nbytes: int) -> str:
        reads.append(nbytes)
        return secrets.token_hex(nbytes)

    monkeypatch.setattr("gateway.middleware.secrets", SimpleNamespace(token_hex=token_hex))

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.scope["state"]))

    app = middleware.RequestContextMiddleware(Starlette(routes=[Route("/", echo)]))
    with TestClient(app) as client:
        answers = [client.get("/") for _ in range(2)]
    assert reads == [32, 32]
    first, second = (answer.json() for answer in answers)
    assert first["request_id"] != second["request_id"]
    for ids, answer in zip((first, second), answers, strict=True):
        assert [len(ids[name]) for name in ("request_id", "trace_id", "span_id")] == [16, 32, 16]
        assert len({ids["request_id"], ids["trace_id"], ids["span_id"]}) == 3
        assert answer.headers["x-request-id"] == ids["request_id"]
        assert answer.headers["traceparent"] == f"00-{ids['trace_id']}-{ids['span_id']}-01"


def test_the_request_fingerprint_is_the_text_it_always_was_without_an_encoder_per_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Escalation decisions and outcome rows store fingerprints, so the text hashed must not change; the JSON
    encoder that writes it is built once, not per request (as ``json.dumps`` with options does)."""
    body = ExchangeRequest.model_validate({
        "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "CASE-1",
        "signal": {"type": "bibob-application", "reference": "SIG-1"}, "subjects": [{"ref": "REF-00001"}],
        "holders": ["kvk"], "categories": ["directorships", "company_registration"]})
    principal: Any = SimpleNamespace(subject="gemeente-amsterdam-vth")
    expected = json.dumps({"system": principal.subject, "request": body.model_dump(
        mode="json", exclude={"escalation_decision"})}, sort_keys=True, separators=(",", ":"))
    built: list[object] = []
    real_init = json.JSONEncoder.__init__

    def counting_init(self: json.JSONEncoder, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(json.JSONEncoder, "__init__", counting_init)
    fingerprint = exchange.fingerprint(principal, body)
    assert built == []
    assert fingerprint == hashlib.sha256(expected.encode()).hexdigest()
    assert fingerprint == "e44247743f3e244830e86ce92d24d6a8603b3e47ef6c61037993d7f3398457db"  # as 0bc9028 hashed it


def test_an_exchange_is_matched_by_the_first_route_the_app_tries(tmp_path: Path) -> None:
    """Each route tried before the one that takes a request costs the event loop (about 11 µs a router with
    FastAPI 0.165): the exchange's router comes first (after FastAPI's own ``/openapi.json``); every path of it
    is still served by the route it was (no other router has a path of the exchange's)."""
    from gateway.app import create_app
    from gateway.settings import Settings

    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    tried: list[object] = []
    for route in app.router.routes:
        tried.append(route)
        if route.matches({"type": "http", "method": "POST", "path": "/v1/exchanges", "root_path": "",
                          "headers": []})[0] == Match.FULL:
            break
    assert [route for route in tried[:-1] if getattr(route, "path", None) != app.openapi_url] == []  # FastAPI's own
    claimed = [(path, route) for route in app.router.routes for path in ("/v1/exchanges", "/v1/exchanges/x",
                                                                        "/v1/discovery")
               if route.matches({"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []})[0]
               != Match.NONE]
    assert all(route is tried[-1] for _, route in claimed)
    assert len(claimed) == 3
