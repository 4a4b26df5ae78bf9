"""The full-pipeline phase: intake, router, worker and sink at once, as users run it.

Beside each ``tocsin serve --processes P`` (P from ``--pipeline-processes``, default
``1,auto``; ``auto`` is what a bare ``tocsin serve`` runs), the same run measures a bare
reference pipeline of the same shape: ``bench.ceiling_intake`` (group-commit XADD)
and ``bench.ceiling_worker`` (XREADGROUP -> signed POST -> XACK), two processes, the
same redis-server, the same sink. Each side gets two loads:

- **saturating**: N pre-signed events (one id each) as fast as the intake takes them,
  C connections, from ``wrk -t1`` replaying them (a C program: far less CPU than
  Python for the same requests, so it takes less of the two cores it is measuring),
  or from ``bench.loadgen closed`` when wrk is absent (``--loadgen python`` forces it;
  the output says which one ran). *delivered/s* = events the sink got / (sink's last
  receipt - first request).
- **paced**: ``bench.loadgen paced`` at ``--rate`` (1,000) events/s for
  ``--latency-seconds``, each event stamped and signed at its send time;
  *intake->receipt p99* comes from the sink (wrk cannot pace).

Correctness, every run: every event acknowledged reaches the sink once (no duplicate
webhook-id or event id; wrk stops after N answers, so up to C-1 requests in flight
then may be delivered too, never twice), no bad signature (checked by the sink only
with ``--verify``; the detail says so), nothing left in Redis.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.redis_server import free_port
from gateway.signing import Signer
from gateway.supervisor.cores import usable_cores

from . import fullpipe_cluster
from .common import HOST, box_busy_seconds, encode, make_event
from .procs import cpu_seconds, tail, wait_http

PREFIX = "tocsin"
CHANNEL = "sink"
REF_STREAM = "bench:ref"
READY_LINE = "running roles:"
#: Target: the default ``tocsin serve`` (``--processes auto``) vs the bare reference.
RATIO_TARGET = 0.9
#: Target: ``tocsin serve`` vs saq's figure (another run: bench-peers/results.md).
SAQ_TARGET = 4.0
SAQ_PER_S = 1700.0
SAQ_SOURCE = "bench-peers/results.md 2026-11-25, saq c10/c64 N=5000-20000: ~1.7k/s"
P99_TARGET_MS = 5.0

#: Sends request i once, in order (NUL-separated in the file); after N answers writes
#: the wall time to STAMP (renamed into place: the orchestrator polls for it) and stops
#: the thread; the orchestrator then ends wrk (wrk's -d is only a bound).
WRK_SCRIPT = """
local requests, i, answered = {}, 0, 0
init = function(args)
  local data = io.open("REQUESTS", "rb"):read("*a")
  for one in string.gmatch(data, "([^%z]+)%z") do requests[#requests + 1] = one end
end
request = function()
  i = i + 1
  return requests[i] or requests[#requests]
end
response = function(status, headers, body)
  answered = answered + 1
  if answered == COUNT then
    local f = io.open("STAMP.part", "w")
    f:write(io.popen("date +%s.%N"):read("*l"))
    f:close()
    os.rename("STAMP.part", "STAMP")
    wrk.thread:stop()
  end
end
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pipeline", action="store_true", help="add the full-pipeline phase (bench/fullpipe.py)"
    )
    parser.add_argument(
        "--pipeline-only", action="store_true", help="run only the full-pipeline phase"
    )
    parser.add_argument(
        "--pipeline-processes",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=["1", "auto"],
        help="full pipeline: tocsin serve --processes values, comma-separated (default 1,auto)",
    )
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="full pipeline's saturating load: wrk if installed (auto), or bench.loadgen",
    )
    parser.add_argument(
        "--pipeline-cluster",
        action="store_true",
        help="full pipeline: also run tocsin serve on a local 3-master Redis Cluster "
        "(bench/fullpipe_cluster.py), and measure its idle polling",
    )
    parser.add_argument(
        "--cluster-replicas",
        type=lambda text: [int(r) for r in text.split(",") if r.strip()],
        default=[0],
        help="--pipeline-cluster: replicas per master, comma-separated, one cluster each "
        "(default 0; R > 0 also sets wait_replicas = R)",
    )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    said = (done.stdout + done.stderr).strip().splitlines()
    return said[0].split(" [")[0] if said else "wrk"  # "wrk debian/4.1.0-3+b2 [epoll] ..."


def write_requests(bench: Any, path: Path, prefix: str, count: int) -> None:
    """``count`` raw HTTP requests, each a distinct event signed for Tocsin's intake."""
    signer = Signer([bench.intake_secret])
    now = time.time()
    with path.open("wb") as out:
        for i in range(count):
            event_id = f"{prefix}{i:08d}"
            body = encode(make_event(event_id, now, i))
            headers = {**signer.headers(event_id, body), "Content-Type": "application/json"}
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            out.write(
                f"POST /v1/events HTTP/1.1\r\nHost: {HOST}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
                + b"\0"
            )


def wrk_load(bench: Any, url: str, prefix: str, n: int) -> dict[str, Any]:
    """wrk -t1 -c C until N answers (N + C distinct events prepared), then SIGINT."""
    conc = bench.args.concurrency
    raw, stamp = bench.tmp / f"{prefix}.bin", bench.tmp / f"{prefix}.stamp"
    write_requests(bench, raw, prefix, n + conc)
    script = bench.tmp / f"{prefix}.lua"
    lua = WRK_SCRIPT.replace("REQUESTS", str(raw)).replace("STAMP", str(stamp))
    script.write_text(lua.replace("COUNT", str(n)))
    argv = ["wrk", "-t1", f"-c{conc}", f"-d{bench.load_timeout:.0f}s", "-s", str(script), url]
    started = time.time()
    proc = bench.procs.start(f"wrk {prefix}", argv, log=bench.tmp / f"{prefix}.wrk", capture=True)
    while not stamp.exists() and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.05)  # the stamp's write, then the summary
    cpu = cpu_seconds(proc.pid)  # the thread has stopped: all wrk will spend on the load
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # wrk stops its clock and prints its summary
    out, _ = proc.communicate(timeout=30)
    bench.procs.stop(proc)
    text = out.decode(errors="replace")
    found = re.search(r"(\d+) requests in ", text)
    stamped = stamp.read_text().strip() if stamp.exists() else ""
    if found is None or not stamped or "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk: no N answers, or refused ones:\n{text}")
    ended = float(stamped)
    return {
        "accepted": int(found.group(1)),
        "sent_at_most": n + conc,
        "rate": round(n / (ended - started), 1),
        "t_start": started,
        "statuses": {"2xx": int(found.group(1))},
        "cpu_loop_s": cpu,
        "elapsed_s": round(ended - started, 4),
    }


class Side:
    """One pipeline under test: Tocsin with P processes, or the bare reference; on the
    single Redis, or on a local cluster (``store``)."""

    def __init__(
        self,
        bench: Any,
        name: str,
        processes: str | None,
        store: fullpipe_cluster.ClusterStore | None = None,
    ) -> None:
        self.bench, self.name, self.processes, self.store = bench, name, processes, store
        self.started: list[Any] = []
        self.url = ""

    def start(self, tag: str) -> None:
        bench = self.bench
        port = free_port()
        log = bench.tmp / f"{tag}.log"
        if self.processes is not None:
            conf = bench.conf if self.store is None else self.store.conf
            argv = ["serve", "--conf", str(conf), "--port", str(port)]
            argv += ["--log-level", "info", "--processes", self.processes]
            proc = bench.procs.python(tag, "gateway.cli", *argv, log=log)
            expected = usable_cores() if self.processes == "auto" else int(self.processes)
            deadline = time.monotonic() + 30
            while log.read_text(errors="replace").count(READY_LINE) < expected:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{tag}: not ready{tail(log)}")
                time.sleep(0.05)
            wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
            self.started = [proc]
        else:
            redis_url = bench.redis_server.url
            intake = bench.procs.python(
                f"{tag}-intake",
                "bench.ceiling_intake",
                *("--port", str(port), "--redis-url", redis_url, "--stream", REF_STREAM),
                log=log,
            )
            worker = bench.procs.python(
                f"{tag}-worker",
                "bench.ceiling_worker",
                *("--redis-url", redis_url, "--stream", REF_STREAM),
                *("--url", bench.sink_url("/hook"), "-c", str(bench.args.concurrency)),
                env=bench.env,
                log=bench.tmp / f"{tag}-worker.log",
            )
            wait_http(f"http://{HOST}:{port}/healthz", intake, log=log)
            self.started = [intake, worker]
        self.url = f"http://{HOST}:{port}/v1/events"

    def pids(self) -> dict[str, list[int]]:
        """Every process of this side's run: its own (with a supervisor's role
        processes), its Redis's (one, or every cluster node), the sink's, the bench's
        (it signs wrk's requests)."""
        bench = self.bench
        own = [proc.pid for proc in self.started]
        own += [c for pid in own for c in fullpipe_cluster.children(pid)]
        redis = self.store.pids() if self.store is not None else [bench.redis_pid()]
        return {"server": own, "redis": redis, "sink": [bench.sink.pid], "bench": [os.getpid()]}

    def command_counts(self) -> dict[str, int]:
        """Calls per Redis command so far, over every master this side writes to."""
        if self.store is not None:
            return self.store.command_counts()
        return fullpipe_cluster.command_counts([self.bench.redis])

    def stop(self) -> None:
        for proc in self.started:
            self.bench.procs.stop(proc, timeout=30.0)

    def left_in_redis(self) -> dict[str, int]:
        if self.store is not None:
            return self.store.left_in_redis()
        redis = self.bench.redis
        if self.processes is not None:
            return {
                "events": self.bench.unrouted(),
                "deliveries": redis.xlen(f"{PREFIX}:deliveries:{CHANNEL}"),
                "retries": redis.zcard(f"{PREFIX}:retries"),
                "dead": redis.xlen(f"{PREFIX}:dead"),
            }
        groups = redis.xinfo_groups(REF_STREAM) if redis.exists(REF_STREAM) else []
        pending = sum(int(g["pending"]) for g in groups)
        # Entries after the group's last-delivered-id (Redis 6.2 has no "lag").
        unread = sum(
            len(redis.xrange(REF_STREAM, min=f"({_text(g['last-delivered-id'])}", max="+"))
            for g in groups
        )
        redis.delete(REF_STREAM)
        return {"pending": pending, "unread": unread if groups else redis.xlen(REF_STREAM)}


def run_one(
    bench: Any,
    side: Side,
    load: str,
    tag: str,
    use_wrk: bool,
    *,
    n: int | None = None,
    seconds: float | None = None,
    started: Callable[[Side], None] | None = None,
    loaded: Callable[[Side], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One load on ``side``. ``n`` (saturating, default N) and ``seconds`` (paced, default
    ``--latency-seconds``) size it; ``started`` runs once the side is up, before the load,
    and ``loaded`` after the sink has everything, before the side stops (the archive
    phase times the archiver's catch-up there); what it returns is the run's ``after``."""
    n = bench.n if n is None else n
    seconds = bench.args.latency_seconds if seconds is None else seconds
    (side.store or bench).compact_aof()
    bench.sink_reset()
    side.start(tag)
    after: dict[str, Any] = {}
    if started is not None:
        started(side)
    commands0 = side.command_counts()
    pids = side.pids()
    cpu0 = {pid: cpu_seconds(pid) for group in pids.values() for pid in group}
    box0, wall0 = box_busy_seconds(), time.time()
    try:
        if load == "saturating" and use_wrk:
            sent = wrk_load(bench, side.url, f"{tag}_", n)
        elif load == "saturating":
            args = ("-n", str(n), "-c", str(bench.args.concurrency), "--id-prefix", tag)
            sent = bench.loadgen(side.url, "closed", *args)
            sent["sent_at_most"] = n
        else:
            rate = str(bench.args.rate)
            args = ("--rate", rate, "--duration", str(seconds), "--id-prefix", tag)
            sent = bench.loadgen(side.url, "paced", *args)
            sent["sent_at_most"] = sent["n"]
        accepted = sent["accepted"]
        deadline = time.monotonic() + bench.load_timeout
        while (stats := bench.sink_stats())["unique_event_ids"] < accepted:
            if time.monotonic() > deadline or any(p.poll() is not None for p in side.started):
                break
            time.sleep(0.02)
        box_busy, wall = box_busy_seconds() - box0, time.time() - wall0
        cpu = {"load": sent.get("cpu_loop_s") or 0.0}
        for group, members in pids.items():
            cpu[group] = 0.0
            for pid in members:
                start_cpu, end_cpu = cpu0[pid], cpu_seconds(pid)
                if start_cpu is not None and end_cpu is not None:
                    cpu[group] += end_cpu - start_cpu
        stats = bench.settle(accepted)
        commands = fullpipe_cluster.per_event(commands0, side.command_counts(), accepted)
        if loaded is not None:
            after = loaded(side)
    finally:
        side.stop()
    # Paced: no first-request time from the generator; the sink's first receipt instead.
    start = sent.get("t_start") or stats["first"] or 0.0
    elapsed = (stats["last"] or start) - start
    delivered = stats["unique_event_ids"]
    return {
        "side": side.name,
        "load": load,
        "sent": sent,
        "accepted": accepted,
        "accepted_per_s": sent.get("rate") or sent.get("achieved_rate"),
        "delivered": delivered,
        "delivered_per_s": round(delivered / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": stats["latency_ms"],
        "sink": stats,
        "left_in_redis": side.left_in_redis(),
        # Redis commands per accepted event, most frequent first (INFO commandstats).
        "redis_commands_per_event": commands,
        # The whole box (ours and anyone else's), from first request to last receipt.
        "busy_cores": round(box_busy / wall, 2),
        # Cores the box spent on anything but this run (other users of the machine).
        "others_cores": round(max(0.0, box_busy - sum(cpu.values())) / wall, 2),
        "cores": {group: round(seconds / wall, 2) for group, seconds in cpu.items()},
        # Per accepted event: what survives a busy box better than the rates above.
        "cpu_us_per_event": {
            group: round(seconds / max(1, accepted) * 1e6, 1) for group, seconds in cpu.items()
        },
        # The load generator's share of the two cores it loads (its timed loop only).
        "loadgen_cores": _share(sent.get("cpu_loop_s"), sent.get("elapsed_s")),
        "after": after,
    }


def phase_pipeline(bench: Any) -> dict[str, Any]:
    choice = bench.args.loadgen
    version = wrk_version() if choice != "python" else None
    if choice == "wrk" and version is None:
        raise RuntimeError("--loadgen wrk: wrk is not installed (apt install wrk)")
    use_wrk = version is not None
    generator = (
        f"{version} -t1 -c{bench.args.concurrency}, pre-signed requests (Lua replay)"
        if use_wrk
        else "bench.loadgen closed (Python, aiohttp)"
        + ("; wrk not found" if choice == "auto" else "; --loadgen python")
    )
    sides = [Side(bench, "reference", None)]
    sides += [Side(bench, f"tocsin -p {p}", p) for p in bench.args.pipeline_processes]
    runs = []
    for load in ("saturating", "paced"):
        for i, side in enumerate(sides):
            runs.append(run_one(bench, side, load, f"pipe{load[0]}{i}", use_wrk))
    result = {
        "load_generator": {"saturating": generator, "paced": "bench.loadgen paced (Python)"},
        "cores": usable_cores(),
        "verified_signatures": bool(bench.args.verify),
        "runs": runs,
    }
    if bench.args.pipeline_cluster:
        cluster, result["cluster"] = fullpipe_cluster.cluster_runs(bench, use_wrk)
        runs += cluster
    return result


def _share(cpu_s: float | None, seconds: float | None) -> float | None:
    return round(cpu_s / seconds, 2) if cpu_s is not None and seconds else None


def _find(result: dict[str, Any], side: str, load: str) -> dict[str, Any] | None:
    return next(
        (r for r in result["runs"] if r["side"] == side and r["load"] == load),
        None,
    )


def checks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for run in result["runs"]:
        sink, left = run["sink"], run["left_in_redis"]
        accepted, most = run["accepted"], run["sent"]["sent_at_most"]
        expected_all = run["sent"].get("n", accepted)
        ok = (
            accepted <= run["delivered"] <= most
            and sink["count"] == sink["unique_webhook_ids"] == run["delivered"]
            and sink["duplicate_webhook_ids"] == sink["duplicate_event_ids"] == 0
            and sink["bad_signature"] == 0
            and accepted == expected_all
            and not any(left.values())
        )
        signatures = "verified" if result["verified_signatures"] else "NOT verified (--verify)"
        out[f"pipeline_{run['load']}_{run['side'].replace(' ', '')}"] = {
            "ok": bool(ok),
            "detail": f"{accepted} acknowledged, {run['delivered']} delivered "
            f"(at most {most} sent), duplicates {sink['duplicate_webhook_ids']}/"
            f"{sink['duplicate_event_ids']}, bad signatures {sink['bad_signature']} "
            f"({signatures}), left in Redis {left}",
        }
    return out


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ref = _find(result, "reference", "saturating")
    default = _find(result, "tocsin -p auto", "saturating")
    paced = _find(result, "tocsin -p auto", "paced")
    out: dict[str, dict[str, Any]] = {}
    if default is not None and ref is not None:
        a, b = default["delivered_per_s"], ref["delivered_per_s"]
        value = round(a / b, 3) if a and b else None
        out["pipeline_ratio"] = {
            "value": value,
            "target": f">= {RATIO_TARGET}",
            "met": value is not None and value >= RATIO_TARGET,
        }
    if default is not None:
        value = round((default["delivered_per_s"] or 0) / SAQ_PER_S, 2)
        out["pipeline_vs_saq"] = {
            "value": value,
            "target": f">= {SAQ_TARGET:g} (saq: another run)",
            "met": value >= SAQ_TARGET,
        }
    if paced is not None:
        p99 = paced["latency_ms"]["p99"]
        out["pipeline_p99_ms"] = {
            "value": p99,
            "target": f"<= {P99_TARGET_MS:g} at {paced['sent']['rate_offered']:g}/s",
            "met": p99 is not None and p99 <= P99_TARGET_MS,
        }
    return out


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(result: dict[str, Any], tg: dict[str, dict[str, Any]]) -> str:
    ref = _find(result, "reference", "saturating")
    ref_rate = ref["delivered_per_s"] if ref else None
    lines = [
        "",
        f"full pipeline (intake + router + worker + sink at once, {result['cores']} cores):",
        f"  saturating load: {result['load_generator']['saturating']}",
        f"  paced load: {result['load_generator']['paced']}",
        f"  {'side':20} {'load':11} {'accepted/s':>10} {'delivered/s':>11} {'x ref':>6} "
        f"{'x saq':>6} {'p50 / p99 ms':>16} {'busy cores':>10} {'others':>6} {'load gen':>8}",
    ]
    for run in result["runs"]:
        rate = run["delivered_per_s"]
        vs_ref = _n(rate / ref_rate, 2) if rate and ref_rate else "-"
        vs_saq = _n(rate / SAQ_PER_S, 2) if rate and run["load"] == "saturating" else ""
        lat = run["latency_ms"]
        ms = f"{_n(lat.get('p50'), 2)} / {_n(lat.get('p99'), 2)}"
        lines.append(
            f"  {run['side']:20} {run['load']:11} {_n(run['accepted_per_s']):>10} "
            f"{_n(rate):>11} {vs_ref if run['load'] == 'saturating' else '':>6} "
            f"{vs_saq:>6} {ms:>16} {_n(run['busy_cores'], 2):>10} "
            f"{_n(run['others_cores'], 2):>6} {_n(run['loadgen_cores'], 2):>8}"
        )
    lines += fullpipe_cluster.table_lines(result)
    for name, t in tg.items():
        verdict = "met" if t["met"] else "MISSED"
        lines.append(f"  target {name}: {t['value']} ({t['target']}) {verdict}")
    lines.append(f"  saq figure: {SAQ_SOURCE} (another run, same box; not re-measured)")
    lines.append(
        "  saturating p50/p99 is intake->receipt under a backlog (queueing), not latency at a load;"
        " busy cores: the whole box; others: its cores not spent on this run (other users);"
        " load gen: the generator's cores while it sent"
    )
    return "\n".join(lines)
