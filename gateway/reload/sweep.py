"""Jobs queued for a channel a reload removed: dead-lettered with the reason, once.

A removed channel's stream is read by no worker any more, and its retries would be put
back into that stream when due. A process that applied a reload removing channels
sweeps them: jobs never read go through the workers' own consumer group (so each is
handed to one sweeper, whichever process runs it), jobs left pending are taken over
only once idle past the channel's visibility timeout (an older-conf worker may still be
sending them), and retries are taken out of the sorted set by ``ZREM`` in the same
script that writes the dead letter. Each job is dead-lettered exactly once, whatever the
number of processes sweeping. The names stay in ``<prefix>:reload:removed`` until their
queues are empty, so a restart goes on sweeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..delivery import Attempt, decode_delivery, decode_job, encode_delivery
from ..history import encode_record, record_of
from ..keys import WORKER_GROUP, Keys, Layout
from ..streams import ensure_group, is_nogroup, read_group

log = logging.getLogger("tocsin.reload")

#: How often a removed channel's queues are swept.
SWEEP_EVERY = 1.0

# KEYS: source (stream or retries), dead, record, history.
# ARGV: mode (stream|zset), entry id or member, channel, job, reason, at, record,
#       retention, now_ms, delivery id.
DEAD_LUA = """
if ARGV[1] == 'stream' then
  if redis.call('XACK', KEYS[1], 'workers', ARGV[2]) == 0 then return 0 end
  redis.call('XDEL', KEYS[1], ARGV[2])
elseif redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'kind', 'delivery', 'channel', ARGV[3], 'j', ARGV[4],
           'reason', ARGV[5], 'at', ARGV[6])
if ARGV[10] ~= '-' then
  redis.call('SET', KEYS[3], ARGV[7], 'EX', ARGV[8])
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[10])
end
return 1
"""


def removed_key(prefix: str) -> str:
    return f"{prefix}:reload:removed"


def removal_reason(channel: str, conf_hash: str) -> str:
    return (
        f"channel {channel!r} was removed from the conf by a reload (conf {conf_hash}): "
        f"the job was queued for it and cannot be sent; add the channel back and "
        f"`tocsin dlq replay --channel {channel}` to send it"
    )


class Sweeper:
    def __init__(
        self,
        redis: Redis,
        layout: Layout,
        consumer: str,
        *,
        retention: float,
        visibility: float,
        clock: Any = time.time,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.consumer = consumer
        self.retention = max(1, int(retention))
        self.visibility_ms = int(visibility * 1000)
        self.clock = clock
        self.swept = 0

    async def _dead(
        self, shard: Keys, mode: str, source: str, ref: bytes, channel: str, raw: bytes, why: str
    ) -> bool:
        try:
            job = decode_delivery(raw)
        except msgspec.DecodeError:
            job = None
        now = self.clock()
        record: bytes = b""
        delivery_id = ""
        if job is not None:
            job.history.append(
                Attempt(n=job.attempt, at=round(now, 3), outcome="failed", ms=0, error=why)
            )
            raw = encode_delivery(job)
            record = encode_record(record_of(job, "dead", now=now))
            delivery_id = job.id
        keys = [source, shard.dead, shard.record(delivery_id or "-"), shard.history]
        args: list[Any] = [
            mode,
            ref,
            channel,
            raw,
            why,
            f"{now:.3f}",
            record or b"{}",
            self.retention,
        ]
        args += [int(now * 1000), delivery_id or "-"]
        done = int(await self.redis.eval(DEAD_LUA, len(keys), *keys, *args))
        if done:
            self.swept += 1
            log.warning("delivery %s dead-lettered: %s", delivery_id or ref.decode(), why)
        return bool(done)

    async def sweep_once(self, channel: str, why: str) -> int:
        """Dead-letter what is queued for ``channel`` now; how many jobs are left that
        another process still holds (pending, not idle long enough) or will hold."""
        left = 0
        for shard in self.layout.shards:
            stream = shard.deliveries(channel)
            await ensure_group(self.redis, stream, WORKER_GROUP)
            while True:
                reply = await read_group(
                    self.redis, WORKER_GROUP, self.consumer, {stream: ">"}, 100, None
                )
                entries = reply[0][1] if reply else []
                for entry_id, fields in entries:
                    await self._dead(shard, "stream", stream, entry_id, channel, _job(fields), why)
                if len(entries) < 100:
                    break
            start: Any = "0-0"
            while True:
                try:
                    claimed: Any = await self.redis.xautoclaim(
                        stream, WORKER_GROUP, self.consumer, self.visibility_ms, start_id=start
                    )
                except ResponseError as exc:
                    if is_nogroup(exc):
                        break
                    raise
                start = claimed[0]
                for entry_id, fields in claimed[1]:
                    if entry_id is not None and fields:
                        await self._dead(
                            shard, "stream", stream, entry_id, channel, _job(fields), why
                        )
                if start in (b"0-0", "0-0"):
                    break
            prefix = stream.encode() + b"\n"
            async for member, _score in self.redis.zscan_iter(
                shard.retries, match=_glob_escape(prefix) + b"*"
            ):
                await self._dead(
                    shard, "zset", shard.retries, member, channel, member[len(prefix) :], why
                )
            info: Any = await self.redis.xpending(stream, WORKER_GROUP)
            left += int(info["pending"] if isinstance(info, dict) else info[0])
        return left

    async def run(
        self,
        channels: dict[str, str],
        stopping: asyncio.Event,
        done: Callable[[str], Awaitable[bool]] | None = None,
        at_least: float = 0.0,
    ) -> None:
        """Sweep ``channels`` (name -> reason) until each has nothing left, then call
        ``done(name)``. ``at_least``: keep sweeping that long even when empty (processes
        that reload a little later may still route a job or two there)."""
        todo = dict(channels)
        until = time.monotonic() + at_least
        while todo and not stopping.is_set():
            for channel, why in list(todo.items()):
                try:
                    left = await self.sweep_once(channel, why)
                except (RedisError, OSError) as exc:
                    log.warning("sweeping removed channel %s: %s", channel, exc)
                    continue
                if left or time.monotonic() < until:
                    continue
                if done is None or await done(channel):
                    todo.pop(channel)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SWEEP_EVERY)


def _job(fields: dict[bytes, bytes]) -> bytes:
    """The whole delivery of a stream entry (a fan-out keeps its event beside it)."""
    try:
        return encode_delivery(decode_job(fields))
    except msgspec.DecodeError:
        return fields.get(b"j", b"")


def _glob_escape(text: bytes) -> bytes:
    out = bytearray()
    for byte in text:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)
