"""Checks every write to the HTTP app passes (``http_api`` and ``review_api``): JSON only,
from no other origin, and no open server beyond loopback.

A browser lets any web page send a "simple" cross-site POST (``text/plain``, a form) with
no preflight; requiring ``application/json`` forces a preflight that a page of another
origin does not pass, and a foreign ``Origin`` header is refused outright. Clients that are
not browsers send no ``Origin`` and are unaffected.
"""

from __future__ import annotations

import ipaddress
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
