"""``GET /metrics`` at production size (issue #17): scrape time with an empty history and
with 1,000,000 deliveries in it.

    .venv/bin/python -m bench.scrape                   # 1,000,000 deliveries, ~1 min
    .venv/bin/python -m bench.scrape --history 100000  # quicker

Processes (children, stopped by PID): a redis-server (``RedisServer``, AOF on) and
``tocsin serve --processes 2`` (multiprocess metrics, ``[metrics] refresh = "1s"``, 8
json_hook channels, two sources, one scenario). The history is written straight into
Redis as the workers write it (one record key and one ``history`` entry per delivery),
plus dead letters and parked retries so the snapshot has work to do.

Figures: per state (empty, filled), ``--scrapes`` sequential scrapes, each on a new
connection: p50/p99/max in ms and the answer's size; and the snapshot round (what the
leaseholder does every refresh, never a scrape) timed in this process against the same
Redis. A scrape reads only the processes' metric files, so its time should not move
with the history; the snapshot walks queues, dead letters and scenario timers, never the
history, so neither should it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gateway.keys import Layout
from gateway.metrics.snapshot import DeadTally, take_snapshot
from gateway.redis_server import RedisServer, free_port

from .common import latency_summary_ms
from .procs import REPO, Procs, wait_http

CHANNELS = [f"hook{i}" for i in range(8)]
SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
RECORD = (
    b'{"id":"ID","event_id":"evt_0123456789abcdef","event_type":"payment.succeeded",'
    b'"rule":"all-payments/0","channel":"hook0","status":"delivered","to":"https://'
    b'erp.example.com/hooks/tocsin","attempts":[{"n":1,"at":1764000000.123,"outcome":'
    b'"delivered","ms":12.4,"status":204}],"updated":1764000000.136}'
)


def conf_text(redis_url: str) -> str:
    channels = "".join(
        f'\n[channels.{name}]\ntype = "json_hook"\nurl = "http://127.0.0.1:9/x"\n'
        f'secret = "{SECRET}"\n'
        for name in CHANNELS
    )
    return (
        textwrap.dedent(
            f"""
        [gateway]
        data_dir = "var"
        [intake]
        secrets = ["{SECRET}"]
        [redis]
        url = "{redis_url}"
        [outbound]
        allow = ["127.0.0.0/8"]
        [metrics]
        refresh = "1s"
        [rules.all]
        events = ["nothing.ever"]
        [[rules.all.actions]]
        channel = "hook0"
        [scenarios.reminders]
        trigger = {{ events = ["payment_request.created"] }}
        key = "pr:{{{{ refs.payment_request_id }}}}"
        [[scenarios.reminders.steps]]
        name = "nudge"
        after = "1h"
        [[scenarios.reminders.steps.actions]]
        channel = "hook1"
        """
        )
        + channels
    )


def scrapes(url: str, count: int) -> tuple[dict[str, float | None], int]:
    took = []
    size = 0
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:  # a new connection each
            size = len(response.read())
        took.append(time.perf_counter() - started)
    return latency_summary_ms(took), size


async def fill(redis_url: str, history: int, extra: int) -> float:
    """``history`` delivery records and index entries, ``extra`` dead letters and retries."""
    keys = Layout().shards[0]
    redis = Redis.from_url(redis_url)
    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    try:
        batch = 20_000
        for start in range(0, history, batch):
            pipe = redis.pipeline(transaction=False)
            index = {}
            for i in range(start, min(history, start + batch)):
                delivery_id = f"msg_{i:024x}"
                pipe.set(keys.record(delivery_id), RECORD.replace(b"ID", delivery_id.encode()))
                index[delivery_id] = now_ms - (history - i)
            pipe.zadd(keys.history, index)
            await pipe.execute()
        pipe = redis.pipeline(transaction=False)
        for i in range(extra):
            channel = CHANNELS[i % len(CHANNELS)]
            pipe.xadd(keys.dead, {"kind": "delivery", "channel": channel, "j": RECORD})
            member = keys.deliveries(channel).encode() + b"\n" + RECORD.replace(b"ID", b"%d" % i)
            pipe.zadd(keys.retries, {member: now_ms + 3_600_000})
        await pipe.execute()
        return time.monotonic() - started
    finally:
        await redis.aclose()


async def snapshot_ms(redis_url: str, rounds: int = 5) -> dict[str, float | None]:
    redis = Redis.from_url(redis_url)
    took = []
    try:
        tallies: dict[str, DeadTally] = {}
        for _ in range(rounds):
            started = time.perf_counter()
            await take_snapshot(redis, Layout(), CHANNELS, tallies, time.time())
            took.append(time.perf_counter() - started)
        first_round = took[0]
        tallies.clear()  # a new leaseholder counts its dead letters from scratch
        started = time.perf_counter()
        await take_snapshot(redis, Layout(), CHANNELS, tallies, time.time())
        summary = latency_summary_ms(took[1:])
        summary["first"] = round(first_round * 1000, 3)
        summary["fresh_leader"] = round((time.perf_counter() - started) * 1000, 3)
        return summary
    finally:
        await redis.aclose()


async def redis_memory(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        info: Any = await redis.info("memory")
        return int(info["used_memory"])
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--extra", type=int, default=10_000, help="dead letters and retries")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-scrape-"))
    procs = Procs()
    server = RedisServer(tmp / "redis", port=free_port())
    result: dict[str, Any] = {"history": args.history, "extra": args.extra}
    try:
        redis_url = server.start()
        (tmp / "tocsin.toml").write_text(conf_text(redis_url))
        port = free_port()
        log = tmp / "tocsin.log"
        gw = procs.start(
            "tocsin",
            [sys.executable, "-m", "gateway.cli", "serve", "--conf", str(tmp / "tocsin.toml"),
             "--port", str(port), "--processes", "2", "--log-level", "warning"],
            log=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", gw, log=log)
        time.sleep(2.5)  # both processes up, a snapshot taken
        result["empty"], result["bytes_empty"] = scrapes(url + "/metrics", args.scrapes)
        result["snapshot_empty_ms"] = asyncio.run(snapshot_ms(redis_url))
        result["fill_s"] = round(asyncio.run(fill(redis_url, args.history, args.extra)), 1)
        result["redis_used_mb"] = round(asyncio.run(redis_memory(redis_url)) / 1e6, 1)
        time.sleep(2.5)  # snapshots of the filled data set
        result["filled"], result["bytes_filled"] = scrapes(url + "/metrics", args.scrapes)
        result["snapshot_filled_ms"] = asyncio.run(snapshot_ms(redis_url))
        procs.stop(gw)
    finally:
        procs.stop_all()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(result)
    out = args.out or REPO / "bench" / "results" / f"scrape-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


def report(r: dict[str, Any]) -> None:
    extra = f"{r['extra']:,}"
    print(f"history: {r['history']:,} deliveries, {extra} dead letters + {extra} retries; "
          f"filled in {r.get('fill_s')} s; Redis used {r.get('redis_used_mb')} MB")  # fmt: skip
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for label, key in (("scrape, empty history", "empty"), ("scrape, filled history", "filled"),
                       ("snapshot, empty", "snapshot_empty_ms"),
                       ("snapshot, filled", "snapshot_filled_ms")):  # fmt: skip
        row = r.get(key) or {}
        print(f"{label:28}" + "".join(f"{row.get(q) or 0:>10.2f}" for q in ("p50", "p99", "max")))
    filled = r.get("snapshot_filled_ms") or {}
    print(f"snapshot by a new leaseholder (recounts {extra} dead letters): "
          f"{filled.get('fresh_leader')} ms; answer {r.get('bytes_filled')} bytes")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
