"""Simulated partner systems as real HTTP servers (uvicorn on free 127.0.0.1 ports), for integration and
scenario tests.

Two ways in:

- ``partner_servers(data_dir, systems, ...)``: a context manager yielding ``{system id: base URL}``; use it
  inside your own fixture or test.
- ``partner_servers_fixture(systems, scope=..., ...)``: builds a pytest fixture that does the same with a
  temporary data directory. Assign it to a module-level name and request that name::

      partners = partner_servers_fixture(["politie-bvh", "kvk-handelsregister"], scope="session", jwks=JWKS)

      def test_something(partners: dict[str, str]) -> None: ...

Every server is stopped when the context (or the fixture's scope) ends, also when one of them fails to start.
Each partner gets its own SQLite file in the data directory; the world is generated once per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from connectors.holder_auth import JwksSource
from connectors.profiles import PROFILES
from connectors.simulator import create_partner_app
from connectors.world import build_world
from tests.servers import serve_app


@contextmanager
def partner_servers(data_dir: Path, systems: list[str] | None = None, *, jwks: dict[str, Any] | None = None,
                    jwks_url: str | None = None, over_share: set[str] | None = None,
                    seed: int = 2025, source: JwksSource | None = None,
                    now: Callable[[], float] = time.time, issuer: str | None = None) -> Iterator[dict[str, str]]:
    """Start the given partner systems (default: all) and yield ``{system id: base URL}``.

    Authentication: pass the gateway's keys as ``jwks`` (a JWKS dict), ``jwks_url`` or a ``source`` (a
    ``JwksSource`` you can ``point_to`` the gateway later); with none of them the partners accept
    unauthenticated queries; ``issuer`` pins the tokens' ``iss``. ``over_share`` names the systems that
    misbehave by adding an unasked category.
    """
    unknown = set(systems or []) - set(PROFILES)
    if unknown:
        raise ValueError(f"no simulated partner for {sorted(unknown)}")
    world = build_world(seed)
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for system in systems or list(PROFILES):
            keys = source or (JwksSource(url=jwks_url, jwks=jwks) if (jwks or jwks_url) else None)
            app = create_partner_app(system, data_dir, seed=seed, jwks=keys, require_auth=keys is not None,
                                     over_share=system in (over_share or set()), now=now, world=world,
                                     issuer=issuer)
            urls[system] = stack.enter_context(serve_app(app))
        yield urls


def partner_servers_fixture(systems: list[str] | None = None, *, scope: Any = "module",
                            **options: Any) -> Any:
    """A pytest fixture (of ``scope``) yielding ``{system id: base URL}``; ``options`` go to
    ``partner_servers``."""

    @pytest.fixture(scope=scope)
    def _partners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
        with partner_servers(tmp_path_factory.mktemp("partners"), systems, **options) as urls:
            yield urls

    return _partners
