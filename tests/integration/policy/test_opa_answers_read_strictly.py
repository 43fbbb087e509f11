"""The OPA-server engine takes a decision only from the configured server, read strictly, over real HTTP:
a redirect is not followed, and an answer with a member named twice, NaN, or of more than
``MAX_ANSWER_BYTES`` is no decision (deny). Each of these was accepted: aiohttp follows redirects (a 307
re-posts the input elsewhere and takes that server's decision), and ``json.loads`` keeps the last of two
members and reads NaN. Readiness, too, asks the configured server only: a redirected policy listing or
register push makes the engine not ready, and nothing reaches the redirect's target."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest

from gateway.policy.engine import MAX_ANSWER_BYTES, OpaServerPolicyEngine, read_policy_version
from gateway.policy.errors import MalformedDecision, PolicyError, PolicyUnavailable
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_decision_table import MUNICIPALITY, REGISTER, _input
from tests.opa_test_server import create_opa_test_app
from tests.servers import serve_app

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]

ASKED = _input(MUNICIPALITY, "politie", ["police_incidents"])
OBLIGATIONS = {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}
ALLOWED: dict[str, Any] = {
    "allow": True, "escalate": False, "outcome": "allowed", "reasons": [], "permitted_categories": ["police_incidents"],
    "removed_categories": [], "hit_only": False, "obligations": OBLIGATIONS, "escalation_decision": None,
    "holder": "politie", "policy_version": read_policy_version(POLICIES_DIR),
    "register_sha256": register_digest(REGISTER)}
DENIED = ALLOWED | {"allow": False, "outcome": "denied", "permitted_categories": [], "obligations": None,
                    "reasons": [{"code": "legal-basis-mismatch", "message": "wrong legal basis"}]}
ALLOWED_JSON = json.dumps(ALLOWED)


class Answering:
    """An OPA stand-in: keeps the register it is sent (204) and answers every query with ``body``
    (``status``, ``headers``)."""

    def __init__(self, body: str, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.body, self.status = body.encode(), status
        self.headers = headers if headers is not None else [(b"content-type", b"application/json")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "PUT":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _decide(url: str) -> str:
    engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
    try:
        return (await engine.decide("exchange", ASKED)).outcome
    finally:
        await engine.aclose()


async def test_the_stand_in_answers_a_decision() -> None:
    """The control: the stand-in's well-formed answer is taken (so the refusals below are the engine's)."""
    with serve_app(Answering(json.dumps({"result": ALLOWED}))) as url:
        assert await _decide(url) == "allowed"


async def test_a_redirect_is_not_followed() -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR)) as elsewhere:
        assert await _decide(elsewhere) == "allowed"  # what following the redirect would get
        redirect = Answering("", status=307, headers=[(b"location", f"{elsewhere}/v1/data/wgs/exchange/decision"
                                                                    .encode())])
        with serve_app(redirect) as url, pytest.raises(PolicyUnavailable):
            await _decide(url)


class Recording:
    """Where a redirect points: answers every request as OPA would (200, an empty result) and records it, with
    the token it came with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, authorization header)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        self.seen.append((scope["method"], scope["path"], (headers.get(b"authorization") or b"").decode() or None))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"result": []}'})


class Redirecting:
    """The OPA test server, except that it redirects ``method`` on ``path`` to ``target`` (HTTP 307)."""

    def __init__(self, app: Any, method: str, path: str, target: str) -> None:
        self.app, self.method, self.path, self.target = app, method, path, target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) == (self.method, self.path):
            await send({"type": "http.response.start", "status": 307,
                        "headers": [(b"location", f"{self.target}{self.path}".encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


TOKEN = "opa-t0ken-for-the-configured-server-only"


async def test_the_redirecting_stand_in_is_otherwise_ready() -> None:
    """The control: without its redirect the server below is ready, and the engine sends its token there."""
    recording = Recording()
    with serve_app(recording) as elsewhere, serve_app(Redirecting(
            create_opa_test_app(POLICIES_DIR), "GET", "/nowhere", elsewhere)) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0, token=TOKEN)
        try:
            await engine.check()
        finally:
            await engine.aclose()
    assert recording.seen == []


@pytest.mark.parametrize(("method", "path", "what"), [
    ("GET", "/v1/policies", "the policy listing"),  # readiness, which followed it
    ("PUT", "/v1/data/register", "the push of data.register"),  # the register push, which followed it too
], ids=["readiness-listing", "register-push"])
async def test_readiness_follows_no_redirect(method: str, path: str, what: str) -> None:
    """Readiness (``check``: the register push, the policy listing, the probe) asks the configured server
    only: a redirect makes it not ready, says so, and nothing (no token, no register) reaches the redirect's
    target. Before, the policy listing and the push followed a redirect (aiohttp does by default; it drops
    the token only when the target is of another origin) and readiness passed."""
    recording = Recording()
    with serve_app(recording) as elsewhere, serve_app(Redirecting(
            create_opa_test_app(POLICIES_DIR), method, path, elsewhere)) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0, token=TOKEN)
        try:
            refusal = f"redirected {what} \\(HTTP 307\\): redirects are not followed"
            with pytest.raises(PolicyUnavailable, match=refusal):
                await engine.check()
        finally:
            await engine.aclose()
    assert recording.seen == []


ANSWERS: list[tuple[str, str, type[PolicyError]]] = [
    ("result-twice", f'{{"result": {json.dumps(DENIED)}, "result": {ALLOWED_JSON}}}', MalformedDecision),
    ("member-twice-in-the-decision", json.dumps({"result": ALLOWED}).replace(
        '"hit_only": false', '"hit_only": true, "hit_only": false'), MalformedDecision),
    ("nan", f'{{"result": {ALLOWED_JSON}, "metrics": {{"timer_rego_query_eval_ns": NaN}}}}', MalformedDecision),
    ("infinity", f'{{"result": {ALLOWED_JSON}, "decision_id": Infinity}}', MalformedDecision),
    ("too-large", f'{{"result": {ALLOWED_JSON}, "padding": "{"x" * MAX_ANSWER_BYTES}"}}', MalformedDecision),
    ("http-203", json.dumps({"result": ALLOWED}), PolicyUnavailable),
]


@pytest.mark.parametrize(("case", "body", "error"), ANSWERS, ids=[row[0] for row in ANSWERS])
async def test_an_answer_opa_never_gives_is_no_decision(case: str, body: str, error: type[PolicyError]) -> None:
    with serve_app(Answering(body, status=203 if case == "http-203" else 200)) as url, pytest.raises(error):
        await _decide(url)
