"""Registering a partner system's public keys (``wgs-gateway clients add --jwks-file``): only keys that can
verify a client assertion, each under a key id of its own.

A key no assertion algorithm can use (RSA, P-384, Ed448, X25519, an encryption key), or one of two keys
under one ``kid`` (only the first is ever looked up), used to be stored as if it were fine: the operator was
told the system was registered, and its assertions then failed with ``invalid_client`` and nothing to say
why; a key of a type the JOSE library does not know was dropped without a word. Each is refused at
registration now, naming the key, and nothing is written.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey, OKPKey, RSAKey

from gateway.auth import repository
from gateway.auth.clients import register_key_client
from gateway.clock import FixedClock
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import Unprocessable
from gateway.register.loader import load_register
from tests.auth_helpers import ClientKeys, client_assertion, token_form

pytestmark = pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # no SQL of its own

SYSTEM = "gemeente-amsterdam-vth"


def _public(key: OKPKey | ECKey | RSAKey, **extra: Any) -> dict[str, Any]:
    return dict(key.as_dict(private=False)) | extra


def _ed25519(kid: str) -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": kid})


def _register(container: Container, jwks: dict[str, Any]) -> repository.ClientRecord:
    register, _ = load_register(container.settings.register_file)
    with transaction(container.sessions) as session:
        return register_key_client(session, register, SYSTEM, ["exchange"], jwks, FixedClock(container.clock.now()))


UNUSABLE = {
    "rsa-2048": lambda: _public(RSAKey.import_key(rsa.generate_private_key(65537, 2048).public_key()), kid="r"),
    "p-384": lambda: _public(ECKey.generate_key("P-384", parameters={"kid": "p384"})),
    "ed448": lambda: _public(OKPKey.generate_key("Ed448", parameters={"kid": "ed448"})),
    "x25519": lambda: _public(OKPKey.generate_key("X25519", parameters={"kid": "x"})),
    "encryption-use": lambda: _public(_ed25519("enc"), use="enc"),
    "verify-not-in-key-ops": lambda: _public(_ed25519("ops"), key_ops=["encrypt"]),
    "other-alg": lambda: _public(_ed25519("alg"), alg="EdDSA"),
    "alg-of-another-key-type": lambda: _public(_ed25519("es"), alg="ES256"),
    "unknown-key-type": lambda: {"kty": "ML-DSA", "kid": "pq", "pub": "AAAA"},
}


@pytest.mark.parametrize("make", list(UNUSABLE.values()), ids=list(UNUSABLE))
def test_a_key_no_assertion_algorithm_can_use_is_refused_and_nothing_is_written(container: Container,
                                                                                make: Any) -> None:
    usable = _public(_ed25519("good"))
    with pytest.raises(Unprocessable) as refused:
        _register(container, {"keys": [usable, make()]})
    assert "key" in refused.value.detail
    with transaction(container.sessions) as session:
        assert repository.get_client(session, SYSTEM) is None


def test_two_keys_under_one_kid_are_refused(container: Container) -> None:
    with pytest.raises(Unprocessable) as refused:
        _register(container, {"keys": [_public(_ed25519("same")), _public(_ed25519("same"))]})
    assert "same" in refused.value.detail
    with transaction(container.sessions) as session:
        assert repository.get_client(session, SYSTEM) is None


def test_a_refused_re_key_keeps_the_keys_registered_before(client: TestClient, container: Container) -> None:
    old = _ed25519("old")
    _register(container, {"keys": [_public(old)]})
    with pytest.raises(Unprocessable):
        _register(container, {"keys": [_public(_ed25519("new")), _public(_ed25519("new"))]})
    answer = client.post("/oauth/token", data=token_form(client_assertion(container, ClientKeys(SYSTEM, old,
                                                                                                 "Ed25519"))))
    assert answer.status_code == 200, answer.text


def test_every_registered_key_signs_assertions(client: TestClient, container: Container) -> None:
    """The keys that are fine: Ed25519 and P-256, with or without ``use``/``alg``/``key_ops`` saying so."""
    keys = [ClientKeys(SYSTEM, _ed25519("ed-1"), "Ed25519"),
            ClientKeys(SYSTEM, ECKey.generate_key("P-256", parameters={"kid": "ec-1"}), "ES256"),
            ClientKeys(SYSTEM, _ed25519("ed-2"), "Ed25519")]
    extras: list[dict[str, Any]] = [{}, {"use": "sig", "alg": "ES256"}, {"key_ops": ["verify"], "alg": "Ed25519"}]
    record = _register(container, {"keys": [_public(k.key, **extra) for k, extra in zip(keys, extras, strict=True)]})
    assert [key["kid"] for key in (record.jwks or {})["keys"]] == ["ed-1", "ec-1", "ed-2"]
    for each in keys:
        answer = client.post("/oauth/token", data=token_form(client_assertion(container, each)))
        assert answer.status_code == 200, (each.key.kid, answer.text)
