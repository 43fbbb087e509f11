"""Builtins that regorus and OPA evaluate differently must not decide anything.

Production asks an OPA server, development and CI the embedded regorus; no OPA binary can run here
(DESIGN.md), so the equivalence tests compare regorus with itself. Where the two are known to differ,
the policies must not use the builtin at all, and this test keeps them from doing so again.

* ``time.add_date``: OPA calls Go's ``time.AddDate``, which rolls a day the target month lacks over into
  the next month (31 August + 6 months = 3 March); regorus clamps to the month's last day (28 February).
  Rule 9's ``retain_until`` was computed with it: OPA would have kept data past the purpose's retention,
  and the two engines would have given different obligations. ``wgs.common.retain_until`` now does the
  month arithmetic itself (tests in policies/exchange_test.rego).
"""

from __future__ import annotations

import re

import pytest

from gateway.policy.engine import policy_files
from gateway.settings import POLICIES_DIR

DIVERGENT_BUILTINS = ["time.add_date"]


def _code(text: str) -> str:
    """The Rego text without comments (a comment may name a builtin to explain why it is not used)."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


@pytest.mark.parametrize("builtin", DIVERGENT_BUILTINS)
def test_no_policy_calls_a_builtin_that_opa_and_regorus_evaluate_differently(builtin: str) -> None:
    call = re.compile(rf"\b{re.escape(builtin)}\s*\(")
    callers = [path.name for path in policy_files(POLICIES_DIR) if call.search(_code(path.read_text()))]
    assert callers == []
