"""The API documentation pages (``/docs``, ``/redoc``) share the console's origin: a script on them can read a
signed-in officer's console pages and post their forms. So every script and stylesheet they load from elsewhere
must be one exact version that the browser checks (Subresource Integrity), and they load nothing else from
elsewhere. FastAPI's defaults loaded ``swagger-ui-dist@5`` and ``redoc@2`` (whatever was published last)
unchecked, with fonts and a favicon from third parties."""

from __future__ import annotations

import re

import pytest
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from gateway.api_docs import SWAGGER_JS, with_integrity

_TAG = re.compile(r"<(?:script|link)\b[^>]*>")
_EXTERNAL = re.compile(r'\b(?:src|href)="(https?://[^"]+)"')
_EXACT_VERSION = re.compile(r"@\d+\.\d+\.\d+/")
_SRI = re.compile(r'\bintegrity="sha384-[A-Za-z0-9+/]{64}"')


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_documentation_loads_nothing_from_elsewhere_that_the_browser_does_not_check(
        client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    loaded = [(tag, found.group(1)) for tag in _TAG.findall(page.text) if (found := _EXTERNAL.search(tag))]
    assert loaded, "the page loads its interface from the CDN"
    for tag, url in loaded:
        assert _EXACT_VERSION.search(url), f"{url}: a floating version runs whatever was published last"
        assert _SRI.search(tag), f"{url}: loaded without Subresource Integrity"
        assert 'crossorigin="anonymous"' in tag, url
    assert "fonts.googleapis.com" not in page.text
    assert "fastapi.tiangolo.com" not in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"


def test_the_swagger_ui_oauth2_redirect_page_is_still_served(client: TestClient) -> None:
    page = client.get("/docs/oauth2-redirect")
    assert page.status_code == 200
    assert "swaggerUIRedirectOauth2" in page.text
    assert not _EXTERNAL.search(page.text)


def test_a_page_that_does_not_load_a_pinned_asset_as_expected_is_an_error_not_an_unchecked_page() -> None:
    """Should FastAPI's page builder change the tags, the pages fail loudly rather than load an asset unchecked."""
    with pytest.raises(RuntimeError, match="exactly once"):
        with_integrity(HTMLResponse('<script src="https://cdn.example/other.js"></script>'), SWAGGER_JS)
    twice = f'<script src="{SWAGGER_JS.url}"></script><script src="{SWAGGER_JS.url}"></script>'
    with pytest.raises(RuntimeError, match="exactly once"):
        with_integrity(HTMLResponse(twice), SWAGGER_JS)
