"""docker-compose.yml's OPA service as deployed: OPA must load the API authorization policy next to
policies/, authenticate bearer tokens and authorize with it, run a pinned image, share one required
WGS_OPA_TOKEN with the gateway, and have a health check that asks the running server. Each of these,
if lost, leaves a stack that never becomes healthy (every gateway call 401) or an OPA anybody can rewrite.

The file is read as YAML (PyYAML), as docker-compose reads it; `docker-compose config` is run too when
the tool is installed (scripts/test installs it) to check the required variables the way compose does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
REQUIRED_TOKEN = re.compile(r"^\$\{WGS_OPA_TOKEN:\?[^}]+\}$")  # `:?` fails on unset *and* empty


def _services() -> dict[str, Any]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert isinstance(services, dict)
    return services


def _flag(command: list[str], name: str) -> str:
    """The value after ``name`` (``--flag value``) or in ``--flag=value``."""
    for position, argument in enumerate(command):
        if argument == name:
            return command[position + 1]
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {command}")


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """The file on the host that ``container_path`` is, through the service's bind mounts."""
    for volume in service.get("volumes", []):
        host, target = str(volume).split(":")[:2]
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (ROOT / host).resolve() / container_path[len(target):].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted from the host")


def _positional(command: list[str]) -> list[str]:
    """``opa run``'s path arguments (every argument that is neither a flag nor a flag's value)."""
    with_value = {"--addr", "--authentication", "--authorization", "--log-level", "--bundle", "-b", "--config-file",
                  "-c", "--set", "--log-format"}
    paths, skip = [], False
    for argument in command[1:]:
        if skip:
            skip = False
        elif argument in with_value:
            skip = True
        elif not argument.startswith("-"):
            paths.append(argument)
    return paths


def test_opa_authenticates_tokens_and_authorizes_with_the_authz_policy() -> None:
    opa = _services()["opa"]
    command = opa["command"]
    assert command[0] == "run"
    assert "--server" in command
    assert _flag(command, "--authentication") == "token"
    assert _flag(command, "--authorization") == "basic"
    loaded = {_host_path(opa, path) for path in _positional(command)}
    authz = (ROOT / "deploy" / "opa" / "authz.rego").resolve()
    assert authz.is_file()
    assert authz in loaded
    assert re.search(r"^package system\.authz$", authz.read_text(), re.MULTILINE)
    assert (ROOT / "policies").resolve() in loaded


def test_policies_are_not_loaded_as_a_bundle_that_would_own_the_register() -> None:
    """policies/ has no .manifest: as a bundle it owns all of data and OPA refuses PUT /v1/data/register
    with 400, so the gateway never gets its register in; loading the files plainly leaves data writable."""
    command = _services()["opa"]["command"]
    if "--bundle" in command or "-b" in command or any(a.startswith("--bundle=") for a in command):
        assert (ROOT / "policies" / ".manifest").is_file(), "a bundle without a manifest owns data/register"
    else:
        assert not (ROOT / "policies" / ".manifest").exists()


def test_the_opa_image_is_pinned() -> None:
    image = _services()["opa"]["image"]
    assert re.fullmatch(r"openpolicyagent/opa:\d+\.\d+\.\d+(-static|-debug)?(@sha256:[0-9a-f]{64})?", image), image
    assert "latest" not in image


def test_one_required_token_for_opa_and_gateway() -> None:
    services = _services()
    for name in ("opa", "gateway"):
        assert REQUIRED_TOKEN.match(services[name]["environment"]["WGS_OPA_TOKEN"]), name
    assert services["gateway"]["environment"]["WGS_POLICY_ENGINE"] == "opa"


def test_the_gateway_talks_to_the_opa_service_on_the_port_it_listens_on() -> None:
    services = _services()
    port = _flag(services["opa"]["command"], "--addr").rsplit(":", 1)[1]
    assert services["gateway"]["environment"]["WGS_OPA_URL"] == f"http://opa:{port}"
    assert services["gateway"]["depends_on"]["opa"]["condition"] == "service_healthy"


def test_the_opa_health_check_asks_the_running_server() -> None:
    """`opa eval true` never contacts the server; the check must request its /health (which authz.rego
    lets through without a token) and fail on an error or a non-200 answer."""
    opa = _services()["opa"]
    test = opa["healthcheck"]["test"]
    port = _flag(opa["command"], "--addr").rsplit(":", 1)[1]
    assert test[0] == "CMD"
    assert any(f"http://127.0.0.1:{port}/health" in part for part in test), test
    if test[1] == "/opa":  # the -static image: only the opa binary; http.send with --fail
        assert test[2] == "eval"
        assert "--fail" in test
        query = test[-1]
        assert "http.send(" in query
        assert re.search(r"status_code\s*==\s*200", query), query


def _compose_config(env: dict[str, str], env_file: Path) -> subprocess.CompletedProcess[str]:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose is not None
    # Only ``env``: neither this process's WGS_ variables nor a developer's .env may supply the token.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WGS_")}
    command = [docker_compose, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"]
    return subprocess.run(command, cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_refuses_to_start_without_the_token(tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    ok = _compose_config({"WGS_DB_PASSWORD": "config-check", "WGS_OPA_TOKEN": "config-check"}, env_file)
    assert ok.returncode == 0, ok.stderr
    for token in ({}, {"WGS_OPA_TOKEN": ""}):
        result = _compose_config({"WGS_DB_PASSWORD": "config-check"} | token, env_file)
        assert result.returncode != 0
        assert "WGS_OPA_TOKEN" in result.stderr, result.stderr


def _seconds(duration: str) -> float:
    """A compose duration (``30s``, ``1m30s``, ``90``) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", str(duration).strip())
    assert parts, duration
    assert any(parts.groups()), duration
    hours, minutes, seconds = (float(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def test_docker_stop_waits_for_the_gateways_graceful_shutdown_and_audit_flush() -> None:
    """`docker stop` kills after ``stop_grace_period`` (10 s by default); `serve` may spend that long on the
    requests in flight alone, and only then writes the queued audit rows, so the default would lose them."""
    from gateway.cli import GRACEFUL_SHUTDOWN_SECONDS

    grace = _seconds(_services()["gateway"].get("stop_grace_period", "10s"))
    assert grace >= GRACEFUL_SHUTDOWN_SECONDS + 10


def test_every_partner_accepts_only_tokens_of_the_gateways_issuer() -> None:
    """A holder told the gateway's issuer refuses tokens that carry any other ``iss``; each partner service
    must be told the same issuer the gateway signs with (both default to the same value)."""
    services = _services()
    gateway_issuer = services["gateway"]["environment"]["WGS_ISSUER"]
    partners = {name: s for name, s in services.items() if "wgs-partner" in s.get("command", [])}
    assert len(partners) == 7
    for name, service in partners.items():
        assert service["environment"]["WGS_PARTNER_GATEWAY_ISSUER"] == gateway_issuer, name


_VARIABLE = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


def test_the_gateways_environment_passes_the_settings_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the gateway service is given must start it: a setting the start refuses (the OPA server on compose's
    network over plain http without the opt-in, say) leaves a stack whose gateway restarts for ever. The
    ``${...}`` references are filled with placeholders, as compose fills them from ``.env``."""
    from gateway.settings import Settings

    for name in [name for name in os.environ if name.startswith("WGS_")]:
        monkeypatch.delenv(name)
    for name, value in _services()["gateway"]["environment"].items():
        monkeypatch.setenv(name, _VARIABLE.sub(lambda match: f"placeholder-{match.group(1).lower()}", str(value)))
    settings = Settings(_env_file=None)
    assert settings.policy_engine == "opa"
