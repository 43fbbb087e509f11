"""Settings whose holder calls could outlast the lease on an Idempotency-Key are refused at start-up.

The lease is two minutes (``gateway.exchange.lease``); the settings allowed 45 s x 3 attempts = 135 s (up to
300 s x 6; a timeout is now at most 90 s, and timeout and retries together must fit). A client retry during
such a call took the key over as abandoned and asked the holders again under new request ids: they disclosed
twice. The re-run's reservation of an escalation decision has the same lease, and is taken before the policy
decisions, so the OPA server's timeout counts too."""

from __future__ import annotations

import pytest

from gateway.exchange.lease import CLAIM_ABANDONED_AFTER, LEASE_MARGIN, longest_leased_work
from gateway.settings import Settings
from tests.unit.settings.support import refusals


@pytest.mark.parametrize(("env", "seconds"), [
    ({"WGS_CONNECTOR_TIMEOUT_SECONDS": "45"}, "135.2"),  # the reviewer's case: 45 s x 3 attempts
    ({"WGS_CONNECTOR_TIMEOUT_SECONDS": "90", "WGS_CONNECTOR_RETRIES": "5"}, "541.5"),
    ({"WGS_CONNECTOR_TIMEOUT_SECONDS": "30", "WGS_CONNECTOR_RETRIES": "2"}, "90.2"),  # just past: backoff counts
    ({"WGS_CONNECTOR_TIMEOUT_SECONDS": "29", "WGS_POLICY_ENGINE": "opa", "WGS_OPA_TIMEOUT_SECONDS": "2"}, "93.2"),
])
def test_holder_calls_that_could_outlast_the_lease_are_refused_in_one_line(
        env: dict[str, str], seconds: str, monkeypatch: pytest.MonkeyPatch) -> None:
    [line] = refusals(monkeypatch, **env)
    assert line.startswith("WGS_CONNECTOR_RETRIES: WGS_CONNECTOR_TIMEOUT_SECONDS * (WGS_CONNECTOR_RETRIES + 1)"), line
    assert f"comes to {seconds} s, more than the 90 s allowed" in line
    assert "120 s lease on its Idempotency-Key" in line
    assert ("WGS_OPA_TIMEOUT_SECONDS" in line) == ("WGS_POLICY_ENGINE" in env)
    assert "\n" not in line


@pytest.mark.parametrize("env", [
    {},  # the defaults: 5 s x 3 attempts
    {"WGS_CONNECTOR_TIMEOUT_SECONDS": "29", "WGS_CONNECTOR_RETRIES": "2"},
    {"WGS_CONNECTOR_TIMEOUT_SECONDS": "14", "WGS_CONNECTOR_RETRIES": "5"},
    {"WGS_CONNECTOR_TIMEOUT_SECONDS": "29", "WGS_POLICY_ENGINE": "opa", "WGS_OPA_TIMEOUT_SECONDS": "0.5"},
    # the OPA server's timeout counts only when that engine is used
    {"WGS_CONNECTOR_TIMEOUT_SECONDS": "29", "WGS_OPA_TIMEOUT_SECONDS": "60"},
])
def test_holder_calls_well_inside_the_lease_are_accepted(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    longest = longest_leased_work(settings.connector_timeout_seconds, settings.connector_retries,
                                  settings.opa_timeout_seconds if settings.policy_engine == "opa" else None)
    assert longest <= (CLAIM_ABANDONED_AFTER - LEASE_MARGIN).total_seconds()


def test_a_timeout_refused_on_its_own_is_the_one_problem_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusals(monkeypatch, WGS_CONNECTOR_TIMEOUT_SECONDS="nan") == [
        "WGS_CONNECTOR_TIMEOUT_SECONDS: Input should be a finite number"]
