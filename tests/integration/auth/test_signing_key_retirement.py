"""Retiring a token-signing key at once after it leaked (``keys rotate --retire-previous-now``, ``keys retire
KID``): a running gateway refuses the tokens the key signed from the next request on, its JWKS no longer has the
key, and the retirement is audited, or nothing is retired. A plain ``keys rotate`` keeps the old key's tokens
valid (the contrast: that grace is what a leak must not get)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from audit.tables import audit_entries
from gateway.app import create_app
from gateway.auth.jose_segments import decode_segment
from gateway.auth.setup import auth_services
from gateway.auth.tokens import HolderTokenCache
from gateway.cli import app as cli
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.auth_helpers import bearer
from tests.deployment import prepared_data_dir

runner = CliRunner()
ROUTE = "/v1/register/versions"


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Container]]:
    """A running gateway, and the operator's CLI on the same data directory (another process: the key file and
    the database are all they share)."""
    prepared_data_dir(tmp_path, monkeypatch)
    container = build_container(Settings(log_json=True))
    with TestClient(create_app(container=container)) as client:
        yield client, container
    container.close()


def _token(container: Container) -> dict[str, str]:
    return bearer(auth_services(container).tokens.issue(subject="politie-bvh", organisation="politie",
                                                        scopes=["register:read"]).access_token)


def _kids(client: TestClient) -> list[str]:
    return [key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]]


def _cli_entries(container: Container) -> list[dict[str, Any]]:
    with container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
        events = [json.loads(row.canonical)["event"] for row in rows]
    return [event for event in events if event["extra"].get("channel") == "cli"]


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _refused(result: Result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    return " ".join(result.stderr.split())


def test_a_plain_rotation_keeps_the_old_keys_tokens_valid(gateway: tuple[TestClient, Container]) -> None:
    client, container = gateway
    token, old = _token(container), _kids(client)
    _ok(runner.invoke(cli, ["keys", "rotate"]))
    assert client.get(ROUTE, headers=token).status_code == 200
    assert set(old) < set(_kids(client))


def test_rotate_retiring_the_previous_key_refuses_its_tokens_at_once(gateway: tuple[TestClient, Container]) -> None:
    client, container = gateway
    leaked = _token(container)
    assert client.get(ROUTE, headers=leaked).status_code == 200  # verified, and remembered as verified
    [old] = _kids(client)
    output = _ok(runner.invoke(cli, ["keys", "rotate", "--retire-previous-now"]))

    refused = client.get(ROUTE, headers=leaked)  # the very next request, no reload, no restart
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    [new] = _kids(client)
    assert new != old
    assert f"new signing key {new}" in output
    assert f"retired {old}: tokens signed by it are refused" in output
    fresh = _token(container)  # the running gateway signs with the new key
    assert client.get(ROUTE, headers=fresh).status_code == 200
    assert auth_services(container).tokens.signing_kid() == new
    [entry] = _cli_entries(container)
    assert entry["extra"]["action"] == "signing-keys-retired"
    assert (entry["extra"]["kids"], entry["extra"]["successor"]) == ([old], new)
    assert entry["requester"] is None  # the gateway's own key: no organisation's


def test_retiring_a_superseded_key_refuses_its_tokens_and_keeps_the_current_one(
        gateway: tuple[TestClient, Container]) -> None:
    client, container = gateway
    leaked = _token(container)
    [old] = _kids(client)
    _ok(runner.invoke(cli, ["keys", "rotate"]))
    current = _token(container)
    assert client.get(ROUTE, headers=leaked).status_code == 200  # still within its grace
    _ok(runner.invoke(cli, ["keys", "retire", old]))
    assert client.get(ROUTE, headers=leaked).status_code == 401
    assert client.get(ROUTE, headers=current).status_code == 200
    assert old not in _kids(client)
    assert old not in runner.invoke(cli, ["keys", "list"]).output  # its private part is gone from the file too
    [entry] = _cli_entries(container)
    assert entry["extra"]["kids"] == [old]
    assert "successor" not in entry["extra"]


def test_the_current_key_or_an_unknown_one_is_not_retired(gateway: tuple[TestClient, Container]) -> None:
    client, container = gateway
    token = _token(container)
    [current] = _kids(client)
    assert "--retire-previous-now" in _refused(runner.invoke(cli, ["keys", "retire", current]))
    assert "no token-signing key" in _refused(runner.invoke(cli, ["keys", "retire", "no-such-kid"]))
    assert _kids(client) == [current]
    assert client.get(ROUTE, headers=token).status_code == 200
    assert _cli_entries(container) == []


def test_a_retirement_that_cannot_be_audited_retires_nothing(gateway: tuple[TestClient, Container]) -> None:
    """The audit checkpoint key is missing, so the log cannot be written: the key stays, and so do its tokens."""
    client, container = gateway
    token = _token(container)
    [current] = _kids(client)
    (container.settings.key_dir / "audit-checkpoint.pem").rename(container.settings.key_dir / "elsewhere.pem")
    assert "not made" in _refused(runner.invoke(cli, ["keys", "rotate", "--retire-previous-now"]))
    assert _kids(client) == [current]
    assert client.get(ROUTE, headers=token).status_code == 200


def test_a_key_file_that_cannot_be_written_is_one_line_and_retires_nothing(
        gateway: tuple[TestClient, Container], monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while the key file is replaced: one line (not a traceback), no audit entry, the key stays."""
    from gateway.auth import keys

    client, container = gateway
    _ok(runner.invoke(cli, ["keys", "rotate"]))
    old, current = _kids(client)[0], container.settings.key_dir

    def disk_full(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys, "replace_whole", disk_full)
    line = _refused(runner.invoke(cli, ["keys", "retire", old]))
    assert "could not be written (No space left on device); nothing was retired" in line
    assert str(current) not in line
    monkeypatch.undo()
    assert old in _kids(client)
    assert _cli_entries(container) == []


def test_tokens_presented_to_holders_are_signed_anew_after_the_key_is_retired(
        gateway: tuple[TestClient, Container]) -> None:
    """The gateway reuses its token for a holder system until shortly before it expires; one signed by the retired
    key would be presented for minutes to holders that (rightly) no longer accept the key."""
    client, container = gateway
    holder_tokens = HolderTokenCache(auth_services(container).tokens, container.clock)
    before = asyncio.run(holder_tokens("politie-bvh"))
    assert asyncio.run(holder_tokens("politie-bvh")) == before  # reused while its key is current
    [old] = _kids(client)
    _ok(runner.invoke(cli, ["keys", "rotate", "--retire-previous-now"]))
    after = asyncio.run(holder_tokens("politie-bvh"))
    assert decode_segment(before.split(".")[0])["kid"] == old
    assert decode_segment(after.split(".")[0])["kid"] == _kids(client)[0] != old


def test_a_request_verifies_its_token_once_and_reads_the_key_files_stamp_once(
        gateway: tuple[TestClient, Container], monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limiter and the route each verified the token, and each read the key file's stamp: the route now
    takes the limiter's verification of the same token text, and the file is read once per request. Every
    request still reads it, which is what makes a retirement count from the next request on (the tests above)."""
    client, container = gateway
    auth = auth_services(container)
    token = _token(container)
    verified, stats = [], []
    real_verify, real_stat, key_file = auth.tokens.verify, Path.stat, auth.keys.path

    def verify(text: str) -> Any:
        verified.append(text)
        return real_verify(text)

    def stat(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == key_file:
            stats.append(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(auth.tokens, "verify", verify)
    monkeypatch.setattr(Path, "stat", stat)
    for _ in range(3):
        assert client.get(ROUTE, headers=token).status_code == 200
    assert len(verified) == 3
    assert len(stats) == 3


def test_a_key_retired_during_a_request_refuses_its_tokens_from_the_next_request_on(
        gateway: tuple[TestClient, Container], monkeypatch: pytest.MonkeyPatch) -> None:
    """Retired between the rate limiter's check and the route's, a key still carries the request it was checked
    for (its uses were a moment apart); the next request is refused, by the limiter (no identity: the caller's
    address's budget) and by the route."""
    client, container = gateway
    auth = auth_services(container)
    leaked = _token(container)
    real_check = auth.disabled.check
    retired: list[str] = []

    def check_then_retire(principal: Any) -> None:
        real_check(principal)
        if not retired:
            retired.append(_ok(runner.invoke(cli, ["keys", "rotate", "--retire-previous-now"])))

    monkeypatch.setattr(auth.disabled, "check", check_then_retire)
    assert client.get(ROUTE, headers=leaked).status_code == 200
    assert retired
    refused = client.get(ROUTE, headers=leaked)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.get(ROUTE, headers=_token(container)).status_code == 200


def test_the_route_verifies_a_token_other_than_the_one_the_limiter_verified(
        gateway: tuple[TestClient, Container]) -> None:
    """The verification handed on in the request's scope is taken only for the very token text it was made for:
    a request whose scope carries another token's (a layer that changed the header, a forged scope entry) has
    its own token verified, and a made-up one is a 401."""
    from gateway.auth.tokens import VERIFIED_IN_SCOPE

    client, container = gateway
    good = _token(container)["Authorization"].split(" ", 1)[1]
    principal = auth_services(container).tokens.verify(good)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    app = client.app

    async def handing_on_another(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[VERIFIED_IN_SCOPE] = (good, principal)
        await app(scope, receive, send)

    other = TestClient(handing_on_another)  # no lifespan of its own: the gateway's runs already
    refused = other.get(ROUTE, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert other.get(ROUTE, headers={"Authorization": f"Bearer {good}"}).status_code == 200
