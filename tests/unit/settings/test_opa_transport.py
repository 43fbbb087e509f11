"""An OPA server over plain ``http://`` on another machine is refused at start-up unless the operator says the
network is trusted (``WGS_OPA_ALLOW_INSECURE_HTTP``), as holder endpoints are: every call carries the bearer
token that lets the gateway change the register on that server, and whoever is on the path can read the
register and the requests' facts, and answer ``allow`` in the server's place. Loopback http (a sidecar, the
tests) and https stay allowed, and the embedded engine never reads the URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import Settings, settings_problems


@pytest.mark.parametrize("url", ["http://opa:8181", "http://10.0.0.7:8181/opa", "HTTP://opa.example.org",
                                 "http://[2001:db8::7]:8181"])
def test_plain_http_to_an_opa_server_on_another_machine_is_refused_in_one_line(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGS_POLICY_ENGINE", "opa")
    monkeypatch.setenv("WGS_OPA_URL", url)
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    [line] = settings_problems(refused.value)
    assert line.startswith("WGS_OPA_URL: plain http:// to an OPA server that is not on this machine"), line
    assert "WGS_OPA_ALLOW_INSECURE_HTTP=true" in line
    assert "\n" not in line
    for part in ("opa:8181", "10.0.0.7", "example.org", "2001:db8"):  # the value is never repeated
        assert part not in line


@pytest.mark.parametrize("url", ["http://127.0.0.1:8181", "http://localhost:8181", "http://[::1]:8181/opa",
                                 "https://opa.example.org:8443"])
def test_https_and_loopback_http_are_accepted_without_the_opt_in(url: str) -> None:
    settings = Settings(_env_file=None, policy_engine="opa", opa_url=url)
    assert (settings.opa_url, settings.opa_allow_insecure_http) == (url, False)


def test_the_explicit_setting_allows_plain_http_on_a_trusted_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """And the embedded engine, which never reads the URL, is not refused over it without the opt-in."""
    monkeypatch.setenv("WGS_OPA_URL", "http://opa:8181")
    embedded = Settings(_env_file=None)
    assert (embedded.policy_engine, embedded.opa_allow_insecure_http) == ("embedded", False)
    monkeypatch.setenv("WGS_POLICY_ENGINE", "opa")
    monkeypatch.setenv("WGS_OPA_ALLOW_INSECURE_HTTP", "true")
    settings = Settings(_env_file=None)
    assert settings.opa_allow_insecure_http is True
    assert settings.opa_url == "http://opa:8181"
