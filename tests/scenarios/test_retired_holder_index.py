"""A retired participant's index rows answer nothing, even before they are removed (over real HTTP).

Every gateway start removes what the indexes hold for a retired participation (:mod:`gateway.enrolment.
retired`), but a process still running on the previous register may enrol after that, until ``wgs-gateway
pseudonyms remove-retired`` runs. Meanwhile such rows must not make a hit: the discovery policy denies a
retired holder (``holder-retired``) before either index is read. Here the gateway runs on a register that
retires the KvK and the police in the RIEC, and an "old process" (the services built on the previous register)
writes their rows behind it: the KvK's pseudonym and the police's match filter of one person. Discovery and
fuzzy discovery answer ``denied`` for them, and the log has no hit/no-hit disclosure of theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.auth.principal import Principal
from gateway.client.fuzzy import FilterEnrolment
from gateway.client.fuzzy_requests import FilterRecordToEnrol, enrolment_batches, fuzzy_request
from gateway.client.models import Signal
from gateway.client.pseudonyms import PseudonymClient
from gateway.enrolment.filters import FilterService
from gateway.enrolment.service import Item, PseudonymService
from gateway.enrolment.setup import filter_service, pseudonym_service
from gateway.matching.schema import shipped_schema
from gateway.register.loader import load_register
from gateway.settings import SHIPPED_REGISTER
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
RETIRED = {"kvk": "kvk-handelsregister", "politie": "politie-bvh"}
SECRET = b"riec-aa-clk-secret-for-the-tests"
PERSON = {"given_name": "jan", "surname": "de vries", "date_of_birth": "19800101", "suburb": "zaandam"}
BIBOB: dict[str, Any] = {  # a request body's common fields (JSON)
    "partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
    "case_reference": "RIEC-AA-2026-800", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-800"}}


def _register_retiring(tmp: Path) -> Path:
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    document["version"] = f"{document['version']}-retired-kvk-politie"
    for participant in document["partnerships"][RIEC]["participants"]:
        if participant["organisation"] in RETIRED:
            participant["status"] = "retired"
    path = tmp / "register.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("retired-holder")
    with running_stack(tmp, settings_overrides={"register_file": _register_retiring(tmp)}) as running:
        yield running


def _system(organisation: str) -> Principal:
    return Principal(kind="system", subject=RETIRED[organisation], organisation=organisation,
                     scopes=frozenset({"enrol"}))


def _previous_register() -> Any:
    return load_register(SHIPPED_REGISTER)[0]


def _old_process_enrols_pseudonym(stack: Stack, ref: str) -> str:
    """The KvK's row for ``ref``, written by a process on the previous register; its partnership pseudonym."""
    current = pseudonym_service(stack.container)
    old = PseudonymService(sessions=stack.container.sessions, clock=stack.clock, register=_previous_register(),
                           transcryptor=lambda: current.transcryptor)
    kind, number = stack.world.identifier_of(ref)
    item = Item(kind, PseudonymClient(current.transcryptor.public_key()).polymorphic(kind, number),
                ("trade-name",), ("company_registration",))
    batch = old.prepare_enrolment(_system("kvk"), RIEC, [item])
    with stack.container.engine.begin() as connection:
        batch.apply(connection)
    return current.partnership_pseudonym_of(item, RIEC)


def _old_process_enrols_filter(stack: Stack) -> None:
    """The police's match filter of ``PERSON``, written by a process on the previous register."""
    old = FilterService(sessions=stack.container.sessions, clock=stack.clock, register=_previous_register())
    (body,) = enrolment_batches(RIEC, "person", SECRET,
                                [FilterRecordToEnrol("bvh/2026/80001", PERSON, ["police_incidents"])])
    batch = old.prepare(_system("politie"), FilterEnrolment.model_validate(body))
    with stack.container.engine.begin() as connection:
        batch.apply(connection)


def _disclosed_holders(stack: Stack, answer: dict[str, Any]) -> set[str]:
    return {event["holder"] for event in stack.logged(answer) if event["event_type"] == "disclosure"}


async def test_discovery_denies_a_retired_holder_whose_index_rows_are_still_there(stack: Stack) -> None:
    ref = stack.world.scenarios()["bibob-applicant"][0]
    shared = _old_process_enrols_pseudonym(stack, ref)
    # The row is there and would answer for the KvK: what the index says of this subject.
    assert "kvk" in pseudonym_service(stack.container).holders_of(RIEC, [shared])

    mine = await stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref])
    answer = stack.post(MUNICIPALITY, "/v1/discovery", BIBOB | {"subjects": [{"ref": p} for p in mine],
                                                                "categories": ["company_registration"]})
    assert answer.status_code == 200, answer.text
    kvk = {t["holder"]: t for t in answer.json()["targets"]}["kvk"]
    assert kvk["outcome"] == "denied"
    assert "holder-retired" in {r["code"] for r in kvk["reasons"]}
    assert "kvk" not in _disclosed_holders(stack, answer.json())


def test_fuzzy_discovery_denies_a_retired_holder_whose_filters_are_still_there(stack: Stack) -> None:
    _old_process_enrols_filter(stack)
    schema = shipped_schema("person")
    assert len(filter_service(stack.container).held(RIEC, schema, ["politie"])["politie"].categories) == 1

    request = fuzzy_request(partnership=RIEC, purpose=BIBOB["purpose"], legal_basis=BIBOB["legal_basis"],
                            case_reference=BIBOB["case_reference"], signal=Signal(**BIBOB["signal"]),
                            categories=["police_incidents"], record_type="person", secret=SECRET, subjects=[PERSON])
    answer = stack.post(MUNICIPALITY, "/v1/discovery/fuzzy", request.model_dump(mode="json"))
    assert answer.status_code == 200, answer.text
    police = {t["holder"]: t for t in answer.json()["targets"]}["politie"]
    assert police["outcome"] == "denied"
    assert "holder-retired" in {r["code"] for r in police["reasons"]}
    assert "politie" not in _disclosed_holders(stack, answer.json())
