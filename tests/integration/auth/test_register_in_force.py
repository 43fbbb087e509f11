"""Tokens follow the register in force, not the register a client was registered under.

A client row keeps the organisation its system had when `wgs-gateway clients add` ran. The register changes
(a new file, then a restart): a system can leave it (decommissioned, or its organisation left the
partnership) or move to another organisation. The token endpoint must then refuse the system, or name its
organisation as the register now does: the token's ``org`` decides what a system may enrol, ask and see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from joserfc import jwt

from gateway.app import create_app
from gateway.auth.setup import auth_services
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.settings import SHIPPED_REGISTER, Settings
from tests.auth_helpers import bearer, client_assertion, register_client, register_secret, token_form

SYSTEM = "politie-bvh"


def _register_without(*systems: str, move_to: str | None = None) -> Callable[[dict[str, Any]], None]:
    """An edit of the register: ``systems`` leave their organisations (and join ``move_to``, if given); each
    organisation that lost one gets a successor system, so that it still has one."""

    def edit(register: dict[str, Any]) -> None:
        register["version"] = f"{register['version']}-changed"
        for org_id, organisation in register["organisations"].items():
            kept = [s for s in organisation["systems"] if s not in systems]
            if len(kept) < len(organisation["systems"]):
                kept.append(f"{org_id}-successor")
            organisation["systems"] = kept + ([*systems] if org_id == move_to else [])
        for partnership in register["partnerships"].values():
            for participant in partnership["participants"]:
                participant["systems"] = [s for s in participant.get("systems", []) if s not in systems]

    return edit


@contextmanager
def _gateway(tmp_path: Path, db_url: str, clock: FixedClock,
             edit: Callable[[dict[str, Any]], None] | None = None) -> Iterator[tuple[TestClient, Container]]:
    """A gateway process on the shared database, started with the shipped register or an edited copy."""
    register = yaml.safe_load(SHIPPED_REGISTER.read_text())
    if edit is not None:
        edit(register)
    path = tmp_path / f"register-{register['version']}.yaml"
    path.write_text(yaml.safe_dump(register))
    container = build_container(Settings(data_dir=tmp_path, database_url=db_url, register_file=path), clock)
    try:
        with TestClient(create_app(container=container)) as client:
            yield client, container
    finally:
        container.close()


def _claims(token: str, container: Container) -> dict[str, Any]:
    decoded = jwt.decode(token, auth_services(container).keys.verification_keys(), algorithms=["Ed25519"])
    return dict(decoded.claims)


def test_a_system_that_left_the_register_gets_no_token(tmp_path: Path, sqlite_db_url: str,
                                                       clock: FixedClock) -> None:
    with _gateway(tmp_path, sqlite_db_url, clock) as (client, container):
        keys = register_client(container, SYSTEM, ["enrol", "register:read"])
        secret = register_secret(container, "fiod-ois", ["register:read"])
        assert client.post("/oauth/token", data=token_form(client_assertion(container, keys))).status_code == 200
    with _gateway(tmp_path, sqlite_db_url, clock, _register_without(SYSTEM, "fiod-ois")) as (client, container):
        refused = client.post("/oauth/token", data=token_form(client_assertion(container, keys)))
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "invalid_client"
        assert "access_token" not in refused.text
        by_secret = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "fiod-ois",
                                                      "client_secret": secret})
        assert by_secret.status_code == 401, by_secret.text
        assert by_secret.json()["error"] == "invalid_client"


def test_a_system_that_moved_gets_tokens_of_its_new_organisation(tmp_path: Path, sqlite_db_url: str,
                                                                 clock: FixedClock) -> None:
    with _gateway(tmp_path, sqlite_db_url, clock) as (_, container):
        keys = register_client(container, SYSTEM, ["register:read"])
    with _gateway(tmp_path, sqlite_db_url, clock, _register_without(SYSTEM, move_to="fiod")) as (client, container):
        answer = client.post("/oauth/token", data=token_form(client_assertion(container, keys)))
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        assert _claims(token, container)["org"] == "fiod"
        assert client.get("/v1/register", headers=bearer(token)).status_code == 200


def test_systems_still_in_the_register_are_unaffected(tmp_path: Path, sqlite_db_url: str, clock: FixedClock) -> None:
    """The check names the register in force, not a stricter rule: another system's change leaves this one be."""
    with _gateway(tmp_path, sqlite_db_url, clock) as (_, container):
        keys = register_client(container, "gemeente-amsterdam-vth", ["register:read"])
    with _gateway(tmp_path, sqlite_db_url, clock, _register_without(SYSTEM)) as (client, container):
        answer = client.post("/oauth/token", data=token_form(client_assertion(container, keys)))
        assert answer.status_code == 200, answer.text
        assert _claims(answer.json()["access_token"], container)["org"] == "gemeente-amsterdam"

