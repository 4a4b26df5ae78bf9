"""A lean HTTP/1.1 client for json_hook's one fixed endpoint.

A json_hook channel only ever POSTs small signed bodies to one URL, so most of a general
client's work (URL handling per request, cookie jars, redirects, streaming payload writers,
multidict headers, decompression) is overhead. This client keeps only what that job needs:

* one origin per channel (scheme, host and port fixed); the request line and the fixed
  headers are encoded once, each request is one ``transport.write`` of head + body;
* a pool of at most ``max_connections`` keep-alive connections (``asyncio.Protocol``, no
  streams), reused most-recently-used first;
* responses parsed by ``httptools`` (llhttp, the C parser uvicorn uses): status, the few
  headers an outcome needs (``Retry-After``, ``Location``), and of an error answer at most
  ``EXCERPT_BYTES`` of its body; a 2xx body is read and dropped so the connection stays
  reusable;
* every address it connects to is checked by the core's SSRF guard (``GuardedResolver``
  for names, ``OutboundPolicy.refusal`` for IP literals), on every resolution;
* redirects are never followed; one total timeout covers waiting for a pooled connection,
  connecting (TLS included) and the whole answer.

Retry on a reused connection: a keep-alive connection the server closed while it sat idle
looks fine until the request is written. If such a *reused* connection ends before a
single byte of the answer arrived, the request is sent once more on a fresh connection.
This is the usual HTTP/1.1 client behaviour, with the usual caveat: POST is not
idempotent, and a server that processed the request and then dropped the connection
without answering gets it twice. Receivers dedupe on ``webhook-id`` (the same on both
tries), and a delivery that is retried after any transient failure has the same property.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import cast

import aiohttp
import httptools
import yarl

from gateway import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    PermanentError,
    noncanonical_ipv4,
    outbound_error,
    raise_for_outcome,
)

#: Of an error answer, this much is kept (and read: the rest is not waited for).
EXCERPT_BYTES = 512

#: Headers the client sets itself (framing and connection management): not configurable.
RESERVED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade"}
)
#: Response headers an outcome needs, by lower-cased name → the name ``raise_for_outcome``
#: looks up.
_WANTED = {b"retry-after": "Retry-After", b"location": "Location"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A host made of digits and dots is an IPv4 literal to aiohttp too; a non-canonical one
#: (``2130706433``, ``127.1``) is refused as an invalid URL, as aiohttp does.
try:
    _USER_AGENT = f"Tocsin/{version('tocsin')}"
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    _USER_AGENT = "Tocsin"


class ServerDisconnected(ConnectionError):
    """The server closed the connection before its answer was complete."""


class ProtocolError(OSError):
    """The server's answer is not valid HTTP/1.1 (or asks to switch protocols)."""


@dataclass(slots=True)
class Response:
    status: int
    #: Only ``Retry-After`` and ``Location``, when present.
    headers: dict[str, str] = field(default_factory=dict)
    #: At most ``EXCERPT_BYTES`` of the body of a non-2xx answer; empty for a 2xx.
    excerpt: bytes = b""


class _NothingReceived(Exception):
    """The connection ended (or failed) before any byte of the answer: carries why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        #: The connection is gone (or going): never handed out again.
        self.closed = False
        #: Has served a request before: a failure with nothing received may be staleness.
        self.reused = False
        self._waiter: asyncio.Future[Response] | None = None
        self._response = Response(0)
        self._received = False
        self._headers_done = False
        self._complete = False
        self._framed = False  # Content-Length or Transfer-Encoding seen
        self._excerpt = bytearray()
        self._keep_alive = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have this API.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for (a late 408 on an idle connection, extra data after
            # an answer): the connection's state is unknown, so it is not reused.
            self._keep_alive = False
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._received:
            waiter.set_exception(
                _NothingReceived(exc or ServerDisconnected("server closed the connection"))
            )
        elif self._headers_done and (not self._framed or not 200 <= self._response.status < 300):
            # A body delimited by the end of the connection is complete now; of an error
            # answer cut short, the excerpt so far is what there is.
            self._finish()
        else:
            waiter.set_exception(
                ServerDisconnected("server closed the connection before its answer was complete")
            )

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in {b"content-length", b"transfer-encoding"}:
            self._framed = True
        else:
            wanted = _WANTED.get(key)
            if wanted is not None:
                self._response.headers[wanted] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._response.status = status
        if status >= 200:
            self._headers_done = True
            if status in (204, 304):
                self._framed = True  # no body, whatever the headers say

    def on_body(self, body: bytes) -> None:
        status = self._response.status
        if 200 <= status < 300 or status < 200:
            return  # a 2xx body is dropped; 1xx have none
        room = EXCERPT_BYTES - len(self._excerpt)
        if room > 0:
            self._excerpt += body[:room]
            if len(self._excerpt) >= EXCERPT_BYTES:
                # Enough to tell what went wrong: the rest is not waited for (and the
                # connection, with a body half read, is not reused).
                self._finish()

    def on_message_complete(self) -> None:
        if self._response.status < 200:
            # An informational answer (100, 103): the real one follows on the same bytes.
            self._response = Response(0)
            self._framed = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # -- the pool's interface -----------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    async def request(self, data: bytes, deadline: float) -> Response:
        """Write one request and wait for its answer, at most until ``deadline``."""
        transport = self._transport
        assert transport is not None
        self._response = Response(0)
        self._received = self._headers_done = self._complete = self._framed = False
        self._excerpt = bytearray()
        self._keep_alive = False
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_at(deadline, self._time_out)
        try:
            transport.write(data)
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self.reused = True

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # -- internals ----------------------------------------------------------------------

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._response.excerpt = bytes(self._excerpt)
            waiter.set_result(self._response)

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _time_out(self) -> None:
        self._fail(TimeoutError("no complete answer within the timeout"))


class JsonHookTransport:
    """POSTs to one fixed URL over a small pool of keep-alive connections."""

    def __init__(
        self,
        url: str,
        policy: OutboundPolicy,
        *,
        max_connections: int,
        timeout: float,
        headers: Iterable[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``headers`` are sent with every request (checked here: a name must be an HTTP
        token, a value must not hold CR, LF or NUL, framing headers are the client's).
        ``ssl_context`` defaults to ``ssl.create_default_context()`` (verification on)."""
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._host = parsed.raw_host  # IDNA-encoded; an IPv6 literal without brackets
        port = parsed.port
        assert port is not None  # http and https have default ports
        self._port = port
        self._tls: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            self._tls = ssl_context or ssl.create_default_context()
        self._policy = policy
        self._resolver: GuardedResolver | None = None  # made in the loop (aiohttp's needs one)
        self._timeout = timeout
        self._max = max_connections
        self._slots: asyncio.Semaphore | None = None
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._closed = False

        fixed = {
            "host": ("Host", parsed.host_port_subcomponent or self._host),
            "user-agent": ("User-Agent", _USER_AGENT),
            "accept": ("Accept", "*/*"),
        }
        if parsed.user is not None:
            # user:password@ in the URL: Basic auth, encoded as the aiohttp client does.
            auth = aiohttp.BasicAuth(parsed.user, parsed.password or "").encode()
            fixed["authorization"] = ("Authorization", auth)
        for name, value in headers:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"headers: {name!r} is not a valid header name")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"headers: the value of {name} holds a line break or NUL")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"headers: {name} is set by the HTTP client")
            fixed[name.lower()] = (name, value)
        path = parsed.raw_path_qs or "/"
        lines = [f"POST {path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in fixed.values()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def send(self, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """POST ``body``; return if the answer is 2xx, else raise the ``DeliveryError``
        that says what happens next (same mapping as every HTTP channel)."""
        try:
            response = await self.request(headers, body)
        except (TimeoutError, OSError) as exc:
            raise outbound_error(exc) from None
        raise_for_outcome(
            response.status, response.headers, response.excerpt.decode("utf-8", "replace")
        )

    async def request(self, headers: Iterable[tuple[str, str]], body: bytes) -> Response:
        """POST ``body`` with these per-request headers (plus the fixed ones).

        Raises ``TimeoutError``, ``OSError`` (connection errors, ``OutboundRefused``,
        ``ServerDisconnected``, ``ProtocolError``) or ``PermanentError`` (a URL no
        connection may be made to)."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
        data = b"".join(
            (
                self._head,
                f"{extra}Content-Length: {len(body)}\r\n\r\n".encode("latin-1"),
                body,
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        slots = self._slots
        if slots.locked():
            async with asyncio.timeout_at(deadline):
                await slots.acquire()
        else:
            await slots.acquire()  # returns at once
        try:
            fresh_only = False
            while True:
                if self._closed:
                    raise ConnectionAbortedError("the channel's HTTP client is closed")
                conn = None if fresh_only else self._take_idle()
                if conn is None:
                    conn = await self._connect(loop, deadline)
                self._busy.add(conn)
                reused = conn.reused
                try:
                    response = await conn.request(data, deadline)
                except _NothingReceived as exc:
                    conn.abort()
                    if reused and not fresh_only:
                        # Most likely closed by the server while idle: once more, fresh;
                        # other idle connections may be stale alike (a server restart).
                        fresh_only = True
                        self._drop_closed_idle()
                        continue
                    raise exc.cause from None
                except BaseException:
                    conn.abort()  # timeout, cancellation, bad answer: state unknown
                    raise
                finally:
                    self._busy.discard(conn)
                if conn.reusable:
                    self._idle.append(conn)
                else:
                    conn.close()
                return response
        finally:
            slots.release()

    async def close(self) -> None:
        self._closed = True
        for conn in (*self._idle, *self._busy):
            conn.close()
        self._idle.clear()
        self._busy.clear()
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connections(self) -> int:
        """Open connections (idle or in use)."""
        return sum(not c.closed for c in self._idle) + len(self._busy)

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used: least likely timed out by the server
            if not conn.closed and not conn.closing:
                return conn
        return None

    def _drop_closed_idle(self) -> None:
        self._idle = [c for c in self._idle if not c.closed]

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        async with asyncio.timeout_at(deadline):
            addresses = await self._addresses()
            error: OSError | None = None
            for family, address in addresses:
                try:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop),
                        address,
                        self._port,
                        family=family,
                        ssl=self._tls,
                        server_hostname=self._host if self._tls is not None else None,
                    )
                except OSError as exc:  # ssl.SSLError included
                    error = exc
                    continue
                return conn
            assert error is not None
            raise error

    async def _addresses(self) -> list[tuple[int, str]]:
        """Where the host may be reached, each address checked by the SSRF guard."""
        host = self._host
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            numeric = noncanonical_ipv4(host)
            if numeric is not None:
                raise PermanentError(numeric) from None
            if self._resolver is None:
                self._resolver = GuardedResolver(self._policy)
            results = await self._resolver.resolve(host, self._port, socket.AF_UNSPEC)
            return [(r["family"], r["host"]) for r in results]
        reason = self._policy.refusal(host)
        if reason is not None:
            raise OutboundRefused(f"refused to connect to {host}: {reason}")
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [(family, host)]


__all__ = [
    "EXCERPT_BYTES",
    "JsonHookTransport",
    "ProtocolError",
    "Response",
    "ServerDisconnected",
]
