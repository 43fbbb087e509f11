"""The OPA-server engine over https: the server certificate is verified by default (the system's CAs), a
configured CA file is what it is verified against, and the bearer token is sent to the server but named in
no error. (Nothing tested this; disabling verification makes the first and third cases fail.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.engine import OpaServerPolicyEngine
from gateway.policy.errors import PolicyUnavailable
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_decision_table import MUNICIPALITY, REGISTER, _input
from tests.opa_test_server import create_opa_test_app
from tests.servers import serve_app
from tests.tls_certificates import private_ca_certificates

ASKED = _input(MUNICIPALITY, "politie", ["police_incidents"])
TOKEN = "opa-token-3f9a0c1d2e4b5a6978c0"


class Recording:
    """The OPA test app, recording the Authorization header of every request."""

    def __init__(self) -> None:
        self.app = create_opa_test_app(POLICIES_DIR)
        self.authorizations: list[str | None] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.authorizations.append(headers[b"authorization"].decode() if b"authorization" in headers else None)
        await self.app(scope, receive, send)


@pytest.fixture
def https_opa(tmp_path: Path) -> Iterator[tuple[str, Path, Recording]]:
    ca_file, certificate, key = private_ca_certificates(tmp_path)
    server = Recording()
    with serve_app(server, ssl_certfile=str(certificate), ssl_keyfile=str(key)) as url:
        yield url, ca_file, server


async def _outcome(url: str, ca_file: Path | None) -> str:
    engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0, token=TOKEN,
                                   ca_file=str(ca_file) if ca_file else None)
    try:
        return (await engine.decide("exchange", ASKED)).outcome
    finally:
        await engine.aclose()


async def test_an_unverifiable_certificate_is_refused_by_default(https_opa: tuple[str, Path, Recording]) -> None:
    url, _, server = https_opa
    with pytest.raises(PolicyUnavailable) as refused:
        await _outcome(url, None)
    assert TOKEN not in str(refused.value)
    assert server.authorizations == []  # the token never left over the unverified connection


async def test_the_configured_ca_file_is_trusted(https_opa: tuple[str, Path, Recording]) -> None:
    url, ca_file, server = https_opa
    assert await _outcome(url, ca_file) == "allowed"
    assert server.authorizations
    assert set(server.authorizations) == {f"Bearer {TOKEN}"}


async def test_a_certificate_of_another_ca_is_refused(https_opa: tuple[str, Path, Recording],
                                                      tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = private_ca_certificates(other)
    with pytest.raises(PolicyUnavailable) as refused:
        await _outcome(https_opa[0], other_ca)
    assert TOKEN not in str(refused.value)
    assert https_opa[2].authorizations == []
