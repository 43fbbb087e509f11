"""Certificate-bound tokens through ``wgs-gateway serve`` (a real uvicorn process, the entry point
``gateway.asgi``) behind a proxy on this machine that also sets ``X-Forwarded-For``: the header is believed
because the proxy *connected*, although the app sees the forwarded partner's address as the caller's. Run with
uvicorn's own proxy handling (which replaces the address before the app sees it), a bound client would get no
token here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx

import gateway
from gateway.auth.access_changes import set_certificate_bound
from gateway.auth.jose_segments import decode_segment
from gateway.demo import _wait
from tests.auth_helpers import bearer, client_assertion, register_client, token_form
from tests.integration.auth.test_certificate_binding import PARTNER_PEM, PARTNER_THUMBPRINT
from tests.reliability.gateways import prepared_container

START_TIMEOUT = 120
SYSTEM = "politie-bvh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_served_behind_a_forwarding_proxy_the_certificate_header_is_believed_from_the_proxy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    binding = {"client_cert_header": "X-Client-Cert", "client_cert_proxies": "127.0.0.1"}
    container = prepared_container(tmp_path, url, **binding)
    try:
        keys = register_client(container, SYSTEM, ["register:read"])
        assert set_certificate_bound(container.settings, container.engine, SYSTEM, True)
        assertion = client_assertion(container, keys, audience=container.settings.issuer.rstrip("/") + "/oauth/token")
    finally:
        container.close()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WGS_")} | {
        "WGS_DATA_DIR": str(tmp_path), "WGS_DATABASE_URL": url, "WGS_LOG_LEVEL": "WARNING",
        "WGS_ESCALATION_SCAN_SECONDS": "0", "WGS_CLIENT_CERT_HEADER": "X-Client-Cert",
        "WGS_CLIENT_CERT_PROXIES": "127.0.0.1", "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "PYTHONPATH": str(Path(gateway.__file__).parent.parent)}
    with (tmp_path / "serve.err").open("wb") as err:
        serve = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/health/ready", serve, tmp_path / "serve.err", deadline=START_TIMEOUT)
        partner = {"X-Forwarded-For": "198.51.100.4", "X-Client-Cert": quote(PARTNER_PEM.decode(), safe="")}
        with httpx.Client(base_url=base, timeout=30) as proxy:
            issued = proxy.post("/oauth/token", data=token_form(assertion), headers=partner)
            assert issued.status_code == 200, issued.text
            token = issued.json()["access_token"]
            assert decode_segment(token.split(".")[1])["cnf"] == {"x5t#S256": PARTNER_THUMBPRINT}
            assert proxy.get("/v1/register", headers=bearer(token) | partner).status_code == 200
            without = proxy.get("/v1/register", headers=bearer(token) | {"X-Forwarded-For": "198.51.100.4"})
            assert without.status_code == 401
            assert without.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            # and the forwarded headers are believed from the proxy as before (X-Forwarded-Proto: https makes
            # the console's cookies __Host- cookies)
            page = proxy.get("/console/login?lang=en", headers={"X-Forwarded-Proto": "https"})
            assert page.headers["set-cookie"].startswith("__Host-"), page.headers.get("set-cookie")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
