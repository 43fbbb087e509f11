"""Subjects that look like pseudonyms but are none, over real HTTP (a review): a requester's own pseudonym
corrupted on its way (a prefix in capitals, base64 padding, a version written 'v01', a second encoding of
the point) or forged. They used to pass as *opaque references*: answered 'no-hit' without a word, and sent
to every holder and into the audit log as they were — the requester's own pseudonym, which no holder may
see and which a data-subject request cannot find there."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.pseudonyms.pep import b64url_encode
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-800", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-800"},
         "categories": ["company_registration"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("malformed-pseudonyms")) as running:
        yield running


def _second_encoding(pseudonym: str) -> str:
    """The same point with the top bit of its last byte set: libsodium 1.0.18 would decode it alike."""
    prefix, body = pseudonym.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "="))
    raw[31] |= 0x80
    return f"{prefix}.{b64url_encode(bytes(raw))}"


def _variants(pseudonym: str) -> dict[str, str]:
    kind, version, body = pseudonym.split(".")
    return {"capitals": f"{kind.upper()}.{version}.{body}", "padding": f"{pseudonym}=",
            "zero-padded version": f"{kind}.v0{version[1:]}.{body}", "identity": f"{kind}.{version}.{'A' * 43}",
            "second encoding": _second_encoding(pseudonym), "truncated": pseudonym[:-3]}


@pytest.mark.parametrize("path", ["/v1/discovery", "/v1/exchanges"])
async def test_a_corrupted_or_forged_pseudonym_is_refused_not_taken_for_a_reference(stack: Stack, path: str) -> None:
    ask = BIBOB | ({"holders": ["kvk"]} if path == "/v1/exchanges" else {})
    ref = stack.world.scenarios()["bibob-applicant"][0]
    mine = (await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref]))[0]
    body = mine.split(".")[2]
    for name, subject in _variants(mine).items():
        answer = stack.post(MUNICIPALITY, path, ask | {"subjects": [{"ref": subject}]})
        assert answer.status_code == 422, (name, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "not a valid one" in answer.json()["detail"], name
        assert body[:20] not in answer.text, name
    with stack.container.engine.connect() as connection:
        logged = connection.execute(select(audit_entries.c.canonical)).scalars().all()
    assert not any(body[:20] in entry for entry in logged)  # the requester's pseudonym never reached the log
    ok = stack.post(MUNICIPALITY, path, ask | {"subjects": [{"ref": mine}]})
    assert ok.status_code == 200, ok.text
    reference = stack.post(MUNICIPALITY, path, ask | {"subjects": [{"ref": "subj-0123456789abcdef"}]})
    assert reference.status_code == 200, reference.text  # opaque references are still references
