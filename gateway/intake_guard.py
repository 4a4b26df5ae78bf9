"""What keeps slow or greedy clients from holding the intake.

aiohttp bounds how long an *idle* connection stays open (``keepalive_timeout``) but not
how long a client may take to finish a request's headers, and nothing caps how many
connections are open: a few thousand sockets that send half a request would each hold
a file descriptor for as long as they like. The intake wraps every connection's
protocol to:

- refuse a connection past ``[intake] max_connections`` in all or
  ``max_connections_per_peer`` from one address (closed at once, counted);
- answer ``408`` and close when a request's headers are not complete within
  ``header_timeout`` of the connection opening (or of its first byte, on a kept-alive
  connection). The body's deadline (``body_timeout``) is the handler's: see
  ``Intake._read_body``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

Handler = Callable[[web.Request], Any]


@dataclass
class IntakeStats:
    """Counters a metrics endpoint can export; nothing resets them."""

    #: Events accepted with a type outside the catalog, by type.
    unknown_types: Counter[str] = field(default_factory=Counter)
    #: Requests answered 408 because their headers or their body came too slowly.
    header_timeouts: int = 0
    body_timeouts: int = 0
    #: Connections closed on arrival: over ``max_connections`` or the per-peer cap.
    refused_connections: int = 0
    open_connections: int = 0


def timeout_response(what: str) -> bytes:
    """A whole 408 written straight to the socket: no request object exists yet."""
    body = (
        b'{"error":"request_timeout","message":"the request\'s '
        + what.encode()
        + b' did not arrive in time"}'
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    def __init__(
        self,
        stats: IntakeStats,
        *,
        header_timeout: float,
        max_connections: int,
        max_connections_per_peer: int,
    ) -> None:
        self.stats = stats
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.max_per_peer = max_connections_per_peer
        self._per_peer: Counter[str] = Counter()
        self._by_handler: dict[object, _Guarded] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, inner())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The headers are complete once a handler runs: the header deadline is off."""
        guarded = self._by_handler.get(request.protocol)
        if guarded is not None:
            guarded.request_started()
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            if guarded is not None:
                guarded.request_done()

    def _admit(self, peer: str) -> bool:
        if self.max_connections and self.stats.open_connections >= self.max_connections:
            return False
        return not (self.max_per_peer and self._per_peer[peer] >= self.max_per_peer)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a deadline and the caps."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.admitted = False
        self.in_request = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, though it is one.
        transport = cast(asyncio.Transport, base)
        name = transport.get_extra_info("peername")
        self.peer = str(name[0]) if isinstance(name, tuple) and name else ""
        stats = self.guard.stats
        if not self.guard._admit(self.peer):
            stats.refused_connections += 1
            transport.abort()  # RST: the socket's descriptor is freed at once
            return
        self.admitted = True
        self.transport = transport
        stats.open_connections += 1
        self.guard._per_peer[self.peer] += 1
        self.guard._by_handler[self.inner] = self
        self.inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.guard.header_timeout > 0:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.guard.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _headers_late(self) -> None:
        self.timer = None
        if self.in_request or self.transport is None or self.transport.is_closing():
            return
        self.guard.stats.header_timeouts += 1
        self.transport.write(timeout_response("headers"))
        self.transport.close()

    def request_started(self) -> None:
        self.in_request = True
        self._disarm()

    def request_done(self) -> None:
        self.in_request = False

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if not self.in_request and data:
            self._arm()  # a new request on a kept-alive connection starts its clock
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self._disarm()
        self.guard.stats.open_connections -= 1
        self.guard._per_peer[self.peer] -= 1
        if self.guard._per_peer[self.peer] <= 0:
            del self.guard._per_peer[self.peer]
        self.guard._by_handler.pop(self.inner, None)
        self.inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """A ``TCPSite``/``SockSite`` whose connections go through a ``ConnectionGuard``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        *,
        host: str | None = None,
        port: int = 0,
        sock: socket.socket | None = None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self.guard = guard
        self.host = host
        self.port = port
        self.sock = sock

    @property
    def name(self) -> str:
        return f"http://{self.host or '0.0.0.0'}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        factory = self.guard.factory(server)
        if self.sock is not None:
            self._server = await loop.create_server(factory, sock=self.sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(
                factory, self.host, self.port, backlog=self._backlog, reuse_address=True
            )
