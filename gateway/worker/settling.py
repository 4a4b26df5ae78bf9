"""Settling a job: delivered (acknowledged in batches), retried later, deferred to a
sending window, cancelled, or dead-lettered; each in the same Redis step as its record."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.exceptions import RedisError

from ..channel import Channel
from ..delivery import Attempt, Delivery, encode_delivery
from ..errors import DeliveryError, PermanentError, TransientError
from ..event import Event, EventSource, encode_event
from ..history import Status, encode_record, record_of
from ..keys import WORKER_GROUP, Keys
from ..logs import OURS
from ..retry import next_delay
from ..scripts import ENQUEUE_MANY, SETTLE
from ..streams import Backoff
from ..suppression import feed_error, skip_reason
from .base import ACK_BATCH, ACK_LINGER, INTERNAL_PROVIDER, RECONNECT_CAP, WorkerBase, log, outcomes


class Settling(WorkerBase):
    async def _recalled(self, stream: str, entry_id: bytes, delivery: Delivery) -> bool:
        """A scenario step's message whose scenario was cancelled meanwhile (paid while
        the reminder waited for its sending window): settled without a send."""
        from ..scenarios import moot  # noqa: PLC0415 - scenarios build on the router

        why = await moot(self.redis, self.layout, delivery.scenario or "")
        if why is None:
            return False
        now = self.clock()
        delivery.history.append(
            Attempt(n=delivery.attempt, at=round(now, 3), outcome="cancelled", ms=0, note=why)
        )
        outcomes.info("delivery %s cancelled, not sent: %s", delivery.id, why, extra=OURS)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            self._write_record(pipe, self.shard_of[stream], delivery, "cancelled")
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.settled(self.streams[stream], "cancelled")
        return True

    async def _held(
        self, stream: str, entry_id: bytes, delivery: Delivery, channel: Channel[Any]
    ) -> bool:
        """Settled without a send: its address is suppressed, or it is outside its
        sending window (deferred; checked again when the window opens)."""
        if await self._suppressed(stream, entry_id, delivery, channel):
            return True
        return delivery.window is not None and await self._outside_window(
            stream, entry_id, delivery
        )

    async def _suppressed(
        self, stream: str, entry_id: bytes, delivery: Delivery, channel: Channel[Any]
    ) -> bool:
        """A message its address's suppression entry rules out: settled as
        ``suppressed``, with the entry's reason, without a send. One HGET."""
        address = channel.suppression_address(delivery) if delivery.recipient is not None else None
        if address is None:
            return False
        entry = await self.suppressions.get(address)
        why = skip_reason(entry, delivery.category)
        if why is None or entry is None:
            return False
        now = self.clock()
        since = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        until = (
            f", until {datetime.fromtimestamp(entry.until, UTC):%Y-%m-%d %H:%M UTC}"
            if entry.until is not None
            else ""
        )
        note = (
            f"not sent: address on the suppression list ({why}, by {entry.author}, since "
            f"{since}{until}); {delivery.category} message"
        )
        delivery.history.append(
            Attempt(n=delivery.attempt, at=round(now, 3), outcome="suppressed", ms=0, note=note)
        )
        outcomes.info("delivery %s suppressed, not sent: %s", delivery.id, why, extra=OURS)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, WORKER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            self._write_record(pipe, self.shard_of[stream], delivery, "suppressed")
            await pipe.execute()
        if self.metrics is not None:
            self.metrics.settled(self.streams[stream], "suppressed")
            self.metrics.suppressed(why)
        return True

    async def _refused(
        self,
        stream: str,
        entry_id: bytes,
        delivery: Delivery,
        channel: Channel[Any],
        exc: PermanentError,
    ) -> None:
        """Failed for good: dead-lettered, and its address listed when the refusal proves
        it unusable (after the dead letter: a Redis failure then loses only the listing)."""
        notice = self._failure_notice(delivery, exc) if exc.notify else None
        await self._dead(stream, entry_id, delivery, exc.reason, exc.status, notice)
        if exc.suppress is None:
            return
        try:
            await feed_error(self.suppressions, channel, delivery, exc)
        except (RedisError, OSError) as fault:
            log.error("suppression: could not list the address: %s", fault)

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
        outcomes.warning(
            "delivery %s dead-lettered on %s: %s",
            job.id if isinstance(job, Delivery) else f"job {entry_id.decode()}",
            self.streams[stream],
            reason,
        )
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
