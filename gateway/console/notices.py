"""The notice a page shows after a form's redirect ("Your decision was recorded."), only when it came from
this session's form.

After a POST the console redirects to the page again with ``?done=<what>`` so that the page can say what was
done. Without more, anyone could send an administrator a link that makes a case page say "Your decision was
recorded" or "The case was referred up" when nothing was, and the administrator would not act on a case that
still waits (a deadline lapses). So the redirect also carries ``notice``, a tag of the page's path and the
notice under the session's CSRF secret: a browser's session alone knows that secret (it is in its signed
cookie and in its own forms), it changes at every sign-in, and a tag for one page or notice does not fit
another. A notice without a fitting tag is not shown; the page is otherwise the same.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from gateway.console.pages import Page

_CONTEXT = b"wgs-console-notice/1\0"
_TAG_HEX = 32


def _tag(secret: str, path: str, done: str) -> str:
    message = _CONTEXT + path.encode() + b"\0" + done.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:_TAG_HEX]


def notice_query(page: Page, path: str, done: str) -> str:
    """The query (without ``?``) that makes the page at ``path`` show notice ``done`` to this session."""
    secret = page.session.csrf if page.session else ""
    return urlencode({"done": done, "notice": _tag(secret, path, done)})


def shown_notice(page: Page, done: str | None, tag: str | None, allowed: frozenset[str]) -> str | None:
    """``done`` when it is a notice of this page (``allowed``) and ``tag`` is this session's for it; else
    None. Compared in constant time (the tag is a MAC)."""
    if done is None or tag is None or done not in allowed or page.session is None or not page.session.csrf:
        return None
    expected = _tag(page.session.csrf, page.request.url.path, done)
    return done if hmac.compare_digest(expected.encode(), tag.encode()) else None
