"""A request model the partner builds from its own data refuses a wrong value without quoting it: the
message (what ends up in the partner's log) names the field and the reason only. Before, pydantic's message
repeated the value (``input_value='123456782'``) — also the BSN that ``Subject.ref`` refuses precisely so
that it reaches no log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from gateway.client.fuzzy import FuzzyDiscoveryRequest
from gateway.client.models import DiscoveryRequest, ExchangeRequest

BSN = "123456782"
PERSONAL = "Jansen, Kerkstraat 12"
REQUEST: dict[str, Any] = {
    "partnership": "riec-aa", "purpose": "bibob-check", "legal_basis": "x", "case_reference": "C-1",
    "signal": {"type": "bibob-application", "reference": "S-1"}, "subjects": [{"ref": "subj-12345678a"}],
    "categories": ["company_registration"]}


@pytest.mark.parametrize(("model", "changes", "where"), [
    (ExchangeRequest, {"subjects": [{"ref": BSN}]}, "subjects.0.ref"),
    (DiscoveryRequest, {"subjects": [{"ref": BSN}]}, "subjects.0.ref"),
    (ExchangeRequest, {"case_reference": PERSONAL}, "case_reference"),
    (ExchangeRequest, {"provide": [{"subject": "subj-12345678a", "category": "tax_compliance",
                                    "fields": PERSONAL}]}, "provide.0.fields"),
    (ExchangeRequest, {"signal": {"type": "bibob-application", "reference": "S-1", "name": PERSONAL}},
     "signal.name"),
])
def test_a_refused_value_is_named_by_its_field_not_quoted(model: type[BaseModel], changes: dict[str, Any],
                                                          where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(REQUEST | changes)
    said = str(refused.value)
    assert where in said
    assert BSN not in said
    assert "Jansen" not in said


@pytest.mark.parametrize("written", ["1234.56.782", "123-456-782", "1234-56-782", "123_456_782", "123:456:782"])
@pytest.mark.parametrize(("model", "subject", "where"), [
    (ExchangeRequest, lambda ref: {"subjects": [{"ref": ref}]}, "subjects.0.ref"),
    (DiscoveryRequest, lambda ref: {"subjects": [{"ref": ref}]}, "subjects.0.ref"),
    (ExchangeRequest, lambda ref: {"provide": [{"subject": ref, "category": "tax_compliance", "fields": {}}]},
     "provide.0.subject"),
])
def test_a_number_written_with_separators_is_no_pseudonym_either(
        model: type[BaseModel], subject: Callable[[str], dict[str, Any]], where: str, written: str) -> None:
    """A BSN as people write it (dots, dashes) fits the pattern of a pseudonym; taken as one, it went to the
    holders and into the audit log's entry of the request (the log's own guard knows only ``1234.56.782``)."""
    with pytest.raises(ValidationError) as refused:
        model.model_validate(REQUEST | subject(written))
    said = str(refused.value)
    assert where in said
    assert "looks like a plain identifier" in said
    assert written not in said


def test_a_pseudonym_and_a_match_handle_are_still_subjects() -> None:
    own = "bsn.v1.7MBkJobmZV_46llfcJZuexFPETFFPxtXpePNA4QZfGs"
    handle = "match:q5Tb2Jm0oXw8c3Vn1yFZk9Lr7aSdPe4GuHi6Cj0KvQs"
    request = ExchangeRequest.model_validate(REQUEST | {"subjects": [{"ref": own}, {"ref": handle}], "provide": [
        {"subject": own, "category": "tax_compliance", "fields": {}}]})
    assert [s.ref for s in request.subjects] == [own, handle]


def test_a_fuzzy_request_does_not_quote_what_it_refuses() -> None:
    with pytest.raises(ValidationError) as refused:
        FuzzyDiscoveryRequest.model_validate({"partnership": PERSONAL})
    assert "Jansen" not in str(refused.value)
