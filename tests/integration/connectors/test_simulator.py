"""A simulated partner as a service: its HTTP contract (problem+json, OpenAPI) and its command line, started as
a real process the way the demo and docker-compose start it."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from connectors import world as w
from connectors.cli import app as cli
from connectors.holder_auth import JwksSource
from connectors.http_connector import HttpConnector
from connectors.protocol import HolderQuery
from connectors.world import build_world
from tests.partner_servers import partner_servers_fixture
from tests.servers import serve_app
from tests.tls_certificates import private_ca_certificates

unauthenticated = partner_servers_fixture([w.BANK], scope="module")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_invalid_requests_are_problem_json_without_echoing_content(unauthenticated: dict[str, str]) -> None:
    url = unauthenticated[w.BANK]
    unknown_field = httpx.post(f"{url}/holder/v1/query", json={
        "request_id": "q", "partnership": "fec", "purpose": "p", "requester_organisation": "fiod",
        "categories": ["bank_accounts"], "subjects": ["subj-secret-ref-0001"], "bsn": "111222333"})
    assert unknown_field.status_code == 422
    assert unknown_field.headers["content-type"] == "application/problem+json"
    assert "body.bsn" in unknown_field.json()["detail"]
    assert "111222333" not in unknown_field.text
    assert "subj-secret-ref-0001" not in unknown_field.text
    not_json = httpx.post(f"{url}/holder/v1/discover", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    missing = httpx.get(f"{url}/holder/v2/query")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_openapi_describes_the_holder_protocol(unauthenticated: dict[str, str]) -> None:
    document = httpx.get(f"{unauthenticated[w.BANK]}/openapi.json").json()
    assert {"/holder/v1/query", "/holder/v1/discover", "/health"} <= set(document["paths"])
    assert "401" in document["paths"]["/holder/v1/query"]["post"]["responses"]
    assert {"HolderQuery", "HolderAnswer", "HolderDiscovery", "DiscoveryAnswer"} <= set(
        document["components"]["schemas"])


def test_list_shows_every_partner() -> None:
    result = CliRunner().invoke(cli, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for system in (w.POLICE, w.TAX, w.KVK, w.MUNICIPALITY, w.FIOD, w.BANK, w.OM):
        assert system in result.output


def test_serve_refuses_to_run_without_keys_unless_told() -> None:
    result = CliRunner().invoke(cli, ["serve", "--partner", w.POLICE], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "--jwks-url or --jwks-file" in result.output
    unknown = CliRunner().invoke(cli, ["serve", "--partner", "rabobank-fec", "--no-auth"], env={"COLUMNS": "200"})
    assert unknown.exit_code == 2
    assert "unknown partner" in unknown.output


def test_serve_verifies_the_jwks_url_against_the_ca_file_it_is_given(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``--jwks-ca-file`` (``WGS_PARTNER_JWKS_CA_FILE``) reaches the key source: the partner it would serve
    fetches the gateway's keys from an https URL of a private CA; an unreadable bundle stops it at start."""
    from connectors import cli as cli_module

    served: list[JwksSource] = []
    monkeypatch.setattr(cli_module, "create_partner_app", lambda *_a, jwks, **_k: served.append(jwks))
    monkeypatch.setattr(uvicorn, "run", lambda *_a, **_k: None)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-https"})
    jwks_app = FastAPI()
    jwks_app.get("/.well-known/jwks.json")(lambda: {"keys": [key.as_dict(private=False)]})
    ca_file, certificate, private_key = private_ca_certificates(tmp_path)
    with serve_app(jwks_app, ssl_certfile=str(certificate), ssl_keyfile=str(private_key)) as gateway:
        url = f"{gateway}/.well-known/jwks.json"
        result = CliRunner().invoke(cli, ["serve", "--partner", w.FIOD, "--data-dir", str(tmp_path / "data"),
                                          "--jwks-url", url], env={"WGS_PARTNER_JWKS_CA_FILE": str(ca_file)})
        assert result.exit_code == 0, result.output
        assert [k.kid for k in served[0].keys().keys] == ["gw-https"]
    missing = CliRunner().invoke(cli, ["serve", "--partner", w.FIOD, "--jwks-url", url,
                                       "--jwks-ca-file", str(tmp_path / "no-such-ca.pem")], env={"COLUMNS": "200"})
    assert missing.exit_code == 2
    assert "--jwks-ca-file" in missing.output
    assert len(served) == 1


def test_serve_passes_the_key_sets_max_age_and_grace_to_the_key_source(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``--jwks-max-age`` and ``--jwks-stale-grace`` (``WGS_PARTNER_JWKS_MAX_AGE``, ``..._STALE_GRACE``) reach
    the key source; a max age under a second is refused at start (it would re-read the keys on every token)."""
    from connectors import cli as cli_module

    served: list[JwksSource] = []
    monkeypatch.setattr(cli_module, "create_partner_app", lambda *_a, jwks, **_k: served.append(jwks))
    monkeypatch.setattr(uvicorn, "run", lambda *_a, **_k: None)
    monkeypatch.setattr(gc, "freeze", lambda: None)
    base = ["serve", "--partner", w.FIOD, "--data-dir", str(tmp_path / "data"), "--jwks-url", "http://gw/jwks"]
    result = CliRunner().invoke(cli, [*base, "--jwks-max-age", "30"], env={"WGS_PARTNER_JWKS_STALE_GRACE": "45"})
    assert result.exit_code == 0, result.output
    assert (served[0]._max_age, served[0]._stale_grace) == (30, 45)  # what the options set
    refused = CliRunner().invoke(cli, [*base, "--jwks-max-age", "0"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2
    assert "--jwks-max-age" in refused.output
    assert len(served) == 1


@pytest.fixture(scope="module")
def served_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OKPKey, Path]]:
    """``python -m connectors.simulator serve`` as a separate process, keys from a JWKS file."""
    tmp = tmp_path_factory.mktemp("process")
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-file"})
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    port = _free_port()
    log = (tmp / "partner.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.simulator", "serve", "--partner", w.OM, "--port", str(port),
         "--data-dir", str(tmp / "data"), "--seed", "2025", "--jwks-file", str(tmp / "jwks.json")],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"partner process did not start: {(tmp / 'partner.log').read_text()}")
            time.sleep(0.05)
        yield url, key, tmp
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


async def test_the_module_entry_point_serves_a_partner_with_its_own_database(
        served_process: tuple[str, OKPKey, Path]) -> None:
    url, key, tmp = served_process

    async def token(audience: str) -> str:
        now = int(time.time())
        return jwt.encode({"alg": "Ed25519", "kid": key.kid}, {"aud": audience, "exp": now + 60}, key,
                          algorithms=["Ed25519"])

    director = w.scenarios(2025)[w.BIBOB_APPLICANT][1]
    async with HttpConnector(w.OM, url, token) as connector:
        answer = await connector.query(HolderQuery(
            request_id="q-process", partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
            requester_organisation="gemeente-amsterdam", categories=["convictions"], subjects=[director]))
    assert [(r.category, r.fields["offence"]) for r in answer.records] == [("convictions", "Opiumwet art. 3")]
    assert (tmp / "data" / f"partner-{w.OM}.sqlite").exists()
    await asyncio.sleep(0.1)  # let the log line reach the file
    lines = [json.loads(line) for line in (tmp / "partner.log").read_text().splitlines() if line.startswith("{")]
    answered = [line for line in lines if line["event"] == "query_answered"]
    assert answered == [answered[0] | {"request_id": "q-process", "records": 1, "system": w.OM}]
    world = build_world(2025)
    text = (tmp / "partner.log").read_text()
    assert not [p for p in world.persons if p.bsn in text or p.name in text]
    assert director not in text  # not even the subject reference
