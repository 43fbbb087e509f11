"""An OPA server shared by gateways of different register versions holds one ``data.register``, whichever
was pushed last: no decision may be made under another gateway's register and recorded under this one's
(a review finding). Over real HTTP, against the OPA-REST-compatible test server: each gateway's decisions
are those its own register gives, also while another pushes its own in between; and when another gateway
pushes over every push (contention), the decision is a denial, after one re-push per decision call."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.engine import EmbeddedPolicyEngine, OpaServerPolicyEngine
from gateway.policy.errors import MalformedDecision, PolicyUnavailable
from gateway.policy.model import Decision, PolicyKind
from gateway.register.service import register_digest
from gateway.settings import POLICIES_DIR
from tests.integration.policy.test_decision_answers_its_request import ALLOWED, _stub_policies
from tests.integration.policy.test_decision_table import MUNICIPALITY, _input
from tests.opa_test_server import Behaviour, create_opa_test_app
from tests.servers import serve_app
from tests.unit.policy.test_policy_batch import REGISTER, requests


def _rival_register() -> dict[str, Any]:
    """Another gateway's register: another version, under which every partnership is retired (it denies
    everything), so a decision made under it differs from ours in its outcome, not only its version."""
    rival = copy.deepcopy(REGISTER)
    rival["version"] = f"{REGISTER['version']}-rival"
    for partnership in rival["partnerships"].values():
        partnership["status"] = "retired"
    return rival


RIVAL = _rival_register()
REQUESTS = requests(seed=5, count=6)
KINDS: tuple[PolicyKind, ...] = ("exchange", "discovery")


def _same_version_rival() -> dict[str, Any]:
    """Another gateway's register of the same version string and other content (each gateway records its
    versions in its own database, so neither refuses the other's): told apart only by its digest."""
    return RIVAL | {"version": REGISTER["version"]}


SAME_VERSION = _same_version_rival()


@pytest.mark.parametrize("rival_register", [RIVAL, SAME_VERSION], ids=["another-version", "same-version-other-content"])
async def test_two_gateways_sharing_one_server_each_decide_under_their_own_register(
        rival_register: dict[str, Any]) -> None:
    with serve_app(create_opa_test_app(POLICIES_DIR)) as url:
        ours = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        theirs = OpaServerPolicyEngine(url, rival_register, register_digest(rival_register), timeout=5.0)
        expected = EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, register_digest(REGISTER))
        rival = EmbeddedPolicyEngine(POLICIES_DIR, rival_register, register_digest(rival_register))
        allowed = 0
        try:
            for inputs in REQUESTS:
                for kind in KINDS:
                    # the other gateway pushes its register before each of ours decides, and the other way round
                    wanted = await expected.decide_many(kind, inputs)
                    assert await ours.decide_many(kind, inputs) == wanted
                    assert await theirs.decide_many(kind, inputs) == await rival.decide_many(kind, inputs)
                    assert await ours.decide(kind, inputs[0]) == wanted[0]
                    assert await theirs.decide(kind, inputs[0]) == (await rival.decide_many(kind, inputs[:1]))[0]
                    assert {d.register_sha256 for d in wanted} == {register_digest(REGISTER)}
                    allowed += sum(d.allow for d in wanted)
            assert allowed > 0  # under the rival register every decision is a denial: these differ
            await ours.check()  # ready: the register is pushed again, the server decides under it
            assert (await ours.decide_many("exchange", REQUESTS[0])) == await expected.decide_many(
                "exchange", REQUESTS[0])
        finally:
            for engine in (ours, theirs, expected, rival):
                await engine.aclose()


# Another gateway pushes its register over every push of ours: of another version (pushed by an older gateway,
# without a digest), or of our version string with other content (and its own digest).
OVERWRITING = {"another-version": RIVAL,
               "same-version-other-content": SAME_VERSION | {"sha256": register_digest(SAME_VERSION)}}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rival", sorted(OVERWRITING))
async def test_a_server_that_keeps_deciding_under_another_register_gives_no_decision(kind: PolicyKind,
                                                                                    rival: str) -> None:
    behaviour = Behaviour(rival_register=OVERWRITING[rival])
    with serve_app(create_opa_test_app(POLICIES_DIR, behaviour)) as url:
        engine = OpaServerPolicyEngine(url, REGISTER, register_digest(REGISTER), timeout=5.0)
        try:
            with pytest.raises(PolicyUnavailable, match="another register"):
                await engine.decide(kind, REQUESTS[0][0])
            assert behaviour.register_pushes == 2  # the first push and one re-push: bounded
            inputs = [i for batch in REQUESTS for i in batch]  # several evaluations: one re-push for them all
            with pytest.raises(PolicyUnavailable, match="another register"):
                await engine.decide_many(kind, inputs)
            assert behaviour.register_pushes == 3
            with pytest.raises(PolicyUnavailable, match="another register"):
                await engine.check()
        finally:
            await engine.aclose()


@pytest.mark.parametrize("digest", ["", " ", "ab" * 31, "AB" * 32, "ab" * 32 + "\n"],
                         ids=["empty", "blank", "short", "upper-case", "trailing-newline"])
async def test_an_engine_is_given_its_register_by_its_digest(digest: str) -> None:
    """The register's digest is given by whoever installs the engine (the one the gateway records): one
    that is no SHA-256 is refused when the engine is made. A blank one would match the blank digest the
    policies cite for a register pushed without one (an older gateway's) and accept its decisions."""
    with pytest.raises(ValueError, match="SHA-256"):
        OpaServerPolicyEngine("http://127.0.0.1:9", REGISTER, digest)
    with pytest.raises(ValueError, match="SHA-256"):
        EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, digest)


async def test_decisions_cite_the_digest_the_engine_was_given() -> None:
    """The engine loads the digest it is given as ``data.register.sha256`` and takes only decisions citing it:
    it does not compute one of its own (the gateway records the register's digest, ``RegisterService``)."""
    given = "0f" * 32
    with serve_app(create_opa_test_app(POLICIES_DIR)) as url:
        engines = (EmbeddedPolicyEngine(POLICIES_DIR, REGISTER, given),
                   OpaServerPolicyEngine(url, REGISTER, given, timeout=5.0))
        try:
            for engine in engines:
                decided = await engine.decide_many("exchange", REQUESTS[0])
                assert {d.register_sha256 for d in decided} == {given}
                assert (await engine.decide("discovery", REQUESTS[0][0])).register_sha256 == given
        finally:
            for engine in engines:
                await engine.aclose()


async def test_the_embedded_engine_refuses_a_decision_citing_another_register(tmp_path: Path) -> None:
    """The embedded engine loads only its own register, so only a policy defect cites another: refused too."""
    policies = _stub_policies(tmp_path, ALLOWED | {"register_sha256": register_digest(RIVAL)})
    engine = EmbeddedPolicyEngine(policies, REGISTER, register_digest(REGISTER))
    asked = _input(MUNICIPALITY, "politie", ["police_incidents"])
    try:
        with pytest.raises(MalformedDecision, match="another register"):
            await engine.decide("exchange", asked)
        with pytest.raises(MalformedDecision, match="another register"):
            await engine.decide_many("exchange", [asked])
    finally:
        await engine.aclose()
    assert (await _accepted(tmp_path / "ours", ALLOWED)).register_sha256 == register_digest(REGISTER)


async def _accepted(directory: Path, decision: dict[str, Any]) -> Decision:
    directory.mkdir()
    engine = EmbeddedPolicyEngine(_stub_policies(directory, decision), REGISTER, register_digest(REGISTER))
    try:
        return await engine.decide("exchange", _input(MUNICIPALITY, "politie", ["police_incidents"]))
    finally:
        await engine.aclose()
