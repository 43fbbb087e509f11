"""The http(s) URL check shared by the settings (connector endpoints) and the OPA client's address, and the
loopback check shared by the partner client and the console's cookies.

One place decides what "an http(s) URL with a host" is (and, :func:`holder_url`, when a holder's plain ``http://``
is refused), so ``WGS_CONNECTOR_ENDPOINTS`` and ``WGS_OPA_URL``
cannot drift apart on it. Each caller adds its own rules on top: the OPA address also refuses credentials,
a query and a fragment (opa-python-client would drop them silently); the connector endpoints deliberately
do not (a holder service's base URL is passed on as written).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

EXPECTED = "expected http(s)://host[:port][/path]"


def http_url(url: str) -> SplitResult:
    """``url`` (surrounding blanks ignored) split, if it is http or https with a host and a valid port.

    Raises ValueError ``"not a URL"`` when it does not parse (a bad port, an unclosed IPv6 bracket) and
    ``EXPECTED`` for another scheme or no host. Neither message repeats the URL: it may hold a password.
    """
    try:
        parsed = urlsplit(url.strip())
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("not a URL") from None
    if parsed.scheme.lower() not in ("http", "https") or not parsed.hostname:
        raise ValueError(EXPECTED)
    return parsed


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine: ``localhost``
    or a loopback address. Where plain HTTP is harmless — the partner client's base URL, the console's
    cookies without ``Secure`` — it is so only to this machine."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def remote_plain_http(parsed: SplitResult) -> bool:
    """Whether ``parsed`` (from :func:`http_url`) is plain ``http://`` to a host that is not this machine: what
    crosses a network unencrypted, and is refused for holders and the OPA server without the operator's word."""
    return parsed.scheme.lower() == "http" and not is_loopback_host(parsed.hostname or "")


INSECURE_HOLDER = ("plain http:// to a holder that is not on this machine: its bearer token and the records it "
                   "answers would cross the network unencrypted; use https://, or set "
                   "WGS_CONNECTOR_ALLOW_INSECURE_HTTP=true on a network you trust")


def holder_url(url: str, *, allow_insecure_http: bool = False) -> SplitResult:
    """``url`` as :func:`http_url` splits it, refused (ValueError, one line, without the URL) when it is plain
    ``http://`` to a host that is not this machine, unless ``allow_insecure_http``.

    Why: every call to a holder carries a bearer token the holder accepts from the gateway, and a query's
    answer carries personal data; over plain HTTP anyone on the path reads both. A loopback holder (the demo,
    the tests, a sidecar) never leaves the machine, so it stays allowed; an operator whose holders sit on a
    private network they trust says so explicitly."""
    parsed = http_url(url)
    if remote_plain_http(parsed) and not allow_insecure_http:
        raise ValueError(INSECURE_HOLDER)
    return parsed


INSECURE_OPA = ("plain http:// to an OPA server that is not on this machine: the bearer token that lets the gateway "
                "replace its register, the register and every decision would cross the network unencrypted, and "
                "anyone on the path could answer allow in its place; use https:// (WGS_OPA_CA_FILE for a private "
                "CA), or set WGS_OPA_ALLOW_INSECURE_HTTP=true on a network you trust")
