"""The router against a real Redis: exactly-once fan-out, and takeover from a dead router."""

from __future__ import annotations

import asyncio
import json

import msgspec
import redis.asyncio as aioredis

from gateway.delivery import Delivery, Recipient, decode_job, encode_delivery, encode_job
from gateway.event import decode_event, encode_event
from gateway.keys import ROUTER_GROUP, Keys
from gateway.router import Router
from gateway.scripts import FANOUT
from gateway.streams import ensure_group

from .conftest import load_plan, make_event, write_conf


async def _stream_jobs(client: aioredis.Redis, stream: str) -> list[dict]:
    return [json.loads(fields[b"j"]) for _, fields in await client.xrange(stream)]


async def test_events_held_by_a_dead_router_are_taken_over(tmp_path, redis_url):
    plan = load_plan(write_conf(tmp_path, redis_url=redis_url))
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_group(client, keys.events, ROUTER_GROUP)
        event = make_event()
        await client.xadd(
            keys.events, {"e": encode_event(decode_event(json.dumps(event).encode()))}
        )
        # A router reads the event, then dies before fanning it out.
        await client.xreadgroup(ROUTER_GROUP, "dead-router", {keys.events: ">"}, count=10)
        await asyncio.sleep(0.2)

        router = Router(client, keys, plan.rules, "live-router", reclaim_idle_ms=100)
        stopping = asyncio.Event()
        task = asyncio.create_task(router.run(stopping))
        for _ in range(50):
            if await client.xlen(keys.deliveries("hook")):
                break
            await asyncio.sleep(0.1)
        stopping.set()
        await asyncio.wait_for(task, 5)

        [job] = await _stream_jobs(client, keys.deliveries("hook"))
        assert job["event_id"] == event["id"]
        assert (await client.xpending(keys.events, ROUTER_GROUP))["pending"] == 0
    finally:
        await client.aclose()


async def test_fanout_of_an_event_already_routed_does_nothing(tmp_path, redis_url):
    """Two routers racing on one event (after a takeover): only the first fans out."""
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_group(client, keys.events, ROUTER_GROUP)
        entry = await client.xadd(keys.events, {"e": b"{}"})
        await client.xreadgroup(ROUTER_GROUP, "a", {keys.events: ">"})
        stream = keys.deliveries("hook")
        args = [ROUTER_GROUP, 1, "", 0, entry, b"{}", 1, 3, b'{"job": 1}']
        fanout_keys = [keys.events, keys.routed_through, stream]
        assert await FANOUT(client, fanout_keys, args) == 1
        assert await FANOUT(client, fanout_keys, args) == 0
        assert await client.xlen(stream) == 1
        # The event stays in its stream (kept for `tocsin events replay`), marked routed.
        assert [i for i, _ in await client.xrange(keys.events)] == [entry]
        assert await client.get(keys.routed_through) == entry
    finally:
        await client.aclose()


async def test_rules_with_conditions_see_the_whole_event_others_only_its_head(tmp_path, redis_url):
    """Routing decodes only an event's head unless a rule matching its type has
    conditions: the large-payment condition still reads data.amount, and an
    unconditional rule on another type routes from the head alone."""
    rules = """
    [rules.every-payment]
    events = ["payment.*"]
    [[rules.every-payment.actions]]
    channel = "hook"

    [rules.large-payment]
    events = ["payment.succeeded"]
    when = ['data.amount >= 100000', 'customer.kind == "b2b"']
    [[rules.large-payment.actions]]
    channel = "hook"
    """
    plan = load_plan(write_conf(tmp_path, redis_url=redis_url, rules=rules))
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        router = Router(client, keys, plan.rules, "router")
        assert router._needs_whole("payment.succeeded")
        assert not router._needs_whole("payment.failed")
        small = make_event(data={"amount": 500, "currency": "EUR"})
        large = make_event(data={"amount": 250000, "currency": "EUR"})
        failed = make_event(type="payment.failed", data={"amount": 250000, "currency": "EUR"})
        for event in (small, large, failed):
            large_customer = {**event["customer"], "kind": "b2b"}
            await client.xadd(keys.events, {"e": json.dumps({**event, "customer": large_customer})})
        stopping = asyncio.Event()
        task = asyncio.create_task(router.run(stopping))
        for _ in range(50):
            if await client.get(keys.routed_through) == (await client.xrange(keys.events))[-1][0]:
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(task, 5)
        routed = [
            (j["event_id"], j["rule"]) for j in await _stream_jobs(client, keys.deliveries("hook"))
        ]
        assert sorted(routed) == sorted(
            [
                (small["id"], "every-payment"),
                (large["id"], "every-payment"),
                (large["id"], "large-payment"),
                (failed["id"], "every-payment"),
            ]
        )
    finally:
        await client.aclose()


def test_a_fanned_out_job_carries_its_event_beside_it_and_reads_back_whole():
    """Fan-out appends a job as ``j`` (the delivery, event left out) and ``e`` (the event
    bytes as stored); retries and replays append ``j`` whole. Both read back the same."""
    event = make_event()
    raw = json.dumps(event).encode()
    delivery = Delivery(
        id="msg_0001",
        event_id=event["id"],
        event_type=event["type"],
        rule="every-payment",
        channel="hook",
        event=msgspec.Raw(raw),
        recipient=Recipient(kind="address", address="ops@example.com"),
    )
    head = encode_job(delivery)
    assert len(head) < 400 and event["id"].encode() in head  # the ids, not the event
    assert json.loads(head)["event"] is None
    assert delivery.event_bytes() == raw  # encoding it left the delivery whole

    split = decode_job({b"j": head, b"e": raw})
    whole = decode_job({b"j": encode_delivery(delivery)})
    assert split == whole == delivery
    assert split.event_bytes() == raw
    assert split.decode_event().id == event["id"]


async def _route_all(client: aioredis.Redis, router: Router, keys: Keys) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(router.run(stopping))
    last = (await client.xrange(keys.events))[-1][0]
    for _ in range(100):
        if await client.get(keys.routed_through) == last:
            break
        await asyncio.sleep(0.02)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert await client.get(keys.routed_through) == last, "not all events were routed"


async def test_the_mark_stops_below_an_event_read_but_not_routed(tmp_path, redis_url):
    """While another router holds an event unrouted, the mark stays below it."""
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await ensure_group(client, keys.events, ROUTER_GROUP)
        held = await client.xadd(keys.events, {"e": b"{}"}, id="1000-0")
        await client.xreadgroup(ROUTER_GROUP, "slow", {keys.events: ">"}, count=1)
        routed = await client.xadd(keys.events, {"e": b"{}"}, id="1000-5")
        await client.xreadgroup(ROUTER_GROUP, "fast", {keys.events: ">"}, count=1)
        fanout_keys = [keys.events, keys.routed_through]
        assert await FANOUT(client, fanout_keys, [ROUTER_GROUP, 1, "", 0, routed, b"{}", 0]) == 1
        assert await client.get(keys.routed_through) == b"999-18446744073709551615"
        assert await FANOUT(client, fanout_keys, [ROUTER_GROUP, 1, "", 0, held, b"{}", 0]) == 1
        assert await client.get(keys.routed_through) == routed
    finally:
        await client.aclose()


async def test_a_lost_router_group_is_recreated_where_routing_had_got_to(tmp_path, redis_url):
    """Routed events stay in the stream for replay: a group recreated at the stream's
    start would route them all again. It restarts after the last routed one."""
    plan = load_plan(write_conf(tmp_path, redis_url=redis_url))
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(3):
            await client.xadd(keys.events, {"e": json.dumps(make_event())})
        await _route_all(client, Router(client, keys, plan.rules, "r1"), keys)
        assert await client.xlen(keys.deliveries("hook")) == 3

        await client.xgroup_destroy(keys.events, ROUTER_GROUP)
        late = make_event()
        await client.xadd(keys.events, {"e": json.dumps(late)})
        await _route_all(client, Router(client, keys, plan.rules, "r2"), keys)
        jobs = await _stream_jobs(client, keys.deliveries("hook"))
        assert len(jobs) == 4, "events routed before the group was lost were routed again"
        assert jobs[-1]["event_id"] == late["id"]
    finally:
        await client.aclose()


async def test_trim_drops_routed_events_past_the_retention_and_keeps_unrouted_ones(
    tmp_path, redis_url
):
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    now = [0.0]  # entry ids below are ms 1..400 after the epoch
    try:
        await ensure_group(client, keys.events, ROUTER_GROUP)
        # Enough entries to fill several stream nodes (trimming drops whole nodes).
        old = [await client.xadd(keys.events, {"e": b"{}"}, id=f"{ms}-0") for ms in range(1, 401)]
        await client.xreadgroup(ROUTER_GROUP, "r", {keys.events: ">"}, count=400)
        router = Router(client, keys, [], "r", retention=3600, clock=lambda: now[0])
        # Routed up to entry 200 only: the rest is read but not routed.
        args: list = [ROUTER_GROUP, 200, "", 0]
        for entry in old[:200]:
            args += [entry, b"{}", 0]
        assert await FANOUT(client, [keys.events, keys.routed_through], args) == 200
        assert await router.trim() == 0, "nothing is older than the retention yet"

        now[0] += 3600 + 1  # every entry (ms 1..400) is now past the retention
        dropped = await router.trim()
        left = [i for i, _ in await client.xrange(keys.events)]
        assert 0 < dropped <= 200 and len(left) == 400 - dropped
        assert set(old[200:]) <= set(left), "an unrouted event was trimmed"
    finally:
        await client.aclose()
