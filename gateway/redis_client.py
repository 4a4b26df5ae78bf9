"""The Redis client every gateway part uses: redis-py's asyncio client, packing commands
with hiredis.

redis-py's asyncio connections pack each command in Python, argument by argument; the
router's fan-out and the workers' settling send hundreds of arguments per call, and that
loop cost the delivery path several percent of its CPU. hiredis (already required, for
parsing replies) packs the same bytes in C, about 3x faster. What it does not take
(``bytearray``, ``memoryview``, and what redis-py refuses: ``bool``, ``None``) goes
through redis-py's own packing, so behaviour and errors stay redis-py's.
"""

from __future__ import annotations

from typing import Any, cast

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

#: The longest a command waits for a free connection of the (single Redis) pool.
POOL_WAIT = 10.0
#: Arguments packed per hiredis call. One buffer for a whole fan-out (~300 KB) cost
#: more than the packing itself (fresh pages on every call): long commands go as pieces.
PACK_CHUNK = 64


class _HiredisPacking(AbstractConnection):
    # list[Any]: pieces are bytes or memoryviews, which redis-py's writers take alike.
    def pack_command(self, *args: Any) -> list[Any]:
        first = args[0]
        # redis-py accepts multi-word command names ("SCRIPT LOAD"): split them the same way.
        if isinstance(first, str):
            head: tuple[Any, ...] = tuple(first.encode().split())
        elif isinstance(first, bytes) and b" " in first:
            head = tuple(first.split())
        else:
            head = (first,)
        parts = head + args[1:]
        try:
            if len(parts) <= PACK_CHUNK:
                return [hiredis.pack_command(parts)]
            pieces: list[Any] = [b"*%d\r\n" % len(parts)]
            for start in range(0, len(parts), PACK_CHUNK):
                packed = hiredis.pack_command(parts[start : start + PACK_CHUNK])
                # Each piece without its own "*<count>" line: one command, many pieces.
                pieces.append(memoryview(packed)[packed.index(b"\r\n") + 2 :])
            return pieces
        except TypeError:
            return super().pack_command(*args)


class PackedConnection(_HiredisPacking, Connection):
    pass


class PackedSSLConnection(_HiredisPacking, SSLConnection):
    pass


class PackedUnixDomainSocketConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: PackedConnection,
    SSLConnection: PackedSSLConnection,
    UnixDomainSocketConnection: PackedUnixDomainSocketConnection,
}


def connect(url: str, *, cluster: bool = False) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``); bytes replies.

    ``cluster``: ``url`` is one node of a Redis Cluster. The client is redis-py's
    ``RedisCluster``, typed here as ``Redis``: every command Tocsin sends it names keys
    of one slot (``gateway.keys``), which is all the cluster client needs to route it."""
    if cluster:
        client = RedisCluster.from_url(
            url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            # Per node. Its pool cannot make a command wait for a free connection (it
            # raises "Too many connections"), so the cap sits above what one process
            # may have in flight at once: [worker] concurrency sends (256 by default),
            # each settling on its own, plus every loop's reads.
            max_connections=1024,
            decode_responses=False,
            # A failover takes the cluster's node timeout plus an election (~2 s with a
            # 1 s node timeout): commands retry through it (about 5 s in all) rather
            # than fail their callers, whose own loops would retry anyway.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=10),
        )
        return cast(Redis, client)
    # Blocking: past 64 connections a command waits for one to come free (up to
    # POOL_WAIT) instead of failing at once with "Too many connections". With up to
    # [worker] concurrency sends each settling on its own, a loaded box did exceed 64
    # (a job's settlement failed and an intake batch was answered 503).
    pool = BlockingConnectionPool.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=64,
        timeout=POOL_WAIT,
        decode_responses=False,
    )
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return Redis.from_pool(pool)
