"""The Dockerfile as built: it installs the exact runtime versions of deploy/constraints.txt, and its health
check asks the liveness probe of the port the gateway serves on, consistent with docker-compose.yml.

Without the constraints a rebuild installs whatever was released since the tests last ran (pyproject only
states lower bounds); a missing or unpinned package there is such a hole. The health check is liveness on
purpose (see the comment in the Dockerfile): a runtime that restarts unhealthy containers must not restart
a gateway only because its database or policy server is away. No docker build is run here."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = "wgs-gateway:local"


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per Dockerfile instruction, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current = (current + line).strip()
        if current:
            keyword, _, arguments = current.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def _one(keyword: str) -> str:
    [arguments] = [arguments for found, arguments in _instructions() if found == keyword]
    return arguments


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line.strip())
            assert match, f"not an exact pin: {line!r}"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("constraints_script", ROOT / "scripts" / "constraints.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve_port() -> int:
    command = json.loads(_one("CMD"))
    assert command[:2] == ["wgs-gateway", "serve"]
    return int(command[command.index("--port") + 1])


# -- pinned dependencies -----------------------------------------------------------------------------------


def test_the_image_installs_with_the_constraints_file() -> None:
    instructions = _instructions()
    copied = [position for position, (keyword, arguments) in enumerate(instructions)
              if keyword == "COPY" and "deploy/constraints.txt" in arguments.split()[:-1]]
    installs = [(position, shlex.split(arguments)) for position, (keyword, arguments) in enumerate(instructions)
                if keyword == "RUN" and "pip install" in arguments]
    assert installs, "the Dockerfile installs nothing with pip"
    for position, words in installs:
        assert words[words.index("-c") + 1] == "deploy/constraints.txt", words
        assert copied, "constraints.txt is not copied into the image"
        assert copied[0] < position, "constraints.txt is copied in after the install"


def test_every_runtime_dependency_and_what_it_pulls_in_is_pinned() -> None:
    pins = _pins()
    required = [Requirement(line) for line in PYPROJECT["dependencies"]]
    for requirement in required:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject dependencies) is not pinned"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} does not satisfy pyproject's {requirement}")
    closure = _generator().runtime_closure(required)
    assert {"psycopg-binary", "uvloop", "httptools"} <= closure  # the extras are followed
    unpinned = sorted(closure - set(pins))
    assert unpinned == [], f"unpinned (regenerate deploy/constraints.txt, see its header): {unpinned}"


_RUNTIME_ANYWAY = {"opentelemetry-api"}  # fastapi's own; declared for tests because one imports it


def test_no_test_tool_and_not_the_project_itself_is_pinned() -> None:
    pins = _pins()
    test_only = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["optional-dependencies"]["test"]}
    assert {"pytest", "playwright", "schemathesis", "mypy"} <= test_only
    # a test extra that the runtime needs anyway (a dependency of a runtime dependency) is pinned for the runtime
    assert sorted(test_only & set(pins) - _RUNTIME_ANYWAY) == []
    assert canonicalize_name(PYPROJECT["name"]) not in pins


def test_the_constraints_file_says_how_to_regenerate_it() -> None:
    header = "\n".join(line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#"))
    assert "scripts/constraints.py > deploy/constraints.txt" in header
    assert (ROOT / "scripts" / "constraints.py").is_file()


# -- health check --------------------------------------------------------------------------------------------


def _healthcheck_url() -> str:
    options, _, command = _one("HEALTHCHECK").partition(" CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    words = json.loads(command)
    assert words[:2] == ["curl", "-fsS"]  # -f: an error status is a failed check
    return str(words[-1])


def _get_routes(tmp_path: Path) -> set[str]:
    """The GET paths of the gateway app, from its OpenAPI document (no database is touched: that starts
    with the lifespan)."""
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    return {path for path, operations in app.openapi()["paths"].items() if "get" in operations}


def test_the_image_health_check_asks_liveness_on_the_served_port(tmp_path: Path) -> None:
    url = urlsplit(_healthcheck_url())
    assert url.hostname == "127.0.0.1"
    assert url.port == _serve_port()
    assert str(_serve_port()) in _one("EXPOSE").split()
    assert url.path == "/health/live"
    assert url.path in _get_routes(tmp_path)


def _compose_services() -> dict[str, dict[str, object]]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert isinstance(services, dict)
    return services


def test_compose_gates_on_readiness_of_the_same_port(tmp_path: Path) -> None:
    gateway = _compose_services()["gateway"]
    healthcheck = gateway["healthcheck"]
    assert isinstance(healthcheck, dict)
    test = healthcheck["test"]
    assert test[:3] == ["CMD", "curl", "-fsS"]
    url = urlsplit(test[-1])
    assert (url.hostname, url.port) == ("127.0.0.1", _serve_port())
    assert url.path == "/health/ready"
    assert url.path in _get_routes(tmp_path)


@pytest.mark.parametrize("name", [name for name, service in _compose_services().items()
                                  if service.get("image") == IMAGE or service.get("build")])
def test_every_compose_service_of_the_image_has_its_own_health_check(name: str) -> None:
    """The image's check asks the gateway's port; a partner service running the image on its own port would
    inherit it and never become healthy."""
    healthcheck = _compose_services()[name].get("healthcheck")
    assert isinstance(healthcheck, dict)
    assert healthcheck.get("test")


def test_the_data_directory_is_the_runtime_users_alone() -> None:
    """``mkdir -p /var/lib/wgs && chown`` left it 0755: every user of the container (and of a volume mounted
    there) could list and read what the gateway keeps in it. It is made 0700, owned by the user the image runs as."""
    user = _one("USER")
    data_dir = dict(arguments.split("=", 1) for found, arguments in _instructions() if found == "ENV")["WGS_DATA_DIR"]
    commands = [shlex.split(part) for arguments in (a for k, a in _instructions() if k == "RUN")
                for part in arguments.split("&&")]
    made = [command for command in commands if command and command[-1] == data_dir]
    assert made, "the image makes its data directory"
    for command in made:
        assert command[:2] == ["install", "-d"], command  # mkdir makes it 0755 whatever chown follows
        assert command[command.index("-m") + 1] == "0700", command
        assert command[command.index("-o") + 1] == user, command
