"""Apply a checked conf to a running gateway process, or keep the old one.

The order matters for "no event lost or sent twice": new channels are started first (a
channel that cannot start fails the reload with nothing swapped); then intake sources,
router rules and scenarios switch between two events; then the worker is replaced. The
old worker stops reading and finishes its in-flight sends with the channels they
started on, acknowledging each; the new worker reads under another consumer name from
the same group, so no job is read by both. The old channel instances are closed once
the old worker is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from ..channel import Channel
from ..keys import WORKER_GROUP
from ..plan import Plan
from ..scenarios import ScenarioEngine
from .bus import (
    HEARTBEAT_EVERY,
    ProcessConf,
    current_generation,
    hex_hash,
    listen,
    new_entry,
    publish_reload,
    write_entry,
)
from .check import Checked, check_conf
from .scenarios import apply_scenario_changes
from .sweep import Sweeper, removal_reason, removed_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..keys import Layout
    from ..metrics.families import Metrics
    from ..router import Router
    from ..worker import Worker


class Gateway(Protocol):
    """What a reload swaps in a running gateway (``gateway.service.Gateway``), named here
    so that the service can import the reloader without the reloader importing it."""

    plan: Plan
    consumer: str
    redis: Redis
    routers: list[Router]
    scenario_engine: ScenarioEngine | None
    worker: Worker | None
    worker_stop: asyncio.Event
    worker_task: asyncio.Task[None] | None
    stopping: asyncio.Event
    metrics: Metrics
    metrics_digest: float
    reloader: Reloader

    @property
    def layout(self) -> Layout: ...

    async def open_channels(self, plan: Plan) -> None: ...

    def _scenarios(self, redis: Redis) -> ScenarioEngine | None: ...

    def _worker(self, redis: Redis, consumer: str | None = None) -> Worker: ...


log = logging.getLogger("tocsin.reload")


@dataclass
class ReloadResult:
    """What one process did with a reload (the admin API answers with it)."""

    ok: bool
    conf_hash: str
    #: ``file:line: path: reason`` for each problem; the old conf still runs if any.
    problems: list[str] = field(default_factory=list)
    #: Restart-only settings that changed: kept at their running value.
    needs_restart: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    #: Seconds spent checking the new conf, and swapping it in.
    check_seconds: float = 0.0
    swap_seconds: float = 0.0


async def close_replaced(channel: Channel[Any]) -> None:
    """Close a channel once (shutdown may come for it again)."""
    if getattr(channel, "_tocsin_closed", False):
        return
    channel._tocsin_closed = True  # type: ignore[attr-defined]
    try:
        await channel.close()
    except Exception:
        log.exception("closing replaced channel %s", channel.name)


class Reloader:
    """One per gateway process: SIGHUP, the Redis nudge and the admin API end here."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.lock = asyncio.Lock()
        self.generation = 0
        self.reloads = 0
        self.background: set[asyncio.Task[Any]] = set()
        conf = gateway.plan.conf
        self.prefix = conf.redis.prefix
        self.entry: ProcessConf = new_entry(gateway.consumer, gateway.metrics_digest)

    # -- triggers ------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        gw = self.gateway
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self._spawn, "SIGHUP")
        with contextlib.suppress(RedisError, OSError):
            self.generation = await current_generation(gw.redis, self.prefix)
        await self._resume_sweeps()
        tasks = [
            asyncio.create_task(listen(gw.redis, self.prefix, stopping, self._nudged)),
            asyncio.create_task(self._heartbeat(stopping)),
        ]
        await stopping.wait()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:  # the listener may be waiting on Redis: not worth a delay
            task.cancel()
        await asyncio.gather(*tasks, *self.background, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await gw.redis.hdel(f"{self.prefix}:processes", gw.consumer)

    def _spawn(self, why: str) -> None:
        task = asyncio.create_task(self.reload(why))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _nudged(self, generation: int) -> None:
        if generation > self.generation:
            self.generation = generation
            await self.reload(f"tocsin reload (generation {generation})")

    async def _heartbeat(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(RedisError, OSError):
                await write_entry(self.gateway.redis, self.prefix, self.entry)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), HEARTBEAT_EVERY)

    # -- the reload itself -----------------------------------------------------------------

    async def reload(self, why: str = "admin API", everywhere: bool = False) -> ReloadResult:
        """Check the conf file again and swap it in if it passes. ``everywhere``: also
        nudge every other process on this Redis (they check on their own)."""
        async with self.lock:
            result = await self._reload(why)
        if everywhere:
            with contextlib.suppress(RedisError, OSError):
                await publish_reload(self.gateway.redis, self.prefix, self._taken)
        return result

    def _taken(self, generation: int) -> None:
        self.generation = max(self.generation, generation)

    async def _reload(self, why: str) -> ReloadResult:
        gw = self.gateway
        old = gw.plan
        log.info("reloading %s (%s)", old.conf.path, why)
        started = time.monotonic()
        checked: Checked = await asyncio.to_thread(check_conf, old.conf.path, None, old.conf)
        result = ReloadResult(
            ok=False,
            conf_hash=hex_hash(checked.digest),
            problems=list(checked.problems),
            needs_restart=checked.needs_restart,
            check_seconds=time.monotonic() - started,
        )
        if checked.ok and checked.plan is not None:
            try:
                await self._swap(old, checked.plan, result)
                result.ok = True
            except Exception as exc:  # a channel that cannot start: nothing was swapped
                log.exception("reload: the new conf could not be started")
                result.problems.append(f"starting the new conf: {type(exc).__name__}: {exc}")
        await self._report(checked, result)
        return result

    async def _report(self, checked: Checked, result: ReloadResult) -> None:
        gw = self.gateway
        now = time.time()
        self.entry.last_reload_at, self.entry.last_reload_ok = now, result.ok
        self.entry.generation = self.generation
        self.entry.problems = result.problems[:50]
        self.entry.needs_restart = result.needs_restart
        if result.ok:
            self.reloads += 1
            gw.metrics.conf_loaded(checked.digest)
            self.entry.conf_hash, self.entry.loaded_at = result.conf_hash, now
            log.info(
                "conf %s reloaded in %.1f ms (checked in %.0f ms): channels +%s -%s ~%s",
                result.conf_hash,
                result.swap_seconds * 1000,
                result.check_seconds * 1000,
                ",".join(result.added) or "0",
                ",".join(result.removed) or "0",
                ",".join(result.changed) or "0",
            )
        else:
            gw.metrics.conf_loaded(checked.digest, ok=False)
            for problem in result.problems:
                log.error("reload refused: %s", problem)
            log.error(
                "reload refused: %d problem(s); still running conf %s",
                len(result.problems),
                self.entry.conf_hash,
            )
        for setting in result.needs_restart:
            log.warning("reload: %s needs a restart; still running the old value", setting)
        with contextlib.suppress(RedisError, OSError):  # the heartbeat writes it again
            await write_entry(gw.redis, self.prefix, self.entry)

    async def _swap(self, old: Plan, new: Plan, result: ReloadResult) -> None:
        gw = self.gateway
        old_tables, new_tables = old.conf.channels, new.conf.channels
        result.added = sorted(set(new.channels) - set(old.channels))
        result.removed = sorted(set(old.channels) - set(new.channels))
        result.changed = sorted(
            n for n in set(old_tables) & set(new_tables) if old_tables[n] != new_tables[n]
        )
        worker_role = gw.worker is not None
        started = time.monotonic()
        if worker_role:
            await gw.open_channels(new)  # fails before anything is swapped
        intake = getattr(gw, "intake", None)
        if intake is not None:
            intake.sources, intake.channels = new.sources, new.channels
        engine = await self._swap_scenarios(new)
        for router in gw.routers:
            router.use_rules(new.rules)
            router.scenarios = engine
        gw.plan = new
        if worker_role:
            self._swap_worker(old, new)
        result.swap_seconds = time.monotonic() - started
        # replace: the restart-only parts (watches, the hot window) keep running values.
        gw.metrics.known = replace(
            gw.metrics.known,
            sources=tuple(new.sources),
            channels=tuple(new.channels),
            scenarios=tuple(s.name for s in new.scenarios),
        )
        gw.metrics.rezero()
        await self._after_swap(old, new, result)

    async def _swap_scenarios(self, new: Plan) -> ScenarioEngine | None:
        gw = self.gateway
        if not gw.routers:
            return None
        engine = gw.scenario_engine
        if engine is None and new.scenarios:
            engine = gw.scenario_engine = gw._scenarios(gw.redis)
            assert engine is not None
            self._background(engine.run(gw.stopping, gw.consumer))
        elif engine is not None:
            engine.scenarios = new.scenarios
        return engine if new.scenarios else None

    def _swap_worker(self, old: Plan, new: Plan) -> None:
        gw = self.gateway
        previous, previous_stop, previous_task = gw.worker, gw.worker_stop, gw.worker_task
        assert previous is not None and previous_task is not None
        gw.worker_stop = asyncio.Event()
        gw.worker = gw._worker(gw.redis, f"{gw.consumer}~r{self.reloads + 1}")
        # A channel whose limits did not change goes on counting its sends in flight
        # and its rate across the swap: the two workers share its gate.
        for name, gate in previous.gates.items():
            if name in gw.worker.gates and previous.policies[name] == gw.worker.policies[name]:
                gw.worker.gates[name] = gate
        gw.worker_task = asyncio.create_task(gw.worker.run(gw.worker_stop))
        # Its in-flight sends finish under the old conf, each within its own timeout.
        timeouts = [c.send_timeout for c in old.channels.values()] or [0.0]
        previous.shutdown_grace = max(previous.shutdown_grace, max(timeouts) + 1.0)
        previous_stop.set()
        self._background(self._retire(previous, previous_task, old))

    async def _retire(self, worker: Worker, task: asyncio.Task[Any], old: Plan) -> None:
        await asyncio.gather(task, return_exceptions=True)
        for channel in old.channels.values():
            await close_replaced(channel)
        gw = self.gateway
        if worker.consumer == gw.consumer:
            return  # the process's own name: the router and scenarios use it too
        with contextlib.suppress(RedisError, OSError):
            for stream in worker.streams:
                pending: Any = await gw.redis.xpending_range(
                    stream, WORKER_GROUP, "-", "+", 1, consumername=worker.consumer
                )
                if pending:
                    return  # left for a takeover: the name must stay
            for stream in worker.streams:
                await gw.redis.xgroup_delconsumer(stream, WORKER_GROUP, worker.consumer)

    async def _after_swap(self, old: Plan, new: Plan, result: ReloadResult) -> None:
        gw = self.gateway
        redis = gw.redis
        if gw.worker is not None:
            with contextlib.suppress(RedisError, OSError):
                if result.removed:
                    await redis.sadd(removed_key(self.prefix), *result.removed)
                if new.channels:
                    await redis.srem(removed_key(self.prefix), *new.channels)
            if result.removed:
                reasons = {n: removal_reason(n, result.conf_hash) for n in result.removed}
                self._sweep(reasons, old)
        engine = gw.scenario_engine
        if engine is not None and gw.routers:
            self._background(
                apply_scenario_changes(redis, engine, old.conf, new.conf, result.conf_hash)
            )

    async def _resume_sweeps(self) -> None:
        """Removed channels a previous process had not finished sweeping."""
        gw = self.gateway
        if gw.worker is None:
            return
        try:
            names: Any = await gw.redis.smembers(removed_key(self.prefix))
        except (RedisError, OSError):
            return
        todo = {n.decode() for n in names} - set(gw.plan.channels)
        if todo:
            self._sweep({n: removal_reason(n, self.entry.conf_hash) for n in todo}, gw.plan)

    def _sweep(self, reasons: dict[str, str], old: Plan) -> None:
        gw = self.gateway
        visibility = max(
            [old.visibility_timeout(n) for n in reasons if n in old.channels] or [35.0]
        )
        sweeper = Sweeper(
            gw.redis,
            gw.layout,
            f"{gw.consumer}~sweep",
            retention=float(gw.plan.conf.history.retention),
            visibility=visibility,
        )

        async def done(name: str) -> bool:
            with contextlib.suppress(RedisError, OSError):
                await gw.redis.srem(removed_key(self.prefix), name)
            log.info("removed channel %s: its queues are empty", name)
            return True

        self._background(sweeper.run(reasons, gw.stopping, done, at_least=visibility))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reload: a background step failed: %r", task.exception())


async def reload(gateway: Gateway, everywhere: bool = True) -> ReloadResult:
    """What ``POST /admin/v1/reload`` calls: reload this process now (its result), and
    with ``everywhere`` nudge every other process sharing its Redis."""
    return await gateway.reloader.reload("admin API", everywhere=everywhere)
