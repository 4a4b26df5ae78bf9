"""Tocsin on a real Redis Cluster: 3 masters and 3 replicas on loopback
(bench/cluster.py), real ``tocsin serve`` processes, a ledger receiver.

The failover test kills a master and leaves the cluster changed, so it comes last and
the cluster is this module's alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.cluster import LocalCluster
from gateway.keys import ROUTER_GROUP, Layout
from gateway.redis_server import free_port

from .conftest import make_event
from .procs import Ledger, gateways, ledger_receiver, produce, run_to_end
from .test_chaos import Hook, chaos_conf, ledger_figures, log_problems, wait_for

SHARDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield local
    local.stop()


def cluster_conf(directory: Path, cluster: LocalCluster, hooks: dict[str, Hook], **kw: Any) -> Path:
    """The chaos tests' conf, on the cluster: 3 shards, a 202 only once a replica has
    the event (``wait_replicas = 1``)."""
    prefix = kw.pop("prefix")
    path = chaos_conf(directory, cluster.url, hooks, **kw)
    text = path.read_text().replace(
        f'url = "{cluster.url}"',
        f'url = "{cluster.url}"\ncluster = true\nshards = {SHARDS}\n'
        f'wait_replicas = 1\nprefix = "{prefix}"',
    )
    path.write_text(text)
    return path


def shard_entries(cluster: LocalCluster, prefix: str) -> list[list[dict[str, Any]]]:
    """Each shard's events stream, decoded, in stream order."""
    out = []
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        for shard in Layout(prefix, SHARDS, cluster=True).shards:
            out.append([json.loads(f[b"e"]) for _, f in client.xrange(shard.events)])
    finally:
        client.close()
    return out


def customers_events(customers: int, per_customer: int) -> list[dict[str, Any]]:
    """Customer ``c``'s events at positions ``c, c + customers...``: with ``customers``
    producers (``produce`` gives producer ``i`` every ``i``-th event), one producer
    posts one customer's events, one after the other."""
    return [
        make_event(
            customer={"id": f"cus_{c}", "email": f"c{c}@example.com", "locale": "fr"},
            data={"amount": 100 * n + c, "currency": "EUR", "n": n},
        )
        for n in range(per_customer)
        for c in range(customers)
    ]


async def test_events_spread_over_shards_in_customer_order_and_delivered_once(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    """Two gateways on a 3-master cluster: every acknowledged event delivered once;
    each customer's events all in one shard's stream, in the order they were posted;
    every shard used; the admin commands read across shards."""
    customers, per_customer = 12, 25
    async with ledger_receiver(free_port()) as rec, gateways(tmp_path) as procs:
        hooks = {"hook": Hook(rec.url)}
        serves = await procs.start(
            *(
                (name, cluster_conf(tmp_path / name, cluster, hooks, sender=name, prefix="t1"),
                 (), free_port())
                for name in ("a", "b")
            )
        )  # fmt: skip
        events = customers_events(customers, per_customer)
        ledger = Ledger()
        await produce(ledger, [s.url for s in serves], events, producers=customers, timeout=60)
        await rec.wait_delivered(set(ledger.acked), timeout=60)
        conf = tmp_path / "a" / "tocsin.toml"
        listed = await run_to_end(
            ["deliveries", "--conf", str(conf), "--limit", "1000"], tmp_path, "deliveries"
        )
        endpoints = await run_to_end(["endpoints", "--conf", str(conf)], tmp_path, "endpoints")
        # A reload reaches every process on a cluster too, where the client has no
        # pub/sub: each process polls the generation counter (gateway/reload/bus.py).
        before = await _processes(tmp_path, conf, "--status")
        with conf.open("a") as f:
            f.write("# edited: a new conf hash for gateway a\n")
        after = await _processes(tmp_path, conf, "--wait", "20")
        assert await procs.terminate(*serves) == [0, 0]

    figures = ledger_figures(ledger, rec)
    assert figures["lost"] == 0 and len(ledger.acked) == len(events), figures
    assert rec.duplicates() == {}
    # The shards' tags put them on the three masters, one each.
    shards = Layout("t1", SHARDS, cluster=True).shards
    assert len({cluster.master_of(shard.events).port for shard in shards}) == SHARDS
    streams = shard_entries(cluster, "t1")
    assert all(streams), [len(s) for s in streams]  # every shard took some customers
    for c in range(customers):
        holding = [
            i
            for i, stream in enumerate(streams)
            if any(e["customer"]["id"] == f"cus_{c}" for e in stream)
        ]
        assert len(holding) == 1, (c, holding)
        order = [e["data"]["n"] for e in streams[holding[0]] if e["customer"]["id"] == f"cus_{c}"]
        assert order == list(range(per_customer)), (c, order)
    # The listing merges the three shards' histories: every delivery shows once.
    assert listed.popen.returncode == 0, listed.stderr
    assert sum(line.count(" delivered ") for line in listed.stdout.splitlines()) == len(events)
    assert endpoints.popen.returncode == 0 and "hook" in endpoints.stdout, endpoints.stderr
    for serve in serves:
        assert log_problems(serve) == [], serve.proc.stderr[-3000:]
    assert len(before) == len(after) == 2 and all(p["answered"] for p in after), after
    hashes = {p["consumer"]: p["conf_hash"] for p in before}
    changed = [p["consumer"] for p in after if p["conf_hash"] != hashes[p["consumer"]]]
    # (``last_reload_ok`` is left out when true, as ``ProcessConf`` omits defaults.)
    assert len(changed) == 1 and all(p.get("last_reload_ok", True) for p in after), after
    assert all(p["generation"] >= 1 and not p.get("problems") for p in after), after


async def _processes(tmp_path: Path, conf: Path, *args: str) -> list[dict[str, Any]]:
    """``tocsin reload ARGS --json``: one object per gateway process."""
    done = await run_to_end(["reload", "--conf", str(conf), "--json", *args], tmp_path, "reload")
    assert done.popen.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


async def test_a_master_killed_under_load_loses_no_acknowledged_event(
    tmp_path: Path, cluster: LocalCluster, figures: Any
) -> None:
    """SIGKILL the master serving a shard while producers post: its replica takes over
    (cluster-node-timeout 1 s), and every event that got a 2xx is delivered; events
    in flight at the kill are answered 503 and posted again by their producer."""
    total = 1500
    async with ledger_receiver(free_port()) as rec, gateways(tmp_path) as procs:
        hooks = {"hook": Hook(rec.url)}
        conf = cluster_conf(tmp_path / "g", cluster, hooks, sender="g", prefix="t2")
        [serve] = await procs.start(("g", conf, (), free_port()))
        events = [make_event(customer={"id": f"cus_{i % 50}"}) for i in range(total)]
        ledger = Ledger()
        producing = asyncio.create_task(
            produce(ledger, [serve.url], events, producers=20, timeout=90)
        )
        await wait_for(lambda: len(ledger.acked) >= total // 3, 30, "a third acknowledged")
        victim = cluster.master_of(Layout("t2", SHARDS, cluster=True).shards[0].events)
        acked_at_kill = len(ledger.acked)
        killed = time.monotonic()
        cluster.kill(victim)
        # In a thread: the receiver runs in this loop, and must keep answering.
        promoted = await asyncio.to_thread(cluster.wait_failover, victim)
        failover_s = time.monotonic() - killed
        # The lost host comes back, as the new master's replica: until then that
        # shard's events are refused (503, retried by the producers), never acknowledged
        # without a replica holding them.
        await asyncio.to_thread(cluster.restart, victim)
        replica_back_s = time.monotonic() - killed
        await producing
        last = await rec.wait_delivered(set(ledger.acked), timeout=90)
        all_delivered_s = last - killed
        assert await procs.terminate(serve) == [0]

    figures(
        **ledger_figures(ledger, rec),
        acked_at_kill=acked_at_kill,
        failover_s=round(failover_s, 2),
        replica_back_s=round(replica_back_s, 2),
        all_delivered_after_kill_s=round(all_delivered_s, 2),
        promoted_port=promoted.port,
    )
    assert ledger.refused == {}
    assert set(ledger.acked) == {e["id"] for e in events}
    assert set(ledger.acked) <= rec.delivered_event_ids()
    assert rec.rejected == []
    # Redis errors are logged while the master is away; nothing may crash.
    assert log_problems(serve, errors_allowed=True) == [], serve.proc.stderr[-3000:]
    client = redis.RedisCluster(host="127.0.0.1", port=promoted.port)
    try:
        for shard in Layout("t2", SHARDS, cluster=True).shards:
            assert client.xpending(shard.events, ROUTER_GROUP)["pending"] == 0
    finally:
        client.close()
