"""``GET /metrics``: values after known traffic through a real ``tocsin serve --processes 2``.

One gateway (two processes, one port, a real Redis) and one receiver whose paths answer
204, 500-then-204, 400 and 503 serve the whole module; the snapshot and the lease are
also checked directly against Redis.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.catalog import TYPES
from gateway.delivery import Attempt, Delivery, encode_delivery
from gateway.keys import WORKER_GROUP, Layout
from gateway.metrics import Known, Metrics, Poller, take_snapshot
from gateway.metrics.families import ARCHIVE_KINDS, ATTEMPT_CLASSES, attempt_class
from gateway.metrics.poller import lease_key, snapshot_key
from gateway.metrics.snapshot import DeadTally
from gateway.redis_server import RedisServer, free_port
from gateway.service import PROCESS_HEADER

from .conftest import make_event, signed_headers, write_conf
from .procs import Serve, run_tocsin, serving, tocsin_env, wait_http
from .procs import running as running_proc

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

CHANNELS = """
[channels.flaky]
type = "json_hook"
url = "{base}/flaky"
secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
[channels.flaky.delivery]
retry_schedule = ["0s", "1s"]
jitter = 0
[channels.bad]
type = "json_hook"
url = "{base}/bad"
secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
[channels.later]
type = "json_hook"
url = "{base}/later"
secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
[channels.later.delivery]
retry_schedule = ["0s", "1h"]
jitter = 0
[channels.idle]
type = "json_hook"
url = "{base}/ok"
secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"

[metrics]
port = {metrics_port}
refresh = "0.3s"

[scenarios.reminders]
trigger = {{ events = ["payment_request.created"] }}
key = "pr:{{{{ refs.payment_request_id }}}}"
[[scenarios.reminders.steps]]
name = "nudge"
after = "1h"
[[scenarios.reminders.steps.actions]]
channel = "idle"
"""

RULES = """
[rules.ok]
events = ["payment.succeeded"]
[[rules.ok.actions]]
channel = "hook"
[rules.flaky]
events = ["payment.captured"]
[[rules.flaky.actions]]
channel = "flaky"
[rules.bad]
events = ["payment.authorized"]
[[rules.bad.actions]]
channel = "bad"
[rules.later]
events = ["payment.canceled"]
[[rules.later.actions]]
channel = "later"
"""


@dataclass
class Scrape:
    pid: int
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    names: set[str] = field(default_factory=set)

    def get(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}"
        return self.samples[key]


async def scrape(url: str) -> Scrape:
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection: any process
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        pid = int(resp.headers[PROCESS_HEADER])
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return Scrape(pid, samples, {name for name, _ in samples})


@dataclass
class Running:
    gw: Serve
    metrics_port: int
    calls: dict[str, int]
    redis: Redis
    scrapes: list[Scrape] = field(default_factory=list)


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: Any) -> int:
    async with session.post(url + "/v1/events", data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def settle(url: str, done: Any, timeout: float = 20.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        last = await scrape(url)
        if done(last):
            return last
        if time.monotonic() > deadline:
            return last  # the assertions then say what is missing
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(redis_server: RedisServer) -> AsyncIterator[Running]:
    calls: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        calls[path] = calls.get(path, 0) + 1
        await request.read()
        status = {"ok": 204, "bad": 400, "later": 503}.get(path, 204)
        if path == "flaky":
            status = 500 if calls[path] == 1 else 204
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/{path}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    directory = Path(tempfile.mkdtemp(prefix="tocsin-metrics-", dir="/tmp"))
    metrics_port = free_port()
    conf = write_conf(
        directory,
        redis_url=redis_server.url,
        hook_url=base + "/ok",
        rules=RULES,
        extra=CHANNELS.format(base=base, metrics_port=metrics_port),
    )
    try:
        async with serving(conf, free_port(), directory, "metrics", "--processes", "2") as gw:
            await gw.proc.wait_output("running roles", stream="stderr")
            deadline = time.monotonic() + 30
            while gw.proc.stderr.count("running roles") < 2:
                assert time.monotonic() < deadline, gw.proc.stderr[-3000:]
                await asyncio.sleep(0.05)
            yield Running(gw, metrics_port, calls, client)
    finally:
        await client.aclose()
        await runner.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traffic(running: Running) -> Running:
    """Known traffic, each request on its own connection (spread over both processes)."""
    url = running.gw.url
    before = await scrape(url + "/metrics")
    running.scrapes.append(before)
    ok = [make_event(type="payment.succeeded") for _ in range(3)]
    sent = [
        *ok,
        ok[0],  # a duplicate
        make_event(type="payment.captured"),  # 500, then delivered on its retry
        make_event(type="payment.authorized"),  # 400: dead letter
        make_event(type="payment.canceled"),  # 503: retry in 1 h
        make_event(type="acme.custom_thing"),  # outside the catalog: "other", routed nowhere
        make_event(
            type="payment_request.created",
            refs={"payment_request_id": "pr_1", "invoice_ref": "FA-1"},
        ),
    ]
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for event in sent:
            body = json.dumps(event).encode()
            assert await post(session, url, body, signed_headers(body)) in (200, 202)
        body = json.dumps(make_event()).encode()
        bad_sig = signed_headers(body, secret="whsec_" + "A" * 32)
        assert await post(session, url, body, bad_sig) == 401
        assert await post(session, url, body, bad_sig) == 401
        assert await post(session, url, body, {"Content-Type": "text/plain"}) == 415
        broken = json.dumps(make_event(type="payment.succeeded", data={})).encode()
        assert await post(session, url, broken, signed_headers(broken)) == 400

    def done(s: Scrape) -> bool:
        return (
            s.get("tocsin_deliveries_total", channel="flaky", status="delivered") == 1
            and s.get("tocsin_queue_jobs", channel="later", state="retrying") == 1
            and s.get("tocsin_dead_letters", channel="bad") == 1
            and s.get("tocsin_scenario_instances_live", scenario="reminders") == 1
        )

    await settle(url + "/metrics", done)
    settled_at = time.time()  # the queue gauges then need a snapshot taken since
    running.scrapes.append(
        await settle(
            url + "/metrics",
            lambda s: s.get("tocsin_queue_snapshot_timestamp_seconds") > settled_at,
        )
    )
    for _ in range(8):  # more scrapes, on new connections: whichever process answers
        running.scrapes.append(await scrape(url + "/metrics"))
    running.scrapes.append(await scrape(f"http://127.0.0.1:{running.metrics_port}/metrics"))
    return running


async def test_counters_after_known_traffic_are_exact_in_every_process(traffic: Running):
    after = traffic.scrapes[1:]
    assert len({s.pid for s in after}) == 2, "both processes answered /metrics"
    expected = {
        ("tocsin_events_received_total", "events", "payment.succeeded", "accepted"): 3,
        ("tocsin_events_received_total", "events", "payment.succeeded", "duplicate"): 1,
        ("tocsin_events_received_total", "events", "payment.captured", "accepted"): 1,
        ("tocsin_events_received_total", "events", "other", "accepted"): 1,
        ("tocsin_events_received_total", "events", "refund.created", "accepted"): 0,
    }
    for s in after:
        for (name, source, type_, outcome), value in expected.items():
            assert s.get(name, source=source, type=type_, outcome=outcome) == value, (s.pid, name)
        refused = {"bad_signature": 2, "unsupported_media_type": 1, "invalid_event": 1}
        for reason in ("bad_signature", "unsupported_media_type", "invalid_event", "too_large"):
            got = s.get("tocsin_intake_refused_total", source="events", reason=reason)
            assert got == refused.get(reason, 0), (s.pid, reason)
        deliveries = {("hook", "delivered"): 3, ("flaky", "delivered"): 1, ("bad", "dead"): 1}
        for channel in ("hook", "flaky", "bad", "later", "idle"):
            for status in ("delivered", "dead", "cancelled"):
                got = s.get("tocsin_deliveries_total", channel=channel, status=status)
                assert got == deliveries.get((channel, status), 0), (s.pid, channel, status)
        attempts = {
            ("hook", "2xx"): 3,
            ("flaky", "5xx"): 1,
            ("flaky", "2xx"): 1,
            ("bad", "4xx"): 1,
            ("later", "5xx"): 1,
        }
        for channel in ("hook", "flaky", "bad", "later", "idle"):
            for outcome in ATTEMPT_CLASSES:
                got = s.get("tocsin_attempts_total", channel=channel, outcome=outcome)
                assert got == attempts.get((channel, outcome), 0), (s.pid, channel, outcome)
        assert s.get("tocsin_send_duration_seconds_count", channel="hook") == 3
        assert s.get("tocsin_send_duration_seconds_count", channel="flaky") == 2
        assert s.get("tocsin_send_duration_seconds_bucket", channel="hook", le="600.0") == 3
    assert traffic.calls == {"ok": 3, "flaky": 2, "bad": 1, "later": 1}


async def test_queue_gauges_come_from_one_snapshot(traffic: Running):
    s = traffic.scrapes[-1]  # through [metrics] port
    assert s.get("tocsin_queue_jobs", channel="later", state="retrying") == 1
    # A retry scheduled for later is not lag.
    assert s.get("tocsin_queue_oldest_due_age_seconds", channel="later") == 0
    assert s.get("tocsin_dead_letters", channel="bad") == 1
    assert s.get("tocsin_dead_letters", channel="hook") == 0
    for channel in ("hook", "flaky", "bad"):
        for state in ("ready", "in_flight", "retrying", "deferred"):
            assert s.get("tocsin_queue_jobs", channel=channel, state=state) == 0
    assert s.get("tocsin_scenario_instances_live", scenario="reminders") == 1
    assert s.get("tocsin_scenario_steps_due", scenario="reminders") == 0
    assert s.get("tocsin_redis_up") == 1
    assert time.time() - s.get("tocsin_queue_snapshot_timestamp_seconds") < 10
    # One process took it; the lease names it.
    holder = await traffic.redis.get("tocsin:metrics:lease")
    consumers = re.findall(r"consumer (\S+) running roles", traffic.gw.proc.stderr)
    assert len(consumers) == 2 and holder is not None and holder.decode() in consumers


async def test_conf_known_label_sets_start_at_zero(traffic: Running):
    before = traffic.scrapes[0]  # scraped before any traffic
    for type_ in (*TYPES, "other"):
        for outcome in ("accepted", "duplicate"):
            got = before.get(
                "tocsin_events_received_total", source="events", type=type_, outcome=outcome
            )
            assert got == 0
    for channel in ("hook", "flaky", "bad", "later", "idle"):
        assert before.get("tocsin_deliveries_total", channel=channel, status="delivered") == 0
        assert before.get("tocsin_send_duration_seconds_count", channel=channel) == 0
        assert before.get("tocsin_queue_jobs", channel=channel, state="ready") == 0
        assert before.get("tocsin_endpoint_disabled", channel=channel) == 0
    # The channel nothing was routed to still shows every series, at 0, after traffic.
    after = traffic.scrapes[-1]
    for outcome in ATTEMPT_CLASSES:
        assert after.get("tocsin_attempts_total", channel="idle", outcome=outcome) == 0
    # Per process (each reloads on its own): one sample per live pid, the same conf.
    for name, check in (
        ("tocsin_conf_reload_success", lambda v: v == 1),
        ("tocsin_conf_hash", lambda v: v > 0),
    ):
        values = [v for (n, labels), v in after.samples.items() if n == name]
        pids = [dict(labels)["pid"] for (n, labels), _ in after.samples.items() if n == name]
        assert len(values) == 2 and len(set(pids)) == 2 and all(map(check, values)), values
    assert not any('id="' in name for name in after.names)


async def test_dashboard_and_alert_rules_name_only_exported_metrics(traffic: Running):
    exported = set().union(*(s.names for s in traffic.scrapes))
    dashboard = json.loads((DEPLOY / "grafana" / "tocsin.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "tocsin-rules.yml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "TocsinQueueLagging",
        "TocsinDeadLettersGrowing",
        "TocsinEndpointDisabled",
        "TocsinIntakeRefusalsSpike",
        "TocsinNoEvents",
        "TocsinArchiveLagging",
    }
    for alert in alerts:
        assert alert["annotations"]["summary"], alert["alert"]
    named = {
        m
        for expr in [*exprs, *(a["expr"] for a in alerts)]
        for m in re.findall(r"tocsin_\w+", expr)
    }
    assert len(named) >= 10
    assert named <= exported, f"not exported: {sorted(named - exported)}"


# -- the snapshot and the lease, directly against Redis ------------------------------------


def parked(channel: str, outcome: str) -> bytes:
    delivery = Delivery(
        id=f"msg_{outcome}", event_id="evt_1", event_type="payment.succeeded", rule="r",
        channel=channel, event=b'{"data":{"outcome":"deferred"}}',  # type: ignore[arg-type]
        history=[Attempt(n=1, at=0, outcome=outcome, ms=1)],
    )  # fmt: skip
    return encode_delivery(delivery)


async def test_snapshot_sums_shards_and_tells_retrying_from_deferred(redis_server: RedisServer):
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    layout = Layout("snap", count=2)
    now = time.time()
    a, b = layout.shards
    try:
        for keys, outcome, due in ((a, "retry", now + 60), (b, "deferred", now + 60),
                                   (b, "retry", now - 30)):  # fmt: skip
            stream = keys.deliveries("hook")
            member = stream.encode() + b"\n" + parked("hook", outcome)
            await redis.zadd(keys.retries, {member + outcome.encode(): due * 1000})
        # Two jobs in shard a's stream, one read (in flight); the oldest entered 20 s ago.
        stream = a.deliveries("hook")
        await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
        await redis.xadd(stream, {"j": b"{}"}, id=f"{int((now - 20) * 1000)}-0")
        await redis.xadd(stream, {"j": b"{}"})
        await redis.xreadgroup(WORKER_GROUP, "c1", {stream: ">"}, count=1)
        for keys, channel in ((a, "hook"), (b, "hook"), (b, "sms")):
            await redis.xadd(keys.dead, {"channel": channel, "j": b"{}"})
        tallies: dict[str, DeadTally] = {}
        snap = await take_snapshot(redis, layout, ["hook", "sms"], tallies, now)
        hook = snap.channels["hook"]
        assert (hook.ready, hook.in_flight, hook.retrying, hook.deferred) == (2, 1, 1, 1)
        assert hook.dead == 2 and snap.channels["sms"].dead == 1
        # The due, unpromoted retry became due 30 s ago: older than the stream's 20 s.
        assert now - (hook.oldest_due or 0) == pytest.approx(30, abs=0.01)
        # A replay removes a dead letter: the tally recounts instead of drifting.
        [(first_id, _)] = await redis.xrange(b.dead, count=1)
        await redis.xdel(b.dead, first_id)
        await redis.xadd(a.dead, {"channel": "sms", "j": b"{}"})
        snap = await take_snapshot(redis, layout, ["hook", "sms"], tallies, now)
        assert (snap.channels["hook"].dead, snap.channels["sms"].dead) == (1, 2)
    finally:
        await redis.aclose()


async def test_one_process_takes_the_snapshot_and_another_takes_over(redis_server: RedisServer):
    redis = Redis.from_url(redis_server.url)
    await redis.flushall()
    layout = Layout("lease")
    known = Known(sources=("events",), channels=("hook",))
    first = Poller(redis, layout, Metrics(known), "p1", every=0.2)
    second = Poller(redis, layout, Metrics(known), "p2", every=0.2)
    try:
        await redis.xadd(layout.shards[0].deliveries("hook"), {"j": b"{}"})
        assert (await first.refresh()) is not None and first.leader
        got = await second.refresh()
        assert not second.leader
        assert got is not None and got.channels["hook"].ready == 1
        assert second.metrics.queue.labels("hook", "ready")._value.get() == 1
        await asyncio.sleep(0.7)  # the leader stopped renewing: its lease lapses
        await second.refresh()
        assert second.leader
        await first.refresh()
        assert not first.leader
    finally:
        await redis.aclose()


def exported(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One process's exposition (no multiprocess files), as a scrape reads it."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }


async def test_archive_lag_comes_from_the_snapshot_whoever_archives(redis_server: RedisServer):
    """No archiver runs here: the lag grows in the shared snapshot regardless, and every
    gateway exports the same max over shards, with its own conf's hot window."""
    redis = Redis.from_url(redis_server.url)
    layout = Layout("archlag", count=2)
    a, b = layout.shards
    hot, now = 3600.0, time.time()
    known = Known(sources=(), channels=("hook",), hot_window=hot)
    leader, reader = (Poller(redis, layout, Metrics(known), p, clock=lambda: now) for p in "ab")
    off = Metrics(replace(known, hot_window=None))  # [history] archive = "off"
    lag = "tocsin_history_archive_lag_seconds", ()
    try:
        assert (await leader.refresh()) is not None and leader.leader
        assert exported(leader.metrics)[lag] == 0  # no history at all
        await redis.xadd(a.events, {"e": b"{}"}, id=f"{int((now - 60) * 1000)}-0")
        await redis.zadd(a.history, {"msg_new": (now - 30) * 1000})
        await leader.refresh()
        assert exported(leader.metrics)[lag] == 0  # all within the hot window
        # Shard a: a record last updated 10 min past the window; shard b: an event 2 min.
        await redis.zadd(a.history, {"msg_old": (now - hot - 600) * 1000})
        await redis.xadd(b.events, {"e": b"{}"}, id=f"{int((now - hot - 120) * 1000)}-0")
        snapshot = await leader.refresh()
        assert snapshot is not None and (await reader.refresh()) is not None
        assert not reader.leader  # it read the leader's snapshot from Redis
        for metrics in (leader.metrics, reader.metrics):
            assert exported(metrics)[lag] == pytest.approx(600, abs=0.01)
        off.apply(snapshot)
        assert exported(off)[lag] == 0
        await redis.zrem(a.history, "msg_old")  # archived: the event is now the oldest
        await leader.refresh()
        assert exported(leader.metrics)[lag] == pytest.approx(120, abs=0.01)
    finally:
        shards = [k for keys in layout.shards for k in (keys.events, keys.history)]
        await redis.delete(*shards, lease_key(layout.prefix), snapshot_key(layout.prefix))
        await redis.aclose()


async def test_archived_records_are_counted_by_kind_after_a_flush():
    metrics = Metrics(Known(sources=(), channels=("hook",)))
    archived = "tocsin_history_archived_total"
    assert {exported(metrics)[archived, (("kind", k),)] for k in ARCHIVE_KINDS} == {0}
    for kind, count in (("events", 1000), ("events", 7), ("dead_letters", 2), ("deliveries", 0)):
        metrics.archived(kind, count)
    assert exported(metrics)[archived, (("kind", "events"),)] == 0  # not flushed yet
    metrics.flush()
    got = {k: exported(metrics)[archived, (("kind", k),)] for k in ARCHIVE_KINDS}
    assert got == {"events": 1007, "deliveries": 0, "dead_letters": 2}


async def test_attempt_classes():
    from gateway.errors import PermanentError, TransientError  # noqa: PLC0415

    assert attempt_class(None) == "2xx"
    assert attempt_class(TransientError("x", status=503)) == "5xx"
    assert attempt_class(PermanentError("x", status=550)) == "5xx"  # SMTP
    assert attempt_class(TimeoutError()) == "timeout"
    try:
        try:
            raise ConnectionRefusedError("refused")
        except OSError:
            raise TransientError("ClientConnectorError: refused") from None
    except TransientError as exc:
        assert attempt_class(exc) == "connect"
    assert attempt_class(PermanentError("template failed")) == "error"


async def test_a_process_without_intake_is_scraped_on_the_metrics_port(
    traffic: Running, redis_server: RedisServer
):
    """``--role router --role worker``: no intake port, ``[metrics] port`` instead."""
    directory = Path(tempfile.mkdtemp(prefix="tocsin-metrics-worker-", dir="/tmp"))
    port = free_port()
    conf = write_conf(
        directory,
        redis_url=redis_server.url,
        extra=f'\n[metrics]\nport = {port}\nrefresh = "0.3s"\n',
    )
    # Its own key prefix: it must not take the module gateway's jobs.
    conf.write_text(conf.read_text().replace("[redis]\n", '[redis]\nprefix = "solo"\n'))
    args = [
        "serve",
        "--conf",
        str(conf),
        "--processes",
        "1",
        "--role",
        "router",
        "--role",
        "worker",
    ]
    try:
        async with running_proc(args, directory, "worker-only") as proc:
            await proc.wait_output("running roles", 30, stream="stderr")
            await wait_http(f"http://127.0.0.1:{port}/metrics", proc)
            s = await scrape(f"http://127.0.0.1:{port}/metrics")
            assert s.pid == proc.pid
            assert s.get("tocsin_deliveries_total", channel="hook", status="delivered") == 0
            assert s.get("tocsin_queue_jobs", channel="hook", state="ready") == 0
            # Its files are under its own data dir: the module's gateway's are untouched.
            assert (directory / "var" / "metrics").is_dir()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_redis_down_and_connection_refusals_are_exported():
    """``tocsin_redis_up`` follows the refresh; the connection guard's counts are carried
    into ``tocsin_intake_connections_refused_total`` by increments."""
    from gateway.intake_guard import IntakeStats  # noqa: PLC0415

    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    stats = IntakeStats()
    metrics = Metrics(Known(sources=("events",), channels=("hook",)))
    poller = Poller(redis, Layout(), metrics, "p1", intake=stats)
    try:
        stats.refused_connections, stats.header_timeouts = 3, 1
        assert await poller.refresh() is None
        stats.refused_connections = 5
        await poller.refresh()
        metrics.flush()
        samples = exported(metrics)
        assert samples["tocsin_redis_up", ()] == 0
        refused = "tocsin_intake_connections_refused_total"
        assert samples[refused, (("reason", "max_connections"),)] == 5
        assert samples[refused, (("reason", "header_timeout"),)] == 1
    finally:
        await redis.aclose()


async def test_an_unwritable_metrics_directory_is_one_line_not_a_traceback(tmp_path):
    conf = write_conf(tmp_path, redis_url="redis://127.0.0.1:1/0")
    conf.write_text(conf.read_text().replace('data_dir = "var"', 'data_dir = "/proc/tocsin"'))
    done = run_tocsin("serve", "--conf", str(conf), "--processes", "1", "--port", "0",
                      env=tocsin_env(), cwd=tmp_path, timeout=20)  # fmt: skip
    assert done.returncode == 2
    assert "metrics directory /proc/tocsin/metrics: No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr
