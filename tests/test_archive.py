"""History archive: what leaves Redis past the hot window is still found, replayed, and
resent with the same webhook-id. Real gateway, real receiver, real Redis, and each archive
backend in turn (SQLite; a real PostgreSQL server); time moves past the hot window
through the archiver's clock, not by sleeping."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aredis
from click.testing import CliRunner

from gateway import admin, admin_events
from gateway.archive import Archiver, DeliveryQuery, SqliteArchive, archive_path
from gateway.cli import main as cli
from gateway.conf import load_conf
from gateway.keys import Keys, Layout

from .conftest import load_plan, make_event, write_conf
from .postgres_server import Backend

HOT = 72 * 3600.0


async def _settled(client: aredis.Redis, count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` delivery records exist (settling is batched)."""
    deadline = time.monotonic() + timeout
    while await client.zcard(Keys().history) < count:
        assert time.monotonic() < deadline, "deliveries not settled in time"
        await asyncio.sleep(0.02)


def _cli(conf: Path, *args: str) -> Any:
    """``tocsin ARGS --conf CONF`` in-process (a thread: the command runs its own loop)."""
    return CliRunner().invoke(cli, [*args, "--conf", str(conf)], catch_exceptions=False)


async def test_history_past_the_hot_window_is_read_replayed_and_resent_with_the_same_webhook_id(
    tmp_path: Path, redis_url: str, receiver: Any, start_gateway: Any, archive_backend: Backend
) -> None:
    conf_path = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        extra=f"[history]\n{archive_backend.conf_lines()}",
    )
    # The first send is refused for good: that delivery becomes a dead letter.
    receiver.status = lambda n: 400 if n == 1 else 204
    gw = await start_gateway(conf_path)
    client = aredis.Redis.from_url(redis_url)
    store = await archive_backend.open(load_conf(conf_path).data_dir)
    try:
        dead_event = make_event(customer={"id": "cus_dead"}, refs={"invoice_ref": "FA-9"})
        assert (await gw.post(dead_event))[0] == 202
        deadline = time.monotonic() + 10
        while await client.xlen(Keys().dead) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        events = [
            make_event(customer={"id": f"cus_{i}"}, refs={"invoice_ref": f"FA-{i}"})
            for i in range(3)
        ]
        for event in events:
            assert (await gw.post(event))[0] == 202
        first = await receiver.wait_for(3)
        sent = {r.json()["id"]: r.msg_id for r in first}
        await _settled(client, 4)

        # Three days and a minute later, as the archiver sees it.
        later = time.time() + HOT + 60
        archiver = Archiver(
            client, Keys(), store, hot_window=HOT, retention=30 * 86400, owner="t",
            clock=lambda: later,
        )  # fmt: skip
        result = await archiver.archive_once()
        assert (result.events, result.deliveries, result.dead) == (4, 4, 1)
        assert (await archiver.archive_once()).moved == 0  # nothing left, nothing twice
        # Redis keeps no history past the hot window; dedupe still holds.
        assert await client.xlen(Keys().events) == 0
        assert await client.zcard(Keys().history) == 0
        assert await client.xlen(Keys().dead) == 0
        assert not await client.keys(Keys().record("*"))
        assert (await gw.post(events[0]))[0] == 200  # a duplicate, as before archiving

        # Read through both tiers, as the commands do.
        keys = Keys()
        found = await admin.find_deliveries(client, keys, archive=store)
        assert {r.event_id for r in found} == {e["id"] for e in [dead_event, *events]}
        target = events[1]["id"]
        shown = await admin_events.show_event(client, keys, target, store)
        assert shown is not None and shown.state == "routed" and shown.id == target
        listed = await admin_events.list_events(client, keys, archive=store)
        assert {e.id for e in listed} >= {e["id"] for e in events}
        by_customer = await store.find_deliveries(DeliveryQuery(customer_id="cus_1", limit=10))
        assert [r.event_id for r in by_customer] == [target]

        # Replay of an archived event: delivered already, so skipped unless forced;
        # forced, it carries the webhook-id of the original send.
        replay = await admin.replay_event(
            client, keys, gw.gateway.plan.rules, target, archive=store
        )
        assert replay is not None and not replay.queued and len(replay.skipped) == 1
        replay = await admin.replay_event(
            client, keys, gw.gateway.plan.rules, target, force=True, archive=store
        )
        assert replay is not None and len(replay.queued) == 1
        again = (await receiver.wait_for(4))[3]
        assert again.json()["id"] == target
        assert again.msg_id == sent[target]
        await _settled(client, 1)
        record = await admin.show_delivery(client, keys, again.msg_id, store)
        assert record is not None and record.status == "delivered"
        outcomes = [a.outcome for a in record.attempts]
        assert outcomes == ["delivered", "replayed", "delivered"]  # history kept from the archive

        # The archived dead letter: listed, replayed once however many try at once.
        letters = await admin.dead_letters(client, keys, archive=store)
        assert len(letters) == 1 and letters[0].archived
        moved = await asyncio.gather(
            *(admin.replay_dead_letter(client, keys, letters[0], retention=86400, archive=store)
              for _ in range(3))
        )  # fmt: skip
        assert sorted(moved) == [False, False, True]
        resent = (await receiver.wait_for(5))[4]
        assert resent.json()["id"] == dead_event["id"]
        assert resent.msg_id == letters[0].delivery_id
        assert await admin.dead_letters(client, keys, archive=store) == []

        # The commands operators run see the archive.
        out = await asyncio.to_thread(_cli, conf_path, "events", "show", events[2]["id"])
        assert out.exit_code == 0 and events[2]["id"] in out.output and "routed" in out.output
        out = await asyncio.to_thread(_cli, conf_path, "deliveries", "--event", events[2]["id"])
        assert out.exit_code == 0 and "delivered" in out.output, out.output
        out = await asyncio.to_thread(
            _cli, conf_path, "events", "replay", events[0]["id"]
        )  # loads the plan itself
        assert out.exit_code == 0 and "already delivered" in out.output, out.output
    finally:
        await client.aclose()
        await store.close()


async def test_replay_of_an_archived_event_uses_todays_rules(
    tmp_path: Path, redis_url: str, receiver: Any, start_gateway: Any, archive_backend: Backend
) -> None:
    """An event archived before a rule existed is routed by it when replayed."""
    conf_path = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules="""
        [rules.refunds]
        events = ["payment.refunded"]
        [[rules.refunds.actions]]
        channel = "hook"
        """,
        extra=f"[history]\n{archive_backend.conf_lines()}",
    )
    gw = await start_gateway(conf_path)
    client = aredis.Redis.from_url(redis_url)
    store = await archive_backend.open(load_conf(conf_path).data_dir)
    try:
        event = make_event()  # payment.succeeded: no rule yet, nothing sent
        assert (await gw.post(event))[0] == 202
        deadline = time.monotonic() + 10
        while await client.get(Keys().routed_through) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        later = time.time() + HOT + 60
        archiver = Archiver(
            client, Keys(), store, hot_window=HOT, retention=30 * 86400, owner="t",
            clock=lambda: later,
        )  # fmt: skip
        assert (await archiver.archive_once()).events == 1
        assert await client.xlen(Keys().events) == 0

        rules = load_plan(
            write_conf(tmp_path / "new", redis_url=redis_url, hook_url=receiver.url)
        ).rules  # today's rules: every payment
        replay = await admin.replay_event(client, Keys(), rules, event["id"], archive=store)
        assert replay is not None and len(replay.queued) == 1
        got = (await receiver.wait_for(1))[0]
        body = got.json()
        assert (body["id"], body["data"], body["refs"]) == (
            event["id"],
            event["data"],
            event["refs"],
        )
        assert got.msg_id == replay.queued[0].id
    finally:
        await client.aclose()
        await store.close()


async def test_every_shard_is_archived_and_read_back_across_shards(
    tmp_path: Path, redis_url: str, receiver: Any, start_gateway: Any
) -> None:
    """Three shards on one Redis: each shard's history leaves Redis through its own
    archiver, one archive holds all of it (each row with its shard), and the readers
    find every event and delivery whichever shard it came from."""
    conf_path = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url)
    text = conf_path.read_text().replace(
        f'url = "{redis_url}"', f'url = "{redis_url}"\nshards = 3\nprefix = "sh3"'
    )
    conf_path.write_text(text)
    layout = Layout("sh3", 3)
    client = aredis.Redis.from_url(redis_url)
    gw = await start_gateway(conf_path)
    store = await SqliteArchive.open(archive_path(load_conf(conf_path).data_dir))
    try:
        events = [
            make_event(customer={"id": f"cus_{i % 10}"}, refs={"invoice_ref": f"FA-{i}"})
            for i in range(30)
        ]
        for event in events:
            assert (await gw.post(event))[0] == 202
        await receiver.wait_for(30)
        deadline = time.monotonic() + 10
        while sum([await client.zcard(s.history) for s in layout.shards]) < 30:
            assert time.monotonic() < deadline, "deliveries not settled in time"
            await asyncio.sleep(0.02)
        held = [await client.xlen(s.events) for s in layout.shards]
        assert all(held) and sum(held) == 30, held  # every shard took some customers

        later = time.time() + HOT + 60
        for shard in layout.shards:
            archiver = Archiver(
                client, shard, store, hot_window=HOT, retention=30 * 86400, owner="t",
                clock=lambda: later,
            )  # fmt: skip
            result = await archiver.archive_once()
            assert (result.events, result.deliveries) == (held[shard.index],) * 2
            assert await client.xlen(shard.events) == await client.zcard(shard.history) == 0

        for event in events:
            shown = await admin_events.show_event(client, layout, event["id"], store)
            assert shown is not None and shown.id == event["id"]
        found = await admin.find_deliveries(client, layout, archive=store, limit=100)
        assert sorted(r.event_id for r in found) == sorted(e["id"] for e in events)
        by_customer = await store.find_deliveries(DeliveryQuery(customer_id="cus_3", limit=10))
        assert {r.event_id for r in by_customer} == {events[i]["id"] for i in (3, 13, 23)}
        assert (await gw.post(events[0]))[0] == 200  # dedupe holds past the hot window
    finally:
        await store.close()
        await client.aclose()
