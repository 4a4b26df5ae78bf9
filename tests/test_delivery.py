"""Reliable delivery as an operator sees it: schedules, history, dead letters, replay,
endpoint health, per-endpoint limits and the circuit breaker. Real Redis, real receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web
from click.testing import CliRunner, Result
from standardwebhooks.webhooks import Webhook

from gateway.cli import main
from gateway.delivery import Delivery, Recipient, encode_delivery
from gateway.history import DeliveryRecord, encode_record
from gateway.keys import WORKER_GROUP, Keys
from gateway.redis_server import free_port
from gateway.streams import ensure_group
from gateway.worker import Worker

from .conftest import HOOK_SECRET, Receiver, load_plan, make_event, write_conf


async def cli(*args: str) -> Result:
    """The real command, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def delivery_block(**settings: Any) -> str:
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"\n[channels.hook.delivery]\n{lines}\n"


def record(client: redis.Redis, delivery_id: str) -> dict[str, Any] | None:
    data = client.get(f"tocsin:delivery:{delivery_id}")
    return json.loads(data) if data else None


def dead_letters(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange("tocsin:dead")]


@dataclass
class Sink:
    """A verifying receiver that can be slow, and notes when each request came."""

    url: str
    status: Callable[[int], int] = lambda n: 204
    delay: float = 0.0
    calls: list[float] = field(default_factory=list)
    ok: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    verifier = Webhook(HOOK_SECRET)
    port = free_port()
    s = Sink(url=f"http://127.0.0.1:{port}/hook")

    async def handle(request: web.Request) -> web.Response:
        s.calls.append(time.monotonic())
        n = len(s.calls)
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            body = await request.read()
            verifier.verify(body, dict(request.headers))
            if s.delay:
                await asyncio.sleep(s.delay)
            status = s.status(n)
            if 200 <= status < 300:
                s.ok.append(json.loads(body))
                s.ids.append(request.headers["webhook-id"])
            return web.Response(status=status)
        finally:
            s.in_flight -= 1

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield s
    await runner.cleanup()


# -- schedules, history, dead letters, replay -------------------------------------------


async def test_failing_delivery_follows_the_channel_schedule_then_dead_letters_with_history(
    tmp_path, redis_url, sink: Sink, start_gateway, redis_client
):
    sink.status = lambda n: 500
    extra = delivery_block(retry_schedule=["0s", "100ms", "200ms"], breaker_failures=0)
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url, extra=extra)
    gw = await start_gateway(conf)
    event = make_event()
    assert (await gw.post(event))[0] == 202

    [letter] = await eventually(lambda: dead_letters(redis_client), what="a dead letter")
    assert len(sink.calls) == 3, "one attempt per schedule entry, then given up"
    assert sink.calls[1] - sink.calls[0] >= 0.07  # 100 ms -20 % jitter
    assert sink.calls[2] - sink.calls[1] >= 0.15
    assert letter[b"reason"].startswith(b"gave up after 3 attempts; last error: HTTP 500")
    job = json.loads(letter[b"j"])
    assert [a["status"] for a in job["history"]] == [500, 500, 500]

    rec = record(redis_client, job["id"])
    assert rec is not None and rec["status"] == "dead"
    assert [(a["n"], a["outcome"]) for a in rec["attempts"]] == [
        (1, "retry"),
        (2, "retry"),
        (3, "retry"),
    ]

    listed = await cli("deliveries", "--conf", str(conf), "--event", event["id"])
    assert listed.exit_code == 0, listed.output
    assert job["id"] in listed.output and "dead" in listed.output
    shown = await cli("deliveries", "show", job["id"], "--conf", str(conf))
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("[500]") == 3 and "HTTP 500" in shown.output
    as_json = await cli("deliveries", "show", job["id"], "--conf", str(conf), "--json")
    assert json.loads(as_json.output)["status"] == "dead"


async def test_dead_letter_replay_keeps_the_webhook_id(
    tmp_path, redis_url, sink: Sink, start_gateway, redis_client
):
    sink.status = lambda n: 400  # permanent: straight to the dead letters
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url)
    gw = await start_gateway(conf)
    events = [make_event() for _ in range(3)]
    for event in events:
        assert (await gw.post(event))[0] == 202
    await eventually(lambda: len(dead_letters(redis_client)) == 3, what="3 dead letters")
    failed_ids = {json.loads(f[b"j"])["id"] for f in dead_letters(redis_client)}

    listing = await cli("dlq", "list", "--conf", str(conf))
    assert listing.exit_code == 0 and listing.output.count("HTTP 400") == 3

    sink.status = lambda n: 204  # the receiver is fixed
    first = next(iter(failed_ids))
    one = await cli("dlq", "replay", first, "--conf", str(conf))
    assert one.exit_code == 0, one.output
    assert "replayed 1 of 1" in one.output
    await eventually(lambda: sink.ids == [first], what="the replayed delivery")

    rest = await cli("dlq", "replay", "--channel", "hook", "--conf", str(conf))
    assert "replayed 2 of 2" in rest.output, rest.output
    await eventually(lambda: len(sink.ids) == 3, what="every replayed delivery")
    assert set(sink.ids) == failed_ids, "a replay must keep its webhook-id"
    assert dead_letters(redis_client) == []

    # The record is written when the job is settled, just after the receiver's 2xx.
    rec = await eventually(
        lambda: (r := record(redis_client, first)) and r["status"] == "delivered" and r,
        what="the delivered record",
    )
    assert [a["outcome"] for a in rec["attempts"]] == ["failed", "replayed", "delivered"]

    again = await cli("dlq", "replay", first, "--conf", str(conf))
    assert again.exit_code != 0 and f"no dead letter {first}" in again.output


async def test_event_replay_skips_what_was_delivered_unless_forced(
    tmp_path, redis_url, sink: Sink, start_gateway
):
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url)
    gw = await start_gateway(conf)
    event = make_event()
    assert (await gw.post(event))[0] == 202
    await eventually(lambda: len(sink.ids) == 1, what="the first delivery")

    plain = await cli("events", "replay", event["id"], "--conf", str(conf))
    assert plain.exit_code == 0, plain.output
    assert "0 queued, 1 skipped" in plain.output and "already delivered" in plain.output

    forced = await cli("events", "replay", event["id"], "--force", "--conf", str(conf))
    assert "1 queued, 0 skipped" in forced.output, forced.output
    await eventually(lambda: len(sink.ids) == 2, what="the forced resend")
    assert sink.ids[0] == sink.ids[1], "a resend carries the same webhook-id"

    unknown = await cli("events", "replay", "evt_never_seen", "--conf", str(conf))
    assert unknown.exit_code != 0 and "no routed event evt_never_seen" in unknown.output


async def test_event_replay_feeds_a_rule_added_later(
    tmp_path, redis_url, sink: Sink, start_gateway
):
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=sink.url,
        rules='[rules.refunds]\nevents = ["refund.*"]\n[[rules.refunds.actions]]\nchannel = "hook"\n',
    )
    gw = await start_gateway(conf)
    event = make_event()  # a payment: no rule matches it yet
    assert (await gw.post(event))[0] == 202
    await asyncio.sleep(0.5)
    assert sink.ids == []
    await gw.stop()

    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url)  # catch-all payments
    await start_gateway(conf)
    replay = await cli("events", "replay", event["id"], "--conf", str(conf))
    assert "1 queued" in replay.output, replay.output
    await eventually(lambda: [e["id"] for e in sink.ok] == [event["id"]], what="the replay")


# -- endpoint health -------------------------------------------------------------------


STAFF_RULE = """
[channels.staff]
type = "json_hook"
url = "{url}"
secret = "{secret}"
[rules.tell-ops]
events = ["endpoint.disabled"]
[[rules.tell-ops.actions]]
channel = "staff"
"""


async def test_410_disables_the_endpoint_tells_staff_and_enable_resumes(
    tmp_path, redis_url, sink: Sink, receiver: Receiver, start_gateway, redis_client
):
    sink.status = lambda n: 410 if n == 1 else 204
    extra = STAFF_RULE.format(url=receiver.url, secret=HOOK_SECRET)
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url, extra=extra)
    gw = await start_gateway(conf)
    first = make_event()
    assert (await gw.post(first))[0] == 202

    [alert] = await receiver.wait_for(1)
    body = alert.json()
    assert body["type"] == "endpoint.disabled"
    assert body["data"]["channel"] == "hook" and "HTTP 410" in body["data"]["reason"]
    assert body["data"]["enable_with"] == "tocsin endpoints enable hook"

    later = [make_event() for _ in range(3)]
    for event in later:
        assert (await gw.post(event))[0] == 202
    await eventually(lambda: redis_client.xlen("tocsin:deliveries:hook") == 3, what="queued")
    await asyncio.sleep(0.5)
    assert len(sink.calls) == 1, "a disabled endpoint is not called"

    state = await cli("endpoints", "--conf", str(conf))
    [hook] = [row.split() for row in state.output.splitlines() if row.startswith("hook ")]
    assert hook[1] == "3" and hook[5] == "DISABLED", state.output  # 3 queued

    enabled = await cli("endpoints", "enable", "hook", "--conf", str(conf))
    assert enabled.output.strip() == "hook: enabled"
    await eventually(lambda: len(sink.ok) == 3, what="the jobs that waited")
    assert {e["id"] for e in sink.ok} == {e["id"] for e in later}
    assert len(dead_letters(redis_client)) == 1  # the 410 itself, replayable


async def test_endpoint_failing_past_disable_after_is_disabled_and_success_resets_clock(
    tmp_path, redis_url, sink: Sink, receiver: Receiver, start_gateway, redis_client
):
    failing = True
    sink.status = lambda n: 503 if failing else 204
    extra = delivery_block(
        retry_schedule=["0s", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"],
        breaker_failures=0,
        disable_after="1s",
    ) + STAFF_RULE.format(url=receiver.url, secret=HOOK_SECRET)
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url, extra=extra)
    gw = await start_gateway(conf)

    # A failure starts the clock; a success before disable_after stops it.
    assert (await gw.post(make_event()))[0] == 202
    await eventually(lambda: redis_client.hget("tocsin:endpoint:hook", "failing_since"))
    failing = False
    await eventually(lambda: sink.ok, what="a success")
    await eventually(lambda: not redis_client.hget("tocsin:endpoint:hook", "failing_since"))

    failing = True
    assert (await gw.post(make_event()))[0] == 202
    [alert] = await receiver.wait_for(1, timeout=15)
    assert alert.json()["type"] == "endpoint.disabled"
    assert "failing without a success since" in alert.json()["data"]["reason"]
    assert redis_client.hget("tocsin:endpoint:hook", "disabled_at")


# -- limits and breaker ----------------------------------------------------------------


async def test_max_in_flight_caps_concurrent_sends_to_an_endpoint(
    tmp_path, redis_url, sink: Sink, start_gateway
):
    sink.delay = 0.2
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=sink.url, extra=delivery_block(max_in_flight=2)
    )
    gw = await start_gateway(conf)
    for _ in range(8):
        assert (await gw.post(make_event()))[0] == 202
    await eventually(lambda: len(sink.ok) == 8, what="8 deliveries")
    assert sink.max_in_flight == 2


async def test_rate_limit_spaces_out_sends(tmp_path, redis_url, sink: Sink, start_gateway):
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=sink.url, extra=delivery_block(rate_limit=4.0)
    )
    gw = await start_gateway(conf)
    for _ in range(10):
        assert (await gw.post(make_event()))[0] == 202
    await eventually(lambda: len(sink.ok) == 10, what="10 deliveries")
    # A bucket of 4, refilled at 4/s: the 10th send cannot come before 1.5 s.
    assert sink.calls[-1] - sink.calls[0] >= 1.4
    for i in range(len(sink.calls) - 5):
        assert sink.calls[i + 5] - sink.calls[i] >= 0.2, "more than 4 sends in a burst"


async def test_circuit_breaker_stops_hammering_then_probes(
    tmp_path, redis_url, sink: Sink, start_gateway
):
    sink.status = lambda n: 500 if n <= 4 else 204
    extra = delivery_block(
        retry_schedule=["0s", "50ms", "50ms", "50ms", "50ms", "50ms"],
        breaker_failures=3,
        breaker_cooldown="1s",
        max_in_flight=1,
    )
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url, extra=extra)
    gw = await start_gateway(conf)
    for _ in range(3):
        assert (await gw.post(make_event()))[0] == 202
    await eventually(lambda: len(sink.ok) == 3, what="every delivery, in the end")
    # Three failures open the breaker: nothing for a second, then one probe (fails: 4th),
    # the breaker opens again, and the next probe succeeds and closes it.
    assert sink.calls[3] - sink.calls[2] >= 0.9
    assert sink.calls[4] - sink.calls[3] >= 0.9
    assert len(sink.calls) == 7


# -- crash safety ----------------------------------------------------------------------


def _job(event: dict[str, Any], delivery_id: str = "msg_test0001") -> Delivery:
    return Delivery(
        id=delivery_id,
        event_id=event["id"],
        event_type=event["type"],
        rule="all-payments",
        channel="hook",
        event=json.dumps(event).encode(),  # type: ignore[arg-type]
        recipient=Recipient(kind="address", address="ops@example.com"),
    )


async def _orphan(client: Any, keys: Keys, job: Delivery, takeovers: int) -> bytes:
    """A job read by a consumer that then died, and taken over ``takeovers`` times."""
    stream = keys.deliveries("hook")
    await ensure_group(client, stream, WORKER_GROUP)
    entry = await client.xadd(stream, {"j": encode_delivery(job)})
    await client.xreadgroup(WORKER_GROUP, "dead-1", {stream: ">"})
    for i in range(takeovers):
        await client.xclaim(stream, WORKER_GROUP, f"dead-{i + 2}", 0, [entry])
    return entry


@contextlib.asynccontextmanager
async def _worker_running(plan: Any, client: Any, **options: Any) -> AsyncIterator[Worker]:
    """A worker named ``survivor`` on the plan's channels, running until the block ends."""
    for channel in plan.channels.values():
        await channel.start()
    worker = Worker(client, Keys(), plan.channels, "survivor", **options)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        yield worker
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)
        for channel in plan.channels.values():
            await channel.close()


async def _run_worker(plan: Any, client: Any, until: Callable[[], Any]) -> None:
    async with _worker_running(plan, client, visibility={"hook": 0.1}, concurrency=8):
        await eventually(until, what="the worker's takeover")


async def test_a_job_taken_over_too_often_is_dead_lettered_as_poison(
    tmp_path, redis_url, sink: Sink, redis_client
):
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url)
    plan = load_plan(conf)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await _orphan(client, Keys(), _job(make_event()), takeovers=3)
        await _run_worker(plan, client, lambda: dead_letters(redis_client))
    finally:
        await client.aclose()
    [letter] = dead_letters(redis_client)
    assert letter[b"reason"].startswith(b"poison: taken over 4 times")
    assert sink.calls == [], "a poison job is not sent once more"
    assert redis_client.xlen("tocsin:deliveries:hook") == 0


async def test_a_taken_over_job_already_recorded_delivered_is_not_sent_again(
    tmp_path, redis_url, sink: Sink, redis_client
):
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url)
    plan = load_plan(conf)
    keys = Keys()
    event = make_event()
    job = _job(event)
    done = DeliveryRecord(
        id=job.id,
        event_id=job.event_id,
        event_type=job.event_type,
        rule=job.rule,
        channel="hook",
        status="delivered",
        updated=time.time(),
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(keys.record(job.id), encode_record(done))
        await _orphan(client, keys, job, takeovers=0)
        await _run_worker(plan, client, lambda: redis_client.xlen("tocsin:deliveries:hook") == 0)
    finally:
        await client.aclose()
    assert sink.calls == []
    assert dead_letters(redis_client) == []


async def test_retention_trims_history_and_dead_letters(tmp_path, redis_url, redis_client):
    conf = write_conf(tmp_path, redis_url=redis_url)
    plan = load_plan(conf)
    old_ms = int((time.time() - 40 * 86400) * 1000)
    redis_client.zadd("tocsin:history", {"msg_old": old_ms, "msg_new": time.time() * 1000})
    redis_client.xadd("tocsin:dead", {"kind": "delivery", "j": b"{}"}, id=f"{old_ms}-0")
    redis_client.xadd("tocsin:dead", {"kind": "delivery", "j": b"{}"})
    client = aioredis.Redis.from_url(redis_url)
    try:
        worker = Worker(client, Keys(), plan.channels, "w", retention=30 * 86400)
        await worker._trim()
    finally:
        await client.aclose()
    assert redis_client.zrange("tocsin:history", 0, -1) == [b"msg_new"]
    assert redis_client.xlen("tocsin:dead") == 1


def line_of(conf: Path, written: str) -> int:
    """The number of the first line of ``conf`` that starts with ``written``."""
    lines = conf.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(written))


def test_visibility_timeout_shorter_than_a_send_timeout_is_refused(tmp_path, redis_url):
    conf = write_conf(tmp_path, redis_url=redis_url)
    text = conf.read_text().replace(
        'shutdown_grace = "2s"', 'shutdown_grace = "2s"\nvisibility_timeout = "4s"'
    )
    conf.write_text(text)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    assert (
        f"{conf}:{line_of(conf, 'visibility_timeout')}: worker.visibility_timeout: 4s would let a second worker take over jobs "
        "of channel 'hook' while the first may still be sending (send timeout 3s + 5s margin): "
        "raise it to at least 8s" in result.output
    )


def test_delivery_policy_errors_name_the_field(tmp_path, redis_url):
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        extra=delivery_block(retry_schedule=["soon"], max_in_flight=0),
    )
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    assert f"{conf}:{line_of(conf, 'retry_schedule')}: channels.hook.delivery" in result.output


def channel_plugin(tmp_path, monkeypatch, module: str, type_name: str, send_body: str) -> None:
    """A one-channel plugin module in ``tmp_path``, importable as ``module``: its
    ``send`` runs ``send_body`` (the misbehaving receivers these tests need)."""
    body = textwrap.indent(textwrap.dedent(send_body).strip(), " " * 8)
    (tmp_path / f"{module}.py").write_text(
        "import asyncio\n"
        "import msgspec\n"
        "from gateway import Channel, PermanentError, TransientError, hookimpl\n\n\n"
        "class Config(msgspec.Struct, forbid_unknown_fields=True):\n    pass\n\n\n"
        "class Plugged(Channel[Config]):\n"
        f"    type_name = {type_name!r}\n"
        "    config_type = Config\n\n"
        "    @property\n"
        "    def send_timeout(self):\n"
        "        return 0.3\n\n"
        "    async def send(self, delivery):\n"
        f"{body}\n\n\n"
        "@hookimpl\n"
        "def tocsin_register_channels():\n"
        "    return [Plugged]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


async def test_a_plugin_failure_can_notify_staff_through_an_internal_event(
    tmp_path, redis_url, receiver: Receiver, start_gateway, redis_client, monkeypatch
):
    channel_plugin(
        tmp_path,
        monkeypatch,
        "refusing_erp",
        "refusing",
        """
        raise PermanentError(
            "invoice FA-1 is already paid", notify="erp.sync_failed", details={"invoice": "FA-1"}
        )
        """,
    )
    rules = """
    [channels.erp]
    type = "refusing"
    [plugins]
    modules = ["refusing_erp"]
    [rules.book]
    events = ["payment.succeeded"]
    [[rules.book.actions]]
    channel = "erp"
    [rules.tell-accounting]
    events = ["erp.sync_failed"]
    [[rules.tell-accounting.actions]]
    channel = "hook"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url, rules=rules)
    gw = await start_gateway(conf)
    event = make_event()
    assert (await gw.post(event))[0] == 202

    [notice] = await receiver.wait_for(1)
    body = notice.json()
    assert body["type"] == "erp.sync_failed" and body["source"]["provider"] == "tocsin"
    assert body["data"]["reason"] == "invoice FA-1 is already paid"
    assert body["data"]["invoice"] == "FA-1" and body["data"]["event_id"] == event["id"]
    assert body["refs"] == event["refs"] and body["customer"]["id"] == "cus_1"
    assert len(dead_letters(redis_client)) == 1


async def test_a_lost_consumer_group_is_recreated_and_nothing_waiting_is_lost(
    tmp_path, redis_url, sink: Sink, start_gateway, redis_client
):
    """Redis restarted without its AOF (or a careless FLUSH of one key) loses the groups."""
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url)
    gw = await start_gateway(conf)
    assert (await gw.post(make_event()))[0] == 202
    await eventually(lambda: len(sink.ok) == 1, what="the first delivery")

    redis_client.xgroup_destroy("tocsin:events", "router")
    redis_client.xgroup_destroy("tocsin:deliveries:hook", "workers")
    later = [make_event() for _ in range(5)]
    for event in later:
        assert (await gw.post(event))[0] == 202
    await eventually(lambda: len(sink.ok) == 6, what="deliveries after the groups were lost")
    assert {e["id"] for e in sink.ok[1:]} == {e["id"] for e in later}
    assert len(set(sink.ids)) == 6


async def test_retries_running_out_notify_staff_when_the_plugin_asked(
    tmp_path, redis_url, receiver: Receiver, start_gateway, monkeypatch
):
    channel_plugin(
        tmp_path,
        monkeypatch,
        "unreachable_erp",
        "unreachable",
        'raise TransientError("ERP answered 503", notify="erp.sync_failed")',
    )
    rules = """
    [channels.erp]
    type = "unreachable"
    [channels.erp.delivery]
    retry_schedule = ["0s", "50ms"]
    breaker_failures = 0
    [plugins]
    modules = ["unreachable_erp"]
    [rules.book]
    events = ["payment.succeeded"]
    [[rules.book.actions]]
    channel = "erp"
    [rules.tell-accounting]
    events = ["erp.sync_failed"]
    [[rules.tell-accounting.actions]]
    channel = "hook"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url, rules=rules)
    gw = await start_gateway(conf)
    assert (await gw.post(make_event()))[0] == 202
    [notice] = await receiver.wait_for(1)
    assert notice.json()["data"]["reason"] == (
        "gave up after 2 attempts; last error: ERP answered 503"
    )


async def test_a_send_past_its_channel_timeout_is_cut_and_retried(
    tmp_path, redis_url, start_gateway, redis_client, monkeypatch
):
    # A plugin that never answers and ignores its own timeouts.
    channel_plugin(tmp_path, monkeypatch, "hanging_channel", "hanging", "await asyncio.sleep(60)")
    rules = """
    [channels.slow]
    type = "hanging"
    [channels.slow.delivery]
    retry_schedule = ["0s", "100ms"]
    breaker_failures = 0
    [plugins]
    modules = ["hanging_channel"]
    [rules.r]
    events = ["payment.succeeded"]
    [[rules.r.actions]]
    channel = "slow"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, rules=rules)
    gw = await start_gateway(conf)
    started = time.monotonic()
    assert (await gw.post(make_event()))[0] == 202
    [letter] = await eventually(lambda: dead_letters(redis_client), what="the dead letter")
    assert letter[b"reason"] == b"gave up after 2 attempts; last error: no answer within 0.3s"
    assert time.monotonic() - started < 10, "the sends were not cut at their timeout"


async def test_a_job_read_just_after_its_endpoint_was_disabled_waits_for_enabling(
    tmp_path, redis_url, sink: Sink, redis_client
):
    """A read already waiting on the stream when the endpoint is disabled brings the next
    job: it is not sent, stays pending under the worker's name, and goes once enabled."""
    plan = load_plan(write_conf(tmp_path, redis_url=redis_url, hook_url=sink.url))
    keys = Keys()
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with _worker_running(plan, client) as worker:
            await asyncio.sleep(0.2)  # the worker now waits on the hook stream (BLOCK)
            await worker._disable("hook", "HTTP 410")
            job = encode_delivery(_job(make_event()))
            await client.xadd(keys.deliveries("hook"), {"j": job})
            await asyncio.sleep(0.8)  # past the waiting read's 500 ms
            assert sink.calls == [], "a disabled endpoint is not called"
            pending = await client.xpending(keys.deliveries("hook"), WORKER_GROUP)
            assert pending["pending"] == 1
            assert pending["consumers"] == [{"name": b"survivor", "pending": 1}]

            await client.delete(keys.endpoint("hook"))  # what `tocsin endpoints enable` does
            await eventually(lambda: len(sink.ok) == 1, what="the held job, once enabled")
            await eventually(lambda: redis_client.xlen("tocsin:deliveries:hook") == 0, what="acked")
            await asyncio.sleep(0.3)
            assert len(sink.calls) == 1
    finally:
        await client.aclose()
