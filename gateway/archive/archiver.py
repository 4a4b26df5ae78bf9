"""Move history older than the hot window from one shard's Redis keys to the archive.

One pass, bounded by ``batch`` per kind, in this order:

1. routed events older than the hot window, from the head of the events stream: written
   to the archive (insert-or-ignore on event id + shard + entry id), committed, then
   trimmed from the stream (``XTRIM MINID``, exact: only entries at or below the last one
   archived go);
2. delivery records last updated before both the hot window and the oldest event still
   in the stream (so a record's event is always archived first, and the record takes its
   customer and invoice ref from it): written (insert-or-replace on delivery id),
   committed, then dropped from Redis only if unchanged since they were read
   (``archive_drop.lua``);
3. dead letters older than the hot window: written (insert-or-ignore on shard + entry
   id), committed, then deleted from the dead-letter stream; one replayed meanwhile (its
   ``XDEL`` found nothing) is marked replayed in the archive;
4. on an archive created before the deliveries' ``to_hash`` column, until it is filled:
   the column of at most ``batch`` older rows (gateway.archive.migrate), paced as records.

Every record is in Redis until the archive has committed it, and every write is
idempotent: a crash anywhere in a pass leaves records in both tiers at worst, and the
next pass archives them again to the same rows. Readers (``gateway.archive.tiers``)
prefer Redis's copy when there are both.

Passes are paced to ``rate`` records a second, so that archiving's CPU (~40 µs a record
on the bench's box) is bounded whatever the backlog and never takes a share of the box
that deliveries would notice; the pace is lifted while the oldest record left is more
than ``max_lag`` beyond the hot window, so Redis memory stays bounded when intake outruns
the pace. (Cassandra's ``compaction_throughput`` and Kafka's log cleaner
``max.io.bytes.per.second`` throttle their background work the same way.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..keys import Keys
from ..scripts import Script
from ..streams import Backoff, as_text, entry_order
from .contract import ArchivedDeadLetter, ArchivedDelivery, ArchivedEvent, ArchiveStore

log = logging.getLogger("tocsin.archive")

ARCHIVE_DROP = Script("archive_drop")
ARCHIVE_TRIM = Script("archive_trim")

#: Records of each kind moved per pass.
BATCH = 1000
#: Pause between passes once caught up (a full batch goes on at once).
INTERVAL = 5.0
#: How often progress and lag are logged while there is work (and once caught up).
LOG_EVERY = 60.0
#: How long a process holds a shard's archiving, renewed every pass: another takes over
#: this long after the holder died. (A pass outliving it only lets two processes redo
#: the same idempotent writes.)
LOCK_MS = 15_000
#: Records archived per second at most (``[history] archive_rate``); 0: no pace.
RATE = 1000
#: Beyond this lag past the hot window the pace is lifted (``archive_max_lag``).
MAX_LAG = 3600.0
#: Longest pause the pace may ask for after a pass (a third of the lock's life).
MAX_PAUSE = LOCK_MS / 3000
#: Rows past the retention dropped from the archive per pass.
DROP_BATCH = 5000
_MAX_SEQ = 18446744073709551615


class _Customer(msgspec.Struct):
    id: str | None = None


class _Head(msgspec.Struct):
    """What the archive's columns take from an event: one decode of its head."""

    id: str = "?"
    type: str = "?"
    customer: _Customer | None = None
    refs: dict[str, str] = msgspec.field(default_factory=dict)


_head = msgspec.json.Decoder(_Head)


class _RecordHead(msgspec.Struct):
    id: str
    event_id: str
    status: str
    channel: str
    updated: float
    to_hash: str | None = None


_record_head = msgspec.json.Decoder(_RecordHead)


class _DeadJob(msgspec.Struct):
    id: str | None = None
    event_id: str | None = None


_dead_job = msgspec.json.Decoder(_DeadJob)


def pause_key(keys: Keys) -> str:
    """Set while something else (an erasure) must be the only one writing the archive."""
    return f"{keys.archive_lock}:pause"


@dataclass
class PassResult:
    events: int = 0
    deliveries: int = 0
    dead: int = 0
    dropped: int = 0
    #: Rows archived before the ``to_hash`` column whose column this pass filled
    #: (gateway.archive.migrate); 0 once all are.
    backfilled: int = 0
    #: Age (s) beyond the hot window of the oldest record left to archive; 0 if none.
    lag: float = 0.0

    @property
    def moved(self) -> int:
        return self.events + self.deliveries + self.dead


class Archiver:
    """Archives one shard (``keys``); run one per shard. Several processes may run one
    for the same shard: a lock in Redis lets one work at a time (the others would only
    redo the same idempotent writes)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        store: ArchiveStore,
        *,
        hot_window: float,
        retention: float,
        owner: str,
        batch: int = BATCH,
        interval: float = INTERVAL,
        rate: float = RATE,
        max_lag: float = MAX_LAG,
        counted: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.hot_window = hot_window
        self.retention = retention
        self.owner = owner
        # A pass's pause must stay well inside the lock's life, or another process would
        # take the shard over between passes and archive at its own pace too.
        self.batch = batch if rate <= 0 else max(1, min(batch, int(rate * MAX_PAUSE / 3)))
        self.interval = interval
        self.rate = rate
        self.max_lag = max_lag
        #: Told how many records of a kind (events, deliveries, dead_letters) each pass
        #: archived: the metrics' counter.
        self.counted = counted
        self.clock = clock
        self.total = PassResult()
        #: The pace is lifted (the lag is beyond ``max_lag``).
        self.hurrying = False
        #: Every row of the archive has its ``to_hash`` column (PassResult.backfilled).
        self.backfilled = False

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        last_log = 0.0
        while not stopping.is_set():
            result = PassResult()
            started = time.monotonic()
            try:
                if await self._hold_lock():
                    result = await self.archive_once()
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("archive", exc)
                continue
            except Exception:
                # An archive error (disk full, locked file) must not take the gateway
                # down: history stays in Redis meanwhile, and the next pass tries again.
                log.exception("archive: pass failed; history stays in Redis until it works")
                result = PassResult()
            now = time.monotonic()
            if (result.moved and now - last_log >= LOG_EVERY) or (result.lag and last_log == 0):
                self._log(result)
                last_log = now
            pause = self.pause(result, time.monotonic() - started)
            if max(result.events, result.deliveries, result.dead, result.backfilled) < self.batch:
                pause = self.interval  # caught up: the next pass can wait
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), pause)
        with contextlib.suppress(RedisError, OSError):
            await self._release_lock()

    def pause(self, result: PassResult, took: float) -> float:
        """Seconds to wait after a pass that took ``took`` to keep the pace (and whether
        the pace is lifted, logged as it changes)."""
        hurrying = self.rate > 0 and result.lag > self.max_lag
        if hurrying != self.hurrying:
            self.hurrying = hurrying
            if hurrying:
                log.warning(
                    "archive shard %d: %.0fs behind the hot window, more than "
                    "archive_max_lag (%.0fs): archiving at full speed until back under it",
                    self.keys.index,
                    result.lag,
                    self.max_lag,
                )
            else:
                log.info(
                    "archive shard %d: back under archive_max_lag; archiving at %g records/s again",
                    self.keys.index,
                    self.rate,
                )
        if self.rate <= 0 or hurrying:
            return 0.0
        return max(0.0, (result.moved + result.backfilled) / self.rate - took)

    def _log(self, result: PassResult) -> None:
        t = self.total
        log.info(
            "archive shard %d: %d events, %d deliveries, %d dead letters archived so far "
            "(this pass %d/%d/%d); lag %.0fs beyond the hot window",
            self.keys.index,
            t.events,
            t.deliveries,
            t.dead,
            result.events,
            result.deliveries,
            result.dead,
            result.lag,
        )

    async def _hold_lock(self) -> bool:
        key = self.keys.archive_lock
        if await self.redis.exists(pause_key(self.keys)):
            # An erasure (gateway.privacy.forget) is rewriting this shard's history: let
            # it take the lock, so nothing read before it is archived after it.
            await self._release_lock()
            return False
        if await self.redis.set(key, self.owner, nx=True, px=LOCK_MS):
            return True
        holder: Any = await self.redis.get(key)
        if holder is not None and as_text(holder) == self.owner:
            await self.redis.pexpire(key, LOCK_MS)
            return True
        return False

    async def _release_lock(self) -> None:
        holder: Any = await self.redis.get(self.keys.archive_lock)
        if holder is not None and as_text(holder) == self.owner:
            await self.redis.delete(self.keys.archive_lock)

    async def archive_once(self) -> PassResult:
        """One bounded pass (see the module docstring); safe to interrupt anywhere."""
        cutoff_ms = int((self.clock() - self.hot_window) * 1000)
        result = PassResult()
        result.events = await self._events(cutoff_ms)
        result.deliveries = await self._deliveries(cutoff_ms)
        result.dead = await self._dead_letters(cutoff_ms)
        result.dropped = await self.store.drop_before(
            int((self.clock() - self.retention) * 1000), DROP_BATCH
        )
        if not self.backfilled and not self.hurrying:
            # Behind on Redis, archiving comes first: the backfill only speeds searches.
            result.backfilled = await self.store.backfill_to_hash(self.batch)
            self.backfilled = result.backfilled < self.batch
        result.lag = await self._lag(cutoff_ms)
        for name in ("events", "deliveries", "dead", "dropped", "backfilled"):
            setattr(self.total, name, getattr(self.total, name) + getattr(result, name))
        if self.counted is not None:
            for kind, n in (
                ("events", result.events),
                ("deliveries", result.deliveries),
                ("dead_letters", result.dead),
            ):
                if n:
                    self.counted(kind, n)
        return result

    async def _events(self, cutoff_ms: int) -> int:
        mark: Any = await self.redis.get(self.keys.routed_through)
        if mark is None:
            return 0  # nothing is known to be routed
        upper = min((cutoff_ms - 1, _MAX_SEQ), entry_order(mark))
        if upper[0] < 0:
            return 0
        entries: Any = await self.redis.xrange(
            self.keys.events, min="-", max=f"{upper[0]}-{upper[1]}", count=self.batch
        )
        if not entries:
            return 0
        rows = []
        for entry_id, fields in entries:
            raw = fields.get(b"e", b"")
            try:
                head = _head.decode(raw)
            except msgspec.DecodeError:
                head = _Head()
            entry = as_text(entry_id)
            rows.append(
                ArchivedEvent(
                    event_id=head.id,
                    shard=self.keys.index,
                    entry=entry,
                    accepted=entry_order(entry)[0],
                    type=head.type,
                    customer_id=head.customer.id if head.customer else None,
                    invoice_ref=head.refs.get("invoice_ref"),
                    raw=raw,
                )
            )
        await self.store.put_events(rows)
        ms, seq = entry_order(entries[-1][0])
        args: list[Any] = [f"{ms}-{seq + 1}"]
        for row in rows:
            args += [row.entry, row.customer_id or "", row.invoice_ref or ""]
        await ARCHIVE_TRIM(self.redis, [self.keys.events, self.keys.search_index], args)
        return len(rows)

    async def _deliveries(self, cutoff_ms: int) -> int:
        # Not past the oldest event still in the stream: a record's event goes first.
        head: Any = await self.redis.xrange(self.keys.events, count=1)
        if head:
            cutoff_ms = min(cutoff_ms, entry_order(head[0][0])[0])
        scored: Any = await self.redis.zrangebyscore(
            self.keys.history, "-inf", f"({cutoff_ms}", start=0, num=self.batch, withscores=True
        )
        if not scored:
            return 0
        ids = [as_text(member) for member, _ in scored]
        values: Any = await self.redis.mget([self.keys.record(i) for i in ids])
        records: list[ArchivedDelivery] = []
        args: list[Any] = [self.keys.record(""), self.keys.event_deliveries("")]
        for (member, score), value in zip(scored, values, strict=True):
            event_id = ""
            if value is not None:  # else expired after the retention: only its index entry
                try:
                    r = _record_head.decode(value)
                except msgspec.DecodeError:
                    log.error("archive: undecodable delivery record %r left in Redis", value[:80])
                    continue
                updated = int(r.updated * 1000)
                records.append(
                    ArchivedDelivery(
                        r.id, r.event_id, updated, r.status, r.channel, value, r.to_hash
                    )
                )
                event_id = r.event_id
            args += [member, repr(float(score)), event_id]
        if records:
            await self.store.put_deliveries(records)
        await ARCHIVE_DROP(self.redis, [self.keys.history], args)
        return len(records)

    async def _dead_letters(self, cutoff_ms: int) -> int:
        entries: Any = await self.redis.xrange(
            self.keys.dead, min="-", max=f"({cutoff_ms}-0", count=self.batch
        )
        if not entries:
            return 0
        rows = [self._dead_row(entry_id, fields) for entry_id, fields in entries]
        await self.store.put_dead_letters(rows)
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.xdel(self.keys.dead, row.entry)
            deleted = await pipe.execute()
        for row, gone in zip(rows, deleted, strict=True):
            if not gone:  # replayed from Redis between our read and now: not a letter
                await self.store.claim_dead_letter(row.shard, row.entry, int(self.clock() * 1000))
        return len(rows)

    def _dead_row(self, entry_id: Any, fields: dict[bytes, bytes]) -> ArchivedDeadLetter:
        """A dead-letter stream entry as ``admin`` reads it: ``kind`` delivery (its job in
        ``j``) or event (in ``e``), ``at`` (else the entry id's time), ``status``."""
        entry = as_text(entry_id)
        kind = fields.get(b"kind", b"delivery").decode()
        payload = fields.get(b"j" if kind == "delivery" else b"e", b"")
        job = _DeadJob()
        if kind == "delivery":
            with contextlib.suppress(msgspec.DecodeError):
                job = _dead_job.decode(payload)
        channel, status, at = fields.get(b"channel"), fields.get(b"status"), fields.get(b"at")
        return ArchivedDeadLetter(
            shard=self.keys.index,
            entry=entry,
            at=int(float(at) * 1000) if at else entry_order(entry)[0],
            kind=kind,
            channel=channel.decode() if channel else None,
            delivery_id=job.id,
            event_id=job.event_id,
            reason=fields.get(b"reason", b"").decode(),
            status=int(status) if status else None,
            payload=payload,
        )

    async def _lag(self, cutoff_ms: int) -> float:
        """How far beyond the hot window the oldest record still to archive is."""
        oldest = cutoff_ms
        head: Any = await self.redis.xrange(self.keys.events, count=1)
        if head:
            oldest = min(oldest, entry_order(head[0][0])[0])
        first: Any = await self.redis.zrange(self.keys.history, 0, 0, withscores=True)
        if first:
            oldest = min(oldest, int(first[0][1]))
        return max(0.0, (cutoff_ms - oldest) / 1000)
