"""Settings refuse at start-up what would fail later, and say so without repeating the value.

A timeout of NaN or infinity never fires (a hung OPA server would hold every decision instead of denying it),
a URL without a scheme fails at the first request, a missing CA file at the first TLS handshake; each is a
``WGS_<FIELD>: <message>`` line for the operator, and the value itself (it may be a secret) is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings, settings_problems
from tests.unit.settings.support import refusals


@pytest.mark.parametrize("name", ["WGS_OPA_TIMEOUT_SECONDS", "WGS_CONNECTOR_TIMEOUT_SECONDS",
                                  "WGS_REVOCATION_REFRESH_SECONDS", "WGS_DB_CONNECT_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "100000"])
def test_timeouts_must_be_positive_finite_and_bounded(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    [line] = refusals(monkeypatch, **{name: value})
    assert line.startswith(f"{name}: ")


@pytest.mark.parametrize("value", ["1", "2.5"])
def test_the_database_connect_timeout_is_whole_seconds_from_two(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq counts whole seconds and waits at least 2: a value it would silently change is refused."""
    [line] = refusals(monkeypatch, WGS_DB_CONNECT_TIMEOUT_SECONDS=value)
    assert line.startswith("WGS_DB_CONNECT_TIMEOUT_SECONDS: ")


@pytest.mark.parametrize("name", ["WGS_ESCALATION_SCAN_SECONDS", "WGS_RATE_LIMIT_PER_SECOND"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_other_seconds_and_rates_must_be_finite(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    [line] = refusals(monkeypatch, **{name: value})
    assert line.startswith(f"{name}: ")


def test_the_defaults_and_good_values_are_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    for name, value in {"WGS_OPA_TIMEOUT_SECONDS": "0.5", "WGS_OPA_URL": "https://[::1]:8443/opa",
                        "WGS_OPA_CA_FILE": str(ca), "WGS_LOG_LEVEL": "warning",
                        "WGS_CONNECTOR_ENDPOINTS": '{"politie-bvh": "http://politie:9101"}',
                        "WGS_CONNECTOR_ALLOW_INSECURE_HTTP": "true",
                        "WGS_DATABASE_URL": "postgresql+psycopg://wgs:S3cr%40tPW@postgres:5432/wgs"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.log_level == "WARNING"
    assert settings.opa_timeout_seconds == 0.5
    assert Settings(_env_file=None, db_connect_timeout_seconds="2").db_connect_timeout_seconds == 2


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("WGS_LOG_LEVEL", "verbose", "unknown log level"),
    ("WGS_OPA_URL", "opa:8181", "expected http(s)://"),
    ("WGS_OPA_URL", "http://user:pw@opa:8181", "without credentials"),
    ("WGS_OPA_CA_FILE", "/nonexistent/ca.pem", "file"),
    ("WGS_CONNECTOR_ENDPOINTS", '{"politie-bvh": "politie:9101"}', "politie-bvh: expected http(s)://"),
    ("WGS_CONNECTOR_ENDPOINTS", '{"politie-bvh": "http://politie:99999"}', "politie-bvh: not a URL"),
    ("WGS_DATABASE_URL", "postgresql+psycopg//wgs:pw@postgres:5432/wgs", "not an SQLAlchemy URL"),
    ("WGS_DATABASE_URL", "postgresql+psycopg://wgs:S3cr@tPW@postgres:5432/wgs", "percent-encode '@'"),
])
def test_values_that_would_fail_later_are_refused_now(name: str, value: str, reason: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    [line] = refusals(monkeypatch, WGS_POLICY_ENGINE="opa", **{name: value})
    assert line.startswith(f"{name}: ")
    assert reason in line


@pytest.mark.parametrize("token", ["", "   ", "s3cret-token\r", "s3cret\ttoken", "s3cret-token "])
def test_an_opa_token_that_is_empty_or_no_header_value_is_refused(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``WGS_OPA_TOKEN=`` (as .env.example has it, and the gateway reads .env) sent no token at all: against an OPA
    server that asks for one every decision was a 503, against one that does not, the operator believed calls
    were authenticated. A control character (the carriage return of a token file with Windows line endings) cannot
    be sent in a header: every call failed, as "OPA server unavailable (ValueError)"; a blank around the token is
    dropped from the header, so the server compares another token than its own. Refused at start, in a line
    without the token; unset stays allowed (a server that asks none), and the embedded engine never reads it."""
    [line] = refusals(monkeypatch, WGS_POLICY_ENGINE="opa", WGS_OPA_TOKEN=token)
    assert line.startswith("WGS_OPA_TOKEN: "), line
    assert "unset" in line
    assert "s3cret" not in line
    monkeypatch.delenv("WGS_POLICY_ENGINE")
    assert Settings(_env_file=None).opa_token == token
    monkeypatch.delenv("WGS_OPA_TOKEN")
    assert Settings(_env_file=None, policy_engine="opa").opa_token is None
    assert Settings(_env_file=None, policy_engine="opa", opa_token="a+long/random~token_0.9=").opa_token


def test_the_opa_ca_file_must_exist_only_when_the_opa_engine_is_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the URL: a CA file named for an OPA server the embedded engine never talks to does not stop the
    start; with WGS_POLICY_ENGINE=opa a missing file is refused at start, not at the first decision."""
    monkeypatch.setenv("WGS_OPA_CA_FILE", "/nonexistent/ca.pem")
    assert Settings(_env_file=None).policy_engine == "embedded"
    [line] = refusals(monkeypatch, WGS_POLICY_ENGINE="opa")
    assert line == "WGS_OPA_CA_FILE: no such file"


@pytest.mark.parametrize("value", ["opa:8181", "http://user:pw@opa:8181", "http://opa:99999"])
def test_the_opa_url_is_checked_only_when_the_opa_engine_is_selected(value: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded engine (the default) never reads WGS_OPA_URL, so a stale value does not stop the start;
    with WGS_POLICY_ENGINE=opa the same value is refused, naming the variable but not the value."""
    monkeypatch.setenv("WGS_OPA_URL", value)
    assert Settings(_env_file=None).policy_engine == "embedded"
    [line] = refusals(monkeypatch, WGS_POLICY_ENGINE="opa")
    assert line.startswith("WGS_OPA_URL: expected http(s)://")
    assert value not in line
    assert "pw@" not in line


def test_connector_endpoints_share_the_http_check_and_the_opa_refusals() -> None:
    """One helper (gateway.urls.http_url) checks scheme, host and port of both; a query on a holder's base URL
    is refused now, as on the OPA URL: the holder protocol's paths were appended after it
    (``?tenant=riec/holder/v1/query``)."""
    endpoints = {"politie-bvh": "https://politie.example:9101/holder?tenant=riec"}
    with pytest.raises(ValidationError, match="a query or fragment"):
        Settings(_env_file=None, connector_endpoints=endpoints)
    with pytest.raises(ValidationError, match="expected http"):
        Settings(_env_file=None, policy_engine="opa", opa_url=endpoints["politie-bvh"])
    endpoints = {"politie-bvh": "https://politie.example:9101/holder"}
    assert Settings(_env_file=None, connector_endpoints=endpoints).connector_endpoints == endpoints


def test_a_bad_engine_name_is_the_one_problem_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusals(monkeypatch, WGS_POLICY_ENGINE="opa-server", WGS_OPA_URL="opa:8181") == [
        "WGS_POLICY_ENGINE: Input should be 'embedded' or 'opa'"]


def test_a_problem_line_never_repeats_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = refusals(monkeypatch, WGS_ESCALATION_WEBHOOKS='{"fiod": {"url": "fiod.example", "secret": "hunter2"}}',
                      WGS_DATABASE_URL="postgresql+psycopg://wgs:S3cr@tPW@postgres:5432/wgs")
    assert len(lines) == 3
    assert all(line.startswith(("WGS_ESCALATION_WEBHOOKS (fiod.", "WGS_DATABASE_URL: ")) for line in lines), lines
    text = "\n".join(lines)
    for fragment in ("hunter2", "fiod.example", "S3cr", "tPW"):
        assert fragment not in text


@pytest.mark.parametrize(("name", "value"), [("WGS_CONSOLE_PAGE_SIZE", "1"), ("WGS_CONSOLE_IDLE_TIMEOUT_SECONDS", "5"),
                                             ("WGS_CONSOLE_SESSION_SECRET", "too-short-4-a-key"),
                                             ("WGS_CONSOLE_DEFAULT_LANGUAGE", "fr")])
def test_a_console_problem_line_names_the_console_variable_and_not_the_value(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """The console's group has its own prefix: the line names the variable the operator set."""
    from gateway.console.settings import ConsoleSettings

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        ConsoleSettings(_env_file=None)
    [line] = settings_problems(refused.value, str(ConsoleSettings.model_config["env_prefix"]))
    assert line.startswith(f"{name}: "), line
    assert value not in line


def test_the_repr_and_str_of_the_settings_show_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings object ends up in log lines, tracebacks' locals and debuggers: none of them may show the
    database password, a token, a webhook's secret, the console's session key or a password in any URL."""
    from gateway.console.settings import ConsoleSettings

    secrets = {"db": "S3cr%40tPW-db", "db-decoded": "S3cr@tPW-db", "opa": "opa-token-0123456789",
               "opa-url": "opa-url-pw-42", "hook": "webhook-secret-0123456789", "hook-url": "hook-url-pw-42",
               "session": "session-secret-" + "k" * 32}
    monkeypatch.setenv("WGS_OPA_TOKEN", secrets["opa"])  # from the environment, as an operator sets it
    settings = Settings(
        _env_file=None, database_url=f"postgresql+psycopg://wgs:{secrets['db']}@postgres:5432/wgs",
        opa_url=f"http://opa:{secrets['opa-url']}@127.0.0.1:8181",
        connector_endpoints={"politie-bvh": "https://holder.internal/api"},  # with credentials: refused
        escalation_webhooks={"fiod": {"url": f"https://hook:{secrets['hook-url']}@hooks.internal/x",
                                      "secret": secrets["hook"]}})
    console = ConsoleSettings(_env_file=None, session_secret=secrets["session"])
    assert settings.effective_database_url  # cached on the object: must not show either
    shown = [repr(settings), str(settings), repr(console), str(console), repr(settings.escalation_webhooks),
             f"{settings!r} {settings}"]
    for text in shown:
        for secret in secrets.values():
            assert secret not in text, text
    # what is not secret still shows, so the repr still tells an operator what was read
    for shown_part in ("postgres:5432/wgs", "holder.internal/api", "hooks.internal/x"):
        assert shown_part in shown[0]
    # and the values themselves are unchanged for the code that uses them
    assert settings.database_url == f"postgresql+psycopg://wgs:{secrets['db']}@postgres:5432/wgs"
    assert settings.opa_token == secrets["opa"]
    assert settings.escalation_webhooks["fiod"].secret == secrets["hook"]
