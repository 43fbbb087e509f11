"""The http(s) URL check shared by the settings (connector endpoints) and the OPA client's address, and the
loopback check shared by the partner client and the console's cookies.

One place decides what "an http(s) URL with a host" is, so ``WGS_CONNECTOR_ENDPOINTS`` and ``WGS_OPA_URL``
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
