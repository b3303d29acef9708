"""How ``flywheel serve`` runs the HTTP app: uvicorn with deadlines on slow clients.

uvicorn alone keeps a connection whose request headers never end, forever: 240 such
clients used up a process's 256 file descriptors and ``/healthz`` failed (issue 27). Here
each connection must finish its request headers within ``http.header_timeout_s`` (armed
when it connects and again after each response on a kept-alive connection), and at most
``http.max_connections`` are held: a new one past the cap evicts the oldest connection
that is still sending headers, so a crowd of slow clients cannot lock out a real one.
Bodies have their own deadline (``http.body_timeout_s``, ``pipelines.http_guard.read_body``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from flywheel.settings import Settings

log = logging.getLogger("flywheel.http")


class GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections: int = 200

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._seen_cycle: object | None = None
        self._made_at = self.loop.time()
        self._header_timer: asyncio.TimerHandle | None = None
        self._await_headers()
        if len(self.connections) > self.max_connections:
            self._evict()

    def _await_headers(self) -> None:
        self._awaiting_headers = True
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline)

    def _headers_done(self) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle  # a request's headers arrived
            self._headers_done()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is self._seen_cycle:
            self._await_headers()  # kept alive: the next request's headers have the same deadline

    def _header_deadline(self) -> None:
        if self._awaiting_headers and not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info("closed %s: no complete request headers within %.0fs", client, self.header_timeout_s)
            self.transport.close()

    def _evict(self) -> None:
        waiting = [c for c in self.connections if getattr(c, "_awaiting_headers", False) and c is not self]
        victim = min(waiting, key=lambda c: getattr(c, "_made_at", 0.0)) if waiting else self
        log.warning(
            "%d connections (http.max_connections %d): closing the oldest one still sending headers",
            len(self.connections),
            self.max_connections,
        )
        victim.transport.close()

    def connection_lost(self, exc) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class with this server's deadlines and cap."""
    return type(
        "FlywheelH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": settings.http.header_timeout_s,
            "max_connections": settings.http.max_connections,
        },
    )
