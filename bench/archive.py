"""The archive phase (``--archive``, or ``--archive-only``): what history costs Redis
beyond the hot window, what it costs on disk, and what archiving costs throughput.

For each of ``[history] archive = "off"``, ``"sqlite"`` and ``"postgresql"`` (a local
server started for the phase, durable settings: fsync on) with ``hot_window = "1s"`` (so
that everything delivered is past the hot window, and the archiver works *during* the
delivery run, not after it), on a flushed Redis:

1. intake: ``tocsin serve --role intake``, N events posted (closed loop, C connections);
2. delivery: ``tocsin serve --role router --role worker`` (the archiver runs in the
   router role) delivers them to the sink; with the archive, then until the archiver
   has caught up (nothing left in the events stream or the history index);
3. Redis ``used_memory`` over its level before the run, per event, and by key kind
   (``MEMORY USAGE`` of every key, summed per kind); the archive's size on disk per event
   (SQLite: the file, by table with ``dbstat``; PostgreSQL: ``pg_total_relation_size``
   of each table, indexes included).

Then search, on each backend: N_SEARCH (default 1,000,000) deliveries and their events
written to a fresh archive with the archiver's own calls (their rate: the archive's
write throughput), and the time of a search by event id, by customer and by invoice ref
(slowest of 5).

Targets: <= 300 B of Redis per event beyond the hot window; intake and delivery rates
with archiving within 5 % of those without; each search under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import pwd
import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from gateway.archive import (
    ArchivedDelivery,
    ArchivedEvent,
    ArchiveStore,
    DeliveryQuery,
    SqliteArchive,
    archive_path,
)
from gateway.archive.postgres import PostgresArchive
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
    parser.add_argument(
        "--archive-no-postgresql",
        action="store_true",
        help="SQLite only (no local PostgreSQL server needed)",
    )


class Postgres:
    """A PostgreSQL server for the phase (tests/postgres_server.py's, with its durable
    defaults: fsync, synchronous commit and full-page writes on, as in production)."""

    def __init__(self) -> None:
        from tests.postgres_server import PostgresServer, server_bin  # noqa: PLC0415

        bin_dir = server_bin()
        if bin_dir is None:
            raise SystemExit("archive phase: no PostgreSQL server (apt-get install postgresql)")
        user = pwd.getpwnam("postgres") if _root() else None
        self.server = PostgresServer(bin_dir, user, durable=True)
        self.server.start()
        self.url = self.server.url

    def schema(self) -> str:
        return f"bench_{uuid.uuid4().hex[:8]}"

    def bytes_by_table(self, schema: str) -> dict[str, int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            rows = conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            ).fetchall()
        return {name: int(size) for name, size in rows}

    def stop(self) -> None:
        self.server.stop()


def _root() -> bool:
    import os  # noqa: PLC0415

    return os.geteuid() == 0


def _conf(bench: Bench, mode: str, postgres: Postgres | None, schema: str) -> Path:
    history = '\n[history]\narchive = "off"\n'
    if mode == "on":
        history = '\n[history]\narchive = "sqlite"\nhot_window = "1s"\n'
    elif mode == "pg":
        assert postgres is not None
        history = (
            f'\n[history]\narchive = "postgresql"\nhot_window = "1s"\n'
            f'archive_url = "{postgres.url}"\narchive_schema = "{schema}"\n'
        )
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


def _mode(bench: Bench, mode: str, postgres: Postgres | None) -> dict[str, Any]:
    assert bench.redis is not None
    from .run import _rate  # noqa: PLC0415

    schema = postgres.schema() if mode == "pg" and postgres else ""
    conf = _conf(bench, mode, postgres, schema)
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
        spy = bench.profiler(proc, f"archive-{mode}-deliver")
        before = bench.cpu({"gateway": proc.pid})
        stats = bench.wait_sink(n, bench.load_timeout, proc)
        # With the archive, its CPU counts until it has caught up: all of archiving's cost.
        caught_up = _caught_up(bench, CATCH_UP_TIMEOUT) if mode != "off" else None
        delivery_cpu = bench.cpu_delta(before, bench.cpu({"gateway": proc.pid}))["gateway"]
        bench.stop_profiler(spy)
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
    elif mode == "pg":
        assert postgres is not None
        sizes = postgres.bytes_by_table(schema)
        disk = sum(sizes.values())
        by_table = {name: round(size / n, 1) for name, size in sizes.items() if size}
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


async def _search(count: int, postgres: Postgres | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-archive-search-"))
    try:
        store: ArchiveStore
        if postgres is None:
            store = await SqliteArchive.open(tmp / "history.sqlite3")
        else:
            schema = postgres.schema()
            store = await PostgresArchive.open(postgres.url, schema)
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
        if postgres is None:
            files = tmp.glob("history.sqlite3*")  # noqa: ASYNC240 - measured after the run
            disk = sum(p.stat().st_size for p in files)
        else:
            disk = sum(postgres.bytes_by_table(schema).values())
        return {
            "deliveries": count,
            "build_s": round(built, 1),
            # Events and their deliveries written per second, by the archiver's calls.
            "write_rate": round(count / built) if built else None,
            "bytes_per_delivery": round(disk / count, 1),
            "search_ms": times,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _us(cpu_s: float | None, n: int) -> float | None:
    return None if cpu_s is None else round(cpu_s / n * 1e6, 1)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = sorted(v for r in runs if (v := r.get(key)) is not None)
    return values[(len(values) - 1) // 2] if values else None


def phase_archive(bench: Bench) -> dict[str, Any]:
    modes = ["off", "on"]
    postgres = None
    if not bench.args.archive_no_postgresql:
        postgres = Postgres()
        modes.append("pg")
    try:
        return _phase(bench, modes, postgres)
    finally:
        if postgres is not None:
            postgres.stop()


def _phase(bench: Bench, modes: list[str], postgres: Postgres | None) -> dict[str, Any]:
    # Alternated, so that load from elsewhere on the box hits every mode alike.
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(max(1, bench.args.archive_reps)):
        for mode in modes:
            runs[mode].append(_mode(bench, mode, postgres))
    last = {mode: dict(runs[mode][-1]) for mode in modes}  # memory: the last run's
    for mode in modes:
        last[mode].update(
            {
                key: _median(runs[mode], key)
                for key in ("intake_rate", "delivery_rate", "intake_cpu_us", "delivery_cpu_us")
            }
        )
    off = last["off"]

    def change(mode: str, key: str) -> float | None:
        a, b = off.get(key), last[mode].get(key)
        return round(b / a - 1, 3) if a and b else None

    result: dict[str, Any] = {"n": bench.n, "off": off, "on": last["on"], "runs": runs}
    for mode, suffix in (("on", ""), ("pg", "_pg")):
        if mode not in last:
            continue
        for key in ("intake_rate", "delivery_rate", "intake_cpu_us", "delivery_cpu_us"):
            name = key.removesuffix("_rate").removesuffix("_us")
            result[f"{name}_change{suffix}"] = change(mode, key)
    result["search"] = asyncio.run(_search(bench.args.archive_search))
    if "pg" in last:
        result["pg"] = last["pg"]
        result["search_pg"] = asyncio.run(_search(bench.args.archive_search, postgres))
    return result


def checks(result: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    found = {}
    for mode, name in (("on", "archive_delivers_all"), ("pg", "archive_pg_delivers_all")):
        if mode not in result:
            continue
        on = result[mode]
        caught_up = on["archive_caught_up_s"]
        ok = on["delivered"] == n and on["duplicates"] == 0 and caught_up is not None
        detail = f"sink {on['delivered']}/{n}, duplicates {on['duplicates']}, caught up in "
        found[name] = {"ok": ok, "detail": detail + f"{caught_up} s"}
    return found


def table(result: dict[str, Any]) -> str:
    off, on, pg = result["off"], result["on"], result.get("pg") or {}

    def figure(key: str) -> tuple[Any, Any, Any]:
        return off.get(key), on.get(key), pg.get(key)

    def change(key: str) -> tuple[Any, Any, Any]:
        return "", result.get(key), result.get(f"{key}_pg")

    drop = f">= -{RATE_DROP_TARGET:.0%}"
    rows = [
        ("", "archive off", "sqlite (hot 1 s)", "postgresql", "target"),
        ("intake events/s", *figure("intake_rate"), ""),
        ("delivery webhooks/s", *figure("delivery_rate"), ""),
        ("intake change", *change("intake_change"), drop),
        ("delivery change", *change("delivery_change"), drop),
        ("intake CPU us/event", *figure("intake_cpu_us"), ""),
        ("delivery CPU us/event", *figure("delivery_cpu_us"), ""),
        ("delivery CPU change", *change("delivery_cpu_change"), ""),
        ("Redis B/event after", *figure("redis_bytes_per_event"), f"<= {REDIS_BYTES_TARGET}"),
        ("archive B/event on disk", "", *figure("archive_bytes_per_event")[1:], ""),
        ("archive caught up after (s)", "", *figure("archive_caught_up_s")[1:], ""),
    ]
    reps = len(result["runs"]["on"])
    lines = ["", f"archive phase (bench/archive.py): rates and CPU the median of {reps} runs each"]
    for row in rows:
        cells = ["" if c is None else c for c in row]
        lines.append(
            f"  {cells[0]:28} {cells[1]!s:>12} {cells[2]!s:>18} {cells[3]!s:>12} {cells[4]!s:>10}"
        )
    for mode, figures in (("off", off), ("sqlite", on), ("postgresql", pg)):
        if not figures:
            continue
        kinds = ", ".join(
            f"{kind} {v['bytes'] / result['n']:.0f} ({v['keys']} keys)"
            for kind, v in sorted(figures["redis_by_kind"].items())
        )
        lines.append(f"  Redis B/event by key kind, archive {mode}: " + kinds)
    for name, figures in (("sqlite", on), ("postgresql", pg)):
        if figures:
            tables = ", ".join(
                f"{k} {v:.0f}" for k, v in sorted(figures["archive_by_table"].items())
            )
            lines.append(f"  {name} archive B/event by table (indexes included): {tables}")
    for name, key in (("sqlite", "search"), ("postgresql", "search_pg")):
        search = result.get(key)
        if not search:
            continue
        times = ", ".join(f"{k} {v} ms" for k, v in search["search_ms"].items())
        lines.append(
            f"  {name}: search over {search['deliveries']:,} archived deliveries: {times} "
            f"(target < {SEARCH_MS_TARGET:.0f} ms); written in {search['build_s']} s "
            f"({search['write_rate']:,}/s events + deliveries), "
            f"{search['bytes_per_delivery']} B per event + delivery on disk"
        )
    return "\n".join(lines)
