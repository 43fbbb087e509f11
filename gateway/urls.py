"""The http(s) URL check shared by the settings (connector endpoints) and the OPA client's address, and the
loopback check shared by the partner client and the console's cookies.

One place decides what "an http(s) URL with a host" is (and, :func:`holder_url`, when a holder's plain ``http://``
is refused), so ``WGS_CONNECTOR_ENDPOINTS`` and ``WGS_OPA_URL``
cannot drift apart on it. Each caller adds its own rules on top: the OPA address and the holder endpoints also
refuse credentials, a query and a fragment (opa-python-client would drop them silently; a holder's fixed paths
are appended to its base URL, and aiohttp refuses credentials beside the gateway's bearer token).
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


HOLDER_CREDENTIALS = ("credentials in the base URL (user:password@): the gateway authenticates to holders with its "
                      "own bearer token, and every call would fail; give the URL without them")
HOLDER_QUERY_OR_FRAGMENT = ("a query or fragment ('?', '#') in the base URL: the holder protocol's paths are "
                            "appended to it and would land inside it; give http(s)://host[:port][/path] only")


def holder_url(url: str, *, allow_insecure_http: bool = False) -> SplitResult:
    """``url`` as :func:`http_url` splits it, refused (ValueError, one line, without the URL) when it is plain
    ``http://`` to a host that is not this machine, unless ``allow_insecure_http``; and when it carries
    credentials, a query or a fragment.

    Why: every call to a holder carries a bearer token the holder accepts from the gateway, and a query's
    answer carries personal data; over plain HTTP anyone on the path reads both. A loopback holder (the demo,
    the tests, a sidecar) never leaves the machine, so it stays allowed; an operator whose holders sit on a
    private network they trust says so explicitly. Credentials beside the bearer token make aiohttp refuse
    every call (a ``ValueError``, not a transport failure); the fixed path after a query or fragment
    (``?x=1/holder/v1/query``, ``#f/holder/v1/query``) goes to the wrong resource, or to ``/``. Both are refused
    when the settings are read, not found at the first call. The messages never repeat the URL: its password,
    or a token in its query, would reach the operator's terminal and the logs."""
    parsed = http_url(url)
    if remote_plain_http(parsed) and not allow_insecure_http:
        raise ValueError(INSECURE_HOLDER)
    if "@" in parsed.netloc:  # also an empty user part (``http://@host``), which aiohttp reads as credentials
        raise ValueError(HOLDER_CREDENTIALS)
    if "?" in url or "#" in url:  # also an empty one (``host/?``): urlsplit drops it, the appended path does not
        raise ValueError(HOLDER_QUERY_OR_FRAGMENT)
    return parsed


INSECURE_OPA = ("plain http:// to an OPA server that is not on this machine: the bearer token that lets the gateway "
                "replace its register, the register and every decision would cross the network unencrypted, and "
                "anyone on the path could answer allow in its place; use https:// (WGS_OPA_CA_FILE for a private "
                "CA), or set WGS_OPA_ALLOW_INSECURE_HTTP=true on a network you trust")
