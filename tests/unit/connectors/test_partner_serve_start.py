"""``wgs-partner serve`` refuses a configuration it cannot serve with at start, in one line and exit status 1:
a key file that is not there (it used to start and then refuse every token the gateway sent) and a data
directory it cannot make its database in (a traceback)."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from joserfc.jwk import OKPKey
from typer.testing import CliRunner

from connectors import cli as cli_module
from connectors import world as w


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What ``serve`` handed to uvicorn (nothing is served)."""
    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **_k: served.append(application))
    monkeypatch.setattr(gc, "freeze", lambda: None)
    return served


def _serve(*args: str) -> Any:
    return CliRunner().invoke(cli_module.app, ["serve", "--partner", w.FIOD, *args], env={"COLUMNS": "200"})


def test_a_missing_key_file_stops_the_start_in_one_line(tmp_path: Path, started: list[Any]) -> None:
    result = _serve("--data-dir", str(tmp_path / "data"), "--jwks-file", str(tmp_path / "nonexistent.json"))
    assert result.exit_code == 1, result.output
    assert "key file could not be read" in result.output
    assert "nonexistent.json" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert started == []


def test_a_key_file_that_is_there_starts_the_partner(tmp_path: Path, started: list[Any]) -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "gw"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    result = _serve("--data-dir", str(tmp_path / "data"), "--jwks-file", str(tmp_path / "jwks.json"))
    assert result.exit_code == 0, result.output
    assert len(started) == 1


def test_an_unusable_data_directory_stops_the_start_in_one_line(tmp_path: Path, started: list[Any]) -> None:
    (tmp_path / "a-file").write_text("")  # a directory cannot be made under a file, whoever runs the test
    result = _serve("--no-auth", "--data-dir", str(tmp_path / "a-file" / "data"))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("cannot use the data directory")
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert started == []


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_a_refused_token_is_logged_with_the_route_not_the_path(tmp_path: Path, authorization: str | None) -> None:
    """The refusal's log line named ``request.url.path``: the caller's text, which may hold an identifier.
    Now the route's template, or nothing for a path no route has."""
    from fastapi.testclient import TestClient
    from structlog.testing import capture_logs

    from connectors.holder_auth import JwksSource
    from connectors.simulator import create_partner_app
    from connectors.world import build_world

    key = OKPKey.generate_key("Ed25519", parameters={"kid": "gw"})
    app = create_partner_app(w.FIOD, tmp_path, jwks=JwksSource(jwks={"keys": [key.as_dict(private=False)]}),
                             world=build_world(persons=10, companies=5))
    headers = {"authorization": authorization} if authorization else {}
    with TestClient(app) as client, capture_logs() as logs:
        assert client.post("/holder/v1/query", headers=headers, json={}).status_code == 401
        assert client.post("/holder/v1/query/111222333", headers=headers, json={}).status_code == 401
    refusals = [line for line in logs if line["event"] in {"token_missing", "token_refused"}]
    assert [line.get("route") for line in refusals] == ["/holder/v1/query", None]
    assert "111222333" not in repr(logs)
