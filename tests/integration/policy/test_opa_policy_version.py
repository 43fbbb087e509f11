"""An OPA server deciding with other policies than the gateway's gives no decision: deny, 503, audited, and
readiness says why. OPA reads its policy files once, when it starts (docker-compose.yml mounts ``policies/``
without ``--watch``), so after the gateway and its ``policies/`` are upgraded an OPA server that was not
restarted keeps deciding with the older rules; a stale image or bundle does the same. Such decisions are
well-formed and cite the gateway's register, and they were accepted and recorded as made by the older policy
version (only their shape was checked, see ``Decision.checked``). Over real HTTP, against the
OPA-REST-compatible test server serving the shipped policies as they would be with an older
``policy_version`` (policies/version.rego)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from gateway.policy.engine import EmbeddedPolicyEngine, OpaServerPolicyEngine, read_policy_version
from gateway.policy.errors import PolicyUnavailable
from gateway.policy.model import Decision, PolicyKind
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_opa_register_version import KINDS, REQUESTS
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app
from tests.unit.policy.test_policy_batch import REGISTER

OLDER = "wgs-policy-2026.11.1"


def _policies_of_version(directory: Path, version: str) -> Path:
    """The shipped policies (not their tests) as they would be with ``version`` as their policy version."""
    for source in POLICIES_DIR.glob("*.rego"):
        if not source.name.endswith("_test.rego"):
            shutil.copy(source, directory / source.name)
    text = (directory / "version.rego").read_text(encoding="utf-8")
    changed = re.sub(r'(?m)^policy_version := ".*"$', f'policy_version := "{version}"', text)
    assert f'\npolicy_version := "{version}"\n' in changed
    (directory / "version.rego").write_text(changed, encoding="utf-8")
    return directory


async def _decided(url: str, kind: PolicyKind, call: str) -> list[Decision]:
    engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0,
                                   policy_version=read_policy_version(POLICIES_DIR))
    try:
        if call == "decide":
            return [await engine.decide(kind, REQUESTS[0][0])]
        return await engine.decide_many(kind, [i for batch in REQUESTS[:2] for i in batch])
    finally:
        await engine.aclose()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("call", ["decide", "decide_many"])
async def test_the_gateways_own_policies_on_the_server_decide(tmp_path: Path, kind: PolicyKind, call: str) -> None:
    """The control: the same copy of the policies, of the gateway's version, decides as the shipped ones do."""
    ours = _policies_of_version(tmp_path, read_policy_version(POLICIES_DIR))
    with serve_app(create_opa_test_app(ours)) as url:
        decisions = await _decided(url, kind, call)
    assert decisions
    assert {d.policy_version for d in decisions} == {read_policy_version(POLICIES_DIR)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("call", ["decide", "decide_many"])
async def test_decisions_of_older_policies_are_refused(tmp_path: Path, kind: PolicyKind, call: str) -> None:
    with serve_app(create_opa_test_app(_policies_of_version(tmp_path, OLDER))) as url, pytest.raises(
            PolicyUnavailable, match="policy version"):
        await _decided(url, kind, call)


async def test_a_server_deciding_with_older_policies_is_not_ready(tmp_path: Path) -> None:
    with serve_app(create_opa_test_app(_policies_of_version(tmp_path, OLDER))) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        try:
            with pytest.raises(PolicyUnavailable, match="policy version"):
                await engine.check()
        finally:
            await engine.aclose()


async def test_readiness_does_not_send_the_register_again_to_a_server_of_other_policies(tmp_path: Path) -> None:
    """Sent once: before, every probe re-sent the whole register, which changes no policy."""
    server = Behaviour()
    with serve_app(create_opa_test_app(_policies_of_version(tmp_path, OLDER), server)) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        try:
            for _ in range(3):
                with pytest.raises(PolicyUnavailable, match="policy version"):
                    await engine.check()
        finally:
            await engine.aclose()
    assert server.register_pushes == 1


async def test_the_version_required_is_the_one_the_gateways_policies_decide_with(tmp_path: Path) -> None:
    engine = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER))
    try:
        decision = await engine.decide("exchange", REQUESTS[0][0])
    finally:
        await engine.aclose()
    assert read_policy_version(POLICIES_DIR) == decision.policy_version
    assert read_policy_version(_policies_of_version(tmp_path, OLDER)) == OLDER
    (tmp_path / "version.rego").unlink()
    with pytest.raises(PolicyUnavailable, match="no policy version"):
        read_policy_version(tmp_path)


def test_an_exchange_decided_by_older_policies_is_denied_with_503_audited_and_readiness_says_why(
        tmp_path: Path) -> None:
    from tests.scenarios.test_exchange_api import _body, _policy_decisions
    from tests.stack import running_stack

    (tmp_path / "older").mkdir()
    older = _policies_of_version(tmp_path / "older", OLDER)
    with serve_app(create_opa_test_app(older)) as opa_url, running_stack(
            tmp_path / "stack", settings_overrides={"policy_engine": "opa", "opa_url": opa_url,
                                                    "opa_timeout_seconds": 5.0}) as s:
        response = s.post("gemeente-amsterdam-vth", "/v1/exchanges", _body(s))
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["outcome"] == "denied"
        assert "police_incidents" not in response.text
        assert [(e["decision"], e["reasons"]) for e in _policy_decisions(s)] == [
            ("deny", ["policy-engine-unavailable"])]
        assert OLDER not in str(_policy_decisions(s))  # nothing recorded as decided by the older rules
        ready = httpx.get(f"{s.gateway_url}/health/ready")
    assert ready.status_code == 503
    assert "policy version" in ready.json()["checks"]["policy_engine"]
