"""The policy engine is installed with the register *and the digest the gateway recorded for it*
(``RegisterService.digest``): the engine no longer computes a digest of its own, so the digest its decisions
must cite is the one the exchange and the audit log record, whatever way it was computed."""

from __future__ import annotations

from gateway.container import Container
from gateway.exchange.setup import install_policy
from gateway.register.loader import load_register
from gateway.register.service import RegisterService
from tests.integration.policy.test_decision_table import MUNICIPALITY, _input

RECORDED = "0f" * 32  # not the register's computed digest: only the one handed over can be cited


async def test_the_installed_engine_decides_under_the_recorded_digest(container: Container) -> None:
    register, _ = load_register(container.settings.register_file)
    container.services["register"] = RegisterService(register, RECORDED)
    engine = install_policy(container)
    try:
        asked = _input(MUNICIPALITY, "politie", ["police_incidents"])
        decision = await engine.decide("exchange", asked)
        assert decision.allow  # a decision the policies made, citing the digest they were given
        assert decision.register_sha256 == RECORDED
        assert {d.register_sha256 for d in await engine.decide_many("discovery", [asked])} == {RECORDED}
    finally:
        await engine.aclose()
