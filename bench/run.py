"""The orchestrator: start redis-server, sink and gateways, run the three phases, report.

Phases (each Tocsin figure has a ceiling measured in the same run, same box):

1. intake    ``tocsin serve --role intake`` vs ``bench.ceiling_intake``, both loaded by
             ``bench.loadgen closed`` (C=64, N pre-signed events, all must get 202).
2. delivery  the N events of phase 1 wait in ``tocsin:events``; ``tocsin serve --role
             router --role worker`` delivers them to the sink, vs ``bench.sender`` posting
             N signed bodies to the same sink.
3. latency   ``tocsin serve`` (all roles) under ``bench.loadgen paced`` at R events/s;
             the sink measures receipt time - ``data.ts`` (stamped at send time).
4. faults    (``--faults``) the gateway SIGKILLed twice and redis-server once under a
             paced load; lost, sent twice, drain vs a fault-free drain (``bench.faults``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from gateway.redis_server import RedisServer, free_port
from gateway.signing import generate_secret

from . import archive, faults, fullpipe, report
from .args import find_py_spy, parse_args
from .common import HOST, box_busy_seconds, encode, make_event
from .procs import REPO, Procs, cpu_seconds, http_json, tail, wait_http

PREFIX = "tocsin"
CHANNEL = "sink"
CEILING_STREAM = "bench:ceiling"
RESULTS_DIR = REPO / "bench" / "results"
READY_LINE = "running roles:"


def _log_time(line: str) -> float | None:
    """The wall-clock time of a ``tocsin serve`` log line (``2026-01-02 10:11:12,345 ...``)."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n: int = args.events
        self.procs = Procs()
        self.tmp = Path(tempfile.mkdtemp(prefix="tocsin-bench-"))
        self.intake_secret = generate_secret()
        self.hook_secret = generate_secret()
        self.redis_server: RedisServer | None = None
        self.redis: redis.Redis | None = None
        self.sink: Any = None
        self.sink_port = 0
        self.conf = self.tmp / "tocsin.toml"
        #: Where each log's current run starts (see ``gateway``).
        self._log_from: dict[Path, int] = {}
        self.env = {
            "BENCH_INTAKE_SECRET": self.intake_secret,
            "BENCH_HOOK_SECRET": self.hook_secret,
        }
        # Bounds: the slowest plausible rate on this box is far above these floors.
        self.load_timeout = max(60.0, self.n / 200)

    # ------------------------------------------------------------------ infrastructure
    def start_infra(self) -> None:
        self.redis_server = RedisServer(
            self.tmp / "redis",
            port=free_port(),
            appendfsync=self.args.appendfsync,
            server=self.args.redis_server,
        )
        url = self.redis_server.start()
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.sink_port = free_port()
        sink_args = ["--port", str(self.sink_port)] + (["--verify"] if self.args.verify else [])
        sink_log = self.tmp / "sink.log"
        self.sink = self.procs.python("sink", "bench.sink", *sink_args, env=self.env, log=sink_log)
        wait_http(self.sink_url("/stats"), self.sink, log=sink_log)
        self.write_conf(url)

    def stop_infra(self) -> None:
        self.procs.stop_all()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.close()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.args.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def compact_aof(self, timeout: float = 60.0) -> None:
        """Rewrite the AOF now, and wait for it, before a measurement starts.

        Redis rewrites its AOF by itself once it has doubled; what triggers that is the
        bytes earlier phases wrote (the ceilings' included). Left alone, a rewrite (a
        fork plus a child writing the whole dataset) lands inside whichever measurement
        comes next and costs it a share of this box's two CPUs: across repetitions that
        swung the delivery ratio between 0.67 and 0.86. Compacting first gives every
        measurement, Tocsin's and the ceilings', the same clean start."""
        assert self.redis is not None
        deadline = time.monotonic() + timeout
        self._await_rewrite(deadline)  # one Redis started by itself must end first
        self.redis.bgrewriteaof()
        self._await_rewrite(deadline)

    def _await_rewrite(self, deadline: float) -> None:
        assert self.redis is not None
        while time.monotonic() < deadline:
            info = self.redis.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            time.sleep(0.02)
        raise RuntimeError("the AOF rewrite did not finish in time")

    def unrouted(self) -> int:
        """Events in the stream no router has acknowledged yet. (Routed events stay in
        the stream, kept for replay, so its length counts them too.)"""
        assert self.redis is not None
        key = f"{PREFIX}:events"
        if not self.redis.exists(key):
            return 0
        router = next(
            (g for g in self.redis.xinfo_groups(key) if g["name"] in (b"router", "router")), None
        )
        if router is None:
            return int(self.redis.xlen(key))
        last = router["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        unread, start = 0, f"({last}"
        while page := self.redis.xrange(key, min=start, max="+", count=1000):
            unread += len(page)
            last_id = page[-1][0]
            start = "(" + (last_id.decode() if isinstance(last_id, bytes) else last_id)
        return unread + int(router["pending"])

    def sink_url(self, path: str) -> str:
        return f"http://{HOST}:{self.sink_port}{path}"

    def sink_stats(self) -> dict[str, Any]:
        return http_json(self.sink_url("/stats"))[1]  # type: ignore[no-any-return]

    def sink_reset(self) -> None:
        http_json(self.sink_url("/reset"), method="POST")

    def write_conf(self, redis_url: str) -> None:
        (self.tmp / "templates").mkdir(exist_ok=True)
        concurrency = ""
        if self.args.worker_concurrency is not None:
            concurrency = f"concurrency = {self.args.worker_concurrency}"
        self.conf.write_text(
            textwrap.dedent(
                f"""\
                # Generated by python -m bench
                [gateway]
                data_dir = "var"
                templates = "templates"

                [intake]
                host = "{HOST}"
                secrets = ["{self.intake_secret}"]

                [redis]
                url = "{redis_url}"
                prefix = "{PREFIX}"

                [worker]
                shutdown_grace = "5s"
                {concurrency}

                [outbound]
                allow = ["127.0.0.0/8"]

                [channels.{CHANNEL}]
                type = "json_hook"
                url = "{self.sink_url("/hook")}"
                secret = "{self.hook_secret}"
                timeout = "10s"

                [rules.everything]
                events = ["*"]
                [[rules.everything.actions]]
                channel = "{CHANNEL}"
                """
            )
        )

    def gateway(self, name: str, *roles: str) -> tuple[Any, int, Path]:
        port = free_port()
        log = self.tmp / f"{name}.log"
        argv = ["serve", "--conf", str(self.conf), "--port", str(port), "--log-level", "info"]
        argv += ["--processes", self.args.processes]
        for role in roles:
            argv += ["--role", role]
        # Logs are appended: a name used again (the archive phase's repetitions) must not
        # let wait_ready_line find an earlier run's ready line, which once timed later
        # runs from the first one's start (rates 10-25x too low).
        self._log_from[log] = log.stat().st_size if log.exists() else 0
        proc = self.procs.python(name, "gateway.cli", *argv, log=log)
        return proc, port, log

    def profiler(self, proc: Any, name: str) -> Any:
        """``py-spy record`` attached to ``proc`` by PID (``--profile``), else ``None``."""
        if self.args.profile is None:
            return None
        py_spy = find_py_spy()
        assert py_spy is not None  # checked in parse_args
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile.resolve() / f"{name}.txt"
        argv = [py_spy, "record", "--pid", str(proc.pid), "--rate", "250", "--format", "raw"]
        spy = self.procs.start(
            f"py-spy {name}", [*argv, "--output", str(out)], log=self.tmp / "py-spy.log"
        )
        time.sleep(0.3)  # let it attach before the load starts
        return spy

    def stop_profiler(self, spy: Any) -> None:
        if spy is not None:
            self.procs.stop(spy, timeout=30.0, sig=signal.SIGINT)  # SIGINT: write, then exit

    def wait_ready_line(self, proc: Any, log: Path, timeout: float = 20.0) -> float:
        """Wall time at which the gateway logged that its roles run (from the log itself)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}{tail(log)}")
            if log.exists():
                with log.open("rb") as f:
                    f.seek(self._log_from.get(log, 0))
                    text = f.read().decode(errors="replace")
                for line in text.splitlines():
                    if READY_LINE in line:
                        return _log_time(line) or time.time()
            time.sleep(0.005)
        raise RuntimeError(f"gateway not ready within {timeout:.0f}s{tail(log)}")

    def wait_sink(self, count: int, timeout: float, proc: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        stats = self.sink_stats()
        while stats["count"] < count and time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.02)
            stats = self.sink_stats()
        return stats

    def settle(self, count: int) -> dict[str, Any]:
        """Wait a little longer: a duplicate delivery would show up now."""
        time.sleep(0.5)
        stats = self.sink_stats()
        stats["expected"] = count
        return stats

    def loadgen(self, url: str, *args: str) -> dict[str, Any]:
        proc = self.procs.python(
            "loadgen",
            "bench.loadgen",
            *args,
            "--url",
            url,
            "--max-seconds",
            str(self.load_timeout),
            env=self.env,
            log=self.tmp / "loadgen.log",
            capture=True,
        )
        return self.procs.result(proc, self.load_timeout + 30)

    def cpu(self, pids: dict[str, int]) -> dict[str, float | None]:
        return {name: cpu_seconds(pid) for name, pid in pids.items()}

    def redis_pid(self) -> int:
        assert self.redis_server is not None and self.redis_server.process is not None
        return self.redis_server.process.pid

    @staticmethod
    def cpu_delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict:
        out: dict[str, float | None] = {}
        for name, value in after.items():
            start = before.get(name)
            out[name] = None if value is None or start is None else round(value - start, 3)
        return out

    # ------------------------------------------------------------------ phases
    def phase_intake(self, rep: int) -> dict[str, Any]:
        n, conc = str(self.n), str(self.args.concurrency)
        assert self.redis is not None and self.redis_server is not None
        # Tocsin: intake role only, so the events stay in the stream for the delivery phase.
        proc, port, log = self.gateway(f"gateway-intake-{rep}", "intake")
        wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
        self.compact_aof()
        pids = {"gateway": proc.pid, "redis": self.redis_pid()}
        spy = self.profiler(proc, f"intake-{rep}")
        before = self.cpu(pids)
        url = f"http://{HOST}:{port}/v1/events"
        tocsin = self.loadgen(url, "closed", "-n", n, "-c", conc, "--id-prefix", f"evt{rep}_")
        self.stop_profiler(spy)
        cpu = {**self.cpu_delta(before, self.cpu(pids)), "loadgen": tocsin["cpu_loop_s"]}
        tocsin["cpu_s"] = cpu
        tocsin["box"] = _box(tocsin["box_busy_s"], cpu, tocsin["elapsed_s"])
        tocsin["server_cpu_us_per_event"] = _per_event(cpu["gateway"], self.n)
        self.procs.stop(proc)
        tocsin["unrouted"] = self.unrouted()

        # Ceiling: bare parse + group-commit XADD to the same redis-server.
        cport = free_port()
        clog = self.tmp / f"ceiling-intake-{rep}.log"
        ceiling_proc = self.procs.python(
            "ceiling-intake",
            "bench.ceiling_intake",
            *("--port", str(cport), "--redis-url", self.redis_server.url),
            *("--stream", CEILING_STREAM),
            log=clog,
        )
        wait_http(f"http://{HOST}:{cport}/healthz", ceiling_proc, log=clog)
        self.compact_aof()
        pids = {"ceiling": ceiling_proc.pid, "redis": self.redis_pid()}
        before = self.cpu(pids)
        url = f"http://{HOST}:{cport}/v1/events"
        ceiling = self.loadgen(url, "closed", "-n", n, "-c", conc, "--id-prefix", f"c{rep}_")
        cpu = {**self.cpu_delta(before, self.cpu(pids)), "loadgen": ceiling["cpu_loop_s"]}
        ceiling["cpu_s"] = cpu
        ceiling["box"] = _box(ceiling["box_busy_s"], cpu, ceiling["elapsed_s"])
        ceiling["server_cpu_us_per_event"] = _per_event(cpu["ceiling"], self.n)
        ceiling["group_commit"] = http_json(f"http://{HOST}:{cport}/stats")[1]
        self.procs.stop(ceiling_proc)
        ceiling["stream_length"] = self.redis.xlen(CEILING_STREAM)
        self.redis.delete(CEILING_STREAM)
        return {"tocsin": tocsin, "ceiling": ceiling, **report.ratio(tocsin, ceiling, "rate")}

    def phase_delivery(self, rep: int) -> dict[str, Any]:
        assert self.redis is not None
        waiting = self.unrouted()
        self.compact_aof()
        self.sink_reset()
        launched = time.time()
        # One process routes and delivers; --delivery-procs adds worker-only processes.
        gateways = [self.gateway(f"gateway-deliver-{rep}", "router", "worker")]
        for extra in range(1, self.args.delivery_procs):
            gateways.append(self.gateway(f"gateway-deliver-{rep}-w{extra}", "worker"))
        ready = min(self.wait_ready_line(proc, log) for proc, _, log in gateways)
        proc = gateways[0][0]
        spy = self.profiler(proc, f"delivery-{rep}")  # attaches late: profiled runs aren't figures
        pids = {"redis": self.redis_pid(), "sink": self.sink.pid}
        pids.update({f"gateway{i}": g[0].pid for i, g in enumerate(gateways)})
        before, box0 = self.cpu(pids), box_busy_seconds()
        stats = self.wait_sink(self.n, self.load_timeout, proc)
        after, box_busy = self.cpu(pids), box_busy_seconds() - box0
        self.stop_profiler(spy)
        stats = self.settle(self.n)
        for gateway, _, _ in gateways:
            self.procs.stop(gateway)
        cpu = self.cpu_delta(before, after)
        parts = [cpu.pop(f"gateway{i}") for i in range(len(gateways))]
        known = [p for p in parts if p is not None]
        cpu = {"gateway": round(sum(known), 3) if len(known) == len(parts) else None, **cpu}
        tocsin = self._delivery_figures(stats, ready)
        tocsin.update(
            {
                "events_waiting": waiting,
                "processes": len(gateways),
                "launched": launched,
                "startup_s": round(ready - launched, 3),
                "rate_incl_startup": _rate(self.n, stats, launched),
                "cpu_s": cpu,
                "box": _box(box_busy, cpu, tocsin["elapsed_s"]),
                "server_cpu_us_per_event": _per_event(cpu["gateway"], self.n),
                "left_in_redis": {
                    "events": self.unrouted(),
                    "deliveries": self.redis.xlen(f"{PREFIX}:deliveries:{CHANNEL}"),
                    "retries": self.redis.zcard(f"{PREFIX}:retries"),
                    "dead": self.redis.xlen(f"{PREFIX}:dead"),
                },
            }
        )

        self.sink_reset()
        pids = {"sink": self.sink.pid}
        before = self.cpu(pids)
        sender = self.procs.python(
            "sender",
            "bench.sender",
            *("--url", self.sink_url("/hook"), "-n", str(self.n)),
            *("-c", str(self.args.concurrency), "--max-seconds", str(self.load_timeout)),
            env=self.env,
            log=self.tmp / "sender.log",
            capture=True,
        )
        sent = self.procs.result(sender, self.load_timeout + 30)
        after = self.cpu(pids)
        stats = self.settle(self.n)
        ceiling = {**self._delivery_figures(stats, sent["t_start"]), "sender": sent}
        cpu = {**self.cpu_delta(before, after), "sender": sent["cpu_loop_s"]}
        ceiling["cpu_s"] = cpu
        ceiling["box"] = _box(sent["box_busy_s"], cpu, sent["elapsed_s"])
        ceiling["server_cpu_us_per_event"] = _per_event(cpu["sender"], self.n)
        return {"tocsin": tocsin, "ceiling": ceiling, **report.ratio(tocsin, ceiling, "rate")}

    def _delivery_figures(self, stats: dict[str, Any], start: float) -> dict[str, Any]:
        return {
            "delivered": stats["count"],
            "rate": _rate(self.n, stats, start),
            "elapsed_s": round(stats["last"] - start, 4) if stats["last"] else None,
            "sink": stats,
        }

    def phase_latency(self) -> dict[str, Any]:
        self.sink_reset()
        proc, port, log = self.gateway("gateway-all", "intake", "router", "worker")
        wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
        self.compact_aof()
        pids = {"gateway": proc.pid, "redis": self.redis_pid(), "sink": self.sink.pid}
        spy = self.profiler(proc, "latency")
        before = self.cpu(pids)
        load = self.loadgen(
            f"http://{HOST}:{port}/v1/events",
            "paced",
            *("--rate", str(self.args.rate), "--duration", str(self.args.latency_seconds)),
            *("--id-prefix", "lat_"),
        )
        self.wait_sink(load["accepted"], 30.0, proc)
        after = self.cpu(pids)
        self.stop_profiler(spy)
        stats = self.settle(load["accepted"])
        self.procs.stop(proc)
        cpu = {**self.cpu_delta(before, after), "loadgen": load["cpu_loop_s"]}
        return {
            "rate": self.args.rate,
            "seconds": self.args.latency_seconds,
            "load": load,
            "sink": stats,
            "latency_ms": stats["latency_ms"],
            "cpu_s": cpu,
            "box": _box(load["box_busy_s"], cpu, load["elapsed_s"]),
            "server_cpu_us_per_event": _per_event(cpu["gateway"], max(1, load["accepted"])),
        }


def _per_event(cpu_s: float | None, n: int) -> float | None:
    """CPU microseconds per event of the process doing the work: robust to a busy box."""
    return None if cpu_s is None else round(cpu_s / n * 1e6, 1)


def _box(busy_s: float, ours: dict[str, float | None], elapsed: float | None) -> dict[str, Any]:
    """Cores busy on the whole box during a measurement, ours, and everyone else's."""
    if not elapsed:
        return {}
    mine = sum(v for v in ours.values() if v is not None)
    return {
        "busy_cores": round(busy_s / elapsed, 2),
        "ours_cores": round(mine / elapsed, 2),
        "others_cores": round(max(0.0, busy_s - mine) / elapsed, 2),
    }


def _pick_median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The repetition whose ratio is the median (lower middle), plus every rep's ratio."""
    ratios = [r["ratio"] for r in runs]
    order = sorted(range(len(runs)), key=lambda i: (ratios[i] is None, ratios[i] or 0.0))
    chosen = order[(len(order) - 1) // 2]
    return {**runs[chosen], "ratios": ratios, "median_rep": chosen}


def _rate(n: int, stats: dict[str, Any], start: float) -> float | None:
    if stats["count"] < n or not stats["last"] or stats["last"] <= start:
        return None
    return round(n / (stats["last"] - start), 1)


def _meta(args: argparse.Namespace, redis_client: redis.Redis | None) -> dict[str, Any]:
    versions = {}
    for dist in ("tocsin", "aiohttp", "redis", "msgspec", "uvloop", "hiredis"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    server = {}
    if redis_client is not None:
        with contextlib.suppress(Exception):
            info = redis_client.info("server")
            server = {"redis_version": info.get("redis_version")}
            server.update({k: v for k, v in redis_client.config_get("append*").items()})
    return {
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "events": args.events,
        "quick": args.quick,
        "concurrency": args.concurrency,
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "machine": platform.platform(),
        "versions": versions,
        "redis": server,
        "sink_verifies": args.verify,
        "event_bytes": len(encode(make_event("evt_00000000", time.time()))),
        "reps": args.reps,
        "delivery_procs": args.delivery_procs,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bench = Bench(args)
    result: dict[str, Any] = {}
    started = time.monotonic()
    try:
        bench.start_infra()
        result["meta"] = _meta(args, bench.redis)
        only = args.latency_only or args.faults_only or args.pipeline_only or args.archive_only
        if not only:
            runs = []
            for rep in range(args.reps):
                intake = bench.phase_intake(rep)
                runs.append({"intake": intake, "delivery": bench.phase_delivery(rep)})
            result["intake"] = _pick_median([r["intake"] for r in runs])
            result["delivery"] = _pick_median([r["delivery"] for r in runs])
            result["runs"] = runs
        if not args.faults_only and not args.pipeline_only and not args.archive_only:
            result["latency"] = bench.phase_latency()
        if args.faults or args.faults_only:
            result["faults"] = faults.phase_faults(bench, args.fault_rate, args.fault_seconds)
        if args.pipeline or args.pipeline_only:
            result["pipeline"] = fullpipe.phase_pipeline(bench)
        if args.archive or args.archive_only:
            result["archive"] = archive.phase_archive(bench)
    finally:
        bench.stop_infra()
    result["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    result["checks"] = report.checks(result, args.events)
    result["targets"] = report.targets(result)
    if "archive" in result:
        result["checks"].update(archive.checks(result["archive"], args.events))
    if "pipeline" in result:
        result["checks"].update(fullpipe.checks(result["pipeline"]))
        result["targets"].update(fullpipe.targets(result["pipeline"]))
    result["peers"] = report.PEERS
    out = args.out or RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json(result))
    print(report.table(result))
    if "pipeline" in result:
        print(fullpipe.table(result["pipeline"], result["targets"]))
    if "archive" in result:
        print(archive.table(result["archive"]))
    shown = out.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else out
    print(f"\nresult file: {shown}")
    return 0 if all(c["ok"] for c in result["checks"].values()) else 1
