"""Recovering at full speed (issue #15): a saturated channel next to an idle one keeps
its full rate, and a killed router's events are taken over within the configured time.
Real redis-server, real receivers, the real worker and router.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web

from gateway.delivery import Delivery, encode_delivery
from gateway.keys import ROUTER_GROUP, WORKER_GROUP, Keys
from gateway.redis_server import free_port
from gateway.router import Router
from gateway.streams import ensure_group
from gateway.worker import Worker

from .conftest import load_plan, make_event, write_conf


@dataclass
class SlowReceiver:
    """Answers 204 after ``delay``; notes when each request for each path arrived."""

    url: str
    delay: float
    arrivals: dict[str, list[float]] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def slow_receiver(delay: float) -> AsyncIterator[SlowReceiver]:
    port = free_port()
    rec = SlowReceiver(f"http://127.0.0.1:{port}", delay)

    async def handle(request: web.Request) -> web.Response:
        rec.arrivals.setdefault(request.path, []).append(time.monotonic())
        await request.read()
        if request.path == "/busy":
            await asyncio.sleep(rec.delay)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


def job(channel: str, n: int) -> bytes:
    event = make_event()
    delivery = Delivery(
        id=f"msg_{channel}_{n:05d}",
        event_id=event["id"],
        event_type=event["type"],
        rule="r",
        channel=channel,
        event=json.dumps(event).encode(),  # type: ignore[arg-type]
    )
    return encode_delivery(delivery)


async def test_a_saturated_channel_keeps_its_full_rate_beside_an_idle_one(tmp_path, redis_url):
    """max_in_flight / latency jobs per second on the busy channel, not max_in_flight per
    read block: a finished send must get the next read going while the idle channel's
    stream has nothing. (The worker before this fix managed ~16 per 0.5 s here.)"""
    limit, latency, waves = 16, 0.2, 8
    async with slow_receiver(latency) as rec:
        extra = f"""
        [channels.hook.delivery]
        max_in_flight = {limit}
        [channels.idle]
        type = "json_hook"
        url = "{rec.url}/idle"
        secret = "whsec_dGVzdC1ob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI="
        """
        conf = write_conf(tmp_path, redis_url=redis_url, hook_url=f"{rec.url}/busy", extra=extra)
        plan = load_plan(conf)
        keys = Keys()
        client = aioredis.Redis.from_url(redis_url)
        for name in ("hook", "idle"):
            await ensure_group(client, keys.deliveries(name), WORKER_GROUP)
        async with client.pipeline(transaction=False) as pipe:
            for n in range(limit * waves):
                pipe.xadd(keys.deliveries("hook"), {"j": job("hook", n)})
            await pipe.execute()
        for channel in plan.channels.values():
            await channel.start()
        worker = Worker(client, keys, plan.channels, "w1", policies=plan.policies)
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        try:
            deadline = time.monotonic() + 20
            while len(rec.arrivals.get("/busy", [])) < limit * 3:
                assert time.monotonic() < deadline, rec.arrivals.keys()
                await asyncio.sleep(0.01)
            # Mid-run, a job for the idle channel: it goes out while the other is saturated.
            posted = time.monotonic()
            await client.xadd(keys.deliveries("idle"), {"j": job("idle", 0)})
            while len(rec.arrivals.get("/busy", [])) < limit * waves or "/idle" not in rec.arrivals:
                assert time.monotonic() < deadline, {k: len(v) for k, v in rec.arrivals.items()}
                await asyncio.sleep(0.01)
        finally:
            stopping.set()
            await asyncio.wait_for(task, 10)
            for channel in plan.channels.values():
                await channel.close()
            await client.aclose()
    busy = rec.arrivals["/busy"]
    # The first wave goes out at once, the last (waves - 1) latencies later at full rate.
    span = busy[-1] - busy[0]
    rate = (len(busy) - limit) / span
    full = limit / latency
    assert rate >= 0.8 * full, f"{rate:.0f} jobs/s on the saturated channel, full rate {full:.0f}"
    idle_wait = rec.arrivals["/idle"][0] - posted
    assert idle_wait < 0.25, f"the idle channel's job waited {idle_wait:.3f}s"


async def test_a_dead_routers_events_are_taken_over_within_router_reclaim_after(
    tmp_path, redis_url, start_gateway
):
    """Events a router read and died holding (what a SIGKILL leaves) are routed by a
    live router once idle past ``[worker] router_reclaim_after``: not before, and not
    30 s later as with the old hard-coded value."""
    conf = write_conf(tmp_path, redis_url=redis_url)
    text = conf.read_text().replace('shutdown_grace = "2s"', 'router_reclaim_after = "1s"', 1)
    conf.write_text(text)
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_group(client, keys.events, ROUTER_GROUP)
        for _ in range(5):
            await client.xadd(keys.events, {"e": json.dumps(make_event()).encode()})
        await client.xreadgroup(ROUTER_GROUP, "dead-router", {keys.events: ">"}, count=10)
        orphaned = time.monotonic()
        await start_gateway(conf, roles=("router",))
        deadline = orphaned + 10
        while await client.xlen(keys.deliveries("hook")) < 5:
            assert time.monotonic() < deadline, "the dead router's events were not taken over"
            await asyncio.sleep(0.02)
        took = time.monotonic() - orphaned
        assert (await client.xpending(keys.events, ROUTER_GROUP))["pending"] == 0
    finally:
        await client.aclose()
    # 1 s idle, then within a reclaim interval (0.5 s) and a blocked read (0.5 s).
    assert 1.0 <= took < 2.5, f"taken over after {took:.2f}s"


def test_router_reclaim_after_defaults_to_ten_times_a_slow_batch(tmp_path, redis_url):
    """Unset, it follows router_batch: 2 s for the default 128 (floor), 10 s for 1,000."""
    plan = load_plan(write_conf(tmp_path, redis_url=redis_url))
    client = aioredis.Redis.from_url(redis_url)
    assert Router(client, Keys(), plan.rules, "r").reclaim_idle_ms == 5_120
    assert Router(client, Keys(), plan.rules, "r", 128).reclaim_idle_ms == 2_000
    assert Router(client, Keys(), plan.rules, "r", 1_000).reclaim_idle_ms == 10_000
    assert Router(client, Keys(), plan.rules, "r", reclaim_idle_ms=750).reclaim_interval == 0.375
