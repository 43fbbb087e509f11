"""Certificate pinning (RFC 8705 §2.1.1's ``tls_client_auth``, adapted) over the real app, on SQLite and
PostgreSQL: a pinned, certificate-bound client gets a token only over one of its pinned certificates. The attack
it answers: the client's leaked key together with another certificate the partnership's CA issued (so one the
proxy verifies and forwards) got a bound token in the client's name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.auth import repository
from gateway.auth.access_changes import register_client, set_certificate_bound
from gateway.auth.jose_segments import decode_segment
from gateway.auth.setup import auth_services
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import Conflict, Unprocessable
from gateway.register.loader import load_register
from gateway.settings import Settings
from tests.auth_helpers import ClientKeys, bearer, client_assertion, token_form
from tests.auth_helpers import register_client as register_key
from tests.tls_certificates import issued

SYSTEM = "politie-bvh"
PROXY = "10.0.0.7"
HEADER = "X-Client-Cert"
SUBJECT = "J. Jansen, beheerder politie-bvh"  # a certificate's subject may name a person: never in an entry
PARTNER = issued(SUBJECT)
RENEWED = issued(SUBJECT)  # its renewal, overlapping
OTHER = issued("kvk-handelsregister")  # another system's certificate of the same CA: the proxy forwards it too


def _forwarded(pem: bytes) -> dict[str, str]:
    return {HEADER: quote(pem.decode(), safe="")}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, log_json=True, client_cert_header=HEADER,
                    client_cert_proxies=PROXY)  # as the env gives it


@pytest.fixture
def via_proxy(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, client=(PROXY, 40000)) as test_client:
        yield test_client


def _pinned_client(container: Container, *pins: str) -> ClientKeys:
    keys = register_key(container, SYSTEM, ["register:read"])
    assert set_certificate_bound(container.settings, container.engine, SYSTEM, True, pins)
    auth_services(container).disabled.load()  # what the timer does every interval (binding bumps the generation)
    return keys


def _token_response(http: TestClient, container: Container, keys: ClientKeys, pem: bytes | None) -> Any:
    return http.post("/oauth/token", data=token_form(client_assertion(container, keys)),
                     headers=_forwarded(pem) if pem is not None else {})


def _token(http: TestClient, container: Container, keys: ClientKeys, pem: bytes) -> str:
    response = _token_response(http, container, keys, pem)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _refused(response: Any, error: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == f'Bearer error="{error}"'
    return response.json()  # type: ignore[no-any-return]


def _stored(container: Container) -> repository.ClientRecord:
    with transaction(container.sessions) as session:
        stored = repository.get_client(session, SYSTEM)
    assert stored is not None
    return stored


def _canonical_entries(container: Container) -> list[str]:
    with container.engine.connect() as connection:
        return list(connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
                    .scalars())


def _cli_entries(container: Container) -> list[dict[str, Any]]:
    events = [json.loads(canonical)["event"] for canonical in _canonical_entries(container)]
    return [e["extra"] for e in events if e["extra"].get("channel") == "cli"]


def test_the_client_key_with_another_certificate_of_the_ca_gets_no_token(via_proxy: TestClient,
                                                                         container: Container) -> None:
    """The attack: the right client key (a valid assertion) over a certificate the proxy verified, but not the
    client's. Refused as every client-authentication failure is, and the pinned certificate still works."""
    keys = _pinned_client(container, PARTNER.thumbprint)
    problem = _refused(_token_response(via_proxy, container, keys, OTHER.pem), "invalid_client")
    assert problem["error"] == "invalid_client"
    assert "pinned" in problem["error_description"]
    _refused(_token_response(via_proxy, container, keys, None), "invalid_client")
    token = _token(via_proxy, container, keys, PARTNER.pem)
    assert decode_segment(token.split(".")[1])["cnf"] == {"x5t#S256": PARTNER.thumbprint}
    assert via_proxy.get("/v1/register", headers=bearer(token) | _forwarded(PARTNER.pem)).status_code == 200


def test_an_unpinned_bound_client_takes_any_certificate_the_proxy_verified(via_proxy: TestClient,
                                                                           container: Container) -> None:
    """What binding without pins is (and what the CLI warns of): another system's certificate does."""
    keys = _pinned_client(container)
    assert _stored(container).certificate_pins == ()
    assert _token_response(via_proxy, container, keys, OTHER.pem).status_code == 200


def test_two_pins_let_a_renewal_overlap_and_each_token_stays_bound_to_its_own(via_proxy: TestClient,
                                                                              container: Container) -> None:
    keys = _pinned_client(container, PARTNER.thumbprint, RENEWED.thumbprint)
    old = _token(via_proxy, container, keys, PARTNER.pem)
    new = _token(via_proxy, container, keys, RENEWED.pem)
    assert via_proxy.get("/v1/register", headers=bearer(new) | _forwarded(RENEWED.pem)).status_code == 200
    # A route still checks cnf: a token is good over its own certificate only, not any pinned one
    _refused(via_proxy.get("/v1/register", headers=bearer(old) | _forwarded(RENEWED.pem)), "invalid_token")
    _refused(via_proxy.get("/v1/register", headers=bearer(new) | _forwarded(PARTNER.pem)), "invalid_token")
    _refused(_token_response(via_proxy, container, keys, OTHER.pem), "invalid_client")


def test_changing_the_pins_ends_the_tokens_before_and_is_audited_with_thumbprints_only(
        via_proxy: TestClient, container: Container) -> None:
    keys = _pinned_client(container, PARTNER.thumbprint)
    before = _token(via_proxy, container, keys, PARTNER.pem)
    generation = _stored(container).key_generation
    # Again with the same pins, or without any (a pinned client keeps its pins): nothing changes, no entry
    assert not set_certificate_bound(container.settings, container.engine, SYSTEM, True, [PARTNER.thumbprint])
    assert not set_certificate_bound(container.settings, container.engine, SYSTEM, True)
    assert _stored(container).certificate_pins == (PARTNER.thumbprint,)

    assert set_certificate_bound(container.settings, container.engine, SYSTEM, True, [RENEWED.thumbprint])
    auth_services(container).disabled.load()
    assert _stored(container).key_generation == generation + 1
    _refused(via_proxy.get("/v1/register", headers=bearer(before) | _forwarded(PARTNER.pem)), "invalid_token")
    _refused(_token_response(via_proxy, container, keys, PARTNER.pem), "invalid_client")  # no longer pinned
    assert _token_response(via_proxy, container, keys, RENEWED.pem).status_code == 200

    entries = _cli_entries(container)
    assert entries == [
        {"action": "client-certificate-bound", "channel": "cli", "client": SYSTEM, "key_generation": 1,
         "certificate_thumbprints": [PARTNER.thumbprint]},
        {"action": "client-certificate-bound", "channel": "cli", "client": SYSTEM, "key_generation": 2,
         "certificate_thumbprints": [RENEWED.thumbprint]}]
    for canonical in _canonical_entries(container):  # nothing of a certificate but its thumbprint
        assert "Jansen" not in canonical
        assert "partner systems test CA" not in canonical


def test_unbinding_clears_the_pins(via_proxy: TestClient, container: Container) -> None:
    keys = _pinned_client(container, PARTNER.thumbprint)
    assert set_certificate_bound(container.settings, container.engine, SYSTEM, False)
    stored = _stored(container)
    assert (stored.certificate_bound, stored.certificate_pins) == (False, ())
    with pytest.raises(Unprocessable, match="unbinding"):
        set_certificate_bound(container.settings, container.engine, SYSTEM, False, [PARTNER.thumbprint])
    # Bound again without pins: any verified certificate, not the pins it had before unbinding
    assert set_certificate_bound(container.settings, container.engine, SYSTEM, True)
    auth_services(container).disabled.load()
    assert _token_response(via_proxy, container, keys, OTHER.pem).status_code == 200


def test_a_pin_change_racing_another_change_writes_nothing(via_proxy: TestClient, container: Container,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins changed (here: by a re-key that pinned) between reading the client and writing the new pins: the
    write is refused, so that nobody's pins are overwritten unseen and no entry names the wrong generation."""
    from gateway.auth import access_changes

    _pinned_client(container, PARTNER.thumbprint)
    original = access_changes.audited

    def changed_meanwhile(*args: Any) -> None:
        with transaction(container.sessions) as session:
            assert repository.set_client_certificate_bound(session, SYSTEM, True, [OTHER.thumbprint],
                                                           generation=_stored(container).key_generation)
        original(*args)

    monkeypatch.setattr(access_changes, "audited", changed_meanwhile)
    with pytest.raises(Conflict):
        set_certificate_bound(container.settings, container.engine, SYSTEM, True, [RENEWED.thumbprint])
    assert _stored(container).certificate_pins == (OTHER.thumbprint,)
    assert len(_cli_entries(container)) == 1  # the first binding's only


def test_new_credentials_can_pin_and_otherwise_keep_the_pins(via_proxy: TestClient, container: Container) -> None:
    register, _ = load_register(container.settings.register_file)
    keys = register_key(container, SYSTEM, ["register:read"])
    jwks = {"keys": [keys.key.as_dict(private=False)]}

    def rekey(bound: bool, pins: tuple[str, ...] = ()) -> repository.ClientRecord:
        return register_client(container.settings, container.engine, register, SYSTEM, ["register:read"],
                               container.clock, jwks=jwks, certificate_bound=bound, certificate_pins=pins).record

    assert rekey(True, (PARTNER.thumbprint,)).certificate_pins == (PARTNER.thumbprint,)
    assert rekey(True).certificate_pins == (PARTNER.thumbprint,)
    assert rekey(False).certificate_pins == (PARTNER.thumbprint,)
    with pytest.raises(Unprocessable, match="certificate-bound client only"):
        rekey(False, (OTHER.thumbprint,))
    auth_services(container).disabled.load()
    _refused(_token_response(via_proxy, container, keys, OTHER.pem), "invalid_client")
    assert _token_response(via_proxy, container, keys, PARTNER.pem).status_code == 200
    assert [entry.get("certificate_thumbprints") for entry in _cli_entries(container)] == [
        [PARTNER.thumbprint], None, None]
