"""The embedded engine sends ``PolicyInput.document_json()`` (pydantic's serializer called without
``model_dump_json``'s wrapper): it must be the text ``model_dump_json(exclude_none=True)`` writes, the document
``document()`` gives (what the OPA server is sent), for every shape of input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.policy.model import PolicyInput

REQUEST: dict[str, Any] = {
    "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC)",
    "case_reference": "C-1", "signal": {"type": "bibob-application", "reference": "B-1"},
    "categories": ["tax_debts", "income"], "subject_count": 3, "subjects_minor": False,
    "requester": {"organisation": "gemeente-amsterdam", "system": "vth"}, "holder": {"organisation": "politie"},
    "requested_at": "2026-11-25T10:00:00Z"}
ESCALATION = {"id": "dec-1", "request_fingerprint": "f", "holder": "politie", "valid_until": "2026-11-26T10:00:00Z",
              "permitted_categories": ["income"]}

INPUTS: dict[str, dict[str, Any]] = {
    "usual": {"request": REQUEST, "context": {}, "request_fingerprint": "f"},
    "holder-system-and-provided": {"request": REQUEST | {"holder": {"organisation": "kvk", "system": "kvk-api"},
                                                         "provided_categories": ["dissolution_grounds"]},
                                   "context": {"requests_today": 41}, "request_fingerprint": "f"},
    "no-requester-system": {"request": REQUEST | {"requester": {"organisation": "gemeente-amsterdam"}},
                            "context": {}, "request_fingerprint": "f"},
    "escalation-decision": {"request": REQUEST, "context": {"escalation_decision": ESCALATION | {"obligations": {
        "retain_until": "2027-01-01", "results_only": True, "note": None, "nested": {"a": [1, 2.5, None, "é"]}}}},
                            "request_fingerprint": "f"},
    "unicode-and-escapes": {"request": REQUEST | {"case_reference": "Zaak \u201c7\u201d\n\t\\ \"x\" \U0001f600 \u0085",
                                                  "signal": {"type": "m\u00e9lding", "reference": "\u0000"}},
                            "context": {}, "request_fingerprint": "\u00fc"},
}


@pytest.mark.parametrize("document", INPUTS.values(), ids=INPUTS.keys())
def test_the_input_json_is_the_documented_input(document: dict[str, Any]) -> None:
    policy_input = PolicyInput.model_validate(document)
    text = policy_input.document_json()
    assert text == policy_input.model_dump_json(exclude_none=True)
    assert json.loads(text) == policy_input.document()
    shared = policy_input.document_json(exclude={"request": {"holder"}})
    assert shared == policy_input.model_dump_json(exclude_none=True, exclude={"request": {"holder"}})
    assert json.loads(shared) == policy_input.document_without_holder()
