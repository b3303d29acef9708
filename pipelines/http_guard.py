"""Checks every write to the HTTP app passes (``http_api`` and ``review_api``): JSON only,
from no other origin, and no open server beyond loopback; and two ASGI guards: a limit on
failed credentials per client address (``GuessLimit``) and, for a server without a token,
loopback host names only (``LoopbackHosts``, against DNS rebinding).

A browser lets any web page send a "simple" cross-site POST (``text/plain``, a form) with
no preflight; requiring ``application/json`` forces a preflight that a page of another
origin does not pass, and a foreign ``Origin`` header is refused outright. Clients that are
not browsers send no ``Origin`` and are unaffected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse


def is_json(content_type: str | None) -> bool:
    """``application/json`` with any parameters, in any case (RFC 9110 media types)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "application/json"


def foreign_origin(origin: str | None, host: str | None) -> bool:
    """True when a browser says the request comes from a page of another origin (or from an
    opaque one: ``Origin: null``). No ``Origin`` header: not a browser's cross-site write."""
    if origin is None:
        return False
    if origin.strip().lower() == "null":
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return True
    return netloc.lower() != (host or "").lower()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BodyProblem(Exception):
    """The body could not be read: ``status``, ``code`` and what to do (an error reply)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def read_body(request, limit: int, deadline_s: float) -> bytes:
    """The request body, at most ``limit`` bytes, read within ``deadline_s`` (a client that
    trickles its body holds a connection and a task; it gets 408). A client that goes away
    mid-body is logged in one line, not a traceback. Raises BodyProblem."""

    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyProblem(
            413, "too_large", f"body is {declared} bytes; the limit is {limit}; split the batch"
        )
    body = bytearray()
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyProblem(413, "too_large", f"body exceeds {limit} bytes; split the batch")
    except TimeoutError:
        raise BodyProblem(
            408,
            "body_timeout",
            f"the body did not arrive within {deadline_s:.0f}s (http.body_timeout_s); resend",
        ) from None
    except ClientDisconnect:
        client = request.client.host if request.client else "?"
        logging.getLogger("flywheel.http").warning(
            "client %s went away after %d bytes of %s %s", client, len(body), request.method, request.url.path
        )
        raise BodyProblem(400, "client_disconnect", "the client went away before the body ended") from None
    return bytes(body)


AUTH_FAILURES, AUTH_WINDOW_S = 10, 60.0  # failed credentials per client address and window


class FailedAttempts:
    """Failed credentials per client address in a sliding window; past ``limit`` the address
    waits until its oldest failure leaves the window (429). Bounded: at most 10,000
    addresses are tracked, the stalest dropped first."""

    def __init__(
        self, limit: int = AUTH_FAILURES, window_s: float = AUTH_WINDOW_S, max_clients: int = 10_000
    ):
        self.limit, self.window_s, self.max_clients = limit, window_s, max_clients
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if kept:
            self._failures[client] = kept
        else:
            self._failures.pop(client, None)
        return kept

    def wait_s(self, client: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent(client, now)
            return self.window_s - (now - recent[0]) if len(recent) >= self.limit else 0.0

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._failures.setdefault(client, []).append(now)
            if len(self._failures) > self.max_clients:
                stalest = min(self._failures, key=lambda c: self._failures[c][-1])
                del self._failures[stalest]


class GuessLimit:
    """ASGI middleware: a request that carries credentials (an ``Authorization`` header, or
    the review page's sign-in) and is answered 401 counts as a failure of its client address
    (the connection's, or the one a trusted proxy names: ``http.trusted_proxies``); past
    ``AUTH_FAILURES`` in ``AUTH_WINDOW_S`` every credentialed request from that address gets
    429 with ``Retry-After`` until the oldest failure ages out. One limit for every route
    (feedback, predict, operational, review, admin), so no route is a side door for guessing."""

    def __init__(self, app, failures: FailedAttempts | None = None):
        self.app, self.failures = app, failures or FailedAttempts()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _credentialed(scope):
            return await self.app(scope, receive, send)
        client = scope["client"][0] if scope.get("client") else "?"
        wait = self.failures.wait_s(client)
        if wait:
            refused = JSONResponse(
                {
                    "error": "too_many_attempts",
                    "message": f"too many failed credentials; try again in {wait:.0f}s",
                },
                status_code=429,
                headers={"Retry-After": str(int(wait) + 1)},
            )
            return await refused(scope, receive, send)
        status = 0

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status == 401:
            self.failures.failed(client)


def _credentialed(scope) -> bool:
    if scope["method"] == "POST" and scope["path"] == "/review/session":
        return True
    return any(name == b"authorization" for name, _ in scope["headers"])


class LoopbackHosts:
    """ASGI middleware for a server without ``http.auth_token`` (loopback only): a request
    whose ``Host`` is not a loopback name is refused (421). A web page whose own host name an
    attacker re-pointed at 127.0.0.1 (DNS rebinding) sends its own name as ``Host`` and as
    ``Origin``, which match each other; only the host name tells it apart."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name.strip() or "?"):
                refused = JSONResponse(
                    {
                        "error": "host_not_allowed",
                        "message": "this server has no http.auth_token and answers loopback host names "
                        "only (localhost, 127.0.0.1, [::1]); set a token to serve other names",
                    },
                    status_code=421,
                )
                return await refused(scope, receive, send)
        return await self.app(scope, receive, send)
