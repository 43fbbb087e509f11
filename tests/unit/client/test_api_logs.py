"""What the partner client logs (``gateway.client``, the standard library's logging): a repeated attempt is a
warning and a back-pressure wait an info line, each naming the route, the status or the kind of transport
failure, the wait and the request id — so a partner's operators see a struggling gateway before calls fail —
and nothing of the call's content: no body, no problem text, no id the caller passed, no key or token."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.client.api import GatewayClientError
from gateway.client.models import ExchangeRequest
from tests.unit.client.test_api_retries import REQUEST, RESULT, Recorder, _client, _sequence

PERSONAL = "Jansen-Kerkstraat-12"


async def test_repeated_attempts_and_waits_are_logged_without_the_calls_content(
        caplog: pytest.LogCaptureFixture) -> None:
    seen = Recorder()
    api = _sequence(httpx.ReadTimeout,
                    httpx.Response(503, json={"status": 503, "detail": f"holder down for {PERSONAL}"}),
                    httpx.Response(429, json={"status": 429}, headers={"Retry-After": "1"}),
                    httpx.Response(200, json=RESULT))
    request = ExchangeRequest.model_validate(REQUEST | {"case_reference": PERSONAL})
    caplog.set_level(logging.INFO, logger="gateway.client")
    async with _client(seen, api, retries=3) as client:
        await client.exchange(request, idempotency_key="sys-a:secret-key")
    lines = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == "gateway.client"]
    assert [level for level, _ in lines] == [logging.WARNING, logging.WARNING, logging.INFO]
    timeout, unavailable, throttled = (message for _, message in lines)
    assert "POST /v1/exchanges" in timeout
    assert "ReadTimeout" in timeout
    assert "attempt 2 of 4" in timeout
    assert "503" in unavailable
    assert "attempt 3 of 4" in unavailable
    assert "429" in throttled
    assert "1.0 s" in throttled
    for (_, message), request_id in zip(lines, seen.request_ids, strict=False):
        assert f"(request {request_id})" in message, "each line names the attempt it is about"
    everything = " ".join(message for _, message in lines)
    for secret in (PERSONAL, "Jansen", "holder down", "secret-key", "subj-12345678a", "Bearer"):
        assert secret not in everything


async def test_a_log_line_names_the_route_not_the_id_the_caller_passed(caplog: pytest.LogCaptureFixture) -> None:
    seen = Recorder()
    caplog.set_level(logging.INFO, logger="gateway.client")
    api = _sequence(httpx.Response(503, json={"status": 503}), httpx.Response(200, json=RESULT))
    async with _client(seen, api) as client:
        await client.get_exchange("123456782")
    [line] = [record.getMessage() for record in caplog.records if record.name == "gateway.client"]
    assert "GET /v1/exchanges/{exchange_id}" in line
    assert "123456782" not in line


@pytest.mark.parametrize("call", ["escalation", "withdraw_escalation"])
async def test_a_log_line_names_a_cases_route_not_the_case_id_passed(call: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    seen = Recorder()
    caplog.set_level(logging.INFO, logger="gateway.client")
    api = _sequence(httpx.Response(429, json={"status": 429}, headers={"Retry-After": "1"}),
                    httpx.Response(404, json={"status": 404}))
    async with _client(seen, api) as client:
        made = (client.escalation("123456782") if call == "escalation"
                else client.withdraw_escalation("123456782", 3, "no longer needed"))
        with pytest.raises(GatewayClientError):
            await made
    [line] = [record.getMessage() for record in caplog.records if record.name == "gateway.client"]
    assert "/v1/escalations/{case_id}" in line
    assert "123456782" not in line


async def test_a_refused_token_and_its_one_renewal_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    seen = Recorder()
    caplog.set_level(logging.INFO, logger="gateway.client")
    api = _sequence(httpx.Response(401, json={"status": 401}), httpx.Response(200, json=RESULT))
    async with _client(seen, api) as client:
        await client.get_exchange("ex-1")
    [line] = [record.getMessage() for record in caplog.records if record.name == "gateway.client"]
    assert "401" in line
    request_id = seen.request_ids[0]
    assert request_id is not None
    assert request_id in line
