"""Endpoint health: failing since when, disabled or not, shared by every worker through
Redis; and the retention trim that runs on the same loop."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from redis.exceptions import RedisError

from ..event import Event, EventSource, encode_event
from ..scripts import DISABLE
from ..streams import Backoff
from .base import HEALTH_INTERVAL, INTERNAL_PROVIDER, RETENTION_INTERVAL, WorkerBase, log


class Health(WorkerBase):
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
