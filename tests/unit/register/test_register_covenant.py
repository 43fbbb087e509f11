"""A private participant (a bank under the FEC covenant) gets police, tax and prosecution data as hit/no-hit
only: the loader refuses a register that lets its role receive such records, with one line naming the
purpose, the participant and the category (the policy holds the same line for any register data:
tests/integration/policy/test_decision_table.py, policies/exchange_test.rego)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from gateway.errors import InvalidRegister
from gateway.register.covenant import PUBLIC_ONLY_HOLDER_ROLES
from gateway.register.loader import load_register, parse_register
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER
from tests.rego_harness import engine_with_tests

Edit = Callable[[dict[str, Any]], None]


def _text(edit: Edit) -> str:
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    edit(document)
    return str(yaml.safe_dump(document, sort_keys=False))


def _fec(document: dict[str, Any], purpose: str) -> dict[str, Any]:
    return dict(document["partnerships"]["fec"]["purposes"][purpose])


def _police_answers_the_bank_with_records(document: dict[str, Any]) -> None:
    check = document["partnerships"]["fec"]["purposes"]["taskforce-subject-check"]
    check["supplies"]["police"] = ["police_incidents"]
    check["receives"]["bank"] = ["ongoing_investigation", "police_incidents"]
    check["hit_only_holders"] = ["investigation"]


def _police_answers_the_bank_hit_no_hit(document: dict[str, Any]) -> None:
    check = document["partnerships"]["fec"]["purposes"]["taskforce-subject-check"]
    check["supplies"]["police"] = ["ongoing_investigation", "police_incidents"]
    check["receives"]["bank"] = ["ongoing_investigation", "police_incidents"]


def _bank_may_receive_income_from_tax(document: dict[str, Any]) -> None:
    document["partnerships"]["fec"]["purposes"]["money-laundering-taskforce"]["receives"]["bank"] = ["income"]


def _tax_hands_the_bank_its_records(document: dict[str, Any]) -> None:
    """The tax office, a hit/no-hit holder of the purpose, also asks the bank and hands it tax compliance
    with the request: records all the same."""
    purpose = document["partnerships"]["fec"]["purposes"]["taskforce-subject-check"]
    purpose["requesters"] = ["bank", "tax"]
    purpose["supplies"]["tax"] = ["tax_compliance"]
    purpose["supplies"]["bank"] = ["bank_accounts"]
    purpose["receives"]["tax"] = ["bank_accounts"]
    purpose["receives"]["bank"] = ["ongoing_investigation", "tax_compliance"]
    purpose["hit_only_holders"] = ["investigation", "police", "tax"]


def _prosecution_joins_and_gives_convictions(document: dict[str, Any]) -> None:
    fec = document["partnerships"]["fec"]
    fec["participants"].insert(0, {"organisation": "om-amsterdam", "role": "prosecution", "systems": ["om-compas"]})
    fec["purposes"]["taskforce-subject-check"]["supplies"]["prosecution"] = ["convictions"]
    fec["purposes"]["taskforce-subject-check"]["receives"]["bank"] = ["ongoing_investigation", "convictions"]


@pytest.mark.parametrize(("edit", "purpose", "category", "holders"), [
    (_police_answers_the_bank_with_records, "taskforce-subject-check", "police_incidents", "`police`"),
    (_bank_may_receive_income_from_tax, "money-laundering-taskforce", "income", "`tax`"),
    (_tax_hands_the_bank_its_records, "taskforce-subject-check", "tax_compliance", "`tax`"),
    (_prosecution_joins_and_gives_convictions, "taskforce-subject-check", "convictions", "`prosecution`"),
], ids=["police-records", "tax-income", "tax-provides", "prosecution"])
def test_a_private_participant_receiving_police_tax_or_prosecution_records_is_refused(
        edit: Edit, purpose: str, category: str, holders: str) -> None:
    text = _text(edit)
    with pytest.raises(InvalidRegister) as refused:
        parse_register(text, "register.yaml")
    problems = refused.value.extra["problems"]
    assert {p["reason"].split(" (role")[0] for p in problems} == {
        "private participant `abn-amro`", "private participant `rabobank`"}, problems
    receives = _fec(yaml.safe_load(text), purpose)["receives"]["bank"]
    for problem in problems:
        assert problem["path"] == f"partnerships.fec.purposes.{purpose}.receives.bank.{receives.index(category)}"
        assert f"would receive `{category}` from {holders} as records for `{purpose}`" in problem["reason"]
        assert "hit/no-hit only" in problem["reason"]
        assert text.splitlines()[problem["line"] - 1].strip() == f"- {category}"  # its line in the file


def test_a_hit_no_hit_answer_from_the_police_to_a_bank_is_accepted() -> None:
    register = parse_register(_text(_police_answers_the_bank_hit_no_hit), "register.yaml")
    assert register.partnerships["fec"].purposes["taskforce-subject-check"].receives["bank"] == [
        "ongoing_investigation", "police_incidents"]


def test_the_same_records_to_a_public_participant_in_the_role_are_accepted() -> None:
    """What counts is the participant's sector: with both banks public, the records are no covenant matter."""
    def public_banks(document: dict[str, Any]) -> None:
        _police_answers_the_bank_with_records(document)
        for bank in ("abn-amro", "rabobank"):
            document["organisations"][bank]["sector"] = "public"

    register = parse_register(_text(public_banks), "register.yaml")
    assert "police_incidents" in register.partnerships["fec"].purposes["taskforce-subject-check"].receives["bank"]


def test_records_from_other_holders_to_a_bank_are_accepted() -> None:
    """Only police, tax and prosecution data is barred: what a registry supplies, a bank may receive."""
    def registry_gives_directorships(document: dict[str, Any]) -> None:
        fec = document["partnerships"]["fec"]
        fec["participants"].insert(0, {"organisation": "kvk", "role": "registry", "systems": ["kvk-handelsregister"]})
        check = fec["purposes"]["taskforce-subject-check"]
        check["supplies"]["registry"] = ["directorships"]
        check["receives"]["bank"] = ["ongoing_investigation", "directorships"]

    register = parse_register(_text(registry_gives_directorships), "register.yaml")
    assert "directorships" in register.partnerships["fec"].purposes["taskforce-subject-check"].receives["bank"]


def test_the_policy_bars_the_same_holder_roles() -> None:
    """One list on each side (the loader's and the policy's): they must be the same."""
    engine = engine_with_tests([POLICIES_DIR], load_register(SHIPPED_REGISTER)[0].model_dump(mode="json"))
    result = engine.eval_query("x := data.wgs.index.public_only_holder_roles")
    assert set(result["result"][0]["bindings"]["x"]) == PUBLIC_ONLY_HOLDER_ROLES == {"police", "tax", "prosecution"}
