"""``tocsin serve``: intake, router and workers in one asyncio process, sharing one Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .adminapi import JobRunner, context_for, mount
from .archive import Archiver, ArchiveStore, opened
from .channel import Channel
from .confirm import ConfirmChannel
from .console import mount as mount_console
from .errors import LayoutError
from .intake import Enqueuer, Intake
from .intake_guard import ConnectionGuard, GuardedSite, IntakeStats
from .keys import Layout
from .metrics import (
    Exporter,
    Known,
    Metrics,
    Poller,
    conf_digest,
    multiprocess_dir,
    refusal_counter,
)
from .plan import EVENTS_SOURCE, Plan
from .privacy.bodies import BodyKeeper
from .privacy.outboxes import outbox_roots
from .privacy.recipients import RecordPrivacy
from .privacy.retention import Retention, RetentionTask, Sweeper
from .redis_client import connect
from .reload.swap import Reloader
from .reload.swap import reload as reload_gateway
from .router import Router, default_reclaim_after
from .scenarios import ScenarioEngine
from .streams import Backoff
from .watch import Watcher
from .worker import Worker

log = logging.getLogger("tocsin")

ROLES = ("intake", "router", "worker")
#: On ``/healthz`` answers: the pid of the gateway process that answered.
PROCESS_HEADER = "Tocsin-Process"


def consumer_name() -> str:
    """Unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def redact_url(url: str) -> str:
    """``redis://user:pass@host/0`` -> ``redis://user:***@host/0``: URLs as logs may show them."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def server_durability(redis: Redis, setting: str) -> bool:
    """Decide whether intake must WAITAOF, and warn when the server may lose acked events."""
    info = await redis.info("server")
    version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
    config: dict[Any, Any]
    try:
        config = await redis.config_get("append*")
    except RedisError:  # managed services often forbid CONFIG
        config = {}
    settings = {_text(k): _text(v) for k, v in config.items()}
    aof, fsync = settings.get("appendonly"), settings.get("appendfsync")
    if aof == "no":
        log.warning("Redis has appendonly=no: accepted events do not survive a Redis restart")
    supported = version >= (7, 2)
    if setting == "always" and not supported:
        raise RuntimeError(f"redis.wait_aof = 'always' needs Redis >= 7.2 (server: {version})")
    wait = setting == "always" or (setting == "auto" and supported and fsync != "always")
    if not wait and fsync not in ("always", None) and aof != "no":
        log.warning(
            "Redis fsyncs its AOF %s and WAITAOF is unavailable: up to ~1 s of accepted "
            "events may be lost if the Redis host crashes",
            fsync,
        )
    return wait


async def check_layout(redis: Redis, layout: Layout) -> None:
    """Refuse a shard count other than the one the data set was written with: events
    and jobs queued under the old count's keys would never be read again. The first
    gateway on a data set records its count."""
    await redis.set(layout.marker, str(layout.count), nx=True)
    recorded: Any = await redis.get(layout.marker)
    if recorded is not None and int(recorded) != layout.count:
        raise LayoutError(
            f"redis.shards = {layout.count}, but the data under prefix "
            f"{layout.prefix!r} was written with {int(recorded)} shard(s): set "
            f"redis.shards = {int(recorded)}, or change the count on a drained Redis "
            "(docs/deployment.md, Redis Cluster)"
        )


@dataclass
class Gateway:
    plan: Plan
    redis_url: str
    roles: Iterable[str] = ROLES
    consumer: str = field(default_factory=consumer_name)
    host: str | None = None
    port: int | None = None
    #: Already bound (``tocsin serve`` binds before starting anything): used instead of
    #: host/port.
    sock: socket.socket | None = None
    #: Filled once serving: the port actually bound (useful with port 0).
    bound_port: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Runs bulk replay jobs where the admin API is served.
    admin_jobs: JobRunner | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        roles = set(self.roles)
        async with AsyncExitStack() as stack:
            conf = self.plan.conf
            redis = connect(self.redis_url, cluster=conf.redis.cluster)
            stack.push_async_callback(redis.aclose)
            wait_aof = await self._wait_for_redis(redis, stopping)
            if wait_aof is None:
                return
            await check_layout(redis, self.layout)
            # What a reload swaps (gateway/reload).
            self.redis, self.running_roles, self.stopping = redis, roles, stopping
            self.routers: list[Router] = []
            self.scenario_engine: ScenarioEngine | None = None
            self.worker: Worker | None = None
            self.worker_stop, self.worker_task = asyncio.Event(), None
            tasks = []
            self._start_metrics()
            if "worker" in roles:
                await self._start_channels(stack, redis, wait_aof)
            if "router" in roles:
                scenarios = self.scenario_engine = self._scenarios(redis)
                for shard in range(self.layout.count):  # each shard's events in order
                    router = self._router(redis, scenarios, shard)
                    self.routers.append(router)
                    tasks.append(asyncio.create_task(router.run(stopping)))
                if scenarios is not None:
                    tasks.append(asyncio.create_task(scenarios.run(stopping, self.consumer)))
                archivers, store = await self._archivers(stack, redis)
                for archiver in archivers:
                    tasks.append(asyncio.create_task(archiver.run(stopping)))
                tasks.append(asyncio.create_task(self._retention(redis, store).run(stopping)))
            if "worker" in roles:
                self.worker = self._worker(redis)
                self.worker_task = asyncio.create_task(self.worker.run(self.worker_stop))
            runner = await self._start_intake(stack, redis, wait_aof) if "intake" in roles else None
            tasks.append(asyncio.create_task(self._poller(redis).run(stopping)))
            tasks.append(asyncio.create_task(self.metrics.flushing(stopping)))
            tasks.append(asyncio.create_task(self._watcher(redis).run(stopping)))
            await self._start_metrics_site(stack)
            self.reloader = Reloader(self)
            tasks.append(asyncio.create_task(self.reloader.run(stopping)))
            log.info("consumer %s running roles: %s", self.consumer, ", ".join(sorted(roles)))
            self.ready.set()
            await stopping.wait()
            log.info("stopping: no new work taken; finishing in-flight sends")
            if runner is not None:
                await runner.cleanup()  # refuse new events before the workers wind down
            self.worker_stop.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    log.error("a gateway task ended with %r", result)
            if self.worker_task is not None:  # the last one a reload started
                self.worker_stop.set()
                await asyncio.gather(self.worker_task, return_exceptions=True)
            self.metrics.flush()  # what the last sends counted

    def _start_metrics(self) -> None:
        plan = self.plan
        known = Known(
            sources=tuple(plan.sources),
            channels=tuple(plan.channels),
            scenarios=tuple(s.name for s in plan.scenarios),
            watches=tuple(plan.conf.watch.watches),
            hot_window=(
                None if plan.conf.history.archive == "off" else float(plan.conf.history.hot_window)
            ),
        )
        multiprocess = multiprocess_dir()  # before any sample exists
        self.metrics = Metrics(known)
        self.metrics_digest = conf_digest(plan.conf.files or [plan.conf.path])
        self.metrics.conf_loaded(self.metrics_digest)
        self.exporter = Exporter(self.metrics, multiprocess)

    def _poller(self, redis: Redis) -> Poller:
        conf = self.plan.conf
        intake = getattr(self, "intake", None)
        return Poller(
            redis,
            self.layout,
            self.metrics,
            self.consumer,
            every=float(conf.metrics.refresh),
            intake=intake.stats if intake is not None else None,
        )

    def _watcher(self, redis: Redis) -> Watcher:
        """``[watch]``: every process runs one; the one holding its lease evaluates."""
        conf = self.plan.conf
        history = conf.history
        keep = history.retention if history.archive == "off" else history.hot_window
        return Watcher(
            redis,
            self.layout,
            conf.watch,
            self.plan.windows,
            self.consumer,
            metrics=self.metrics,
            keep=max(float(keep), float(conf.intake.dedupe_window)),
        )

    async def _start_metrics_site(self, stack: AsyncExitStack) -> None:
        """``[metrics] port``: /metrics apart from the intake, in every process."""
        conf = self.plan.conf.metrics
        if not conf.port:
            return
        app = self.exporter.app()
        app.on_response_prepare.append(_name_process)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        # Every gateway process binds it: any of them answers for all (multiprocess).
        site = web.TCPSite(runner, conf.host, conf.port, reuse_port=True)
        await site.start()
        log.info("metrics on http://%s:%s/metrics", conf.host, conf.port)

    @property
    def layout(self) -> Layout:
        return self.plan.conf.redis.layout()

    async def _wait_for_redis(self, redis: Redis, stopping: asyncio.Event) -> bool | None:
        """Whether to WAITAOF; ``None`` if asked to stop before Redis answered."""
        backoff = Backoff(cap=2.0)
        while not stopping.is_set():
            try:
                return await server_durability(redis, self.plan.conf.redis.wait_aof)
            except (RedisError, OSError) as exc:
                await backoff.wait(f"connecting to Redis at {redact_url(self.redis_url)}", exc)
        return None

    async def _start_channels(self, stack: AsyncExitStack, redis: Redis, wait_aof: bool) -> None:
        self._stack, self._wait_aof = stack, wait_aof
        self._confirmed: Enqueuer | None = None
        await self.open_channels(self.plan)

    async def open_channels(self, plan: Plan) -> None:
        """Start ``plan``'s channels (at start, and for the plan a reload brings)."""
        for channel in plan.channels.values():
            if isinstance(channel, ConfirmChannel):
                if self._confirmed is None:  # what sources confirm is accepted as intake would
                    self._confirmed = self._enqueuer(self.redis, self._wait_aof)
                    self._confirmed.start()
                    self._stack.push_async_callback(self._confirmed.stop)
                channel.attach(self._confirmed.enqueue)
            await channel.start()
            self._stack.push_async_callback(close_channel, channel)

    def _enqueuer(self, redis: Redis, wait_aof: bool) -> Enqueuer:
        conf = self.plan.conf
        # Dedupe keys find an event in the stream for replay: with an archive, only for
        # the hot window (older events are found in the archive), so they cost Redis
        # nothing beyond the dedupe window.
        history = conf.history
        keep = history.retention if history.archive == "off" else history.hot_window
        return Enqueuer(
            redis,
            self.layout,
            conf.intake.dedupe_window,
            retention=float(keep),
            wait_aof=wait_aof,
            wait_replicas=conf.redis.wait_replicas,
            # Search indexes: the archiver drops an event's entries as it archives it;
            # without an archive they keep the retention, as the events do.
            index_retention=float(history.retention) if history.archive == "off" else None,
        )

    async def _archivers(
        self, stack: AsyncExitStack, redis: Redis
    ) -> tuple[list[Archiver], ArchiveStore | None]:
        """One history archiver per shard, sharing the archive (router role: routers
        already trim the events streams)."""
        history = self.plan.conf.history
        store = await stack.enter_async_context(opened(self.plan.conf.data_dir, history))
        if store is None:
            return [], None
        return [
            Archiver(
                redis,
                shard,
                store,
                hot_window=float(history.hot_window),
                retention=float(history.retention),
                owner=self.consumer,
                batch=history.archive_batch,
                rate=history.archive_rate,
                max_lag=float(history.archive_max_lag),
                counted=self.metrics.archived,
            )
            for shard in self.layout.shards
        ], store

    def _retention(self, redis: Redis, store: ArchiveStore | None) -> RetentionTask:
        """The retention trim (docs/data-protection.md): one process at a time."""
        conf = self.plan.conf
        sweeper = Sweeper(
            redis,
            self.layout,
            Retention.of(conf),
            archive=store,
            outbox_roots=outbox_roots(conf),
        )
        return RetentionTask(sweeper, self.consumer)

    def _record_privacy(self) -> RecordPrivacy:
        conf = self.plan.conf
        channels = self.plan.channels

        def templates(name: str) -> Path | None:
            channel = channels.get(name)
            return channel.context.templates.root if channel is not None else None

        key = conf.privacy.key.reveal().encode() if conf.privacy.key is not None else None
        return RecordPrivacy(key=key, templates=templates)

    def _scenarios(self, redis: Redis) -> ScenarioEngine | None:
        if not self.plan.scenarios:
            return None
        conf = self.plan.conf
        return ScenarioEngine(
            redis,
            self.layout,
            self.plan.scenarios,
            timezone=conf.gateway.timezone,
            clock=time.time,
            reclaim_after=self._reclaim_after(),
        )

    def _reclaim_after(self) -> float:
        """``[worker] router_reclaim_after``, else the default the router derives."""
        conf = self.plan.conf.worker
        after = conf.router_reclaim_after
        return float(after) if after is not None else default_reclaim_after(conf.router_batch)

    def _router(
        self, redis: Redis, scenarios: ScenarioEngine | None = None, shard: int = 0
    ) -> Router:
        conf = self.plan.conf
        return Router(
            redis,
            self.layout.shards[shard],
            self.plan.rules,
            self.consumer,
            conf.worker.router_batch,
            reclaim_idle_ms=int(self._reclaim_after() * 1000),
            retention=float(conf.history.retention),
            scenarios=scenarios,
            index_ttl=float(conf.history.retention) if conf.history.archive == "off" else 0.0,
        )

    def _worker(self, redis: Redis, consumer: str | None = None) -> Worker:
        conf = self.plan.conf
        return Worker(
            redis,
            self.layout,
            self.plan.channels,
            consumer or self.consumer,
            policies=self.plan.policies,
            visibility={name: self.plan.visibility_timeout(name) for name in self.plan.channels},
            concurrency=conf.worker.concurrency,
            shutdown_grace=float(conf.worker.shutdown_grace),
            poison_after=conf.worker.poison_after,
            retention=float(conf.history.retention),
            dedupe_window=float(conf.intake.dedupe_window),
            windows=self.plan.windows,
            metrics=self.metrics,
            privacy=self._record_privacy(),
            bodies=(
                BodyKeeper(redis, float(conf.privacy.bodies_retention))
                if conf.privacy.keep_bodies
                else None
            ),
        )

    async def _start_intake(
        self, stack: AsyncExitStack, redis: Redis, wait_aof: bool
    ) -> web.AppRunner:
        conf = self.plan.conf
        enqueuer = self._enqueuer(redis, wait_aof)
        enqueuer.start()
        stack.push_async_callback(enqueuer.stop)
        stats = IntakeStats()
        intake = Intake(
            enqueuer,
            self.plan.sources,
            EVENTS_SOURCE,
            conf.intake.max_body,
            conf.intake.unknown_types,
            channels=self.plan.channels,
            public_url=conf.intake.public_url,
            retention=float(conf.history.retention),
            body_timeout=float(conf.intake.body_timeout),
            stats=stats,
            metrics=self.metrics,
        )
        self.intake = intake  # its ``stats`` are what a metrics endpoint exports
        guard = ConnectionGuard(
            stats,
            header_timeout=float(conf.intake.header_timeout),
            max_connections=conf.intake.max_connections,
            max_connections_per_peer=conf.intake.max_connections_per_peer,
        )
        app = intake.app(guard.middleware, refusal_counter(self.metrics, EVENTS_SOURCE))
        if conf.metrics.intake:
            app.router.add_get("/metrics", self.exporter.handle)
        if conf.admin.tokens:
            # The API reads both history tiers (archive created here if it is not yet).
            store = await stack.enter_async_context(opened(conf.data_dir, conf.history))
            ctx = context_for(self.plan, redis, store)
            mount(app, ctx, self.plan, reload=lambda: reload_gateway(self))
            mount_console(app, ctx, self.plan)
            # Bulk replays, resumed where they stopped; ends once the gateway stops.
            self.admin_jobs = JobRunner(ctx, self.consumer)
            jobs = asyncio.create_task(self.admin_jobs.run(self.stopping))
            stack.push_async_callback(_wait_for, jobs)
        app.on_response_prepare.append(_name_process)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=float(conf.intake.keepalive_timeout),
            # A refused or timed-out request's unread body is drained this long at most.
            lingering_time=2.0,
            # The admin API's longest valid URL (every search parameter at its maxLength,
            # percent-encoded) is ~23 KB; aiohttp's default 8190 answered those with a
            # plain-text 400 that no client could read as the API's error.
            max_line_size=ADMIN_MAX_URL,
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        host = self.host or conf.intake.host
        port = conf.intake.port if self.port is None else self.port
        site = GuardedSite(runner, guard, host=host, port=port, sock=self.sock, backlog=1024)
        await site.start()
        server: Any = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else port
        log.info("intake listening on http://%s:%s/v1/events", host, self.bound_port)
        return runner


#: Request line bound of the intake's port, which serves the admin API too.
ADMIN_MAX_URL = 32 * 1024


async def _name_process(request: web.Request, response: web.StreamResponse) -> None:
    # Several gateway processes share the port (gateway/supervisor): a probe or a test
    # can tell which one answered.
    if request.path in ("/healthz", "/metrics"):
        response.headers[PROCESS_HEADER] = str(os.getpid())


async def _wait_for(task: asyncio.Task[None]) -> None:
    await asyncio.gather(task, return_exceptions=True)


async def close_channel(channel: Channel[Any]) -> None:
    """Once: at shutdown, or when a reload replaced it and its last send finished."""
    if getattr(channel, "_tocsin_closed", False):
        return
    channel._tocsin_closed = True  # type: ignore[attr-defined]
    try:
        await channel.close()
    except Exception:
        log.exception("closing channel %s", channel.name)
