"""The decoded fuzzy discovery index each gateway process keeps in memory (``gateway.enrolment.filter_cache``)
against changes made through another process on the same database, over real HTTP: two gateway apps (each with
its own container, so its own copy) share one SQLite file. Gateway A answers the fuzzy discoveries; the police
enrols through gateway B — withdraws a record, enrols it again, replaces everything, marks it confidential or a
minor — and A's very next answer reflects each change, with a match handle that resolves only for the record as
it is now enrolled."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.client.api import GatewayClient
from gateway.client.fuzzy_requests import FilterRecordToEnrol, fuzzy_request
from gateway.container import build_container
from gateway.enrolment.filters import FilterService
from tests.scenarios.test_fuzzy_follow_up import (
    BIBOB,
    MUNICIPALITY,
    POLICE,
    RIEC,
    SECRET,
    People,
    _discover,
    _exchange,
    _handle,
    _problem,
)
from tests.servers import serve_app
from tests.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("fuzzy-cache")) as running:
        yield running


@contextmanager
def _other_gateway(stack: Stack) -> Iterator[str]:
    """A second gateway process's app on the same database (its own container, engine and index copy)."""
    container = build_container(stack.container.settings, stack.clock)
    try:
        with serve_app(create_app(container=container)) as url:
            yield url
    finally:
        container.close()


@pytest.fixture(scope="module")
def other(stack: Stack) -> Iterator[str]:
    with _other_gateway(stack) as url:
        yield url


@pytest.fixture(scope="module")
def people(stack: Stack, other: str) -> People:
    found = People(stack.world)
    _enrol_at(stack, stack.gateway_url, _records(found))
    return found


def _records(people: People) -> list[FilterRecordToEnrol]:
    return [FilterRecordToEnrol(ref, fields, ["police_incidents"])
            for ref, fields in zip(people.refs[POLICE], people.held[POLICE], strict=True)]


def _enrol_at(stack: Stack, url: str, records: list[FilterRecordToEnrol], **options: Any) -> None:
    """The police enrols through the gateway at ``url``."""
    keys = stack.clients[POLICE]

    async def enrol() -> None:
        async with GatewayClient(url, keys.system_id, keys.key, issuer=stack.issuer,
                                 clock=lambda: stack.clock.now().timestamp()) as client:
            await client.enrol_filters(RIEC, "person", SECRET, records, **options)
    asyncio.run(enrol())


def _police(stack: Stack, people: People) -> dict[str, Any]:
    discovery = _discover(stack, people)
    return dict(next(t for t in discovery["targets"] if t["holder"] == "politie"))


def _cache(stack: Stack) -> Any:
    return stack.container.service("filters", FilterService).cache


def test_a_repeated_discovery_is_answered_from_the_copy(stack: Stack, people: People) -> None:
    assert _police(stack, people)["subjects"] == ["hit", "no-hit", "no-hit"]
    hits = _cache(stack).hits
    assert _police(stack, people)["subjects"] == ["hit", "no-hit", "no-hit"]
    assert _cache(stack).hits > hits  # nothing changed: the records were not read again


def test_a_withdrawal_and_re_enrolment_through_another_process_are_seen_at_the_next_request(
        stack: Stack, people: People, other: str) -> None:
    record = _records(people)[0]
    before = _handle(_discover(stack, people), "politie")  # A keeps the police's records now
    _enrol_at(stack, other, [], remove=[record.ref])
    try:
        assert _police(stack, people)["subjects"] == ["no-hit", "no-hit", "no-hit"]
    finally:
        stack.clock.advance(timedelta(seconds=1))  # enrolled anew: a row of another time, so another digest
        _enrol_at(stack, other, [record])
    after = _handle(_discover(stack, people), "politie")
    assert "no longer resolves" in _problem(_exchange(stack, [before]))  # the record re-enrolled since
    answer = _exchange(stack, [after])  # A's handle carries the digest of the row as it is stored now
    assert answer.status_code == 200, answer.text


def test_another_person_enrolled_under_the_reference_through_another_process_is_seen(
        stack: Stack, people: People, other: str) -> None:
    record = _records(people)[0]
    handle = _handle(_discover(stack, people), "politie")
    _enrol_at(stack, other, [record._replace(fields=people.held[POLICE][1])])
    try:
        assert _police(stack, people)["subjects"] == ["no-hit", "no-hit", "no-hit"]
        assert "no longer resolves" in _problem(_exchange(stack, [handle]))
    finally:
        _enrol_at(stack, other, [record])
    assert _police(stack, people)["subjects"] == ["hit", "no-hit", "no-hit"]


def test_a_replace_through_another_process_is_seen(stack: Stack, people: People, other: str) -> None:
    _police(stack, people)
    _enrol_at(stack, other, _records(people)[1:], replace=True)
    try:
        assert _police(stack, people)["subjects"] == ["no-hit", "no-hit", "no-hit"]
    finally:
        _enrol_at(stack, other, _records(people), replace=True)
    assert _police(stack, people)["subjects"] == ["hit", "no-hit", "no-hit"]


@pytest.mark.parametrize("flag", ["confidential", "minor"])
def test_grounds_to_refuse_set_through_another_process_are_seen(stack: Stack, people: People, other: str,
                                                                 flag: str) -> None:
    record = _records(people)[0]
    assert _police(stack, people)["outcome"] == "hit"
    flagged = record._replace(confidential=True) if flag == "confidential" else record._replace(minor=True)
    _enrol_at(stack, other, [flagged])
    try:
        police = _police(stack, people)
        assert police["outcome"] == "refused-by-holder"
        assert not any(police["match_handles"] or [])  # no handle of a refused hit
    finally:
        _enrol_at(stack, other, [record])
    assert _police(stack, people)["outcome"] == "hit"  # and lifting them is seen too


def test_a_change_through_this_process_is_seen_by_the_other(stack: Stack, people: People, other: str) -> None:
    """The other way round: B's copy goes stale when A enrols."""
    record = _records(people)[0]
    before = _police_at(stack, other, people)
    assert before["subjects"] == ["hit", "no-hit", "no-hit"]
    _enrol_at(stack, stack.gateway_url, [], remove=[record.ref])
    try:
        assert _police_at(stack, other, people)["subjects"] == ["no-hit", "no-hit", "no-hit"]
    finally:
        _enrol_at(stack, stack.gateway_url, [record])
    assert _police_at(stack, other, people)["subjects"] == ["hit", "no-hit", "no-hit"]


def _police_at(stack: Stack, url: str, people: People) -> dict[str, Any]:
    """The police's target in a fuzzy discovery answered by the gateway at ``url``."""
    body = fuzzy_request(secret=SECRET, subjects=people.asked, **BIBOB).model_dump(mode="json")
    answer = httpx.post(f"{url}/v1/discovery/fuzzy", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {stack.token(MUNICIPALITY)}"})
    assert answer.status_code == 200, answer.text
    return dict(next(t for t in answer.json()["targets"] if t["holder"] == "politie"))
