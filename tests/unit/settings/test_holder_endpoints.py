"""Holder endpoints over plain ``http://`` to another machine are refused at start-up (and when a connector is
made) unless the operator says the network is trusted: every call carries the holder's bearer token and a
query's answer carries personal data. Loopback http (the demo, the tests) stays allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.http_connector import ConnectorRegistry, HttpConnector
from gateway.settings import Settings, settings_problems


async def _token(audience: str) -> str:
    return "T"


@pytest.mark.parametrize("url", ["http://politie:9101", "http://10.0.0.5/holder", "HTTP://holder.example.org",
                                 "http://user:secret@holder.example.org:8080"])
def test_plain_http_to_another_machine_is_refused_at_start_up_in_one_line(url: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGS_CONNECTOR_ENDPOINTS", f'{{"politie-bvh": "{url}"}}')
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    [line] = settings_problems(refused.value)
    assert line.startswith("WGS_CONNECTOR_ENDPOINTS: politie-bvh: plain http:// to a holder")
    assert "WGS_CONNECTOR_ALLOW_INSECURE_HTTP=true" in line
    assert "\n" not in line
    for part in ("secret", "example.org", "politie:9101"):  # the URL may hold a password: never echoed
        assert part not in line


@pytest.mark.parametrize("url", ["http://127.0.0.1:9101", "http://localhost:9101/h", "http://[::1]:9101",
                                 "https://politie.example:9101", "http://127.8.0.1"])
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    endpoints = {"politie-bvh": url}
    assert Settings(_env_file=None, connector_endpoints=endpoints).connector_endpoints == endpoints


def test_the_explicit_setting_allows_plain_http_on_a_trusted_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGS_CONNECTOR_ALLOW_INSECURE_HTTP", "true")
    monkeypatch.setenv("WGS_CONNECTOR_ENDPOINTS", '{"politie-bvh": "http://politie:9101"}')
    settings = Settings(_env_file=None)
    assert settings.connector_allow_insecure_http is True
    assert settings.connector_endpoints == {"politie-bvh": "http://politie:9101"}


async def test_a_connector_is_not_made_for_plain_http_to_another_machine() -> None:
    """The same rule where a connector is registered (code that builds one without the settings)."""
    with pytest.raises(ValueError, match=r"^politie-bvh: plain http:// to a holder") as refused:
        HttpConnector("politie-bvh", "http://user:secret@politie:9101", _token)
    assert "secret" not in str(refused.value)
    with pytest.raises(ValueError, match="plain http://"):
        ConnectorRegistry({"politie-bvh": "http://10.1.2.3"}, _token)
    async with HttpConnector("politie-bvh", "http://politie:9101", _token, allow_insecure_http=True):
        pass
    async with HttpConnector("politie-bvh", "http://127.0.0.1:9101", _token):
        pass
    registry = ConnectorRegistry({"politie-bvh": "http://politie:9101"}, _token, allow_insecure_http=True)
    assert registry.systems() == ["politie-bvh"]
    await registry.aclose()


@pytest.mark.parametrize(("url", "refusal"), [
    ("https://svc:s3cr3t-pw@holder.example.org/api", "credentials in the base URL"),
    ("https://svc@holder.example.org/api", "credentials in the base URL"),
    ("http://svc:s3cr3t-pw@127.0.0.1:9101", "credentials in the base URL"),
    ("https://holder.example.org/api?key=s3cr3t-pw", "a query or fragment"),
    ("https://holder.example.org/api?", "a query or fragment"),
    ("https://holder.example.org/api#s3cr3t-pw", "a query or fragment"),
])
def test_credentials_a_query_or_a_fragment_are_refused_at_start_up_in_one_line(
        url: str, refusal: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials beside the gateway's bearer token made aiohttp refuse every call (each holder then failed as
    the gateway's own defect); the fixed path after a query or fragment went to ``?key=.../holder/v1/query``,
    or to ``/``. Refused when the settings are read, in one line naming the system; the URL, and so the
    password or a token in its query, is never repeated."""
    monkeypatch.setenv("WGS_CONNECTOR_ENDPOINTS", f'{{"politie-bvh": "{url}"}}')
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    [line] = settings_problems(refused.value)
    assert line.startswith(f"WGS_CONNECTOR_ENDPOINTS: politie-bvh: {refusal}"), line
    assert "\n" not in line
    for part in ("s3cr3t", "svc", "example.org", "127.0.0.1", "/api"):
        assert part not in line
    with pytest.raises(ValueError, match=f"^politie-bvh: {refusal}") as not_made:  # nor is a connector made
        HttpConnector("politie-bvh", url, _token)
    assert "s3cr3t" not in str(not_made.value)
