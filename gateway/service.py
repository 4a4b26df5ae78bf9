"""``tocsin serve``: intake, router and workers in one asyncio process, sharing one Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .channel import Channel
from .intake import Enqueuer, Intake
from .keys import Keys
from .plan import EVENTS_SOURCE, Plan
from .router import Router
from .streams import Backoff
from .worker import Worker

log = logging.getLogger("tocsin")

ROLES = ("intake", "router", "worker")


def consumer_name() -> str:
    """Unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def connect(url: str) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        max_connections=64,
        decode_responses=False,
    )


async def server_durability(redis: Redis, setting: str) -> bool:
    """Decide whether intake must WAITAOF, and warn when the server may lose acked events."""
    info = await redis.info("server")
    version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
    try:
        config = await redis.config_get("append*")
    except RedisError:  # managed services often forbid CONFIG
        config = {}
    aof = config.get("appendonly", config.get(b"appendonly"))
    fsync = config.get("appendfsync", config.get(b"appendfsync"))
    if isinstance(aof, bytes):
        aof = aof.decode()
    if isinstance(fsync, bytes):
        fsync = fsync.decode()
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


@dataclass
class Gateway:
    plan: Plan
    redis_url: str
    roles: Iterable[str] = ROLES
    consumer: str = field(default_factory=consumer_name)
    host: str | None = None
    port: int | None = None
    #: Filled once serving: the port actually bound (useful with port 0).
    bound_port: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stopping: asyncio.Event) -> None:
        conf = self.plan.conf
        keys = Keys(conf.redis.prefix)
        redis = connect(self.redis_url)
        roles = set(self.roles)
        channels: dict[str, Channel[Any]] = self.plan.channels if "worker" in roles else {}
        runner: web.AppRunner | None = None
        enqueuer: Enqueuer | None = None
        started: list[Channel[Any]] = []
        try:
            backoff = Backoff(cap=2.0)
            while True:
                try:
                    wait_aof = await server_durability(redis, conf.redis.wait_aof)
                    break
                except (RedisError, OSError) as exc:
                    if stopping.is_set():
                        return
                    await backoff.wait(f"connecting to Redis at {self.redis_url}", exc)
            for channel in channels.values():
                await channel.start()
                started.append(channel)
            tasks = []
            if "router" in roles:
                router = Router(
                    redis, keys, self.plan.rules, self.consumer, conf.worker.router_batch
                )
                tasks.append(asyncio.create_task(router.run(stopping), name="tocsin-router"))
            if "worker" in roles:
                worker = Worker(
                    redis,
                    keys,
                    channels,
                    self.consumer,
                    concurrency=conf.worker.concurrency,
                    shutdown_grace=float(conf.worker.shutdown_grace),
                )
                tasks.append(asyncio.create_task(worker.run(stopping), name="tocsin-worker"))
            if "intake" in roles:
                enqueuer = Enqueuer(redis, keys, conf.intake.dedupe_window, wait_aof=wait_aof)
                enqueuer.start()
                intake = Intake(enqueuer, self.plan.sources, EVENTS_SOURCE, conf.intake.max_body)
                runner = web.AppRunner(intake.app(), access_log=None, handle_signals=False)
                await runner.setup()
                host = self.host or conf.intake.host
                port = conf.intake.port if self.port is None else self.port
                site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
                await site.start()
                server = getattr(site, "_server", None)
                sockets = getattr(server, "sockets", None) or []
                self.bound_port = sockets[0].getsockname()[1] if sockets else port
                log.info("intake listening on http://%s:%s/v1/events", host, self.bound_port)
            log.info("consumer %s running roles: %s", self.consumer, ", ".join(sorted(roles)))
            self.ready.set()
            await stopping.wait()
            log.info("stopping: no new work taken; finishing in-flight sends")
            if runner is not None:
                await runner.cleanup()  # stop accepting events first
                runner = None
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.error("a gateway task ended with %r", result)
        finally:
            if runner is not None:
                await runner.cleanup()
            if enqueuer is not None:
                await enqueuer.stop()
            for channel in started:
                try:
                    await channel.close()
                except Exception:
                    log.exception("closing channel %s", channel.name)
            await redis.aclose()
