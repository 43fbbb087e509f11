"""Red-team probes of the token endpoint that its integration tests (tests/integration/auth/) do not make.

Each test here is an attack that got through before its fix (the attacks the gateway held are listed in
docs/security.md, not repeated here)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from audit.tables import audit_entries
from gateway.auth.jose_segments import decode_segment
from gateway.auth.tables import used_client_assertions
from tests.auth_helpers import client_assertion, register_secret, token_form
from tests.security.world import OTHER_SYSTEM, SYSTEM, World, running_world

SECRET_SYSTEM = "politie-bvh"  # a partner system that authenticates with a client secret


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("redteam-tokens")) as running:
        running.ids["secret"] = register_secret(running.container, SECRET_SYSTEM, ["exchange"])
        yield running


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("second_method", ["client_secret_basic", "client_secret_post"])
def test_a_token_request_with_two_client_authentications_is_refused_and_uses_up_nothing(
        world: World, second_method: str) -> None:
    """Attack: guess another system's client secret with Basic credentials, riding on a valid assertion of
    one's own. authlib tries the methods in turn and a wrong secret only makes it go on to the assertion, so
    every wrong guess was a 200 with the attacker's own token (never a refusal, so neither an ``auth.rejected``
    entry for the system guessed at nor a failed attempt anywhere) and a right one a token of the other system:
    a silent oracle. RFC 6749 §2.3: a client MUST NOT use more than one authentication method in a request,
    and §5.2 names that ``invalid_request``. Refused before any of them is checked, so the assertion is not
    used up either."""
    assertion = client_assertion(world.container, world.keys[SYSTEM])
    form = token_form(assertion)
    if second_method == "client_secret_basic":
        answer = world.client.post("/oauth/token", data=form, headers=_basic(SECRET_SYSTEM, "a guess"))
    else:
        answer = world.client.post("/oauth/token", data=form | {"client_secret": "a guess"})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["error"] == "invalid_request"
    assert "access_token" not in body
    with world.container.engine.connect() as connection:
        used = connection.execute(select(used_client_assertions.c.jti)).scalars().all()
    assert decode_segment(assertion.split(".")[1])["jti"] not in used
    assert world.client.post("/oauth/token", data=form).status_code == 200  # the assertion alone: fine


def _rejections(world: World) -> int:
    with world.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)
                                      .where(audit_entries.c.event_type == "auth.rejected")).scalar_one())


def test_basic_credentials_of_one_system_beside_the_client_id_of_another_are_refused(world: World) -> None:
    """Attack: guess the police system's client secret with Basic credentials while the form's ``client_id``
    names the bank's system. authlib authenticates the Basic user (and ignores the form's ``client_id``), but
    the refusal's ``auth.rejected`` entry named the system of the form's ``client_id``: every wrong guess was
    written to the log as a failure of the bank's system, which the police's officers never see, and the
    right one got the police's token all the same. A request that names two clients is no request of either:
    refused before the secret is checked, and written to the log as nobody's failure."""
    before = _rejections(world)
    for guess in ("a guess", world.ids["secret"]):
        answer = world.client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": OTHER_SYSTEM},
                                   headers=_basic(SECRET_SYSTEM, guess))
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
        assert "access_token" not in answer.json()
    assert _rejections(world) == before
    alone = world.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              headers=_basic(SECRET_SYSTEM, world.ids["secret"]))
    assert alone.status_code == 200, alone.text
