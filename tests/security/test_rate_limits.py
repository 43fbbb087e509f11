"""Per-client rate limits (``gateway.ratelimit``): a burst over the limit gets 429 problem+json with
``Retry-After``; another client is unaffected; after waiting the client is served again; a forged token that
names a client cannot spend that client's budget, nor can a revoked one; health probes are never limited. The
app's limiter runs on a clock the tests move (``tests.limiter_clock``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey

from gateway.app import create_app
from gateway.auth import repository
from gateway.auth.setup import auth_services
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import transaction
from gateway.ratelimit import RateLimitMiddleware, TokenBucketLimiter
from gateway.settings import Settings
from tests.auth_helpers import bearer, register_client
from tests.limiter_clock import FakeTime, limiter_clock
from tests.migrated import migrated_sqlite
from tests.security.world import NOW

RATE, BURST = 4.0, 5


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeTime()
    limiter = TokenBucketLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.now += 60
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled, but never above the burst
    assert limiter.acquire("a") > 0


def test_token_bucket_memory_is_bounded() -> None:
    clock = FakeTime()
    limiter = TokenBucketLimiter(rate=10.0, burst=2, clock=clock, max_buckets=100)
    for n in range(1000):
        limiter.acquire(f"client-{n}")
        clock.now += 1.0  # every earlier bucket is full again: it may go
    assert len(limiter._buckets) <= 101


def test_zero_rate_disables_the_limiter() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    assert RateLimitMiddleware(app, per_second=0, burst=1).limiter is None
    with pytest.raises(ValueError, match="positive"):
        TokenBucketLimiter(rate=0, burst=1)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Container, FakeTime]]:
    """The app, its container and the limiter's clock."""
    tmp = tmp_path_factory.mktemp("ratelimit")
    settings = Settings(data_dir=tmp, database_url=migrated_sqlite(tmp), log_json=True,
                        rate_limit_per_second=RATE, rate_limit_burst=BURST)
    container = build_container(settings, FixedClock(NOW))
    app = create_app(container=container)
    ticks = limiter_clock(app)
    with TestClient(app) as client:
        yield client, container, ticks
    container.close()


def _token(container: Container, system: str, organisation: str) -> dict[str, str]:
    """What the token endpoint issues to ``system`` (issued directly: the endpoint itself is rate limited)."""
    return bearer(auth_services(container).tokens.issue(subject=system, organisation=organisation,
                                                        scopes=["register:read"]).access_token)


def _until_limited(client: TestClient, headers: dict[str, str], path: str = "/v1/register/versions") -> list[int]:
    statuses = []
    for _ in range(BURST + 3):
        statuses.append(client.get(path, headers=headers).status_code)
        if statuses[-1] == 429:
            break
    return statuses


def test_a_burst_above_the_limit_gets_429_with_retry_after(limited: tuple[TestClient, Container, FakeTime]) -> None:
    client, container, ticks = limited
    municipality = _token(container, "gemeente-amsterdam-vth", "gemeente-amsterdam")
    police = _token(container, "politie-bvh", "politie")
    ticks.now += BURST / RATE  # full buckets whatever ran before
    statuses = _until_limited(client, municipality)
    assert statuses == [200] * BURST + [429]  # the burst is served, and no more
    refused = client.get("/v1/register/versions", headers=municipality)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 429
    assert refused.json()["type"].endswith("/too-many-requests")
    assert refused.headers["retry-after"] == "1"  # a token is back in 1 / RATE s: whole seconds, rounded up
    assert refused.headers["x-request-id"]  # inside the request-context middleware: traced and logged

    assert client.get("/v1/register/versions", headers=police).status_code == 200  # another client: unaffected
    assert client.get("/health/live").status_code == 200  # probes are never limited
    assert client.get("/health/ready").status_code == 200

    ticks.now += 0.9 / RATE  # not yet a whole token's worth (0.25 s each) ...
    assert client.get("/v1/register/versions", headers=municipality).status_code == 429
    ticks.now += 0.2 / RATE  # ... and now one
    assert client.get("/v1/register/versions", headers=municipality).status_code == 200
    assert client.get("/v1/register/versions", headers=municipality).status_code == 429


def test_a_head_spends_the_budget_a_get_does(limited: tuple[TestClient, Container, FakeTime]) -> None:
    """HEAD is answered as the GET it asks about (:class:`gateway.middleware.HeadMiddleware`), limit included: a
    client cannot ask twice as often by alternating the two, nor keep asking by HEAD once over its limit."""
    client, container, ticks = limited
    municipality = _token(container, "gemeente-amsterdam-vth", "gemeente-amsterdam")
    ticks.now += BURST / RATE
    statuses = [client.head("/v1/register/versions", headers=municipality).status_code for _ in range(BURST)]
    assert statuses == [200] * BURST
    assert client.get("/v1/register/versions", headers=municipality).status_code == 429
    refused = client.head("/v1/register/versions", headers=municipality)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.content == b""


def test_forged_tokens_cannot_spend_another_clients_budget(limited: tuple[TestClient, Container, FakeTime]) -> None:
    """The key is the verified principal: a token that merely *claims* a client is keyed by the peer address."""
    client, container, ticks = limited
    ticks.now += BURST / RATE
    attacker = OKPKey.generate_key("Ed25519", parameters={"kid": auth_services(container).keys.current_kid()})
    now = int(container.clock.now().timestamp())
    forged = jwt.encode({"alg": "Ed25519", "kid": attacker.kid}, {
        "iss": container.settings.issuer, "aud": container.settings.audience, "sub": "gemeente-amsterdam-vth",
        "org": "gemeente-amsterdam", "scope": "register:read", "iat": now, "exp": now + 300, "jti": "x",
        "kind": "system"}, attacker, algorithms=["Ed25519"])
    statuses = _until_limited(client, bearer(forged))
    assert statuses == [401] * BURST + [429]
    assert client.get("/v1/register/versions",  # the anonymous budget of this address is spent too ...
                      ).status_code == 429
    municipality = _token(container, "gemeente-amsterdam-vth", "gemeente-amsterdam")
    assert client.get("/v1/register/versions", headers=municipality).status_code == 200  # ... not the client's


def test_an_expired_token_is_not_a_client_identity(limited: tuple[TestClient, Container, FakeTime]) -> None:
    client, container, ticks = limited
    ticks.now += BURST / RATE
    clock = container.clock
    assert isinstance(clock, FixedClock)
    stale = _token(container, "fiod-ois", "fiod")
    clock.advance(timedelta(hours=1))
    try:
        statuses = _until_limited(client, stale)
        assert statuses == [401] * BURST + [429]
        assert client.get("/v1/register/versions", headers=_token(container, "fiod-ois", "fiod")).status_code == 200
    finally:
        clock.advance(timedelta(hours=-1))


def test_a_revoked_token_spends_its_senders_budget_not_its_clients(
        limited: tuple[TestClient, Container, FakeTime]) -> None:
    """A token of a client re-keyed since (over a leak) still verifies; replayed, it spent the budget of the client
    it was issued to (and each copy was remembered as that client). It is now keyed by its sender's address."""
    client, container, ticks = limited
    auth = auth_services(container)
    register_client(container, "kvk-handelsregister", ["register:read"])
    before = _token(container, "kvk-handelsregister", "kvk")  # generation 0
    register_client(container, "kvk-handelsregister", ["register:read"])  # re-keyed: generation 1
    auth.disabled.load()  # what the timer does every interval
    ticks.now += BURST / RATE
    statuses = _until_limited(client, before)
    assert statuses == [401] * BURST + [429]  # refused, and then limited as its address ...
    assert client.get("/v1/register/versions").status_code == 429
    assert limiting(client.app).client_key(_scope(client, before)) == "ip:testclient"
    after = bearer(auth.tokens.issue(subject="kvk-handelsregister", organisation="kvk", scopes=["register:read"],
                                     generation=1).access_token)
    assert [client.get("/v1/register/versions", headers=after).status_code
            for _ in range(BURST)] == [200] * BURST  # ... while the client's own budget is whole


def test_a_disabled_clients_token_is_keyed_by_its_address(limited: tuple[TestClient, Container, FakeTime]) -> None:
    client, container, _ = limited
    register_client(container, "rvdk-kbs", ["register:read"])
    token = _token(container, "rvdk-kbs", "rvdk")
    assert limiting(client.app).client_key(_scope(client, token)) == "system:rvdk-kbs"
    with transaction(container.sessions) as session:
        repository.set_client_active(session, "rvdk-kbs", False)
    auth_services(container).disabled.load()
    assert limiting(client.app).client_key(_scope(client, token)) == "ip:testclient"


def limiting(app: object) -> RateLimitMiddleware:
    """The app's rate-limit middleware, as the running app built it."""
    layer = getattr(app, "middleware_stack", None)
    while layer is not None and not isinstance(layer, RateLimitMiddleware):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, RateLimitMiddleware)
    return layer


def _scope(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    """The ASGI scope of a request with ``headers`` from the test client's address, in ``client``'s app."""
    return {"type": "http", "path": "/v1/register/versions", "app": client.app, "client": ("testclient", 50000),
            "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]}


async def test_a_429s_instance_masks_an_identifier_in_the_path() -> None:
    """The 429 problem named the raw path as its ``instance``: a BSN a caller put where an id belongs came back
    in the body unmasked, where every other problem document masks it (``gateway.problems``)."""
    async def app(scope: object, receive: object, send: object) -> None:
        return None
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}
    limited = RateLimitMiddleware(app, per_second=1.0, burst=1, clock=FakeTime())
    scope = {"type": "http", "method": "GET", "path": "/v1/exchanges/111222333", "headers": [],
             "client": ("192.0.2.7", 5000)}
    await limited(scope, receive, send)  # the burst
    await limited(scope, receive, send)
    (start, body) = sent
    assert start["status"] == 429
    problem = json.loads(body["body"])
    assert "111222333" not in body["body"].decode()
    assert problem["instance"].startswith("/v1/exchanges/")
    assert problem["instance"] != scope["path"]
