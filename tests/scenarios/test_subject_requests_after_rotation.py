"""Data-subject requests after a pseudonym key rotation (`wgs-gateway pseudonyms rotate`).

The log keeps the partnership-domain pseudonym each entry was written under, key version included
(``bsn.v1.…``); a rotation makes a new version current but never rewrites the log (it is append-only). Found
by a review: the contact point's look-ups searched only for the pseudonym of one version — by identifier the
current one — so every disclosure made before the rotation was missing from the answer to the data subject."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.client.pseudonyms import PseudonymClient
from gateway.pseudonyms.keystore import FileKeyStore
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
BIBOB: dict[str, Any] = {  # a request body's common fields (JSON)
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-510", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-510"},
    "holders": ["kvk"], "categories": ["company_registration"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("rotation-subjects")) as running:
        assert asyncio.run(running.enrol_all())
        yield running


def _exchange(stack: Stack, mine: str) -> tuple[str, set[str]]:
    """The exchange's id and the subject pseudonyms its disclosures hold."""
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {"subjects": [{"ref": mine}]})
    assert answer.status_code == 200, answer.text
    disclosed = {(e.get("data_subject") or {}).get("pseudonym") for e in stack.logged(answer.json())
                 if e["event_type"] == "disclosure"}
    return str(answer.json()["exchange_id"]), {p for p in disclosed if p is not None}


def _found(stack: Stack, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> set[str]:
    answer = stack.call(token, method, path, body)
    assert answer.status_code == 200, answer.text
    assert all(e["entry"]["event"]["event_type"] == "disclosure" for e in answer.json())
    return {e["entry"]["event"]["exchange_id"] for e in answer.json()}


async def test_disclosures_under_an_older_key_version_are_still_found(stack: Stack) -> None:
    ref = stack.world.scenarios()["bibob-applicant"][0]
    (before_mine,) = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    before, logged_before = _exchange(stack, before_mine)
    assert logged_before
    assert all(".v1." in p for p in logged_before)

    await FileKeyStore(stack.container.settings.data_dir / "keys" / "pseudonyms").rotate()
    (after_mine,) = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    assert ".v2." in after_mine
    after, (logged_after,) = _exchange(stack, after_mine)
    assert ".v2." in logged_after

    contact = stack.person("cp-rotation", "gemeente-amsterdam", ["contact-point"])
    key = stack.call(stack.token(MUNICIPALITY), "GET", "/v1/pseudonyms/key").json()["public_key"]
    kind, number = stack.world.identifier_of(ref)
    lookup = {"partnership": RIEC, "subject": {"type": kind, "polymorphic": PseudonymClient(key).polymorphic(
        kind, number)}}
    assert _found(stack, contact, "POST", "/v1/audit/subjects/disclosures", lookup) == {before, after}
    # By the log's pseudonym, of either version, in the body or (deprecated) the path: the same answer.
    for pseudonym in (*logged_before, logged_after):
        assert _found(stack, contact, "POST", "/v1/audit/subjects/disclosures", {"pseudonym": pseudonym}) == {
            before, after}
        assert _found(stack, contact, "GET", f"/v1/audit/subjects/{pseudonym}/disclosures") == {before, after}
    # Another subject's pseudonym finds neither.
    other = stack.world.scenarios()["no-records"][0]
    kind, number = stack.world.identifier_of(other)
    stranger = {"partnership": RIEC, "subject": {"type": kind, "polymorphic": PseudonymClient(key).polymorphic(
        kind, number)}}
    assert _found(stack, contact, "POST", "/v1/audit/subjects/disclosures", stranger).isdisjoint({before, after})


def _listed(stack: Stack, token: str, subject: str) -> set[str]:
    """The exchanges of the entries the officer finds by ``subject``: by the search's body, and the same by the
    deprecated address form."""
    answer = stack.call(token, "POST", "/v1/audit/entries/search", {"subject": subject, "limit": 500})
    assert answer.status_code == 200, answer.text
    by_address = stack.call(token, "GET", "/v1/audit/entries?" + urlencode({"subject": subject, "limit": 500}))
    assert by_address.json() == answer.json()
    return {e["entry"]["event"]["exchange_id"] for e in answer.json()["entries"]}


async def test_an_officers_subject_filter_finds_the_entries_of_every_key_version(stack: Stack) -> None:
    """The entries listing's ``subject`` filter split one subject's history at the rotation the same way."""
    ref = stack.world.scenarios()["bibob-applicant"][0]
    (before_mine,) = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    before, (logged_before,) = _exchange(stack, before_mine)
    await FileKeyStore(stack.container.settings.data_dir / "keys" / "pseudonyms").rotate()
    (after_mine,) = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    after, (logged_after,) = _exchange(stack, after_mine)
    assert logged_before.split(".")[1] != logged_after.split(".")[1]

    officer = stack.person("po-rotation", "gemeente-amsterdam", ["privacy-officer"])
    assert _listed(stack, officer, logged_before) >= {before, after}
    assert _listed(stack, officer, logged_after) >= {before, after}
    # Still only the officer's own: another organisation's officer, party to neither exchange, sees none.
    outsider = stack.person("po-rotation-fec", "abn-amro", ["privacy-officer"])
    assert _listed(stack, outsider, logged_after) == set()


def test_only_the_contact_point_gets_past_the_door_of_a_lookup_by_identifier(stack: Stack) -> None:
    """Found by a review: the gateway decoded the polymorphic pseudonym and computed the subject's
    partnership-domain pseudonym before it asked whether the caller is the contact point, so any signed-in
    person with ``audit:read`` had the pseudonymisation keys work for them (and learnt from a 422 which
    partnerships and pseudonyms are valid) before the 403."""
    malformed = {"partnership": RIEC, "subject": {"type": "bsn", "polymorphic": "A" * 60}}
    unknown = {"partnership": "no-such-partnership", "subject": malformed["subject"]}
    officer = stack.person("po-door", "gemeente-amsterdam", ["privacy-officer"])
    for body in (malformed, unknown):
        refused = stack.call(officer, "POST", "/v1/audit/subjects/disclosures", body)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    contact = stack.person("cp-door", "gemeente-amsterdam", ["contact-point"])
    for body in (malformed, unknown):
        assert stack.call(contact, "POST", "/v1/audit/subjects/disclosures", body).status_code == 422
