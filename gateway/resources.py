"""Where the gateway's policies and migrations are: in the checkout (``policies/``, ``migrations/`` at its
top, also for an editable install and the container image) or, in an installed wheel, bundled inside the
package (``gateway/_bundled/``, put there by ``setup.py``). The bundled copy wins when it exists: in a wheel
install the checkout's place is ``site-packages/``, where another distribution's ``policies`` could sit."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_BUNDLED = _PACKAGE / "_bundled"
_CHECKOUT = _PACKAGE.parent


def resource_dir(name: str) -> Path:
    """``policies`` or ``migrations``: the bundled directory if this is an installed wheel, else the checkout's."""
    bundled = _BUNDLED / name
    return bundled if bundled.is_dir() else _CHECKOUT / name
