"""Exchange benchmark: the gateway against two baselines, measured in one run on loopback.

    python bench/bench_exchange.py [--seconds 5] [--rounds 3] [--concurrency 1,16,64] [--pseudonyms]

Starts, as separate processes: one simulated partner (kvk-handelsregister), the gateway (SQLite, embedded Rego
engine, the demo register so office hours do not escalate) and a bare FastAPI pass-through. Then, per
concurrency level, drives (a) the partner directly, (b) the pass-through, (c) the gateway's POST /v1/exchanges
with the same question, in interleaved rounds, and prints requests/s (the median of the rounds, and each
round's) and p50/p95/p99 latency (over all rounds), and the ratios (the median of the rounds' ratios, and
their range) against the targets (gateway >= 0.5 x pass-through, >= 0.3 x direct, p99 <= 30 ms at 16 clients).
These closed-loop rows keep every client busy, so at 16 clients their latency is mostly queueing (clients
divided by throughput). The open-loop rows that follow offer half the gateway's throughput at the same
concurrency to pass-through and gateway, and time each request from when it was due: latency at a load it
carries.
With --pseudonyms the subject is asked as a partner asks in production: the requester sends its own
pseudonym, the holder is enrolled first (so it knows its own pseudonyms), the gateway translates per holder and
back, and the two baselines send the partner the holder's pseudonym, what the gateway sends it. The default
(opaque references) stays, so that figures remain comparable with earlier runs.
Before timing, one request per target must come back with the same records (fails loudly otherwise): a
benchmark of no-hits on an unknown subject would time less work than the exchange does.
The load generator shares the machine's cores with the servers; bounded in time, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alembic import command
from joserfc.jwk import OKPKey

from connectors.enrolment import enrol
from connectors.profiles import PROFILES
from connectors.store import PartnerStore, store_path
from connectors.world import build_world
from gateway.auditing.setup import load_or_create_checkpoint_key
from gateway.auth.clients import register_key_client
from gateway.auth.keys import SigningKeyStore
from gateway.auth.tokens import AccessTokenService
from gateway.client.api import GatewayClient
from gateway.clock import SystemClock
from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from gateway.demo import _free_port, _wait, demo_register, stop_processes
from gateway.pseudonyms.keystore import FileKeyStore
from gateway.register.loader import load_register
from gateway.settings import Settings

REQUESTER = "gemeente-amsterdam-vth"
HOLDER = "kvk-handelsregister"
PARTNERSHIP = "riec-amsterdam-amstelland"


class Subject(NamedTuple):
    """How each side names the one subject asked about: the requester in its exchange, and the holder in the
    query it gets (the gateway's translation; the baselines send it as it is)."""

    requester: str
    holder: str
    mode: str


def _bench_subject() -> str:
    return build_world(2025).scenarios()["bibob-applicant"][0]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=os.environ | env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def _attempt(send: Any) -> bool:
    """One request; a transport failure or timeout counts as an error, like a wrong answer."""
    try:
        return bool(await send())
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _drive(send: Any, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            if await _attempt(send):
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies, errors


async def _drive_open(send: Any, concurrency: int, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open loop: requests are due at a fixed rate whatever the answers do, sent by ``concurrency``
    clients; each latency runs from the moment the request was *due*, so a stall is charged to every
    request it delayed (no coordinated omission). Returns (latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    began = time.perf_counter()
    due = (began + i / rate for i in range(int(rate * seconds)))

    async def worker() -> None:
        nonlocal errors
        for at in due:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            if await _attempt(send):
                latencies.append(time.perf_counter() - at)
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000 if len(values) > 1 else \
        values[0] * 1000


def references() -> Subject:
    """The default: one opaque reference, the same on every side (no translation)."""
    subject = _bench_subject()
    return Subject(subject, subject, "references")


async def pseudonyms(workdir: Path, database_url: str | None, gateway_url: str, key: OKPKey) -> Subject:
    """As the demo does it: the holder enrols what it holds (its own pseudonyms back, kept in its store, which
    the running simulator reads), and each side gets its own pseudonym for the subject from the identifier it
    knows — the requester's for its exchange, the holder's for the baselines' queries."""
    settings = Settings(data_dir=workdir, database_url=database_url, register_file=workdir / "register-bench.yaml")
    register, _ = load_register(settings.register_file)
    holder_key = OKPKey.generate_key("Ed25519", parameters={"kid": "bench-holder"})
    engine = make_engine(settings.effective_database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            register_key_client(session, register, HOLDER, ["enrol"], {"keys": [holder_key.as_dict(private=False)]},
                                SystemClock())
    finally:
        engine.dispose()
    identifier = build_world(2025).identifier_of(_bench_subject())
    store = PartnerStore(store_path(workdir / "partners", HOLDER))
    try:
        async with GatewayClient(gateway_url, HOLDER, holder_key, issuer=settings.issuer) as holder:
            await enrol(store, holder, register.partnerships_of_system(HOLDER), profile=PROFILES[HOLDER])
            [held] = await holder.own_pseudonyms(PARTNERSHIP, [identifier])
    finally:
        store.close()
    async with GatewayClient(gateway_url, REQUESTER, key, issuer=settings.issuer) as requester:
        [asked] = await requester.own_pseudonyms(PARTNERSHIP, [identifier])
    return Subject(asked, held, "pseudonyms")


async def _check_answers(http: aiohttp.ClientSession, urls: dict[str, str], partner_headers: dict[str, str],
                         gateway_headers: dict[str, str], holder_query: dict[str, Any], exchange: dict[str, Any],
                         subject: Subject) -> int:
    """One request per target before any timing: each must answer with records about the subject as its
    caller names it, and all with as many. Why: a subject a side does not know (an unenrolled holder, a
    pseudonym of the wrong partnership) is answered quickly with no records, and the figures would time a
    no-hit while claiming an exchange. Exits with the mismatch; returns the number of records."""
    counts: dict[str, int] = {}
    for name, url, body, headers in (
            ("direct", f"{urls['partner']}/holder/v1/query", holder_query, partner_headers),
            ("passthrough", f"{urls['passthrough']}/forward", holder_query, {})):
        async with http.post(url, json=body | {"request_id": str(uuid.uuid4())}, headers=headers) as r:
            answer = await r.json()
        records = answer.get("records", []) if r.status == 200 else []
        if not records or any(rec["subject"] != subject.holder for rec in records):
            raise SystemExit(f"{name}: HTTP {r.status}, {len(records)} record(s) about the holder's subject; "
                             "the benchmark would time a no-hit")
        counts[name] = len(records)
    async with http.post(f"{urls['gateway']}/v1/exchanges", json=exchange, headers=gateway_headers) as r:
        result = await r.json()
    target = result["targets"][0] if r.status == 200 else {}
    records = target.get("records", [])
    if target.get("outcome") != "allowed" or not records or any(rec["subject"] != subject.requester
                                                                 for rec in records):
        raise SystemExit(f"gateway: HTTP {r.status}, outcome {target.get('outcome')}, {len(records)} record(s) "
                         "about the requester's subject; the benchmark would time a no-hit")
    counts["gateway"] = len(records)
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the targets answer with different records: {counts}")
    return counts["gateway"]


async def _measure(urls: dict[str, str], token: str, key: OKPKey, levels: list[int], seconds: float,
                   open_loop: bool = True, keyed: bool = False, rounds: int = 3,
                   subject: Subject | None = None) -> None:
    subject = subject or references()
    holder_query = {"request_id": "", "partnership": PARTNERSHIP, "purpose": "bibob-integrity-check",
                    "requester_organisation": "gemeente-amsterdam",
                    "categories": ["company_registration", "directorships"], "subjects": [subject.holder]}
    exchange = {"partnership": PARTNERSHIP, "purpose": "bibob-integrity-check",
                "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "BENCH-1",
                "signal": {"type": "bibob-application", "reference": "BENCH-SIG"},
                "subjects": [{"ref": subject.requester}], "holders": ["kvk"],
                "categories": ["company_registration", "directorships"]}
    # The load generator uses aiohttp (as the gateway's holder connector and the pass-through do): httpx
    # costs about ten times more CPU per call, CPU the servers under test would otherwise not get.
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=4.0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http, \
            GatewayClient(urls["gateway"], REQUESTER, key, issuer=Settings().issuer) as client:
        access = await client.token()
        partner_headers = {"Authorization": f"Bearer {token}"}
        gateway_headers = {"Authorization": f"Bearer {access}"}
        records = await _check_answers(http, urls, partner_headers, gateway_headers, holder_query, exchange, subject)
        print(f"each target answers with {records} record(s) about the subject ({subject.mode})")

        async def direct() -> bool:
            body = holder_query | {"request_id": str(uuid.uuid4())}
            async with http.post(f"{urls['partner']}/holder/v1/query", json=body, headers=partner_headers) as r:
                await r.read()
                return r.status == 200

        async def passthrough() -> bool:
            async with http.post(f"{urls['passthrough']}/forward",
                                 json=holder_query | {"request_id": str(uuid.uuid4())}) as r:
                await r.read()
                return r.status == 200

        async def gateway() -> bool:
            async with http.post(f"{urls['gateway']}/v1/exchanges", json=exchange, headers=gateway_headers) as r:
                body = await r.json()
                return r.status == 200 and body["targets"][0]["outcome"] == "allowed"

        async def gateway_keyed() -> bool:
            """As ``gateway.client`` asks: a fresh Idempotency-Key per request (claim, sealed records for replay)."""
            headers = gateway_headers | {"Idempotency-Key": f"bench-{uuid.uuid4()}"}
            async with http.post(f"{urls['gateway']}/v1/exchanges", json=exchange, headers=headers) as r:
                body = await r.json()
                return r.status == 200 and body["targets"][0]["outcome"] == "allowed"

        targets = [("direct", direct), ("passthrough", passthrough), ("gateway", gateway)]
        if keyed:
            targets.append(("gateway key", gateway_keyed))

        # The load generator's own long-lived objects (imported modules; the synthetic world is garbage by now) would
        # otherwise be rescanned by every full collection: 40-60 ms pauses of the load generator, which would
        # show up in every target's latency as if a server had stalled.
        gc.collect()
        gc.freeze()
        print(f"{'clients':>7} {'target':<12} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"
              f"   req/s per round")
        for level in levels:
            for _, send in targets:
                await _drive(send, level, min(1.0, seconds / 5))  # warm-up
            # Rounds interleave the targets (direct, pass-through, gateway, direct, ...): on a shared virtual
            # machine the speed drifts over tens of seconds, and a ratio of two figures measured a minute
            # apart would partly measure the drift. Each round's ratio compares neighbours in time.
            rates: dict[str, list[float]] = {name: [] for name, _ in targets}
            latencies: dict[str, list[float]] = {name: [] for name, _ in targets}
            errors: dict[str, int] = dict.fromkeys(rates, 0)
            for _ in range(rounds):
                for name, send in targets:
                    rate, lat, failed = await _drive(send, level, seconds)
                    rates[name].append(rate)
                    latencies[name] += lat
                    errors[name] += failed
            for name, _ in targets:
                lat = latencies[name]
                print(f"{level:>7} {name:<12} {statistics.median(rates[name]):>8.0f} {_pct(lat, 50):>8.1f} "
                      f"{_pct(lat, 95):>8.1f} {_pct(lat, 99):>8.1f} {errors[name]:>6}   "
                      + " ".join(f"{r:.0f}" for r in rates[name]))
            g = statistics.median(rates["gateway"])
            p99 = _pct(latencies["gateway"], 99)
            if open_loop:
                # The closed loop above keeps every client busy, so its latencies are queueing at saturation
                # (clients / throughput). Latency under a load the gateway can carry: half its throughput.
                offered = g / 2
                for name, send in (("passthrough", passthrough), ("gateway", gateway)):
                    lat, failed = await _drive_open(send, level, offered, seconds)
                    print(f"{level:>7} {name + ' @':<12} {offered:>8.0f} {_pct(lat, 50):>8.1f} {_pct(lat, 95):>8.1f} "
                          f"{_pct(lat, 99):>8.1f} {failed:>6}   (open loop: {offered:.0f} req/s offered)")
            to_pass, to_direct = _ratios(rates, "gateway", "passthrough"), _ratios(rates, "gateway", "direct")
            print(f"{'':>7} ratios (median of rounds, range): gateway/passthrough {_span(to_pass)} (target >= 0.5: "
                  f"{_verdict(to_pass, 0.5)})  gateway/direct {_span(to_direct)} (target >= 0.3: "
                  f"{_verdict(to_direct, 0.3)})"
                  + (f"  p99 {p99:.1f} ms (target <= 30 at 16: {'PASS' if p99 <= 30 else 'FAIL'})"
                     if level == 16 else ""))
            if keyed:
                print(f"{'':>7} with Idempotency-Keys: gateway key/passthrough "
                      f"{_span(_ratios(rates, 'gateway key', 'passthrough'))}  gateway key/direct "
                      f"{_span(_ratios(rates, 'gateway key', 'direct'))}  gateway key/gateway "
                      f"{_span(_ratios(rates, 'gateway key', 'gateway'))}")


def _ratios(rates: dict[str, list[float]], of: str, to: str) -> list[float]:
    """Round by round: ``of``'s throughput over ``to``'s, measured next to each other."""
    return [a / b for a, b in zip(rates[of], rates[to], strict=True)]


def _span(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _verdict(ratios: list[float], target: float) -> str:
    """PASS only when every round reaches the target; AT THE LINE when the median does but a round not."""
    if min(ratios) >= target:
        return "PASS"
    return "AT THE LINE" if statistics.median(ratios) >= target else "FAIL"


def start_stack(workdir: Path, gateway_workers: int = 1, database_url: str | None = None
                ) -> tuple[dict[str, str], str, OKPKey, list[subprocess.Popen[bytes]]]:
    """Partner, gateway and pass-through as processes on loopback: (urls, partner token, client key, processes).
    Also used by bench_soak.py."""
    settings = Settings(data_dir=workdir, database_url=database_url)
    # The demo register (office hours widened) with the daily limit raised: rule 6 would otherwise escalate
    # every request after the 200th of the day, which is the policy working, not the exchange path.
    bench_register = workdir / "register-bench.yaml"
    bench_register.write_text(demo_register(settings).read_text().replace(
        "daily_limit_per_system: 200", "daily_limit_per_system: 100000000").replace("-demo\"", "-bench\""))
    settings = settings.model_copy(update={"register_file": bench_register})
    command.upgrade(alembic_config(settings.effective_database_url), "head")
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "bench"})
    register, _ = load_register(settings.register_file)
    with transaction(make_session_factory(make_engine(settings.effective_database_url))) as session:
        register_key_client(session, register, REQUESTER, ["exchange"], {"keys": [key.as_dict(private=False)]},
                            SystemClock())
    keys = SigningKeyStore(settings.key_dir, SystemClock(), timedelta(minutes=10))
    keys.load_or_create()
    load_or_create_checkpoint_key(settings.key_dir)  # every key before the workers start (`keys init`)
    asyncio.run(FileKeyStore(settings.key_dir / "pseudonyms").initialise())
    partner_token = AccessTokenService(keys, SystemClock(), settings.issuer, settings.audience, 3600).issue(
        subject="bench", organisation="bench", scopes=["holder"], audience="kvk-handelsregister").access_token
    ports = {name: _free_port(0) for name in ("partner", "gateway", "passthrough")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    python = sys.executable
    processes = [
        _spawn([python, "-m", "connectors.cli", "serve", "--partner", "kvk-handelsregister", "--port",
                str(ports["partner"]), "--data-dir", str(workdir / "partners"),
                "--jwks-url", f"{urls['gateway']}/.well-known/jwks.json"], {}, workdir / "partner.log"),
        _spawn([python, "-m", "uvicorn", "gateway.asgi:app", "--no-proxy-headers", "--port", str(ports["gateway"]),
                "--log-level", "warning", "--no-access-log", "--workers", str(gateway_workers)],
               {"WGS_DATA_DIR": str(workdir), "WGS_REGISTER_FILE": str(settings.register_file), "WGS_LOG_LEVEL":
                "WARNING", "WGS_CONNECTOR_ENDPOINTS": json.dumps({"kvk-handelsregister": urls["partner"]}),
                "WGS_DATABASE_URL": settings.effective_database_url},
               workdir / "gateway.log"),
        _spawn([python, "-m", "uvicorn", "bench.passthrough_app:app", "--port", str(ports["passthrough"]),
                "--log-level", "warning", "--no-access-log"],
               {"PASSTHROUGH_PARTNER_URL": urls["partner"], "PASSTHROUGH_PARTNER_TOKEN": partner_token},
               workdir / "passthrough.log"),
    ]
    try:
        _wait(f"{urls['partner']}/health")
        _wait(f"{urls['gateway']}/health/ready")
        _wait(f"{urls['passthrough']}/docs")
    except Exception:
        stop_processes(processes)
        raise
    return urls, partner_token, key, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--keyed", action="store_true",
                        help="also a row `gateway key`: every request with a fresh Idempotency-Key, as gateway.client "
                             "sends it (the key's claim and the sealed records for a replay cost extra)")
    parser.add_argument("--no-open-loop", action="store_true",
                        help="skip the open-loop rows (latency at half the gateway's closed-loop throughput)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per level; each runs every target for --seconds, interleaved, and the "
                             "ratios are the median of the rounds' ratios")
    parser.add_argument("--gateway-workers", type=int, default=1, help="uvicorn worker processes of the gateway")
    parser.add_argument("--pg", action="store_true", help="the gateway on a throw-away PostgreSQL (fsync on)")
    parser.add_argument("--pseudonyms", action="store_true",
                        help="ask by pseudonyms as partners do: the requester's own, the holder enrolled, the "
                             "baselines sending the holder's (default: opaque references, as in earlier figures)")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    with ExitStack() as stack:
        database_url = None
        if args.pg:
            from bench.bench_audit import _durable_postgres
            from tests.pg_server import create_database

            database_url = create_database(stack.enter_context(_durable_postgres()), "bench_exchange")
        workdir = Path(tempfile.mkdtemp(prefix="wgs-bench-"))
        urls, partner_token, key, processes = start_stack(workdir, args.gateway_workers, database_url)
        try:
            subject = (asyncio.run(pseudonyms(workdir, database_url, urls["gateway"], key)) if args.pseudonyms
                       else references())
            print(f"exchange benchmark: {args.rounds} rounds of {args.seconds:.0f} s per target and level; "
                  f"{os.cpu_count()} cores shared "
                  f"by servers and load generator; {'PostgreSQL' if args.pg else 'SQLite'}, embedded Rego; "
                  f"{args.gateway_workers} gateway worker(s); subjects as {subject.mode}")
            asyncio.run(_measure(urls, partner_token, key, levels, args.seconds, not args.no_open_loop, args.keyed,
                                 args.rounds, subject))
        finally:
            stop_processes(processes)


if __name__ == "__main__":
    main()
