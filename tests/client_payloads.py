"""The exchange request and answer that the client's tests send and have stand-in gateways answer: one copy,
so that a change to the API's shape is made once for all of them."""

from __future__ import annotations

from typing import Any

EXCHANGE_REQUEST: dict[str, Any] = {
    "partnership": "riec-aa", "purpose": "bibob-check", "legal_basis": "x", "case_reference": "C-1",
    "signal": {"type": "bibob-application", "reference": "S-1"}, "subjects": [{"ref": "subj-12345678a"}],
    "categories": ["company_registration"]}
EXCHANGE_RESULT: dict[str, Any] = {
    "exchange_id": "ex-1", "created_at": "2026-11-25T10:00:00Z", "requester": "gemeente-amsterdam",
    "partnership": "riec-aa", "purpose": "bibob-check", "case_reference": "C-1", "register_version": "1",
    "policy_version": "1", "targets": [], "receipt": {"exchange_id": "ex-1"}}
