"""Small helpers around Redis Streams consumer groups, shared by the router and the workers."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = logging.getLogger("tocsin.streams")


async def ensure_group(redis: Redis, stream: str, group: str, start: str = "0") -> None:
    """Create the group, unless it exists, reading after ``start``: by default the stream's
    start, so entries added before the group are read too."""
    try:
        await redis.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


Entry = tuple[bytes, dict[bytes, bytes]]


async def read_group(
    redis: Redis,
    group: str,
    consumer: str,
    cursors: dict[str, str],
    count: int,
    block_ms: int | None,
) -> list[tuple[str, list[Entry]]]:
    """XREADGROUP with its reply typed: ``[(stream, [(entry_id, fields), ...]), ...]``.

    On a cluster the read goes straight to the node of its streams' slot (they share
    one): redis-py's cluster client does not find XREADGROUP's keys itself and asks the
    server first (``COMMAND GETKEYS``), a second round trip per read. After a failover
    the node may be stale: the MOVED it answers makes the client learn the new owner."""
    reply: Any
    node = _cluster_node(redis, next(iter(cursors)))
    if node is None:
        streams: dict[Any, Any] = dict(cursors)
        reply = await redis.xreadgroup(group, consumer, streams, count=count, block=block_ms)
    else:
        args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", *cursors, *cursors.values()]
        cluster: Any = redis  # a RedisCluster: its execute_command takes target_nodes
        reply = await cluster.execute_command(*args, target_nodes=node)
    out: list[tuple[str, list[Entry]]] = []
    for stream, entries in reply or []:
        out.append((as_text(stream), entries))
    return out


def _cluster_node(redis: Redis, key: str) -> Any:
    """The cluster node serving ``key``, or ``None`` on a single Redis."""
    finder = getattr(redis, "get_node_from_key", None)
    return finder(key) if finder is not None else None


def as_text(value: bytes | str) -> str:
    """A Redis reply (an entry id, a group name) as text, whichever way it came."""
    return value.decode() if isinstance(value, bytes) else value


def entry_order(value: bytes | str) -> tuple[int, int]:
    """A stream entry id (``1700000000000-3``) as a pair that sorts as Redis does."""
    ms, _, seq = as_text(value).partition("-")
    return int(ms), int(seq or 0)


def is_nogroup(exc: BaseException) -> bool:
    """Redis lost the group (restarted without AOF, or the key was deleted)."""
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


class Backoff:
    """Exponential backoff with full jitter, so many workers don't reconnect in lockstep."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    async def wait(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        delay = min(self.cap, self.first * 2 ** (self.failures - 1))
        if self.failures in (1, 5) or self.failures % 50 == 0:
            log.warning(
                "%s: %s: %s (retrying, attempt %d)", what, type(exc).__name__, exc, self.failures
            )
        await asyncio.sleep(random.uniform(delay / 2, delay))
