"""Rule 9's ``retain_until`` against an independent reference, on both evaluators of the embedded engine.

The reference: the request's date in the register's time zone (Europe/Amsterdam), plus the purpose's
retention in months, on the same day of the month or the month's last day when it has none. The policy
used to add the months with ``time.add_date`` to the UTC instant: a day early for requests made between
midnight and 01:00/02:00 in Amsterdam, and on an OPA server (Go's AddDate) days past the retention at
the end of a month (see test_opa_builtins.py). Checked over month ends, leap years and local midnights,
for each retention period of the shipped register (urgent purposes, so that office hours do not
escalate the night-time requests).
"""

from __future__ import annotations

import asyncio
import calendar
import copy
import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.policy.engine import RULES, EmbeddedPolicyEngine, Evaluator
from gateway.policy.model import Party, PolicyContext, PolicyInput, PolicyRequest
from gateway.register.loader import load_register
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER

SHIPPED = load_register(SHIPPED_REGISTER)[0].model_dump(mode="json")
AMSTERDAM = ZoneInfo(SHIPPED["office_hours"]["timezone"])

# (partnership, purpose, legal basis, requester, holder, category): one purpose per retention period.
PURPOSES = [
    ("fec", "taskforce-subject-check", "WGS (FEC) with covenant", Party(organisation="abn-amro",
                                                                        system="abn-amro-fec"), "fiod",
     "ongoing_investigation"),
    ("zvh-amsterdam", "youth-prevention", "WGS (ZVH)", Party(organisation="gemeente-amsterdam",
                                                             system="gemeente-amsterdam-vth"), "politie",
     "police_incidents"),
    ("riec-amsterdam-amstelland", "bibob-integrity-check", "WGS (RIEC) with Wet Bibob",
     Party(organisation="gemeente-amsterdam", system="gemeente-amsterdam-vth"), "politie", "police_incidents"),
]


def _urgent_register() -> dict[str, Any]:
    register = copy.deepcopy(SHIPPED)
    for partnership, purpose, *_ in PURPOSES:
        register["partnerships"][partnership]["purposes"][purpose]["urgent"] = True
    return register


REGISTER = _urgent_register()


def expected_retain_until(requested_at: datetime, months: int) -> str:
    local = requested_at.astimezone(AMSTERDAM).date()
    total = local.year * 12 + local.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    return date(year, month, min(local.day, calendar.monthrange(year, month)[1])).isoformat()


def _instants() -> Iterator[datetime]:
    """Noon and the two local midnights (as UTC instants just before and after) of month-end days."""
    for year, month in itertools.product([2026, 2027, 2028], range(1, 13)):
        last = calendar.monthrange(year, month)[1]
        for day in sorted({28, 29, 30, last} & set(range(1, last + 1))):
            midnight = datetime(year, month, day, tzinfo=AMSTERDAM).astimezone(UTC)
            yield midnight - timedelta(seconds=1)
            yield midnight
            yield datetime(year, month, day, 12, tzinfo=UTC)


INSTANTS = list(_instants())


@pytest.fixture(scope="module", params=["rvm", "interpreter"])
def engine(request: pytest.FixtureRequest) -> Iterator[EmbeddedPolicyEngine]:
    evaluator: Evaluator = request.param
    chosen = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER), evaluator=evaluator)
    yield chosen
    chosen.release_thread_engine()
    asyncio.run(chosen.aclose())


@pytest.mark.parametrize(("partnership", "purpose", "legal_basis", "requester", "holder", "category"), PURPOSES,
                         ids=[p[1] for p in PURPOSES])
def test_retain_until_is_the_local_date_plus_the_retention_clamped_to_the_month(
        engine: EmbeddedPolicyEngine, partnership: str, purpose: str, legal_basis: str, requester: Party,
        holder: str, category: str) -> None:
    months = REGISTER["partnerships"][partnership]["purposes"][purpose]["retention"]["months"]
    wrong = []
    for instant in INSTANTS:
        policy_input = PolicyInput(request=PolicyRequest(
            partnership=partnership, purpose=purpose, legal_basis=legal_basis, case_reference="C-1",
            signal={"type": "s", "reference": "r"}, categories=[category], subject_count=1, subjects_minor=False,
            requester=requester, holder=Party(organisation=holder),
            requested_at=instant.strftime("%Y-%m-%dT%H:%M:%SZ")), context=PolicyContext(), request_fingerprint="fp")
        document = engine.evaluate_sync(RULES["exchange"], policy_input.document())
        assert document["allow"], (instant, document["reasons"])
        expected = expected_retain_until(instant, months)
        if document["obligations"]["retain_until"] != expected:
            wrong.append((instant.isoformat(), document["obligations"]["retain_until"], expected))
    assert wrong == []
