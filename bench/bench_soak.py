"""Soak run: the exchange path under steady load for a bounded time, loopback only.

    python bench/bench_soak.py [--minutes 10] [--clients 16]

Starts the same processes as bench_exchange.py (a simulated partner, the gateway on SQLite with the embedded
Rego engine), drives POST /v1/exchanges with ``--clients`` concurrent clients for ``--minutes``, and prints
per minute: requests/s, p50/p99 latency, errors, and the gateway process's resident memory. At the end:
throughput drift (last minute vs first), total errors (target 0) and memory growth after warm-up (the
second minute to the last; target: flat within a few MiB). It stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_exchange import REQUESTER, _drive, _pct, start_stack
from connectors.world import build_world
from gateway.client.api import GatewayClient
from gateway.demo import stop_processes
from gateway.settings import Settings


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _soak(url: str, key: object, gateway_pid: int, minutes: float, clients: int) -> None:
    subject = build_world(2025).scenarios()["bibob-applicant"][0]
    body = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "SOAK-1",
            "signal": {"type": "bibob-application", "reference": "SOAK-SIG"}, "subjects": [{"ref": subject}],
            "holders": ["kvk"], "categories": ["company_registration", "directorships"]}
    # aiohttp, as bench_exchange's load generator: its _drive counts aiohttp's transport errors as errors.
    connector = aiohttp.TCPConnector(limit=clients * 2, keepalive_timeout=4.0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http, \
            GatewayClient(url, REQUESTER, key, issuer=Settings().issuer) as client:  # type: ignore[arg-type]
        end = time.monotonic() + minutes * 60
        rows: list[tuple[float, float, float, int, float]] = []
        print(f"{'minute':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'RSS MiB':>8}")
        minute = 0
        while time.monotonic() < end:
            minute += 1
            headers = {"Authorization": f"Bearer {await client.token()}"}  # refreshed as a partner would

            async def send(headers: dict[str, str] = headers) -> bool:
                async with http.post(f"{url}/v1/exchanges", json=body, headers=headers) as response:
                    await response.read()
                    return response.status == 200

            rate, latencies, errors = await _drive(send, clients, min(60.0, end - time.monotonic()))
            rss = _rss_mib(gateway_pid)
            rows.append((rate, _pct(latencies, 50), _pct(latencies, 99), errors, rss))
            print(f"{minute:>6} {rate:>8.0f} {rows[-1][1]:>8.1f} {rows[-1][2]:>8.1f} {errors:>6} {rss:>8.1f}")
    first, last = rows[0], rows[-1]
    warm = rows[1] if len(rows) > 1 else rows[0]
    print(f"throughput drift (last/first minute): {last[0] / first[0]:.2f}; total errors: "
          f"{sum(r[3] for r in rows)} (target 0); memory after warm-up: {warm[4]:.1f} -> {last[4]:.1f} MiB "
          f"({last[4] - warm[4]:+.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    urls, _token, key, processes = start_stack(Path(tempfile.mkdtemp(prefix="wgs-soak-")))
    try:
        asyncio.run(_soak(urls["gateway"], key, processes[1].pid, min(args.minutes, 30), args.clients))
    finally:
        stop_processes(processes)


if __name__ == "__main__":
    main()
