"""The partner SDK must not drag in the gateway's server side (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

_ALLOWED = {
    "gateway",
    "gateway.client",
    "gateway.client.pseudonyms",
    "gateway.client.matching",
    "gateway.client.fuzzy",
    "gateway.client.fuzzy_requests",
    "gateway.client.models",
    "gateway.pseudonyms",
    "gateway.pseudonyms.errors",
    "gateway.pseudonyms.identifiers",
    "gateway.pseudonyms.pep",
    "gateway.matching",
    "gateway.matching.errors",
    "gateway.matching.schema",
    "gateway.matching.encoding",
    "gateway.matching.plausibility",  # the gateway's own check of a filter, applied before sending
}
_FORBIDDEN_LIBRARIES = ("fastapi", "starlette", "sqlalchemy", "alembic", "pydantic_settings", "structlog",
                        "numba")  # the gateway's Dice kernels: a partner encodes, it does not compare


def test_client_imports_only_pure_modules() -> None:
    code = (
        "import json, sys\n"
        "import gateway.client, gateway.client.pseudonyms, gateway.client.matching, gateway.client.fuzzy_requests\n"
        "print(json.dumps(sorted(m for m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    modules = set(json.loads(result.stdout))
    ours = {m for m in modules if m == "gateway" or m.startswith("gateway.")}
    assert ours <= _ALLOWED, sorted(ours - _ALLOWED)
    assert not [m for m in modules if m.split(".")[0] in _FORBIDDEN_LIBRARIES]
