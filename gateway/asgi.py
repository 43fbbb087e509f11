"""ASGI entry point for uvicorn/gunicorn workers: ``uvicorn gateway.asgi:app``.

Started by hand (or by gunicorn, or a container's command line) there is no ``wgs-gateway serve`` to check the
settings, the database and the register first; so the same check (:func:`gateway.startup.start_problems`)
runs here, before the app is built. A refusal is the lines ``serve`` prints, on stderr, and exit status
:data:`~gateway.startup.STARTUP_FAILURE` — not a traceback that repeats a bad setting's value (a password, a
webhook secret), and not a worker the server keeps starting again. Under ``serve`` the check has passed
already in ``serve``'s process, which says so to its workers: they read the settings (a bad one is refused
the same way) but check the database and the register no more (:func:`gateway.startup.checked_for_workers`).

The app believes ``X-Forwarded-For`` from ``FORWARDED_ALLOW_IPS`` itself, after noting the address that
connected (:func:`gateway.peer.behind_proxies`), so that a header only the TLS proxy may set is checked
against the proxy, not against the caller it forwarded: ``serve`` runs uvicorn with its own proxy handling
off, and uvicorn started by hand must get ``--no-proxy-headers``. With it on, uvicorn replaces the address
before the app sees it: certificate-bound clients behind the proxy are refused (their proxy's address is gone),
and where ``FORWARDED_ALLOW_IPS`` trusts an address a caller can connect from (``*``, a shared network) such a
caller names a listed proxy in ``X-Forwarded-For`` and its own certificate header is believed — a copied bound
token then works without the certificate's key. So with certificate binding configured the app starts only where
uvicorn's own handling is declared off (:func:`gateway.peer.binding_refusal`): ``serve`` declares it.
"""

from __future__ import annotations

import sys

from gateway.app import create_app
from gateway.peer import behind_proxies
from gateway.startup import STARTUP_FAILURE, start_problems

_problems = start_problems(trust_serve=True)
if _problems:
    print("\n".join(_problems), file=sys.stderr, flush=True)
    raise SystemExit(STARTUP_FAILURE)

app = behind_proxies(create_app(freeze_heap=True))
