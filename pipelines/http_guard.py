"""Checks every write to the HTTP app passes (``http_api`` and ``review_api``): JSON only,
from no other origin, and no open server beyond loopback.

A browser lets any web page send a "simple" cross-site POST (``text/plain``, a form) with
no preflight; requiring ``application/json`` forces a preflight that a page of another
origin does not pass, and a foreign ``Origin`` header is refused outright. Clients that are
not browsers send no ``Origin`` and are unaffected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from urllib.parse import urlsplit


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

    from starlette.requests import ClientDisconnect

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
        logging.getLogger("flywheel.http").info(
            "client %s went away after %d bytes of %s %s", client, len(body), request.method, request.url.path
        )
        raise BodyProblem(400, "client_disconnect", "the client went away before the body ended") from None
    return bytes(body)
