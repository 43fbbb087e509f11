"""What every outgoing HTTP call of a partner system or the gateway's holder connector shares: how its TLS is
verified and which answers are refused unread.

One place, so that the holder connector (gateway → holder) and the partner's key fetch (holder → gateway) cannot
drift apart in what they trust or accept.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path


def verifying_tls(ca_file: str | Path | None) -> ssl.SSLContext | bool:
    """Certificates and host names checked against ``ca_file`` (a partnership's own PKI), else against the
    system's trust store (``True``). Built when the caller is, so an unreadable bundle fails at start-up
    (``OSError`` or ``ssl.SSLError``), not at the first call."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else True


def compressed(headers: Mapping[str, str]) -> bool:
    """Whether an answer came compressed although ``Accept-Encoding: identity`` was sent: its size on the wire
    says nothing about its size once inflated, so a size limit cannot hold for it and it is refused unread."""
    return headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
