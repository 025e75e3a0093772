"""Who may use the board's HTTP server, as http_view.py asks it: a bearer token or basic auth in the
`Authorization` header (scripts, `edgecls data pull`), or, for a browser, a cookie.

A browser cannot send a header when it follows a link, so a page's URL may carry the token once,
`?token=TOKEN`: the answer is a redirect to the same URL without it (out of the address bar, the
history and any Referer) that sets an HttpOnly, SameSite=Strict cookie. The cookie holds a digest
of the token, not the token: it opens this server and nothing else the token opens. Every check
is a constant-time comparison.

A browser sends basic credentials and cookies on its own, so another site's page could make it
POST here: a POST whose Origin (or Sec-Fetch-Site) names another site is refused, whatever
authenticated it. A PLC or a script sends neither header and is unaffected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, urlencode, urlsplit

COOKIE = "edgecls_auth"


def cookie_value(token: str) -> str:
    """What the cookie holds for `token`: a digest, so the browser never keeps the token."""
    return hashlib.sha256(b"edgecls http cookie\0" + token.encode()).hexdigest()


def login_cookie(token: str) -> str:
    """The Set-Cookie header's value for a browser that gave the right ?token=."""
    return f"{COOKIE}={cookie_value(token)}; Path=/; HttpOnly; SameSite=Strict"


def cookie_from(header: str | None) -> str:
    """Our cookie's value in a Cookie header, or ""."""
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE:
            return value.strip()
    return ""


def credentials(headers, token: str | None, user: str | None) -> str | None:
    """How the request is authorised ("open", "token", "cookie", "basic NAME"), or None."""
    if not (token or user):
        return "open"
    given = headers.get("Authorization", "").encode()
    if token and hmac.compare_digest(given, f"Bearer {token}".encode()):
        return "token"
    if user:
        basic = "Basic " + base64.b64encode(user.encode()).decode()
        if hmac.compare_digest(given, basic.encode()):
            return f"basic {user.partition(':')[0]}"
    cookie = cookie_from(headers.get("Cookie")).encode()
    if token and cookie and hmac.compare_digest(cookie, cookie_value(token).encode()):
        return "cookie"
    return None


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def without_token(path: str, query: str) -> str:
    """The URL to send a browser to once its ?token= is a cookie: the same path and query, less
    the token; always a path on this server (never `//host`, which a browser reads as another
    site)."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
    path = "/" + path.lstrip("/")
    return path + ("?" + urlencode(kept) if kept else "")


def cross_site(headers) -> str | None:
    """Why a POST comes from another site's page (None: it does not, or it is no browser's)."""
    if headers.get("Sec-Fetch-Site", "") == "cross-site":
        return "a request from another site's page is refused"
    origin = headers.get("Origin")
    if origin is None:
        return None
    host = headers.get("Host", "")
    if origin == "null" or not _same_host(urlsplit(origin), host):
        return f"a request from {origin[:80]} (not this board's page) is refused"
    return None


def _same_host(origin, host: str) -> bool:
    default = {"http": 80, "https": 443}.get(origin.scheme)
    try:
        theirs = (origin.hostname, origin.port or default)
        ours = urlsplit(f"{origin.scheme}://{host}")
        return theirs == (ours.hostname, ours.port or default)
    except ValueError:  # a port that is no number
        return False
