"""Examples for the OpenAPI document of the exchange endpoints: requests, answers and their problems.

Partner systems of many organisations integrate from the document alone, so each endpoint shows what a
real request and answer look like (S1 of REGISTER.md, S2 for data handed to the holder) and every error a
caller must handle. ``tests/integration/test_openapi_document.py`` parses each example with the API models,
so an example that drifts from the contract fails the build. All references and pseudonyms are made up.
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

from gateway.errors import OutcomeNotStored
from gateway.openapi import named_examples, problem, problem_examples, problem_of

_BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
          "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-117",
          "signal": {"type": "bibob-application", "reference": "BIBOB-2026-42"},
          "subjects": [{"ref": "subj-fcb036a97719ffa9235ad5cc"}]}
_OBLIGATIONS = {"retain_until": "2028-11-25", "onward_sharing": False, "results_only": False}
_RECEIPT = {"exchange_id": "01a23787-4c30-778c-8ded-6a98c57e0ea3", "audit_indices": [1041, 1042, 1043, 1044, 1045],
            "checkpoint": "gateway.wgs.local/audit-log\n1045\nXEB/6blexpecoM+xeGqMnhIMM0nxJwITdAUIfO0J+RQ=\n\n"
                          "\u2014 gateway.wgs.local/audit-log Sya139a0WkGUB3MQN6RpHcDl5YTqQc5wh6n2+lztUcpryt8a1elb9Ubj"
                          "wNubgY1DMGqaf9XAQVrlEeW8qReav8DmWQ0=\n"}

EXCHANGE_REQUESTS: dict[str, Example] = {
    "all-holders": {
        "summary": "S1: a municipality's Bibob check, every holder that supplies a requested category",
        "value": _BIBOB | {"categories": ["company_registration", "directorships", "tax_debts", "income"],
                           "holders": "all"}},
    "named-holders": {
        "summary": "Only the named holders are asked",
        "value": _BIBOB | {"categories": ["company_registration", "directorships"], "holders": ["kvk"]}},
    "provide": {
        "summary": "S2: the Belastingdienst hands the dissolution grounds to the KvK with its request",
        "value": {"partnership": "riec-amsterdam-amstelland", "purpose": "malafide-company-dissolution",
                  "legal_basis": "WGS (RIEC) with BW 2:19a", "case_reference": "BD-2026-9",
                  "signal": {"type": "missing-returns", "reference": "BD-SIG-77"},
                  "subjects": [{"ref": "subj-0b1c2d3e4f5a6b7c8d9e0f1a"}], "holders": ["kvk"],
                  "categories": ["company_registration", "directorships"],
                  "provide": [{"subject": "subj-0b1c2d3e4f5a6b7c8d9e0f1a", "category": "tax_compliance",
                               "fields": {"dissolution_grounds": "BW 2:19a", "missing_returns": ["2023", "2024"]}}]}},
    "match-handle": {
        "summary": "Follow a fuzzy discovery hit up: the police's record behind the hit, by its match handle",
        "description": "A subject's `ref` may be a match handle from `POST /v1/discovery/fuzzy` (a hit's "
                       "`match_handles` entry). The request is then about match handles only, of one holder, and "
                       "goes to that holder alone (`holders` left out or naming it); the holder is asked about its "
                       "own record, and the records come back about the handle. A handle works only for the "
                       "system that got it, for the same partnership and purpose, until it expires and while the "
                       "holder keeps the record enrolled as it matched; otherwise 422.",
        "value": _BIBOB | {"subjects": [{"ref": "match:q5Tb2Jm0oXw8c3Vn1yFZk9Lr7aSdPe4GuHi6Cj0KvQs"}],
                           "categories": ["police_incidents"], "holders": ["politie"]}},
}

EXCHANGE_RESULT: dict[str, Any] = {
    "exchange_id": "01a23787-4c30-778c-8ded-6a98c57e0ea3", "created_at": "2026-11-25T10:00:00Z",
    "requester": "gemeente-amsterdam", "partnership": "riec-amsterdam-amstelland",
    "purpose": "bibob-integrity-check", "case_reference": "RIEC-AA-2026-117", "register_version": "2026.11.1",
    "policy_version": "wgs-policy-2026.12.9",
    "targets": [
        {"holder": "kvk", "system": "kvk-handelsregister", "outcome": "allowed", "reasons": [],
         "permitted_categories": ["company_registration", "directorships"], "removed_categories": [],
         "hit_only": False, "hit": None, "obligations": _OBLIGATIONS, "escalation_id": None,
         "escalation_decision_applied": False,
         "records": [{"record_id": "directorship-2025-002195", "record_type": "directorship",
                      "subject": "subj-fcb036a97719ffa9235ad5cc", "category": "directorships",
                      "fields": {"director": "subj-d40ecad0d949efdf7d729dd5", "role": "bestuurder",
                                 "since": "2000-09-18"}}]},
        {"holder": "belastingdienst", "system": "belastingdienst-ivs", "outcome": "allowed-narrowed",
         "reasons": [{"code": "category-not-supplied", "category": "income",
                      "message": "`belastingdienst` does not supply `income` for `bibob-integrity-check`"}],
         "permitted_categories": ["tax_debts"], "removed_categories": ["income"], "hit_only": False, "hit": None,
         "obligations": _OBLIGATIONS, "escalation_id": None, "escalation_decision_applied": False,
         "records": [{"record_id": "tax-debt-2025-002202", "record_type": "tax-debt",
                      "subject": "subj-fcb036a97719ffa9235ad5cc", "category": "tax_debts",
                      "fields": {"age_months": 14, "band": "10k-50k"}}]},
        {"holder": "fiod", "system": "fiod-ois", "outcome": "allowed", "reasons": [],
         "permitted_categories": ["ongoing_investigation"], "removed_categories": [], "hit_only": True,
         "hit": True, "records": [], "obligations": _OBLIGATIONS, "escalation_id": None,
         "escalation_decision_applied": False},
    ],
    "receipt": _RECEIPT,
}


def _replayed(reason: str | None) -> dict[str, Any]:
    """``EXCHANGE_RESULT`` without its records, each target that disclosed saying why (``reason``; None: as
    ``GET`` shows it within the 24 hours, when the records are never repeated but still kept)."""
    return EXCHANGE_RESULT | {"targets": [t | {"records": [], "records_withheld": None if t["hit_only"] else reason}
                                          for t in EXCHANGE_RESULT["targets"]]}


EXCHANGE_RESULTS: dict[str, Example] = {
    "answer": {"summary": "S1 answered: records from the KvK and the Belastingdienst, a hit from the FIOD",
               "value": EXCHANGE_RESULT},
    "replayed_expired": {
        "summary": "A retry with the same Idempotency-Key after 24 hours (`Idempotent-Replayed: true`)",
        "description": "The first answer's outcome, without its records: they are kept (encrypted) for 24 hours "
                       "only. Each target that disclosed records says so with `records_withheld: expired`, so "
                       "the empty `records` does not read as \"the holder had nothing\".",
        "value": _replayed("expired")},
    "replayed_unavailable": {
        "summary": "A retry within the 24 hours after the gateway's seal key was replaced",
        "description": "The records are kept but no longer open: the outcome is answered without them "
                       "(`records_withheld: unavailable`) rather than failing the retry.",
        "value": _replayed("unavailable")},
}
EXCHANGE_SEEN_AGAIN: dict[str, Example] = {
    "within_24_hours": {"summary": "The outcome again: never the records", "value": _replayed(None)},
    "after_24_hours": {"summary": "A keyed exchange's outcome after 24 hours: a retry would no longer get the "
                                  "records either", "value": _replayed("expired")},
}
IDEMPOTENT_REPLAYED = {"Idempotent-Replayed": {
    "description": "`true` when the answer is the one stored under the request's Idempotency-Key, given again "
                   "(nothing was asked or logged again); absent on a new exchange.",
    "schema": {"type": "string", "enum": ["true"]}}}

DISCOVERY_REQUESTS: dict[str, Example] = {
    "bibob": {"summary": "Which holders have data on the subject, for a Bibob check?",
              "value": _BIBOB | {"categories": ["company_registration", "tax_debts", "ongoing_investigation"]}},
}

DISCOVERY_RESULT: dict[str, Any] = {
    "discovery_id": "01a23787-4c9c-7a1d-9b94-a9a4aeae42b8", "partnership": "riec-amsterdam-amstelland",
    "purpose": "bibob-integrity-check", "policy_version": "wgs-policy-2026.12.9", "register_version": "2026.11.1",
    "targets": [
        {"holder": "kvk", "outcome": "hit", "reasons": []},
        {"holder": "belastingdienst", "outcome": "no-hit", "reasons": []},
        {"holder": "fiod", "outcome": "refused-by-holder", "reasons": [
            {"code": "refused-by-holder", "category": None,
             "message": "the holder refused: investigation-confidentiality"}]},
        {"holder": "politie", "outcome": "denied", "reasons": [
            {"code": "no-permitted-categories", "category": None,
             "message": "this holder supplies none of the requested categories to this requester for this purpose"}]},
    ],
    "receipt": _RECEIPT | {"exchange_id": "01a23787-4c9c-7a1d-9b94-a9a4aeae42b8"},
}


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying with the same Idempotency-Key "
                                              "(only on the in-flight and answered-meanwhile cases).",
                               "schema": {"type": "integer"}}}

def shared_problems(path: str) -> dict[int | str, dict[str, Any]]:
    """The 422 and 503 examples of ``POST /v1/exchanges`` and ``POST /v1/discovery`` (``path``)."""
    refused = ({"unknown_holder": problem(422, "unprocessable", "Unprocessable request",
                                          "unknown holder organisation(s): belastingdienstt", instance=path)}
               if path == "/v1/exchanges" else
               {"unknown_partnership": problem(422, "unprocessable", "Unprocessable request",
                                               "unknown partnership `riec-amsterdam` (register 2026.11.1)",
                                               instance=path)})
    if path == "/v1/exchanges":
        refused["match_handle_refused"] = problem(
            422, "unprocessable", "Unprocessable request", "subject 0: not a match handle of yours for this "
            "partnership and purpose, or expired; run the fuzzy discovery again", instance=path)
        refused["match_handle_withdrawn"] = problem(
            422, "unprocessable", "Unprocessable request", "subject 0: the holder has withdrawn or re-enrolled the "
            "matched record since the discovery, so its match handle no longer resolves; run the fuzzy discovery "
            "again", instance=path)
    return {
        422: {"content": problem_examples(
            invalid=problem(422, "validation-error", "Request validation failed",
                            "body.subjects.0.ref: Value error, looks like a plain identifier; send a pseudonym",
                            instance=path, errors=[{"loc": ["body", "subjects", "0", "ref"], "type": "value_error",
                                                    "msg": "Value error, looks like a plain identifier; send a "
                                                           "pseudonym"}]),
            **refused)},
        503: {"content": problem_examples(
            policy_down=problem(503, "service-unavailable", "Service unavailable",
                                "the policy engine is unavailable; the request is denied (fail closed)",
                                instance=path, outcome="denied"),
            audit_down=problem(503, "service-unavailable", "Service unavailable",
                               "the audit log could not be written; nothing was disclosed", instance=path))},
    }


def _with_examples(response: dict[str, Any], **examples: dict[str, Any]) -> dict[str, Any]:
    """``response`` (an error response with named examples, ``problem_examples``) with ``examples`` added."""
    return response | {"content": {media: body | {"examples": body["examples"] | named_examples(**examples)}
                                   for media, body in response["content"].items()}}


_EXAMPLE_ID = "01a23787-4c30-778c-8ded-6a98c57e0ea3"
_SHARED = shared_problems("/v1/exchanges")
EXCHANGE_PROBLEMS: dict[int | str, dict[str, Any]] = _SHARED | {
    409: {"headers": RETRY_AFTER, "content": problem_examples(
        key_reused=problem(409, "conflict", "Conflict", "this Idempotency-Key was used for a different request",
                           instance="/v1/exchanges"),
        in_flight=problem(409, "conflict", "Conflict", "a request with this Idempotency-Key is still being "
                          "answered; retry it shortly", instance="/v1/exchanges"),
        answers_not_stored=problem(409, "conflict", "Conflict", "the first attempt with this Idempotency-Key logged "
                                   "what its holders answered and has not stored its outcome (it is still being "
                                   "answered, or it failed); the request is not run again under this key (its "
                                   "holders would be asked twice): retry later for that attempt's answer, and if "
                                   "none comes, ask your privacy officer", instance="/v1/exchanges"))},
    500: {"content": problem_examples(outcome_not_stored=problem_of(
        OutcomeNotStored(_EXAMPLE_ID, holders_asked=True), "/v1/exchanges"))},
    503: _with_examples(_SHARED[503], outcome_not_stored=problem_of(
        OutcomeNotStored(_EXAMPLE_ID, holders_asked=False), "/v1/exchanges")),
}
