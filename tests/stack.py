"""The whole product on loopback for scenario tests: simulated partners and the gateway as separate real
HTTP servers, partner systems registered as OAuth clients with real keys, tokens from the token endpoint.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from sqlalchemy import select, text

from audit.tables import audit_entries
from connectors.enrolment import enrol
from connectors.holder_auth import JwksSource
from connectors.profiles import PROFILES
from connectors.store import PartnerStore, store_path
from connectors.world import World, build_world
from gateway.app import create_app
from gateway.auth.accounts import create_account
from gateway.client.api import GatewayClient
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import transaction
from gateway.settings import Settings
from tests.auth_helpers import ClientKeys, register_client
from tests.migrated import migrated_sqlite
from tests.partner_servers import partner_servers
from tests.servers import serve_app

REQUESTERS = {"gemeente-amsterdam-vth": ["exchange", "discovery", "enrol"],
              "belastingdienst-ivs": ["exchange", "discovery", "enrol"],
              "abn-amro-fec": ["exchange", "discovery", "enrol"], "politie-bvh": ["exchange", "discovery", "enrol"]}


@dataclass
class Stack:
    gateway_url: str
    partner_urls: dict[str, str]
    container: Container
    clock: FixedClock
    world: World
    clients: dict[str, ClientKeys] = field(default_factory=dict)
    partners_dir: Path = Path()
    _tokens: dict[str, str] = field(default_factory=dict)
    _accounts: set[str] = field(default_factory=set)

    @property
    def issuer(self) -> str:
        """The gateway's issuer identifier, which its metadata names (not ``gateway_url``): a ``GatewayClient``
        of this stack is made with it."""
        return self.container.settings.issuer

    def forget_tokens(self) -> None:
        """After moving the clock far ahead every token has expired: fetch new ones on next use."""
        self._tokens.clear()

    def token(self, system: str) -> str:
        if system not in self._tokens:
            keys = self.clients[system]
            now = int(self.clock.now().timestamp())
            audience = f"{self.container.settings.issuer}/oauth/token"
            assertion = jwt.encode({"alg": "Ed25519", "kid": keys.key.kid},
                                   {"iss": system, "sub": system, "aud": audience, "iat": now, "exp": now + 60,
                                    "jti": str(uuid.uuid4())},
                                   keys.key, algorithms=["Ed25519"])
            response = httpx.post(f"{self.gateway_url}/oauth/token", data={
                "grant_type": "client_credentials", "client_assertion": assertion,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
            response.raise_for_status()
            self._tokens[system] = response.json()["access_token"]
        return self._tokens[system]

    def post(self, system: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
             ) -> httpx.Response:
        return httpx.post(f"{self.gateway_url}{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {self.token(system)}", **(headers or {})})

    def get(self, system: str, path: str) -> httpx.Response:
        return httpx.get(f"{self.gateway_url}{path}", headers={"Authorization": f"Bearer {self.token(system)}"})

    def client(self, system: str) -> GatewayClient:
        """The typed partner client for ``system`` (registered as an OAuth client on first use)."""
        if system not in self.clients:
            self.clients[system] = register_client(self.container, system, ["enrol"])
        keys = self.clients[system]
        return GatewayClient(self.gateway_url, keys.system_id, keys.key, issuer=self.issuer,
                             clock=lambda: self.clock.now().timestamp())

    async def enrol_all(self) -> dict[str, int]:
        """Every simulated partner enrols the subjects it holds in each partnership it takes part in."""
        register = self.container.services["register"].current()
        done = {}
        for system in self.partner_urls:
            partnerships = register.partnerships_of_system(system)
            store = PartnerStore(store_path(self.partners_dir, system))
            try:
                async with self.client(system) as client:
                    done[system] = await enrol(store, client, partnerships, profile=PROFILES[system])
            finally:
                store.close()
        return done

    async def own_pseudonyms(self, system: str, partnership: str, refs: list[str]) -> list[str]:
        """``system``'s own pseudonyms for world subjects (from the identifiers it would know)."""
        async with self.client(system) as client:
            return await client.own_pseudonyms(partnership, [self.world.identifier_of(r) for r in refs])

    def person(self, username: str, organisation: str, roles: list[str]) -> str:
        """An account made by the CLI's code path, signed in over HTTP; returns its access token."""
        key = f"person:{username}"
        if key not in self._tokens:
            password = "correct horse battery staple"
            if username not in self._accounts:
                with transaction(self.container.sessions) as session:
                    create_account(session, username, organisation, roles, password, self.clock)
                self._accounts.add(username)
            response = httpx.post(f"{self.gateway_url}/v1/auth/login",
                                  json={"username": username, "password": password})
            response.raise_for_status()
            self._tokens[key] = response.json()["access_token"]
        return self._tokens[key]

    def logged(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of the audit entries an answer's receipt cites, in log order."""
        indices = answer["receipt"]["audit_indices"]
        with self.container.engine.connect() as connection:
            return [json.loads(c)["event"] for c in connection.execute(select(audit_entries.c.canonical).where(
                audit_entries.c.log_index.in_(indices)).order_by(audit_entries.c.log_index)).scalars()]

    def events(self) -> list[dict[str, Any]]:
        """The events of every audit entry, in log order."""
        with self.container.engine.connect() as connection:
            rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
            return [json.loads(canonical)["event"] for canonical in rows.scalars()]

    def logged_for_case(self, case: str) -> list[dict[str, Any]]:
        """Every entry of the requests with case reference ``case`` (each request's own entries, and those of its
        id that carry no case reference), in log order."""
        events = self.events()
        ids = {e["exchange_id"] for e in events if (e.get("extra") or {}).get("case_reference") == case}
        return [e for e in events if e["exchange_id"] in ids]

    def call(self, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """A request with an explicit token (people, or a system's token from ``token``)."""
        return httpx.request(method, f"{self.gateway_url}{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})

    def allow(self, token: str, case_id: str, categories: list[str], motivation: str) -> str:
        """The person of ``token`` decides escalation case ``case_id`` (at its version now) to allow ``categories``;
        the decision's id, which a re-run cites."""
        case = self.call(token, "GET", f"/v1/escalations/{case_id}").json()
        decided = self.call(token, "POST", f"/v1/escalations/{case_id}/decision", {
            "expected_version": case["version"], "outcome": "allow", "permitted_categories": categories,
            "motivation": motivation})
        assert decided.status_code == 200, decided.text
        return str(decided.json()["decision"]["id"])


@contextmanager
def running_stack(tmp: Path, *, clock: FixedClock | None = None, over_share: set[str] | None = None,
                  settings_overrides: dict[str, Any] | None = None,
                  holder_overrides: dict[str, str] | None = None) -> Iterator[Stack]:
    """Gateway and simulated partners over real HTTP; ``holder_overrides`` (system -> URL) points the gateway's
    connector for a system elsewhere (e.g. a deliberately slow holder)."""
    clock = clock or FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))  # Wednesday 11:00 in Amsterdam
    url = migrated_sqlite(tmp)
    source = JwksSource()
    with ExitStack() as stack:
        issuer = (settings_overrides or {}).get("issuer") or Settings.model_fields["issuer"].default
        partners = stack.enter_context(partner_servers(tmp / "partners", source=source, over_share=over_share,
                                                       now=lambda: clock.now().timestamp(), issuer=issuer))
        settings = Settings(data_dir=tmp, database_url=url, connector_endpoints=partners | (holder_overrides or {}),
                            **({"connector_retries": 1} | (settings_overrides or {})))
        container = build_container(settings, clock)
        gateway_url = stack.enter_context(serve_app(create_app(container=container)))
        source.point_to(f"{gateway_url}/.well-known/jwks.json")
        result = Stack(gateway_url, partners, container, clock, build_world(2025), partners_dir=tmp / "partners")
        for system, scopes in REQUESTERS.items():
            result.clients[system] = register_client(container, system, scopes)
        yield result
    container.close()


@contextmanager
def stack_with_holder(tmp: Path, holder_app: Any, systems: list[str],
                      settings_overrides: dict[str, Any] | None = None) -> Iterator[Stack]:
    """``running_stack`` whose connectors for ``systems`` reach ``holder_app`` (a test's own holder, served on
    loopback) instead of those systems' simulators."""
    with serve_app(holder_app) as url, running_stack(tmp, holder_overrides=dict.fromkeys(systems, url),
                                                     settings_overrides=settings_overrides) as running:
        yield running


@contextmanager
def inserts_refused(stack: Stack, trigger: str, table: str, when: str = "") -> Iterator[None]:
    """The database refuses every insert into ``table`` (those of them ``when`` selects: a condition on ``NEW``),
    as a full disk or a lost connection would, until the block ends: an SQLite trigger named ``trigger``, which a
    test may drop earlier (``DROP TRIGGER IF EXISTS``) to let the rows in again."""
    condition = f"WHEN {when} " if when else ""
    with stack.container.engine.begin() as connection:
        connection.execute(text(f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} {condition}"
                                "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"))
    try:
        yield
    finally:
        with stack.container.engine.begin() as connection:
            connection.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
