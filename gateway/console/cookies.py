"""Where the console's cookies live, and under which names: ``__Host-`` cookies whenever they are ``Secure``.

Why: an application on a sibling subdomain (``intranet.example.nl`` beside ``gateway.example.nl``) may set a
cookie for the parent domain, and the browser then sends it to the console too, under the very name of the
console's own ("cookie tossing"). ``SameSite=Strict`` does not help: the sibling is the same *site*. With a
tossed session cookie of an account of its own, it signed an officer's browser in as that account; with a
tossed sign-in form cookie whose CSRF token it knew (it had opened the form itself), its forged form signed the
officer in (login CSRF). A browser accepts a ``__Host-`` cookie only from the origin itself, over HTTPS, with
``Secure``, ``Path=/`` and no ``Domain``: nobody else can set one. So a Secure console cookie is named
``__Host-<name>``, and only that name is read; the plain name is ignored then, whoever set it.

Without ``Secure`` (plain HTTP to a loopback address: the local demo) the prefix is impossible — a browser
refuses it — and the cookies keep their plain names and ``Path=/console``.

``Path=/`` sends the console's cookies with every request to the gateway's host, the API's included. They
count only under ``/console``: the API authenticates by bearer token (``gateway.auth.dependencies``) and reads
no cookie, so a console session is no credential there (``tests/console/test_host_cookies.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response

from gateway.urls import is_loopback_host

HOST_PREFIX = "__Host-"
PLAIN_PATH = "/console"


def is_secure(request: Request, setting: bool | None) -> bool:
    """Whether the console's cookies are ``Secure`` for ``request``: ``setting`` (``WGS_CONSOLE_COOKIE_SECURE``)
    when set, else yes but for plain HTTP to a loopback address (the demo)."""
    if setting is not None:
        return setting
    if request.url.scheme == "https":
        return True
    return not is_loopback_host(request.url.hostname or "")


@dataclass(frozen=True)
class ConsoleCookies:
    """The console's cookies for one request: their names, path and flags follow :attr:`secure`."""

    secure: bool

    @property
    def path(self) -> str:
        return "/" if self.secure else PLAIN_PATH

    def name(self, base: str) -> str:
        """The name the cookie ``base`` goes by: ``__Host-base`` when Secure, else ``base``."""
        return HOST_PREFIX + base if self.secure else base

    def read(self, request: Request, base: str) -> str | None:
        """The cookie ``base`` under its name for this request only: a tossed plain-named one is not read."""
        return request.cookies.get(self.name(base))

    def has(self, request: Request, base: str) -> bool:
        return self.name(base) in request.cookies

    def set(self, response: Response, base: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(self.name(base), value, max_age=max_age, path=self.path, secure=self.secure,
                            httponly=True, samesite="strict")

    def delete(self, response: Response, base: str) -> None:
        response.delete_cookie(self.name(base), path=self.path, secure=self.secure, httponly=True,
                               samesite="strict")
