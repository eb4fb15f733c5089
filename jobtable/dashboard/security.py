"""Who may see the dashboard, and which POSTs are genuine.

- No credentials configured: only loopback clients are served (the default bind is
  127.0.0.1); anyone else gets 403, unless the embedding application vouches for
  its users (``trust_remote=True``).
- A token and/or basic-auth credentials configured: every request must carry them
  (``Authorization: Bearer``, ``Authorization: Basic``, or the cookie set by opening
  the dashboard once with ``?token=...``).
- Every POST must carry the CSRF token of its page (double-submit cookie) and, if the
  browser sends an ``Origin``, come from the dashboard's own origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

AUTH_COOKIE = "jobtable_auth"
CSRF_COOKIE = "jobtable_csrf"
CSRF_FIELD = "csrf"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cookie_path(scope: Scope) -> str:
    """The dashboard's own path, so its cookies stay with it when mounted."""
    return str(scope.get("root_path") or "") or "/"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware enforcing the access rules above."""

    def __init__(self, app: ASGIApp, *, token: str | None = None, username: str | None = None,
                 password: str | None = None, trust_remote: bool = False) -> None:
        if (username is None) != (password is None):
            from jobtable.errors import ConfigError

            raise ConfigError("basic auth needs both a user name and a password")
        if token is not None and not token:
            from jobtable.errors import ConfigError

            raise ConfigError("the dashboard token must not be empty")
        self.app = app
        self.token = token
        self.username = username
        self.password = password
        self.trust_remote = trust_remote
        self._cookie_value = (None if token is None else hmac.new(
            token.encode(), b"jobtable-dashboard-session", hashlib.sha256).hexdigest())

    @property
    def needs_auth(self) -> bool:
        """True when credentials are configured (then every request must present them)."""
        return self.token is not None or self.username is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.needs_auth:
            if self.token is not None and request.method == "GET":
                offered = request.query_params.get("token")
                if offered is not None and _same(offered, self.token):
                    await self._login_redirect(request)(scope, receive, send)
                    return
            if not self._authenticated(request):
                await self._unauthorised()(scope, receive, send)
                return
        elif not self.trust_remote:
            client = request.client.host if request.client else None
            if not is_loopback(client):
                await _page(403, "Forbidden", (
                    "This dashboard has no credentials configured, so it only answers "
                    "requests from this machine. Set a token (JOBTABLE_DASHBOARD_TOKEN) or "
                    "basic-auth credentials to open it to others."))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if self.token is not None:
            if scheme == "bearer" and _same(value.strip(), self.token):
                return True
            cookie = request.cookies.get(AUTH_COOKIE)
            if cookie and self._cookie_value and _same(cookie, self._cookie_value):
                return True
        if self.username is not None and self.password is not None and scheme == "basic":
            try:
                user, _, pw = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return _same(user, self.username) & _same(pw, self.password)
        return False

    def _login_redirect(self, request: Request) -> Response:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = URL(scope=request.scope).replace(query=urlencode(params))
        response = RedirectResponse(
            urlsplit(str(target))._replace(scheme="", netloc="").geturl(), status_code=303)
        assert self._cookie_value is not None
        response.set_cookie(AUTH_COOKIE, self._cookie_value, httponly=True, samesite="lax",
                            path=cookie_path(request.scope))
        return response

    def _unauthorised(self) -> Response:
        headers = {}
        if self.username is not None:
            headers["WWW-Authenticate"] = 'Basic realm="jobtable", charset="UTF-8"'
        how = []
        if self.token is not None:
            how.append("open it with ?token=… (the address 'jobtable dashboard' prints) or "
                       "send 'Authorization: Bearer …'")
        if self.username is not None:
            how.append("sign in with the dashboard's user name and password")
        return _page(401, "Sign-in required",
                     "This dashboard needs credentials: " + "; or ".join(how) + ".", headers)


def _page(status: int, title: str, message: str,
          headers: dict[str, str] | None = None) -> Response:
    from html import escape

    body = (f"<!doctype html><meta charset=utf-8><title>{escape(title)} · jobtable</title>"
            f"<h1>{escape(title)}</h1><p>{escape(message)}</p>")
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def csrf_token(request: Request) -> tuple[str, bool]:
    """The page's CSRF token, and whether it is new (then the response must set it)."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and len(current) >= 32:
        return current, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    """Store the CSRF token in its cookie, scoped to the dashboard's path."""
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                        path=cookie_path(request.scope))


def csrf_problem(request: Request, submitted: str | None) -> str | None:
    """Why this POST is not trusted, or None when it is."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            return "the form was sent from another site"
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted or not _same(cookie, submitted):
        return "the form's security token is missing or out of date; reload the page"
    return None
