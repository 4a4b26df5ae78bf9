"""One event in, one signed webhook out: the whole path through real sockets and Redis."""

from __future__ import annotations

import asyncio
import json

import redis

from .conftest import Receiver, make_event, write_conf


async def test_event_becomes_signed_webhook(tmp_path, redis_url, receiver: Receiver, start_gateway):
    gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url))
    event = make_event()
    status, body = await gw.post(event)
    assert (status, body) == (202, {"id": event["id"], "duplicate": False})

    [got] = await receiver.wait_for(1)
    sent = got.json()
    assert sent["id"] == event["id"]
    assert sent["type"] == "payment.succeeded"
    assert sent["data"] == {"amount": 1250, "currency": "EUR"}
    assert got.msg_id.startswith("msg_")
    assert receiver.rejected == []


async def test_duplicate_ids_are_enqueued_once(tmp_path, redis_url, receiver, start_gateway):
    gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url))
    event = make_event()
    first = await gw.post(event)
    second = await gw.post(event)
    assert first == (202, {"id": event["id"], "duplicate": False})
    assert second == (200, {"id": event["id"], "duplicate": True})
    await receiver.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_concurrent_copies_are_enqueued_once(tmp_path, redis_url, receiver, start_gateway):
    gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url))
    event = make_event()
    answers = await asyncio.gather(*(gw.post(event) for _ in range(20)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 19 + [202]
    await receiver.wait_for(1)
    await asyncio.sleep(0.5)
    assert [r.json()["id"] for r in receiver.received] == [event["id"]]


async def test_webhook_id_is_stable_per_delivery(tmp_path, redis_url, receiver, start_gateway):
    """A retried delivery carries the same webhook-id, so receivers can dedupe."""
    receiver.status = lambda n: 503 if n == 1 else 204
    gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url))
    await gw.post(make_event())
    [got] = await receiver.wait_for(1, timeout=10)
    assert got.msg_id.startswith("msg_")
    # the first attempt answered 503: the retry must have come with the same id
    assert len({r.msg_id for r in receiver.received}) == 1


async def test_failing_template_fails_only_its_delivery(
    tmp_path, redis_url, receiver, start_gateway, redis_client: redis.Redis
):
    rules = """
    [rules.broken]
    events = ["payment.succeeded"]
    [[rules.broken.actions]]
    channel = "hook"
    template = "broken"

    [rules.plain]
    events = ["payment.succeeded"]
    [[rules.plain.actions]]
    channel = "hook"
    """
    templates = {"broken/json.j2": '{\n  "amount": {{ data.no_such_field }}\n}\n'}
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=receiver.url, rules=rules, templates=templates
    )
    gw = await start_gateway(conf)
    event = make_event()
    assert (await gw.post(event))[0] == 202

    [got] = await receiver.wait_for(1)
    assert got.json()["id"] == event["id"]
    for _ in range(50):
        dead = redis_client.xrange("tocsin:dead")
        if dead:
            break
        await asyncio.sleep(0.1)
    [(_, record)] = dead
    assert record[b"channel"] == b"hook"
    reason = record[b"reason"].decode()
    assert "broken/json.j2" in reason and "line 2" in reason and "no_such_field" in reason
    assert json.loads(record[b"j"])["rule"] == "broken"
