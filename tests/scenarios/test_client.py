"""The typed partner client against the running stack: tokens by private_key_jwt, typed outcomes,
idempotent retries, problem documents as errors."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from audit.tables import audit_entries
from gateway.auth.keys import SigningKeyStore
from gateway.client.api import GatewayBusy, GatewayClient, GatewayClientError, GatewayUnavailable
from gateway.client.models import ExchangeRequest, Outcome
from tests.servers import serve_app
from tests.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("client")) as running:
        yield running


def _request(stack: Stack, **extra: object) -> ExchangeRequest:
    return ExchangeRequest.model_validate({
        "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
        "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-300",
        "signal": {"type": "bibob-application", "reference": "BIBOB-2026-300"},
        "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}], "holders": ["kvk"],
        "categories": ["company_registration"], **extra})


async def test_client_exchanges_and_replays_with_the_same_key(stack: Stack) -> None:
    keys = stack.clients["gemeente-amsterdam-vth"]
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                             clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
        first = await client.exchange(_request(stack), idempotency_key="client-test-key-1")
        again = await client.exchange(_request(stack), idempotency_key="client-test-key-1")
        seen = await client.get_exchange(first.exchange_id)
    assert first.targets[0].outcome is Outcome.ALLOWED
    assert first.targets[0].records
    assert again.model_dump() == first.model_dump()  # the same answer ...
    assert (first.replayed, again.replayed) == (False, True)  # ... the second time as a replay
    assert seen.exchange_id == first.exchange_id
    assert seen.targets[0].records == []


async def test_client_raises_the_problem_document(stack: Stack) -> None:
    keys = stack.clients["gemeente-amsterdam-vth"]
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                             clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
        with pytest.raises(GatewayClientError) as refused:
            await client.exchange(_request(stack, partnership="riec-utrecht"))
    assert refused.value.status == 422
    assert "unknown partnership" in str(refused.value.problem["detail"])


def test_a_bsn_written_with_dashes_is_refused_by_the_gateway_and_logged_nowhere(stack: Stack) -> None:
    """The request models are the gateway's parsers too: a subject named by a BSN as people write it is a 422
    that does not repeat it, and neither the holders nor the audit log get it (before, the exchange was asked
    and its `exchange.requested` entry listed the BSN among its subjects)."""
    written = "123-456-782"
    body = _request(stack).model_dump(mode="json") | {"subjects": [{"ref": written}],
                                                      "case_reference": "RIEC-AA-2026-303"}
    with stack.container.engine.connect() as connection:
        logged_before = connection.execute(select(func.count()).select_from(audit_entries)).scalar_one()
    refused = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", body)
    assert refused.status_code == 422
    assert "looks like a plain identifier" in refused.text
    assert written not in refused.text
    with stack.container.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(audit_entries)).scalar_one() == logged_before
        assert not [entry for entry in connection.execute(select(audit_entries.c.canonical)).scalars()
                    if written in entry]


class _AnsweredIds(httpx.AsyncHTTPTransport):
    """The real transport, noting the X-Request-ID of every answer of the API."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.startswith("/v1/"):
            self.ids.append(response.headers.get("x-request-id"))
        return response


async def test_the_error_names_the_request_id_the_gateway_logged(stack: Stack) -> None:
    """The gateway takes the id the client sends as its request id (every log line of the request carries
    it) and echoes it; the error carries it, so a partner's support ticket can quote it."""
    keys = stack.clients["gemeente-amsterdam-vth"]
    transport = _AnsweredIds()
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, transport=transport,
                             clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
        with pytest.raises(GatewayClientError) as refused:
            await client.exchange(_request(stack, partnership="riec-utrecht"))
    assert refused.value.status == 422
    assert refused.value.request_id is not None
    assert transport.ids == [refused.value.request_id]
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9]+", refused.value.request_id), "the client's id, taken by the gateway"
    assert refused.value.request_id in str(refused.value)


class _Paths(httpx.AsyncHTTPTransport):
    """The real transport, noting the path of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


async def test_concurrent_calls_on_a_fresh_client_share_one_token_from_the_real_token_endpoint(stack: Stack) -> None:
    """Eight tasks start at once on a new client: one metadata and one token request (one client assertion,
    one jti), and every call is answered with that token."""
    keys = stack.clients["gemeente-amsterdam-vth"]
    transport = _Paths()
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, transport=transport,
                             clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
        feeds = await asyncio.gather(*[client.escalation_feed() for _ in range(8)])
    assert all(isinstance(feed, list) for feed in feeds)
    assert transport.paths.count("/oauth/token") == 1
    assert transport.paths.count("/.well-known/oauth-authorization-server") == 1
    assert transport.paths.count("/v1/escalations/feed") == 8


async def test_client_objects_to_a_narrowing_and_reruns_with_the_decision(stack: Stack) -> None:
    keys = stack.clients["gemeente-amsterdam-vth"]
    request = _request(stack, holders=["belastingdienst"], categories=["tax_debts", "income"],
                       case_reference="RIEC-AA-2026-301")
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                             clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
        first = await client.exchange(request)
        assert first.targets[0].outcome is Outcome.ALLOWED_NARROWED
        case = await client.object_to(first.exchange_id, "belastingdienst",
                                      "We need to know whether income was involved; please review.")
        assert (case.trigger, case.state, case.tier, case.decision_id) == ("requester-objection", "open", 1, None)
        assert case.requested_categories == ["income", "tax_debts"]
        assert [step.state for step in case.history] == ["open"]
        officer = stack.person("po-belastingdienst", "belastingdienst", ["privacy-officer"])
        decided = stack.call(officer, "POST", f"/v1/escalations/{case.id}/decision", {
            "expected_version": case.version, "outcome": "allow", "permitted_categories": ["tax_debts"],
            "motivation": "Tax debts only: income is not necessary for a Bibob advice."})
        assert decided.status_code == 200, decided.text
        feed = await client.escalation_feed()
        waiting = [item for item in feed if item.case.id == case.id]
        assert [item.awaiting for item in waiting] == ["rerun"]
        decision = waiting[0].case.decision_id
        assert decision is not None
        assert decision == decided.json()["decision"]["id"]
        rerun = await client.rerun(request, decision)
        with pytest.raises(GatewayClientError) as used:
            await client.rerun(request, decision)
    target = rerun.targets[0]
    assert target.escalation_decision_applied
    assert target.permitted_categories == ["tax_debts"]
    assert {r.category for r in target.records} <= {"tax_debts"}
    assert used.value.status == 409


async def test_client_reads_and_withdraws_its_own_objection(stack: Stack) -> None:
    """A partner system follows a case it opened (not only the cases awaiting it in the feed) and withdraws it;
    a withdrawal that did not see the case's latest version is refused (409), not applied unseen."""
    keys = stack.clients["gemeente-amsterdam-vth"]
    request = _request(stack, holders=["belastingdienst"], categories=["tax_debts", "income"],
                       case_reference="RIEC-AA-2026-302")
    async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                             clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
        first = await client.exchange(request)
        assert first.targets[0].outcome is Outcome.ALLOWED_NARROWED
        with pytest.raises(GatewayClientError) as unsupplied:  # the categories reach the gateway, which checks them
            await client.object_to(first.exchange_id, "belastingdienst", "Police records are needed as well.",
                                   categories=["police_incidents"])
        assert unsupplied.value.status == 422
        assert "police_incidents" in str(unsupplied.value)
        case = await client.object_to(first.exchange_id, "belastingdienst",
                                      "Only income is in question here; please review that category.",
                                      categories=["income"])
        assert case.requested_categories == ["income", "tax_debts"]
        again = await client.escalation(case.id)
        assert (again.id, again.state, again.version) == (case.id, "open", case.version)
        withdrawn = await client.withdraw_escalation(case.id, case.version, "Resolved with the holder directly.")
        assert withdrawn.state == "withdrawn"
        assert withdrawn.version > case.version
        with pytest.raises(GatewayClientError) as stale:
            await client.withdraw_escalation(case.id, case.version, "Once more, with the old version.")
        assert stale.value.status == 409
        assert (await client.escalation(case.id)).state == "withdrawn"


def _slow_holder(answer_after: Callable[[], Awaitable[object]]) -> tuple[FastAPI, list[float]]:
    """A holder that answers (no records) once ``answer_after`` returns; the list records each query's time."""
    queries: list[float] = []
    holder = FastAPI()

    @holder.post("/holder/v1/query")
    async def query() -> dict[str, object]:
        queries.append(time.monotonic())
        await answer_after()
        return {"status": "answered", "records": []}

    return holder, queries


def _requested(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries).where(
            audit_entries.c.event_type == "exchange.requested")).scalar_one())


async def test_a_retry_after_a_client_timeout_waits_for_the_first_attempt_instead_of_running_twice(
        tmp_path: Path) -> None:
    # longer than the client's timeout: the client gives up and retries
    slow, queries = _slow_holder(lambda: asyncio.sleep(2.5))
    with serve_app(slow) as holder_url, running_stack(
            tmp_path, holder_overrides={"kvk-handelsregister": holder_url}) as stack:
        keys = stack.clients["gemeente-amsterdam-vth"]
        async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, timeout=1.0, retries=6,
                                 clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
            result = await client.exchange(_request(stack), idempotency_key="client-timeout-key-1")
        requested = _requested(stack)
    assert result.targets[0].outcome is Outcome.ALLOWED
    assert len(queries) == 1, "the holder was asked once, however often the client retried"
    assert requested == 1


async def test_with_the_default_retries_a_timed_out_exchange_waits_for_its_first_attempt(tmp_path: Path) -> None:
    """The busy-409 wait is not limited by the (small) transport retries: the client's default settings get
    the first attempt's answer although it takes longer than the timeout plus two quick retries."""
    slow, queries = _slow_holder(lambda: asyncio.sleep(3.0))
    with serve_app(slow) as holder_url, running_stack(
            tmp_path, holder_overrides={"kvk-handelsregister": holder_url}) as stack:
        keys = stack.clients["gemeente-amsterdam-vth"]
        async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, timeout=1.0,
                                 clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
            result = await client.exchange(_request(stack))
        requested = _requested(stack)
    assert result.targets[0].outcome is Outcome.ALLOWED
    assert len(queries) == 1
    assert requested == 1


async def test_an_exchange_given_up_on_is_resumed_with_the_key_on_the_error(tmp_path: Path) -> None:
    """The client gives up while the first attempt is still being answered; the error names the key it
    used, and an exchange with that key gets the first attempt's answer: the holder is asked once."""
    release = threading.Event()
    held, queries = _slow_holder(lambda: asyncio.to_thread(release.wait, 10))
    with serve_app(held) as holder_url, running_stack(
            tmp_path, holder_overrides={"kvk-handelsregister": holder_url}) as stack:
        keys = stack.clients["gemeente-amsterdam-vth"]
        async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, timeout=0.5, busy_wait=1.0,
                                 clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
            with pytest.raises(GatewayBusy) as gave_up:
                await client.exchange(_request(stack))
            release.set()
            key = gave_up.value.idempotency_key
            assert key is not None
            resumed = await client.exchange(_request(stack), idempotency_key=key)
        requested = _requested(stack)
    assert resumed.targets[0].outcome is Outcome.ALLOWED
    assert len(queries) == 1, "the holder was asked once"
    assert requested == 1, "one exchange was logged"


class _Statuses(httpx.AsyncHTTPTransport):
    """The real transport, noting the status of every answer to an exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path == "/v1/exchanges":
            self.statuses.append(response.status_code)
        return response


async def test_a_token_the_gateway_no_longer_accepts_is_replaced_once(tmp_path: Path) -> None:
    """The gateway's signing keys are replaced (an operator's emergency rotation: the old key is gone at once).
    The client's cached token is refused with 401; it gets one new token and the call succeeds, instead of
    every call failing until the old token would have expired."""
    with running_stack(tmp_path) as stack:
        keys = stack.clients["gemeente-amsterdam-vth"]
        async with GatewayClient(stack.gateway_url, keys.system_id, keys.key,
                                 clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
            before = await client.token()
            assert await client.escalation_feed() == []
            replacement = SigningKeyStore(tmp_path / "replacement", stack.clock, timedelta(hours=1))
            replacement.load_or_create()
            shutil.copyfile(tmp_path / "replacement" / "token-signing.json",
                            stack.container.settings.key_dir / "token-signing.json")
            refused = stack.call(before, "GET", "/v1/escalations/feed")
            assert refused.status_code == 401, "the old token is no longer accepted"
            assert await client.escalation_feed() == []
            assert await client.token() != before


async def test_a_rate_limit_while_waiting_for_a_busy_first_attempt_is_waited_out(tmp_path: Path) -> None:
    """The client times out, and its retries find the first attempt busy (409) — and, polling, hit the rate
    limit (429). Those 429s are back-pressure, not failures: with the default retries the client still gets
    the first attempt's answer, and the holder is asked once."""
    slow, queries = _slow_holder(lambda: asyncio.sleep(7.0))
    limits = {"rate_limit_per_second": 0.2, "rate_limit_burst": 2, "connector_timeout_seconds": 15.0}
    with serve_app(slow) as holder_url, running_stack(
            tmp_path, holder_overrides={"kvk-handelsregister": holder_url}, settings_overrides=limits) as stack:
        keys = stack.clients["gemeente-amsterdam-vth"]
        transport = _Statuses()
        async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, timeout=1.0, transport=transport,
                                 clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
            result = await client.exchange(_request(stack))
        requested = _requested(stack)
    assert result.targets[0].outcome is Outcome.ALLOWED
    assert transport.statuses.count(409) >= 1
    assert transport.statuses.count(429) >= 2, "the rate limit refused polls (as many as the 2 retries or more)"
    assert len(queries) == 1
    assert requested == 1


async def test_the_deadline_bounds_a_call_and_the_error_resumes_it(tmp_path: Path) -> None:
    release = threading.Event()
    held, queries = _slow_holder(lambda: asyncio.to_thread(release.wait, 10))
    with serve_app(held) as holder_url, running_stack(
            tmp_path, holder_overrides={"kvk-handelsregister": holder_url}) as stack:
        keys = stack.clients["gemeente-amsterdam-vth"]
        async with GatewayClient(stack.gateway_url, keys.system_id, keys.key, timeout=5.0, deadline=1.5,
                                 clock=lambda: stack.clock.now().timestamp(), issuer=stack.issuer) as client:
            started = time.monotonic()
            with pytest.raises(GatewayUnavailable) as gave_up:
                await client.exchange(_request(stack))
            elapsed = time.monotonic() - started
            release.set()
            key = gave_up.value.idempotency_key
            assert key is not None
            resumed = await client.exchange(_request(stack), idempotency_key=key)
        requested = _requested(stack)
    assert 1.4 <= elapsed < 3.0, "the 1.5 s deadline, not the 5 s timeout"
    assert resumed.targets[0].outcome is Outcome.ALLOWED
    assert len(queries) == 1
    assert requested == 1
