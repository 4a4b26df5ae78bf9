"""The archive phase (``--archive``, or ``--archive-only``): what history costs Redis
beyond the hot window, what it costs on disk, and what archiving costs throughput.

For each of ``[history] archive = "off"`` and ``"sqlite"`` with ``hot_window = "1s"``
(so that everything delivered is past the hot window, and the archiver works *during*
the delivery run, not after it), on a flushed Redis:

1. intake: ``tocsin serve --role intake``, N events posted (closed loop, C connections);
2. delivery: ``tocsin serve --role router --role worker`` (the archiver runs in the
   router role) delivers them to the sink; with the archive, then until the archiver
   has caught up (nothing left in the events stream or the history index);
3. Redis ``used_memory`` over its level before the run, per event, and by key kind
   (``MEMORY USAGE`` of every key, summed per kind); the archive file's size per event.

Then search: N_SEARCH (default 1,000,000) deliveries and their events written to a
fresh archive with the archiver's own calls, and the time of a search by event id, by
customer and by invoice ref (slowest of 5).

Targets: <= 300 B of Redis per event beyond the hot window; intake and delivery rates
with archiving within 5 % of those without; each search under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.archive import (
    ArchivedDelivery,
    ArchivedEvent,
    DeliveryQuery,
    SqliteArchive,
    archive_path,
)
from gateway.delivery import Attempt
from gateway.history import DeliveryRecord

from .common import HOST
from .procs import wait_http

if TYPE_CHECKING:
    from .run import Bench

REDIS_BYTES_TARGET = 300
RATE_DROP_TARGET = 0.05
SEARCH_MS_TARGET = 100.0
CATCH_UP_TIMEOUT = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", action="store_true", help="add the archive phase")
    parser.add_argument("--archive-only", action="store_true", help="run only the archive phase")
    parser.add_argument(
        "--archive-search", type=int, default=1_000_000, help="archived deliveries searched"
    )
    parser.add_argument(
        "--archive-reps", type=int, default=2, help="off/on runs, alternated; medians shown"
    )


def _conf(bench: Bench, mode: str) -> Path:
    history = '\n[history]\narchive = "off"\n'
    if mode == "on":
        history = '\n[history]\narchive = "sqlite"\nhot_window = "1s"\n'
    path = bench.tmp / f"archive-{mode}.toml"
    path.write_text(bench.conf.read_text() + history)
    return path


def _kind(key: str) -> str:
    parts = key.split(":")
    return parts[1] if len(parts) > 1 else key


def _memory_by_kind(bench: Bench) -> dict[str, dict[str, int]]:
    assert bench.redis is not None
    kinds: dict[str, dict[str, int]] = {}
    batch: list[str] = []

    def flush() -> None:
        pipe = bench.redis.pipeline(transaction=False)  # type: ignore[union-attr]
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, used in zip(batch, pipe.execute(), strict=True):
            slot = kinds.setdefault(_kind(key), {"keys": 0, "bytes": 0})
            slot["keys"] += 1
            slot["bytes"] += int(used or 0)
        batch.clear()

    for key in bench.redis.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            flush()
    flush()
    return kinds


def _caught_up(bench: Bench, timeout: float) -> float | None:
    """Seconds until nothing is left to archive, or ``None`` past ``timeout``."""
    assert bench.redis is not None
    from .run import PREFIX  # noqa: PLC0415 - run imports this module

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not bench.redis.xlen(f"{PREFIX}:events") and not bench.redis.zcard(f"{PREFIX}:history"):
            return round(time.monotonic() - start, 2)
        time.sleep(0.1)
    return None


def _mode(bench: Bench, mode: str) -> dict[str, Any]:
    assert bench.redis is not None
    from .run import _rate  # noqa: PLC0415

    conf = _conf(bench, mode)
    shutil.rmtree(bench.tmp / "var" / "archive", ignore_errors=True)
    bench.redis.flushall()
    bench.compact_aof()
    baseline = int(bench.redis.info("memory")["used_memory"])
    n = bench.n

    saved, bench.conf = bench.conf, conf
    try:
        proc, port, log = bench.gateway(f"archive-{mode}-intake", "intake")
        wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
        url = f"http://{HOST}:{port}/v1/events"
        before = bench.cpu({"gateway": proc.pid})
        intake = bench.loadgen(
            url, "closed", "-n", str(n), "-c", str(bench.args.concurrency), "--id-prefix", "arc_"
        )
        intake_cpu = bench.cpu_delta(before, bench.cpu({"gateway": proc.pid}))["gateway"]
        bench.procs.stop(proc)

        bench.compact_aof()
        bench.sink_reset()
        proc, _port, log = bench.gateway(f"archive-{mode}-deliver", "router", "worker")
        ready = bench.wait_ready_line(proc, log)
        before = bench.cpu({"gateway": proc.pid})
        stats = bench.wait_sink(n, bench.load_timeout, proc)
        # With the archive, its CPU counts until it has caught up: all of archiving's cost.
        caught_up = _caught_up(bench, CATCH_UP_TIMEOUT) if mode == "on" else None
        delivery_cpu = bench.cpu_delta(before, bench.cpu({"gateway": proc.pid}))["gateway"]
        stats = bench.settle(n)
        bench.procs.stop(proc)
    finally:
        bench.conf = saved

    used = int(bench.redis.info("memory")["used_memory"]) - baseline
    db = archive_path(bench.tmp / "var")
    disk = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) if mode == "on" else 0
    by_table: dict[str, float] = {}
    if mode == "on":
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        by_table = {name: round(size / n, 1) for name, size in rows if size}
    return {
        "intake_rate": intake.get("rate"),
        "delivery_rate": _rate(n, stats, ready),
        "intake_cpu_us": _us(intake_cpu, n),
        "delivery_cpu_us": _us(delivery_cpu, n),
        "delivered": stats["count"],
        "duplicates": stats["duplicate_webhook_ids"],
        "archive_caught_up_s": caught_up,
        "redis_bytes_per_event": round(used / n, 1),
        "redis_by_kind": _memory_by_kind(bench),
        "archive_bytes_per_event": round(disk / n, 1) if disk else None,
        "archive_by_table": by_table,
    }


async def _search(count: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-archive-search-"))
    try:
        store = await SqliteArchive.open(tmp / "history.sqlite3")
        base = 1_790_000_000.0
        started = time.perf_counter()
        chunk = 100_000
        for low in range(0, count, chunk):
            ids = range(low, min(count, low + chunk))
            await store.put_events(
                [
                    ArchivedEvent(
                        f"evt_{i:08d}", 0, f"{int((base + i) * 1000)}-0", int((base + i) * 1000),
                        "payment.succeeded", f"cus_{i % 50_000:05d}", f"FA-{i:08d}",
                        b'{"id":"evt_%08d"}' % i,
                    )
                    for i in ids
                ]
            )  # fmt: skip
            await store.put_deliveries(
                [
                    ArchivedDelivery.of(
                        DeliveryRecord(
                            id=f"msg_{i:08d}", event_id=f"evt_{i:08d}",
                            event_type="payment.succeeded", rule="r", channel="hook",
                            status="delivered", updated=base + i,
                            attempts=[Attempt(n=1, at=base + i, outcome="delivered", ms=12.0)],
                        )
                    )
                    for i in ids
                ]
            )  # fmt: skip
        built = time.perf_counter() - started
        mid = count // 2
        queries = {
            "event_id": DeliveryQuery(event_id=f"evt_{mid:08d}"),
            "customer": DeliveryQuery(customer_id=f"cus_{mid % 50_000:05d}"),
            "invoice_ref": DeliveryQuery(invoice_ref=f"FA-{mid:08d}"),
        }
        times: dict[str, float] = {}
        for name, query in queries.items():
            slowest = 0.0
            for _ in range(5):
                t0 = time.perf_counter()
                found = await store.find_deliveries(query)
                slowest = max(slowest, time.perf_counter() - t0)
            assert found, f"search by {name} found nothing"
            times[name] = round(slowest * 1000, 2)
        await store.close()
        return {"deliveries": count, "build_s": round(built, 1), "search_ms": times}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _us(cpu_s: float | None, n: int) -> float | None:
    return None if cpu_s is None else round(cpu_s / n * 1e6, 1)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = sorted(v for r in runs if (v := r.get(key)) is not None)
    return values[(len(values) - 1) // 2] if values else None


def phase_archive(bench: Bench) -> dict[str, Any]:
    # Alternated, so that load from elsewhere on the box hits both alike.
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(max(1, bench.args.archive_reps)):
        for mode in ("off", "on"):
            runs[mode].append(_mode(bench, mode))
    off, on = dict(runs["off"][-1]), dict(runs["on"][-1])  # memory: the last run's
    medians = {
        mode: {
            key: _median(runs[mode], key)
            for key in ("intake_rate", "delivery_rate", "intake_cpu_us", "delivery_cpu_us")
        }
        for mode in runs
    }
    off.update(medians["off"])
    on.update(medians["on"])

    def change(key: str) -> float | None:
        a, b = off.get(key), on.get(key)
        return round(b / a - 1, 3) if a and b else None

    return {
        "n": bench.n,
        "off": off,
        "on": on,
        "runs": runs,
        "intake_change": change("intake_rate"),
        "delivery_change": change("delivery_rate"),
        "intake_cpu_change": change("intake_cpu_us"),
        "delivery_cpu_change": change("delivery_cpu_us"),
        "search": asyncio.run(_search(bench.args.archive_search)),
    }


def checks(result: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    on = result["on"]
    ok = on["delivered"] == n and on["duplicates"] == 0 and on["archive_caught_up_s"] is not None
    detail = f"sink {on['delivered']}/{n}, duplicates {on['duplicates']}, caught up in "
    return {"archive_delivers_all": {"ok": ok, "detail": detail + f"{on['archive_caught_up_s']} s"}}


def table(result: dict[str, Any]) -> str:
    off, on, search = result["off"], result["on"], result["search"]
    rows = [
        ("", "archive off", "archive on (hot 1 s)", "target"),
        ("intake events/s", off["intake_rate"], on["intake_rate"], ""),
        ("delivery webhooks/s", off["delivery_rate"], on["delivery_rate"], ""),
        ("intake change", "", result["intake_change"], f">= -{RATE_DROP_TARGET:.0%}"),
        ("delivery change", "", result["delivery_change"], f">= -{RATE_DROP_TARGET:.0%}"),
        ("intake CPU us/event", off["intake_cpu_us"], on["intake_cpu_us"], ""),
        ("delivery CPU us/event", off["delivery_cpu_us"], on["delivery_cpu_us"], ""),
        ("delivery CPU change", "", result["delivery_cpu_change"], ""),
        (
            "Redis B/event after",
            off["redis_bytes_per_event"],
            on["redis_bytes_per_event"],
            f"<= {REDIS_BYTES_TARGET}",
        ),
        ("archive B/event on disk", "", on["archive_bytes_per_event"], ""),
        ("archive caught up after (s)", "", on["archive_caught_up_s"], ""),
    ]
    reps = len(result["runs"]["on"])
    lines = ["", f"archive phase (bench/archive.py): rates and CPU the median of {reps} runs each"]
    for row in rows:
        lines.append(f"  {row[0]:28} {row[1]!s:>12} {row[2]!s:>22} {row[3]!s:>10}")
    for mode, figures in (("off", off), ("on", on)):
        kinds = ", ".join(
            f"{kind} {v['bytes'] / result['n']:.0f} ({v['keys']} keys)"
            for kind, v in sorted(figures["redis_by_kind"].items())
        )
        lines.append(f"  Redis B/event by key kind, archive {mode}: " + kinds)
    tables = ", ".join(f"{k} {v:.0f}" for k, v in sorted(on["archive_by_table"].items()))
    lines.append(f"  archive B/event by table and index: {tables}")
    times = ", ".join(f"{k} {v} ms" for k, v in search["search_ms"].items())
    lines.append(
        f"  search over {search['deliveries']:,} archived deliveries (built in "
        f"{search['build_s']} s): {times} (target < {SEARCH_MS_TARGET:.0f} ms)"
    )
    return "\n".join(lines)
