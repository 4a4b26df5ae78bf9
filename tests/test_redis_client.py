"""The gateway's Redis client packs commands with hiredis: same bytes on the wire, same
errors, for every argument type redis-py accepts, over TCP and unix sockets alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from gateway.redis_client import PackedConnection, PackedUnixDomainSocketConnection, connect
from gateway.redis_server import RedisServer

COMMANDS: list[tuple[object, ...]] = [
    ("SET", "k", "v"),
    ("SET", "clé", "été"),  # str is UTF-8 encoded
    ("ZADD", "z", 1.5, "a", 1e20, "b", 0.1, "c", -3, "d", 10**20, "e"),
    ("SCRIPT LOAD", "return 1"),  # a multi-word command name is split, as redis-py does
    (b"CLIENT SETNAME", b"worker"),
    ("EVALSHA", "f" * 40, 1, "k", b"\x00\xff" * 700, "x" * 10_000),
    ("SET", "k", bytearray(b"from a bytearray")),  # hiredis refuses these: redis-py packs
    ("SET", "k", memoryview(b"from a memoryview")),
    # Long commands are packed in pieces: counts, boundaries and values must still match.
    ("EVALSHA", "f" * 40, 0, *[f"arg-{i}" if i % 3 else b"v" * 1500 for i in range(500)]),
    ("DEL", *[f"k{i}" for i in range(64)]),  # exactly one piece's worth
    ("DEL", *[f"k{i}" for i in range(63)], bytearray(b"late")),  # refused in a later piece
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: str(a[0]))
def test_packs_the_bytes_redis_py_packs(args: tuple[object, ...]) -> None:
    ours = b"".join(bytes(part) for part in PackedConnection().pack_command(*args))
    theirs = b"".join(bytes(part) for part in Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("bad", [True, None, object()])
def test_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(DataError):
        PackedConnection().pack_command("SET", "k", bad)


async def test_round_trips_through_a_real_server(redis_url: str) -> None:
    redis = connect(redis_url)
    try:
        assert redis.connection_pool.connection_class is PackedConnection
        payload = bytes(range(256)) * 40
        await redis.set("k", payload)
        assert await redis.get("k") == payload
        await redis.zadd("z", {"a": 1.25, "b": 2})
        assert await redis.zrange("z", 0, -1, withscores=True) == [(b"a", 1.25), (b"b", 2.0)]
        await redis.set("m", memoryview(b"view"))
        assert await redis.get("m") == b"view"
        # A command long enough to travel in pieces, in a pipeline and alone.
        fields = {f"f{i}": f"value-{i}" * 50 for i in range(300)}
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset("h", mapping=fields)
            pipe.hlen("h")
            assert (await pipe.execute())[1] == 300
        assert await redis.hgetall("h") == {k.encode(): v.encode() for k, v in fields.items()}
    finally:
        await redis.aclose()


async def test_unix_socket_urls_keep_their_connection_kind(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r")  # no port: a unix socket
    url = server.start()
    redis = connect(url)
    try:
        assert redis.connection_pool.connection_class is PackedUnixDomainSocketConnection
        await redis.set("k", "over the socket")
        assert await redis.get("k") == b"over the socket"
    finally:
        await redis.aclose()
        server.stop()


async def test_more_commands_at_once_than_connections_wait_for_one(redis_url: str) -> None:
    """Past the pool's 64 connections a command waits for a free one: 200 blocked reads
    at once all answer (the plain pool raised "Too many connections" at the 65th, which
    a loaded worker hit while settling its sends)."""
    client = connect(redis_url)
    try:
        replies = await asyncio.gather(
            *(client.blpop([f"tocsin:test:empty:{i}"], timeout=0.2) for i in range(200))
        )
    finally:
        await client.aclose()
    assert replies == [None] * 200
