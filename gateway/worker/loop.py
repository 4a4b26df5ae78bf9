"""Channel workers: read delivery jobs, await the channel's ``send``, settle each job.

Settling is one of: delivered (acknowledged, record written), retry later (moved to the
retries sorted set), or failed for good (moved to the dead letters). A job leaves its
stream only in the same transaction that records where it went, and each channel's jobs
are read only when its gate (concurrency, rate limit, circuit breaker) has room and its
endpoint is not disabled: a held-back job waits unread in its stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..channel import Channel
from ..delivery import Attempt, Delivery, decode_job
from ..errors import EndpointGone, PermanentError, TransientError
from ..keys import WORKER_GROUP, Keys, Layout, as_layout
from ..logs import OURS, sending
from ..metrics.families import Metrics
from ..policy import ChannelGate, ChannelPolicy
from ..privacy.bodies import BodyKeeper
from ..privacy.recipients import MASK_ONLY, RecordPrivacy
from ..scripts import PROMOTE, SETTLE
from ..streams import Backoff, ensure_group, is_nogroup, read_group
from ..suppression import SuppressionList
from ..windows import SendingWindow
from .base import (
    CLUSTER_IDLE_FIRST,
    CLUSTER_IDLE_MAX,
    ERROR_CHARS,
    HEALTH_INTERVAL,
    HELD_POLL,
    PROMOTE_INTERVAL,
    READ_BLOCK,
    RECLAIM_INTERVAL,
    RECONNECT_CAP,
    WATCHDOG_INTERVAL,
    EndpointOutcome,
    log,
    outcomes,
)
from .health import Health
from .settling import Settling


class Worker(Settling, Health):
    def __init__(
        self,
        redis: Redis,
        keys: Keys | Layout,
        channels: dict[str, Channel[Any]],
        consumer: str,
        *,
        policies: dict[str, ChannelPolicy] | None = None,
        visibility: dict[str, float] | None = None,
        concurrency: int = 256,
        shutdown_grace: float = 10.0,
        poison_after: int = 3,
        retention: float = 30 * 86400,
        dedupe_window: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
        windows: dict[str, SendingWindow] | None = None,
        metrics: Metrics | None = None,
        privacy: RecordPrivacy = MASK_ONLY,
        bodies: BodyKeeper | None = None,
    ) -> None:
        self.metrics = metrics
        #: How records keep recipients (masked, keyed hash) and whether bodies are kept.
        self.privacy = privacy
        self.bodies = bodies
        self.windows = windows or {}
        self.redis = redis
        self.layout = as_layout(keys)
        self.channels = channels
        self.consumer = consumer
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.poison_after = poison_after
        self.retention = max(1, int(retention))
        self.dedupe_window = max(1, int(dedupe_window))
        #: How long the events this worker emits stay findable by id (as intake's do).
        self._event_keep = max(self.dedupe_window, self.retention)
        self.clock = clock
        #: Global (one hash for every shard): checked before each send with an address.
        self.suppressions = SuppressionList(redis, self.layout, clock)
        policies = policies or {}
        self.policies = {name: policies.get(name) or ChannelPolicy() for name in channels}
        self.gates = {name: ChannelGate(policy) for name, policy in self.policies.items()}
        visibility = visibility or {}
        self.visibility = {
            name: visibility.get(name, channels[name].send_timeout + 5.0) for name in channels
        }
        #: Every channel's stream in every shard, and the shard each belongs to.
        self.streams = {
            shard.deliveries(name): name for shard in self.layout.shards for name in channels
        }
        self.shard_of = {
            shard.deliveries(name): shard for shard in self.layout.shards for name in channels
        }
        #: Streams one XREADGROUP may cover: all of them on one Redis, one shard's on a
        #: cluster (a command's keys must share a slot there).
        self._read_groups: list[list[str]] = (
            [[shard.deliveries(name) for name in channels] for shard in self.layout.shards]
            if self.layout.cluster
            else [list(self.streams)]
        )
        self._inflight: set[asyncio.Task[EndpointOutcome]] = set()
        self._inflight_ids: set[tuple[str, bytes]] = set()
        #: Delivered, waiting for the batched acknowledgement: never to be sent again.
        self._settling: set[tuple[str, bytes]] = set()
        self._slot_free = asyncio.Event()
        #: Sends in progress and their deadlines, for the watchdog.
        self._sending: dict[asyncio.Task[Any], float] = {}
        self._timed_out: set[asyncio.Task[Any]] = set()
        self._acks: dict[str, list[tuple[bytes, str, bytes]]] = defaultdict(list)
        self._ack_wakeup = asyncio.Event()
        #: Per channel, what this process last wrote or read of its endpoint's health.
        self._failing: dict[str, bool | None] = dict.fromkeys(channels)
        self.disabled: set[str] = set()
        self.delivered = 0
        #: Jobs were left pending under our name: read own pending entries again.
        self._reread = False
        #: Turns streams of a channel short of room for all of them (``_room``).
        self._turn = 0
        #: How long an empty round on a cluster waits before the next (``_read_round``).
        self._idle = CLUSTER_IDLE_FIRST

    async def run(self, stopping: asyncio.Event) -> None:
        if not self.streams:
            await stopping.wait()
            return
        helpers = [
            asyncio.create_task(self._ack_loop(stopping), name="tocsin-acks"),
            asyncio.create_task(self._promote_loop(stopping), name="tocsin-promote"),
            asyncio.create_task(self._reclaim_loop(stopping), name="tocsin-reclaim"),
            asyncio.create_task(self._health_loop(stopping), name="tocsin-health"),
            asyncio.create_task(self._watchdog(stopping), name="tocsin-watchdog"),
        ]
        try:
            await self._read_loop(stopping)
        finally:
            for task in helpers[1:]:
                task.cancel()
            await self._drain()
            self._ack_wakeup.set()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush_acks()

    # -- reading ---------------------------------------------------------------------

    def _room(self, streams: list[str]) -> dict[str, int]:
        """Per stream of ``streams``, how many jobs may be read now (streams with none
        left out). A channel's room is shared by its streams (one per shard): with less
        room than streams, only some are read this time, in turn, so that one read
        (COUNT applies to each stream) never brings more jobs than the channel may take."""
        by_channel: dict[str, list[str]] = {}
        for stream in streams:
            name = self.streams[stream]
            if name not in self.disabled:
                by_channel.setdefault(name, []).append(stream)
        room = {}
        for name, mine in by_channel.items():
            available = self.gates[name].available()
            if available <= 0:
                continue
            chosen = mine
            if available < len(mine):
                self._turn += 1
                start = self._turn % len(mine)
                chosen = (mine[start:] + mine[:start])[:available]
            for stream in chosen:
                room[stream] = available // len(chosen)
        return room

    async def _wait_for_room(self) -> None:
        hints = [self.gates[n].wait_hint() for n in self.streams.values() if n not in self.disabled]
        self._slot_free.clear()
        timeout = min([*hints, HEALTH_INTERVAL])
        try:
            async with asyncio.timeout(max(0.005, timeout)):
                await self._slot_free.wait()
        except TimeoutError:
            pass

    def _block_ms(self, room: dict[str, int], streams: list[str]) -> int | None:
        """How long the next read may block on the server: not at all while a stream
        left out is held by sends in flight (one finishing gives it room at once), else
        until a held-back stream's gate may open (rate limit, breaker), at most
        ``READ_BLOCK``. (A read blocked 500 ms on an idle stream once left a saturated
        channel next to it at max_in_flight jobs per 0.5 s.)"""
        block = READ_BLOCK
        for stream in streams:
            name = self.streams[stream]
            if stream in room or name in self.disabled:
                continue
            gate = self.gates[name]
            if gate.in_flight > 0:
                return None
            block = min(block, gate.wait_hint())
        return max(1, int(block * 1000))

    async def _wait_for_send(self) -> None:
        try:
            async with asyncio.timeout(HELD_POLL):
                await self._slot_free.wait()
        except TimeoutError:
            pass

    async def _read_loop(self, stopping: asyncio.Event) -> None:
        backoff = Backoff(cap=RECONNECT_CAP)
        groups_ready = False
        self._cursors = dict.fromkeys(self.streams, "0")  # own pending entries first
        rounds = 0
        while not stopping.is_set():
            if self._reread:
                # (A disabled channel's stream is not read: its pass waits for enabling.)
                self._reread = False
                self._cursors = dict.fromkeys(self.streams, "0")
            try:
                if not groups_ready:
                    for stream in self.streams:
                        await ensure_group(self.redis, stream, WORKER_GROUP)
                    await SETTLE.load(self.redis)  # used inside pipelines: no NOSCRIPT retry
                    groups_ready = True
                if len(self._read_groups) == 1:
                    read = await self._read(self._read_groups[0], blocking=True)
                else:
                    read = await self._read_round(rounds)
                    rounds += 1
                backoff.reset()
            except (RedisError, OSError) as exc:
                if is_nogroup(exc):
                    groups_ready = False
                # A reply lost with the connection left jobs pending under our name:
                # read our own pending entries again before new ones.
                self._cursors = dict.fromkeys(self.streams, "0")
                await backoff.wait("worker", exc)
                continue
            if read is None:
                await self._wait_for_room()

    async def _read_round(self, rounds: int) -> int | None:
        """One read of each shard (a cluster), none blocking on the server; a round that
        found nothing waits in the gateway (``CLUSTER_IDLE_FIRST``). How many jobs were
        read; ``None``: no channel had room."""
        groups = self._read_groups
        first = rounds % len(groups)
        total: int | None = None
        for n in range(len(groups)):
            read = await self._read(groups[(first + n) % len(groups)], blocking=False)
            if read is not None:
                total = (total or 0) + read
        if total == 0:
            try:
                async with asyncio.timeout(self._idle):
                    await self._slot_free.wait()
            except TimeoutError:
                pass
            self._idle = min(CLUSTER_IDLE_MAX, self._idle * 2)
        elif total:
            self._idle = CLUSTER_IDLE_FIRST
        return total

    async def _read(self, streams: list[str], *, blocking: bool) -> int | None:
        """One XREADGROUP over ``streams`` for as many jobs as their channels may take,
        each started; how many. ``None``: no channel had room (nothing was read).
        ``blocking``: the read may wait on the server."""
        free = self.concurrency - len(self._inflight)
        room = self._room(streams) if free > 0 else {}
        if not room:
            return None
        cursors = self._cursors
        reading = {stream: cursors[stream] for stream in room}
        pending_pass = any(c != ">" for c in reading.values())
        # COUNT applies to each stream: share the free slots out.
        count = max(1, min(free // len(reading), *room.values()))
        block = None
        if blocking and not pending_pass:
            block = self._block_ms(room, streams)
        self._slot_free.clear()  # a send finishing during the read counts
        reply = await read_group(self.redis, WORKER_GROUP, self.consumer, reading, count, block)
        last: dict[str, str] = {}
        started = 0
        for stream, entries in reply:
            recheck = reading[stream] != ">"
            for entry_id, fields in entries:
                self._start(stream, entry_id, fields, recheck=recheck)
            started += len(entries)
            if entries:
                last[stream] = entries[-1][0].decode()
        # Own pending entries are read from an id on, past the last one seen (some
        # may still be in flight here); once none is left, on to new entries.
        for stream, cursor in reading.items():
            if cursor != ">":
                cursors[stream] = last.get(stream, ">")
        if blocking and block is None and not pending_pass and not last:
            await self._wait_for_send()
        return started

    def _start(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], *, recheck: bool
    ) -> None:
        key = (stream, entry_id)
        if key in self._inflight_ids or key in self._settling or not fields:
            return  # our own send, still running or being acknowledged
        if self.streams[stream] in self.disabled:
            # Brought by a read sent before its endpoint was disabled: it stays pending
            # under this consumer's name, and is read again once the endpoint is enabled.
            self._reread = True
            return
        gate = self.gates[self.streams[stream]]
        gate.started(1)
        self._inflight_ids.add(key)
        task = asyncio.create_task(self._handle(stream, entry_id, fields, recheck))
        self._inflight.add(task)
        task.add_done_callback(lambda t: self._done(t, key, gate))

    def _done(
        self, task: asyncio.Task[EndpointOutcome], key: tuple[str, bytes], gate: ChannelGate
    ) -> None:
        self._inflight.discard(task)
        self._inflight_ids.discard(key)
        outcome: EndpointOutcome = None
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                # Redis failed mid-job (checking, settling): the job stays pending under
                # our name. Read own pending entries again once Redis answers, rather
                # than leave it to a takeover after the visibility timeout.
                log.error("worker: could not settle a job: %s", exc)
                if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
                    self._reread = True
            else:
                outcome = task.result()
        gate.finished(outcome)
        self._slot_free.set()

    # -- sending and settling ------------------------------------------------------------

    async def _handle(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], recheck: bool
    ) -> EndpointOutcome:
        try:
            delivery = decode_job(fields)
        except msgspec.DecodeError as exc:
            raw = fields.get(b"j", b"")
            await self._dead(stream, entry_id, raw, f"undecodable job: {exc}", None)
            return None
        sending(delivery)  # its ids on every log line of this task, its customer masked
        name = self.streams[stream]
        channel = self.channels[name]
        if recheck and await self._already_delivered(stream, entry_id, delivery):
            return None
        if delivery.scenario is not None and await self._recalled(stream, entry_id, delivery):
            return None
        if await self._held(stream, entry_id, delivery, channel):
            return None
        started_at = self.clock()
        started = time.monotonic()
        outcome: EndpointOutcome
        try:
            note = await self._send(channel, delivery)
        except EndpointGone as exc:
            self._record(delivery, started_at, started, "failed", exc.reason, exc.status)
            await self._disable(name, exc.reason)
            await self._dead(stream, entry_id, delivery, exc.reason, exc.status)
            return True
        except PermanentError as exc:
            self._record(delivery, started_at, started, "failed", exc.reason, exc.status)
            await self._refused(stream, entry_id, delivery, channel, exc)
            return None
        except TransientError as exc:
            reason, status, retry_after, outcome = exc.reason, exc.status, exc.retry_after, True
            error: TransientError | None = exc
        except TimeoutError:
            reason = f"no answer within {channel.send_timeout:g}s"
            status, retry_after, outcome, error = None, None, True, None
        except Exception as exc:
            # A plugin bug must not take the worker down; retrying gives it a chance and
            # ends in the dead letters if it keeps failing.
            log.exception("channel %s raised an unexpected error", name)
            reason, status, retry_after, outcome = f"{type(exc).__name__}: {exc}", None, None, None
            error = None
        else:
            self.delivered += 1
            self._record(delivery, started_at, started, "delivered", None, None, note)
            if outcomes.isEnabledFor(logging.INFO):
                outcomes.info(
                    "delivered %s via %s in %.1f ms",  # tests/test_processes.py reads it
                    delivery.id,
                    name,
                    delivery.history[-1].ms,
                    extra=OURS,
                )
            record = await self._delivered_record(stream, channel, delivery)
            self._acks[stream].append((entry_id, delivery.id, record))
            self._settling.add((stream, entry_id))
            self._ack_wakeup.set()
            if self._failing[name] is not False:
                await self._healthy(name)
            return False
        self._record(delivery, started_at, started, "retry", reason, status)
        await self._retry(stream, entry_id, delivery, reason, retry_after, error)
        if outcome and self._failing[name] is not True:
            await self._failing_now(name)
        return outcome

    async def _send(self, channel: Channel[Any], delivery: Delivery) -> str | None:
        """``channel.send`` bounded by its ``send_timeout``: the watchdog cancels a send
        past its deadline, which ends here as ``TimeoutError``. (A per-send
        ``asyncio.timeout`` cost ~5 % of the delivery path's CPU; one loop is enough.)"""
        task = asyncio.current_task()
        assert task is not None
        started = time.monotonic()
        self._sending[task] = started + channel.send_timeout
        failed: BaseException | None = None
        attempted = True
        try:
            return await channel.send(delivery)
        except asyncio.CancelledError:
            if task not in self._timed_out:
                attempted = False  # shutdown
                raise
            self._timed_out.discard(task)
            task.uncancel()
            failed = TimeoutError()
            raise failed from None
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self._sending.pop(task, None)
            if self.metrics is not None and attempted:
                self.metrics.attempt(channel.name, failed, time.monotonic() - started)

    async def _watchdog(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set() or self._sending:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            for task, deadline in list(self._sending.items()):
                if now > deadline and task not in self._timed_out:
                    self._timed_out.add(task)
                    task.cancel()

    def _record(
        self,
        delivery: Delivery,
        started_at: float,
        started: float,
        outcome: str,
        error: str | None,
        status: int | None,
        note: str | None = None,
    ) -> None:
        delivery.history.append(
            Attempt(
                n=delivery.attempt,
                at=round(started_at, 3),
                outcome=outcome,
                ms=round((time.monotonic() - started) * 1000, 1),
                status=status,
                error=error[:ERROR_CHARS] if error else None,
                note=note[:ERROR_CHARS] if isinstance(note, str) and note else None,
            )
        )

    # -- retries and takeovers ---------------------------------------------------------

    async def _promote_loop(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        while not stopping.is_set():
            try:
                moved = 0
                for shard in self.layout.shards:
                    moved += await PROMOTE(
                        self.redis, [shard.retries], [int(self.clock() * 1000), 500]
                    )
                backoff.reset()
                if moved:
                    continue  # there may be more due right now
            except (RedisError, OSError) as exc:
                await backoff.wait("retries", exc)
            await asyncio.sleep(PROMOTE_INTERVAL)

    async def _reclaim_loop(self, stopping: asyncio.Event) -> None:
        """Take over jobs left pending by a consumer that died or hung mid-send.

        Consumer names are unique per process, so nobody else ever reads those again.
        A job is claimed only once idle past the channel's visibility timeout, which
        exceeds its send timeout: by then its first sender has settled it or is gone.
        """
        backoff = Backoff()
        while not stopping.is_set():
            try:
                for stream, name in self.streams.items():
                    if name not in self.disabled:
                        await self._reclaim(stream, self.visibility[name])
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("reclaim", exc)
            await asyncio.sleep(RECLAIM_INTERVAL)

    async def _reclaim(self, stream: str, visibility: float) -> None:
        gate = self.gates[self.streams[stream]]
        start: Any = "0-0"
        while (free := min(self.concurrency - len(self._inflight), gate.available())) > 0:
            try:
                reply = await self.redis.xautoclaim(
                    stream,
                    WORKER_GROUP,
                    self.consumer,
                    int(visibility * 1000),
                    start_id=start,
                    count=free,
                )
            except ResponseError as exc:
                if is_nogroup(exc):
                    return  # no group yet (the reader creates it): nothing to take over
                raise
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if entry_id is None or not fields:  # deleted meanwhile (Redis 6.2)
                    continue
                if await self._is_poison(stream, entry_id, fields):
                    continue
                log.info("worker: took over job %s on %s", entry_id.decode(), stream)
                self._start(stream, entry_id, fields, recheck=True)
            if start in (b"0-0", "0-0"):
                return

    async def _is_poison(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> bool:
        """Dead-letter a job whose every sender died or hung: it would loop forever."""
        pending = await self.redis.xpending_range(
            stream, WORKER_GROUP, min=entry_id, max=entry_id, count=1
        )
        takeovers = int(pending[0]["times_delivered"]) - 1 if pending else 0
        if takeovers <= self.poison_after:
            return False
        raw = fields.get(b"j", b"")
        reason = (
            f"poison: taken over {takeovers} times, each sender died or hung mid-send "
            f"(more than worker.poison_after = {self.poison_after})"
        )
        log.error("delivery job %s on %s: %s", entry_id.decode(), stream, reason)
        job: Delivery | bytes = raw
        try:
            job = decode_job(fields)
            job.history.append(
                Attempt(
                    n=job.attempt, at=round(self.clock(), 3), outcome="failed", ms=0, error=reason
                )
            )
        except msgspec.DecodeError:
            pass
        await self._dead(stream, entry_id, job, reason, None)
        return True

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
