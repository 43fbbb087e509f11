"""A decision document that contradicts itself is an engine failure (deny), never read optimistically:
the checks ``Decision.parse`` makes beyond the schema (found missing by a review)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.errors import MalformedDecision
from gateway.policy.model import Decision

OBLIGATIONS = {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}
ALLOWED: dict[str, Any] = {
    "allow": True, "escalate": False, "outcome": "allowed", "reasons": [], "permitted_categories": ["police_incidents"],
    "removed_categories": [], "hit_only": False, "escalation_decision": None, "policy_version": "wgs-1",
    "obligations": OBLIGATIONS}
DENIED = ALLOWED | {"allow": False, "outcome": "denied", "permitted_categories": [], "obligations": None,
                    "reasons": [{"code": "legal-basis-mismatch", "message": "wrong legal basis"}]}
ESCALATED = DENIED | {"escalate": True, "outcome": "escalated",
                      "reasons": [{"code": "outside-office-hours", "message": "outside office hours"}]}


@pytest.mark.parametrize("document", [ALLOWED, DENIED, ESCALATED])
def test_consistent_documents_are_accepted(document: dict[str, Any]) -> None:
    assert Decision.parse(document).outcome == document["outcome"]


@pytest.mark.parametrize("document", [
    ALLOWED | {"escalate": True},  # allowed and escalated at once
    ESCALATED | {"escalate": False},  # an escalation the flag denies
    ALLOWED | {"permitted_categories": []},  # an allow of nothing
    DENIED | {"permitted_categories": ["police_incidents"]},  # a denial that permits something
    ALLOWED | {"obligations": OBLIGATIONS | {"onward_sharing": True}},  # rule 9 says never
    ALLOWED | {"obligations": OBLIGATIONS | {"retain_until": "forever"}},  # not a date
    ALLOWED | {"obligations": None},  # an allow without obligations
], ids=["allow-and-escalate", "escalated-flag-false", "allow-nothing", "deny-permits", "onward-sharing",
        "retain-until-not-a-date", "allow-without-obligations"])
def test_contradictory_documents_are_malformed(document: dict[str, Any]) -> None:
    with pytest.raises(MalformedDecision):
        Decision.parse(document)
