"""A category the vocabulary marks hit-only ("never as records") may only be supplied by a role that answers
hit/no-hit for the purpose: the register loader refuses anything else (the policy also removes such a
category from a holder answering with records; see policies/exchange_test.rego and the decision table)."""

from __future__ import annotations

import pytest
import yaml

from gateway.errors import InvalidRegister
from gateway.register.loader import parse_register
from gateway.settings import SHIPPED_REGISTER

BIBOB = ("partnerships", "riec-amsterdam-amstelland", "purposes", "bibob-integrity-check")


def _text(police_supplies: list[str], hit_only_holders: list[str]) -> str:
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    bibob = document
    for key in BIBOB:
        bibob = bibob[key]
    bibob["supplies"]["police"] = police_supplies
    bibob["hit_only_holders"] = hit_only_holders
    return str(yaml.safe_dump(document, sort_keys=False))


def test_the_shipped_register_is_accepted() -> None:
    parse_register(SHIPPED_REGISTER.read_text(), "register.yaml")


def test_hit_only_category_supplied_by_a_role_answering_records_is_refused() -> None:
    text = _text(["police_incidents", "ongoing_investigation"], ["investigation"])
    with pytest.raises(InvalidRegister) as refused:
        parse_register(text, "register.yaml")
    message = str(refused.value)
    assert "supplies.police.1" in message
    assert "`ongoing_investigation` is answered as hit/no-hit only" in message


def test_hit_only_category_supplied_by_a_hit_only_holder_is_accepted() -> None:
    register = parse_register(_text(["police_incidents", "ongoing_investigation"], ["investigation", "police"]),
                              "register.yaml")
    purpose = register.partnerships["riec-amsterdam-amstelland"].purposes["bibob-integrity-check"]
    assert purpose.hit_only_holders == ["investigation", "police"]
