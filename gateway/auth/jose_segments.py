"""Reading a JOSE header or claims segment before any signature is checked: attacker-controlled bytes.

The token endpoint and the bearer check both peek at a segment (which algorithm, which client) before they
know whose key to verify with. Anything odd there must become the caller's 401, never a 500: a segment far
larger than any real header, JSON nested deep enough to exhaust the parser's recursion, text that is not
base64url or not JSON, or JSON that is not an object.
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64decode
from typing import Any

MAX_SEGMENT_CHARS = 16_384
"""Far above any header or assertion this gateway issues or accepts (a few hundred characters)."""


class MalformedSegment(ValueError):
    """The segment is not a base64url-encoded JSON object of sensible size."""


def decode_segment(encoded: str) -> dict[str, Any]:
    """The JSON object in a compact-serialisation segment, or :class:`MalformedSegment`."""
    if len(encoded) > MAX_SEGMENT_CHARS:
        raise MalformedSegment("segment too long")
    try:
        value = json.loads(urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, RecursionError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise MalformedSegment("segment is not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise MalformedSegment("segment is not a JSON object")
    return value
