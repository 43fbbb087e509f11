"""Idempotent replays say what they are, over real HTTP: a retry with the same Idempotency-Key is marked
``Idempotent-Replayed: true``, and a replayed target whose records the gateway no longer has says so
(``records_withheld``) instead of an empty ``records`` that reads as "the holder had nothing".

Found by a review: past the 24-hour window a retry answered `allowed` with `records: []` and nothing more;
and a lost or replaced ``exchange-seal.key`` made every keyed retry within the window a 500 (the decryption
failed inside the replay)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from audit.tables import audit_entries
from gateway.app import create_app
from gateway.auditing.setup import audit_services
from gateway.client.models import ExchangeRequest, Outcome
from gateway.container import build_container
from gateway.exchange.service import IDEMPOTENCY_WINDOW
from gateway.settings import SHIPPED_REGISTER, Settings
from tests.servers import serve_app
from tests.stack import Stack, running_stack

BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-210",
         "signal": {"type": "bibob-application", "reference": "BIBOB-2026-78"}}
SYSTEM = "gemeente-amsterdam-vth"


def _body(stack: Stack) -> dict[str, Any]:
    """A request the KvK and the Belastingdienst answer with records, the FIOD with a hit only (no records)
    and the police not at all (denied): only the first two have records to withhold."""
    return BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
                    "holders": ["kvk", "belastingdienst", "fiod", "politie"],
                    "categories": ["company_registration", "tax_debts", "ongoing_investigation",
                                   "criminal_intelligence"]}


def _disclosed(first: httpx.Response) -> dict[str, Any]:
    """Holder -> whether the first answer had records of it (and what came of the others)."""
    targets = {t["holder"]: t for t in first.json()["targets"]}
    assert {h: (t["outcome"], t["hit_only"], bool(t["records"])) for h, t in targets.items()} == {
        "kvk": ("allowed-narrowed", False, True), "belastingdienst": ("allowed-narrowed", False, True),
        "fiod": ("allowed-narrowed", True, False), "politie": ("denied", False, False)}
    return targets


def _marked(reason: str) -> dict[str, str | None]:
    return {"kvk": reason, "belastingdienst": reason, "fiod": None, "politie": None}


def _audit_count(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _withheld(answer: httpx.Response) -> dict[str, str | None]:
    return {t["holder"]: t["records_withheld"] for t in answer.json()["targets"]}


def _retried_after_restart(stack: Stack, settings: Settings, token: str, headers: dict[str, str]) -> httpx.Response:
    """The request retried against the gateway started again on ``settings`` (the same database and keys
    directory; what a restart reads anew: the seal key file, the register)."""
    restarted = build_container(settings, stack.clock)
    try:
        with serve_app(create_app(container=restarted)) as url:
            return httpx.post(f"{url}/v1/exchanges", json=_body(stack), timeout=30,
                              headers={"Authorization": f"Bearer {token}", **headers})
    finally:
        restarted.close()


def _without_records(answer: dict[str, Any]) -> dict[str, Any]:
    return answer | {"targets": [{k: v for k, v in t.items() if k not in {"records", "records_withheld"}}
                                 for t in answer["targets"]]}


def test_a_retry_is_marked_as_a_replay_and_past_the_window_says_its_records_expired(tmp_path: Path) -> None:
    with running_stack(tmp_path) as s:
        headers = {"Idempotency-Key": "replay-window-key-0001"}
        first = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
        assert first.status_code == 200, first.text
        assert "idempotent-replayed" not in first.headers  # a new exchange is no replay
        _disclosed(first)  # the KvK and the Belastingdienst did disclose records
        assert set(_withheld(first).values()) == {None}
        before = _audit_count(s)

        again = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()  # within the window: the first answer, records included
        seen = s.get(SYSTEM, f"/v1/exchanges/{first.json()['exchange_id']}")
        assert set(_withheld(seen).values()) == {None}  # GET never repeats records; these are still kept

        s.clock.advance(IDEMPOTENCY_WINDOW + timedelta(seconds=1))
        s.forget_tokens()
        for dropped in (False, True):  # the window passed; then also the periodic clean-up ran
            if dropped:
                s.container.services["exchange"].drop_expired_seals_now()
            late = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
            assert late.status_code == 200, late.text
            assert late.headers["idempotent-replayed"] == "true"
            assert all(t["records"] == [] for t in late.json()["targets"])
            assert _withheld(late) == _marked("expired")
            assert _without_records(late.json()) == _without_records(first.json())  # the same outcome
            seen = s.get(SYSTEM, f"/v1/exchanges/{first.json()['exchange_id']}")
            assert seen.status_code == 200
            assert _withheld(seen) == _withheld(late)
        assert _audit_count(s) == before  # nothing asked or logged again


async def test_the_typed_client_reads_the_marker_of_a_replay_past_the_window(tmp_path: Path) -> None:
    with running_stack(tmp_path) as s:
        request = ExchangeRequest.model_validate(_body(s))
        async with s.client(SYSTEM) as client:
            first = await client.exchange(request, idempotency_key="client-window-key-0001")
            s.clock.advance(IDEMPOTENCY_WINDOW + timedelta(seconds=1))
            late = await client.exchange(request, idempotency_key="client-window-key-0001")
            seen = await client.get_exchange(first.exchange_id)
    [kvk] = [t for t in first.targets if t.holder == "kvk"]
    assert kvk.outcome is Outcome.ALLOWED_NARROWED
    assert kvk.records
    assert kvk.records_withheld is None
    # The gateway's Idempotent-Replayed header, read into the result: the retry, not the first answer nor GET.
    assert (first.replayed, late.replayed, seen.replayed) == (False, True, False)
    for answer in (late, seen):
        assert {t.holder: t.records_withheld for t in answer.targets} == _marked("expired")
        [kvk] = [t for t in answer.targets if t.holder == "kvk"]
        assert kvk.outcome is Outcome.ALLOWED_NARROWED
        assert kvk.records == []


@pytest.mark.parametrize("key_file", ["replaced", "lost"])
def test_a_replay_whose_seal_key_was_replaced_answers_without_records_not_500(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], key_file: str) -> None:
    """The gateway restarts with another ``exchange-seal.key`` (replaced by an operator, or lost and made anew
    at start-up): a retry within the window gets the outcome, its records marked ``unavailable``, and the log
    a warning naming the exchange only."""
    with running_stack(tmp_path) as s:
        headers = {"Idempotency-Key": f"seal-key-{key_file}-0001"}
        first = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
        assert first.status_code == 200, first.text
        exchange_id = first.json()["exchange_id"]
        _disclosed(first)
        seal_key = s.container.settings.key_dir / "exchange-seal.key"
        old_key = seal_key.read_bytes()
        seal_key.unlink()
        if key_file == "replaced":
            seal_key.write_bytes(b"\x07" * 32)
        before = _audit_count(s)
        capfd.readouterr()
        again = _retried_after_restart(s, s.container.settings, s.token(SYSTEM), headers)  # reads the key file anew
        assert seal_key.read_bytes() != old_key
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["exchange_id"] == exchange_id
        assert _without_records(again.json()) == _without_records(first.json())
        assert all(t["records"] == [] for t in again.json()["targets"])
        assert _withheld(again) == _marked("unavailable")
        assert _audit_count(s) == before
        logs = capfd.readouterr()
        [warning] = [line for line in (logs.out + logs.err).splitlines() if "sealed_records_unreadable" in line]
        assert exchange_id in warning
        disclosed = [r for t in first.json()["targets"] for r in t["records"]]
        assert disclosed
        for record in disclosed:  # nothing of the records (a field too short to tell apart is left out)
            said = [record["record_id"], record["subject"], *map(str, record["fields"].values())]
            assert [value for value in said if len(value) >= 4 and value in warning] == []


def _register_retiring(tmp: Path, what: str) -> Path:
    """The shipped register with the RIEC partnership retired, or only the municipality's participation in it."""
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    document["version"] = f"{document['version']}-{what}"
    riec = document["partnerships"][BIBOB["partnership"]]
    if what == "partnership":
        riec["status"] = "retired"
        riec["retired"] = riec["established"]
    else:
        for participant in riec["participants"]:
            if participant["organisation"] == "gemeente-amsterdam":
                participant["status"] = "retired"
    path = tmp / f"register-{what}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize("what", ["partnership", "participation"])
def test_a_replay_after_the_partnership_or_participation_is_retired_hands_no_records_over(
        tmp_path: Path, what: str) -> None:
    """A retired partnership shares nothing (rule 1), a retry included: within the 24 hours, after a restart on
    a register that retires it (or the requester's participation), the retry gets the outcome, its records
    withheld as ``retired``, and nothing is logged again."""
    with running_stack(tmp_path) as s:
        headers = {"Idempotency-Key": f"retired-{what}-0001"}
        first = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
        assert first.status_code == 200, first.text
        _disclosed(first)
        token = s.token(SYSTEM)
        before = _audit_count(s)
        settings = s.container.settings.model_copy(update={"register_file": _register_retiring(tmp_path, what)})
        again = _retried_after_restart(s, settings, token, headers)
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert all(t["records"] == [] for t in again.json()["targets"])
        assert _withheld(again) == _marked("retired")
        assert _without_records(again.json()) == _without_records(first.json())
        assert _audit_count(s) == before + 1  # the restart's record of the new register version, nothing else
        with s.container.engine.connect() as connection:
            last = connection.execute(select(audit_entries.c.event_type)
                                      .order_by(audit_entries.c.log_index.desc()).limit(1)).scalar_one()
        assert last.startswith("register"), last


def test_a_first_keyed_request_reads_no_stored_answer_and_its_retry_still_gets_the_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every keyed request read the answer stored under its key (a hop to a worker thread and a read, ~100 µs of
    CPU) and nearly always found none. Now the write-ahead's claim on the key, which commits only while no answer
    is stored under it, says so: a first request reads nothing; a retry's claim is refused with nothing of it
    written, and it gets the first answer from the store; the key with another request is still a 409."""
    from gateway.exchange import repository

    reads: list[str] = []
    real = repository.find_by_idempotency_key

    def find(engine: Any, system: str, key: str) -> Any:
        reads.append(key)
        return real(engine, system, key)

    monkeypatch.setattr(repository, "find_by_idempotency_key", find)
    with running_stack(tmp_path) as s:
        headers = {"Idempotency-Key": "read-once-key-0001"}
        first = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
        assert first.status_code == 200, first.text
        assert reads == []
        before = _audit_count(s)
        again = s.post(SYSTEM, "/v1/exchanges", _body(s), headers)
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert reads == ["read-once-key-0001"]
        other = s.post(SYSTEM, "/v1/exchanges", _body(s) | {"case_reference": "RIEC-AA-2026-211"}, headers)
        assert other.status_code == 409
        assert "different request" in other.json()["detail"]
        assert _audit_count(s) == before  # neither the retry nor the misuse logged anything
        fresh = s.post(SYSTEM, "/v1/exchanges", _body(s), {"Idempotency-Key": "read-once-key-0002"})
        assert fresh.status_code == 200, fresh.text
        assert "idempotent-replayed" not in fresh.headers


def test_a_retry_in_a_group_commit_gets_the_first_answer_and_the_others_commit_in_one_transaction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry of an answered request has its write-ahead refused (its claim finds the answer); sharing a group
    commit with other requests' write-aheads, it used to have the whole batch redone caller by caller (a commit
    each, a warning line). Now only the retry is left out of the batch: it gets the first answer, logging
    nothing; the two new requests are written ahead in that one transaction and answered as usual."""
    with running_stack(tmp_path) as s:
        writer = audit_services(s.container).writer
        s.token(SYSTEM)
        started = _audit_count(s)
        first = s.post(SYSTEM, "/v1/exchanges", _body(s), {"Idempotency-Key": "batched-key-0001"})
        assert first.status_code == 200, first.text
        logged = _audit_count(s)  # each new request below logs as many entries as the first
        gather = writer._gather
        armed = threading.Event()

        def gathered_together(first_waiter: Any) -> Any:
            """The three write-aheads in one batch: the writer thread waits (bounded) until they have queued."""
            if armed.is_set():
                armed.clear()
                deadline = time.monotonic() + 10
                while writer._queue.qsize() < 2 and time.monotonic() < deadline:
                    time.sleep(0.001)
            return gather(first_waiter)

        monkeypatch.setattr(writer, "_gather", gathered_together)
        before = (writer.stats.transactions, writer.stats.failed_transactions)
        armed.set()
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda key: s.post(SYSTEM, "/v1/exchanges", _body(s), {"Idempotency-Key": key}),
                                    ["batched-key-0001", "batched-key-0002", "batched-key-0003"]))
        assert [answer.status_code for answer in answers] == [200, 200, 200], [a.text for a in answers]
        retry, fresh = answers[0], answers[1:]
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json() == first.json()
        assert all("idempotent-replayed" not in answer.headers for answer in fresh)
        assert len({answer.json()["exchange_id"] for answer in answers}) == 3
        assert _audit_count(s) - logged == 2 * (logged - started)  # the two new requests' entries, none of the retry
        assert not armed.is_set()
        assert (writer.stats.isolated_batches, writer.stats.refused_callers) == (1, 1)
        assert writer.stats.failed_transactions == before[1]  # no batch failed, no caller written alone
        # the write-aheads' batch, then the new requests' disclosures with their outcomes (one or two commits)
        assert writer.stats.transactions - before[0] <= 3
