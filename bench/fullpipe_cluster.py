"""The full pipeline on a local 3-master Redis Cluster (``--pipeline-cluster``).

Issue #15 asks for the pipeline figure "on a 3-shard local cluster" too. Beside the
single-Redis sides of ``bench/fullpipe.py``, measured in the same run, each
``--cluster-replicas R`` (default 0; ``0,1`` for both) starts a fresh cluster of 3
masters and R replicas each (``bench.cluster.LocalCluster``, same redis-server binary
and ``--appendfsync`` as the single Redis), and runs every ``tocsin serve --processes
P`` of ``--pipeline-processes`` on it, saturating then paced, with the same checks. Its
conf is the single-Redis one with ``cluster = true``, ``shards = 3`` and
``wait_replicas = R`` (a 202 only once R replicas hold the event).

The reference (bare intake + worker on one stream) stays on the single Redis: one
stream is one slot, one master, so on a cluster it would measure one node.

Then the idle cost of the cluster worker's polling: ``tocsin serve`` (``--processes
auto``) with nothing to do, on the R=0 cluster and on the single Redis; the commands per
second its Redis answered (``INFO commandstats``, every master, over ``IDLE_SECONDS``,
less the bench's own ``INFO``) and the gateway processes' CPU.
"""

from __future__ import annotations

import atexit
import contextlib
import time
from pathlib import Path
from typing import Any

import redis

from gateway.keys import ROUTER_GROUP, Layout

from .cluster import LocalCluster
from .procs import cpu_seconds, wait_http

PREFIX = "tocsin"
CHANNEL = "sink"
MASTERS = 3
SHARDS = 3
#: How long the idle gateway is watched (the brief's 10 s), after IDLE_SETTLE_S of rest.
IDLE_SECONDS = 10.0
IDLE_SETTLE_S = 2.0


def unrouted(client: Any, key: str) -> int:
    """Entries of an events stream the router group has not acknowledged (routed ones
    stay in the stream, kept for replay, so its length counts them too)."""
    if not client.exists(key):
        return 0
    groups = client.xinfo_groups(key)
    router = next((g for g in groups if _text(g["name"]) == ROUTER_GROUP), None)
    if router is None:
        return int(client.xlen(key))
    unread, start = 0, f"({_text(router['last-delivered-id'])}"
    while page := client.xrange(key, min=start, max="+", count=1000):
        unread += len(page)
        start = "(" + _text(page[-1][0])
    return unread + int(router["pending"])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ClusterStore:
    """A local cluster for the cluster sides: its conf, AOF compaction, what is left."""

    def __init__(self, bench: Any, replicas: int) -> None:
        self.replicas = replicas
        self.local = LocalCluster(
            bench.tmp / f"cluster-r{replicas}",
            masters=MASTERS,
            replicas=replicas,
            appendfsync=bench.args.appendfsync,
            die_with_parent=True,
        )
        atexit.register(self.stop)  # nodes are not bench.procs children
        self.local.start()
        self.masters = self.local.nodes[:MASTERS]  # no failover here: the first ones
        self.client = redis.RedisCluster(
            host="127.0.0.1", port=self.masters[0].port, decode_responses=True
        )
        self.layout = Layout(PREFIX, SHARDS, cluster=True)
        self.conf = bench.tmp / f"tocsin-cluster-r{replicas}.toml"
        assert bench.redis_server is not None
        single = f'url = "{bench.redis_server.url}"'
        text = bench.conf.read_text()
        assert single in text, "the generated conf changed: its url line is not found"
        self.conf.write_text(
            text.replace(
                single,
                f'url = "{self.local.url}"\ncluster = true\nshards = {SHARDS}\n'
                f"wait_replicas = {replicas}",
            )
        )

    def describe(self) -> dict[str, Any]:
        info = self.masters[0].client().info("server")
        return {
            "masters": MASTERS,
            "replicas_per_master": self.replicas,
            "shards": SHARDS,
            "wait_replicas": self.replicas,
            "redis_version": info.get("redis_version"),
        }

    def compact_aof(self, timeout: float = 60.0) -> None:
        """Every node's AOF rewritten before a measurement, as the single Redis's is
        (``Bench.compact_aof`` says why)."""
        deadline = time.monotonic() + timeout
        nodes = [node.client() for node in self.local.nodes]
        for client in nodes:
            _await_rewrite(client, deadline)
            client.bgrewriteaof()
        for client in nodes:
            _await_rewrite(client, deadline)
            client.close()

    def left_in_redis(self) -> dict[str, int]:
        shards = self.layout.shards
        return {
            "events": sum(unrouted(self.client, s.events) for s in shards),
            "deliveries": sum(self.client.xlen(s.deliveries(CHANNEL)) for s in shards),
            "retries": sum(self.client.zcard(s.retries) for s in shards),
            "dead": sum(self.client.xlen(s.dead) for s in shards),
        }

    def pids(self) -> list[int]:
        return [n.process.pid for n in self.local.nodes if n.process is not None]

    def command_counts(self) -> dict[str, int]:
        clients = [node.client() for node in self.masters]
        try:
            return command_counts(clients)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.local.stop()


def _await_rewrite(client: redis.Redis, deadline: float) -> None:
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.02)
    raise RuntimeError("the AOF rewrite did not finish in time")


def command_counts(clients: list[Any]) -> dict[str, int]:
    """Calls per command, summed over ``clients``' servers."""
    out: dict[str, int] = {}
    for client in clients:
        for name, stat in client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            out[command] = out.get(command, 0) + int(stat["calls"])
    return out


def per_event(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, float]:
    """Calls per event of each command between two ``command_counts``, the bench's own
    ``INFO`` left out; the eight most frequent, and ``total``."""
    delta = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
    delta = {k: v for k, v in delta.items() if v > 0}
    top = sorted(delta.items(), key=lambda kv: -kv[1])[:8]
    out = {"total": round(sum(delta.values()) / max(1, events), 2)}
    out.update({k: round(v / max(1, events), 2) for k, v in top})
    return out


def children(pid: int) -> list[int]:
    """``pid``'s child processes (a supervisor's role processes)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children."""
    return sum(cpu_seconds(p) or 0.0 for p in [pid, *children(pid)])


def idle_cost(bench: Any, conf: Path, urls: list[str], tag: str) -> dict[str, Any]:
    """``tocsin serve`` (``--processes auto``) with no traffic: what it asks of Redis
    (``urls``: every master) and of the CPU per second."""
    from gateway.redis_server import free_port  # noqa: PLC0415

    from .common import HOST  # noqa: PLC0415
    from .fullpipe import READY_LINE  # noqa: PLC0415 - fullpipe imports this module

    clients = [redis.Redis.from_url(url, decode_responses=True) for url in urls]
    port = free_port()
    log = bench.tmp / f"{tag}.log"
    argv = ["serve", "--conf", str(conf), "--port", str(port), "--processes", "auto"]
    proc = bench.procs.python(tag, "gateway.cli", *argv, "--log-level", "info", log=log)
    try:
        wait_http(f"http://{HOST}:{port}/readyz", proc, log=log)
        deadline = time.monotonic() + 30
        while log.read_text(errors="replace").count(READY_LINE) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tag}: not ready")
            time.sleep(0.05)
        time.sleep(IDLE_SETTLE_S)  # start-up reads (pending entries, groups) are over
        before, cpu0, t0 = command_counts(clients), _tree_cpu(proc.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        after, cpu1, t1 = command_counts(clients), _tree_cpu(proc.pid), time.monotonic()
    finally:
        bench.procs.stop(proc, timeout=30.0)
        for client in clients:
            client.close()
    seconds = t1 - t0
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    delta["info"] = delta.get("info", 0) - len(clients)  # the bench's own first INFO
    delta = {k: v for k, v in delta.items() if v > 0}
    return {
        "seconds": round(seconds, 2),
        "masters": len(urls),
        "commands_per_s": round(sum(delta.values()) / seconds, 1),
        "by_command_per_s": {
            k: round(v / seconds, 1) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
        },
        "gateway_cores": round((cpu1 - cpu0) / seconds, 3),
    }


def cluster_runs(bench: Any, use_wrk: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every ``--cluster-replicas`` setting's runs, and the clusters' description with
    the idle measurements."""
    from .fullpipe import Side, run_one  # noqa: PLC0415 - fullpipe imports this module

    runs: list[dict[str, Any]] = []
    about: dict[str, Any] = {"clusters": [], "idle": {}}
    for replicas in bench.args.cluster_replicas:
        store = ClusterStore(bench, replicas)
        try:
            about["clusters"].append(store.describe())
            label = "cluster" if replicas == 0 else f"cluster+{replicas}r"
            sides = [
                Side(bench, f"{label} -p {p}", p, store) for p in bench.args.pipeline_processes
            ]
            for load in ("saturating", "paced"):
                for i, side in enumerate(sides):
                    tag = f"clu{replicas}{load[0]}{i}"
                    runs.append(run_one(bench, side, load, tag, use_wrk))
            if replicas == 0:
                urls = [node.url for node in store.masters]
                about["idle"]["cluster"] = idle_cost(bench, store.conf, urls, "idle-cluster")
        finally:
            store.stop()
    if about["clusters"] and "cluster" in about["idle"]:
        assert bench.redis_server is not None
        single = idle_cost(bench, bench.conf, [bench.redis_server.url], "idle-single")
        about["idle"]["single"] = single
    return runs, about


def table_lines(result: dict[str, Any]) -> list[str]:
    """Cluster vs single Redis (same ``-p``), and the idle cost."""
    lines = []
    by = {(r["side"], r["load"]): r for r in result["runs"]}
    for (side, load), run in by.items():
        if not side.startswith("cluster") or load != "saturating":
            continue
        single = by.get(("tocsin " + side.split(" ", 1)[1], "saturating"))
        if single and run["delivered_per_s"] and single["delivered_per_s"]:
            ratio = run["delivered_per_s"] / single["delivered_per_s"]
            lines.append(f"  {side}: {ratio:.2f}x the single Redis's delivered/s (same -p)")
    for run in result["runs"]:
        mix = dict(run.get("redis_commands_per_event") or {})
        if run["load"] != "saturating" or run["side"] == "reference" or not mix:
            continue
        total = mix.pop("total")
        top = ", ".join(f"{k} {v:g}" for k, v in list(mix.items())[:5])
        lines.append(f"  {run['side']}: {total:g} Redis commands per event ({top})")
        if cpu := run.get("cpu_us_per_event"):
            each = ", ".join(f"{k} {v:,.0f}" for k, v in cpu.items())
            lines.append(f"  {run['side']}: CPU µs per event: {each}")
    for name, idle in result.get("cluster", {}).get("idle", {}).items():
        top = ", ".join(f"{k} {v:g}" for k, v in list(idle["by_command_per_s"].items())[:4])
        lines.append(
            f"  idle tocsin serve -p auto on {name} ({idle['masters']} master(s), "
            f"{idle['seconds']:g} s): {idle['commands_per_s']:,.0f} Redis commands/s "
            f"({top}), {idle['gateway_cores']:.3f} gateway cores"
        )
    return lines
