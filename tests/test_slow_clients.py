"""Slow and greedy clients cannot hold the intake: real sockets that send half a request.

Each test runs a gateway (intake role only) with short deadlines and counts what a user
would see: a ``408`` then the connection closed, within the bound, while other clients
are still answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from .conftest import RunningGateway, make_event, signed_headers, write_conf

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
#: The body's unread rest is drained this long after a 408 (``lingering_time``), plus slack.
LINGER = 2.0
SLACK = 1.5


async def start(
    tmp_path: Path, redis_url: str, start_gateway, **intake: float | int
) -> RunningGateway:
    settings = {
        "header_timeout": HEADER_TIMEOUT,
        "body_timeout": BODY_TIMEOUT,
        "max_connections": 1000,
        "max_connections_per_peer": 1000,
        **intake,
    }
    extra = "\n".join(f"{key} = {value}" for key, value in settings.items())
    conf = write_conf(tmp_path, redis_url=redis_url, intake_extra=extra)
    return await start_gateway(conf, roles=("intake",))


def request_bytes(event: dict[str, object] | None = None) -> tuple[bytes, bytes]:
    """A whole signed ``POST /v1/events``: ``(head, body)``."""
    body = json.dumps(event or make_event()).encode()
    headers = signed_headers(body)
    head = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode(), body


async def connect(gw: RunningGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.gateway.bound_port)


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    data = await asyncio.wait_for(reader.read(), limit)
    return data, time.monotonic()


async def good_request(gw: RunningGateway) -> int:
    reader, writer = await connect(gw)
    head, body = request_bytes()
    writer.write(head + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return int(status_line.split()[1])


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_partial_headers_get_408_and_are_closed_while_others_are_served(
    tmp_path: Path, redis_url: str, start_gateway
):
    gw = await start(tmp_path, redis_url, start_gateway)
    head, _ = request_bytes()
    slow = [await connect(gw) for _ in range(300)]
    began = time.monotonic()
    for _, writer in slow:
        writer.write(head[: len(head) // 2])  # half the headers, then nothing
    # served meanwhile: the intake is not held by the slow ones
    assert await good_request(gw) == 202
    answers = await asyncio.gather(*(read_until_closed(r, 10) for r, _ in slow))
    for data, closed_at in answers:
        assert status_of(data) == 408
        assert b"Connection: close" in data
        assert b'"error":"request_timeout"' in data
        assert closed_at - began < HEADER_TIMEOUT + SLACK
    assert gw.gateway.intake.stats.header_timeouts == 300
    assert gw.gateway.intake.stats.open_connections == 0
    for _, writer in slow:
        writer.close()


async def test_headers_then_no_body_get_408_and_are_closed(
    tmp_path: Path, redis_url: str, start_gateway
):
    gw = await start(tmp_path, redis_url, start_gateway)
    head, body = request_bytes()
    slow = [await connect(gw) for _ in range(300)]
    began = time.monotonic()
    for _, writer in slow:
        writer.write(head + body[:10])  # all the headers, a tenth of the body at most
    assert await good_request(gw) == 202
    answers = await asyncio.gather(*(read_until_closed(r, 15) for r, _ in slow))
    for data, closed_at in answers:
        assert status_of(data) == 408
        assert b"Connection: close" in data
        assert b"body did not arrive in time" in data
        assert closed_at - began < BODY_TIMEOUT + LINGER + SLACK
    assert gw.gateway.intake.stats.body_timeouts == 300
    for _, writer in slow:
        writer.close()


async def test_a_request_trickled_within_the_bounds_is_served(
    tmp_path: Path, redis_url: str, start_gateway
):
    gw = await start(tmp_path, redis_url, start_gateway, header_timeout=3, body_timeout=3)
    reader, writer = await connect(gw)
    head, body = request_bytes()
    for part in (head[:40], head[40:], body[:20], body[20:]):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.5)
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_of(status_line) == 202
    writer.close()


async def test_an_idle_kept_alive_connection_is_not_timed_out_by_the_header_deadline(
    tmp_path: Path, redis_url: str, start_gateway
):
    gw = await start(tmp_path, redis_url, start_gateway, keepalive_timeout=30)
    reader, writer = await connect(gw)
    for _ in range(2):
        head, body = request_bytes()
        writer.write(head + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_of(status_line) == 202
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b"}")
        await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # idle between requests: allowed
    assert gw.gateway.intake.stats.header_timeouts == 0
    writer.close()


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(
    tmp_path: Path, redis_url: str, start_gateway
):
    gw = await start(tmp_path, redis_url, start_gateway, keepalive_timeout=1)
    reader, writer = await connect(gw)
    head, body = request_bytes()
    writer.write(head + body)
    answer, _ = await read_until_closed(reader, 10)  # closed, not held open
    assert status_of(answer) == 202
    writer.close()


@pytest.mark.parametrize(
    "caps",
    [
        {"max_connections_per_peer": 5},
        {"max_connections": 5},
    ],
    ids=["per peer", "in all"],
)
async def test_connections_past_the_cap_are_closed_at_once(
    tmp_path: Path, redis_url: str, start_gateway, caps: dict[str, int]
):
    gw = await start(tmp_path, redis_url, start_gateway, header_timeout=30, **caps)
    held = [await connect(gw) for _ in range(5)]
    await asyncio.sleep(0.2)
    extra_reader, extra_writer = await connect(gw)  # the kernel accepts; the intake drops it
    try:
        data = await asyncio.wait_for(extra_reader.read(), 5)
    except ConnectionResetError:
        data = b""
    assert data == b""
    assert gw.gateway.intake.stats.refused_connections == 1
    assert gw.gateway.intake.stats.open_connections == 5
    # one of the held connections goes: a new client is served again
    held[0][1].close()
    await asyncio.sleep(0.2)
    assert await good_request(gw) == 202
    for _, writer in [*held[1:], (extra_reader, extra_writer)]:
        writer.close()
