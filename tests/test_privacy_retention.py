"""Retention: each kind goes after its own time, running scenarios stay, passes are
bounded, and the dry run counts without removing."""

from __future__ import annotations

import json
import os
import time

import redis as sync_redis
from redis.asyncio import Redis

from gateway.archive import ArchivedEvent, SqliteArchive
from gateway.keys import Layout
from gateway.privacy.audit import audit
from gateway.privacy.retention import Retention, Sweeper

DAY = 86400.0


async def test_each_kind_goes_after_its_time_and_running_scenarios_stay(redis_url, tmp_path):
    layout = Layout("tocsin")
    keys = layout.shards[0]
    client = sync_redis.Redis.from_url(redis_url)
    now_ms = int(time.time() * 1000)
    for _ in range(5):  # routed events
        client.xadd(keys.events, {"e": b"{}"})
    client.set(keys.routed_through, client.xrevrange(keys.events, count=1)[0][0])
    client.xadd(keys.dead, {"kind": "event", "e": b"{}", "reason": "x"})
    client.set(keys.record("msg_1"), b"{}")
    client.zadd(keys.history, {"msg_1": now_ms})
    for key, status in (("a", "completed"), ("b", "active")):
        client.hset(keys.scenario("s", key), mapping={"rev": 1, "doc": json.dumps({
            "scenario": "s", "key": key, "id": "i", "status": status, "started": 0,
            "trigger_event": "e", "trigger_type": "t", "state": {}, "last_occurred": "",
            "steps": []})})  # fmt: skip
        client.zadd(keys.scenarios, {f"s\x1f{key}": now_ms})
    outbox = tmp_path / "outbox"
    (outbox / "email").mkdir(parents=True)
    eml = outbox / "email" / "msg_1.eml"
    eml.write_text("x")
    os.utime(eml, (time.time() - 40 * DAY, time.time() - 40 * DAY))
    (outbox / "sms.jsonl").write_text(
        '{"at": "2020-01-01T00:00:00.000Z", "delivery_id": "old"}\n'
        f'{{"at": "{time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}", "delivery_id": "new"}}\n'
    )
    store = await SqliteArchive.open(tmp_path / "archive.sqlite3")
    redis = Redis.from_url(redis_url)
    try:
        await store.put_events(
            [
                ArchivedEvent(
                    "evt_old", 0, "1-0", now_ms - int(100 * DAY * 1000), "t", None, None, b"{}"
                )
            ]
        )
        await audit(redis, "tocsin", actor="a", action="forget", target="customer:c", outcome="ok")
        retention = Retention(
            events=10 * DAY, deliveries=10 * DAY, dead_letters=10 * DAY, scenarios=10 * DAY,
            outboxes=30 * DAY, audit=365 * DAY, batch=2,
        )  # fmt: skip
        later = Sweeper(
            redis, layout, retention, archive=store, outbox_roots=[outbox],
            clock=lambda: time.time() + 20 * DAY,
        )  # fmt: skip

        dry = await later.sweep(dry_run=True)
        assert dry.counts == {
            "events": 5, "dead_letters": 1, "deliveries": 1, "scenarios": 1, "audit": 0,
            "archive_events": 1, "archive_deliveries": 0, "archive_dead_letters": 0, "outboxes": 2,
        }  # fmt: skip
        assert client.xlen(keys.events) == 5 and eml.exists()  # the dry run removed nothing

        first = await later.sweep()
        assert first.counts["events"] == 2  # bounded: batch = 2 per kind per pass
        while (await later.sweep()).total:
            pass
        assert client.xlen(keys.events) == 0 and client.xlen(keys.dead) == 0
        assert not client.exists(keys.record("msg_1")) and client.zcard(keys.history) == 0
        assert not client.exists(keys.scenario("s", "a"))
        assert client.exists(keys.scenario("s", "b"))  # running: never trimmed
        assert not eml.exists()
        assert [
            json.loads(line)["delivery_id"]
            for line in (outbox / "sms.jsonl").read_text().splitlines()
        ] == ["new"]
        assert await store.get_event("evt_old") is None
        assert client.xlen("tocsin:audit") == 1  # a year: still kept
    finally:
        await redis.aclose()
        await store.close()
        client.close()
