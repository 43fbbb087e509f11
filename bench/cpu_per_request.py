"""The gateway's CPU time per exchange request, for comparing versions of the code on a shared machine.

    python bench/cpu_per_request.py [--tree DIR ...] [--requests 1500] [--warmup 200] [--clients 16] [--rounds 5]
                                    [--keyed] [--pseudonyms]

Wall-clock throughput on this shared 2-core VM moves with whatever else runs; the CPU the gateway process spends
on a request moves much less. For each ``--tree`` (a checkout of this repository, e.g. a ``git worktree`` at an
older commit; default: this one) a stack is started from that tree's own code, as ``bench_exchange.py`` starts
it (partner simulator, gateway with one worker on SQLite and the embedded engine, pass-through). Then, in
rounds that interleave the trees (so that the machine's drift lands on every tree alike), each gateway gets
``--warmup`` requests and then ``--requests`` requests from ``--clients`` concurrent clients, and the gateway
process's user+system CPU time (``/proc/PID/stat``, all its threads) and its event loop thread's alone are read
before and after. Printed: per round and tree the CPU per request, then per tree the median over the rounds, the
median of the round-by-round ratios to the first tree and the ratio of all rounds' CPU together. With
``--keyed`` every request carries a fresh ``Idempotency-Key``, as ``gateway.client`` sends it (``bench_exchange.py
--keyed``): the claim of the key and the sealed records kept for a replay are then part of the CPU measured.
With ``--pseudonyms`` the subject is asked as partners ask in production (``bench_exchange.py --pseudonyms``):
the holder enrolled, the requester's own pseudonym sent, translated per holder and back; each stack has its own
keys, so each gets its own pseudonym of the subject.

Bounded (a fixed number of requests; every request has a 30 s timeout), loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from joserfc.jwk import OKPKey

from gateway.client.api import GatewayClient
from gateway.settings import Settings

REQUESTER = "gemeente-amsterdam-vth"

# Runs inside each tree (cwd and PYTHONPATH set to it), so that the tree's own bench_exchange starts the tree's
# own servers; prints what the driver needs and stops the servers when its stdin closes.
_HOLDER = """
import json, sys, tempfile
from pathlib import Path
from bench.bench_exchange import start_stack
from gateway.demo import stop_processes
workdir = Path(tempfile.mkdtemp(prefix="wgs-cpu-"))
urls, token, key, processes = start_stack(workdir)
try:
    subject = None
    if sys.argv[1:] == ["pseudonyms"]:
        import asyncio
        from bench.bench_exchange import pseudonyms
        subject = asyncio.run(pseudonyms(workdir, None, urls["gateway"], key)).requester
    print(json.dumps({"urls": urls, "key": key.as_dict(private=True), "gateway_pid": processes[1].pid,
                      "subject": subject}), flush=True)
    sys.stdin.read()
finally:
    stop_processes(processes)
"""

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process (all its threads) or of one thread, in seconds."""
    with open(stat_path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class Stack:
    def __init__(self, tree: Path, pseudonyms: bool = False) -> None:
        env = os.environ | {"PYTHONPATH": str(tree)}
        self.tree = tree
        self.holder = subprocess.Popen([sys.executable, "-c", _HOLDER, *(["pseudonyms"] if pseudonyms else [])],
                                       cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if not line:
            raise RuntimeError(f"the stack of {tree} did not start")
        started = json.loads(line)
        self.url: str = started["urls"]["gateway"]
        self.key = OKPKey.import_key(started["key"])
        self.pid: int = started["gateway_pid"]
        self.subject: str | None = started["subject"]  # the requester's pseudonym, with --pseudonyms

    def cpu(self) -> tuple[float, float]:
        """(the whole gateway process, its main thread: the event loop)."""
        return _cpu_seconds(f"/proc/{self.pid}/stat"), _cpu_seconds(f"/proc/{self.pid}/task/{self.pid}/stat")

    def stop(self) -> None:
        assert self.holder.stdin is not None
        self.holder.stdin.close()
        self.holder.wait(timeout=60)


def _exchange(pseudonym: str | None) -> dict[str, Any]:
    """The benchmark's request: about the subject by its opaque reference, or by the requester's pseudonym."""
    from connectors.world import build_world

    subject = pseudonym or build_world(2025).scenarios()["bibob-applicant"][0]
    return {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "BENCH-1",
            "signal": {"type": "bibob-application", "reference": "BENCH-SIG"},
            "subjects": [{"ref": subject}], "holders": ["kvk"],
            "categories": ["company_registration", "directorships"]}


async def _send(http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any], count: int, clients: int,
                keyed: bool = False) -> int:
    """``count`` requests from ``clients`` concurrent clients (each with a fresh ``Idempotency-Key`` when
    ``keyed``); returns how many failed."""
    async with GatewayClient(stack.url, REQUESTER, stack.key, issuer=Settings().issuer) as client:
        headers = {"Authorization": f"Bearer {await client.token()}"}
    left = count
    failed = 0

    async def worker() -> None:
        nonlocal left, failed
        while left > 0:
            left -= 1
            sent = headers | {"Idempotency-Key": f"bench-{uuid.uuid4()}"} if keyed else headers
            try:
                async with http.post(f"{stack.url}/v1/exchanges", json=body, headers=sent) as answer:
                    document = await answer.json()
                    ok = answer.status == 200 and document["targets"][0]["outcome"] == "allowed"
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                ok = False
            failed += not ok

    await asyncio.gather(*(worker() for _ in range(clients)))
    return failed


async def _measure(stacks: list[Stack], args: argparse.Namespace) -> None:
    per_request: dict[Path, list[float]] = {s.tree: [] for s in stacks}
    loop_share: dict[Path, list[float]] = {s.tree: [] for s in stacks}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        for round_no in range(1, args.rounds + 1):
            for stack in stacks:
                body = _exchange(stack.subject)
                await _send(http, stack, body, args.warmup, args.clients, args.keyed)
                (total0, loop0), began = stack.cpu(), time.perf_counter()
                failed = await _send(http, stack, body, args.requests, args.clients, args.keyed)
                (total1, loop1), wall = stack.cpu(), time.perf_counter() - began
                ms = (total1 - total0) * 1000 / args.requests
                per_request[stack.tree].append(ms)
                loop_share[stack.tree].append((loop1 - loop0) / max(total1 - total0, 1e-9))
                print(f"round {round_no} {stack.tree}: {ms:.3f} ms CPU per request (event loop "
                      f"{(loop1 - loop0) * 1000 / args.requests:.3f}), {args.requests / wall:.0f} req/s, "
                      f"{failed} failed", flush=True)
    first = stacks[0].tree
    print(f"\nmedians over {args.rounds} rounds of {args.requests} {'keyed ' if args.keyed else ''}requests "
          f"{'by pseudonyms ' if args.pseudonyms else ''}at "
          f"{args.clients} clients:")
    for stack in stacks:
        ratios = [a / b for a, b in zip(per_request[stack.tree], per_request[first], strict=True)]
        overall = sum(per_request[stack.tree]) / sum(per_request[first])
        print(f"{stack.tree}: {statistics.median(per_request[stack.tree]):.3f} ms CPU per request "
              f"(rounds {min(per_request[stack.tree]):.3f}-{max(per_request[stack.tree]):.3f}; event loop thread "
              f"{statistics.median(loop_share[stack.tree]):.0%}); / {first.name}: median of rounds "
              f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}), all rounds together "
              f"{overall:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout whose code to measure (repeatable; the first is the reference)")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keyed", action="store_true",
                        help="a fresh Idempotency-Key on every request, as gateway.client sends")
    parser.add_argument("--pseudonyms", action="store_true",
                        help="ask by the requester's pseudonym of the subject (the holder enrolled), as partners do")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parent.parent]]
    stacks: list[Stack] = []
    try:
        for tree in trees:
            stacks.append(Stack(tree, args.pseudonyms))
            print(f"{tree}: gateway pid {stacks[-1].pid}", flush=True)
        asyncio.run(_measure(stacks, args))
    finally:
        for stack in stacks:
            stack.stop()


if __name__ == "__main__":
    main()
