"""A pseudonym key rotation as partners live through it, over real HTTP (a review): the gateway rotates, is
restarted on the new key ring (here: its pseudonym service rebuilt from the key store, as a restart does),
and partner systems that kept running hold the old version's keys and pseudonyms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.auditing.setup import audit_services
from gateway.enrolment.rekey import rekey_index
from gateway.enrolment.setup import install_pseudonyms, pseudonym_keystore
from gateway.pseudonyms.keys import KeyRing
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
KVK = "kvk-handelsregister"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-700", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-700"},
         "categories": ["company_registration"]}


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("rotation")) as running:
        yield running


def _restarted(stack: Stack, ring: KeyRing) -> None:
    """What `pseudonyms rotate|rekey` and a restart leave: the service on the stored ring, the index on it."""
    install_pseudonyms(stack.container)
    rekey_index(stack.container.sessions, ring, audit_services(stack.container).log)


def _kvk(stack: Stack, mine: list[str]) -> str:
    response = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": [{"ref": p} for p in mine]})
    assert response.status_code == 200, response.text
    return str({t["holder"]: t["outcome"] for t in response.json()["targets"]}["kvk"])


async def test_a_running_partner_client_enrols_after_a_rotation_without_an_error(stack: Stack) -> None:
    """Found by a review: a partner client that kept running across the rotation sent its next enrolment
    with the old gateway key (accepted: the old version is still in the ring), the gateway indexed it and
    answered with pseudonyms for the partner's *new* recipient key, and the client raised
    `UnopenablePseudonym` — the index written, the partner left without its pseudonyms. It now fetches the
    gateway's current keys once and opens the same answer (nothing is sent twice)."""
    ref = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(ref)
    store = pseudonym_keystore(stack.container)
    async with stack.client(KVK) as kvk:
        before = await kvk.enrol(RIEC, [(kind, number, ["trade-name"], ["company_registration"])])
        assert before[0].split(".")[1] == "v1"
        old_municipality = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
        _restarted(stack, await store.rotate())
        after = await kvk.enrol(RIEC, [(kind, number, ["trade-name"], ["company_registration"])])
        assert after[0].split(".")[1] == "v2"
        assert after == await kvk.own_pseudonyms(RIEC, [(kind, number)])  # stable under the new version
    assert _kvk(stack, await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])) == "hit"
    # A requester's pseudonym of the old version is still accepted and translated while that version is held.
    assert _kvk(stack, old_municipality) == "hit"


async def test_after_the_old_version_is_retired_clients_move_on_and_old_pseudonyms_get_a_clear_refusal(
        stack: Stack) -> None:
    """Found by the same review: once the old version was retired, a client that had fetched the gateway key
    before kept sending polymorphic pseudonyms under the retired key, and every call was refused (422) until the
    partner restarted its process — the client never fetched the key again. It now does, once, when the gateway
    refuses and its key has changed. A pseudonym of the retired version is refused (422) with a message that
    says so, not as 'not a pseudonym of yours', and names no pseudonym."""
    ref = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(ref)
    store = pseudonym_keystore(stack.container)
    async with stack.client(MUNICIPALITY) as municipality:
        old = await municipality.own_pseudonyms(RIEC, [(kind, number)])
        _restarted(stack, await store.rotate())
        _restarted(stack, await store.retire(1))
        new = await municipality.own_pseudonyms(RIEC, [(kind, number)])
    assert new[0].split(".")[1] == "v2"
    assert new == await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    refused = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": [{"ref": old[0]}]})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "key version 1" in detail
    assert "does not hold" in detail
    assert old[0] not in refused.text
    assert old[0].split(".")[2] not in refused.text


async def test_holders_that_have_not_enrolled_again_since_a_rotation_still_answer(stack: Stack) -> None:
    """Found by a review: after `rotate` (the index moved, nobody restarted, as the procedure says) the gateway
    asked each holder by its pseudonym of the new version, which a holder learns only when it enrols again. So
    the index said `hit` and the exchange came back without records, silently, until every holder had enrolled
    again. The holder is now asked by its pseudonyms of every version the key ring still holds (newest first),
    and one that has enrolled again answers as before, each record once."""
    await stack.enrol_all()
    applicant = stack.world.scenarios()["bibob-applicant"][0]
    body = BIBOB | {"holders": ["kvk"]}

    async def kvk_records() -> list[dict[str, Any]]:
        [mine] = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [applicant])
        answer = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"subjects": [{"ref": mine}]})
        assert answer.status_code == 200, answer.text
        [target] = answer.json()["targets"]
        assert target["outcome"] == "allowed", target
        assert {r["subject"] for r in target["records"]} <= {mine}
        return list(target["records"])

    before = await kvk_records()
    assert before
    _restarted(stack, await pseudonym_keystore(stack.container).rotate())
    assert _kvk(stack, await stack.own_pseudonyms(MUNICIPALITY, RIEC, [applicant])) == "hit"
    assert [r["record_id"] for r in await kvk_records()] == [r["record_id"] for r in before]
    await stack.enrol_all()  # the holders enrol again: they know both versions' pseudonyms now
    assert [r["record_id"] for r in await kvk_records()] == [r["record_id"] for r in before]
