"""``[watch]``: each kind breached and cleared on a virtual clock, through a real Redis.

The watcher and the metrics poller share one injected clock: time jumps by hours without
waiting. Events go in through the intake's own write path (``Enqueuer``), jobs and dead
letters are real stream entries, endpoints are disabled the way workers mark them. Every
test reads the events stream for the alerts: one ``watch.breached`` per breach, none
while it lasts, one ``watch.recovered`` when it clears. The last test runs a gateway and
checks that a rule delivers the alert to a webhook receiver.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.admin import enable_endpoint
from gateway.conf import read_conf
from gateway.event import Event, EventSource, decode_event, encode_event
from gateway.intake import Enqueuer
from gateway.keys import Layout
from gateway.metrics import Known, Metrics, Poller
from gateway.watch import Watcher, current_breaches, read_watch
from gateway.windows import SendingWindow, WindowConf

from .conftest import make_event, write_conf

HOUR = 3600.0
#: A Monday, 10:00 in Paris.
MONDAY_10 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """A watcher and a poller on one clock, and what they emitted."""

    def __init__(self, redis: Redis, watch_toml: dict[str, Any], start: float) -> None:
        self.redis = redis
        self.layout = Layout("tocsin")
        self.keys = self.layout.shards[0]
        self.clock = Clock(start)
        section, problems = read_watch(watch_toml)
        assert problems == []
        channels = ("hook", "mail")
        self.metrics = Metrics(Known(sources=(), channels=channels, watches=tuple(section.watches)))
        self.poller = Poller(redis, self.layout, self.metrics, "p1", clock=self.clock)
        office = WindowConf(days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="19:00")
        self.watcher = Watcher(
            redis,
            self.layout,
            section,
            {"office": SendingWindow("office", office)},
            "p1",
            metrics=self.metrics,
            clock=self.clock,
        )

    async def check(self, advance: float = 0.0) -> set[str]:
        self.clock.now += advance
        await self.poller.refresh()
        return {b.watch for b in await self.watcher.check()}

    async def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        entries: Any = await self.redis.xrange(self.keys.events)
        found = []
        for _id, fields in entries:
            event = decode_event(fields[b"e"])
            if event.type.startswith("watch."):
                assert event.source.provider == "tocsin"
                found.append((event.type, event.data))
        return found

    def gauge(self, watch: str) -> float:
        value = self.metrics.registry.get_sample_value("tocsin_watch_breached", {"watch": watch})
        assert value is not None
        return value


@pytest.fixture
async def redis(redis_url: str) -> Any:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def post(redis: Redis, provider: str) -> None:
    """An event accepted the way the intake accepts one."""
    enqueuer = Enqueuer(redis, Layout("tocsin"), 86400)
    enqueuer.start()
    raw = make_event(source={"provider": provider})
    event = Event(
        id=raw["id"],
        type=raw["type"],
        occurred_at=datetime.now(UTC),
        source=EventSource(provider=provider),
        data=raw["data"],
    )
    assert await enqueuer.enqueue(event.id, encode_event(event)) is not None
    await enqueuer.stop()


async def test_activity_alerts_once_in_the_window_and_recovers(redis: Redis) -> None:
    rig = Rig(
        redis,
        {
            "every": "1m",
            "cp": {
                "kind": "activity",
                "provider": "centralpay",
                "at_least": 1,
                "per": "1h",
                "during": "office",
            },
        },
        MONDAY_10,
    )
    assert await rig.check() == set()  # watching starts: nothing judged yet
    await post(redis, "stripe")  # another provider's events do not count
    assert await rig.check(30 * 60) == set()  # half an hour watched: too early to say
    assert await rig.check(31 * 60) == {"cp"}  # 10:00-11:01 without a CentralPay event
    assert rig.gauge("cp") == 1
    for _ in range(3):  # still quiet: no second alert
        assert await rig.check(10 * 60) == {"cp"}
    await post(redis, "centralpay")
    assert await rig.check(60) == set()
    assert rig.gauge("cp") == 0
    alerts = await rig.alerts()
    assert [t for t, _ in alerts] == ["watch.breached", "watch.recovered"]
    breached, recovered = alerts[0][1], alerts[1][1]
    assert breached["provider"] == "centralpay"
    assert "0 events from centralpay in the last 1h (expected at least 1)" in breached["detail"]
    assert recovered["breached_for_seconds"] == 3 * 10 * 60 + 60
    # Outside the window a quiet gateway alerts nobody.
    rig.clock.now = datetime(2026, 12, 5, 11, 0, tzinfo=UTC).timestamp()  # Saturday
    assert await rig.check() == set()
    rig.clock.now = datetime(2026, 12, 7, 7, 30, tzinfo=UTC).timestamp()  # Monday 08:30
    assert await rig.check() == set()  # the window has been open half an hour only
    assert await rig.check(31 * 60) == {"cp"}  # 09:01: a whole open hour, no event
    assert [t for t, _ in await rig.alerts()].count("watch.breached") == 2


async def test_queue_age_alerts_once_and_recovers_when_the_job_goes(redis: Redis) -> None:
    rig = Rig(redis, {"every": "30s", "late": {"kind": "queue_age", "max_age": "15m"}}, time.time())
    entry = await redis.xadd(rig.keys.deliveries("mail"), {"j": b"{}", "e": b"{}"})
    assert await rig.check() == set()
    assert await rig.check(16 * 60) == {"late"}
    assert await rig.check(60) == {"late"}
    await redis.xdel(rig.keys.deliveries("mail"), entry)  # sent
    assert await rig.check(30) == set()
    alerts = await rig.alerts()
    assert [t for t, _ in alerts] == ["watch.breached", "watch.recovered"]
    assert re.fullmatch(
        r"oldest due job waiting over 15m: mail 15m59s|.*mail 16m", alerts[0][1]["detail"]
    )


async def test_dead_letter_growth_alerts_once_and_recovers_when_the_period_passes(
    redis: Redis,
) -> None:
    rig = Rig(
        redis,
        {"dlq": {"kind": "dead_letters", "channel": "hook", "more_than": 2, "per": "1h"}},
        time.time(),
    )
    assert await rig.check() == set()
    for _ in range(2):
        await redis.xadd(rig.keys.dead, {"channel": "hook", "reason": "HTTP 400"})
        await redis.xadd(rig.keys.dead, {"channel": "mail", "reason": "HTTP 400"})
    assert await rig.check(HOUR) == set()  # two on hook: not more than 2
    await redis.xadd(rig.keys.dead, {"channel": "hook", "reason": "HTTP 400"})
    assert await rig.check(60) == {"dlq"}
    assert await rig.check(60) == {"dlq"}
    assert await rig.check(HOUR - 3 * 60) == {"dlq"}  # all three still within the hour
    assert await rig.check(5 * 60) == set()  # the first two are over an hour old
    alerts = await rig.alerts()
    assert [t for t, _ in alerts] == ["watch.breached", "watch.recovered"]
    assert alerts[0][1]["channel"] == "hook"
    assert "3 dead letters in the last 1h (more than 2): hook 3" in alerts[0][1]["detail"]


async def test_endpoint_disabled_alerts_once_and_recovers_when_enabled(redis: Redis) -> None:
    rig = Rig(redis, {"off": {"kind": "endpoint_disabled"}}, time.time())
    assert await rig.check() == set()
    await redis.hset(rig.layout.endpoint("hook"), mapping={"disabled_at": str(time.time())})
    assert await rig.check(5) == {"off"}
    assert await rig.check(5) == {"off"}
    breaches = await current_breaches(redis, rig.layout)
    assert [(b.watch, b.kind, b.detail) for b in breaches] == [
        ("off", "endpoint_disabled", "disabled: hook")
    ]
    assert await enable_endpoint(redis, rig.layout, "hook")
    assert await rig.check(5) == set()
    assert [t for t, _ in await rig.alerts()] == ["watch.breached", "watch.recovered"]


async def test_two_processes_alert_once(redis: Redis) -> None:
    """Two watchers on one Redis: only the leaseholder evaluates, one alert in all."""
    watch = {"off": {"kind": "endpoint_disabled", "channel": "hook"}}
    one, two = Rig(redis, watch, time.time()), Rig(redis, watch, time.time())
    two.watcher.holder = "p2"
    await redis.hset(one.layout.endpoint("hook"), mapping={"disabled_at": "1"})
    for _ in range(3):
        assert await one.check(1) == {"off"}
        assert await two.check(1) == {"off"}  # it reads the state, and exports it
    assert one.watcher.leader and not two.watcher.leader
    assert two.gauge("off") == 1
    assert [t for t, _ in await one.alerts()] == ["watch.breached"]


def test_conf_errors_name_the_file_and_path(tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path,
        redis_url="redis://127.0.0.1:9/0",
        extra="""
        [watch]
        every = "soon"
        [watch.a]
        kind = "activity"
        provider = "centralpay"
        during = "office"
        [watch.b]
        kind = "queue_age"
        channel = "nope"
        max_age = "5m"
        [watch.c]
        kind = "dead_letters"
        per = "1h"
        more_than = -1
        colour = "red"
        [watch.d]
        kind = "quiet"
        """,
    )
    _, problems = read_conf(conf)
    text = "\n".join(problems)
    assert f"{conf}" in text
    assert "watch.every: 'soon' is not a duration" in text
    assert "watch.a: missing required field `per`" in text
    assert "watch.b.channel: no channel 'nope' (channels: hook)" in text
    assert "watch.c.more_than: Expected `int` >= 0" in text
    assert "watch.c: unknown field `colour`" in text
    assert (
        "watch.d.kind: must be one of activity, queue_age, dead_letters, endpoint_disabled" in text
    )
    # Lines are found for the paths the file has.
    assert any(p.startswith(f"{conf}:") and "watch.b.channel" in p for p in problems)


async def test_a_rule_delivers_the_alert_and_the_recovery(
    redis_url: str, tmp_path: Path, receiver: Any, start_gateway: Any
) -> None:
    """Real time, a real gateway: the alert goes out like any event routed by a rule."""
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules="""
        [rules.ops]
        events = ["watch.*"]
        [[rules.ops.actions]]
        channel = "hook"
        [channels.other]
        type = "json_hook"
        url = "http://127.0.0.1:9/unused"
        secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
        """,
        extra="""
        [metrics]
        refresh = "0.2s"
        [watch]
        every = "0.2s"
        [watch.other-off]
        kind = "endpoint_disabled"
        channel = "other"
        """,
    )
    gateway = await start_gateway(conf)
    redis = Redis.from_url(redis_url)
    try:
        layout = Layout("tocsin")
        await redis.hset(layout.endpoint("other"), mapping={"disabled_at": str(time.time())})
        first = await receiver.wait_for(1)
        assert first[0].json()["type"] == "watch.breached"
        assert first[0].json()["data"]["detail"] == "disabled: other"
        await enable_endpoint(redis, layout, "other")
        both = await receiver.wait_for(2)
        assert [r.json()["type"] for r in both] == ["watch.breached", "watch.recovered"]
    finally:
        await redis.aclose()
    await gateway.stop()
    assert len(receiver.received) == 2
