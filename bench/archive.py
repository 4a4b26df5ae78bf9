"""The archive phase (``--archive``, or ``--archive-only``): what archiving history costs
the pipeline's rates, Redis and the disk, run as users run it.

Each mode is ``tocsin serve --processes auto`` (every role in every process: what a bare
``tocsin serve`` runs; the archiver runs in the router role) on a flushed Redis, under
the full-pipeline phase's loads (``bench.fullpipe.run_one``):

- ``off``: ``[history] archive = "off"``;
- ``sqlite``: ``archive = "sqlite"``, ``hot_window = "1s"``, the default pace
  (``archive_rate``, records a second per shard);
- ``unpaced``: the same with ``archive_rate = 0`` (as fast as it can);
- ``pg``: ``archive = "postgresql"`` on a local server the phase starts (durable
  settings: fsync on), ``hot_window = "1s"``, the default pace.

With a 1 s hot window everything is past it almost at once, so the archiver works during
the load, not after it; its first real pass comes ~5 s after the process starts (once
idle it waits ``INTERVAL`` between passes), hence the larger N (``--archive-events``).

1. saturating: ``--archive-events`` pre-signed events replayed by wrk (or
   ``bench.loadgen closed``), modes alternated ``--archive-reps`` times, medians:
   accepted/s, delivered/s, their change against ``off`` (target >= -5 %), gateway
   CPU per event, how long the archiver ran inside the window (events trimmed from the
   stream, sampled); then, after the load, seconds until the archiver caught up (events
   stream and history index empty) and its CPU meanwhile, Redis ``used_memory`` per
   event and by key kind (``MEMORY USAGE`` of every key), the archive's bytes per event
   on disk. Paced modes catch up at their pace (2 records an event: ~2N / archive_rate
   seconds), so they are waited for in the last repetition only; the unpaced mode in each.
2. paced: ``bench.loadgen paced`` at ``--rate`` for ``--archive-paced-seconds``, once
   per mode: intake->receipt p50/p99 against ``off``, and the archive lag (how far the
   oldest record left in Redis is past the hot window) half-way and at the end: growing
   means archiving does not keep up with that rate at its pace.
3. search (``bench.archive_search``): on each backend, ``--archive-search`` deliveries
   and their events written with the archiver's calls, then searched (slowest of 5).

Targets: <= 300 B of Redis per event beyond the hot window; accepted and delivered
rates with archiving within 5 % of those without; each search under 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import redis

from gateway.archive import archive_path
from gateway.conf import HistorySection
from gateway.keys import Keys

from . import fullpipe
from .archive_search import Postgres, search
from .fullpipe_cluster import children
from .procs import cpu_seconds

if TYPE_CHECKING:
    from .run import Bench

REDIS_BYTES_TARGET = 300
RATE_DROP_TARGET = 0.05
SEARCH_MS_TARGET = 100.0
#: Catch-up bound beyond what the pace itself takes (see ``catch_up_timeout``).
CATCH_UP_FLOOR = 120.0
HOT_WINDOW = 1.0
#: ``[history] archive_rate``'s default: the pace the paced modes run at.
DEFAULT_PACE = HistorySection().archive_rate
KEYS = Keys(fullpipe.PREFIX)


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    archive: str
    #: ``archive_rate`` written to the conf; ``None``: left out (the default).
    rate: int | None = None

    @property
    def pace(self) -> int:
        return DEFAULT_PACE if self.rate is None else self.rate


MODES = (
    Mode("off", "archive off", "off"),
    Mode("sqlite", "sqlite", "sqlite"),
    Mode("unpaced", "sqlite unpaced", "sqlite", 0),
    Mode("pg", "postgresql", "postgresql"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", action="store_true", help="add the archive phase")
    parser.add_argument("--archive-only", action="store_true", help="run only the archive phase")
    parser.add_argument(
        "--archive-events",
        type=int,
        default=None,
        help="archive phase: events per saturating run (default 2 x N: the window must "
        "outlast the archiver's first passes, ~5 s in)",
    )
    parser.add_argument(
        "--archive-paced-seconds",
        type=float,
        default=8.0,
        help="archive phase: seconds of the paced run (at --rate), once per mode",
    )
    parser.add_argument(
        "--archive-search", type=int, default=1_000_000, help="archived deliveries searched"
    )
    parser.add_argument(
        "--archive-reps", type=int, default=2, help="saturating runs per mode, alternated"
    )
    parser.add_argument(
        "--archive-no-postgresql",
        action="store_true",
        help="SQLite only (no local PostgreSQL server needed)",
    )


def catch_up_timeout(records: int, pace: int) -> float:
    """Paced, a burst of ``records`` takes ``records / pace`` seconds to archive."""
    return CATCH_UP_FLOOR + (1.5 * records / pace if pace else 0.0)


def _history(mode: Mode, postgres: Postgres | None, schema: str) -> str:
    lines = ["", "[history]", f'archive = "{mode.archive}"']
    if mode.archive != "off":
        lines.append(f'hot_window = "{HOT_WINDOW:g}s"')
    if mode.rate is not None:
        lines.append(f"archive_rate = {mode.rate}")
    if mode.archive == "postgresql":
        assert postgres is not None
        lines += [f'archive_url = "{postgres.url}"', f'archive_schema = "{schema}"']
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _mode_conf(bench: Bench, base: str, mode: Mode, postgres: Postgres | None) -> Iterator[str]:
    """A flushed Redis, no archive file, and ``bench.conf`` set to ``mode``'s (which
    ``Side`` reads) meanwhile; yields the PostgreSQL schema (fresh each run)."""
    assert bench.redis is not None
    schema = postgres.schema() if mode.archive == "postgresql" and postgres else ""
    path = bench.tmp / f"archive-{mode.key}.toml"
    path.write_text(base + _history(mode, postgres, schema))
    shutil.rmtree(bench.tmp / "var" / "archive", ignore_errors=True)
    bench.redis.flushall()
    saved, bench.conf = bench.conf, path
    try:
        yield schema
    finally:
        bench.conf = saved


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


def _lag(client: redis.Redis) -> float:
    """How far past the hot window the oldest record left in Redis is (the archiver's
    own ``_lag``): 0 when archiving keeps up."""
    cutoff = time.time() * 1000 - HOT_WINDOW * 1000
    oldest = cutoff
    head: Any = client.xrange(KEYS.events, count=1)
    if head:
        oldest = min(oldest, int(str(head[0][0]).split("-")[0]))
    first: Any = client.zrange(KEYS.history, 0, 0, withscores=True)
    if first:
        oldest = min(oldest, float(first[0][1]))
    return round(max(0.0, cutoff - oldest) / 1000, 2)


class Sampler(threading.Thread):
    """Every 0.25 s: wall time, events trimmed from the stream so far (archived: nothing
    else trims it in a bench run), and the archive lag."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.samples: list[tuple[float, int, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            with contextlib.suppress(redis.RedisError):
                info: Any = self.client.xinfo_stream(KEYS.events)
                trimmed = int(info["entries-added"]) - int(info["length"])
                self.samples.append((time.time(), trimmed, _lag(self.client)))

    def stop(self) -> None:
        self.done.set()
        self.join(5.0)
        self.client.close()

    def archiving_since(self) -> float | None:
        return next((t for t, trimmed, _ in self.samples if trimmed > 0), None)

    def lag_at(self, when: float) -> float | None:
        near = min(self.samples, key=lambda s: abs(s[0] - when), default=None)
        return near[2] if near else None


def _caught_up(bench: Bench, timeout: float) -> float | None:
    """Wall time at which nothing was left to archive, or ``None`` past ``timeout``."""
    assert bench.redis is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bench.redis.xlen(KEYS.events) and not bench.redis.zcard(KEYS.history):
            return time.time()
        time.sleep(0.1)
    return None


def _server_cpu(side: fullpipe.Side) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in side.pids()["server"])


def _profile(bench: Bench, tag: str, spies: list[Any]) -> Any:
    def started(side: fullpipe.Side) -> None:
        if bench.args.profile is not None:
            for pid in children(side.started[0].pid):
                spies.append(bench.profiler(SimpleNamespace(pid=pid), f"{tag}-{pid}"))

    return started


def _disk(bench: Bench, mode: Mode, postgres: Postgres | None, schema: str) -> dict[str, int]:
    """The archive's bytes on disk by table (indexes included)."""
    if mode.archive == "sqlite":
        db = archive_path(bench.tmp / "var")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
        files = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        return {"": files, **{name: int(size) for name, size in rows if size}}
    if mode.archive == "postgresql":
        assert postgres is not None
        sizes = postgres.bytes_by_table(schema)
        return {"": sum(sizes.values()), **sizes}
    return {}


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    sink = run["sink"]
    return {
        "accepted": run["accepted"],
        "delivered": run["delivered"],
        "sent_at_most": run["sent"]["sent_at_most"],
        "duplicates": sink["duplicate_webhook_ids"] + sink["duplicate_event_ids"],
        "bad_signature": sink["bad_signature"],
        "left_in_redis": run["left_in_redis"],
        "accepted_per_s": run["accepted_per_s"],
        "delivered_per_s": run["delivered_per_s"],
        "server_cpu_us": run["cpu_us_per_event"]["server"],
        "busy_cores": run["busy_cores"],
        "others_cores": run["others_cores"],
        "p50_ms": run["latency_ms"].get("p50"),
        "p99_ms": run["latency_ms"].get("p99"),
    }


def _saturating(
    bench: Bench,
    base: str,
    mode: Mode,
    postgres: Postgres | None,
    run: tuple[str, bool, bool],
) -> dict[str, Any]:
    """One saturating run (``run``: its tag, whether wrk loads it, whether the archiver's
    catch-up is waited for)."""
    tag, use_wrk, wait = run
    assert bench.redis is not None and bench.redis_server is not None
    n = bench.args.archive_events
    spies: list[Any] = []
    with _mode_conf(bench, base, mode, postgres) as schema:
        bench.compact_aof()
        baseline = int(bench.redis.info("memory")["used_memory"])
        sampler = Sampler(bench.redis_server.url)

        def loaded(side: fullpipe.Side) -> dict[str, Any]:
            sampler.stop()
            if mode.archive == "off" or not wait:
                return {}
            cpu0 = _server_cpu(side)
            # wrk may send up to C-1 events more than N: every one is archived too.
            records = 2 * (n + bench.args.concurrency)
            at = _caught_up(bench, catch_up_timeout(records, mode.pace))
            return {"caught_up_at": at, "catch_up_cpu_s": _server_cpu(side) - cpu0}

        sampler.start()
        side = fullpipe.Side(bench, f"archive {mode.key}", "auto")
        done = fullpipe.run_one(
            bench,
            side,
            "saturating",
            tag,
            use_wrk,
            n=n,
            started=_profile(bench, tag, spies),
            loaded=loaded,
        )
        for spy in spies:
            bench.stop_profiler(spy)
        out = _figures(done)
        start, last = done["sent"]["t_start"], done["sink"]["last"] or done["sent"]["t_start"]
        since = sampler.archiving_since()
        out["window_s"] = round(last - start, 2)
        out["archiving_s"] = round(max(0.0, last - since), 2) if since else 0.0
        after = done["after"]
        out["waited"] = bool(after)
        at = after.get("caught_up_at")
        out["caught_up_s"] = round(at - last, 2) if at else None
        delivered = done["delivered"]
        out["catch_up_cpu_us"] = _us(after.get("catch_up_cpu_s"), delivered)
        if mode.archive == "off" or at:
            used = int(bench.redis.info("memory")["used_memory"]) - baseline
            out["redis_bytes_per_event"] = round(used / delivered, 1)
            out["redis_by_kind"] = _memory_by_kind(bench)
            disk = _disk(bench, mode, postgres, schema)
            total = disk.pop("", 0)
            out["archive_bytes_per_event"] = round(total / delivered, 1) if total else None
            out["archive_by_table"] = {k: round(v / delivered, 1) for k, v in disk.items()}
    return out


def _paced(bench: Bench, base: str, mode: Mode, postgres: Postgres | None) -> dict[str, Any]:
    assert bench.redis_server is not None
    seconds = bench.args.archive_paced_seconds
    with _mode_conf(bench, base, mode, postgres):
        sampler = Sampler(bench.redis_server.url)

        def loaded(side: fullpipe.Side) -> dict[str, Any]:
            assert bench.redis is not None
            lag = _lag(bench.redis) if mode.archive != "off" else None
            sampler.stop()
            return {"lag_end_s": lag}

        sampler.start()
        side = fullpipe.Side(bench, f"archive {mode.key}", "auto")
        tag = f"arcp{mode.key}"
        run = fullpipe.run_one(bench, side, "paced", tag, False, seconds=seconds, loaded=loaded)
    out = _figures(run)
    first = run["sink"]["first"]
    out["n"] = run["sent"]["n"]
    out["rate_offered"] = run["sent"]["rate_offered"]
    out["lag_mid_s"] = (
        sampler.lag_at(first + seconds / 2) if first and mode.archive != "off" else None
    )
    out["lag_end_s"] = run["after"].get("lag_end_s")
    return out


def _us(cpu_s: float | None, n: int) -> float | None:
    return None if cpu_s is None else round(cpu_s / max(1, n) * 1e6, 1)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [v for r in runs if (v := r.get(key)) is not None]
    return round(statistics.median(values), 2) if values else None


MEDIANS = (
    "accepted_per_s",
    "delivered_per_s",
    "server_cpu_us",
    "others_cores",
    "window_s",
    "archiving_s",
    "caught_up_s",
    "catch_up_cpu_us",
)


def phase_archive(bench: Bench) -> dict[str, Any]:
    if bench.args.archive_events is None:
        bench.args.archive_events = 2 * bench.n
    modes = [m for m in MODES if m.archive != "postgresql" or not bench.args.archive_no_postgresql]
    postgres = None if bench.args.archive_no_postgresql else Postgres()
    try:
        return _phase(bench, modes, postgres)
    finally:
        if postgres is not None:
            postgres.stop()


def _phase(bench: Bench, modes: list[Mode], postgres: Postgres | None) -> dict[str, Any]:
    version = fullpipe.wrk_version() if bench.args.loadgen != "python" else None
    base = bench.conf.read_text()
    reps = max(1, bench.args.archive_reps)
    started = time.monotonic()
    # Alternated, so that load from elsewhere on the box hits every mode alike.
    runs: dict[str, list[dict[str, Any]]] = {m.key: [] for m in modes}
    for rep in range(reps):
        for mode in modes:
            # Paced, catching up takes ~2N / pace seconds: waited for once per mode.
            wait = mode.pace == 0 or rep == reps - 1
            one = (f"arcs{mode.key}{rep}", version is not None, wait)
            runs[mode.key].append(_saturating(bench, base, mode, postgres, one))
    paced = {m.key: _paced(bench, base, m, postgres) for m in modes}
    figures: dict[str, dict[str, Any]] = {}
    for mode in modes:
        last = runs[mode.key][-1]  # memory, disk: the last run's (caught up in every mode)
        figures[mode.key] = {
            **{k: v for k, v in last.items() if k.startswith(("redis_", "archive_"))},
            **{key: _median(runs[mode.key], key) for key in MEDIANS},
        }
    off = figures["off"]
    for mode in modes:
        for key in ("accepted_per_s", "delivered_per_s", "server_cpu_us"):
            a, b = off.get(key), figures[mode.key].get(key)
            figures[mode.key][key + "_change"] = round(b / a - 1, 3) if a and b else None
        p99, p99_off = paced[mode.key]["p99_ms"], paced["off"]["p99_ms"]
        paced[mode.key]["p99_change"] = round(p99 / p99_off - 1, 3) if p99 and p99_off else None
    load_s = round(time.monotonic() - started, 1)
    wrk = f"{version} -t1 -c{bench.args.concurrency}, pre-signed requests" if version else ""
    result: dict[str, Any] = {
        "n": bench.args.archive_events,
        "reps": reps,
        "pace": DEFAULT_PACE,
        "load_generator": {
            "saturating": wrk or "bench.loadgen closed (Python)",
            "paced": f"bench.loadgen paced {bench.args.rate:g}/s for "
            f"{bench.args.archive_paced_seconds:g} s",
        },
        "modes": {m.key: {"label": m.label, "archive": m.archive, "pace": m.pace} for m in modes},
        "figures": figures,
        "runs": runs,
        "paced": paced,
        "load_s": load_s,
    }
    result["search"] = asyncio.run(search(bench.args.archive_search))
    if postgres is not None:
        result["search_pg"] = asyncio.run(search(bench.args.archive_search, postgres))
    return result


def checks(result: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    """Every event acknowledged is delivered once in every run; the archiver caught up
    within ``catch_up_timeout`` wherever it was waited for. (``n``: unused, the archive
    phase sizes its own runs.)"""
    found = {}
    for key, runs in result["runs"].items():
        bad = []
        for i, run in enumerate([*runs, result["paced"][key]]):
            name = "paced run" if i == len(runs) else f"run {i + 1}"
            most = run.get("sent_at_most", run["accepted"])
            if not run["accepted"] <= run["delivered"] <= most or run["duplicates"]:
                bad.append(
                    f"{name}: {run['accepted']} acknowledged, {run['delivered']} "
                    f"delivered, duplicates {run['duplicates']}"
                )
            if any(run["left_in_redis"].values()):
                bad.append(f"{name}: left in Redis {run['left_in_redis']}")
            if run.get("waited") and run.get("caught_up_s") is None:
                bad.append(f"{name}: the archiver had not caught up in time")
        caught = [r["caught_up_s"] for r in runs if r.get("waited")]
        detail = "; ".join(bad) or (
            f"{len(runs)} saturating runs and a paced one: each event delivered once"
            + (f", archiver caught up after {caught} s" if caught else "")
        )
        found[f"archive_{key}_delivers_all"] = {"ok": not bad, "detail": detail}
    return found


PCT = "{:+.1%}"


def _cell(value: Any, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def table(result: dict[str, Any]) -> str:
    modes, figures, paced = result["modes"], result["figures"], result["paced"]
    keys = list(modes)
    archived = [k for k in keys if modes[k]["archive"] != "off"]
    drop = f">= -{RATE_DROP_TARGET:.0%}"

    def row(label: str, cells: list[str], target: str = "") -> str:
        return f"  {label:30}" + "".join(f"{c:>15}" for c in cells) + f"  {target}"

    def each(key: str, fmt: str = "{:,.0f}", src: dict[str, Any] = figures) -> list[str]:
        return [_cell(src[k].get(key), fmt) for k in keys]

    def pair(a: str, b: str, src: dict[str, Any] = figures) -> list[str]:
        return [
            f"{_cell(src[k].get(a), '{:.1f}')} / {_cell(src[k].get(b), '{:.1f}')}" for k in keys
        ]

    pace = ["-" if k not in archived else str(modes[k]["pace"] or "unpaced") for k in keys]
    lines = [
        "",
        f"archive phase (bench/archive.py): tocsin serve --processes auto, hot window "
        f"{HOT_WINDOW:g} s; saturating: {result['load_generator']['saturating']}, "
        f"{result['n']:,} events a run, {result['reps']} runs a mode alternated, medians; "
        f"paced: {result['load_generator']['paced']}, one run a mode",
        row("", [modes[k]["label"] for k in keys], "target"),
        row("archive_rate (records/s/shard)", pace),
        row("accepted/s", each("accepted_per_s")),
        row("delivered/s", each("delivered_per_s")),
        row("accepted change vs off", each("accepted_per_s_change", PCT), drop),
        row("delivered change vs off", each("delivered_per_s_change", PCT), drop),
        row("gateway CPU us/event", each("server_cpu_us")),
        row("gateway CPU change vs off", each("server_cpu_us_change", PCT)),
        row("others' cores (box noise)", each("others_cores", "{:.2f}")),
        row("archiving ran / window (s)", pair("archiving_s", "window_s")),
        row("caught up after the load (s)", each("caught_up_s", "{:.1f}")),
        row("catch-up CPU us/event", each("catch_up_cpu_us")),
        row("Redis B/event after", each("redis_bytes_per_event"), f"<= {REDIS_BYTES_TARGET}"),
        row("archive B/event on disk", each("archive_bytes_per_event")),
        row("paced p50 / p99 ms", pair("p50_ms", "p99_ms", paced)),
        row("paced p99 change vs off", each("p99_change", PCT, paced)),
        row("paced lag half-way / end (s)", pair("lag_mid_s", "lag_end_s", paced)),
        row("paced others' cores", each("others_cores", "{:.2f}", paced)),
    ]
    for key in keys:
        # Each run beside the same repetition's ``off`` run: the pair the box's load hit
        # most alike (compare their others' cores).
        cells = []
        for run, off in zip(result["runs"][key], result["runs"]["off"], strict=True):
            rate, base = run.get("delivered_per_s"), off.get("delivered_per_s")
            vs = f" ({rate / base - 1:+.1%})" if rate and base and key != "off" else ""
            cpu, others = _cell(run.get("server_cpu_us")), _cell(run.get("others_cores"), "{:.2f}")
            cells.append(f"{_cell(rate)}{vs} {cpu} us [{others}]")
        head = f"  {modes[key]['label']}: delivered/s, CPU/event [others' cores] by run: "
        lines.append(head + ", ".join(cells))
    for key in archived:
        changes = [figures[key].get(f"{k}_per_s_change") for k in ("accepted", "delivered")]
        met = all(c is not None and c >= -RATE_DROP_TARGET for c in changes)
        verdict = "met" if met else "MISSED"
        lines.append(
            f"  target rates within {RATE_DROP_TARGET:.0%}, {modes[key]['label']}: {verdict}"
        )
    for key in keys:
        count = result["runs"][key][-1]["delivered"]
        kinds = sorted((figures[key].get("redis_by_kind") or {}).items())
        text = ", ".join(f"{kind} {v['bytes'] / count:.0f} ({v['keys']} keys)" for kind, v in kinds)
        lines.append(f"  Redis B/event by key kind, {modes[key]['label']}: {text}")
    for key in archived:
        tables = sorted((figures[key].get("archive_by_table") or {}).items())
        text = ", ".join(f"{k} {v:.0f}" for k, v in tables)
        lines.append(f"  {modes[key]['label']} archive B/event by table, indexes included: {text}")
    lines.append(
        f"  archive_rate counts records, an event and its delivery 2: {result['pace']:,}/s keeps "
        f"up with {result['pace'] // 2:,} events/s; lag: how far the oldest record in Redis is "
        "past the hot window (a caught-up archiver waits 5 s between passes)"
    )
    for name, key in (("sqlite", "search"), ("postgresql", "search_pg")):
        found = result.get(key)
        if not found:
            continue
        times = ", ".join(f"{k} {v} ms" for k, v in found["search_ms"].items())
        lines.append(
            f"  {name}: search over {found['deliveries']:,} archived deliveries: {times} "
            f"(target < {SEARCH_MS_TARGET:.0f} ms); written in {found['build_s']} s "
            f"({found['write_rate']:,}/s events + deliveries), "
            f"{found['bytes_per_delivery']} B per event + delivery on disk"
        )
    return "\n".join(lines)
