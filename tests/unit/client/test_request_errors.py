"""A request model the partner builds from its own data refuses a wrong value without quoting it: the
message (what ends up in the partner's log) names the field and the reason only. Before, pydantic's message
repeated the value (``input_value='123456782'``) — also the BSN that ``Subject.ref`` refuses precisely so
that it reaches no log."""

from __future__ import annotations

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


def test_a_fuzzy_request_does_not_quote_what_it_refuses() -> None:
    with pytest.raises(ValidationError) as refused:
        FuzzyDiscoveryRequest.model_validate({"partnership": PERSONAL})
    assert "Jansen" not in str(refused.value)
