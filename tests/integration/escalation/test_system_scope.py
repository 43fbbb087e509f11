"""A partner system sees, objects to and re-runs the cases of its organisation only in the partnerships the
register lists it in — where the policy lets it request (rule 1: ``input.request.requester.system in
p.systems``). It used to see every case of its organisation in every partnership: a system the register gave
the police for the FEC read the RIEC's cases of the police, with their history and comments, opened
objections against the RIEC exchanges of the police's other system, and had a RIEC decision reserved for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from escalation import cases as case_store
from escalation.states import Action
from gateway.client.models import Outcome
from gateway.db.engine import transaction
from gateway.escalations.setup import escalation_service
from gateway.settings import SHIPPED_REGISTER, Settings
from tests.auth_helpers import bearer, system_token
from tests.integration.escalation.test_api import MOTIVATION, Env, _rerun_body, running_env, target

FEC_SYSTEM = "politie-fec"  # the police's system for the FEC only; politie-bvh acts in the RIEC


@pytest.fixture
def env(tmp_path: Path, sqlite_db_url: str) -> Iterator[Env]:
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    document["version"] = f"{document['version']}-politie-fec"
    document["organisations"]["politie"]["systems"].append(FEC_SYSTEM)
    for participant in document["partnerships"]["fec"]["participants"]:
        if participant["organisation"] == "politie":
            participant["systems"] = [FEC_SYSTEM]
    register = tmp_path / "register.yaml"
    register.write_text(yaml.safe_dump(document, sort_keys=False))
    settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True, register_file=register)
    with running_env(tmp_path, sqlite_db_url, settings) as the_env:
        yield the_env


def _decided_for_politie(env: Env) -> case_store.Case:
    """A RIEC case about a request of the police (to the KvK), decided allow at tier 1 in the store."""
    case_id = env.open_case(requester="politie", holder="kvk", purpose="unexplained-wealth",
                            categories=("directorships",))
    service = escalation_service(env.container)
    actor = case_store.Actor("kvk", "set-up")
    with transaction(env.container.sessions) as session:
        case_store.act(session, case_id, 1, Action.START_REVIEW, actor, now=env.clock.now(),
                       deadlines=service.deadlines, timezone=service.timezone)
        return case_store.decide(session, case_id, 2, [actor], MOTIVATION, outcome="allow",
                                 permitted_categories=["directorships"], now=env.clock.now(),
                                 deadlines=service.deadlines, timezone=service.timezone)


def test_a_system_sees_acts_on_and_reruns_its_organisations_cases_only_where_the_register_lists_it(env: Env) -> None:
    fec = bearer(system_token(env.client, env.container, FEC_SYSTEM, ["exchange"]))
    riec_case = env.open_case()  # gemeente-amsterdam against politie, in the RIEC
    fec_case = env.open_case(requester="fiod", holder="politie", partnership="fec",
                             purpose="money-laundering-taskforce", categories=("police_incidents",))

    listed = {c["id"] for c in env.client.get("/v1/escalations", headers=fec).json()["cases"]}
    assert (riec_case in listed, fec_case in listed) == (False, True)
    refused = env.client.get(f"/v1/escalations/{riec_case}", headers=fec)
    assert refused.status_code == 404, refused.text
    assert env.client.get(f"/v1/escalations/{fec_case}", headers=fec).status_code == 200
    assert env.detail("politie-bvh", riec_case)["id"] == riec_case  # the RIEC's system of the police does
    withdrawn = env.client.post(f"/v1/escalations/{riec_case}/withdraw", headers=fec,
                                json={"expected_version": 1, "motivation": "no longer needed"})
    assert withdrawn.status_code == 404, withdrawn.text

    exchange_id = env.insert_exchange([target("kvk", "kvk-handelsregister", Outcome.DENIED, [])],
                                      requester="politie", system="politie-bvh", purpose="unexplained-wealth")
    objection = {"exchange_id": exchange_id, "holder": "kvk", "motivation": "The legal basis covers this."}
    assert env.client.post("/v1/escalations", headers=fec, json=objection).status_code == 404
    assert [e for e in env.audit_events() if e["exchange_id"] == exchange_id] == []  # nothing opened, nothing logged
    assert env.case(riec_case).version == 1

    decided = _decided_for_politie(env)
    body = _rerun_body(decided.decision_id) | {"purpose": "unexplained-wealth", "holders": ["kvk"],
                                                 "categories": ["directorships"]}
    rerun = env.client.post("/v1/exchanges", headers=fec, json=body)
    assert rerun.status_code == 422, rerun.text
    assert env.case(decided.id).rerun_claim is None
    assert env.post("politie-bvh", "/v1/escalations", objection).status_code == 201
