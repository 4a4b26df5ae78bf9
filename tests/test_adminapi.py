"""The admin API (``/admin/v1/``) on a real gateway, real Redis, a real receiver.

One gateway for the module (all roles, archive on), driven through HTTP with the
tokens of ``[admin] tokens``; the CLI commands run the same operations. Tests run in
file order: the archiving test comes last (it moves the whole hot window to disk).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from click.testing import CliRunner
from redis.asyncio import Redis as AsyncRedis

from gateway.archive import Archiver, SqliteArchive, archive_path
from gateway.cli import main
from gateway.conf import load_conf, read_conf
from gateway.intake import Enqueuer
from gateway.keys import Keys, Layout
from gateway.redis_server import RedisServer, free_port
from gateway.service import Gateway

from .conftest import load_plan, make_event, signed_headers, write_conf

pytestmark = pytest.mark.asyncio(loop_scope="module")

READ = "r" * 40
OPERATE = "o" * 40
ADMIN = f"""
[admin]
tokens = [
  {{ name = "viewer", scope = "read", token = "{READ}" }},
  {{ name = "oncall", scope = "operate", token = "{OPERATE}" }},
]
[channels.hook.delivery]
retry_schedule = ["0s", "1h"]
breaker_failures = 0

[scenarios.follow]
trigger = {{ events = ["payment.succeeded"] }}
key = "cus:{{{{ customer.id }}}}"
[[scenarios.follow.steps]]
name = "thanks"
after = "2h"
[[scenarios.follow.steps.actions]]
channel = "hook"
"""


class Hook:
    """A receiver answering by the event's ``data.mode``: ``reject`` 400 (dead letter),
    ``flaky`` 503 on its first call (a retry in an hour), else 204; ``accept_all``
    answers 204 to everything. Counts every call by webhook-id."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.accept_all = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        webhook_id = request.headers["webhook-id"]
        self.calls[webhook_id] += 1
        mode = (body.get("data") or {}).get("mode")
        if not self.accept_all and (
            mode == "reject" or (mode == "flaky" and self.calls[webhook_id] == 1)
        ):
            return web.Response(status=400 if mode == "reject" else 503)
        self.ok[webhook_id] += 1
        return web.Response(status=204)


class Stack:
    def __init__(self, conf: Path, hook: Hook, client: AsyncRedis) -> None:
        self.conf = conf
        self.hook = hook
        self.redis = client
        self.gateway: Gateway | None = None
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        plan = load_plan(self.conf)
        self.gateway = Gateway(plan, load_conf(self.conf).redis.url, port=0)
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self.gateway.run(self.stopping))
        await asyncio.wait_for(self.gateway.ready.wait(), 15)

    async def stop(self) -> None:
        self.stopping.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.bound_port}/admin/v1"

    async def call(
        self, method: str, path: str, token: str | None = OPERATE, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, headers=headers, **kwargs) as resp,
        ):
            return resp.status, await resp.json()

    async def post_event(self, **overrides: Any) -> dict[str, Any]:
        event = make_event(**overrides)
        body = json.dumps(event).encode()
        assert self.gateway is not None
        url = f"http://127.0.0.1:{self.gateway.bound_port}/v1/events"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=signed_headers(body)) as resp,
        ):
            assert resp.status == 202, await resp.text()
        return event

    async def record(self, delivery_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(Keys().record(delivery_id))
        return json.loads(raw) if raw else None

    async def deliveries_of(self, event_id: str, status: str, timeout: float = 10) -> list[Any]:
        """The event's delivery records once all are in ``status``."""
        deadline = time.monotonic() + timeout
        while True:
            code, page = await self.call("GET", f"/deliveries?event_id={event_id}")
            assert code == 200, page
            items = page["items"]
            if items and all(i["status"] == status for i in items):
                return items
            assert time.monotonic() < deadline, f"{event_id}: {items}"
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    url = server.start()
    hook = Hook()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    conf = write_conf(
        tmp_path_factory.mktemp("conf"),
        redis_url=url,
        hook_url=f"http://127.0.0.1:{port}/hook",
        extra=ADMIN,
    )
    client = AsyncRedis.from_url(url)
    stack = Stack(conf, hook, client)
    await stack.start()
    try:
        yield stack
    finally:
        if stack.task is not None and not stack.task.done():
            await stack.stop()
        await client.aclose()
        await runner.cleanup()
        server.stop()


def cli(stack: Stack, *args: str) -> Any:
    return CliRunner().invoke(main, [*args, "--conf", str(stack.conf)])


# -- auth ---------------------------------------------------------------------------------


async def test_tokens_and_scopes(stack: Stack):
    assert (await stack.call("GET", "/events", token=None))[0] == 401
    status, body = await stack.call("GET", "/events", token="x" * 40)
    assert status == 401 and body["error"] == "unauthorized"
    assert (await stack.call("GET", "/events", token=READ))[0] == 200
    status, body = await stack.call("POST", "/endpoints/hook/disable", token=READ, json={})
    assert status == 403 and "viewer" in body["message"]
    status, body = await stack.call("POST", "/endpoints/hook/disable", json={"reason": "test"})
    assert status == 200 and body["disabled"] is True
    status, body = await stack.call("GET", "/endpoints", token=READ)
    [hook] = body["items"]
    assert hook["disabled_reason"] == "disabled by oncall: test"
    assert (await stack.call("POST", "/endpoints/hook/enable"))[1]["was_disabled"] is True
    status, body = await stack.call("POST", "/endpoints/nope/enable")
    assert status == 400 and body["where"] == "channel"
    # The document is public: it holds no data.
    assert (await stack.call("GET", "/openapi.json", token=None))[0] == 200


async def test_off_without_tokens(tmp_path: Path, stack: Stack):
    conf = write_conf(tmp_path, redis_url=load_conf(stack.conf).redis.url)
    gateway = Gateway(load_plan(conf), load_conf(conf).redis.url, ("intake",), port=0)
    stopping = asyncio.Event()
    task = asyncio.create_task(gateway.run(stopping))
    await asyncio.wait_for(gateway.ready.wait(), 10)
    try:
        url = f"http://127.0.0.1:{gateway.bound_port}/admin/v1/events"
        headers = {"Authorization": f"Bearer {OPERATE}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            assert r.status == 404
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)


# -- search -------------------------------------------------------------------------------


async def test_search_across_filters_and_pages(stack: Stack):
    mine = [
        await stack.post_event(
            customer={"id": "cus_search", "email": "s@example.com"},
            refs={"invoice_ref": f"FA-S{n % 2}"},
        )
        for n in range(5)
    ]
    other = await stack.post_event(customer={"id": "cus_other"}, refs={"invoice_ref": "FA-S0"})
    for event in [*mine, other]:
        await stack.deliveries_of(event["id"], "delivered")

    # By customer, two at a time: every event once, newest first.
    seen, cursor = [], None
    while True:
        query = "/events?customer_id=cus_search&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await stack.call("GET", query, token=READ)
        assert status == 200, page
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in reversed(mine)]

    status, page = await stack.call("GET", "/events?invoice_ref=FA-S0", token=READ)
    assert {i["id"] for i in page["items"]} == {
        mine[0]["id"],
        mine[2]["id"],
        mine[4]["id"],
        other["id"],
    }
    status, page = await stack.call("GET", f"/events?id={other['id']}", token=READ)
    assert [i["event"]["customer"]["id"] for i in page["items"]] == ["cus_other"]
    status, page = await stack.call(
        "GET", "/events?customer_id=cus_search&invoice_ref=FA-S1&type=payment.*", token=READ
    )
    assert {i["id"] for i in page["items"]} == {mine[1]["id"], mine[3]["id"]}
    status, page = await stack.call("GET", "/events?type=refund.*", token=READ)
    assert page["items"] == []

    status, page = await stack.call("GET", "/deliveries?customer_id=cus_search&limit=3")
    assert len(page["items"]) == 3 and page["next_cursor"]
    status, rest = await stack.call(
        "GET", f"/deliveries?customer_id=cus_search&cursor={page['next_cursor']}"
    )
    ids = {i["event_id"] for i in page["items"] + rest["items"]}
    assert ids == {e["id"] for e in mine} and rest["next_cursor"] is None
    status, page = await stack.call("GET", "/deliveries?invoice_ref=FA-S1&status=delivered")
    assert {i["event_id"] for i in page["items"]} == {mine[1]["id"], mine[3]["id"]}
    status, page = await stack.call("GET", "/deliveries?channel=hook&status=delivered&limit=500")
    assert {e["id"] for e in [*mine, other]} <= {i["event_id"] for i in page["items"]}

    delivery = page["items"][0]
    status, one = await stack.call("GET", f"/deliveries/{delivery['id']}", token=READ)
    assert status == 200 and one["attempts"][-1]["outcome"] == "delivered"


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("/events?colour=red", "colour"),
        ("/events?cursor=not-a-cursor", "cursor"),
        ("/events?cursor=WzFd", "cursor"),  # valid base64 of [1]: not this listing's
        ("/events?limit=501", "limit"),
        ("/events?limit=-1", "limit"),
        ("/events?since=yesterday-ish", "since"),
        ("/deliveries?status=lost", "status"),
        ("/deliveries?channel=nope", "channel"),
        ("/deliveries?cursor=WyJhIiwxXQ", "cursor"),
        ("/dead-letters?limit=0", "limit"),
        ("/scenarios?status=sleeping", "status"),
        ("/audit?cursor=%E2%9C%93", "cursor"),
    ],
)
async def test_bad_input_is_a_400_naming_it(stack: Stack, query: str, where: str):
    status, body = await stack.call("GET", query, token=READ)
    assert status == 400, body
    assert body["where"] == where and body["message"]


async def test_bad_bodies_are_400s(stack: Stack):
    status, body = await stack.call("POST", "/replays", data=b"{not json")
    assert status == 400 and body["where"] == "body"
    status, body = await stack.call("POST", "/replays", json={"filter": {"colour": "red"}})
    assert status == 400 and "colour" in body["message"]
    status, body = await stack.call("POST", "/replays", json={"filter": {}})
    assert status == 400 and body["where"] == "filter"
    status, body = await stack.call("POST", "/scenarios/cancel", json={"key": 3})
    assert status == 400


# -- timeline -----------------------------------------------------------------------------


async def test_timeline(stack: Stack):
    event = await stack.post_event(customer={"id": "cus_timeline"})
    [delivery] = await stack.deliveries_of(event["id"], "delivered")
    status, story = await stack.call("GET", f"/events/{event['id']}/timeline", token=READ)
    assert status == 200, story
    assert story["event"]["id"] == event["id"]
    [shown] = story["deliveries"]
    assert shown["id"] == delivery["id"] and shown["erp"] is False
    assert [a["outcome"] for a in shown["attempts"]] == ["delivered"]
    assert story["erp_calls"] == []
    [scenario] = story["scenarios"]
    assert scenario["role"] == "started" and scenario["key"] == "cus:cus_timeline"
    assert [s["status"] for s in scenario["steps"]] == ["pending"]
    assert (await stack.call("GET", "/events/evt_nothing/timeline", token=READ))[0] == 404

    # The scenario instance it started: listed, then cancelled by an operator.
    status, page = await stack.call("GET", "/scenarios?key=cus:cus_timeline", token=READ)
    assert [i["status"] for i in page["items"]] == ["active"]
    status, result = await stack.call("POST", "/scenarios/cancel", json={"key": "cus:cus_timeline"})
    assert result["cancelled"] == ["follow"]
    status, page = await stack.call("GET", "/scenarios?key=cus:cus_timeline&status=cancelled")
    assert page["items"][0]["reason"] == "cancelled by oncall"


# -- retry now ----------------------------------------------------------------------------


async def test_retry_now(stack: Stack):
    event = await stack.post_event(
        customer={"id": "cus_retry"}, data={"amount": 100, "currency": "EUR", "mode": "flaky"}
    )
    [waiting] = await stack.deliveries_of(event["id"], "retrying")
    # An hour away, give or take the schedule's +/-20 % jitter.
    assert waiting["next_at"] > time.time() + 0.8 * 3600 - 60
    status, body = await stack.call("POST", f"/deliveries/{waiting['id']}/retry", token=READ)
    assert status == 403
    status, body = await stack.call("POST", f"/deliveries/{waiting['id']}/retry")
    assert status == 200 and body["queued"] is True
    [done] = await stack.deliveries_of(event["id"], "delivered")
    outcomes = [a["outcome"] for a in done["attempts"]]
    assert outcomes == ["retry", "replayed", "delivered"], outcomes
    assert stack.hook.ok[waiting["id"]] == 1
    assert await stack.redis.zcard(Keys().retries) == 0
    status, body = await stack.call("POST", f"/deliveries/{waiting['id']}/retry")
    assert status == 409 and "delivered" in body["message"]

    # The CLI runs the same operation.
    event = await stack.post_event(
        customer={"id": "cus_retry"}, data={"amount": 100, "currency": "EUR", "mode": "flaky"}
    )
    [waiting] = await stack.deliveries_of(event["id"], "retrying")
    result = await asyncio.to_thread(cli, stack, "deliveries", "retry", waiting["id"])
    assert result.exit_code == 0, result.output
    await stack.deliveries_of(event["id"], "delivered")
    result = await asyncio.to_thread(cli, stack, "deliveries", "retry", waiting["id"])
    assert result.exit_code == 1 and "only one waiting for a retry" in result.output


# -- dead letters and bulk replay ---------------------------------------------------------


async def wait_job(stack: Stack, job_id: str, done: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, job = await stack.call("GET", f"/replays/{job_id}", token=READ)
        assert status == 200, job
        if done(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_bulk_replay(stack: Stack):
    events = [
        await stack.post_event(
            customer={"id": "cus_bulk"}, data={"amount": 100, "currency": "EUR", "mode": "reject"}
        )
        for _ in range(8)
    ]
    dead = [(await stack.deliveries_of(e["id"], "dead"))[0]["id"] for e in events]
    status, page = await stack.call("GET", "/dead-letters?channel=hook&limit=3", token=READ)
    assert len(page["items"]) == 3 and page["next_cursor"]
    status, rest = await stack.call(
        "GET", f"/dead-letters?channel=hook&cursor={page['next_cursor']}"
    )
    listed = [i["delivery_id"] for i in page["items"] + rest["items"]]
    assert listed == dead  # oldest first, each once
    stack.hook.accept_all = True
    flt = {"customer_id": "cus_bulk", "status": "dead"}

    status, dry = await stack.call("POST", "/replays", token=READ, json={"filter": flt})
    assert status == 403  # even a dry run is a write's first step: operate only
    status, dry = await stack.call("POST", "/replays", json={"filter": flt})
    assert dry["count"] == 8 and dry["by_status"] == {"dead": 8} and len(dry["sample"]) == 8
    assert not any(stack.hook.ok[d] for d in dead), "a dry run sends nothing"
    cli_dry = await asyncio.to_thread(
        cli, stack, "replays", "start", "--customer", "cus_bulk", "--status", "dead", "--dry-run"
    )
    assert "8 deliveries would be replayed" in cli_dry.output, cli_dry.output

    # A slow job, cancelled part way: what it queued goes, nothing more.
    status, job = await stack.call(
        "POST", "/replays", json={"filter": flt, "dry_run": False, "rate": 4}
    )
    assert status == 202 and job["state"] == "planning"
    await wait_job(stack, job["id"], lambda j: j["position"] >= 2)
    status, cancelled = await stack.call("POST", f"/replays/{job['id']}/cancel")
    assert status == 200 and cancelled["state"] == "cancelled"
    await asyncio.sleep(0.5)
    first = await wait_job(stack, job["id"], lambda j: True)
    sent = {d for d in dead if stack.hook.ok[d]}
    assert 2 <= len(sent) == first["queued"] < 8, (sent, first)
    assert (await stack.call("POST", f"/replays/{job['id']}/cancel"))[0] == 409

    # Another job for the rest, interrupted by a gateway restart: resumed, each sent once.
    status, job = await stack.call(
        "POST", "/replays", json={"filter": flt, "dry_run": False, "rate": 4}
    )
    await wait_job(stack, job["id"], lambda j: j["state"] == "running" and j["position"] >= 1)
    await stack.stop()
    await stack.start()
    finished = await wait_job(stack, job["id"], lambda j: j["state"] == "done")
    assert finished["total"] == 8 - len(sent) and finished["queued"] == finished["total"]
    deadline = time.monotonic() + 10
    while not all(stack.hook.ok[d] for d in dead):
        assert time.monotonic() < deadline, {d: stack.hook.ok[d] for d in dead}
        await asyncio.sleep(0.05)
    assert all(stack.hook.ok[d] == 1 for d in dead), stack.hook.ok

    # As if it had crashed before saving any progress: run again from the start, it
    # skips what it already replayed (recorded in the same step as each queueing).
    stack.hook.accept_all = True
    key = Layout().job(job["id"])
    for record_id in dead:  # make them replayable again, so only the job's set stops it
        assert (await stack.record(record_id))["status"] == "delivered"
    await stack.redis.hset(key, mapping={"state": "running", "position": 0, "queued": 0})
    again = await wait_job(stack, job["id"], lambda j: j["state"] == "done")
    await asyncio.sleep(0.5)
    assert again["queued"] == finished["total"]
    assert all(stack.hook.ok[d] == 1 for d in dead), stack.hook.ok

    status, jobs = await stack.call("GET", "/replays", token=READ)
    assert [j["id"] for j in jobs["items"][:2]] == [job["id"], first["id"]]


# -- audit --------------------------------------------------------------------------------


async def test_audit_trail(stack: Stack):
    status, page = await stack.call("GET", "/audit?limit=500", token=READ)
    assert status == 200
    actions = Counter((e["actor"], e["action"], e["outcome"]) for e in page["items"])
    assert actions[("oncall", "endpoint.disable", "ok")] == 1
    assert actions[("oncall", "endpoint.enable", "ok")] == 1
    assert actions[("oncall", "endpoint.enable", "refused")] == 1  # the unknown channel
    assert actions[("oncall", "delivery.retry_now", "ok")] == 1
    assert actions[("oncall", "delivery.retry_now", "refused")] == 1
    assert actions[("oncall", "scenario.cancel", "ok")] == 1
    assert actions[("oncall", "replay.start", "ok")] == 2
    assert actions[("oncall", "replay.cancel", "ok")] == 1
    cli_users = {e["actor"] for e in page["items"] if e["actor"].startswith("cli")}
    assert cli_users, "the CLI's retry is audited too"
    assert not any(e["actor"] == "viewer" for e in page["items"]), "reads are not writes"
    retry = next(e for e in page["items"] if e["action"] == "delivery.retry_now")
    at = datetime.fromisoformat(retry["at"].replace("Z", "+00:00")).timestamp()
    assert retry["target"].startswith("msg_") and time.time() - 600 < at <= time.time()
    status, first = await stack.call("GET", "/audit?action=replay.start&limit=1", token=READ)
    status, second = await stack.call(
        "GET", f"/audit?action=replay.start&limit=1&cursor={first['next_cursor']}", token=READ
    )
    assert first["items"][0]["id"] > second["items"][0]["id"] and second["next_cursor"] is None


# -- the hot-tier indexes -----------------------------------------------------------------


async def test_without_an_archive_the_intake_trims_the_indexes(stack: Stack):
    """``history.archive = "off"``: nothing archives, so an index keeps the retention
    (members older go as a new one comes) and expires once idle that long."""
    keys = Keys("trimtest")
    enqueuer = Enqueuer(stack.redis, keys, 60, retention=3600, index_retention=3600)
    await stack.redis.zadd(keys.by_customer("cus_t"), {"1-0": 1})  # from long ago
    enqueuer.start()
    try:
        assert await enqueuer.enqueue("evt_t1", b"{}", "cus_t", "FA-T")
    finally:
        await enqueuer.stop()
    members = await stack.redis.zrange(keys.by_customer("cus_t"), 0, -1)
    assert len(members) == 1 and members[0] != b"1-0"
    assert 3500 < await stack.redis.ttl(keys.by_customer("cus_t")) <= 3600
    assert 3500 < await stack.redis.ttl(keys.by_invoice("FA-T")) <= 3600
    # With the archive (no index retention), neither: the archiver trims.
    plain = Enqueuer(stack.redis, keys, 60, retention=3600)
    plain.start()
    try:
        assert await plain.enqueue("evt_t2", b"{}", "cus_u", None)
    finally:
        await plain.stop()
    assert await stack.redis.ttl(keys.by_customer("cus_u")) == -1


async def test_indexes_follow_routing_then_archiving(stack: Stack):
    keys = Keys()
    r = stack.redis
    entries: Any = await r.xrange(keys.events)
    assert entries
    expected_c: dict[str, set[bytes]] = {}
    expected_i: dict[str, set[bytes]] = {}
    for entry_id, fields in entries:
        event = json.loads(fields[b"e"])
        if event.get("customer"):
            expected_c.setdefault(event["customer"]["id"], set()).add(entry_id)
        if event.get("refs", {}).get("invoice_ref"):
            expected_i.setdefault(event["refs"]["invoice_ref"], set()).add(entry_id)
    for customer, ids in expected_c.items():
        assert set(await r.zrange(keys.by_customer(customer), 0, -1)) == ids, customer
    for ref, ids in expected_i.items():
        assert set(await r.zrange(keys.by_invoice(ref), 0, -1)) == ids, ref
    records = [
        json.loads(v)
        for v in await r.mget(
            [keys.record(i.decode()) for i in await r.zrange(keys.history, 0, -1)]
        )
        if v
    ]
    by_event: dict[str, set[bytes]] = {}
    for rec in records:
        if not rec["rule"].startswith("scenario"):
            by_event.setdefault(rec["event_id"], set()).add(rec["id"].encode())
    for event_id, ids in by_event.items():
        assert ids <= set(await r.smembers(keys.event_deliveries(event_id))), event_id

    # Archive everything (a clock past the hot window): the indexes leave with it, and
    # the same searches answer from the archive.
    await stack.stop()
    conf = load_conf(stack.conf)
    store = await SqliteArchive.open(archive_path(conf.data_dir))
    try:
        archiver = Archiver(
            r,
            keys,
            store,
            hot_window=60,
            retention=86400,
            owner="t",
            clock=lambda: time.time() + 3600,
        )
        while (await archiver.archive_once()).moved:
            pass
    finally:
        await store.close()
    left = [k async for k in r.scan_iter(match=f"{keys.search_index}*")]
    assert await r.xlen(keys.events) == 0
    # Only deliveries whose records are not archived keep an index (none without a record).
    assert left == [], left
    await stack.start()
    _, page = await stack.call("GET", "/events?customer_id=cus_search", token=READ)
    assert len(page["items"]) == 5
    _, page = await stack.call("GET", "/deliveries?customer_id=cus_search", token=READ)
    assert len(page["items"]) == 5 and all(i["status"] == "delivered" for i in page["items"])
    event_id = page["items"][0]["event_id"]
    _, story = await stack.call("GET", f"/events/{event_id}/timeline", token=READ)
    assert [d["status"] for d in story["deliveries"]] == ["delivered"]


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ('{ name = "a", scope = "read", token = "short" }', "admin.tokens[0].token: at least 32"),
        (
            f'{{ name = "a", scope = "read", token = "{READ}" }}, '
            f'{{ name = "a", scope = "operate", token = "{OPERATE}" }}',
            "admin.tokens[1].name: 'a' is used twice",
        ),
        (f'{{ name = "a", scope = "admin", token = "{READ}" }}', "admin.tokens[0].scope"),
        ('{ name = "a", scope = "read", token = "${NOT_SET_42}" }', "NOT_SET_42 is not set"),
    ],
)
async def test_token_mistakes_are_conf_errors(tmp_path: Path, tokens: str, expected: str):
    conf = write_conf(
        tmp_path, redis_url="redis://127.0.0.1:9", extra=f"[admin]\ntokens = [{tokens}]\n"
    )
    _, problems = read_conf(conf)
    assert any(expected in p and "tocsin.toml:" in p for p in problems), problems


# -- the conf ----------------------------------------------------------------------------


async def test_reload_through_the_api_refuses_a_broken_conf_and_is_audited(stack: Stack):
    """``POST /reload``: operate only; a conf with a problem is refused with it (409) and
    the old one keeps running; a good one is swapped in; both are in the audit trail;
    ``GET /processes`` shows this process with the conf it runs."""
    assert (await stack.call("POST", "/reload", token=READ, json={}))[0] == 403
    assert (await stack.call("POST", "/reload", json={"now": True}))[0] == 400
    good = stack.conf.read_text()
    stack.conf.write_text(good.replace('type = "json_hook"', 'type = "json_hookk"'))
    try:
        status, body = await stack.call("POST", "/reload", json={})
    finally:
        stack.conf.write_text(good)
    assert status == 409 and body["ok"] is False, body
    assert any("json_hookk" in problem for problem in body["problems"]), body
    status, body = await stack.call("POST", "/reload")
    assert status == 200 and body["ok"] is True and body["problems"] == [], body
    running = body["conf_hash"]
    status, listing = await stack.call("GET", "/processes", token=READ)
    assert status == 200
    assert stack.gateway is not None
    mine = [p for p in listing["items"] if p["consumer"] == stack.gateway.consumer]
    assert [p["conf_hash"] for p in mine] == [running], listing
    status, audit = await stack.call("GET", "/audit?action=conf.reload", token=READ)
    outcomes = [entry["outcome"] for entry in audit["items"]]
    assert status == 200 and sorted(outcomes) == ["ok", "refused"], audit
    # The pipeline still runs under the conf it reloaded.
    event = await stack.post_event()
    await stack.deliveries_of(event["id"], "delivered")


# -- personal data -----------------------------------------------------------------------


async def test_forget_through_the_api_erases_the_customer_and_is_audited(stack: Stack):
    """``POST /customers/{id}/forget``: operate only; the customer's email leaves the
    event and its delivery records; the erasure is in the audit under the token's name."""
    email = "forget.me@example.org"
    customer = {"id": "cus_api_forget", "email": email, "locale": "fr", "kind": "b2c"}
    event = await stack.post_event(customer=customer)
    delivered = await stack.deliveries_of(event["id"], "delivered")
    code, page = await stack.call("GET", "/events?customer_id=cus_api_forget", token=READ)
    assert code == 200 and email in json.dumps(page["items"])
    path = "/customers/cus_api_forget/forget"
    assert (await stack.call("POST", path, token=READ, json={}))[0] == 403
    assert (await stack.call("POST", path, json={"values": "x"}))[1]["where"] == "body"
    code, report = await stack.call("POST", path, json={"values": ["+33699999999"]})
    assert code == 200 and report["customer"] == "cus_api_forget", report
    assert (
        report["changed"].get("events_redacted", 0) + report["changed"].get("archive_events", 0)
        >= 1
    ), report
    for item in delivered:
        record = await stack.record(item["id"])
        assert record is not None and email not in json.dumps(record)
    code, page = await stack.call("GET", "/events?customer_id=cus_api_forget", token=READ)
    assert email not in json.dumps(page)
    code, audit = await stack.call("GET", "/audit?action=forget", token=READ)
    [entry] = audit["items"]
    assert entry["actor"] == "oncall" and entry["target"] == "customer:cus_api_forget"


async def test_suppression_list_through_the_api(stack: Stack):
    """Add, check, list (paged), remove; bad addresses and reasons are 400s naming the
    field; writes need operate and are audited with the address masked."""
    add = {"address": "Jeanne@Example.com", "reason": "unsubscribed", "note": "asked by mail"}
    assert (await stack.call("POST", "/suppressions", token=READ, json=add))[0] == 403
    code, entry = await stack.call("POST", "/suppressions", json=add)
    assert code == 200 and entry["address"] == "jeanne@example.com", entry
    assert entry["author"] == "oncall" and entry["until"] is None
    later = time.time() + 3600
    phone = {"address": "+33612345678", "reason": "stop_reply", "until": later}
    assert (await stack.call("POST", "/suppressions", json=phone))[0] == 200
    for body, where in (
        ({"address": "not-an-address"}, "body.address"),
        ({"address": "a@example.com", "reason": "bored"}, "body.reason"),
        ({"address": "a@example.com", "until": 1.0}, "body.until"),
    ):
        code, answer = await stack.call("POST", "/suppressions", json=body)
        assert code == 400 and answer["where"] == where, answer
    code, check = await stack.call("GET", "/suppressions/JEANNE@example.com", token=READ)
    assert code == 200 and check["listed"] is True
    assert check["skipped"] == {
        "transactional": None,
        "reminder": "unsubscribed",
        "marketing": "unsubscribed",
    }
    code, page = await stack.call("GET", "/suppressions?limit=1", token=READ)
    assert code == 200 and [e["address"] for e in page["items"]] == ["+33612345678"]
    code, rest = await stack.call("GET", f"/suppressions?cursor={page['next_cursor']}")
    assert [e["address"] for e in rest["items"]] == ["jeanne@example.com"]
    assert rest["next_cursor"] is None
    code, page = await stack.call("GET", "/suppressions?reason=stop_reply", token=READ)
    assert [e["until"] for e in page["items"]] == [pytest.approx(later)]
    assert (await stack.call("DELETE", "/suppressions/jeanne@example.com", token=READ))[0] == 403
    code, removed = await stack.call("DELETE", "/suppressions/jeanne@example.com")
    assert code == 200 and removed["reason"] == "unsubscribed"
    assert (await stack.call("DELETE", "/suppressions/jeanne@example.com"))[0] == 404
    code, check = await stack.call("GET", "/suppressions/jeanne@example.com")
    assert check == {
        "address": "jeanne@example.com",
        "listed": False,
        "entry": None,
        "skipped": {"transactional": None, "reminder": None, "marketing": None},
    }
    assert (await stack.call("GET", "/suppressions/nope"))[1]["where"] == "address"
    code, audit = await stack.call("GET", "/audit?action=suppression.add", token=READ)
    assert {e["target"] for e in audit["items"]} == {"j***@e***.com", "+336******78"}
    assert "jeanne" not in json.dumps(audit)


async def test_search_by_address_needs_a_privacy_key(stack: Stack):
    """This stack has no ``[privacy] key``: its records carry no hash to match."""
    code, answer = await stack.call("GET", "/deliveries?to=client@example.com", token=READ)
    assert code == 400 and answer["where"] == "to"
    assert answer["message"] == "no privacy key: recipients are stored masked only"
    result = cli(stack, "deliveries", "--to", "client@example.com")
    assert result.exit_code == 2 and "no privacy key" in result.output, result.output
