"""An officer checks an exchange's receipt against the signed checkpoint without trusting the gateway,
and verifies an export of the log offline with the CLI (a changed byte is caught)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from structlog.testing import capture_logs
from typer.testing import CliRunner

from audit import Checkpoint, NoteVerifier, open_checkpoint, sign_checkpoint
from audit.merkle import verify_consistency, verify_inclusion
from audit.tables import audit_checkpoints, audit_entries
from gateway.cli import app
from gateway.exchange.setup import exchange_service
from tests.audit_support import log_signer
from tests.auth_helpers import account_id, person_token
from tests.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("proofs")) as running:
        yield running


@pytest.fixture(scope="module")
def officer(stack: Stack) -> dict[str, str]:
    return _login(stack, "po-gemeente", "gemeente-amsterdam", ["privacy-officer"])


def test_receipt_is_included_in_the_signed_tree(stack: Stack, officer: dict[str, str]) -> None:
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-400",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-400"},
            "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}], "holders": ["kvk"],
            "categories": ["company_registration"]}
    receipt = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).json()["receipt"]
    headers = officer
    vkey = NoteVerifier.from_vkey(httpx.get(f"{stack.gateway_url}/v1/audit/key", headers=headers).text)
    # Checked at once, not after the policy's next checkpoint (up to a minute): the latest one does not cover
    # the fresh entries, so the officer asks for one that does.
    latest = open_checkpoint(httpx.get(f"{stack.gateway_url}/v1/audit/checkpoint", headers=headers).text, vkey)
    assert latest.tree_size <= max(receipt["audit_indices"])
    note = httpx.get(f"{stack.gateway_url}/v1/audit/checkpoint", headers=headers,
                     params={"covering": max(receipt["audit_indices"]) + 1}).text
    checkpoint = open_checkpoint(note, vkey)
    assert checkpoint.tree_size > max(receipt["audit_indices"]), "the checkpoint covers the receipt"
    for index in receipt["audit_indices"]:
        proof = httpx.get(f"{stack.gateway_url}/v1/audit/entries/{index}/proof",
                          params={"size": checkpoint.tree_size}, headers=headers).json()
        verify_inclusion(index, checkpoint.tree_size, bytes.fromhex(proof["leaf_hash"]),
                         [bytes.fromhex(h) for h in proof["hashes"]], checkpoint.root_hash)
    assert httpx.get(f"{stack.gateway_url}/v1/audit/entries/0/proof", params={"size": 10**9},
                     headers=headers).status_code in {404, 422}
    assert httpx.get(f"{stack.gateway_url}/v1/audit/checkpoint",
                     headers={"Authorization": f"Bearer {stack.token('gemeente-amsterdam-vth')}"}).status_code == 403


def test_consistency_between_two_checkpoints(stack: Stack, officer: dict[str, str]) -> None:
    headers = officer
    for _ in range(2):  # make sure the log has grown
        stack.post("gemeente-amsterdam-vth", "/v1/discovery", {
            "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-401",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-401"},
            "subjects": [{"ref": stack.world.scenarios()["no-records"][0]}], "categories": ["company_registration"]})
    size = stack.container.services["audit"].log.size()
    first = max(1, size // 2)
    proof = httpx.get(f"{stack.gateway_url}/v1/audit/consistency", params={"from": first, "to": size},
                      headers=headers).json()
    log = stack.container.services["audit"].log
    verify_consistency(first, size, log.root(first), log.root(size), [bytes.fromhex(h) for h in proof["hashes"]])


def test_cli_export_verifies_and_a_changed_byte_is_caught(stack: Stack, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack.container.settings
    monkeypatch.setenv("WGS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WGS_DATABASE_URL", settings.effective_database_url)
    runner = CliRunner()
    export = tmp_path / "audit.jsonl"
    assert runner.invoke(app, ["audit", "export", "--out", str(export)]).exit_code == 0
    vkey = runner.invoke(app, ["audit", "key"]).output.strip()
    intact = runner.invoke(app, ["audit", "verify", "--export", str(export), "--key", vkey])
    assert intact.exit_code == 0, intact.output
    assert "log intact" in intact.output
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0  # the live database too
    lines = export.read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if '"kvk"' in line)
    lines[target] = lines[target].replace('"kvk"', '"kvK"', 1)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    caught = runner.invoke(app, ["audit", "verify", "--export", str(tampered), "--key", vkey])
    assert caught.exit_code == 1
    assert "NOT intact" in caught.output
    assert runner.invoke(app, ["audit", "verify", "--fast"]).exit_code == 0
    fast = runner.invoke(app, ["audit", "verify", "--fast", "--export", str(tampered), "--key", vkey])
    assert fast.exit_code == 1  # a changed byte changes the tree: the fast check catches it too


def _login(stack: Stack, username: str, organisation: str, roles: list[str]) -> dict[str, str]:
    client = httpx.Client(base_url=stack.gateway_url)
    try:
        token = person_token(client, stack.container, username, organisation, roles)  # type: ignore[arg-type]
    finally:
        client.close()
    return {"Authorization": f"Bearer {token}"}


def test_officers_see_only_entries_they_are_entitled_to(stack: Stack, officer: dict[str, str]) -> None:
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-402",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-402"},
            "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}], "holders": ["kvk"],
            "categories": ["company_registration"]}
    assert stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).status_code == 200
    url = f"{stack.gateway_url}/v1/audit/entries"
    listed = httpx.get(url, params={"limit": 500}, headers=officer).json()["entries"]
    # Besides its own: the register's changes, which every participant's officer sees (they name nobody).
    mine = [e for e in listed if e["entry"]["event"]["event_type"] != "register.changed"]
    assert mine
    assert all("gemeente-amsterdam" in ((e["entry"]["event"]["requester"] or {}).get("org", ""),
                                        e["entry"]["event"]["holder"]) for e in mine)
    bank = _login(stack, "po-bank", "abn-amro", ["privacy-officer"])
    seen = [e["entry"]["event"] for e in httpx.get(url, headers=bank).json()["entries"]]
    assert [(e["event_type"], e["extra"]["action"], e["requester"]["org"]) for e in seen
            if e["event_type"] != "register.changed"] == [
        ("console.action", "sign-in", "abn-amro")], "the bank's officer sees its own sign-in, nothing of the exchange"
    assert {e["event_type"] for e in seen} == {"console.action", "register.changed"}
    coordinator = _login(stack, "cpo-riec", "riec-aa", ["coordinating-privacy-officer"])
    riec = httpx.get(url, params={"partnership": "riec-amsterdam-amstelland", "limit": 500},
                     headers=coordinator).json()["entries"]
    in_riec = {e["index"] for e in mine if (e["entry"]["event"]["processing_activity"] or {}).get("partnership")
               == "riec-amsterdam-amstelland"}  # not the officer's sign-in, which is of no partnership
    assert in_riec
    assert in_riec <= {e["index"] for e in riec}
    disclosures = httpx.get(url, params={"event_type": "disclosure"}, headers=officer).json()["entries"]
    assert disclosures
    assert {e["entry"]["event"]["event_type"] for e in disclosures} == {"disclosure"}
    first = httpx.get(url, params={"limit": 2}, headers=officer).json()
    assert len(first["entries"]) == 2
    second = httpx.get(url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=officer).json()
    assert second["entries"][0]["index"] > first["entries"][-1]["index"]
    system = {"Authorization": f"Bearer {stack.token('gemeente-amsterdam-vth')}"}
    assert httpx.get(url, headers=system).status_code == 403


def test_statistics_count_requests_and_decisions_per_group(stack: Stack, officer: dict[str, str]) -> None:
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-403",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-403"},
            "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}], "holders": ["kvk", "belastingdienst"],
            "categories": ["company_registration", "income", "tax_debts"]}
    url = f"{stack.gateway_url}/v1/audit/statistics"
    before = {(r["purpose"], r["participant"]): r for r in httpx.get(url, headers=officer).json()}
    assert stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).status_code == 200
    after = {(r["purpose"], r["participant"]): r for r in httpx.get(url, headers=officer).json()}
    key = ("bibob-integrity-check", "gemeente-amsterdam")
    old = before.get(key, {"requests": 0, "allows": 0, "narrowings": 0})
    assert after[key]["requests"] == old["requests"] + 1
    assert after[key]["allows"] == old["allows"] + 1  # kvk
    assert after[key]["narrowings"] == old["narrowings"] + 1  # belastingdienst: income removed
    csv_text = httpx.get(url, params={"format": "csv"}, headers=officer).content.decode("utf-8-sig")
    assert csv_text.splitlines()[0].startswith("partnership,purpose,participant,month,requests")


def test_contact_point_lists_every_disclosure_about_one_subject(stack: Stack, officer: dict[str, str]) -> None:
    subject = stack.world.scenarios()["unexplained-wealth"][0]
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "unexplained-wealth", "legal_basis": "WGS (RIEC)",
            "case_reference": "RIEC-AA-2026-404", "signal": {"type": "asset-signal", "reference": "UW-1"},
            "subjects": [{"ref": subject}], "holders": ["belastingdienst", "politie"],
            "categories": ["income", "assets", "police_incidents"]}
    assert stack.post("belastingdienst-ivs", "/v1/exchanges", body).status_code == 200
    contact = _login(stack, "contact-riec", "riec-aa", ["contact-point"])
    url = f"{stack.gateway_url}/v1/audit/subjects/{subject}/disclosures"
    found = httpx.get(url, headers=contact).json()
    assert {e["entry"]["event"]["holder"] for e in found} == {"belastingdienst", "politie"}
    assert all(e["entry"]["event"]["data_subject"]["pseudonym"] == subject for e in found)
    assert httpx.get(url, headers=officer).status_code == 403


def test_abnormal_use_is_flagged_to_the_privacy_officer(tmp_path: Path) -> None:
    from datetime import timedelta

    from audit import AuditEvent, EventType
    from audit.events import Decision, ProcessingActivity, Requester

    with running_stack(tmp_path) as fresh:
        log = fresh.container.services["audit"].log

        def decisions(count: int, decision: Decision) -> None:
            log.append([AuditEvent(event_type=EventType.POLICY_DECIDED, trace_id="1" * 32, span_id="2" * 16,
                                   processing_activity=ProcessingActivity(partnership="riec-amsterdam-amstelland",
                                                                          purpose="bibob-integrity-check"),
                                   requester=Requester(org="gemeente-amsterdam", system="gemeente-amsterdam-vth"),
                                   holder="politie", decision=decision) for _ in range(count)])

        start = fresh.clock.now()
        fresh.clock.set(start - timedelta(days=5))
        for _ in range(5):  # a quiet baseline: 10 allowed decisions a day
            decisions(10, Decision.ALLOW)
            fresh.clock.advance(timedelta(days=1))
        fresh.clock.set(start)
        decisions(80, Decision.DENY)  # today: eight times the volume, all denied
        officer = _login(fresh, "po-amsterdam", "gemeente-amsterdam", ["privacy-officer"])
        flags = httpx.get(f"{fresh.gateway_url}/v1/audit/anomalies", headers=officer).json()
        assert {f["metric"] for f in flags if f["actor"] == "gemeente-amsterdam-vth"} == {"volume", "denial-rate"}
        other = _login(fresh, "po-politie", "politie", ["privacy-officer"])
        assert httpx.get(f"{fresh.gateway_url}/v1/audit/anomalies", headers=other).json() == []
        with fresh.container.engine.connect() as connection:
            recorded = connection.execute(select(audit_entries.c.log_index).where(
                audit_entries.c.event_type == "anomaly.flagged")).all()
        assert len(recorded) == 2
        httpx.get(f"{fresh.gateway_url}/v1/audit/anomalies", headers=officer)  # asking again records nothing new
        with fresh.container.engine.connect() as connection:
            again = connection.execute(select(audit_entries.c.log_index).where(
                audit_entries.c.event_type == "anomaly.flagged")).all()
        assert len(again) == 2


def test_the_requesting_organisations_officer_sees_every_step_of_its_escalation_case(
        stack: Stack, officer: dict[str, str]) -> None:
    """A case is about the requester's request: its privacy officer is a party (tier 1) and sees the case, so
    the log's account of it must not stop at the steps its own organisation took. The police's review is an
    entry whose requester is the police (who acted) — the municipality's officer must see it all the same; an
    organisation that is no party to the case sees none of it."""
    subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["police-confidential"]]
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-405",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-405"}, "subjects": subjects,
            "holders": ["politie"], "categories": ["police_incidents", "criminal_intelligence"]}
    answer = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).json()
    case_id = answer["targets"][0]["escalation_id"]
    assert case_id, answer["targets"][0]
    police = stack.person("po-politie", "politie", ["privacy-officer"])
    case = stack.call(police, "GET", f"/v1/escalations/{case_id}").json()
    assert stack.call(police, "POST", f"/v1/escalations/{case_id}/review",
                      {"expected_version": case["version"]}).status_code == 200

    def steps(headers: dict[str, str]) -> list[str]:
        found = httpx.get(f"{stack.gateway_url}/v1/audit/entries", headers=headers,
                          params={"event_type": "escalation.step", "limit": 500}).json()["entries"]
        return [e["entry"]["event"]["extra"]["action"] for e in found
                if e["entry"]["event"]["extra"].get("case_id") == case_id]

    police_headers = {"Authorization": f"Bearer {police}"}
    assert steps(police_headers) == ["opened", "start_review"]  # the holder: as before
    assert httpx.get(f"{stack.gateway_url}/v1/escalations/{case_id}", headers=officer).status_code == 200
    assert steps(officer) == ["opened", "start_review"]  # the requester: the police's step too
    bank = {"Authorization": f"Bearer {stack.person('po-abn-escalations', 'abn-amro', ['privacy-officer'])}"}
    assert steps(bank) == []
    # An organisation whose id only begins like the requester's is no party either.
    lookalike = {"Authorization": "Bearer " + stack.person("po-lookalike", "gemeente-amsterdam-noord",
                                                           ["privacy-officer"])}
    assert steps(lookalike) == []


def test_a_case_step_names_the_acting_person_by_account_reference_not_username(stack: Stack) -> None:
    """A username is what a person types: often an e-mail address, else a name. The console's own entries
    name the account by its id for that reason; a case step named the username, so the guard refused the
    entry of an officer signed in as `j.devries@politie.example` and every step they took was a 503 — and
    any other username became part of a log that can never be cleaned."""
    subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["police-confidential"]]
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-406",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-406"}, "subjects": subjects,
            "holders": ["politie"], "categories": ["police_incidents", "criminal_intelligence"]}
    case_id = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).json()["targets"][0]["escalation_id"]
    username = "j.devries@politie.example"
    officer = stack.person(username, "politie", ["privacy-officer"])
    case = stack.call(officer, "GET", f"/v1/escalations/{case_id}").json()
    reviewed = stack.call(officer, "POST", f"/v1/escalations/{case_id}/review", {"expected_version": case["version"]})
    assert reviewed.status_code == 200, reviewed.text
    commented = stack.call(officer, "POST", f"/v1/escalations/{case_id}/comments", {"text": "Looking into it."})
    assert commented.status_code == 200, commented.text
    with stack.container.engine.connect() as connection:
        texts = [str(c) for c in connection.execute(select(audit_entries.c.canonical)).scalars()]
    steps = [json.loads(t)["event"] for t in texts if f'"case_id":"{case_id}"' in t]
    officer_id = account_id(stack.container, username)
    assert [(s["extra"]["action"], s["requester"]["user"]) for s in steps][1:] == [
        ("start_review", officer_id), ("comment", officer_id)]
    assert not [t for t in texts if "devries" in t]


def test_a_data_subject_lookup_through_the_api_is_audited_like_one_in_the_console(stack: Stack) -> None:
    """Who looked up whose disclosures is itself accountable: a lookup in the console is a `console.action`
    entry, but the same lookup through the API (by pseudonym, or by identifier) left no trace at all, so a
    contact point could look up anyone unseen. Now each is an entry (channel `api`), naming the account by id
    and counting what was found — never the subject looked up — which its organisation's officers see."""
    subject = stack.world.scenarios()["unexplained-wealth"][0]
    username = "contact-riec-api"
    contact = {"Authorization": f"Bearer {stack.person(username, 'riec-aa', ['contact-point'])}"}

    def lookups() -> list[dict[str, Any]]:
        with stack.container.engine.connect() as connection:
            events = [json.loads(c)["event"] for c in connection.execute(select(audit_entries.c.canonical).where(
                audit_entries.c.event_type == "console.action").order_by(audit_entries.c.log_index)).scalars()]
        return [e for e in events if e["extra"].get("action") == "subject-lookup"]

    before = len(lookups())
    found = httpx.get(f"{stack.gateway_url}/v1/audit/subjects/{subject}/disclosures", headers=contact)
    assert found.status_code == 200, found.text
    logged = lookups()[before:]
    assert len(logged) == 1
    assert logged[0]["extra"] == {"action": "subject-lookup", "channel": "api", "disclosures": len(found.json())}
    assert logged[0]["requester"] == {"org": "riec-aa", "system": None, "user": account_id(stack.container, username)}
    assert logged[0]["data_subject"] is None
    assert subject not in json.dumps(logged)
    # Refused lookups (not the contact point) find nothing and record nothing.
    officer = {"Authorization": f"Bearer {stack.person('po-riec-lookups', 'riec-aa', ['privacy-officer'])}"}
    assert httpx.get(f"{stack.gateway_url}/v1/audit/subjects/{subject}/disclosures",
                     headers=officer).status_code == 403
    assert len(lookups()) == before + 1
    # The organisation's privacy officer sees the lookup in the log.
    seen = httpx.get(f"{stack.gateway_url}/v1/audit/entries", headers=officer,
                     params={"event_type": "console.action", "limit": 500}).json()["entries"]
    assert any(e["entry"]["event"]["extra"].get("channel") == "api" for e in seen)


def test_a_receipt_never_carries_a_checkpoint_that_does_not_verify(tmp_path: Path) -> None:
    """Found by a review: the checkpoint put in receipts was the checkpoint table's latest row, unverified, so a
    forged row (a note signed by another key) reached requesters as the log's word. Such a row is now left out
    of the receipt (which stays a receipt: its indices are proven later) and logged."""
    body: dict[str, Any] = {  # the request (JSON)
        "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-401",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-401"}, "holders": ["kvk"],
        "categories": ["company_registration"]}
    with running_stack(tmp_path) as stack:
        body["subjects"] = [{"ref": stack.world.scenarios()["bibob-applicant"][0]}]
        audit = stack.container.services["audit"]
        service = exchange_service(stack.container)
        audit.log.issue_checkpoint()
        honest = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body).json()["receipt"]["checkpoint"]
        assert open_checkpoint(honest, audit.log.verifier).tree_size >= 1
        size = audit.log.size()
        impostor = log_signer("impostor", name=audit.signer.name)
        forged = sign_checkpoint(Checkpoint(audit.signer.name, size, audit.log.root(size)), impostor)
        with stack.container.engine.begin() as connection:  # an INSERT: the append-only triggers allow it
            connection.execute(insert(audit_checkpoints).values(
                tree_size=size, root_hash=audit.log.root(size), note=forged, issued_at=stack.container.clock.now()))
        service._latest_checkpoint = None  # not waiting for the receipt's checkpoint to be read again
        with capture_logs() as logs:
            answer = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["receipt"]["checkpoint"] is None
    assert answer.json()["receipt"]["audit_indices"]
    assert [entry["error_type"] for entry in logs if entry["event"] == "receipt_checkpoint_unverified"] == [
        "VerificationError"]
