"""Who may see the dashboard, and which POSTs are genuine.

- No credentials configured: only loopback clients are served (the default bind is
  127.0.0.1), and only under a loopback ``Host`` (``127.0.0.1``, ``localhost``,
  ``[::1]``, with or without the port), so a page on a DNS-rebinding domain cannot
  reach it from a developer's browser; anyone else gets 403, unless the embedding
  application vouches for its users (``trust_remote=True``).
- A token and/or basic-auth credentials configured: every request must carry them
  (``Authorization: Bearer``, ``Authorization: Basic``, or the cookie set by opening
  the dashboard once with ``?token=...``).
- ``allowed_hosts`` restricts the ``Host`` header to those names (in any mode);
  ``origin`` names the dashboard's public origin (``https://ops.example.com``).
- Every POST must carry the CSRF token of its page (double-submit cookie) and, if the
  browser sends an ``Origin`` (or else a ``Referer``), come from the dashboard's own
  origin: ``origin`` when configured, else an allowed host (loopback without
  credentials) on the port the server listens on.
- The ``?token=`` login redirects only to a path of the dashboard itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from jobtable.errors import ConfigError

AUTH_COOKIE = "jobtable_auth"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ALLOWED_HOSTS_ENV = "JOBTABLE_DASHBOARD_ALLOWED_HOSTS"
ORIGIN_ENV = "JOBTABLE_DASHBOARD_ORIGIN"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|\*|(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)(?::([0-9]{1,5}))?")
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


HostPattern = tuple[str, int | None]
Origin = tuple[str, str, int]


def _split_host(text: str) -> HostPattern | None:
    """``(name, port)`` of a ``Host`` header or an allowed-host entry; None if malformed."""
    text = text.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    match = _HOST.fullmatch(text)
    if match is None:
        return None
    port = None if match.group(2) is None else int(match.group(2))
    return match.group(1), port


def parse_allowed_hosts(values: str | Iterable[str] | None) -> tuple[HostPattern, ...]:
    """Allowed ``Host`` values from a list and/or comma- or space-separated text:
    ``ops.example.com``, ``ops.example.com:8443``, ``*.example.com``, ``[::1]``, or ``*``
    for any. Raises ``ConfigError`` naming a malformed entry."""
    out = []
    for entry in _entries(values):
        parsed = _split_host(entry)
        if parsed is None:
            raise ConfigError(
                f"allowed host {entry!r} is not a host name: use a name such as "
                "'ops.example.com', optionally with ':port', '*.example.com', or '*'")
        out.append(parsed)
    return tuple(out)


def _entries(values: str | Iterable[str] | None) -> list[str]:
    """The entries of a list and/or comma- or space-separated text, empty ones dropped."""
    items = [] if values is None else [values] if isinstance(values, str) else list(values)
    return [entry for item in items for entry in re.split(r"[,\s]+", item) if entry]


def _parse_origin(text: str) -> Origin | None:
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return scheme, host, _DEFAULT_PORTS[scheme] if port is None else port


def parse_origins(values: str | Iterable[str] | None) -> tuple[Origin, ...]:
    """The dashboard's public origins (``https://ops.example.com``); raises
    ``ConfigError`` naming one that is not ``http(s)://host[:port]``."""
    out = []
    for entry in _entries(values):
        parsed = _parse_origin(entry)
        if parsed is None or urlsplit(entry).path not in ("", "/"):
            raise ConfigError(
                f"origin {entry!r} is not an origin: use scheme, host and optional port "
                "only, such as 'https://ops.example.com' or 'http://127.0.0.1:8787'")
        out.append(parsed)
    return tuple(out)


def _host_matches(host: HostPattern, patterns: Iterable[HostPattern]) -> bool:
    name, port = host
    for pattern, pattern_port in patterns:
        if pattern_port is not None and pattern_port != port:
            continue
        if pattern in ("*", name) or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def same_origin_path(path: str, query: str = "") -> str:
    """A redirect target that stays on this site: ``path`` with every leading slash and
    backslash collapsed into one and the rest percent-encoded, so that neither
    ``//evil.com`` nor ``/\\evil.com`` nor ``https://evil.com`` can leave it."""
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", path):
        path = urlsplit(path).path  # an absolute URL: keep its path only
    rest = quote(path.lstrip("/\\"), safe="/!$&'()*+,;=:@-._~")
    return "/" + rest + (f"?{query}" if query else "")


def cookie_path(scope: Scope) -> str:
    """The dashboard's own path, so its cookies stay with it when mounted."""
    return str(scope.get("root_path") or "") or "/"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware enforcing the access rules above."""

    def __init__(self, app: ASGIApp, *, token: str | None = None, username: str | None = None,
                 password: str | None = None, trust_remote: bool = False,
                 allowed_hosts: str | Iterable[str] | None = None,
                 origin: str | Iterable[str] | None = None) -> None:
        if (username is None) != (password is None):
            raise ConfigError("basic auth needs both a user name and a password")
        if token is not None and not token:
            raise ConfigError("the dashboard token must not be empty")
        self.app = app
        self.token = token
        self.username = username
        self.password = password
        self.trust_remote = trust_remote
        self.allowed_hosts = parse_allowed_hosts(allowed_hosts)
        self.origins = parse_origins(origin)
        self._loopback_patterns = tuple(_split_host(h) or (h, None) for h in LOOPBACK_HOSTS)
        self._cookie_value = (None if token is None else hmac.new(
            token.encode(), b"jobtable-dashboard-session", hashlib.sha256).hexdigest())

    @property
    def needs_auth(self) -> bool:
        """True when credentials are configured (then every request must present them)."""
        return self.token is not None or self.username is not None

    @property
    def loopback_only(self) -> bool:
        """True when no credentials are configured and nobody vouches for remote users."""
        return not self.needs_auth and not self.trust_remote

    def host_patterns(self) -> tuple[HostPattern, ...] | None:
        """The ``Host`` values served, or None when any is (credentials or
        ``trust_remote`` without ``allowed_hosts``)."""
        if self.loopback_only:
            origin_hosts = tuple((host, port) for _, host, port in self.origins)
            return self._loopback_patterns + self.allowed_hosts + origin_hosts
        return self.allowed_hosts or None

    def host_problem(self, request: Request) -> str | None:
        """Why this request's ``Host`` is not served, or None when it is."""
        patterns = self.host_patterns()
        if patterns is None:
            return None
        header = request.headers.get("host", "")
        host = _split_host(header)
        if host is not None and _host_matches(host, patterns):
            return None
        if self.loopback_only:
            return (f"the address {header!r} is not one this dashboard answers to. Without "
                    "credentials it answers only to 127.0.0.1, localhost and [::1], so that "
                    "no other site can reach it through DNS rebinding; open it by one of "
                    "those, or list the name in allowed_hosts (--allowed-host, "
                    f"{ALLOWED_HOSTS_ENV})")
        return (f"the address {header!r} is not among the dashboard's allowed hosts "
                f"({', '.join(_show(p) for p in patterns)})")

    def origin_problem(self, request: Request) -> str | None:
        """Why a POST's ``Origin`` (or, without one, its ``Referer``) is not the
        dashboard's own origin, or None when it is (or the client sent neither)."""
        sent = request.headers.get("origin")
        if not sent or sent == "null":
            referer = request.headers.get("referer")
            if not referer:
                return None if not sent else "the form was sent from an opaque origin"
            sent = referer
        origin = _parse_origin(sent)
        if origin is None:
            return "the form was sent from another site"
        scheme, host, port = origin
        if self.origins:
            ok = origin in self.origins
        elif self.allowed_hosts and _host_matches((host, port), self.allowed_hosts):
            ok = True
        elif self.loopback_only:
            server = request.scope.get("server")
            bound = server[1] if server and server[1] is not None else port
            ok = (host, None) in self._loopback_patterns and port == bound
            ok = ok or _host_matches((host, port), self.allowed_hosts)
        elif not self.allowed_hosts:
            # Credentials (or the embedding app's sign-in) are needed, and a page on
            # another name cannot present them; without a configured origin the
            # dashboard's own is the one the client reached.
            own = _parse_origin(f"{scheme}://{request.headers.get('host', '')}")
            ok = origin == own
        else:
            ok = False
        return None if ok else "the form was sent from another site"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["jobtable.guard"] = self
        request = Request(scope)
        if self.loopback_only:
            client = request.client.host if request.client else None
            if not is_loopback(client):
                await _page(403, "Forbidden", (
                    "This dashboard has no credentials configured, so it only answers "
                    "requests from this machine. Set a token (JOBTABLE_DASHBOARD_TOKEN) or "
                    "basic-auth credentials to open it to others."))(scope, receive, send)
                return
        problem = self.host_problem(request)
        if problem is not None:
            await _page(403, "Forbidden", f"Refused: {problem}.")(scope, receive, send)
            return
        if self.needs_auth:
            if self.token is not None and request.method == "GET":
                offered = request.query_params.get("token")
                if offered is not None and _same(offered, self.token):
                    await self._login_redirect(request)(scope, receive, send)
                    return
            if not self._authenticated(request):
                await self._unauthorised()(scope, receive, send)
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
        path = str(request.scope.get("path") or "/")
        root = str(request.scope.get("root_path") or "")
        if root and path != root and not path.startswith(root + "/"):
            path = root + path  # a server that strips the mount prefix from the path
        response = RedirectResponse(same_origin_path(path, urlencode(params)),
                                    status_code=303)
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


def _show(pattern: HostPattern) -> str:
    return pattern[0] if pattern[1] is None else f"{pattern[0]}:{pattern[1]}"


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
    guard = request.scope.get("jobtable.guard")
    problem = (guard if isinstance(guard, Guard) else Guard(_no_app)).origin_problem(request)
    if problem is not None:
        return problem
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted or not _same(cookie, submitted):
        return "the form's security token is missing or out of date; reload the page"
    return None


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("unreachable")  # pragma: no cover
