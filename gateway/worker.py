"""Channel workers: read delivery jobs, await the channel's ``send``, settle each job.

Settling is one of: acknowledge (delivered), move to the retries sorted set (transient
failure), or move to the dead letters (permanent failure or attempts exhausted). A job
leaves its stream only in the same MULTI that records where it went.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .channel import Channel
from .delivery import Delivery, decode_delivery, encode_delivery
from .errors import PermanentError, TransientError
from .keys import WORKER_GROUP, Keys
from .retry import DEFAULT_SCHEDULE, next_delay
from .scripts import PROMOTE
from .streams import Backoff, ensure_group, is_nogroup, read_group

log = logging.getLogger("tocsin.worker")

#: How often each worker looks for due retries.
PROMOTE_INTERVAL = 0.25
#: At low load, how long settled jobs wait for company before their XACK+XDEL is written
#: (one MULTI, and one AOF fsync, for several jobs instead of one each).
ACK_LINGER = 0.005
#: ... unless this many are already waiting.
ACK_BATCH = 64
#: How often each worker takes over jobs another consumer read but never settled.
RECLAIM_INTERVAL = 1.0
#: A job is taken over once pending this long past its channel's send timeout.
RECLAIM_MARGIN = 2.0


class Worker:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        channels: dict[str, Channel[Any]],
        consumer: str,
        *,
        concurrency: int = 256,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.channels = channels
        self.consumer = consumer
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.streams = {keys.deliveries(name): name for name in channels}
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_ids: set[tuple[str, bytes]] = set()
        self._slot_free = asyncio.Event()
        self._acks: dict[str, list[bytes]] = defaultdict(list)
        self._ack_wakeup = asyncio.Event()
        self.delivered = 0

    async def run(self, stopping: asyncio.Event) -> None:
        if not self.streams:
            await stopping.wait()
            return
        acker = asyncio.create_task(self._ack_loop(stopping), name="tocsin-acks")
        promoter = asyncio.create_task(self._promote_loop(stopping), name="tocsin-promote")
        reclaimer = asyncio.create_task(self._reclaim_loop(stopping), name="tocsin-reclaim")
        try:
            await self._read_loop(stopping)
        finally:
            reclaimer.cancel()
            await self._drain()
            promoter.cancel()
            self._ack_wakeup.set()
            await asyncio.gather(acker, promoter, reclaimer, return_exceptions=True)
            await self._flush_acks()

    async def _read_loop(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        groups_ready = False
        cursors = dict.fromkeys(self.streams, "0")  # own pending entries first
        while not stopping.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                if not groups_ready:
                    for stream in self.streams:
                        await ensure_group(self.redis, stream, WORKER_GROUP)
                    groups_ready = True
                pending_pass = any(c == "0" for c in cursors.values())
                reply = await read_group(
                    self.redis,
                    WORKER_GROUP,
                    self.consumer,
                    cursors,
                    free,
                    None if pending_pass else 500,
                )
                backoff.reset()
            except (RedisError, OSError) as exc:
                if is_nogroup(exc):
                    groups_ready = False
                await backoff.wait("worker", exc)
                continue
            seen = set()
            for stream, entries in reply:
                if entries:
                    seen.add(stream)
                for entry_id, fields in entries:
                    self._start(stream, entry_id, fields)
            if pending_pass:
                for stream, cursor in cursors.items():
                    if cursor == "0" and stream not in seen:
                        cursors[stream] = ">"

    def _start(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        key = (stream, entry_id)
        if key in self._inflight_ids:
            return  # our own send, still running: not reclaimed from ourselves
        self._inflight_ids.add(key)
        task = asyncio.create_task(self._handle(stream, entry_id, fields))
        self._inflight.add(task)
        task.add_done_callback(lambda t: self._done(t, key))

    def _done(self, task: asyncio.Task[None], key: tuple[str, bytes]) -> None:
        self._inflight.discard(task)
        self._inflight_ids.discard(key)
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:
            # Settling failed (Redis down): the job stays pending and is reclaimed later.
            log.error("worker: could not settle a job: %s", task.exception())

    async def _handle(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        raw = fields.get(b"j", b"")
        try:
            delivery = decode_delivery(raw)
        except msgspec.DecodeError as exc:
            await self._dead(stream, entry_id, raw, f"undecodable job: {exc}", None)
            return
        channel = self.channels[self.streams[stream]]
        started = time.monotonic()
        try:
            async with asyncio.timeout(channel.send_timeout):
                await channel.send(delivery)
        except PermanentError as exc:
            log.info("delivery %s to %s failed: %s", delivery.id, channel.name, exc.reason)
            await self._dead(stream, entry_id, raw, exc.reason, exc.status)
        except TransientError as exc:
            await self._retry(stream, entry_id, delivery, exc.reason, exc.retry_after)
        except TimeoutError:
            reason = f"no answer within {channel.send_timeout:g}s"
            await self._retry(stream, entry_id, delivery, reason, None)
        except Exception as exc:
            # A plugin bug must not take the worker down; retrying gives it a chance and
            # ends in the dead letters if it keeps failing.
            log.exception("channel %s raised an unexpected error", channel.name)
            await self._retry(stream, entry_id, delivery, f"{type(exc).__name__}: {exc}", None)
        else:
            self.delivered += 1
            log.debug(
                "delivered %s via %s in %.1f ms",
                delivery.id,
                channel.name,
                (time.monotonic() - started) * 1000,
            )
            self._acks[stream].append(entry_id)
            self._ack_wakeup.set()

    async def _retry(
        self,
        stream: str,
        entry_id: bytes,
        delivery: Delivery,
        reason: str,
        retry_after: float | None,
    ) -> None:
        delay = next_delay(DEFAULT_SCHEDULE, delivery.attempt, retry_after)
        if delay is None:
            await self._dead(
                stream,
                entry_id,
                encode_delivery(delivery),
                f"gave up after {delivery.attempt} attempts; last error: {reason}",
                None,
            )
            return
        log.info(
            "delivery %s attempt %d failed (%s); next in %.0fs",
            delivery.id,
            delivery.attempt,
            reason,
            delay,
        )
        delivery.attempt += 1
        member = stream.encode() + b"\n" + encode_delivery(delivery)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.retries, {member: (time.time() + delay) * 1000})
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def _dead(
        self, stream: str, entry_id: bytes, raw: bytes, reason: str, status: int | None
    ) -> None:
        record = {
            "kind": "delivery",
            "channel": self.streams[stream],
            "j": raw,
            "reason": reason,
            "at": f"{time.time():.3f}",
        }
        if status is not None:
            record["status"] = str(status)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dead, record)  # type: ignore[arg-type]
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def _ack_loop(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        while not stopping.is_set() or self._inflight:
            await self._ack_wakeup.wait()
            if not stopping.is_set() and sum(map(len, self._acks.values())) < ACK_BATCH:
                await asyncio.sleep(ACK_LINGER)
            self._ack_wakeup.clear()
            try:
                await self._flush_acks()
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("acks", exc)
                self._ack_wakeup.set()

    async def _flush_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, defaultdict(list)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for stream, ids in acks.items():
                    pipe.xack(stream, WORKER_GROUP, *ids)
                    pipe.xdel(stream, *ids)
                await pipe.execute()
        except BaseException:
            for stream, ids in acks.items():  # keep them for the next flush
                self._acks[stream].extend(ids)
            raise

    async def _promote_loop(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        while not stopping.is_set():
            try:
                moved = await PROMOTE(
                    self.redis, [self.keys.retries], [int(time.time() * 1000), 500]
                )
                backoff.reset()
                if moved:
                    continue  # there may be more due right now
            except (RedisError, OSError) as exc:
                await backoff.wait("retries", exc)
            await asyncio.sleep(PROMOTE_INTERVAL)

    async def _reclaim_loop(self, stopping: asyncio.Event) -> None:
        """Take over jobs left pending by a consumer that died or gave up mid-send.

        Consumer names are unique per process, so nobody else ever reads those again.
        A job is claimed only once idle past its channel's send timeout, by which time
        its first sender has either settled it or is gone.
        """
        backoff = Backoff()
        while not stopping.is_set():
            try:
                for stream, name in self.streams.items():
                    await self._reclaim(stream, self.channels[name].send_timeout)
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("reclaim", exc)
            await asyncio.sleep(RECLAIM_INTERVAL)

    async def _reclaim(self, stream: str, send_timeout: float) -> None:
        min_idle = int((send_timeout + RECLAIM_MARGIN) * 1000)
        start: Any = "0-0"
        while (free := self.concurrency - len(self._inflight)) > 0:
            reply = await self.redis.xautoclaim(
                stream, WORKER_GROUP, self.consumer, min_idle, start_id=start, count=free
            )
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if entry_id is not None and fields:  # None: deleted meanwhile (Redis 6.2)
                    log.info("worker: took over job %s on %s", entry_id.decode(), stream)
                    self._start(stream, entry_id, fields)
            if start in (b"0-0", "0-0"):
                return

    async def _drain(self) -> None:
        """Give in-flight sends the grace period; what is left stays pending for others."""
        if not self._inflight:
            return
        _, pending = await asyncio.wait(self._inflight, timeout=self.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "shutdown: %d sends still running after %.0fs were left pending",
                len(pending),
                self.shutdown_grace,
            )
            await asyncio.gather(*pending, return_exceptions=True)
