"""The policy's own check of `requested_at` (wgs.common.requested_ns) accepts exactly RFC 3339 date-times.

The check is hand-written for speed (string splits and comparisons, no regular expression: it runs on every
evaluation), so it is compared here with a plain statement of what it must accept, over a corpus of every
field at and past its bounds, every fraction length and zone form, and single-character damage to valid
times: an accepted time must be decided as usual and any other value denied as input-incomplete, in both
evaluators. Anything it lets through reaches time.parse_rfc3339_ns, which fails the interpreter's
evaluation (the RVM's time is then undefined: a denial, so only the interpreter shows it); anything it
refuses wrongly denies a valid request.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import random
import re
from typing import Any

import pytest

from gateway.policy.engine import RULES, EmbeddedPolicyEngine, Evaluator
from gateway.policy.model import Party, PolicyContext, PolicyInput, PolicyRequest
from gateway.register.loader import load_register
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER

_FORM = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
                   r"(Z|[+-]([0-9]{2}):([0-9]{2}))")


def accepted(at: str) -> bool:
    """What the policy must accept: RFC 3339 with `T`, `Z` upper case, seconds, at most nine fraction
    digits, `Z` or an offset of at most 23:59; a day that exists; the years 1901-2099; no leap second."""
    match = _FORM.fullmatch(at)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    zone_ok = match[8] == "Z" or (int(match[9]) <= 23 and int(match[10]) <= 59)
    return 1901 <= year <= 2099 and hour <= 23 and minute <= 59 and second <= 59 and zone_ok


def corpus() -> list[str]:
    times = set()
    years = ["0000", "1000", "1899", "1900", "1901", "1904", "2000", "2026", "2028", "2099", "2100", "2104", "9999"]
    for year, month, day in itertools.product(years, [f"{m:02d}" for m in range(14)] + ["20", "99"],
                                              ["00", "01", "28", "29", "30", "31", "32", "39", "99"]):
        times.add(f"{year}-{month}-{day}T10:00:00Z")
    fractions = ["", "."] + ["." + "1234567890"[:n] for n in range(1, 11)]
    zones = ["Z", "z", "+00:00", "-05:00", "-23:59", "+24:00", "+23:60", "+19:99", "+0100", "+01:0", ""]
    for clock in ["00:00:00", "23:59:59", "24:00:00", "29:00:00", "10:60:00", "10:99:00", "10:00:60", "10:00:99"]:
        for fraction, zone in itertools.product(fractions, zones):
            times.add(f"2028-02-29T{clock}{fraction}{zone}")
    rnd = random.Random(5)
    valid = [t for t in sorted(times) if accepted(t)]
    for at in rnd.sample(valid, 60):
        for _ in range(20):
            chars, position = list(at), rnd.randrange(len(at))
            chars[position] = rnd.choice("0123456789-:T.Z+ tz/")
            times.add("".join(chars))
    return sorted(times)


CORPUS = corpus()


def _input(at: Any) -> dict[str, Any]:
    document = PolicyInput(
        request=PolicyRequest(partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
                              legal_basis="WGS (RIEC) with Wet Bibob", case_reference="C-1",
                              signal={"type": "bibob-application", "reference": "B-1"}, categories=["tax_debts"],
                              subject_count=1, subjects_minor=False,
                              requester=Party(organisation="gemeente-amsterdam", system="gemeente-amsterdam-vth"),
                              holder=Party(organisation="belastingdienst"), requested_at="2026-11-25T10:00:00Z"),
        context=PolicyContext(), request_fingerprint="fp").document()
    document["request"]["requested_at"] = at
    return document


def test_the_corpus_holds_both_kinds() -> None:
    assert 500 < sum(map(accepted, CORPUS)) < len(CORPUS) - 500


@pytest.mark.parametrize("evaluator", ["rvm", "interpreter"])
def test_requested_at_is_accepted_exactly_when_it_is_an_rfc3339_time(evaluator: Evaluator) -> None:
    register = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
    engine = EmbeddedPolicyEngine(POLICIES_DIR, register, register_digest(register), evaluator=evaluator)
    wrong = []
    for at in [*CORPUS, None, 5, ["2026-11-25T10:00:00Z"]]:
        decision = engine.evaluate_sync(RULES["exchange"], _input(at))
        incomplete = [r for r in decision["reasons"] if r["code"] == "input-incomplete"]
        if bool(incomplete) == (isinstance(at, str) and accepted(at)):
            wrong.append(at)
        assert not incomplete or "request.requested_at" in incomplete[0]["message"], at
    engine.release_thread_engine()  # this thread's evaluator, on this thread
    asyncio.run(engine.aclose())
    assert wrong == []
