"""Operations: request id and W3C trace context on every log line and response, readiness of each
dependency, a bad register stops the start with line and reason, and every error is problem+json."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from gateway import health
from gateway.app import create_app
from gateway.container import Container, ReadinessCheck, build_container
from gateway.errors import InvalidRegister
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER, Settings
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_traceparent_is_continued_and_bound_to_log_lines(client: TestClient, capfd: pytest.CaptureFixture[str]
                                                         ) -> None:
    capfd.readouterr()
    response = client.get("/health/live", headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
                                                   "x-request-id": "req-abc-123"})
    assert response.headers["x-request-id"] == "req-abc-123"
    assert response.headers["traceparent"].startswith(f"00-{TRACE}-")
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    request_lines = [line for line in lines if line.get("event") == "request"]
    assert request_lines
    assert all(line["trace_id"] == TRACE and line["request_id"] == "req-abc-123" for line in request_lines)


def test_invalid_traceparent_starts_a_new_trace(client: TestClient) -> None:
    response = client.get("/health/live", headers={"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
    assert not response.headers["traceparent"].startswith("00-" + "0" * 32)


def test_readiness_reports_every_dependency(client: TestClient) -> None:
    body = client.get("/health/ready").json()
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"database", "key_store", "policy_engine"}


def test_readiness_fails_when_the_policy_engine_is_unreachable(tmp_path: Path, sqlite_db_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, policy_engine="opa",
                        opa_url="http://127.0.0.1:9", opa_timeout_seconds=0.3)
    container = build_container(settings)
    with TestClient(create_app(container=container)) as client:
        response = client.get("/health/ready")
    container.close()
    assert response.status_code == 503
    assert response.json()["checks"]["policy_engine"].startswith("failed")


def test_readiness_names_its_bound_for_an_opa_server_slower_than_it(tmp_path: Path, sqlite_db_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``WGS_OPA_TIMEOUT_SECONDS`` may be up to 60 s; the probe waits its own bound and says so (before: a bare
    ``failed: TimeoutError``, which did not tell a slow server from the probe's own limit)."""
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.3)
    with serve_app(create_opa_test_app(POLICIES_DIR, Behaviour(delay_seconds=2.0))) as opa_url:
        settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, policy_engine="opa", opa_url=opa_url,
                            opa_timeout_seconds=10)
        container = build_container(settings)
        with TestClient(create_app(container=container)) as client:
            response = client.get("/health/ready")
        container.close()
    assert response.status_code == 503
    assert response.json()["checks"]["policy_engine"] == "failed: no answer within 0.3 s (the readiness probe's bound)"
    assert response.json()["checks"]["database"] == "ok"


def test_a_checks_own_timeout_is_not_reported_as_the_probes_bound(client: TestClient, container: Container) -> None:
    async def times_out_itself() -> None:
        raise TimeoutError

    container.readiness["own_timeout"] = times_out_itself
    assert client.get("/health/ready").json()["checks"]["own_timeout"] == "failed: TimeoutError"


@contextmanager
def _probe_queries_slowed(engine: Engine, seconds: float) -> Iterator[None]:
    """The database answers the readiness probe's queries (``database``'s ``SELECT 1``, ``schema``'s read of
    ``alembic_version``) ``seconds`` late, and every other statement as fast as before."""
    def late(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip() == "SELECT 1" or "FROM alembic_version" in statement:
            time.sleep(seconds)

    event.listen(engine, "before_cursor_execute", late)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", late)


def test_slow_dependencies_are_waited_for_together_not_one_after_another(tmp_path: Path, sqlite_db_url: str) -> None:
    """An OPA server and a database each answering 1 s late (three checks: database, schema, policy engine) are
    ready in about 1 s, not 3: a load balancer's 5 s probe took two merely slow dependencies for a dead
    gateway while the checks ran one after another. The answer keeps its shape and the checks their order."""
    behaviour = Behaviour()
    with serve_app(create_opa_test_app(POLICIES_DIR, behaviour)) as opa_url:
        settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, policy_engine="opa", opa_url=opa_url)
        container = build_container(settings)
        with TestClient(create_app(container=container)) as client:
            assert client.get("/health/ready").status_code == 200  # connections and evaluators made, not timed
            behaviour.delay_seconds = 1.0
            with _probe_queries_slowed(container.engine, 1.0):
                started = time.monotonic()
                response = client.get("/health/ready")
                elapsed = time.monotonic() - started
        container.close()
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {name: "ok" for name in container.readiness}}
    assert list(response.json()["checks"]) == list(container.readiness)  # the order they were registered in
    assert 1.0 <= elapsed < 1.8, elapsed  # slowed indeed, and one check's time (with room for a loaded machine)


def test_checks_over_the_bound_end_before_the_answer_which_waits_one_bound(client: TestClient, container: Container,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two checks that never answer cost the probe one bound, not two, and neither is left running after the
    answer: each is cancelled at the bound and has ended when the probe answers."""
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 1.0)
    ended: list[str] = []

    def hangs(name: str) -> ReadinessCheck:
        async def check() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                ended.append(name)
        return check

    container.readiness["hangs"] = hangs("hangs")
    container.readiness["hangs_too"] = hangs("hangs_too")
    started = time.monotonic()
    response = client.get("/health/ready")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    checks = response.json()["checks"]
    assert checks["hangs"] == checks["hangs_too"] == "failed: no answer within 1 s (the readiness probe's bound)"
    assert checks["database"] == "ok"
    assert sorted(ended) == ["hangs", "hangs_too"]
    assert elapsed < 1.8, elapsed


def test_a_hanging_database_holds_one_thread_per_check_not_one_per_probe(
        client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: a probe that gives up at its bound cannot stop a query's thread, and each later probe
    started another one (in the default pool, which the exchange's work in threads shares) while the database
    hung. Now a probe waits for the query still under way: three probes while the database answers late send
    one ``SELECT 1`` and one read of ``alembic_version``; once it answers, the next probe is ready again."""
    # the connection made and the migration scripts read (up to a second on a busy machine), not counted, and
    # under the default bound: only the probes below need the short one
    assert client.get("/health/ready").status_code == 200
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.3)
    sent: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip() == "SELECT 1" or "FROM alembic_version" in statement:
            sent.append(statement.strip().split()[0] if statement.strip() == "SELECT 1" else "alembic_version")

    event.listen(container.engine, "before_cursor_execute", count)
    try:
        with _probe_queries_slowed(container.engine, 1.5):
            for _ in range(3):
                response = client.get("/health/ready")
                assert response.status_code == 503
                assert response.json()["checks"]["database"].startswith("failed: no answer within 0.3 s")
            assert sorted(sent) == ["SELECT", "alembic_version"]
            deadline = time.monotonic() + 10
            while (ready := client.get("/health/ready")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        event.remove(container.engine, "before_cursor_execute", count)
    assert ready.json()["status"] == "ok"


async def _raises_its_own_error() -> None:
    raise RuntimeError("postgresql://wgs:hunter2@db.internal/wgs")  # as a driver's message might: a secret


async def _awaits_a_cancelled_task() -> None:
    """A check whose own work was cancelled (a task it waits for was stopped, e.g. at shutdown): the
    ``CancelledError`` is the check's, not the probe's."""
    task = asyncio.create_task(asyncio.sleep(60))
    task.cancel()
    await task


@pytest.mark.parametrize(("check", "reason"), [(_raises_its_own_error, "failed: RuntimeError"),
                                               (_awaits_a_cancelled_task, "failed: CancelledError")])
def test_a_check_failing_unexpectedly_makes_the_gateway_not_ready_not_a_500(
        client: TestClient, container: Container, check: ReadinessCheck, reason: str) -> None:
    """Fail closed: 503 naming the check and the error's type, never its message (the probe is unauthenticated),
    and the other checks still answered."""
    container.readiness["unexpected"] = check
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["checks"]["unexpected"] == reason
    assert response.json()["checks"]["database"] == "ok"
    assert "hunter2" not in response.text
    assert "db.internal" not in response.text


async def test_the_probes_own_cancellation_stops_its_checks_and_is_not_reported_as_theirs() -> None:
    """A probe cancelled from outside (its request's task stopped) cancels a running check and ends cancelled
    itself: only a ``CancelledError`` of the check's own becomes ``failed: CancelledError``, the probe's own is
    not swallowed (that would keep a stopped task running and answering)."""
    ended = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.set()

    probe = asyncio.create_task(health._outcome(hangs))
    await asyncio.sleep(0.05)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert ended.is_set()


def test_a_bad_register_file_stops_the_start_with_line_and_reason(tmp_path: Path, sqlite_db_url: str) -> None:
    bad = tmp_path / "register.yaml"
    bad.write_text(SHIPPED_REGISTER.read_text().replace("requesters: [municipality]\n", "requesters: [mayor]\n", 1))
    container = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url, register_file=bad))
    with pytest.raises(InvalidRegister, match=r"register.yaml:\d+:\d+: .*no participant has role `mayor`"), \
            TestClient(create_app(container=container)):
        pass
    container.close()


def test_a_register_giving_a_bank_tax_records_stops_the_start(tmp_path: Path, sqlite_db_url: str) -> None:
    """A private participant gets police, tax and prosecution data as hit/no-hit only (REGISTER.md, FEC): the
    start refuses a register letting the banks receive the tax office's `income`, as `register check` does."""
    bad = tmp_path / "register.yaml"
    bad.write_text(SHIPPED_REGISTER.read_text().replace(
        "          fiu: [bank_accounts, flagged_transactions, income]\n",
        "          fiu: [bank_accounts, flagged_transactions, income]\n          bank: [income]\n", 1))
    container = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url, register_file=bad))
    with pytest.raises(InvalidRegister, match=r"register.yaml:\d+:\d+: partnerships\.fec\.purposes\."
                                              r"money-laundering-taskforce\.receives\.bank\.0: private participant "
                                              r"`abn-amro` \(role `bank`\) would receive `income` from `tax`"), \
            TestClient(create_app(container=container)):
        pass
    container.close()


def test_a_partner_system_named_like_the_token_audience_stops_the_start(tmp_path: Path, sqlite_db_url: str) -> None:
    """A holder system whose id is the gateway's token audience would take every partner's access token (same
    issuer, same keys, ``aud`` its own id) for a call from the gateway: the start refuses such a register, and
    ``serve`` says why before it starts (``start_refusal``)."""
    from gateway.startup import start_refusal

    settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, audience="kvk-handelsregister")
    assert "kvk-handelsregister" in (start_refusal(settings) or "")
    container = build_container(settings)
    with pytest.raises(InvalidRegister, match="token audience"), TestClient(create_app(container=container)):
        pass
    container.close()


@pytest.mark.parametrize(("method", "path"), [("get", "/nope"), ("delete", "/v1/register"), ("get", "/v1/register")])
def test_errors_are_problem_json(client: TestClient, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code in {401, 404, 405}
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail"} <= set(response.json())


def test_openapi_documents_every_route_outcome_and_error(client: TestClient, container: Container) -> None:
    spec = client.get("/openapi.json").json()
    exchange = spec["paths"]["/v1/exchanges"]["post"]
    assert {"200", "401", "403", "409", "413", "422", "503"} <= set(exchange["responses"])
    outcome = spec["components"]["schemas"]["Outcome"]
    assert set(outcome["enum"]) == {"allowed", "allowed-narrowed", "denied", "escalated", "refused-by-holder",
                                    "holder-unavailable"}
    assert "/oauth/token" in spec["paths"]
    assert "/v1/discovery" in spec["paths"]


def test_the_server_process_freezes_its_start_up_heap_and_tests_do_not(tmp_path: Path, sqlite_db_url: str) -> None:
    import gc

    settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url)
    before = gc.get_freeze_count()
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/health/live").status_code == 200
            assert gc.get_freeze_count() == before  # the default: nothing frozen (tests build many apps)
        with TestClient(create_app(settings, freeze_heap=True)) as client:
            assert client.get("/health/live").status_code == 200
            assert gc.get_freeze_count() > before  # what gateway.asgi (the uvicorn entry point) asks for
    finally:
        gc.unfreeze()
