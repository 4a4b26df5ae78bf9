"""How a reload reaches every process sharing one Redis, and what each one runs.

``tocsin reload`` (and the admin API) bump a generation counter and publish it on a
channel; every gateway process listens, and also polls the counter (a message published
while a process was reconnecting, or on a Redis Cluster where this client has no
pub/sub, is not lost: the counter says a reload is owed). Each process checks the conf
on its own and writes what it runs to one hash, ``<prefix>:processes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("tocsin.reload")

#: How often the generation counter is read, besides the pub/sub message.
POLL_EVERY = 2.0
#: How often a process refreshes its entry; entries older than ``STALE_AFTER`` belong
#: to processes gone (listed as such, and dropped by the next writer).
HEARTBEAT_EVERY = 5.0
STALE_AFTER = 30.0


def generation_key(prefix: str) -> str:
    return f"{prefix}:reload:generation"


def channel_name(prefix: str) -> str:
    return f"{prefix}:reload"


def processes_key(prefix: str) -> str:
    return f"{prefix}:processes"


class ProcessConf(msgspec.Struct, omit_defaults=True):
    """One process's entry in ``<prefix>:processes``."""

    consumer: str
    host: str
    pid: int
    #: ``tocsin_conf_hash`` of the conf running (hex).
    conf_hash: str
    loaded_at: float
    seen: float
    #: The last reload tried: when, whether it was applied, its generation.
    last_reload_at: float = 0.0
    last_reload_ok: bool = True
    generation: int = 0
    problems: list[str] = msgspec.field(default_factory=list)
    needs_restart: list[str] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(ProcessConf)


def hex_hash(digest: float) -> str:
    return f"{int(digest):013x}"


def new_entry(consumer: str, digest: float) -> ProcessConf:
    now = time.time()
    return ProcessConf(
        consumer=consumer,
        host=socket.gethostname(),
        pid=os.getpid(),
        conf_hash=hex_hash(digest),
        loaded_at=now,
        seen=now,
    )


async def write_entry(redis: Redis, prefix: str, entry: ProcessConf) -> None:
    entry.seen = time.time()
    await redis.hset(processes_key(prefix), entry.consumer, msgspec.json.encode(entry))


async def read_processes(redis: Redis, prefix: str) -> list[ProcessConf]:
    """Every process's entry, newest first; the stale ones (gone) are removed."""
    raw: Any = await redis.hgetall(processes_key(prefix))
    now, out, stale = time.time(), [], []
    for name, value in raw.items():
        try:
            entry = _decoder.decode(value)
        except msgspec.DecodeError:
            stale.append(name)
            continue
        if now - entry.seen > STALE_AFTER:
            stale.append(name)
        else:
            out.append(entry)
    if stale:
        await redis.hdel(processes_key(prefix), *stale)
    return sorted(out, key=lambda e: e.loaded_at, reverse=True)


async def publish_reload(
    redis: Redis, prefix: str, taken: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """Ask every gateway process on this Redis to reload: the new generation and how
    many processes heard the message at once (the others catch up on their poll).
    ``taken(generation)`` is called before the message goes (a process that publishes
    marks it as its own, not to reload twice)."""
    generation = int(await redis.incr(generation_key(prefix)))
    if taken is not None:
        taken(generation)
    heard = 0
    with contextlib.suppress(RedisError, AttributeError, NotImplementedError):
        heard = int(await redis.publish(channel_name(prefix), str(generation)))
    return generation, heard


async def current_generation(redis: Redis, prefix: str) -> int:
    value: Any = await redis.get(generation_key(prefix))
    return int(value or 0)


async def listen(
    redis: Redis,
    prefix: str,
    stopping: asyncio.Event,
    nudged: Callable[[int], Awaitable[None]],
) -> None:
    """Call ``nudged(generation)`` whenever the counter moves, on the message or the poll."""
    pubsub: Any = None
    usable = hasattr(redis, "pubsub")
    try:
        while not stopping.is_set():
            try:
                if pubsub is None and usable:
                    try:
                        pubsub = redis.pubsub()
                    except (AttributeError, NotImplementedError):
                        usable = False  # a cluster client without pub/sub: the poll alone
                    else:
                        await pubsub.subscribe(channel_name(prefix))
                if pubsub is not None:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_EVERY)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), POLL_EVERY)
                # The message is only a nudge: the counter is the truth (several nudges
                # while a reload runs make one more reload, not several).
                await nudged(await current_generation(redis, prefix))
            except (RedisError, OSError) as exc:
                log.debug("reload listener: %s", exc)
                await _close(pubsub)
                pubsub = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), POLL_EVERY)
    finally:
        await _close(pubsub)


async def _close(pubsub: Any) -> None:
    if pubsub is not None:
        with contextlib.suppress(Exception):
            await pubsub.aclose()
