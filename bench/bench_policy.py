"""Policy decisions per second for the full WGS exchange policy, embedded engine, one thread.

    python bench/bench_policy.py [--decisions 5000]

Prints decisions/s and the ratio to the issue's target (20,000/s) for both evaluators of the embedded
engine: the compiled RVM (what the gateway uses) and the interpreter (the reference). For each: one
decision per evaluation (``decide_sync``), and every target of one request in one evaluation
(``decide_many_sync``, as the exchange pipeline asks: S1 to all holders of the RIEC partnership). Both
figures include the Python side (input JSON, parsing and checking the decision documents). Each figure is
the best of three rounds (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.policy.engine import EmbeddedPolicyEngine, Evaluator
from gateway.policy.model import Party, PolicyContext, PolicyInput, PolicyRequest
from gateway.register.loader import load_register
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER

TARGET = 20_000
PARTNERSHIP = "riec-amsterdam-amstelland"


def s1_input(holder: str) -> PolicyInput:
    return PolicyInput(
        request=PolicyRequest(partnership=PARTNERSHIP, purpose="bibob-integrity-check",
                              legal_basis="WGS (RIEC) with Wet Bibob", case_reference="C-1",
                              signal={"type": "bibob-application", "reference": "B-1"},
                              categories=["company_registration", "directorships", "tax_debts", "income",
                                          "police_incidents", "convictions"],
                              subject_count=3, subjects_minor=False,
                              requester=Party(organisation="gemeente-amsterdam", system="gemeente-amsterdam-vth"),
                              holder=Party(organisation=holder), requested_at="2026-11-25T10:00:00Z"),
        context=PolicyContext(), request_fingerprint="bench")


def rate(decide: Callable[[], object], decisions_per_call: int, decisions: int) -> float:
    calls = max(1, decisions // decisions_per_call)
    decide()
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            decide()
        best = max(best, calls * decisions_per_call / (time.perf_counter() - started))
    return best


def report(label: str, value: float) -> None:
    print(f"{label:<40} {value:>8.0f} decisions/s  ({value / TARGET:.2f} of the {TARGET:,}/s target)")


def bench(evaluator: Evaluator, decisions: int) -> None:
    register = load_register(SHIPPED_REGISTER)[0]
    document = register.model_dump(mode="json")
    engine = EmbeddedPolicyEngine(POLICIES_DIR, document, register_digest(document), evaluator=evaluator)
    cases = {
        "allowed (police, S1)": "politie",
        "narrowed (tax, S1)": "belastingdienst",
        "hit-only (FIOD, S1)": "fiod",
    }
    print(f"{evaluator}: one decision per evaluation (decide):")
    for label, holder in cases.items():
        policy_input = s1_input(holder)
        report(f"  {label}", rate(partial(engine.decide_sync, "exchange", policy_input), 1, decisions))
    holders = [p.organisation for p in register.partnerships[PARTNERSHIP].participants]
    print(f"{evaluator}: every target of one request per evaluation (decide_many, {len(holders)} holders):")
    inputs = [s1_input(h) for h in holders]
    report("  S1 to all holders", rate(partial(engine.decide_many_sync, "exchange", inputs), len(inputs), decisions))
    engine.release_thread_engine()
    asyncio.run(engine.aclose())  # drops the worker thread's evaluator on its own thread


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--evaluator", choices=["rvm", "interpreter", "both"], default="both")
    args = parser.parse_args()
    evaluators: list[Evaluator] = ["rvm", "interpreter"] if args.evaluator == "both" else [args.evaluator]
    for evaluator in evaluators:
        bench(evaluator, args.decisions)


if __name__ == "__main__":
    main()
