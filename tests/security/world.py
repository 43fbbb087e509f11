"""A populated gateway for the security tests: real accounts, real partner-system clients and tokens, real
exchanges, escalation cases, legal gaps and audit entries — all made through the API, so that an "allowed"
answer in the authorisation matrix means the caller really reached the object.

Callers (``CALLERS``) are the kinds of the authorisation matrix. The partnership under test is the RIEC
Amsterdam-Amstelland; the municipality's system asks, the police holds.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey

from gateway.app import create_app
from gateway.auth import repository as accounts
from gateway.auth.setup import auth_services
from gateway.auth.tokens import AccessTokenService
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import transaction
from gateway.ids import new_id
from gateway.settings import Settings
from tests.auth_helpers import ClientKeys, bearer, client_assertion, issued_person_token, register_client, token_form
from tests.migrated import migrated_sqlite

RIEC = "riec-amsterdam-amstelland"
BIBOB = "bibob-integrity-check"
SUBJECT = "subj-3f9a0c1d2e4b5a6978c0d1e2"
PASSWORD = "correct horse battery staple"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday within office hours

SYSTEM = "gemeente-amsterdam-vth"  # requester, RIEC and ZVH participant
OTHER_SYSTEM = "abn-amro-fec"  # a bank: FEC only, not in the RIEC
SYSTEM_SCOPES = ("audit:receipts", "discovery", "enrol", "exchange", "register:read")

# Caller kinds of the authorisation matrix.
ANONYMOUS, EXPIRED, FORGED, WRONG_AUDIENCE = "anonymous", "expired-token", "forged-token", "wrong-audience"
STOLEN_BOUND = "bound-token-without-its-certificate"  # RFC 8705: a copy of a certificate-bound token
SYS, SYS_NO_SCOPE, SYS_OTHER = "system", "system-without-scope", "system-other-partnership"
PO_OWN, PO_HOLDER, PO_COORD = "po-requester-org", "po-holder-org", "po-coordinating"
PO_OTHER, ADMIN, CONTACT = "po-other-org", "administrator", "contact-point"
BAD_TOKENS = (ANONYMOUS, EXPIRED, FORGED, WRONG_AUDIENCE, STOLEN_BOUND)
SYSTEMS = (SYS, SYS_NO_SCOPE, SYS_OTHER)
PEOPLE: dict[str, tuple[str, str, str]] = {  # caller -> (username, organisation, role)
    PO_OWN: ("po-gemeente", "gemeente-amsterdam", "privacy-officer"),
    PO_HOLDER: ("po-politie", "politie", "privacy-officer"),
    PO_COORD: ("desk-riec", "riec-aa", "coordinating-privacy-officer"),
    PO_OTHER: ("po-abn", "abn-amro", "privacy-officer"),
    ADMIN: ("admin-lsp", "landelijk-steunpunt", "administrator"),
    CONTACT: ("cp-gemeente", "gemeente-amsterdam", "contact-point"),
}
CALLERS = (*BAD_TOKENS, *SYSTEMS, *PEOPLE)

BIBOB_REQUEST: dict[str, Any] = {
    "partnership": RIEC, "purpose": BIBOB, "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-117", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-42"},
    "subjects": [{"ref": SUBJECT}], "categories": ["company_registration", "police_incidents"], "holders": "all"}
# Criminal intelligence is never shared: the police target is denied, so the requester may object.
DENIED_REQUEST: dict[str, Any] = BIBOB_REQUEST | {"categories": ["criminal_intelligence"], "holders": ["politie"]}


def all_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app serves; HEAD is Starlette's automatic twin of GET."""
    return {(method, route.path) for route in iter_route_contexts(app.routes)
            for method in (route.methods or ()) if method != "HEAD" and route.path}


@dataclass
class World:
    client: TestClient
    container: Container
    app: FastAPI
    keys: dict[str, ClientKeys] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    consoles: dict[str, TestClient] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)

    # -- credentials -----------------------------------------------------------------------------------
    def system_token(self, system: str, scopes: tuple[str, ...] | None = None) -> str:
        key = f"{system}|{' '.join(sorted(scopes)) if scopes is not None else '*'}"
        if key not in self.tokens:
            scope = " ".join(sorted(scopes)) if scopes is not None else None
            form = token_form(client_assertion(self.container, self.keys[system]), scope)
            response = self.client.post("/oauth/token", data=form)
            assert response.status_code == 200, response.text
            self.tokens[key] = str(response.json()["access_token"])
        return self.tokens[key]

    def person_token(self, caller: str) -> str:
        """What ``POST /v1/auth/login`` issues to the person (the login route itself is in the matrix; issuing
        directly saves an argon2 verification per person)."""
        if caller not in self.tokens:
            username, organisation, role = PEOPLE[caller]
            self.tokens[caller] = issued_person_token(self.container, username, organisation, [role])
        return self.tokens[caller]

    def bad_token(self, kind: str) -> str | None:
        """Tokens that must never get past authentication (all name the municipality's system, all scopes)."""
        if kind == ANONYMOUS:
            return None
        auth = auth_services(self.container)
        claims = {"subject": SYSTEM, "organisation": "gemeente-amsterdam", "scopes": list(SYSTEM_SCOPES)}
        if kind == EXPIRED:
            past = FixedClock(self.container.clock.now() - timedelta(hours=2))
            return AccessTokenService(auth.keys, past, auth.tokens.issuer, auth.tokens.audience, 300).issue(
                **claims).access_token  # type: ignore[arg-type]
        if kind == WRONG_AUDIENCE:
            return auth.tokens.issue(**claims, audience="another-gateway").access_token  # type: ignore[arg-type]
        if kind == STOLEN_BOUND:  # valid in every other respect: only the certificate it lacks refuses it
            return auth.tokens.issue(**claims, certificate_thumbprint="A" * 43).access_token  # type: ignore[arg-type]
        assert kind == FORGED
        # Signed by a key of our own under the gateway's current key id: the signature cannot verify.
        attacker = OKPKey.generate_key("Ed25519", parameters={"kid": auth.keys.current_kid()})
        now = int(self.container.clock.now().timestamp())
        body = {"iss": auth.tokens.issuer, "aud": auth.tokens.audience, "sub": SYSTEM, "org": "gemeente-amsterdam",
                "scope": " ".join(SYSTEM_SCOPES), "iat": now, "nbf": now, "exp": now + 300,
                "jti": str(uuid.uuid4()), "kind": "system"}
        return jwt.encode({"alg": "Ed25519", "kid": attacker.kid}, body, attacker, algorithms=["Ed25519"])

    def token_for(self, caller: str, needed_scopes: tuple[str, ...] = ()) -> str | None:
        """The bearer token of ``caller``; a system "without the scope" lacks every scope the route needs."""
        if caller in BAD_TOKENS:
            return self.bad_token(caller)
        if caller == SYS:
            return self.system_token(SYSTEM)
        if caller == SYS_NO_SCOPE:
            remaining = tuple(s for s in SYSTEM_SCOPES if s not in needed_scopes)
            return self.system_token(SYSTEM, remaining)
        if caller == SYS_OTHER:
            return self.system_token(OTHER_SYSTEM)
        return self.person_token(caller)

    def headers_for(self, caller: str, needed_scopes: tuple[str, ...] = ()) -> dict[str, str]:
        token = self.token_for(caller, needed_scopes)
        return bearer(token) if token else {}

    # -- console sessions ------------------------------------------------------------------------------
    def console(self, caller: str, *, fresh: bool = False) -> TestClient:
        """A cookie jar of ``caller``: people are signed in through the real form; others hold only the
        anonymous session of the sign-in page (and send their bearer token, which the console ignores)."""
        if fresh or caller not in self.consoles:
            browser = TestClient(self.app, base_url="https://testserver", follow_redirects=False)  # Secure cookie
            page = browser.get("/console/login")
            assert page.status_code == 200, page.text
            if caller in PEOPLE:
                signed = browser.post("/console/login", data={
                    "username": PEOPLE[caller][0], "password": PASSWORD, "csrf_token": csrf_of(page.text),
                    "next": "/console"})
                assert signed.status_code == 303, signed.text
            if fresh:
                return browser
            self.consoles[caller] = browser
        return self.consoles[caller]

    def console_csrf(self, browser: TestClient, caller: str) -> str:
        """The CSRF token of the browser's session, from a page it may see."""
        page = browser.get("/console/register" if caller in PEOPLE else "/console/login")
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    # -- objects ---------------------------------------------------------------------------------------
    def exchange(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post("/v1/exchanges", json=body or BIBOB_REQUEST,
                                    headers=bearer(self.system_token(SYSTEM)))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def denied_exchange(self) -> str:
        result = self.exchange(DENIED_REQUEST)
        assert [t["outcome"] for t in result["targets"]] == ["denied"], result
        return str(result["exchange_id"])

    def fresh_case(self) -> dict[str, Any]:
        """An open tier-1 case: the municipality's system objects to the police target's denial."""
        response = self.client.post("/v1/escalations", headers=bearer(self.system_token(SYSTEM)), json={
            "exchange_id": self.denied_exchange(), "holder": "politie",
            "motivation": "The incidents are needed for the Bibob advice."})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def fresh_gap(self) -> dict[str, Any]:
        case = self.fresh_case()
        response = self.client.post(f"/v1/escalations/{case['id']}/legal-gap",
                                    headers=bearer(self.person_token(PO_OWN)),
                                    json={"title": "No basis for police incidents in Bibob checks",
                                          "description": "The covenant does not name the category."})
        assert response.status_code == 200, response.text
        return dict(response.json())


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


@contextmanager
def running_world(tmp: Path, **settings_overrides: Any) -> Iterator[World]:
    """The gateway on a fresh SQLite file with a fixed clock, its accounts, clients and objects."""
    url = migrated_sqlite(tmp)
    settings = Settings(data_dir=tmp, database_url=url, log_json=True, **settings_overrides)
    container = build_container(settings, FixedClock(NOW))
    app = create_app(container=container)
    with TestClient(app) as client:
        world = World(client, container, app)
        world.keys[SYSTEM] = register_client(container, SYSTEM, list(SYSTEM_SCOPES))
        world.keys[OTHER_SYSTEM] = register_client(container, OTHER_SYSTEM, ["discovery", "exchange", "register:read"])
        # Minimal argon2 parameters: the encoded hash carries them, so every sign-in runs the real check, fast.
        password_hash = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(PASSWORD)
        with transaction(container.sessions) as session:
            for username, organisation, role in [*PEOPLE.values(),
                                                 ("console-probe", "gemeente-amsterdam", "privacy-officer")]:
                accounts.insert_account(session, accounts.AccountRecord(
                    new_id(), username, organisation, [role], password_hash, True), container.clock.now())
        base = world.exchange()
        world.ids["exchange"] = base["exchange_id"]
        case = world.fresh_case()
        world.ids["case"] = case["id"]
        world.ids["gap"] = world.fresh_gap()["id"]
        entries = client.get("/v1/audit/entries", params={"event_type": "policy.decided", "limit": 50},
                             headers=bearer(world.person_token(PO_OWN))).json()["entries"]
        world.ids["entry"] = next(e["index"] for e in entries
                                  if e["entry"]["event"].get("holder") == "politie")
        world.ids["trace"] = secrets.token_hex(4)
        yield world
        for browser in world.consoles.values():
            browser.close()
    container.close()
