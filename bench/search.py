"""Admin search at production size (issue #17): 1,000,000 deliveries in history, half
in Redis's hot window, half in the archive; what the hot-tier search indexes cost in
Redis memory per delivery, and how long a search takes.

    .venv/bin/python -m bench.search                      # 1,000,000 deliveries, ~2 min
    .venv/bin/python -m bench.search --deliveries 100000  # quicker

A redis-server (``RedisServer``) and an archive (``SqliteArchive``) in a temporary
folder. The hot half goes through the code the gateway runs: events through the
intake's ``Enqueuer`` (``enqueue_many.lua`` writes the customer and invoice indexes),
routed by ``Router`` (``fanout.lua`` writes event -> deliveries), records written as
the workers write them. The archived half is written with the archiver's own calls.
Two deliveries per event (two channels), 10 events per customer (5 hot, 5 archived),
2 per invoice ref.

Figures: index bytes per hot delivery (``MEMORY USAGE`` of every index key, by kind),
and for searches by customer, invoice ref and event id (events), by customer
(deliveries) and an event's timeline, on hot and archived targets: the slowest of
``--reps`` random picks each, through ``gateway.adminapi`` as the API calls it.
Target: every search under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from gateway.adminapi import AdminContext, ops, search
from gateway.archive import ArchivedDelivery, ArchivedEvent, SqliteArchive
from gateway.conf import load_conf
from gateway.delivery import Attempt
from gateway.event import Event, encode_event
from gateway.history import encode_record, record_of
from gateway.intake import Enqueuer
from gateway.keys import ROUTER_GROUP
from gateway.plan import build_plan
from gateway.plugins import load_registry
from gateway.redis_server import RedisServer, free_port
from gateway.router import Router, plan_deliveries
from gateway.streams import ensure_group

from .procs import REPO

TARGET_MS = 100.0
SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
EVENTS_PER_CUSTOMER = 10
PAD = "x" * 700  # events of ~1 KB, as the throughput bench posts


def conf_text(redis_url: str) -> str:
    return textwrap.dedent(
        f"""
        [gateway]
        data_dir = "var"
        [intake]
        secrets = ["{SECRET}"]
        [redis]
        url = "{redis_url}"
        [outbound]
        allow = ["127.0.0.0/8"]
        [channels.hook]
        type = "json_hook"
        url = "http://127.0.0.1:9/hook"
        secret = "{SECRET}"
        [channels.erp]
        type = "json_hook"
        url = "http://127.0.0.1:9/erp"
        secret = "{SECRET}"
        [rules.all]
        events = ["payment.*"]
        [[rules.all.actions]]
        channel = "hook"
        [[rules.all.actions]]
        channel = "erp"
        """
    )


def _event(i: int, at: float) -> Event:
    body = {
        "id": f"evt_{i:08d}",
        "type": "payment.succeeded",
        "occurred_at": datetime.fromtimestamp(at).astimezone().isoformat(),
        "source": {"provider": "bench", "event_id": f"tx_{i}"},
        "customer": {"id": f"cus_{i // EVENTS_PER_CUSTOMER:06d}", "email": "c@example.com"},
        "refs": {"invoice_ref": f"FA-{i // 2:08d}"},
        "data": {"amount": 1250, "currency": "EUR", "pad": PAD},
    }
    return msgspec.convert(body, Event)


async def fill_hot(redis: Redis, plan: Any, ids: list[int], now: float) -> float:
    """Events through the intake's enqueuer, routed by the router, records as workers
    write them."""
    layout = plan.conf.redis.layout()
    keys = layout.shards[0]
    started = time.perf_counter()
    # As a gateway with the archive on (the default) writes them: no TTL, no trimming.
    enqueuer = Enqueuer(redis, layout, 86400, retention=86400)
    enqueuer.start()
    try:
        for low in range(0, len(ids), 2000):
            events = [_event(i, now) for i in ids[low : low + 2000]]
            await asyncio.gather(
                *(
                    enqueuer.enqueue(
                        e.id, encode_event(e), e.customer.id if e.customer else None,
                        e.refs.get("invoice_ref"),
                    )
                    for e in events
                )
            )  # fmt: skip
    finally:
        await enqueuer.stop()
    await ensure_group(redis, keys.events, ROUTER_GROUP, start="0")
    router = Router(redis, keys, plan.rules, "bench", 128)
    while True:
        reply: Any = await redis.xreadgroup(ROUTER_GROUP, "bench", {keys.events: ">"}, count=500)
        if not reply:
            break
        entries = reply[0][1]
        await router._route(entries)
        pipe = redis.pipeline(transaction=False)
        at = time.time()
        for _, fields in entries:
            raw = fields[b"e"]
            for job in plan_deliveries(plan.rules, msgspec.json.decode(raw, type=Event), raw):
                job.history = [Attempt(n=1, at=at, outcome="delivered", ms=12.0, status=204)]
                pipe.set(keys.record(job.id), encode_record(record_of(job, "delivered", now=at)))
                pipe.zadd(keys.history, {job.id: at * 1000})
        await pipe.execute()
    for channel in plan.channels:  # the jobs themselves are not what is measured
        await redis.delete(keys.deliveries(channel))
    return time.perf_counter() - started


async def fill_archive(store: SqliteArchive, plan: Any, ids: list[int], base: float) -> float:
    started = time.perf_counter()
    for low in range(0, len(ids), 20_000):
        rows, records = [], []
        for i in ids[low : low + 20_000]:
            at = base + i
            e = _event(i, at)
            raw = encode_event(e)
            ms = int(at * 1000)
            rows.append(
                ArchivedEvent(
                    e.id, 0, f"{ms}-0", ms, e.type, e.customer.id if e.customer else None,
                    e.refs.get("invoice_ref"), raw,
                )
            )  # fmt: skip
            for job in plan_deliveries(plan.rules, msgspec.json.decode(raw, type=Event), raw):
                job.history = [Attempt(n=1, at=at, outcome="delivered", ms=12.0, status=204)]
                records.append(ArchivedDelivery.of(record_of(job, "delivered", now=at)))
        await store.put_events(rows)
        await store.put_deliveries(records)
    return time.perf_counter() - started


async def index_memory(redis: Redis, prefix: str) -> dict[str, dict[str, int]]:
    kinds: dict[str, dict[str, int]] = {}
    batch: list[bytes] = []

    async def flush() -> None:
        pipe = redis.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, await pipe.execute(), strict=True):
            kind = key.decode()[len(prefix) :].split(":", 1)[0]
            slot = kinds.setdefault(kind, {"keys": 0, "bytes": 0})
            slot["keys"] += 1
            slot["bytes"] += int(size or 0)
        batch.clear()

    async for key in redis.scan_iter(match=prefix + "*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            await flush()
    if batch:
        await flush()
    return kinds


async def timed(reps: int, picks: list[Any], call: Any) -> float:
    slowest = 0.0
    for pick in picks[:reps]:
        t0 = time.perf_counter()
        found = await call(pick)
        slowest = max(slowest, time.perf_counter() - t0)
        assert found, f"nothing found for {pick}"
    return round(slowest * 1000, 2)


async def run(args: argparse.Namespace, tmp: Path, redis_url: str) -> dict[str, Any]:
    (tmp / "tocsin.toml").write_text(conf_text(redis_url))
    conf = load_conf(tmp / "tocsin.toml")
    plan = build_plan(conf, load_registry(blocked=[], modules=[]))
    events = args.deliveries // 2
    hot = list(range(events // 2, events))
    archived = list(range(events // 2))
    redis = Redis.from_url(redis_url)
    store = await SqliteArchive.open(tmp / "archive" / "history.sqlite3")
    now = time.time()
    try:
        result: dict[str, Any] = {"deliveries": args.deliveries, "hot_deliveries": 2 * len(hot)}
        result["archive_fill_s"] = round(
            await fill_archive(store, plan, archived, now - 86400 * 10), 1
        )
        result["hot_fill_s"] = round(await fill_hot(redis, plan, hot, now), 1)
        keys = conf.redis.layout().shards[0]
        kinds = await index_memory(redis, keys.search_index)
        result["index_by_kind"] = kinds
        total = sum(k["bytes"] for k in kinds.values())
        result["index_bytes_per_hot_delivery"] = round(total / (2 * len(hot)), 1)
        result["index_bytes_per_hot_event"] = round(total / len(hot), 1)
        info: Any = await redis.info("memory")
        result["redis_used_mb"] = round(info["used_memory"] / 1e6, 1)

        ctx = AdminContext(
            redis, conf.redis.layout(), store, 30 * 86400.0, "bench",
            rules=plan.rules, channels={"hook": "json_hook", "erp": "erp"},
        )  # fmt: skip
        rng = random.Random(17)
        hot_picks = rng.sample(hot, args.reps)
        old_picks = rng.sample(archived, args.reps)
        customers = [f"cus_{i // EVENTS_PER_CUSTOMER:06d}" for i in hot_picks]
        times: dict[str, float] = {}
        for tier, picks in (("hot", hot_picks), ("archived", old_picks)):
            ids = [f"evt_{i:08d}" for i in picks]
            refs = [f"FA-{i // 2:08d}" for i in picks]
            times[f"event id ({tier})"] = await timed(
                args.reps, ids, lambda e: _items(search.search_events(ctx, event_id=e))
            )
            times[f"invoice ref ({tier})"] = await timed(
                args.reps, refs, lambda r: _items(search.search_events(ctx, invoice_ref=r))
            )
            times[f"timeline ({tier})"] = await timed(
                args.reps, ids, lambda e: _deliveries(ops.timeline(ctx, e))
            )
        # A customer's events span both tiers (5 hot, 5 archived).
        times["customer events (both tiers)"] = await timed(
            args.reps, customers, lambda c: _items(search.search_events(ctx, customer_id=c))
        )
        times["customer deliveries (both tiers)"] = await timed(
            args.reps, customers, lambda c: _items(search.search_deliveries(ctx, customer_id=c))
        )
        result["search_ms"] = times
        return result
    finally:
        await store.close()
        await redis.aclose()


async def _items(page: Any) -> list[Any]:
    return list((await page).items)


async def _deliveries(story: Any) -> list[Any]:
    return list((await story)["deliveries"])


def report(r: dict[str, Any]) -> None:
    print(
        f"search phase: {r['deliveries']:,} deliveries in history, "
        f"{r['hot_deliveries']:,} in Redis's hot window, the rest archived "
        f"(filled in {r['hot_fill_s']} s hot, {r['archive_fill_s']} s archive)"
    )
    kinds = ", ".join(
        f"{kind}: {v['keys']:,} keys, {v['bytes'] / r['hot_deliveries']:.1f} B/delivery"
        for kind, v in sorted(r["index_by_kind"].items())
    )
    print(
        f"  hot-tier indexes: {r['index_bytes_per_hot_delivery']} B per delivery "
        f"({r['index_bytes_per_hot_event']} B per event); by kind: {kinds}"
    )
    print(f"  Redis used_memory: {r['redis_used_mb']} MB")
    for name, ms in r["search_ms"].items():
        verdict = "met" if ms < TARGET_MS else "MISSED"
        print(f"  {name:34} slowest {ms:8.2f} ms  (target < {TARGET_MS:.0f} ms: {verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=20, help="random picks per search")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-search-"))
    server = RedisServer(tmp / "redis", port=free_port(), appendfsync="no")
    try:
        result = asyncio.run(run(args, tmp, server.start()))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(result)
    out = args.out or REPO / "bench" / "results" / f"search-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0 if all(ms < TARGET_MS for ms in result["search_ms"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
