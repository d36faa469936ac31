"""What keeps a catalogue served on loopback from being read or driven by other pages the same browser opens.

* **Host allow-list.** A page on ``evil.example`` can re-point its own name at 127.0.0.1 (DNS rebinding) and then
  read this server as same-origin; it cannot make the browser send ``Host: 127.0.0.1``, so any other Host is
  refused before routing.
* **CSRF.** Every request that acts (POST, PUT, PATCH, DELETE) must come from this origin (``Origin`` and
  ``Sec-Fetch-Site`` when the browser sends them) and carry the browser's token: an HMAC, under a key made when the
  server starts, of a random value in a ``SameSite=Strict`` cookie. Another site can neither read the token nor
  compute it. A request with the write token as a Bearer header needs no CSRF token: browsers never add that header
  by themselves.
* **Writes** (add, sign, trust, remove) need ``--allow-writes`` and this session's write token, which the server
  prints: a browser shows it once through ``/session?token=…`` and keeps a session cookie, an API client sends it as
  ``Authorization: Bearer …``.
* **Bodies** are size-limited as they arrive (``Content-Length`` first, then the bytes counted), so an upload
  larger than the limit is refused without being held.
* **Headers** on every response: a Content-Security-Policy allowing only this origin's scripts and styles (no
  inline script, no framing), ``nosniff``, no referrer sent to other sites (but a form posted here says its
  origin); and ``Server-Timing``, the time to the response's first byte in the server (the benchmark reads it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lorahub import errors

LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "::1")
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf_token"
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


@dataclass(frozen=True)
class Secrets:
    """The per-process secrets: the CSRF key, and with writes allowed the write token and the session value a
    browser gets for it. Nothing here is stored: a restart makes new ones."""

    key: bytes
    write_token: str | None
    session: str
    port: int

    @classmethod
    def fresh(cls, *, allow_writes: bool, port: int) -> Secrets:
        token = secrets.token_urlsafe(32) if allow_writes else None
        return cls(secrets.token_bytes(32), token, secrets.token_urlsafe(32), port)

    @property
    def browser_cookie(self) -> str:
        """Cookies are per host, not per port: two servers on one machine keep theirs apart by name."""
        return f"lorahub_browser_{self.port}"

    @property
    def session_cookie(self) -> str:
        return f"lorahub_session_{self.port}"

    def csrf_token(self, browser: str) -> str:
        return hmac.new(self.key, browser.encode("utf-8"), hashlib.sha256).hexdigest()

    def csrf_ok(self, browser: str | None, token: str | None) -> bool:
        return bool(browser and token) and hmac.compare_digest(self.csrf_token(str(browser)), str(token))

    def token_ok(self, token: str | None) -> bool:
        return self.write_token is not None and token is not None and hmac.compare_digest(self.write_token, token)

    def session_ok(self, value: str | None) -> bool:
        return self.write_token is not None and value is not None and hmac.compare_digest(self.session, value)


@dataclass(frozen=True)
class Policy:
    """What the guard enforces: the host names the server answers for and the largest request body; a POST to
    one of ``large_paths`` (adding an adapter file, with writes allowed) may be up to ``large_body``."""

    allowed_hosts: frozenset[str]
    max_body: int
    large_body: int = 0
    large_paths: frozenset[str] = frozenset()

    @classmethod
    def for_address(
        cls,
        host: str,
        extra_hosts: Iterable[str] = (),
        *,
        max_body: int,
        large_body: int = 0,
        large_paths: Iterable[str] = (),
    ) -> Policy:
        names = {*LOOPBACK_NAMES, host.strip("[]").lower(), *(h.strip("[]").lower() for h in extra_hosts)}
        return cls(frozenset(names - {"", "0.0.0.0", "::"}), max_body, large_body, frozenset(large_paths))

    def body_limit(self, scope: Scope) -> int:
        if scope["method"] == "POST" and scope["path"] in self.large_paths:
            return max(self.large_body, self.max_body)
        return self.max_body


def host_name(value: str) -> str:
    """The name of a ``Host`` header or an origin's authority, without the port (``[::1]:8765`` → ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


@dataclass
class RequestFacts:
    """What the guard learnt about a request, for the endpoints (kept in ``scope["state"]``)."""

    browser: str
    new_browser: bool
    bearer: str | None = None
    session: str | None = None


def facts(scope: Scope) -> RequestFacts:
    found = scope.get("state", {}).get("lorahub")
    if not isinstance(found, RequestFacts):
        raise RuntimeError("the request did not pass through the guard")
    return found


class Guard:
    """The ASGI middleware that applies :class:`Policy` and :class:`Secrets` to every HTTP request."""

    def __init__(self, app: ASGIApp, policy: Policy, secrets_: Secrets) -> None:
        self.app = app
        self.policy = policy
        self.secrets = secrets_

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _error_response(scope, refusal)(scope, receive, send)
            return
        known = _cookies(headers.get("cookie", ""))
        browser = known.get(self.secrets.browser_cookie, "")
        new_browser = len(browser) < 16
        request_facts = RequestFacts(
            browser=secrets.token_urlsafe(24) if new_browser else browser,
            new_browser=new_browser,
            bearer=_bearer(headers.get("authorization")),
            session=known.get(self.secrets.session_cookie),
        )
        scope.setdefault("state", {})["lorahub"] = request_facts
        await self._forward(scope, _limited(receive, self.policy.body_limit(scope)), send, request_facts)

    def _refusal(self, scope: Scope, headers: Headers) -> errors.RequestRefusedError | None:
        host = host_name(headers.get("host", ""))
        if host not in self.policy.allowed_hosts:
            return errors.ForeignHostError(f"this server does not answer for the host {host!r}")
        if scope["method"] in UNSAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and host_name(urlsplit(origin).netloc) not in self.policy.allowed_hosts:
                return errors.CsrfError(f"a request from the page of another site ({origin}) was refused")
            if headers.get("sec-fetch-site") == "cross-site":
                return errors.CsrfError("a request from the page of another site was refused")
        length = headers.get("content-length")
        limit = self.policy.body_limit(scope)
        if length is not None and (not length.isdigit() or int(length) > limit):
            return errors.UploadTooLargeError(
                f"the request body ({length} bytes) is larger than this server accepts ({limit})"
            )
        return None

    async def _forward(self, scope: Scope, receive: Receive, send: Send, request_facts: RequestFacts) -> None:
        started = False
        began = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                response_headers = MutableHeaders(scope=message)
                response_headers["server-timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.2f}"
                for name, value in SECURITY_HEADERS.items():
                    response_headers.setdefault(name, value)
                if request_facts.new_browser:
                    response_headers.append("set-cookie", self._browser_cookie(request_facts.browser))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except errors.UploadTooLargeError as refusal:
            if started:
                raise
            await _error_response(scope, refusal)(scope, receive, send_with_headers)

    def _browser_cookie(self, value: str) -> str:
        return f"{self.secrets.browser_cookie}={value}; Path=/; HttpOnly; SameSite=Strict"


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:  # a malformed Cookie header is no cookie at all
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def _bearer(value: str | None) -> str | None:
    if value is None or not value.lower().startswith("bearer "):
        return None
    return value[7:].strip() or None


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that counts the body as it arrives and raises once it passes ``limit`` (a client may stream a
    body without a ``Content-Length``, or send more than it declared)."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise errors.UploadTooLargeError(f"the request body is larger than this server accepts ({limit})")
        return message

    return counted


def wants_json(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    accept = Headers(scope=scope).get("accept", "")
    return path.startswith("/api/") or ("application/json" in accept and "text/html" not in accept)


def error_body(error: errors.LorahubError) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": error.code, "message": error.message, "hint": error.hint}}


def _error_response(scope: Scope, error: errors.RequestRefusedError) -> Response:
    if wants_json(scope):
        return JSONResponse(error_body(error), status_code=error.status)
    text = f"error[{error.code}]: {error.message}\n" + (f"hint: {error.hint}\n" if error.hint else "")
    return PlainTextResponse(text, status_code=error.status)
