"""json_hook's native HTTP/1.1 client against real aiohttp servers on 127.0.0.1.

Every server here is an ``aiohttp.web`` app on a real socket (one with TLS, from a
throwaway trustme CA); the server side records what it received and on which connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme
from aiohttp import web
from gateway_json_hook.transport import EXCERPT_BYTES, JsonHookTransport

from gateway import EndpointGone, OutboundPolicy, PermanentError, TransientError
from gateway.redis_server import free_port

LOOPBACK = OutboundPolicy(["127.0.0.0/8", "::1/128"])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    url: str
    #: (peer address, body) of every request the handler saw, in order.
    seen: list[tuple[str, bytes]] = field(default_factory=list)
    #: Most requests handled at the same time.
    peak: int = 0
    active: int = 0

    @property
    def connections(self) -> set[str]:
        return {peer for peer, _ in self.seen}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    runners: list[web.AppRunner] = []

    async def start(
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = 75.0,
        host: str = "127.0.0.1",
    ) -> Server:
        port = free_port()
        scheme = "https" if ssl_context else "http"
        server = Server(f"{scheme}://{host}:{port}/hook")

        async def handle(request: web.Request) -> web.StreamResponse:
            server.active += 1
            server.peak = max(server.peak, server.active)
            try:
                body = await request.read()
                peer = request.transport.get_extra_info("peername") if request.transport else None
                server.seen.append((repr(peer), body))
                return await handler(request)
            finally:
                server.active -= 1

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=keepalive_timeout, shutdown_timeout=0.2
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
        runners.append(runner)
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


def status(code: int, body: bytes = b"", **headers: str) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=code, body=body, headers=headers)

    return handler


def client(url: str, **kwargs: object) -> JsonHookTransport:
    options: dict[str, object] = {"max_connections": 4, "timeout": 5.0, "policy": LOOPBACK}
    options.update(kwargs)
    policy = options.pop("policy")
    assert isinstance(policy, OutboundPolicy)
    return JsonHookTransport(url, policy, **options)  # type: ignore[arg-type]


HEADERS = [("webhook-id", "msg_1"), ("webhook-timestamp", "1700000000")]


async def test_2xx_delivers_with_fixed_and_per_request_headers(serve):
    received: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=200, text="ok, thanks")

    server = await serve(handler)
    transport = client(
        server.url, headers=[("X-Tenant", "acme"), ("Content-Type", "application/json")]
    )
    try:
        await transport.send(HEADERS, b'{"a": 1}')
        await transport.send(HEADERS, b'{"a": 2}')
    finally:
        await transport.close()
    assert [body for _, body in server.seen] == [b'{"a": 1}', b'{"a": 2}']
    assert len(server.connections) == 1  # kept alive and reused
    headers = received[0]
    assert headers["X-Tenant"] == "acme"
    assert headers["Content-Type"] == "application/json"
    assert headers["webhook-id"] == "msg_1"
    assert headers["Content-Length"] == "8"
    assert headers["Host"] == server.url.split("/")[2]


async def test_204_and_304_have_no_body(serve):
    answers = iter([204, 304, 204])

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    server = await serve(handler)
    transport = client(server.url)
    try:
        assert (await transport.request(HEADERS, b"{}")).status == 204
        with pytest.raises(PermanentError, match="HTTP 304"):
            await transport.send(HEADERS, b"{}")
        assert (await transport.request(HEADERS, b"{}")).status == 204
    finally:
        await transport.close()
    assert len(server.connections) == 1


async def test_redirect_is_not_followed(serve):
    server = await serve(status(302, Location="http://127.0.0.1:9/elsewhere"))
    transport = client(server.url)
    try:
        with pytest.raises(PermanentError) as info:
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert "redirects are not followed; Location: http://127.0.0.1:9/elsewhere" in info.value.reason
    assert info.value.status == 302
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    ("code", "error", "retry_after"),
    [
        (410, EndpointGone, None),
        (400, PermanentError, None),
        (404, PermanentError, None),
        (429, TransientError, 30.0),
        (503, TransientError, 7.0),
        (500, TransientError, None),
    ],
)
async def test_status_mapping(serve, code, error, retry_after):
    headers = {"Retry-After": str(int(retry_after))} if retry_after else {}
    server = await serve(status(code, b"nope", **headers))
    transport = client(server.url)
    try:
        with pytest.raises(error) as info:
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert type(info.value) is error
    assert info.value.status == code
    assert info.value.reason.startswith(f"HTTP {code}: nope")
    if error is TransientError:
        assert info.value.retry_after == retry_after


async def test_chunked_answers_keep_the_connection(serve):
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        response = web.StreamResponse(status=200 if calls % 2 else 503)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"first part, ", b"second part"):
            await response.write(part)
        await response.write_eof()
        return response

    server = await serve(handler)
    transport = client(server.url)
    try:
        await transport.send(HEADERS, b"{}")
        with pytest.raises(TransientError, match=r"^HTTP 503: first part, second part$"):
            await transport.send(HEADERS, b"{}")
        await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert len(server.seen) == 3
    assert len(server.connections) == 1


async def test_connection_close_is_honoured(serve):
    async def handler(_request: web.Request) -> web.Response:
        response = web.Response(status=200, text="bye")
        response.force_close()
        return response

    server = await serve(handler)
    transport = client(server.url)
    try:
        for _ in range(3):
            await transport.send(HEADERS, b"{}")
        assert transport.connections == 0
    finally:
        await transport.close()
    assert len(server.seen) == 3
    assert len(server.connections) == 3


async def test_server_closing_idle_connections(serve):
    server = await serve(status(204), keepalive_timeout=0.1)
    transport = client(server.url)
    try:
        await transport.send(HEADERS, b'{"n": 1}')
        await asyncio.sleep(0.4)  # the server closes the idle connection meanwhile
        await transport.send(HEADERS, b'{"n": 2}')
    finally:
        await transport.close()
    assert [body for _, body in server.seen] == [b'{"n": 1}', b'{"n": 2}']
    assert len(server.connections) == 2


async def test_reused_connection_dropped_before_answering_is_retried_once_fresh(serve):
    """The race the retry exists for: the server drops a kept-alive connection just as
    the next request arrives, without answering (nor processing) it."""
    per_connection: dict[object, int] = {}
    processed: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        key = id(request.transport)
        per_connection[key] = per_connection.get(key, 0) + 1
        if per_connection[key] == 2:
            request.transport.abort()  # the second request on any connection: dropped
            await asyncio.sleep(5)
        processed.append(await request.read())
        return web.Response(status=204)

    server = await serve(handler)
    transport = client(server.url)
    try:
        await transport.send(HEADERS, b'{"n": 1}')
        await transport.send(HEADERS, b'{"n": 2}')  # dropped on the reused one, retried
    finally:
        await transport.close()
    assert processed == [b'{"n": 1}', b'{"n": 2}']  # each processed exactly once
    assert len(server.connections) == 2


async def test_fresh_connection_dropped_is_not_retried(serve):
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(5)
        return web.Response(status=204)

    server = await serve(handler)
    transport = client(server.url)
    try:
        with pytest.raises(TransientError, match=r"ServerDisconnected|ConnectionResetError"):
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert len(server.seen) == 1


async def test_slow_server_times_out_and_the_pool_recovers(serve):
    slow = True

    async def handler(_request: web.Request) -> web.Response:
        if slow:
            await asyncio.sleep(3)
        return web.Response(status=204)

    server = await serve(handler)
    transport = client(server.url, timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransientError, match=r"^TimeoutError"):
            await transport.send(HEADERS, b"{}")
        assert loop.time() - started < 1.5
        slow = False
        await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()


async def test_nothing_listening_is_transient():
    transport = client(f"http://127.0.0.1:{free_port()}/hook")
    try:
        with pytest.raises(TransientError, match="ConnectionRefusedError"):
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_loopback_without_allow_list_is_refused(serve, host):
    server = await serve(status(204))
    url = server.url.replace("127.0.0.1", host)
    transport = client(url, policy=OutboundPolicy())
    try:
        with pytest.raises(PermanentError, match=r"refused to connect to .*loopback"):
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert server.seen == []


async def test_non_canonical_ipv4_host_is_an_invalid_url(serve):
    server = await serve(status(204))
    transport = client(server.url.replace("127.0.0.1", "2130706433"))
    try:
        with pytest.raises(PermanentError, match="invalid URL: 2130706433 - is not a canonical"):
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert server.seen == []


async def test_pool_limit_is_respected(serve):
    async def handler(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(status=204)

    server = await serve(handler)
    transport = client(server.url, max_connections=3)
    try:
        await asyncio.gather(*(transport.send(HEADERS, b"%d" % i) for i in range(40)))
        assert transport.connections <= 3
    finally:
        await transport.close()
    assert len(server.seen) == 40
    assert server.peak == 3
    assert len(server.connections) <= 3


async def test_large_error_body_excerpt_is_capped(serve):
    big = b"x" * 200_000

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500 if len(server.seen) == 1 else 204, body=big)

    server = await serve(handler)
    transport = client(server.url)
    try:
        response = await transport.request(HEADERS, b"{}")
        assert response.status == 500
        assert response.excerpt == b"x" * EXCERPT_BYTES
        await transport.send(HEADERS, b"{}")  # a 2xx with a big body is read and dropped
        await transport.send(HEADERS, b"{}")  # ... on a connection that stays usable
    finally:
        await transport.close()
    assert len(server.seen) == 3
    # The 500's body was not read to its end: that connection was not reused.
    assert len(server.connections) == 2


async def test_excerpt_is_capped_through_send(serve):
    server = await serve(status(502, b"y" * 5000))
    transport = client(server.url)
    try:
        with pytest.raises(TransientError) as info:
            await transport.send(HEADERS, b"{}")
    finally:
        await transport.close()
    assert info.value.reason == "HTTP 502: " + "y" * EXCERPT_BYTES


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_verification(serve, ca: trustme.CA):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    server = await serve(status(204), ssl_context=server_ctx)
    url = server.url.replace("127.0.0.1", "localhost")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    trusted = client(url, ssl_context=client_ctx)
    untrusted = client(url)  # the system's trust store: our throwaway CA is not in it
    try:
        await trusted.send(HEADERS, b'{"tls": 1}')
        await trusted.send(HEADERS, b'{"tls": 2}')
        with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.send(HEADERS, b'{"tls": 3}')
    finally:
        await trusted.close()
        await untrusted.close()
    assert [body for _, body in server.seen] == [b'{"tls": 1}', b'{"tls": 2}']
    assert len(server.connections) == 1


def test_bad_configured_headers_are_refused():
    with pytest.raises(ValueError, match="line break"):
        client("http://127.0.0.1:9/", headers=[("X-A", "a\r\nInjected: 1")])
    with pytest.raises(ValueError, match="not a valid header name"):
        client("http://127.0.0.1:9/", headers=[("X A", "a")])
    with pytest.raises(ValueError, match="set by the HTTP client"):
        client("http://127.0.0.1:9/", headers=[("Transfer-Encoding", "chunked")])


def test_under_uvloop():
    """The gateway's processes run uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[bytes]:
        seen: list[bytes] = []

        async def handler(request: web.Request) -> web.StreamResponse:
            seen.append(await request.read())
            response = web.StreamResponse(status=200)
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"chunked")
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.1, shutdown_timeout=0.2)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        transport = client(f"http://127.0.0.1:{port}/hook")
        try:
            await transport.send(HEADERS, b"1")
            await transport.send(HEADERS, b"2")
            await asyncio.sleep(0.3)  # the idle connection is closed by the server
            await transport.send(HEADERS, b"3")
            with pytest.raises(PermanentError, match="loopback"):
                await client(f"http://127.0.0.1:{port}/hook", policy=OutboundPolicy()).send(
                    HEADERS, b"4"
                )
        finally:
            await transport.close()
            await runner.cleanup()
        return seen

    assert uvloop.run(scenario()) == [b"1", b"2", b"3"]
