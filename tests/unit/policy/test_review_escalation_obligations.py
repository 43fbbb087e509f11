"""An escalation decision's obligations only tighten the purpose's (REGISTER.md rules 8 and 9): the API model
refuses what it can tell on its own; the policy (policies/exchange.rego, the authority) does the rest."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from gateway.escalations.models import Decide, ExtraObligations


def _decide(obligations: dict[str, object]) -> Decide:
    return Decide.model_validate({"expected_version": 1, "outcome": "allow", "motivation": "tier 2 says so",
                                  "permitted_categories": ["police_incidents"], "obligations": obligations})


def test_a_decision_may_add_results_only_and_an_earlier_deletion_date() -> None:
    decided = _decide({"results_only": True, "retain_until": "2027-01-31"})
    assert decided.obligations == ExtraObligations(results_only=True, retain_until=date(2027, 1, 31))
    assert _decide({}).obligations == ExtraObligations()


def test_a_decision_cannot_lift_results_only() -> None:
    with pytest.raises(ValidationError, match="results-only"):
        _decide({"results_only": False})


def test_a_decision_cannot_allow_onward_sharing() -> None:
    with pytest.raises(ValidationError):
        _decide({"onward_sharing": True})
