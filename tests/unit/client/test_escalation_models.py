"""The client's escalation answers (``gateway.client.escalations``) have the OpenAPI document's names: the same
classes and fields as the gateway's own response models, which the document is made from — a field renamed on
one side only would otherwise pass every test that builds both from the same dictionary."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from gateway.client import escalations as client_side
from gateway.escalations import models as gateway_side


@pytest.mark.parametrize("name", ["CaseView", "CaseDetail", "FeedItem", "HistoryItem", "CommentView"])
def test_the_client_reads_the_fields_the_gateway_sends(name: str) -> None:
    ours: type[BaseModel] = getattr(client_side, name)
    theirs: type[BaseModel] = getattr(gateway_side, name)
    assert list(ours.model_fields) == list(theirs.model_fields)
    required = {field for field, info in theirs.model_fields.items() if info.is_required()}
    assert {field for field, info in ours.model_fields.items() if info.is_required()} <= required, (
        "nothing the gateway may leave out is required here")
