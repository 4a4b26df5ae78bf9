"""Retention: everything with a date goes when its kind's time is up.

``[retention]`` sets a duration per kind (docs/data-protection.md); events, deliveries
and dead letters default to ``[history] retention``, which bounds them (records and
receipts carry it as their Redis TTL, routers and the archiver trim by it too: this task
enforces shorter settings, and the kinds nothing else trims: ended scenario instances,
outbox files, the audit stream, and each archive table by its own kind's time, whole
UTC days at a time).

One process trims at a time (a Redis lease, ``<prefix>:retention:lease``); a pass does
at most ``[retention] batch`` items of each kind per shard, then the next pass goes on
(at once while there is more). ``tocsin retention --dry-run`` counts what would go now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..archive import ArchiveStore
from ..conf import Conf
from ..keys import Keys, Layout
from ..scenario_model import SEP, doc_decoder
from ..streams import Backoff, as_text, entry_order
from . import outboxes
from .audit import audit_key
from .bodies import body_key

log = logging.getLogger("tocsin.retention")

#: Lease time: another process takes over this long after the holder died.
LEASE_MS = 30_000
DAY = 86400
KINDS = ("events", "deliveries", "dead_letters", "scenarios", "outboxes", "audit")


@dataclass(frozen=True)
class Retention:
    """Seconds each kind is kept."""

    events: float
    deliveries: float
    dead_letters: float
    scenarios: float
    outboxes: float
    audit: float
    batch: int = 1000
    interval: float = 60.0

    @classmethod
    def of(cls, conf: Conf) -> Retention:
        r, ceiling = conf.retention, float(conf.history.retention)
        return cls(
            events=float(r.events if r.events is not None else ceiling),
            deliveries=float(r.deliveries if r.deliveries is not None else ceiling),
            dead_letters=float(r.dead_letters if r.dead_letters is not None else ceiling),
            scenarios=float(r.scenarios),
            outboxes=float(r.outboxes),
            audit=float(r.audit),
            batch=r.batch,
            interval=float(r.interval),
        )


@dataclass
class Swept:
    """How many items of each kind went (or, dry, would go): ``archive_events``..."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def _older(redis: Redis, key: str, high: str, limit: int | None) -> list[Any]:
    """Entry ids of a stream up to ``high`` (an XRANGE bound): ``limit`` at most, or all."""
    found: list[Any] = []
    start = "-"
    while True:
        count = 1000 if limit is None else min(1000, limit - len(found))
        if count <= 0:
            return found
        page: Any = await redis.xrange(key, min=start, max=high, count=count)
        found += [entry_id for entry_id, _ in page]
        if len(page) < count:
            return found
        ms, seq = entry_order(page[-1][0])
        start = f"{ms}-{seq + 1}"


async def _trim_stream(
    redis: Redis, key: str, before_ms: int, limit: int, dry_run: bool, upto: Any = None
) -> int:
    """Oldest entries below ``before_ms`` (and at most ``upto``, an entry id) go."""
    high = f"({before_ms}-0"
    if upto is not None and entry_order(upto) < (before_ms, 0):
        ms, seq = entry_order(upto)
        high = f"{ms}-{seq}"
    ids = await _older(redis, key, high, None if dry_run else limit)
    if dry_run or not ids:
        return len(ids)
    ms, seq = entry_order(ids[-1])
    await redis.xtrim(key, minid=f"{ms}-{seq + 1}", approximate=False)
    return len(ids)


class Sweeper:
    """One pass over every kind; ``dry_run`` only counts (all, not a batch)."""

    def __init__(
        self,
        redis: Redis,
        layout: Layout,
        retention: Retention,
        *,
        archive: ArchiveStore | None = None,
        outbox_roots: Sequence[Path] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.layout, self.retention = redis, layout, retention
        self.archive, self.outbox_roots, self.clock = archive, list(outbox_roots), clock

    def _before_ms(self, kind: str) -> int:
        return int((self.clock() - float(getattr(self.retention, kind))) * 1000)

    async def sweep(self, dry_run: bool = False) -> Swept:
        swept = Swept()
        batch = self.retention.batch
        for keys in self.layout.shards:
            await self._shard(keys, swept, batch, dry_run)
        swept.add(
            "audit",
            await _trim_stream(
                self.redis, audit_key(self.layout.prefix), self._before_ms("audit"), batch, dry_run
            ),
        )
        if self.archive is not None:
            for kind in ("events", "deliveries", "dead_letters"):
                # Whole UTC days: a day's rows go together, at the first pass after it ends.
                day = (int(self._before_ms(kind) / 1000) // DAY) * DAY
                n = await self.archive.drop_kind_before(kind, day * 1000, batch, dry_run=dry_run)
                swept.add(f"archive_{kind}", n)
        before = self.clock() - self.retention.outboxes
        n = await asyncio.to_thread(outboxes.expire, self.outbox_roots, before, batch, dry_run)
        swept.add("outboxes", n)
        return swept

    async def _shard(self, keys: Keys, swept: Swept, batch: int, dry_run: bool) -> None:
        redis = self.redis
        mark: Any = await redis.get(keys.routed_through)
        if mark is not None:  # only routed events go, however old the others
            n = await _trim_stream(
                redis, keys.events, self._before_ms("events"), batch, dry_run, upto=mark
            )
            swept.add("events", n)
        swept.add(
            "dead_letters",
            await _trim_stream(redis, keys.dead, self._before_ms("dead_letters"), batch, dry_run),
        )
        cutoff = f"({self._before_ms('deliveries')}"
        if dry_run:
            swept.add("deliveries", int(await redis.zcount(keys.history, "-inf", cutoff)))
        else:
            ids: Any = await redis.zrangebyscore(keys.history, "-inf", cutoff, start=0, num=batch)
            if ids:
                names = [as_text(i) for i in ids]
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.delete(*[keys.record(i) for i in names])
                    pipe.delete(*[body_key(keys, i) for i in names])
                    pipe.zrem(keys.history, *ids)
                    await pipe.execute()
                swept.add("deliveries", len(ids))
        swept.add("scenarios", await self._scenarios(keys, batch, dry_run))

    async def _scenarios(self, keys: Keys, batch: int, dry_run: bool) -> int:
        """Ended instances last changed before the cutoff; running ones stay."""
        cutoff = f"({self._before_ms('scenarios')}"
        gone, offset = 0, 0
        while dry_run or gone < batch:
            members: Any = await self.redis.zrangebyscore(
                keys.scenarios, "-inf", cutoff, start=offset, num=batch
            )
            if not members:
                break
            for member in members:
                name, _, key = as_text(member).partition(SEP)
                doc: Any = await self.redis.hget(keys.scenario(name, key), "doc")
                if doc is not None and doc_decoder.decode(doc).status == "active":
                    offset += 1
                    continue
                gone += 1
                if dry_run:
                    offset += 1
                    continue
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.delete(keys.scenario(name, key))
                    pipe.zrem(keys.scenarios, member)
                    await pipe.execute()
        return gone


class RetentionTask:
    """The background trim: one process at a time, bounded passes."""

    def __init__(self, sweeper: Sweeper, owner: str) -> None:
        self.sweeper = sweeper
        self.owner = owner
        self.key = f"{sweeper.layout.prefix}:retention:lease"

    async def _lease(self) -> bool:
        redis = self.sweeper.redis
        if await redis.set(self.key, self.owner, nx=True, px=LEASE_MS):
            return True
        holder: Any = await redis.get(self.key)
        if holder is not None and as_text(holder) == self.owner:
            await redis.pexpire(self.key, LEASE_MS)
            return True
        return False

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        interval = self.sweeper.retention.interval
        while not stopping.is_set():
            swept = Swept()
            try:
                if await self._lease():
                    swept = await self.sweeper.sweep()
                    if swept.total:
                        log.info("retention: removed %s", _summary(swept))
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("retention", exc)
                continue
            except Exception:
                log.exception("retention: pass failed; the next one tries again")
            full = any(n >= self.sweeper.retention.batch for n in swept.counts.values())
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval)
        with contextlib.suppress(RedisError, OSError):
            holder: Any = await self.sweeper.redis.get(self.key)
            if holder is not None and as_text(holder) == self.owner:
                await self.sweeper.redis.delete(self.key)


def _summary(swept: Swept) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(swept.counts.items()) if n)
