"""Scenarios: scheduled, cancellable sequences. Virtual clock for the schedule, real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from gateway.cli import main
from gateway.event import decode_event, encode_event
from gateway.keys import SCENARIO_GROUP, Keys
from gateway.redis_server import RedisServer, free_port
from gateway.scenarios import ScenarioEngine
from gateway.simulate import format_notifications, simulate
from gateway.streams import ensure_group
from gateway.worker import Worker

from .conftest import Receiver, load_plan, make_event, write_conf

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday

REMINDERS = """
[rules.none]
events = ["nothing.ever"]
[[rules.none.actions]]
channel = "hook"

[scenarios.reminders]
trigger = { events = ["payment_request.created"] }
key = "payment_request:{{ refs.payment_request_id }}"
cancel_on = [{ events = ["payment_request.paid", "payment_request.canceled"] }]
update_on = [{ events = ["payment_request.partially_paid"] }]
past_steps = "PAST"

[[scenarios.reminders.steps]]
name = "link"
after = "0s"
[[scenarios.reminders.steps.actions]]
channel = "hook"

[[scenarios.reminders.steps]]
name = "nudge"
after = "24h"
when = ["data.remaining_amount > 0"]
[[scenarios.reminders.steps.actions]]
channel = "hook"
template = "remaining"

[[scenarios.reminders.steps]]
name = "before-due"
at = "data.due_at - 3d"
[[scenarios.reminders.steps.actions]]
channel = "hook"
"""
TEMPLATES = {"remaining/json.j2": '{"remaining": {{ data.remaining_amount }}}'}


def conf_for(tmp_path, redis_url, *, past: str = "skip", extra: str = "", hook: str = ""):
    return write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=hook or "http://127.0.0.1:9/unused",
        rules=REMINDERS.replace("PAST", past),
        templates=TEMPLATES,
        extra=extra,
    )


#: What the catalog requires of each kind beyond the amount.
PAID = {"paid": {"paid_amount": 10000}, "partially_paid": {"paid_amount": 5000}}


def pr_event(kind: str, at: datetime, pr: str = "pr_1", **data: Any) -> tuple[Any, bytes]:
    event = make_event(
        id=f"evt_{kind}_{pr}_{int(at.timestamp())}",
        type=f"payment_request.{kind}",
        occurred_at=at.isoformat(),
        refs={"payment_request_id": pr, "invoice_ref": "FA-1"},
        data={"amount": 10000, "currency": "EUR", **PAID.get(kind, {}), **data},
    )
    parsed = decode_event(json.dumps(event).encode())
    return parsed, encode_event(parsed)


async def run_simulation(conf, redis_url, events) -> list[Any]:
    plan = load_plan(conf)
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await simulate(plan, client, events, horizon=40 * 86400)
    finally:
        await client.aclose()


def steps_of(notifications) -> list[tuple[str, datetime]]:
    return [
        (n.delivery.rule.rsplit("/", 1)[1], datetime.fromtimestamp(n.at, UTC))
        for n in notifications
    ]


async def test_steps_fire_on_schedule_until_the_request_is_paid(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    due = T0 + timedelta(days=10)
    events = [
        pr_event("created", T0, remaining_amount=10000, due_at=due.isoformat()),
        pr_event("paid", T0 + timedelta(days=8)),
    ]
    sent = await run_simulation(conf, redis_url, events)
    assert steps_of(sent) == [
        ("link", T0),
        ("nudge", T0 + timedelta(days=1)),
        ("before-due", due - timedelta(days=3)),
    ]
    unpaid = await run_simulation(conf, redis_url, events[:1])
    assert len(unpaid) == 3
    paid_early = [events[0], pr_event("paid", T0 + timedelta(hours=2))]
    assert steps_of(await run_simulation(conf, redis_url, paid_early)) == [("link", T0)]


async def test_a_cancel_arriving_before_its_trigger_keeps_the_scenario_from_starting(
    tmp_path, redis_url
):
    conf = conf_for(tmp_path, redis_url)
    created = pr_event("created", T0, remaining_amount=10000)
    paid = pr_event("paid", T0 + timedelta(minutes=5))
    # The provider delivered "paid" first, although it happened after "created".
    assert await run_simulation(conf, redis_url, [paid, created]) == []
    # A new request for the same key created after that payment is a new cycle.
    again = pr_event("created", T0 + timedelta(days=2), remaining_amount=500)
    assert steps_of(await run_simulation(conf, redis_url, [paid, created, again]))[0] == (
        "link",
        T0 + timedelta(days=2),
    )


async def test_partial_payment_updates_what_later_steps_see(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    events = [
        pr_event("created", T0, remaining_amount=10000),
        pr_event("partially_paid", T0 + timedelta(hours=3), remaining_amount=2500),
    ]
    [link, nudge] = await run_simulation(conf, redis_url, events)
    assert json.loads(bytes(nudge.delivery.event))["data"]["remaining_amount"] == 2500
    assert json.loads(bytes(link.delivery.event))["data"]["remaining_amount"] == 10000

    settled = [events[0], pr_event("partially_paid", T0 + timedelta(hours=3), remaining_amount=0)]
    # The nudge's condition is re-checked when it fires: nothing left to pay, no nudge.
    assert steps_of(await run_simulation(conf, redis_url, settled)) == [("link", T0)]


async def test_steps_already_past_are_skipped_or_fired_once_per_conf(tmp_path, redis_url):
    long_overdue = [
        pr_event("created", T0, remaining_amount=1, due_at=(T0 + timedelta(days=1)).isoformat())
    ]
    skipped = await run_simulation(conf_for(tmp_path, redis_url), redis_url, long_overdue)
    assert [s for s, _ in steps_of(skipped)] == ["link", "nudge"]

    fired = await run_simulation(
        conf_for(tmp_path / "fire", redis_url, past="fire"), redis_url, long_overdue
    )
    assert sorted(s for s, _ in steps_of(fired)) == ["before-due", "link", "nudge"]
    assert dict(steps_of(fired))["before-due"] == T0  # once, at start


async def test_sending_window_defers_a_step_and_simulate_says_so(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url, extra='\n[channels.hook.delivery]\nwindow = "courtesy"\n')
    saturday_evening = datetime(2026, 11, 7, 19, 30, tzinfo=UTC)  # 20:30 in Paris
    sent = await run_simulation(
        conf, redis_url, [pr_event("created", saturday_evening, remaining_amount=5)]
    )
    link = sent[0]
    assert link.deferred
    assert datetime.fromtimestamp(link.at, UTC) == datetime(2026, 11, 9, 7, 0, tzinfo=UTC)
    [line, *_] = format_notifications(load_plan(conf), sent)
    assert line.startswith("Mon 2026-11-09 08:00:00 CET  hook")  # every time names its zone
    assert line.endswith("(deferred from Sat 2026-11-07 20:30:00 CET by window courtesy)")


async def test_simulate_command_prints_a_deterministic_plan(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    events = tmp_path / "events.jsonl"
    lines = []
    for kind, at in (("created", T0), ("paid", T0 + timedelta(days=2))):
        event = make_event(
            id=f"evt_{kind}",
            type=f"payment_request.{kind}",
            occurred_at=at.isoformat(),
            refs={"payment_request_id": "pr_9"},
            data={"amount": 100, "currency": "EUR", "remaining_amount": 100},
        )
        lines.append(json.dumps(event))
    events.write_text("\n".join(lines) + "\n")
    args = ["simulate", str(events), "--conf", str(conf), "--redis-url", redis_url]
    first = await asyncio.to_thread(CliRunner().invoke, main, args)
    second = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    assert first.output.splitlines() == [
        # Columns as wide as their longest cell; times in the conf's zone, labelled.
        "Mon 2026-11-02 10:00:00 CET  hook  -  (event as JSON) (fr)"
        "  <- scenario:reminders/link  [payment_request.created evt_created]",
        "Tue 2026-11-03 10:00:00 CET  hook  -  remaining (fr)      "
        "  <- scenario:reminders/nudge  [payment_request.created evt_created]",
        "2 notification(s) from 2 event(s)",
    ]


# -- the live engine: timers, many workers, crashes ----------------------------------------


async def _engine(conf, client, clock) -> ScenarioEngine:
    plan = load_plan(conf)
    return ScenarioEngine(client, Keys(), plan.scenarios, clock=clock)


async def test_two_gateways_firing_the_same_steps_fire_each_once(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    client = aioredis.Redis.from_url(redis_url)
    now = [T0.timestamp()]
    try:
        a = await _engine(conf, client, lambda: now[0])
        b = await _engine(conf, client, lambda: now[0])
        for i in range(40):
            event, _ = pr_event("created", T0, pr=f"pr_{i}", remaining_amount=5)
            await a.on_event(event)
            await b.on_event(event)  # the same event twice: still one instance
        now[0] += 2 * 86400
        await asyncio.gather(a.promote(), b.promote())
        await asyncio.gather(a.fire_pending("a"), b.fire_pending("b"))
        jobs = await client.xrange("tocsin:deliveries:hook")
        fired = [json.loads(fields[b"j"])["rule"] for _, fields in jobs]
        assert sorted(fired) == sorted(
            ["scenario:reminders/link"] * 40 + ["scenario:reminders/nudge"] * 40
        )
        assert len({json.loads(f[b"j"])["id"] for _, f in jobs}) == 80
    finally:
        await client.aclose()


async def test_a_step_read_by_a_crashed_gateway_fires_once_after_takeover(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    client = aioredis.Redis.from_url(redis_url)
    now = [T0.timestamp()]
    try:
        engine = await _engine(conf, client, lambda: now[0])
        event, _ = pr_event("created", T0, remaining_amount=5)
        await engine.on_event(event)
        await engine.promote()
        # A gateway reads the due step and dies before firing it.
        await ensure_group(client, "tocsin:steps", SCENARIO_GROUP)
        await client.xreadgroup(SCENARIO_GROUP, "crashed", {"tocsin:steps": ">"})
        assert await client.xlen("tocsin:deliveries:hook") == 0
        survivor = await _engine(conf, client, lambda: now[0])
        survivor.reclaim_idle_ms = 0  # the crashed one's idle time has passed
        await survivor._reclaim("survivor", survivor.layout.shards[0])
        await survivor._reclaim(
            "survivor", survivor.layout.shards[0]
        )  # a second pass finds nothing more to fire
        jobs = await client.xrange("tocsin:deliveries:hook")
        assert [json.loads(f[b"j"])["rule"] for _, f in jobs] == ["scenario:reminders/link"]
        _, instance = await engine.load("reminders", "payment_request:pr_1")
        assert instance is not None and instance.steps[0].status == "done"
    finally:
        await client.aclose()


async def test_a_crashed_gateways_due_step_fires_within_router_reclaim_after(
    tmp_path, redis_url, start_gateway
):
    """The router role fires steps, so a step a dead gateway read waits for the takeover
    no longer than an event would: ``[worker] router_reclaim_after``, not 30 s."""
    conf = conf_for(tmp_path, redis_url)
    conf.write_text(
        conf.read_text().replace('shutdown_grace = "2s"', 'router_reclaim_after = "1s"')
    )
    client = aioredis.Redis.from_url(redis_url)
    try:
        # Every step due and read by the crashed gateway: none is left for a timer to fire.
        engine = await _engine(conf, client, lambda: T0.timestamp() + 60 * 86400)
        event, _ = pr_event("created", T0, remaining_amount=5)
        await engine.on_event(event)
        await engine.promote()
        await ensure_group(client, "tocsin:steps", SCENARIO_GROUP)
        await client.xreadgroup(SCENARIO_GROUP, "crashed", {"tocsin:steps": ">"})
        orphaned = time.monotonic()
        await start_gateway(conf, roles=("router",))
        while not await client.xlen("tocsin:deliveries:hook"):
            assert time.monotonic() - orphaned < 10, "the crashed gateway's step never fired"
            await asyncio.sleep(0.02)
        took = time.monotonic() - orphaned
    finally:
        await client.aclose()
    assert 1.0 <= took < 2.5, f"fired {took:.2f}s after the crash"


# -- end to end: a real gateway, real time, the operator commands ------------------------


async def test_scenario_runs_in_the_gateway_and_operators_can_see_and_cancel_it(
    tmp_path, redis_url, receiver: Receiver, start_gateway
):
    conf = conf_for(tmp_path, redis_url, hook=receiver.url)
    text = conf.read_text().replace('after = "24h"', 'after = "1s"')
    conf.write_text(text)
    gw = await start_gateway(conf)
    created = make_event(
        type="payment_request.created",
        refs={"payment_request_id": "pr_live"},
        data={"amount": 100, "currency": "EUR", "remaining_amount": 100},
    )
    assert (await gw.post(created))[0] == 202
    partial = make_event(
        type="payment_request.partially_paid",
        refs={"payment_request_id": "pr_live"},
        data={"amount": 100, "currency": "EUR", "remaining_amount": 40, "paid_amount": 60},
    )
    assert (await gw.post(partial))[0] == 202
    got = await receiver.wait_for(2, timeout=15)
    assert got[1].json() == {"remaining": 40}

    runner = CliRunner()
    shown = await asyncio.to_thread(
        runner.invoke, main, ["scenarios", "show", "payment_request:pr_live", "--conf", str(conf)]
    )
    assert shown.exit_code == 0, shown.output
    assert "status    completed" in shown.output
    assert "link" in shown.output and "nudge" in shown.output
    assert "no date at data.due_at in the event" in shown.output  # before-due: skipped, said so

    another = make_event(
        type="payment_request.created",
        refs={"payment_request_id": "pr_cancel"},
        data={"amount": 100, "currency": "EUR", "remaining_amount": 100},
    )
    text = conf.read_text().replace('after = "1s"', 'after = "1h"')
    conf.write_text(text)
    await gw.stop()
    gw = await start_gateway(conf)
    assert (await gw.post(another))[0] == 202
    deadline = time.monotonic() + 10
    while len(receiver.received) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    typo = ["scenarios", "cancel", "payment_request:pr_cancel", "--scenario", "reminder"]
    wrong = await asyncio.to_thread(runner.invoke, main, [*typo, "--conf", str(conf)])
    assert wrong.exit_code == 2  # a typo, not "no instance": there is one
    assert f"no scenario 'reminder' in {conf} (scenarios: reminders)" in wrong.output
    cancelled = await asyncio.to_thread(
        runner.invoke,
        main,
        ["scenarios", "cancel", "payment_request:pr_cancel", "--conf", str(conf)],
    )
    assert cancelled.output.strip() == "reminders payment_request:pr_cancel: cancelled"
    listed = await asyncio.to_thread(
        runner.invoke, main, ["scenarios", "list", "--conf", str(conf), "--json"]
    )
    states = {json.loads(line)["key"]: json.loads(line) for line in listed.output.splitlines()}
    assert states["payment_request:pr_cancel"]["status"] == "cancelled"
    assert [s["status"] for s in states["payment_request:pr_cancel"]["steps"]] == [
        "done",
        "cancelled",
        "skipped",
    ]


def test_scenario_conf_mistakes_are_all_reported(tmp_path, redis_url):
    bad = """
    [scenarios.broken]
    trigger = { events = ["Payment Created"] }
    key = "{{ refs.id"
    [[scenarios.broken.steps]]
    name = "both"
    after = "1h"
    at = "data.due_at - 3d"
    [[scenarios.broken.steps.actions]]
    channel = "nowhere"
    [[scenarios.broken.steps]]
    name = "bad-date"
    at = "data.due_at minus three days"
    [[scenarios.broken.steps.actions]]
    channel = "hook"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, extra=bad)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    out = result.output
    lines = conf.read_text().splitlines()

    def where(written: str) -> str:
        """The file and the line ``written`` starts, as problems name them."""
        line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith(written))
        return f"{conf}:{line}: scenarios.broken"

    assert f"{where('trigger =')}.trigger.events[0]: 'Payment Created' is not an event type" in out
    assert f"{where('key =')}.key: line 1:" in out
    assert (
        f"{where('[[scenarios.broken.steps]]')}.steps[0]: "
        'give one of after = "24h" or at = "data.due_at - 3d"'
    ) in out
    nowhere, bad_at = where('channel = "nowhere"'), where('at = "data.due_at minus')
    assert f"{nowhere}.steps[0].actions[0].channel: no channel 'nowhere'" in out
    assert f"{bad_at}.steps[1].at: 'data.due_at minus three days'" in out


def test_check_renders_scenario_step_templates_against_samples(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    (tmp_path / "templates" / "remaining" / "json.j2").write_text(
        '{"remaining": {{ data.remaining_amount }},\n "oops": {{ data.no_such_field }}}'
    )
    (tmp_path / "examples").mkdir()
    _, raw = pr_event("created", T0, remaining_amount=5)
    (tmp_path / "examples" / "pr_created.json").write_bytes(raw)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2, result.output
    assert "remaining/json.j2: line 2:" in result.output
    assert "no_such_field" in result.output
    assert "scenario:reminders/nudge" in result.output


async def test_a_queued_step_message_is_not_sent_once_its_scenario_is_cancelled(
    tmp_path, redis_url, receiver: Receiver
):
    """Paid while the reminder waited (for its window, or in a busy queue): recalled."""
    conf = conf_for(tmp_path, redis_url, hook=receiver.url)
    plan = load_plan(conf)
    client = aioredis.Redis.from_url(redis_url)
    now = [time.time()]
    try:
        engine = ScenarioEngine(client, Keys(), plan.scenarios, clock=lambda: now[0])
        created, _ = pr_event("created", datetime.now(UTC), remaining_amount=5)
        await engine.on_event(created)
        await engine.promote()
        await engine.fire_pending("router")  # the "link" step: its job is queued
        assert await client.xlen("tocsin:deliveries:hook") == 1
        paid, _ = pr_event("paid", datetime.now(UTC))
        await engine.on_event(paid)

        for channel in plan.channels.values():
            await channel.start()
        worker = Worker(client, Keys(), plan.channels, "w")
        stopping = asyncio.Event()
        task = asyncio.create_task(worker.run(stopping))
        deadline = time.monotonic() + 10
        while await client.xlen("tocsin:deliveries:hook"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stopping.set()
        await task
        for channel in plan.channels.values():
            await channel.close()
        jobs = await client.keys("tocsin:delivery:*")
        [record] = [json.loads(await client.get(k)) for k in jobs]
    finally:
        await client.aclose()
    assert receiver.received == []
    assert record["status"] == "cancelled"
    assert "cancelled by payment_request.paid" in record["attempts"][-1]["note"]


async def test_simulate_reads_one_pretty_printed_event_too(tmp_path, redis_url):
    conf = conf_for(tmp_path, redis_url)
    _, raw = pr_event("created", T0, remaining_amount=5)
    single = tmp_path / "one.json"
    single.write_text(json.dumps(json.loads(raw), indent=2))
    args = ["simulate", str(single), "--conf", str(conf), "--redis-url", redis_url]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "2 notification(s) from 1 event(s)"


async def test_pending_timers_survive_a_redis_crash_and_fire_once(tmp_path, redis_url):
    """AOF with fsync always: a scenario started before redis-server is SIGKILLed keeps
    its timers, and each step fires exactly once after the restart."""
    conf = conf_for(tmp_path, redis_url)
    plan = load_plan(conf)
    server = RedisServer(tmp_path / "own-redis", port=free_port())
    url = server.start()
    now = [T0.timestamp()]
    try:
        client = aioredis.Redis.from_url(url)
        engine = ScenarioEngine(client, Keys(), plan.scenarios, clock=lambda: now[0])
        event, _ = pr_event("created", T0, remaining_amount=5)
        await engine.on_event(event)
        await client.aclose()
        server.kill()  # a crash, not a shutdown: only what the AOF fsynced survives

        server.start()
        client = aioredis.Redis.from_url(url)
        engine = ScenarioEngine(client, Keys(), plan.scenarios, clock=lambda: now[0])
        assert await client.zcard("tocsin:timers") == 2  # link (now) and nudge (+24h)
        now[0] += 2 * 86400
        for _ in range(2):  # a second pass must find nothing left to fire
            await engine.promote()
            await engine.fire_pending("after-restart")
        fired = [
            json.loads(f[b"j"])["rule"] for _, f in await client.xrange("tocsin:deliveries:hook")
        ]
        assert sorted(fired) == ["scenario:reminders/link", "scenario:reminders/nudge"]
        await client.aclose()
    finally:
        server.stop()


# -- days are calendar days ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "due_at", "due_soon"),
    [
        # Clocks go forward on Sunday 28 March 2027: 3 days before Tuesday 00:00 is
        # Saturday 00:00 (71 hours), not Friday 23:00.
        ("2027-03-20T09:00:00+00:00", "2027-03-30T00:00:00+02:00", "2027-03-27 00:00"),
        # Clocks go back on Sunday 31 October 2027: Saturday 00:00 (73 hours), not 01:00.
        ("2027-10-22T09:00:00+00:00", "2027-11-02T00:00:00+01:00", "2027-10-30 00:00"),
    ],
)
async def test_days_before_a_date_are_calendar_days_across_daylight_saving(
    tmp_path, redis_url, created, due_at, due_soon
):
    conf = conf_for(tmp_path, redis_url)
    _, raw = pr_event("created", datetime.fromisoformat(created), due_at=due_at)
    events = tmp_path / "events.jsonl"
    events.write_text(raw.decode() + "\n")
    args = ["simulate", str(events), "--conf", str(conf), "--redis-url", redis_url]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "reminders/before-due" in line]
    assert due_soon in line, result.output


async def test_hours_stay_exact_and_after_days_are_calendar_days(tmp_path, redis_url):
    week = """
    [scenarios.weekly]
    trigger = { events = ["payment_request.created"] }
    key = "weekly:{{ refs.payment_request_id }}"
    [[scenarios.weekly.steps]]
    name = "a-week-later"
    after = "1w"
    [[scenarios.weekly.steps.actions]]
    channel = "hook"
    """
    conf = conf_for(tmp_path, redis_url, extra=week)
    # Saturday 27 March 2027, 10:00 in Paris (UTC+1); clocks go forward that night.
    created = datetime(2027, 3, 27, 9, 0, tzinfo=UTC)
    sent = await run_simulation(conf, redis_url, [pr_event("created", created, remaining_amount=5)])
    fired = dict(steps_of(sent))
    assert fired["nudge"] == created + timedelta(hours=24)  # "24h": 11:00 in Paris
    # "1w": 10:00 in Paris again, which is now 08:00 UTC (167 hours later).
    assert fired["a-week-later"] == datetime(2027, 4, 3, 8, 0, tzinfo=UTC)
