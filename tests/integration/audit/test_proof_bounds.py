"""The proof endpoints' indices and sizes are bounded: a number no log index can be is a 422 problem, never a 500.

A partner system with ``audit:receipts`` asked for the proof of entry 2**63 - 1 (or of any index past a 64-bit
integer): the gateway looked the entry up to see whose it was, and the database driver refused the number
(SQLite: ``OverflowError``; PostgreSQL: out of range for ``bigint``), which came back as a 500. Indices and sizes
now stop at 2**53 (as ``covering`` of the checkpoint does): a log never gets near it, and the answer is the same
422 whoever asks, so it says nothing about whose entries exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auditing.setup import audit_services
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.audit_support import make_event
from tests.auth_helpers import bearer, issued_person_token, system_token

BEYOND = [2**63 - 1, 2**63, 10**20, 2**53 + 1]


@pytest.fixture
def gateway(db_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[tuple[TestClient, Container]]:
    container = build_container(Settings(data_dir=tmp_path, database_url=db_url, log_json=True), clock)
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        audit_services(container).log.append([make_event(n) for n in range(3)])
        yield client, container
    container.close()


def _problem(response_status: int, content_type: str) -> None:
    assert response_status == 422
    assert content_type.startswith("application/problem+json")


def test_an_index_beyond_any_log_is_a_422_for_a_receipt_checker_and_an_officer(
        gateway: tuple[TestClient, Container]) -> None:
    client, container = gateway
    system = bearer(system_token(client, container, "gemeente-amsterdam-vth", ["audit:receipts"]))
    officer = bearer(issued_person_token(container, "po-gemeente-0", "gemeente-0", ["privacy-officer"]))
    for headers in (system, officer):
        for index in BEYOND:
            answer = client.get(f"/v1/audit/entries/{index}/proof", params={"size": index + 1}, headers=headers)
            _problem(answer.status_code, answer.headers["content-type"])
        answer = client.get("/v1/audit/entries/0/proof", params={"size": 2**53 + 1}, headers=headers)
        _problem(answer.status_code, answer.headers["content-type"])
    # within the bounds, as before: an index the log does not have is a 404, one it has a proof
    size = audit_services(container).log.size()
    assert client.get(f"/v1/audit/entries/{2**53 - 1}/proof", params={"size": 2**53},
                      headers=officer).status_code == 404
    assert client.get("/v1/audit/entries/0/proof", params={"size": size}, headers=officer).status_code == 200


def test_consistency_sizes_beyond_any_log_are_a_422(gateway: tuple[TestClient, Container]) -> None:
    client, container = gateway
    officer = bearer(issued_person_token(container, "po-gemeente-0", "gemeente-0", ["privacy-officer"]))
    for first, second in ((1, 2**53 + 1), (2**63, 2**63), (10**20, 10**21)):
        answer = client.get("/v1/audit/consistency", params={"from": first, "to": second}, headers=officer)
        _problem(answer.status_code, answer.headers["content-type"])
    size = audit_services(container).log.size()
    assert client.get("/v1/audit/consistency", params={"from": 1, "to": size}, headers=officer).status_code == 200
