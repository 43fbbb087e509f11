"""Bad input, on SQLite and PostgreSQL: a 4xx problem+json with a reason, nothing written, one log line.

Each case sends one bad request to a running gateway (a real app with real clients and tokens) and checks:

* the status is the expected 4xx and the body is ``application/problem+json`` with ``type``, ``title``,
  ``status`` and ``detail``, and no stack trace;
* the row count of every table of the database (reflected, so a table added later is counted too) is the
  same before and after: nothing was written (``writes`` names the one documented exception), except that a
  refused token request is accounted for: ``auth.rejected`` entries in the audit log and their window's row
  (:data:`ACCOUNTING`), and nothing else;
* a structured log line says the request was rejected and why, and carries none of the caller's secrets or
  personal data.

The gateway is built once per database for the module (the cases share nothing but the registered clients),
which keeps the twenty-odd requests cheap.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import MetaData, func, select

from audit.tables import audit_entries
from gateway.app import create_app
from gateway.auth.setup import auth_services
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import alembic_config
from gateway.settings import Settings
from tests.auth_helpers import (
    ClientKeys,
    bearer,
    client_assertion,
    fetch_token,
    register_client,
    register_secret,
    token_form,
)
from tests.pg_server import create_database

REQUESTER = "gemeente-amsterdam-vth"  # RIEC participant: exchange, discovery, register:read
NO_EXCHANGE = "politie-bvh"  # registered with register:read only
SECRET_CLIENT = "kvk-handelsregister"  # authenticates with a client secret
BSN = "123456782"  # a valid-looking BSN: sent where it does not belong, it must never reach a log line
SUBJECT = "subj-3f9a0c1d2e4b5a6978c0d1e2"
EXCHANGE: dict[str, Any] = {
    "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
    "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-117",
    "signal": {"type": "bibob-application", "reference": "BIBOB-2026-42"},
    "subjects": [{"ref": SUBJECT}], "categories": ["company_registration"], "holders": ["kvk"]}


@dataclass
class Gateway:
    client: TestClient
    container: Container
    keys: ClientKeys
    token: str
    narrow_token: str
    secret: str
    used_assertion: str = ""  # accepted once, to be replayed


@dataclass
class Sent:
    """What a case sent: the response, and the strings that must not appear in any log line."""

    response: httpx.Response
    never_logged: list[str] = field(default_factory=list)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated database of each kind for the module, made as ``db_url`` makes them."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('bad-input') / 'gateway.sqlite'}"
    else:
        admin: str = request.getfixturevalue("postgres_admin_url")
        url = create_database(admin, f"wgs_bad_input_{uuid.uuid4().hex[:12]}")
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture(scope="module")
def gateway(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), database_url=module_db_url, log_json=True)
    container = build_container(settings, FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC)))
    try:
        with TestClient(create_app(container=container)) as client:
            keys = register_client(container, REQUESTER, ["exchange", "discovery", "register:read"])
            yield Gateway(client, container, keys, token=fetch_token(client, container, keys),
                          narrow_token=fetch_token(client, container,
                                                   register_client(container, NO_EXCHANGE, ["register:read"])),
                          secret=register_secret(container, SECRET_CLIENT, ["register:read"]))
    finally:
        container.close()


# -- the cases ------------------------------------------------------------------------------------------------

def _exchange(gw: Gateway, content: bytes, token: str | None = None) -> httpx.Response:
    response: httpx.Response = gw.client.post(
        "/v1/exchanges", content=content, headers={"Content-Type": "application/json", **bearer(token or gw.token)})
    return response


def _signed(gw: Gateway, key: OKPKey | None = None, **overrides: object) -> str:
    """An access token with the gateway's own claims, signed by its current key unless ``key`` is given."""
    signing = auth_services(gw.container).keys.current()
    now = int(gw.container.clock.now().timestamp())
    claims: dict[str, object] = {"iss": gw.container.settings.issuer, "aud": gw.container.settings.audience,
                                 "sub": REQUESTER, "org": "gemeente-amsterdam", "scope": "exchange", "iat": now,
                                 "exp": now + 300, "jti": str(uuid.uuid4()), "kind": "system"} | overrides
    return jwt.encode({"alg": "Ed25519", "kid": signing.kid}, claims, key or signing, algorithms=["Ed25519"])


def malformed_json(gw: Gateway) -> Sent:
    return Sent(_exchange(gw, b'{"partnership": "riec-amsterdam-amstelland", "subjects": [' + BSN.encode()))


def unknown_field(gw: Gateway) -> Sent:
    return Sent(_exchange(gw, json.dumps(EXCHANGE | {"surprise": BSN}).encode()), [BSN])


def oversized_body(gw: Gateway) -> Sent:
    limit = gw.container.settings.max_body_bytes
    return Sent(_exchange(gw, json.dumps(EXCHANGE | {"provide": [{"note": "x" * limit}]}).encode()))


def oversized_streamed_body(gw: Gateway) -> Sent:
    """No Content-Length (chunked): the limit is enforced while the body is read."""
    limit = gw.container.settings.max_body_bytes
    chunks = (b'{"provide": "' if i == 0 else b"x" * 65536 for i in range(limit // 65536 + 2))
    return Sent(gw.client.post("/v1/exchanges", content=chunks,
                               headers={"Content-Type": "application/json", **bearer(gw.token)}))


def unknown_partnership(gw: Gateway) -> Sent:
    return Sent(_exchange(gw, json.dumps(EXCHANGE | {"partnership": "riec-utrecht"}).encode()))


def unknown_holder(gw: Gateway) -> Sent:
    return Sent(_exchange(gw, json.dumps(EXCHANGE | {"holders": ["kvk", "no-such-holder"]}).encode()))


def expired_token(gw: Gateway) -> Sent:
    token = _signed(gw, exp=int(gw.container.clock.now().timestamp()) - 3600)
    return Sent(_exchange(gw, json.dumps(EXCHANGE).encode(), token), [token])


def forged_signature(gw: Gateway) -> Sent:
    attacker = OKPKey.generate_key("Ed25519", parameters={"kid": str(auth_services(gw.container).keys.current().kid)})
    token = _signed(gw, key=attacker)
    return Sent(_exchange(gw, json.dumps(EXCHANGE).encode(), token), [token])


def wrong_audience(gw: Gateway) -> Sent:
    token = _signed(gw, aud="https://another-gateway.example")
    return Sent(_exchange(gw, json.dumps(EXCHANGE).encode(), token), [token])


def wrong_scope(gw: Gateway) -> Sent:
    return Sent(_exchange(gw, json.dumps(EXCHANGE).encode(), gw.narrow_token), [gw.narrow_token])


def unregistered_scope_at_token_endpoint(gw: Gateway) -> Sent:
    assertion = client_assertion(gw.container, gw.keys)
    return Sent(gw.client.post("/oauth/token", data=token_form(assertion, "exchange admin")), [assertion])


def replayed_assertion(gw: Gateway) -> Sent:
    # The first use is accepted (and its jti stored) before the snapshot, in ``prepare``; this is the replay.
    return Sent(gw.client.post("/oauth/token", data=token_form(gw.used_assertion)), [gw.used_assertion])


def _first_use(gw: Gateway) -> None:
    assertion = client_assertion(gw.container, gw.keys)
    assert gw.client.post("/oauth/token", data=token_form(assertion)).status_code == 200
    gw.used_assertion = assertion


def forged_assertion(gw: Gateway) -> Sent:
    assertion = client_assertion(gw.container, gw.keys, signing_key=OKPKey.generate_key("Ed25519"))
    return Sent(gw.client.post("/oauth/token", data=token_form(assertion)), [assertion])


def unknown_participant_system(gw: Gateway) -> Sent:
    ghost = ClientKeys("no-such-system", OKPKey.generate_key("Ed25519", parameters={"kid": "g-1"}), "Ed25519")
    assertion = client_assertion(gw.container, ghost)
    return Sent(gw.client.post("/oauth/token", data=token_form(assertion)), [assertion])


def wrong_client_secret(gw: Gateway) -> Sent:
    wrong = gw.secret[:-4] + "abcd"
    credentials = base64.b64encode(f"{SECRET_CLIENT}:{wrong}".encode()).decode()
    response = gw.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              headers={"Authorization": f"Basic {credentials}"})
    return Sent(response, [wrong, gw.secret, credentials])


def undecodable_basic_credentials(gw: Gateway) -> Sent:
    """Basic credentials whose secret is not UTF-8 (authlib's decoder raised here: it was a 500)."""
    credentials = base64.b64encode(SECRET_CLIENT.encode() + b":\xff\xfe" + gw.secret.encode()).decode()
    response = gw.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              headers={"Authorization": f"Basic {credentials}"})
    return Sent(response, [gw.secret, credentials])


def malformed_token_request(gw: Gateway) -> Sent:
    return Sent(gw.client.post("/oauth/token", json={"grant_type": "client_credentials", "client_secret": BSN}),
                [BSN])


@dataclass(frozen=True)
class Case:
    send: Callable[[Gateway], Sent]
    status: int
    event: str  # the log event
    reason: dict[str, str]  # log fields and a word their value must contain
    prepare: Callable[[Gateway], None] | None = None
    writes: dict[str, int] = field(default_factory=dict)  # documented writes: table -> rows added


CASES = [
    Case(malformed_json, 422, "request_rejected", {"problem": "validation-error", "fields": "body"}),
    Case(unknown_field, 422, "request_rejected", {"problem": "validation-error", "fields": "surprise"}),
    Case(oversized_body, 413, "request_rejected", {"problem": "payload-too-large"}),
    Case(oversized_streamed_body, 413, "request_rejected", {"problem": "payload-too-large"}),
    Case(unknown_partnership, 422, "request_rejected", {"problem": "unprocessable", "reason": "unknown partnership"}),
    Case(unknown_holder, 422, "request_rejected", {"problem": "unprocessable", "reason": "no-such-holder"}),
    Case(expired_token, 401, "request_rejected", {"problem": "unauthorized", "reason": "exp"}),
    Case(forged_signature, 401, "request_rejected", {"problem": "unauthorized", "reason": "signature"}),
    Case(wrong_audience, 401, "request_rejected", {"problem": "unauthorized", "reason": "aud"}),
    Case(wrong_scope, 403, "request_rejected", {"problem": "forbidden", "reason": "exchange"}),
    Case(replayed_assertion, 401, "token_rejected", {"error": "invalid_client", "reason": "replay"},
         prepare=_first_use),
    Case(forged_assertion, 401, "token_rejected", {"error": "invalid_client", "reason": "signature"}),
    Case(unknown_participant_system, 401, "token_rejected", {"error": "invalid_client", "reason": "unknown client"}),
    Case(wrong_client_secret, 401, "token_rejected", {"error": "invalid_client"}),
    Case(undecodable_basic_credentials, 401, "token_rejected", {"error": "invalid_client", "reason": "UTF-8"}),
    Case(malformed_token_request, 400, "token_rejected", {"error": "invalid_request", "reason": "content type"}),
    # The assertion itself was valid, so its jti is spent (RFC 7523 §3: use it once) even though the token
    # request fails on the scope afterwards: the one row a refused request writes, and only there.
    Case(unregistered_scope_at_token_endpoint, 400, "token_rejected", {"error": "invalid_scope", "reason": "scope"},
         writes={"used_client_assertions": 1}),
]


# -- the checks -----------------------------------------------------------------------------------------------

ACCOUNTING = frozenset({"audit_entries", "audit_tree_nodes", "audit_checkpoints", "sign_in_windows"})
"""What a refused token request writes to account for it (:mod:`gateway.console.signins`): the audit log's
entries (with their tree nodes and checkpoints) and the row of its window; how many depends on whether it
opens a window, so only that every new entry is an ``auth.rejected`` one is checked."""


def _accounted_for(container: Container, before: dict[str, int], after: dict[str, int]) -> None:
    """The writes of a refused token request are accounting only: ``auth.rejected`` entries."""
    assert {t: c for t, c in after.items() if t not in ACCOUNTING} == \
        {t: c for t, c in before.items() if t not in ACCOUNTING}
    with container.engine.connect() as connection:
        added = connection.execute(select(audit_entries.c.event_type).where(
            audit_entries.c.log_index >= before["audit_entries"])).scalars().all()
    assert set(added) <= {"auth.rejected"}, added


def _row_counts(container: Container) -> dict[str, int]:
    schema = MetaData()
    schema.reflect(bind=container.engine)
    assert len(schema.tables) > 10  # really the gateway's schema
    with container.engine.connect() as connection:
        return {name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in schema.tables.items()}


def _log_events(captured: str) -> list[dict[str, Any]]:
    events = []
    for line in captured.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


@pytest.mark.parametrize("case", CASES, ids=[c.send.__name__ for c in CASES])
def test_bad_input_is_a_problem_writes_nothing_and_is_logged(gateway: Gateway, case: Case,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    if case.prepare:
        case.prepare(gateway)
    before = _row_counts(gateway.container)
    capfd.readouterr()

    sent = case.send(gateway)

    logged = capfd.readouterr()
    response = sent.response
    assert response.status_code == case.status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == case.status
    assert problem["type"].startswith("https://")
    assert problem["title"]
    assert problem["detail"]
    assert "Traceback" not in response.text
    assert not re.search(r'File "[^"]+", line \d+', response.text)
    assert BSN not in response.text

    after = _row_counts(gateway.container)
    expected = {table: count + case.writes.get(table, 0) for table, count in before.items()}
    if case.event == "token_rejected":
        _accounted_for(gateway.container, expected, after)
    else:
        assert after == expected, {t: (before[t], after[t]) for t in before if after[t] != before[t]}

    lines = logged.out + logged.err
    assert "Traceback" not in lines
    events = _log_events(lines)
    matching = [e for e in events if e.get("event") == case.event
                and all(word in str(e.get(key, "")) for key, word in case.reason.items())]
    assert len(matching) == 1, (case.event, case.reason, events)
    assert matching[0]["level"] == "info"
    assert matching[0]["request_id"]  # correlates with the access-log line of the same request
    access = [e for e in events if e.get("event") == "request" and e.get("request_id") == matching[0]["request_id"]]
    assert [e["status"] for e in access] == [case.status]
    for secret in [BSN, *sent.never_logged]:
        assert secret not in lines


# -- a NUL character: PostgreSQL text cannot hold one (psycopg refuses it), SQLite can ------------------------

NUL_REQUESTS: dict[str, Callable[[Gateway], httpx.Response]] = {
    "login-username": lambda gw: gw.client.post("/v1/auth/login",
                                                json={"username": "po\x00gemeente", "password": "long enough pass"}),
    "token-client-id": lambda gw: gw.client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": f"{SECRET_CLIENT}\x00", "client_secret": gw.secret}),
    "exchange-id-in-path": lambda gw: gw.client.get("/v1/exchanges/abc%00def", headers=bearer(gw.token)),
    "register-version-in-path": lambda gw: gw.client.get("/v1/register/versions/2026%00", headers=bearer(gw.token)),
}


@pytest.mark.parametrize("name", list(NUL_REQUESTS))
def test_a_nul_character_is_refused_and_writes_nothing(gateway: Gateway, name: str,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """On SQLite the lookup simply finds nothing (401/404); on PostgreSQL it used to be a 500 (DataError)."""
    before = _row_counts(gateway.container)
    capfd.readouterr()
    response = NUL_REQUESTS[name](gateway)
    logged = capfd.readouterr()
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == response.status_code
    assert "Traceback" not in response.text
    _accounted_for(gateway.container, before, _row_counts(gateway.container))
    events = _log_events(logged.out + logged.err)
    assert [e for e in events if e.get("event") in {"request_rejected", "token_rejected"}], events
    assert not [e for e in events if e.get("level") == "error"], events
    assert gateway.secret not in logged.out + logged.err
