"""After a pseudonym key rotation, over real HTTP: more subjects than fit one holder query under every key
version the ring holds (51 to 100 under two versions) are asked in parts (``gateway.exchange.parts``).

Found by a review: the exchange asked as many versions per subject as fit one query of 100 subjects, so with
more than 50 subjects only the current version; a holder that had not enrolled again answered nothing for
them while the index said ``hit``, and nothing logged it. The holder here knows the pseudonyms it is told to
(``known``): of the old version only (it has not enrolled again), or of both (it has)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.auditing.setup import audit_services
from gateway.enrolment.rekey import rekey_index
from gateway.enrolment.setup import install_pseudonyms, pseudonym_keystore, pseudonym_service
from gateway.settings import SHIPPED_REGISTER
from tests.stack import Stack, stack_with_holder

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
TAX = "belastingdienst-ivs"
SUBJECTS = 60  # two key versions: 120 pseudonyms, more than one query's 100
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "signal": {"type": "bibob-application", "reference": "BIBOB-2026-800"},
         "categories": ["company_registration"], "holders": ["kvk"]}
S2 = {"partnership": RIEC, "purpose": "malafide-company-dissolution", "legal_basis": "WGS (RIEC) with BW 2:19a",
      "signal": {"type": "missing-returns", "reference": "BD-SIG-800"}, "categories": ["company_registration"],
      "holders": ["kvk"]}


def _bound(body: dict[str, Any]) -> bool:
    """Whether the query carries an escalation decision signed for its own request id (the signature is the
    simulators' to check, ``tests/scenarios/test_escalation_s9.py``: here only the claim is read)."""
    statement = body.get("escalation_decision")
    if not statement:
        return False
    payload = statement.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return bool(claims["request_id"] == body["request_id"])


class _Holder:
    """A KvK (or FIOD, hit/no-hit) that answers one record (a hit) per subject it knows, about the pseudonym it
    was asked by; ``mode`` makes one of the parts after the first fail or refuse, makes every query wait until
    all parts of the question have arrived (a question asked part after part then times out), or names in a
    discovery's answer only the subjects it knows that it was not asked about."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}  # pseudonym -> record id (one record per subject)
        self.mode = "answer"
        self.asked: list[dict[str, Any]] = []
        self.parts = 0  # how many parts the "together" mode waits for
        self._arrived: asyncio.Event | None = None
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)
        self.app.post("/holder/v1/discover")(self.discover)

    def reset(self, known: dict[str, str], mode: str = "answer", parts: int = 0) -> None:
        self.known, self.mode, self.asked, self.parts, self._arrived = known, mode, [], parts, None

    async def discover(self, request: Request) -> Any:
        body = await request.json()
        self.asked.append(body)
        if self.mode == "other-parts":  # names a subject it knows, where it was not asked about
            return {"status": "answered", "hits": {s: ["investigation"] for s in self.known
                                                   if s not in body["subjects"]}}
        return {"status": "answered", "hits": {s: ["investigation"] for s in body["subjects"] if s in self.known}}

    async def query(self, request: Request) -> Any:
        body = await request.json()
        self.asked.append(body)
        later_part = body["request_id"].count(":") == 2  # <exchange>:<holder>:<n>
        if self.mode == "fail-part" and later_part:
            return JSONResponse({"detail": "down"}, status_code=503)
        if self.mode == "refuse-part" and later_part and not _bound(body):
            return {"status": "refused", "refusal_reason": "investigation-confidentiality", "records": []}
        if self.mode == "together":
            self._arrived = self._arrived or asyncio.Event()
            if len(self.asked) == self.parts:
                self._arrived.set()
            try:
                await asyncio.wait_for(self._arrived.wait(), 5)
            except TimeoutError:
                return JSONResponse({"detail": "the other parts never came"}, status_code=503)
        return {"status": "answered", "received": len(body["provided"]), "records": [
            {"record_id": self.known[s], "record_type": "registration", "subject": s,
             "category": "company_registration", "fields": {"registered": 2019}}
            for s in body["subjects"] if s in self.known]}


@pytest.fixture(scope="module")
def holder() -> _Holder:
    return _Holder()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, holder: _Holder) -> Iterator[Stack]:
    tmp = Path(tmp_path_factory.mktemp("rotation-parts"))
    register = tmp / "register.yaml"  # 60 subjects in one request: no bulk escalation for this test's purpose
    register.write_text(SHIPPED_REGISTER.read_text().replace("bulk_threshold: 25", "bulk_threshold: 100"))
    with stack_with_holder(tmp, holder.app, ["kvk-handelsregister", "fiod-ois"],
                           {"register_file": register, "connector_timeout_seconds": 10,
                            "connector_retries": 0}) as running:
        ring = asyncio.run(pseudonym_keystore(running.container).rotate())
        install_pseudonyms(running.container)  # what `pseudonyms rotate` and a restart leave: v1 and v2 held
        rekey_index(running.container.sessions, ring, audit_services(running.container).log)
        yield running


def _pseudonyms(stack: Stack, system: str, organisation: str, holder: str = "kvk") -> dict[str, list[str]]:
    """``system``'s pseudonyms of 60 companies → the holder's pseudonyms of each, current version first."""
    refs = [c.subject_ref for c in stack.world.companies[:SUBJECTS]]
    mine = asyncio.run(stack.own_pseudonyms(system, RIEC, refs))
    service = pseudonym_service(stack.container)
    return {p: service.to_holder_all(p, RIEC, organisation, holder) for p in mine}


@pytest.fixture(scope="module")
def subjects(stack: Stack) -> dict[str, list[str]]:
    return _pseudonyms(stack, MUNICIPALITY, "gemeente-amsterdam")


def _exchange(stack: Stack, subjects: dict[str, list[str]], case: str, body: dict[str, Any] = BIBOB,
              system: str = MUNICIPALITY) -> dict[str, Any]:
    response = stack.post(system, "/v1/exchanges", body | {"case_reference": case, "subjects": [
        {"ref": p} for p in subjects]})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _both(subjects: dict[str, list[str]]) -> dict[str, str]:
    """What a KvK knows that has enrolled again since the rotation: its pseudonyms of both versions."""
    return {p: f"reg-{n:03d}" for n, theirs in enumerate(subjects.values()) for p in theirs}


def _after_the_request(stack: Stack, answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in stack.logged(answer) if e["event_type"] not in ("exchange.requested", "policy.decided")]


def _old_only(subjects: dict[str, list[str]]) -> dict[str, str]:
    """What a KvK knows that has not enrolled again since the rotation: its pseudonyms of version 1."""
    known = {theirs[-1]: f"reg-{n:03d}" for n, theirs in enumerate(subjects.values())}
    assert {p.split(".")[1] for p in known} == {"v1"}
    return known


def test_every_subject_is_answered_by_a_holder_that_has_not_enrolled_again(
        stack: Stack, holder: _Holder, subjects: dict[str, list[str]]) -> None:
    holder.reset(_old_only(subjects))
    answer = _exchange(stack, subjects, "RIEC-AA-2026-801")
    [target] = answer["targets"]
    assert target["outcome"] == "allowed", target
    assert sorted((r["subject"], r["record_id"]) for r in target["records"]) == sorted(
        (mine, f"reg-{n:03d}") for n, mine in enumerate(subjects))
    # asked in parts of at most 100, every subject's current pseudonym in the first, each pseudonym once
    assert sorted(len(q["subjects"]) for q in holder.asked) == [20, 100]
    first = next(q for q in holder.asked if q["request_id"].count(":") == 1)
    assert first["subjects"][:SUBJECTS] == [theirs[0] for theirs in subjects.values()]
    assert sorted(p for q in holder.asked for p in q["subjects"]) == sorted(
        p for theirs in subjects.values() for p in theirs)
    # one audit trail for the target: a disclosure per subject, nothing over-shared
    disclosures = [e for e in stack.logged(answer) if e["event_type"] == "disclosure"]
    assert len(disclosures) == SUBJECTS
    assert all(e["extra"] == {"records": 1} for e in disclosures)


def test_a_record_answered_in_two_parts_is_disclosed_once(
        stack: Stack, holder: _Holder, subjects: dict[str, list[str]]) -> None:
    """A holder that has enrolled again knows both versions: asked about a subject in the first part (current
    version) and again in a later one (old version), it answers the subject's record twice."""
    holder.reset(_both(subjects))
    answer = _exchange(stack, subjects, "RIEC-AA-2026-802")
    [target] = answer["targets"]
    assert target["outcome"] == "allowed", target
    assert sum(len(q["subjects"]) for q in holder.asked) == 2 * SUBJECTS
    assert sorted(r["record_id"] for r in target["records"]) == [f"reg-{n:03d}" for n in range(SUBJECTS)]
    disclosures = [e for e in stack.logged(answer) if e["event_type"] == "disclosure"]
    assert len(disclosures) == SUBJECTS  # one per subject, of one record, not logged as over-sharing
    assert all(e["extra"] == {"records": 1} for e in disclosures)


def test_a_part_that_fails_makes_the_target_unavailable_and_discloses_nothing(
        stack: Stack, holder: _Holder) -> None:
    """The first part answers; a later part answers 503: the target is holder-unavailable as for one failed
    query, and what the first part answered goes nowhere. The records the requester provided (S2: the
    Belastingdienst hands the KvK the dissolution grounds) went with the first part alone, which answered:
    logged as handed, with what the holder said it took in."""
    tax = _pseudonyms(stack, TAX, "belastingdienst")
    holder.reset(_both(tax), "fail-part")
    answer = _exchange(stack, tax, "BD-2026-803", S2 | {"provide": [
        {"subject": next(iter(tax)), "category": "tax_compliance", "fields": {"missing_returns": ["2024"]}}]}, TAX)
    [target] = answer["targets"]
    assert target["outcome"] == "holder-unavailable", target
    assert target["records"] == []
    assert [r["code"] for r in target["reasons"]][-1] == "holder-unavailable"
    assert sorted((q["request_id"].count(":"), len(q["provided"])) for q in holder.asked) == [(1, 1), (2, 0)]
    assert [(e["event_type"], e.get("data_subject"), e.get("extra", {}).get("direction"),
             e.get("extra", {}).get("received")) for e in _after_the_request(stack, answer)] == [
        ("disclosure", None, "requester-to-holder", 1), ("holder.unavailable", None, None, None)]


def test_a_part_that_refuses_makes_the_target_refused_and_a_rerun_binds_every_part(
        stack: Stack, holder: _Holder, subjects: dict[str, list[str]]) -> None:
    """A later part refused: the target is refused-by-holder as for one refused query (nothing disclosed, one
    ``holder.refused`` entry, a case opened). The re-run under the case's decision carries a statement signed
    for each part's own request id, so the holder answers every part."""
    holder.reset(_both(subjects), "refuse-part")
    answer = _exchange(stack, subjects, "RIEC-AA-2026-804")
    [target] = answer["targets"]
    assert target["outcome"] == "refused-by-holder", target
    assert target["records"] == []
    assert [e["event_type"] for e in _after_the_request(stack, answer)] == ["holder.refused"]
    officer = stack.person("po-kvk", "kvk", ["privacy-officer"])
    decision_id = stack.allow(officer, target["escalation_id"], ["company_registration"],
                              "The registration is needed for the Bibob advice.")
    holder.reset(_both(subjects), "refuse-part")
    rerun = _exchange(stack, subjects, "RIEC-AA-2026-804", BIBOB | {
        "escalation_decision": decision_id})
    [target] = rerun["targets"]
    assert target["outcome"] == "allowed", target
    assert len(target["records"]) == SUBJECTS
    assert sorted(q["request_id"].count(":") for q in holder.asked if _bound(q)) == [1, 2]


def test_the_parts_go_out_together(stack: Stack, holder: _Holder, subjects: dict[str, list[str]]) -> None:
    """Each part waits at the holder until every part has arrived: asked one after the other, the first would
    wait in vain and the target be unavailable. Together, the target takes no longer than one query."""
    holder.reset(_old_only(subjects), "together", parts=2)
    [target] = _exchange(stack, subjects, "RIEC-AA-2026-805")["targets"]
    assert target["outcome"] == "allowed", target
    assert len(target["records"]) == SUBJECTS


def test_a_hit_only_holder_is_asked_in_parts_too(stack: Stack, holder: _Holder) -> None:
    """The FIOD answers a Bibob check hit/no-hit only: one that has not enrolled again knows one subject, by
    its old pseudonym, which goes in a later part — a hit, logged about that subject's request as for one
    query. A hit a part reports for a subject asked in another part is over-sharing, and no hit."""
    fiod = _pseudonyms(stack, MUNICIPALITY, "gemeente-amsterdam", "fiod")
    last = list(fiod.values())[-1]
    body = BIBOB | {"holders": ["fiod"], "categories": ["ongoing_investigation"]}
    holder.reset({last[-1]: "inv-1"})
    answer = _exchange(stack, fiod, "RIEC-AA-2026-806", body)
    [target] = answer["targets"]
    assert (target["outcome"], target["hit"]) == ("allowed", True), target
    assert sorted(len(q["subjects"]) for q in holder.asked) == [20, 100]
    assert len([e for e in _after_the_request(stack, answer) if e.get("data_subject")]) == SUBJECTS
    holder.reset({last[-1]: "inv-1"}, "other-parts")
    [target] = _exchange(stack, fiod, "RIEC-AA-2026-807", body)["targets"]
    assert (target["outcome"], target["hit"]) == ("allowed", False), target
