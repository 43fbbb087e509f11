"""The interactive API documentation (``/docs``: Swagger UI, ``/redoc``: ReDoc) with pinned, browser-checked assets.

Why: these pages are served from the gateway's own origin, which is the web console's too. A script running on
them can read every console page of an officer who is signed in (the browser sends the session cookie with
requests to the same origin, ``SameSite=Strict`` or not), take the CSRF token from it and post the console's
forms: decide escalations, look up data subjects, export the log. FastAPI's defaults load Swagger UI and ReDoc
from a CDN by a floating major version (``swagger-ui-dist@5``, ``redoc@2``) and without Subresource Integrity,
so whatever was last published under that major version, or whatever the CDN answered, ran with the console's
powers. Here each script and stylesheet is one exact version with the SHA-384 of its file: a browser runs no
other bytes (SRI), and the page fails closed instead (it stays blank). The Google Fonts stylesheet and the
favicon from FastAPI's site are left out: the pages need neither, and each told a third party (by the request,
and its ``Referer``) that someone opened the gateway's documentation.

Upgrading: change a version and its hash together. The hash is of the file in the package the registry serves,
which the CDN serves unchanged: ``npm pack swagger-ui-dist@VERSION``, unpack, then
``openssl dgst -sha384 -binary package/swagger-ui-bundle.js | base64``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"
NO_FAVICON = "data:,"
"""An empty icon: the browser asks nobody for one (FastAPI's default is an image on its own site)."""
PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}
"""The documentation pages are framed by no one (their "Try it out" sends requests with a token typed in them)."""


@dataclass(frozen=True)
class Asset:
    """A script or stylesheet from the CDN: one exact version, and the SHA-384 of its bytes (SRI)."""

    url: str
    integrity: str


_CDN = "https://cdn.jsdelivr.net/npm/"
SWAGGER_JS = Asset(_CDN + "swagger-ui-dist@5.35.0/swagger-ui-bundle.js",
                   "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9")
SWAGGER_CSS = Asset(_CDN + "swagger-ui-dist@5.35.0/swagger-ui.css",
                    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I")
REDOC_JS = Asset(_CDN + "redoc@2.5.4/bundles/redoc.standalone.js",
                 "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5")

router = APIRouter(include_in_schema=False)


def with_integrity(page: HTMLResponse, *assets: Asset) -> HTMLResponse:
    """``page`` with ``integrity`` and ``crossorigin`` on the tag that loads each of ``assets``.

    Each URL must be in the page exactly once: a FastAPI whose page loads them otherwise is an error here, never
    a page that loads an asset unchecked."""
    html = bytes(page.body).decode()
    for asset in assets:
        attribute = f'="{asset.url}"'
        if html.count(attribute) != 1:
            raise RuntimeError(f"the documentation page does not load {asset.url} exactly once")
        html = html.replace(attribute, f'{attribute} integrity="{asset.integrity}" crossorigin="anonymous"')
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_swagger_ui_html(openapi_url=root + OPENAPI_URL, title=f"{request.app.title} - Swagger UI",
                               swagger_js_url=SWAGGER_JS.url, swagger_css_url=SWAGGER_CSS.url,
                               swagger_favicon_url=NO_FAVICON, oauth2_redirect_url=root + OAUTH2_REDIRECT_URL)
    return with_integrity(page, SWAGGER_JS, SWAGGER_CSS)


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    page = get_swagger_ui_oauth2_redirect_html()
    page.headers.update(PAGE_HEADERS)
    return page


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(openapi_url=_root(request) + OPENAPI_URL, title=f"{request.app.title} - ReDoc",
                          redoc_js_url=REDOC_JS.url, redoc_favicon_url=NO_FAVICON, with_google_fonts=False)
    return with_integrity(page, REDOC_JS)
