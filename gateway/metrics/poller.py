"""Refresh the queue gauges every few seconds, with one process reading the queues.

Every gateway process runs a ``Poller``. Each round, one of them holds a short lease in
Redis (``<prefix>:metrics:lease``, renewed each round, lost after three missed rounds):
it takes the snapshot and writes it to ``<prefix>:metrics:snapshot``. The others read
that one key. So the queues are walked once per round whatever the number of processes
or machines, every process exports the same values, and a scrape only reads memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..intake_guard import IntakeStats
from ..keys import Layout
from .families import Metrics
from .snapshot import DeadTally, Snapshot, decode_snapshot, encode_snapshot, take_snapshot

log = logging.getLogger("tocsin.metrics")

# Take the lease if free, or renew it if ours.
LEASE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def lease_key(prefix: str) -> str:
    return f"{prefix}:metrics:lease"


def snapshot_key(prefix: str) -> str:
    return f"{prefix}:metrics:snapshot"


@dataclass
class Poller:
    redis: Redis
    layout: Layout
    metrics: Metrics
    #: Unique per process: the lease's holder.
    holder: str
    every: float = 5.0
    #: This process's intake counters, when it runs the intake.
    intake: IntakeStats | None = None
    clock: Callable[[], float] = time.time
    leader: bool = False
    #: Dead-letter tallies per shard, kept while this process is the leader.
    tallies: dict[str, DeadTally] = field(default_factory=dict)
    _synced: dict[str, int] = field(default_factory=dict)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.refresh()
            try:
                async with asyncio.timeout(self.every):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def refresh(self) -> Snapshot | None:
        """One round; the snapshot now exported, if any."""
        self._sync_intake()
        try:
            snapshot = await self._round()
        except (RedisError, OSError) as exc:
            self.metrics.redis_up.set(0)
            log.debug("metrics refresh: Redis unavailable: %s", exc)
            return None
        self.metrics.redis_up.set(1)
        if snapshot is not None:
            self.metrics.apply(snapshot)
        return snapshot

    async def _round(self) -> Snapshot | None:
        prefix = self.layout.prefix
        ttl = int(self.every * 3000)
        won = bool(await self.redis.eval(LEASE_LUA, 1, lease_key(prefix), self.holder, ttl))
        if won != self.leader:
            log.info("metrics: %s the queue snapshot", "taking" if won else "no longer taking")
            self.leader = won
            self.tallies.clear()
        if not won:
            data = await self.redis.get(snapshot_key(prefix))
            if data is None:
                return None
            return decode_snapshot(data if isinstance(data, bytes) else data.encode())
        started = time.monotonic()
        snapshot = await take_snapshot(
            self.redis, self.layout, self.metrics.known.channels, self.tallies, self.clock()
        )
        await self.redis.set(snapshot_key(prefix), encode_snapshot(snapshot), px=ttl)
        took = time.monotonic() - started
        if took > self.every / 2:
            log.warning("metrics: the queue snapshot took %.1f s (refresh every %.0f s)",
                        took, self.every)  # fmt: skip
        return snapshot

    def _sync_intake(self) -> None:
        """The connection guard's counters (plain ints, per process) into the metrics."""
        if self.intake is None:
            return
        now = {
            "max_connections": self.intake.refused_connections,
            "header_timeout": self.intake.header_timeouts,
        }
        for reason, value in now.items():
            self.metrics.connections(reason, value - self._synced.get(reason, 0))
            self._synced[reason] = value
