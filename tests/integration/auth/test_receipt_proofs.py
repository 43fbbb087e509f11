"""A partner system with ``audit:receipts`` checks its own receipts: the checkpoint, the verifier key and the
inclusion proof of an entry it is the requester of; another system's entry is a 404 that reads exactly as an
entry that does not exist."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from audit import Requester
from audit.merkle import verify_inclusion
from gateway.auditing.setup import audit_services
from gateway.container import Container
from tests.audit_support import make_event
from tests.auth_helpers import bearer, issued_person_token, system_token

SQLITE_ONLY = pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
OWN, OTHER = "gemeente-amsterdam-vth", "politie-bvh"


def _entries(container: Container) -> tuple[int, int, int]:
    """An entry of OWN's exchange, one of OTHER's and one of OWN's organisation by another (no) system; the
    log's size after them."""
    log = audit_services(container).log
    receipts = log.append([make_event(1, requester=Requester(org="gemeente-amsterdam", system=OWN)),
                           make_event(2, requester=Requester(org="politie", system=OTHER)),
                           make_event(3, requester=Requester(org="gemeente-amsterdam", user="an-account-id"))])
    assert [r.index for r in receipts] == sorted(r.index for r in receipts)
    return receipts[0].index, receipts[1].index, receipts[2].index


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()  # type: ignore[no-any-return]


@SQLITE_ONLY
def test_a_system_proves_its_own_entry_against_a_checkpoint_it_may_fetch(client: TestClient,
                                                                        container: Container) -> None:
    token = system_token(client, container, OWN, ["exchange", "audit:receipts"])
    own, _, _ = _entries(container)
    size = audit_services(container).log.size()
    checkpoint = client.get("/v1/audit/checkpoint", params={"covering": size}, headers=bearer(token))
    assert checkpoint.status_code == 200, checkpoint.text
    assert client.get("/v1/audit/key", headers=bearer(token)).status_code == 200
    proof = client.get(f"/v1/audit/entries/{own}/proof", params={"size": size}, headers=bearer(token))
    assert proof.status_code == 200, proof.text
    body = proof.json()
    root = audit_services(container).log.root(size)
    verify_inclusion(own, size, bytes.fromhex(body["leaf_hash"]), [bytes.fromhex(h) for h in body["hashes"]], root)


@SQLITE_ONLY
def test_another_systems_entry_reads_as_one_that_does_not_exist(client: TestClient, container: Container) -> None:
    token = system_token(client, container, OWN, ["exchange", "audit:receipts"])
    _, other, persons = _entries(container)
    size = audit_services(container).log.size()
    absent = _problem(client.get(f"/v1/audit/entries/{size + 5}/proof", params={"size": size + 6},
                                 headers=bearer(token)), 404)
    for index in (other, persons):  # another system's; one of its own organisation that it did not request
        hidden = _problem(client.get(f"/v1/audit/entries/{index}/proof", params={"size": size},
                                     headers=bearer(token)), 404)
        assert {k: v for k, v in hidden.items() if k != "instance"} == {
            k: v for k, v in absent.items() if k != "instance"}
    # a privacy officer (audit:read) gets any entry's proof, as before
    officer = issued_person_token(container, "po-politie", "politie", ["privacy-officer"])
    assert client.get(f"/v1/audit/entries/{other}/proof", params={"size": size},
                      headers=bearer(officer)).status_code == 200


@SQLITE_ONLY
def test_without_the_scope_a_system_gets_no_proof_nor_checkpoint(client: TestClient, container: Container) -> None:
    token = system_token(client, container, OWN, ["exchange"])
    own, _, _ = _entries(container)
    size = audit_services(container).log.size()
    _problem(client.get(f"/v1/audit/entries/{own}/proof", params={"size": size}, headers=bearer(token)), 403)
    _problem(client.get("/v1/audit/checkpoint", headers=bearer(token)), 403)
    _problem(client.get("/v1/audit/consistency", params={"from": 1, "to": size}, headers=bearer(token)), 403)
