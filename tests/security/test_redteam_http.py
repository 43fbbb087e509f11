"""Red-team probes of the HTTP surface that the injection, fuzzing and matrix tests do not make: what the
gateway's answers tell caches and browsers, and bodies that two JSON parsers would read differently.

Each test here is an attack that got through before its fix (the attacks the gateway held are listed in
docs/security.md, not repeated here)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.auth_helpers import bearer
from tests.security.world import BIBOB_REQUEST, PO_OWN, SYSTEM, World, running_world


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
