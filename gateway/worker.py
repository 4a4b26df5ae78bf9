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
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .channel import Channel
from .delivery import Attempt, Delivery, decode_job, encode_delivery
from .errors import DeliveryError, EndpointGone, PermanentError, TransientError
from .event import Event, EventSource, encode_event
from .history import Status, encode_record, record_of
from .keys import WORKER_GROUP, Keys, Layout, as_layout
from .metrics.families import Metrics
from .policy import ChannelGate, ChannelPolicy
from .privacy.bodies import BodyKeeper
from .privacy.recipients import MASK_ONLY, RecordPrivacy
from .retry import next_delay
from .scripts import DISABLE, ENQUEUE_MANY, PROMOTE, SETTLE
from .streams import Backoff, ensure_group, is_nogroup, read_group
from .windows import SendingWindow

log = logging.getLogger("tocsin.worker")

#: While a channel is at its in-flight limit (its stream left out of the read), the other
#: streams are read without a server-side BLOCK, which no finished send could cut short;
#: the loop then waits for a send to finish, or this long before looking at them again.
HELD_POLL = 0.05
#: Otherwise, how long one read waits on the server for a new job.
READ_BLOCK = 0.5
#: On a Redis Cluster one read covers one shard (one slot): the shards are read one
#: after another without BLOCK, and a round that found nothing ends with a read blocked
#: at most this long on the next shard in turn. (One blocked read per shard would each
#: want the channel's whole in-flight room: either the limit is broken, or a backlog on
#: one shard waits for a read parked on an idle one.) Costs an idle worker about
#: (shards / this) reads a second.
CLUSTER_IDLE_BLOCK = 0.01
#: The longest the read and acknowledgement loops wait between tries while Redis is
#: unreachable: delivery resumes within this of Redis answering again. (``Backoff``'s own
#: cap, 5 s, left workers idle for up to 3 s after a 2 s Redis restart; a few refused
#: connections a second per loop cost a down Redis nothing.)
RECONNECT_CAP = 0.25
#: How often each worker looks for due retries.
PROMOTE_INTERVAL = 0.25
#: At low load, how long settled jobs wait for company before their XACK+XDEL is written
#: (one transaction, and one AOF fsync, for several jobs instead of one each).
ACK_LINGER = 0.005
#: ... unless this many are already waiting.
ACK_BATCH = 64
#: How often sends past their channel's send timeout are looked for.
WATCHDOG_INTERVAL = 0.25
#: How often each worker takes over jobs another consumer read but never settled.
RECLAIM_INTERVAL = 1.0
#: How often endpoint health (failing since, disabled) is read back from Redis.
HEALTH_INTERVAL = 2.0
#: How often expired history entries and dead letters are trimmed.
RETENTION_INTERVAL = 60.0
#: Error text kept per attempt in the history.
ERROR_CHARS = 500

#: ``source.provider`` of the events Tocsin emits itself (endpoint.disabled...).
INTERNAL_PROVIDER = "tocsin"

#: A finished send's outcome for the endpoint's health: failed, succeeded, or says
#: nothing about the endpoint (a template failed, a plugin bug).
EndpointOutcome = bool | None


class Worker:
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
        """One read of each shard (a cluster), the last one blocked briefly if the others
        found nothing. How many jobs were read; ``None``: no channel had room."""
        groups = self._read_groups
        first = rounds % len(groups)
        total: int | None = None
        for n in range(len(groups)):
            group = groups[(first + n) % len(groups)]
            last = n == len(groups) - 1
            read = await self._read(group, blocking=last and not total, idle=CLUSTER_IDLE_BLOCK)
            if read is not None:
                total = (total or 0) + read
        return total

    async def _read(
        self, streams: list[str], *, blocking: bool, idle: float | None = None
    ) -> int | None:
        """One XREADGROUP over ``streams`` for as many jobs as their channels may take,
        each started; how many. ``None``: no channel had room (nothing was read).
        ``blocking``: the read may wait on the server (at most ``idle`` if given)."""
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
            if block is not None and idle is not None:
                block = min(block, max(1, int(idle * 1000)))
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
        name = self.streams[stream]
        channel = self.channels[name]
        if recheck and await self._already_delivered(stream, entry_id, delivery):
            return None
        if delivery.scenario is not None and await self._recalled(stream, entry_id, delivery):
            return None
        if delivery.window is not None and await self._outside_window(stream, entry_id, delivery):
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
            log.info("delivery %s to %s failed: %s", delivery.id, name, exc.reason)
            self._record(delivery, started_at, started, "failed", exc.reason, exc.status)
            notice = self._failure_notice(delivery, exc) if exc.notify else None
            await self._dead(stream, entry_id, delivery, exc.reason, exc.status, notice)
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
            log.debug("delivered %s via %s in %.1f ms", delivery.id, name, delivery.history[-1].ms)
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

    async def _recalled(self, stream: str, entry_id: bytes, delivery: Delivery) -> bool:
        """A scenario step's message whose scenario was cancelled meanwhile (paid while
        the reminder waited for its sending window): settled without a send."""
        from .scenarios import moot  # noqa: PLC0415 - scenarios build on the router

        why = await moot(self.redis, self.layout, delivery.scenario or "")
        if why is None:
            return False
        now = self.clock()
        delivery.history.append(
            Attempt(n=delivery.attempt, at=round(now, 3), outcome="cancelled", ms=0, note=why)
        )
        log.info("delivery %s not sent: %s", delivery.id, why)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            self._write_record(pipe, self.shard_of[stream], delivery, "cancelled")
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.settled(self.streams[stream], "cancelled")
        return True

    async def _outside_window(self, stream: str, entry_id: bytes, delivery: Delivery) -> bool:
        """Defer a message outside its sending window to the window's next opening."""
        window = self.windows.get(delivery.window or "")
        if window is None:
            return False
        now = self.clock()
        opens = window.next_open(datetime.fromtimestamp(now, UTC))
        if opens is None:
            return False
        due = opens.timestamp()
        delivery.history.append(
            Attempt(
                n=delivery.attempt,
                at=round(now, 3),
                outcome="deferred",
                ms=0,
                error=f"outside sending window {window.name!r}; deferred to {opens.isoformat()}",
            )
        )
        log.info("delivery %s deferred to %s (window %s)", delivery.id, opens, window.name)
        await self._park(stream, entry_id, delivery, due, "deferred")
        return True

    async def _park(
        self, stream: str, entry_id: bytes, delivery: Delivery, due: float, status: Status
    ) -> None:
        """Move a job to the retries sorted set until ``due``, recording why, atomically."""
        member = stream.encode() + b"\n" + encode_delivery(delivery)
        async with self.redis.pipeline(transaction=True) as pipe:
            shard = self.shard_of[stream]
            pipe.zadd(shard.retries, {member: due * 1000})
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            self._write_record(pipe, shard, delivery, status, next_at=round(due, 3))
            await pipe.execute()

    async def _already_delivered(self, stream: str, entry_id: bytes, delivery: Delivery) -> bool:
        """A job taken over after its sender recorded it delivered: acknowledge, don't send."""
        data = await self.redis.get(self.shard_of[stream].record(delivery.id))
        if data is None or b'"status":"delivered"' not in data:
            return False
        log.info("delivery %s was already delivered: not sent again", delivery.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()
        return True

    async def _delivered_record(
        self, stream: str, channel: Channel[Any], delivery: Delivery
    ) -> bytes:
        """The record a delivered job settles with (and its body, if bodies are kept)."""
        if self.bodies is not None:
            await self.bodies.keep(self.shard_of[stream], channel, delivery)
        record = record_of(delivery, "delivered", now=self.clock(), privacy=self.privacy)
        return encode_record(record)

    def _write_record(
        self, pipe: Any, shard: Keys, delivery: Delivery, status: Status, **kw: Any
    ) -> None:
        """In the job's shard: a record is written in the transaction that settles it."""
        now = self.clock()
        record = record_of(delivery, status, now=now, privacy=self.privacy, **kw)
        pipe.set(shard.record(delivery.id), encode_record(record), ex=self.retention)
        pipe.zadd(shard.history, {delivery.id: now * 1000})

    async def _retry(
        self,
        stream: str,
        entry_id: bytes,
        delivery: Delivery,
        reason: str,
        retry_after: float | None,
        error: TransientError | None = None,
    ) -> None:
        policy = self.policies[delivery.channel]
        schedule = [float(d) for d in policy.retry_schedule]
        delay = next_delay(schedule, delivery.attempt, retry_after, jitter=policy.jitter)
        if delay is None:
            final = f"gave up after {delivery.attempt} attempts; last error: {reason}"
            notice = None
            if error is not None and error.notify:
                error.reason = final
                notice = self._failure_notice(delivery, error)
            await self._dead(stream, entry_id, delivery, final, None, notice)
            return
        log.info(
            "delivery %s attempt %d failed (%s); next in %.0fs",
            delivery.id,
            delivery.attempt,
            reason,
            delay,
        )
        delivery.attempt += 1
        await self._park(stream, entry_id, delivery, self.clock() + delay, "retrying")

    async def _dead(
        self,
        stream: str,
        entry_id: bytes,
        job: Delivery | bytes,
        reason: str,
        status: int | None,
        notice: Event | None = None,
    ) -> None:
        """Dead-letter a job; ``notice`` is an internal event accepted in the same step."""
        record = {
            "kind": "delivery",
            "channel": self.streams[stream],
            "j": job if isinstance(job, bytes) else encode_delivery(job),
            "reason": reason,
            "at": f"{self.clock():.3f}",
        }
        if status is not None:
            record["status"] = str(status)
        if notice is not None:
            await ENQUEUE_MANY.load(self.redis)  # used inside the transaction below
        shard = self.shard_of[stream]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(shard.dead, record)  # type: ignore[arg-type]
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            if isinstance(job, Delivery):
                self._write_record(pipe, shard, job, "dead")
            if notice is not None:
                # Accepted as the intake accepts an event: found by its id for replay.
                # In the job's shard, as one transaction needs: its customer's as a
                # rule's job is, possibly not a scenario step's (order matters little
                # for a notice, and lookups by id search every shard).
                ENQUEUE_MANY.add_to(
                    pipe,
                    [shard.events],
                    [
                        self.dedupe_window,
                        self._event_keep,
                        shard.dedupe(""),
                        notice.id,
                        encode_event(notice),
                    ],
                )
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.settled(self.streams[stream], "dead")

    def _failure_notice(self, delivery: Delivery, exc: DeliveryError) -> Event | None:
        """The internal event a plugin asked for (``PermanentError(notify=...)``)."""
        try:
            source = delivery.decode_event()
        except msgspec.DecodeError:
            return None
        if source.source.provider == INTERNAL_PROVIDER:
            return None  # a notice about a notice could loop
        now = self.clock()
        return Event(
            id=f"{delivery.id}_{int(now * 1000)}",
            type=exc.notify or "delivery.failed",
            occurred_at=datetime.fromtimestamp(now, UTC),
            source=EventSource(provider=INTERNAL_PROVIDER, event_type=exc.notify),
            customer=source.customer,
            refs=source.refs,
            data={
                **exc.details,
                "reason": exc.reason,
                "delivery_id": delivery.id,
                "channel": delivery.channel,
                "rule": delivery.rule,
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
            },
        )

    async def _ack_loop(self, stopping: asyncio.Event) -> None:
        backoff = Backoff(cap=RECONNECT_CAP)
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
        now_ms = int(self.clock() * 1000)
        try:
            # Not a MULTI: each script is atomic on its own, and on a cluster the streams
            # of several shards are in several slots.
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, jobs in acks.items():
                    shard = self.shard_of[stream]
                    args: list[Any] = [WORKER_GROUP, self.retention, now_ms, shard.record("")]
                    for job in jobs:
                        args.extend(job)
                    SETTLE.add_to(pipe, [stream, shard.history], args)
                results = await pipe.execute(raise_on_error=False)
            if any(isinstance(r, Exception) for r in results):
                await SETTLE.load(self.redis)  # NOSCRIPT after a Redis restart: retry
                raise RedisError(f"settling delivered jobs failed: {results}")
        except BaseException:
            for stream, jobs in acks.items():  # keep them for the next flush
                self._acks[stream].extend(jobs)
            raise
        for stream, jobs in acks.items():
            self._settling.difference_update((stream, job[0]) for job in jobs)
            if self.metrics is not None:
                self.metrics.settled(self.streams[stream], "delivered", len(jobs))

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

    # -- endpoint health ---------------------------------------------------------------

    async def _healthy(self, name: str) -> None:
        self._failing[name] = False
        try:
            await self.redis.hdel(self.layout.endpoint(name), "failing_since")
        except (RedisError, OSError):
            self._failing[name] = None  # try again on the next success

    async def _failing_now(self, name: str) -> None:
        self._failing[name] = True
        try:
            await self.redis.hsetnx(
                self.layout.endpoint(name), "failing_since", f"{self.clock():.3f}"
            )
        except (RedisError, OSError):
            self._failing[name] = None

    async def _health_loop(self, stopping: asyncio.Event) -> None:
        """Read endpoint health back (other workers write it too); disable dead endpoints."""
        backoff = Backoff()
        next_trim = 0.0
        while not stopping.is_set():
            try:
                await self._check_health()
                if time.monotonic() >= next_trim:
                    await self._trim()
                    next_trim = time.monotonic() + RETENTION_INTERVAL
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("endpoint health", exc)
                continue
            await asyncio.sleep(HEALTH_INTERVAL)

    async def _check_health(self) -> None:
        names = list(self.channels)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.layout.endpoint(name), "failing_since", "disabled_at")
            states = await pipe.execute()
        now = self.clock()
        for name, (failing_since, disabled_at) in zip(names, states, strict=True):
            was_disabled = name in self.disabled
            if disabled_at is not None:
                if not was_disabled:
                    log.warning("channel %s is disabled: its jobs wait until enabled", name)
                self.disabled.add(name)
            else:
                if was_disabled:
                    log.info("channel %s enabled again", name)
                self.disabled.discard(name)
            self._failing[name] = failing_since is not None
            limit = float(self.policies[name].disable_after)
            if failing_since is not None and disabled_at is None and limit > 0:
                since = float(failing_since)
                if now - since >= limit:
                    stamp = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
                    await self._disable(name, f"failing without a success since {stamp}")
        self._slot_free.set()

    async def _disable(self, name: str, reason: str) -> None:
        now = self.clock()
        when = datetime.fromtimestamp(now, UTC)
        hash_ = await self.redis.hmget(self.layout.endpoint(name), "failing_since")
        event = Event(
            id=f"endpoint_disabled_{name}_{int(now)}",
            type="endpoint.disabled",
            occurred_at=when,
            source=EventSource(provider=INTERNAL_PROVIDER, event_type="endpoint.disabled"),
            data={
                "channel": name,
                "reason": reason,
                "failing_since": (
                    datetime.fromtimestamp(float(hash_[0]), UTC).isoformat()
                    if hash_ and hash_[0] is not None
                    else None
                ),
                "disabled_at": when.isoformat(),
                "enable_with": f"tocsin endpoints enable {name}",
            },
        )
        home = self.layout.shard(name)
        done = await DISABLE(
            self.redis,
            # The endpoint's hash, and the events stream of its shard (one slot).
            [home.endpoint(name), home.events, home.dedupe(event.id)],
            [f"{now:.3f}", reason, encode_event(event), self._event_keep],
        )
        self.disabled.add(name)
        if done:
            log.error("channel %s disabled: %s (tocsin endpoints enable %s)", name, reason, name)

    async def _trim(self) -> None:
        """Enforce the retention: history index and dead letters older than it go."""
        cutoff = self.clock() - self.retention
        for shard in self.layout.shards:
            await self.redis.zremrangebyscore(shard.history, "-inf", cutoff * 1000)
            await self.redis.xtrim(shard.dead, minid=int(cutoff * 1000), approximate=False)

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
