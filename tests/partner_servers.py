"""Simulated partner systems as real HTTP servers, for integration and scenario tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from connectors.holder_auth import JwksSource
from connectors.profiles import PROFILES
from connectors.simulator import create_partner_app
from tests.servers import serve_app


@contextmanager
def partner_servers(data_dir: Path, systems: list[str] | None = None, *, jwks: dict[str, Any] | None = None,
                    jwks_url: str | None = None, over_share: set[str] | None = None,
                    seed: int = 2025, source: JwksSource | None = None,
                    now: Callable[[], float] = time.time) -> Iterator[dict[str, str]]:
    """Start the given partner systems (default: all); yields {system id: base URL}."""
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for system in systems or list(PROFILES):
            keys = source or (JwksSource(url=jwks_url, jwks=jwks) if (jwks or jwks_url) else None)
            app = create_partner_app(system, data_dir, seed=seed, jwks=keys, require_auth=keys is not None,
                                     over_share=system in (over_share or set()), now=now)
            urls[system] = stack.enter_context(serve_app(app))
        yield urls
