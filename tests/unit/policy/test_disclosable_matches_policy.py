"""``Register.disclosable`` is the policy's ``base`` (``wgs.index.holder_facts``): what a holder may ever
disclose to a requester for a purpose (rules 3 and 4). The escalation service refuses an allow beyond it
before the policy is asked, so the two must agree for every holder, requester and purpose of the shipped
register; a register or policy change that made them differ would refuse decisions the policy honours, or
take decisions no re-run carries out."""

from __future__ import annotations

import json

from gateway.register.loader import load_register
from gateway.settings import POLICIES_DIR, SHIPPED_REGISTER
from tests.rego_harness import engine_with_tests

REGISTER = load_register(SHIPPED_REGISTER)[0]


def _policy_base(engine: object, partnership: str, purpose: str, role: str, holder: str) -> set[str]:
    query = f"x := data.wgs.index.holder_facts({json.dumps(partnership)}, {json.dumps(purpose)}, " \
            f"{json.dumps(role)}, {json.dumps(holder)}).base"
    result = engine.eval_query(query)  # type: ignore[attr-defined]
    return set(result["result"][0]["bindings"]["x"])


def test_disclosable_is_the_policys_base_for_every_pair_of_the_shipped_register() -> None:
    engine = engine_with_tests([POLICIES_DIR], REGISTER.model_dump(mode="json"))
    compared = 0
    for pid, partnership in REGISTER.partnerships.items():
        for purpose_id in partnership.purposes:
            for requester in partnership.participants:
                for holder in partnership.participants:
                    expected = _policy_base(engine, pid, purpose_id, requester.role, holder.organisation)
                    assert REGISTER.disclosable(pid, purpose_id, requester.organisation, holder.organisation) \
                        == expected, (pid, purpose_id, requester.organisation, holder.organisation)
                    compared += 1
    assert compared > 100
    # The case the escalation service refuses: income is the tax office's to give, not the municipality's to get.
    assert REGISTER.disclosable("riec-amsterdam-amstelland", "unexplained-wealth", "gemeente-amsterdam",
                                "belastingdienst") == {"assets"}


def test_nothing_is_disclosable_between_organisations_or_for_a_purpose_the_register_does_not_know() -> None:
    riec = "riec-amsterdam-amstelland"
    assert REGISTER.disclosable(riec, "bibob-integrity-check", "gemeente-amsterdam", "politie") == {"police_incidents"}
    assert REGISTER.disclosable(riec, "bibob-integrity-check", "abn-amro", "politie") == set()
    assert REGISTER.disclosable(riec, "bibob-integrity-check", "gemeente-amsterdam", "abn-amro") == set()
    assert REGISTER.disclosable(riec, "no-such-purpose", "gemeente-amsterdam", "politie") == set()
    assert REGISTER.disclosable("no-such-partnership", "bibob-integrity-check", "gemeente-amsterdam",
                                "politie") == set()
