"""Policy decisions per second for the full WGS exchange policy, embedded engine, one thread.

    python bench/bench_policy.py [--decisions 5000]

Prints decisions/s and the ratio to the issue's target (20,000/s), for the interpreter the gateway uses.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.policy.engine import EmbeddedPolicyEngine
from gateway.policy.model import Party, PolicyContext, PolicyInput, PolicyRequest
from gateway.register.loader import load_register
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER

TARGET = 20_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=5000)
    args = parser.parse_args()
    register = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
    engine = EmbeddedPolicyEngine(POLICIES_DIR, register)
    cases = {
        "allowed (police, S1)": "politie",
        "narrowed (tax, S1)": "belastingdienst",
        "hit-only (FIOD, S1)": "fiod",
    }
    for label, holder in cases.items():
        policy_input = PolicyInput(
            request=PolicyRequest(partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
                                  legal_basis="WGS (RIEC) with Wet Bibob", case_reference="C-1",
                                  signal={"type": "bibob-application", "reference": "B-1"},
                                  categories=["company_registration", "directorships", "tax_debts", "income",
                                              "police_incidents", "convictions"],
                                  subject_count=3, subjects_minor=False,
                                  requester=Party(organisation="gemeente-amsterdam", system="gemeente-amsterdam-vth"),
                                  holder=Party(organisation=holder), requested_at="2026-11-25T10:00:00Z"),
            context=PolicyContext(), request_fingerprint="bench")
        engine.decide_sync("exchange", policy_input)
        started = time.perf_counter()
        for _ in range(args.decisions):
            engine.decide_sync("exchange", policy_input)
        rate = args.decisions / (time.perf_counter() - started)
        print(f"{label:<24} {rate:>8.0f} decisions/s  ({rate / TARGET:.2f} of the {TARGET:,}/s target)")
    engine.release_thread_engine()
    asyncio.run(engine.aclose())  # drops the worker thread's engine on its own thread


if __name__ == "__main__":
    main()
