"""The typed partner client against a real HTTP server standing in for the gateway (uvicorn on loopback, over
TLS where it matters): what a newer or misbehaving gateway may answer (also to the escalation calls, whose
answers are typed too), and that the gateway's certificate is verified — against the system's CAs by
default, against ``ca_file`` when given, never not at all."""

from __future__ import annotations

import asyncio
import gc
import json
import pickle
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from joserfc.jwk import OKPKey

from gateway.client.api import GatewayClient, GatewayClientError, GatewayUnavailable, InvalidResponse
from gateway.client.escalations import CaseDetail, FeedItem
from gateway.client.models import ExchangeRequest, Outcome, ProvidedRecord
from tests.servers import STAND_IN_TOKEN, serve_app, stand_in_gateway
from tests.tls_certificates import client_certificate, private_ca_certificates

KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "partner-1"})
PERSONAL = "Jansen, Kerkstraat 12, Amsterdam"
REQUEST = ExchangeRequest.model_validate({
    "partnership": "riec-aa", "purpose": "bibob-check", "legal_basis": "x", "case_reference": "C-1",
    "signal": {"type": "bibob-application", "reference": "S-1"}, "subjects": [{"ref": "subj-12345678a"}],
    "categories": ["company_registration"]})
RESULT: dict[str, Any] = {
    "exchange_id": "ex-1", "created_at": "2026-11-25T10:00:00Z", "requester": "gemeente-amsterdam",
    "partnership": "riec-aa", "purpose": "bibob-check", "case_reference": "C-1", "register_version": "1",
    "policy_version": "1", "targets": [], "receipt": {"exchange_id": "ex-1"}}


@dataclass
class Double:
    """A stand-in gateway: tokens for anyone, and the queued answers (the last one repeats) for the API."""

    answers: list[Response] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = stand_in_gateway()

        @app.post("/oauth/token")
        async def token() -> dict[str, object]:
            return STAND_IN_TOKEN

        @app.api_route("/v1/{path:path}", methods=["GET", "POST"])
        async def api(path: str) -> Response:
            self.seen.append(path)
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

        return app


@pytest.fixture
def double() -> Iterator[tuple[Double, str]]:
    stand_in = Double()
    with serve_app(stand_in.app()) as url:
        yield stand_in, url


def _target(outcome: str, **extra: Any) -> dict[str, Any]:
    return {"holder": "kvk", "system": "kvk-handelsregister", "outcome": outcome, "reasons": [],
            "permitted_categories": ["company_registration"], **extra}


async def test_an_answer_of_a_newer_gateway_with_an_unknown_outcome_is_read(double: tuple[Double, str]) -> None:
    stand_in, url = double
    record = {"record_id": "r-1", "record_type": "company", "subject": "subj-1", "category": "company_registration",
              "fields": {"name": "Bouw BV"}, "provenance": "kvk-2027"}
    stand_in.answers = [JSONResponse(RESULT | {"region": "nl-north", "targets": [
        _target("allowed", records=[record], hit_confidence=0.9),
        _target("pending-judicial-review", holder="om", permitted_categories=[])]})]
    async with GatewayClient(url, "sys-a", KEY) as client:
        result = await client.exchange(REQUEST)
    allowed, newer = result.targets
    assert allowed.outcome is Outcome.ALLOWED
    assert [r.record_id for r in allowed.records] == ["r-1"]
    assert not newer.outcome.known
    assert newer.outcome.value == "pending-judicial-review"


async def test_an_answer_with_an_outcome_of_a_newer_gateway_crosses_a_process_boundary_whole(
        double: tuple[Double, str]) -> None:
    """A worker pool or a task queue pickles the result to hand it on: an outcome this version does not know
    arrives as it was read (before, unpickling it raised "is not a valid Outcome")."""
    stand_in, url = double
    stand_in.answers = [JSONResponse(RESULT | {"targets": [
        _target("allowed"), _target("pending-judicial-review", holder="om", permitted_categories=[])]})]
    async with GatewayClient(url, "sys-a", KEY) as client:
        result = await client.exchange(REQUEST)
    again = pickle.loads(pickle.dumps(result))
    assert again == result
    assert [(target.outcome.value, target.outcome.known) for target in again.targets] == [
        ("allowed", True), ("pending-judicial-review", False)]
    assert again.targets[0].outcome is Outcome.ALLOWED


async def test_the_repr_of_an_answer_shows_no_disclosed_content(double: tuple[Double, str]) -> None:
    """A repr is what a debug line (``log.debug("%r", result)``), a failed assertion or an error tracker's
    frame locals write down: the disclosed records' content is personal data and stays out of it (before, the
    repr of a result spelled out every record's fields); what the record is — id, type, category — stays."""
    stand_in, url = double
    record = {"record_id": "r-1", "record_type": "person", "subject": "subj-1", "category": "addresses",
              "fields": {"name": PERSONAL}}
    stand_in.answers = [JSONResponse(RESULT | {"targets": [_target("allowed", records=[record])]})]
    async with GatewayClient(url, "sys-a", KEY) as client:
        result = await client.exchange(REQUEST)
    assert result.targets[0].records[0].fields == {"name": PERSONAL}
    for shown in (repr(result), str(result), repr(result.targets[0].records[0])):
        assert "Jansen" not in shown
        assert "r-1" in shown
    provided = ProvidedRecord(subject="subj-12345678a", category="tax_compliance", fields={"name": PERSONAL})
    assert "Jansen" not in repr(ExchangeRequest.model_validate(REQUEST.model_dump() | {"provide": [provided]}))


@pytest.mark.parametrize(("record", "where"), [
    ({"record_type": "person", "subject": "subj-1", "category": "company_registration",
      "fields": {"name": PERSONAL}}, "records.0.record_id"),  # a field renamed by a newer gateway
    ({"record_id": "r-1", "record_type": "person", "subject": "subj-1", "category": "company_registration",
      "fields": PERSONAL}, "records.0.fields"),  # content in another shape
])
async def test_an_answer_the_client_cannot_read_is_named_without_its_content(
        double: tuple[Double, str], record: dict[str, Any], where: str) -> None:
    stand_in, url = double
    stand_in.answers = [JSONResponse(RESULT | {"targets": [_target("allowed", records=[record])]})]
    async with GatewayClient(url, "sys-a", KEY) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.exchange(REQUEST)
    said = f"{raised.value} {json.dumps(raised.value.problem)}"
    assert where in said
    assert not any(part in said for part in ("Jansen", "Kerkstraat", "Amsterdam"))
    assert raised.value.idempotency_key is not None


async def test_an_error_that_is_no_problem_document_is_not_echoed(double: tuple[Double, str]) -> None:
    stand_in, url = double
    stand_in.answers = [JSONResponse([{"loc": ["body", "subjects"], "input": PERSONAL}], status_code=400),
                        Response(f"<html>{PERSONAL}</html>", status_code=403, media_type="text/html")]
    async with GatewayClient(url, "sys-a", KEY) as client:
        for status in (400, 403):
            with pytest.raises(GatewayClientError) as raised:
                await client.get_exchange("ex-1")
            assert raised.value.status == status
            assert PERSONAL not in str(raised.value)


async def test_a_retry_after_the_client_cannot_parse_is_no_crash(double: tuple[Double, str]) -> None:
    stand_in, url = double
    stand_in.answers = [JSONResponse({"status": 503}, status_code=503, headers={"Retry-After": "\u00b2"}),
                        JSONResponse(RESULT)]
    async with GatewayClient(url, "sys-a", KEY, backoff=0.01) as client:
        result = await client.get_exchange("ex-1")
    assert result.exchange_id == "ex-1"
    assert stand_in.seen == ["exchanges/ex-1", "exchanges/ex-1"]


@pytest.mark.parametrize("exchange_id", ["../escalations/feed", "ex-1?holder=all", "ex-1#x"])
async def test_an_exchange_id_addresses_that_exchange_and_nothing_else(double: tuple[Double, str],
                                                                       exchange_id: str) -> None:
    stand_in, url = double
    stand_in.answers = [JSONResponse(RESULT)]
    async with GatewayClient(url, "sys-a", KEY) as client:
        await client.get_exchange(exchange_id)
        with pytest.raises(ValueError, match="not an id"):
            await client.get_exchange("..")
    assert stand_in.seen == [f"exchanges/{exchange_id}"]


async def test_a_call_cancelled_while_fetching_the_token_or_waiting_leaves_the_client_usable() -> None:
    """Cancelled in the middle of the shared token fetch (it holds the lock) and in a back-pressure wait: the
    lock is released and nothing half-done is kept, so the next calls get a token and an answer."""
    release = threading.Event()  # set from the test's loop, waited for in the server's thread
    stand_in = Double(answers=[JSONResponse({"status": 429}, status_code=429, headers={"Retry-After": "30"}),
                               JSONResponse(RESULT)])
    app = stand_in.app()

    @app.middleware("http")
    async def slow_first_token(request: Request, call_next: Any) -> Any:
        if request.url.path == "/oauth/token" and not release.is_set():
            await asyncio.to_thread(release.wait, 10)
        return await call_next(request)

    with serve_app(app) as url:
        async with GatewayClient(url, "sys-a", KEY) as client:
            fetching = asyncio.create_task(client.get_exchange("ex-1"))
            await asyncio.sleep(0.3)
            fetching.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetching
            release.set()
            waiting = asyncio.create_task(client.get_exchange("ex-1"))  # 429: waits 30 s
            while not stand_in.seen:
                await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            result = await asyncio.wait_for(client.get_exchange("ex-1"), 10)
    assert result.exchange_id == "ex-1"
    assert stand_in.seen == ["exchanges/ex-1", "exchanges/ex-1"]


async def test_a_closed_client_leaves_no_open_connection(double: tuple[Double, str]) -> None:
    stand_in, url = double
    stand_in.answers = [JSONResponse(RESULT)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with GatewayClient(url, "sys-a", KEY) as client:
            await client.get_exchange("ex-1")
        del client
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# -- TLS ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    ca_file, certificate, key = private_ca_certificates(tmp_path_factory.mktemp("tls"))
    stand_in = Double(answers=[JSONResponse(RESULT)])
    with serve_app(stand_in.app(), ssl_certfile=str(certificate), ssl_keyfile=str(key)) as url:
        yield url, ca_file


async def test_a_gateway_whose_certificate_no_trusted_ca_issued_is_refused(tls_double: tuple[str, Path]) -> None:
    url, _ = tls_double
    assert url.startswith("https://")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
    async with GatewayClient(url, "sys-a", KEY, retries=3, sleep=sleep) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1")
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    assert sleeps == [], "a certificate that fails verification is not asked again"


async def test_the_ca_file_option_trusts_the_partnerships_ca(tls_double: tuple[str, Path]) -> None:
    url, ca_file = tls_double
    async with GatewayClient(url, "sys-a", KEY, ca_file=ca_file) as client:
        assert (await client.get_exchange("ex-1")).exchange_id == "ex-1"
    context = ssl.create_default_context(cafile=str(ca_file))
    async with GatewayClient(url, "sys-a", KEY, ssl_context=context) as client:
        assert (await client.get_exchange("ex-1")).exchange_id == "ex-1"


async def test_the_ca_file_does_not_excuse_a_wrong_host_name(tls_double: tuple[str, Path]) -> None:
    url, ca_file = tls_double
    async with GatewayClient(url.replace("127.0.0.1", "localhost"), "sys-a", KEY, ca_file=ca_file,
                             retries=0) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1")
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)


async def test_a_context_that_does_not_verify_cannot_be_used(tls_double: tuple[str, Path]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="verified"):
        GatewayClient(tls_double[0], "sys-a", KEY, ssl_context=context)


@pytest.fixture(scope="module")
def mtls_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path, Path]]:
    """A stand-in behind TLS that asks for a client certificate of the partner systems' CA (as a gateway's
    proxy does for certificate-bound tokens): (URL, the gateway's CA file, client certificate, its key)."""
    directory = tmp_path_factory.mktemp("mtls")
    ca_file, certificate, key = private_ca_certificates(directory)
    clients_ca, client_cert, client_key = client_certificate(directory)
    stand_in = Double(answers=[JSONResponse(RESULT)])
    with serve_app(stand_in.app(), ssl_certfile=str(certificate), ssl_keyfile=str(key),
                   ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs=str(clients_ca)) as url:
        yield url, ca_file, client_cert, client_key


async def test_a_client_certificate_is_presented_to_a_gateway_that_asks_for_one(
        mtls_double: tuple[str, Path, Path, Path]) -> None:
    url, ca_file, client_cert, client_key = mtls_double
    async with GatewayClient(url, "sys-a", KEY, ca_file=ca_file, client_cert=client_cert,
                             client_key=client_key) as client:
        assert (await client.get_exchange("ex-1")).exchange_id == "ex-1"
    combined = client_cert.parent / "combined.pem"  # the key in the certificate's file: client_key left out
    combined.write_bytes(client_cert.read_bytes() + client_key.read_bytes())
    async with GatewayClient(url, "sys-a", KEY, client_cert=combined) as client:  # the system's CAs: refused
        with pytest.raises(GatewayUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get_exchange("ex-1")
    async with GatewayClient(url, "sys-a", KEY, ca_file=ca_file, client_cert=combined) as client:
        assert (await client.get_exchange("ex-1")).exchange_id == "ex-1"


async def test_without_its_client_certificate_the_client_is_turned_away(
        mtls_double: tuple[str, Path, Path, Path]) -> None:
    url, ca_file, _, _ = mtls_double
    async with GatewayClient(url, "sys-a", KEY, ca_file=ca_file, retries=0) as client:
        with pytest.raises(GatewayUnavailable):
            await client.get_exchange("ex-1")


def test_a_client_certificate_that_could_not_be_presented_is_refused_at_construction(
        mtls_double: tuple[str, Path, Path, Path], tmp_path: Path) -> None:
    url, ca_file, client_cert, client_key = mtls_double
    with pytest.raises(ValueError, match="without client_cert"):
        GatewayClient(url, "sys-a", KEY, ca_file=ca_file, client_key=client_key)
    with pytest.raises(ValueError, match="not both"):
        GatewayClient(url, "sys-a", KEY, ssl_context=ssl.create_default_context(cafile=str(ca_file)),
                      client_cert=client_cert, client_key=client_key)
    with pytest.raises(ValueError, match="https:// only"):
        GatewayClient("http://127.0.0.1:1", "sys-a", KEY, client_cert=client_cert, client_key=client_key)
    secret = "-----BEGIN PRIVATE KEY-----not really-----END PRIVATE KEY-----"
    (tmp_path / "broken-key.pem").write_text(secret)
    with pytest.raises(ValueError, match="could not be loaded") as raised:
        GatewayClient(url, "sys-a", KEY, ca_file=ca_file, client_cert=client_cert,
                      client_key=tmp_path / "broken-key.pem")
    assert "not really" not in str(raised.value)
    with pytest.raises(ValueError, match="could not be loaded"):
        GatewayClient(url, "sys-a", KEY, client_cert=tmp_path / "missing.pem")


# -- escalation answers, typed --------------------------------------------------------------------------------
CASE: dict[str, Any] = {
    "id": "case-1", "partnership": "riec-aa", "purpose": "bibob-check", "requester_org": "gemeente-amsterdam",
    "holder_org": "belastingdienst", "trigger": "requester-objection", "state": "decided", "tier": 1, "version": 3,
    "deadline": "2026-12-09", "overdue": False, "opened_at": "2026-12-02T09:00:00Z",
    "updated_at": "2026-12-03T10:00:00Z", "exchange_id": "ex-1", "register_version": "1",
    "policy_reasons": ["category-narrowed"], "requested_categories": ["income", "tax_debts"], "pending_votes": [],
    "decision": {"id": "dec-1", "outcome": "allow", "permitted_categories": ["tax_debts"]}, "legal_gap": False,
    "may_decide": False, "deciders": ["belastingdienst"]}


async def test_the_escalation_feed_and_an_opened_case_are_typed(double: tuple[Double, str]) -> None:
    stand_in, url = double
    opened = CASE | {"state": "open", "decision": None, "version": 1, "history": [
        {"at": "2026-12-02T09:00:00Z", "action": "open", "actor_org": "gemeente-amsterdam", "actor_user": None,
         "tier": 1, "state": "open", "motivation": "please review"}], "comments": []}
    stand_in.answers = [JSONResponse(opened, status_code=201), JSONResponse([
        {"case": CASE | {"region": "nl-north"}, "awaiting": "rerun"},  # a field this version does not know
        {"case": CASE | {"id": "case-2", "decision": None}, "awaiting": "hearing"}])]  # a newer gateway's value
    async with GatewayClient(url, "sys-a", KEY) as client:
        case = await client.object_to("ex-1", "belastingdienst", "We need to know whether income was involved.")
        rerun, newer = await client.escalation_feed()
    assert isinstance(case, CaseDetail)
    assert (case.id, case.state, case.version, case.decision_id) == ("case-1", "open", 1, None)
    assert [step.action for step in case.history] == ["open"]
    assert isinstance(rerun, FeedItem)
    assert (rerun.awaiting, rerun.case.decision_id, rerun.case.deadline) == ("rerun", "dec-1", date(2026, 12, 9))
    assert (newer.awaiting, newer.case.id, newer.case.decision_id) == ("hearing", "case-2", None)


@pytest.mark.parametrize("answer", [{"cases": []}, [{"case": {"id": PERSONAL}, "awaiting": "rerun"}], "feed"])
async def test_an_escalation_feed_that_is_not_one_is_an_invalid_answer(double: tuple[Double, str],
                                                                      answer: Any) -> None:
    stand_in, url = double
    stand_in.answers = [JSONResponse(answer)]
    async with GatewayClient(url, "sys-a", KEY) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.escalation_feed()  # not an empty feed, which would hide every case waiting
    assert PERSONAL not in f"{raised.value} {raised.value.problem}"


# -- proxies from the environment -----------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_gateway_on_this_machine_is_not_reached_through_a_proxy_from_the_environment(
        double: tuple[Double, str], monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Plain http:// is allowed to a gateway on this machine because nothing crosses the network; a proxy named
    in the environment (HTTP_PROXY, as a government network sets for everything) would be handed the client
    assertion, the bearer token and the answers in clear text — and would reach its own loopback, not ours."""
    stand_in, url = double
    stand_in.answers = [JSONResponse(RESULT)]
    received: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy_url)
    try:
        async with GatewayClient(url.replace("127.0.0.1", host), "sys-a", KEY, retries=0) as client:
            result = await client.get_exchange("ex-1")
    finally:
        server.close()
        await server.wait_closed()
    assert result.exchange_id == "ex-1"
    assert received == [], "nothing of the call went to the proxy"
