"""Exchange API behaviour beyond the scenarios: idempotency, who may see an outcome, minimisation of an
over-sharing holder, discovery, bad input, and failing closed when policy or audit fail."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from audit.tables import audit_entries
from gateway.exchange.tables import exchanges
from tests.auth_helpers import person_token
from tests.servers import serve_app
from tests.stack import Stack, running_stack

BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-200",
         "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("api"), over_share={"politie-bvh"}) as running:
        yield running


def _audit_count(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _body(stack: Stack, scenario: str = "bibob-applicant", **extra: Any) -> dict[str, Any]:
    return BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()[scenario][1:2]],
                    "holders": ["politie"], "categories": ["police_incidents"]} | extra


def test_over_sharing_holder_is_filtered_and_logged(stack: Stack) -> None:
    target = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack)).json()["targets"][0]
    assert target["outcome"] == "allowed"
    assert target["records"]
    assert {r["category"] for r in target["records"]} == {"police_incidents"}  # CIE note dropped by the gateway
    with stack.container.engine.connect() as connection:
        overshared = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.canonical.contains('"dropped_overshared":1'))).all()
    assert overshared


def test_idempotent_retry_returns_the_first_answer_without_new_log_entries(stack: Stack) -> None:
    headers = {"Idempotency-Key": "retry-key-0001"}
    first = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack), headers)
    entries_after_first = _audit_count(stack)
    second = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack), headers)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert _audit_count(stack) == entries_after_first
    clash = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack, categories=["police_incidents",
                                                                                          "convictions"]), headers)
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")


@contextmanager
def held_holder() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """A holder that answers a query (with no records) only once ``release`` is set; ``arrived`` is set when a
    query reaches it: the test decides how long an exchange stays in flight."""
    arrived, release = threading.Event(), threading.Event()
    slow = FastAPI()

    @slow.post("/holder/v1/query")
    async def query() -> dict[str, object]:
        arrived.set()
        await asyncio.to_thread(release.wait, 20)
        return {"status": "answered", "records": []}

    with serve_app(slow) as url:
        yield url, arrived, release


def test_a_retry_while_the_first_attempt_is_in_flight_gets_409_and_nothing_runs_twice(tmp_path: Path) -> None:
    headers = {"Idempotency-Key": "in-flight-key-0001"}
    with held_holder() as (holder_url, arrived, release), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        first: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: first.append(s.post("gemeente-amsterdam-vth", "/v1/exchanges",
                                                                     _body(s), headers)))
        caller.start()
        assert arrived.wait(20), "the first attempt never reached the holder"
        before = _audit_count(s)
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), headers)
        assert retry.status_code == 409
        assert retry.headers["content-type"].startswith("application/problem+json")
        assert retry.headers["retry-after"] == "1"
        assert _audit_count(s) == before  # the retry wrote nothing and asked no holder
        release.set()
        caller.join(20)
        assert first[0].status_code == 200
        again = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), headers)  # now a plain replay
        assert again.json() == first[0].json()
        other_key = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": "other-key-0002"})
        assert other_key.status_code == 200  # the guard is per key, not per client


def test_a_key_another_process_answered_meanwhile_is_409_with_nothing_disclosed_and_a_retry_replays(
        tmp_path: Path) -> None:
    key = "clashing-key-0001"
    with held_holder() as (holder_url, arrived, release), \
            running_stack(tmp_path, holder_overrides={"politie-bvh": holder_url}) as s:
        release.set()
        done = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": "first-key-0001"})
        assert done.status_code == 200
        release.clear()
        arrived.clear()
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(s.post(
            "gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": key})))
        caller.start()
        assert arrived.wait(20)
        # Meanwhile another gateway process (whose in-flight guard this one cannot see) stored its answer to
        # the same request under the same key.
        with s.container.engine.begin() as connection:
            stored = connection.execute(select(exchanges).where(exchanges.c.id == done.json()["exchange_id"])).one()
            connection.execute(exchanges.insert().values(stored._asdict() | {
                "id": "other-process-exchange", "idempotency_key": key, "sealed_records": None}))
        before = _audit_count(s)
        release.set()
        caller.join(20)
        [answer] = answers
        assert answer.status_code == 409  # gateway.client waits (Retry-After) and asks again
        assert answer.headers["retry-after"] == "1"
        assert "nothing of this one was disclosed" in answer.json()["detail"]
        assert _audit_count(s) == before  # its disclosure shared the refused outcome row's transaction
        retry = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s), {"Idempotency-Key": key})
        assert retry.status_code == 200
        assert retry.json()["targets"][0]["outcome"] == "allowed"
        assert retry.json()["receipt"] == done.json()["receipt"]  # the other process's answer, replayed


def test_outcome_is_visible_to_the_requester_and_its_privacy_officer_only(stack: Stack) -> None:
    answer = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(stack)).json()
    exchange_id = answer["exchange_id"]
    own = stack.get("gemeente-amsterdam-vth", f"/v1/exchanges/{exchange_id}")
    assert own.status_code == 200
    assert own.json()["targets"][0]["outcome"] == "allowed"
    # The stored outcome cites the same audit entries as the answer did: all of this exchange, request
    # and decision (written ahead) and disclosure (written with the outcome row).
    assert own.json()["receipt"] == answer["receipt"]
    with stack.container.engine.connect() as connection:
        cited = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.log_index.in_(answer["receipt"]["audit_indices"]))).scalars().all()
    assert len(cited) == len(answer["receipt"]["audit_indices"]) >= 3
    assert all(exchange_id in entry for entry in cited)
    assert any('"event_type":"disclosure"' in entry for entry in cited)
    assert own.json()["targets"][0]["records"] == []  # the outcome, not the data again
    assert stack.get("politie-bvh", f"/v1/exchanges/{exchange_id}").status_code == 404
    own_officer = _person(stack, "po-amsterdam", "gemeente-amsterdam")
    other_officer = _person(stack, "po-politie", "politie")
    assert httpx.get(f"{stack.gateway_url}/v1/exchanges/{exchange_id}",
                     headers={"Authorization": f"Bearer {own_officer}"}).status_code == 200
    assert httpx.get(f"{stack.gateway_url}/v1/exchanges/{exchange_id}",
                     headers={"Authorization": f"Bearer {other_officer}"}).status_code == 404


def _person(stack: Stack, username: str, organisation: str) -> str:
    client = httpx.Client(base_url=stack.gateway_url)
    try:
        return person_token(client, stack.container, username, organisation,  # type: ignore[arg-type]
                            ["privacy-officer"])
    finally:
        client.close()


def test_discovery_answers_hit_or_no_hit_and_never_data(stack: Stack) -> None:
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
                    "categories": ["company_registration", "tax_debts", "ongoing_investigation"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", body)
    assert response.status_code == 200, response.text
    targets = {t["holder"]: t["outcome"] for t in response.json()["targets"]}
    assert targets["kvk"] == "hit"
    assert targets["fiod"] == "hit"
    assert "records" not in response.text
    nobody = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["no-records"][0]}],
                      "categories": ["company_registration"]}
    assert {t["outcome"] for t in stack.post("gemeente-amsterdam-vth", "/v1/discovery", nobody).json()["targets"]
            if t["holder"] == "kvk"} == {"no-hit"}


@pytest.mark.parametrize(("mutate", "status"), [
    (lambda b: b | {"surprise": 1}, 422),
    (lambda b: b | {"subjects": []}, 422),
    (lambda b: b | {"subjects": [{"ref": "123456782"}]}, 422),  # a BSN-shaped ref is not a pseudonym
    (lambda b: b | {"holders": ["no-such-org"]}, 422),
    (lambda b: b | {"partnership": "riec-utrecht"}, 422),
    (lambda b: b | {"partnership": "Robert'); DROP TABLE exchanges;--"}, 422),
])
def test_bad_input_is_a_problem_and_writes_nothing(stack: Stack, mutate: Any, status: int) -> None:
    before = _audit_count(stack)
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", mutate(_body(stack)))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "123456782" not in response.text
    assert _audit_count(stack) == before


def test_malformed_json_and_oversized_body(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token('gemeente-amsterdam-vth')}",
               "Content-Type": "application/json"}
    broken = httpx.post(f"{stack.gateway_url}/v1/exchanges", content=b'{"partnership": ', headers=headers)
    assert broken.status_code == 422
    huge = httpx.post(f"{stack.gateway_url}/v1/exchanges", content=b"[" + b"1," * 700_000 + b"1]", headers=headers)
    assert huge.status_code == 413
    assert huge.json()["status"] == 413


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_policy_engine_down_denies_with_503_and_is_audited(tmp_path: Path) -> None:
    overrides = {"policy_engine": "opa", "opa_url": f"http://127.0.0.1:{_closed_port()}", "opa_timeout_seconds": 0.5}
    with running_stack(tmp_path, settings_overrides=overrides) as down:
        response = down.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(down))
        assert response.status_code == 503
        assert response.json()["outcome"] == "denied"
        with down.container.engine.connect() as connection:
            denied = connection.execute(select(audit_entries.c.canonical).where(
                audit_entries.c.canonical.contains("policy-engine-unavailable"))).all()
        assert denied


def test_audit_log_unwritable_means_nothing_is_disclosed(tmp_path: Path) -> None:
    with running_stack(tmp_path) as broken:
        with broken.container.engine.begin() as connection:  # a real fault: the log table disappears
            connection.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_gone"))
        response = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert response.status_code == 503
        assert "nothing was disclosed" in response.json()["detail"]
        assert "police_incidents" not in response.text


def test_outcome_row_unwritable_means_no_disclosure_is_logged_or_answered(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def logged(broken: Stack) -> list[str]:
        with broken.container.engine.connect() as connection:
            return list(connection.execute(select(audit_entries.c.event_type)).scalars())

    with running_stack(tmp_path) as broken:
        assert broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken)).status_code == 200
        before = logged(broken)
        with broken.container.engine.begin() as connection:  # the outcome table disappears
            connection.execute(text("ALTER TABLE exchanges RENAME TO exchanges_gone"))
        response = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "police_incidents" not in response.text
        after = logged(broken)
        # The request and its decision were written ahead; the disclosure shared the outcome row's fate.
        assert after.count("exchange.requested") == before.count("exchange.requested") + 1
        assert after.count("disclosure") == before.count("disclosure")
        # Once the count of today's requests is re-read from the missing table: 503 too, never a 500.
        broken.container.services["exchange"]._daily_counts.clear()  # type: ignore[attr-defined]
        capfd.readouterr()
        again = broken.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(broken))
        assert again.status_code == 503
        logged_lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
        [unavailable] = [line for line in logged_lines if line["event"] == "database_unavailable"]
        assert "no such table: exchanges" in unavailable["reason"]  # which fault, for the operator
        assert again.headers["content-type"].startswith("application/problem+json")
        assert logged(broken).count("disclosure") == before.count("disclosure")


def test_logs_carry_no_personal_data(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    body = BIBOB | {"subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"]], "holders": "all",
                    "categories": ["company_registration", "directorships", "tax_debts", "police_incidents",
                                   "convictions"]}
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert response.status_code == 200
    assert any(t["records"] for t in response.json()["targets"])  # personal data did flow, to the requester
    logs = capfd.readouterr().err
    assert "exchange_completed" in logs
    company, *directors = stack.world.scenarios()["bibob-applicant"]
    secrets = [stack.world.company(company).trade_name, stack.world.company(company).kvk_number]
    for ref in directors:
        person = stack.world.person(ref)
        secrets += [person.name, person.bsn, person.address]
    leaked = [value for value in secrets if value in logs]
    assert leaked == []
