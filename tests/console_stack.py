"""A gateway running the repository's default conf (its channels, scenarios, templates
and sample events), with ``[admin] tokens``, a real Redis and a real merchant receiver:
what the console tests log in to, over HTTP and in a browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from gateway.conf import load_conf
from gateway.keys import Keys
from gateway.redis_server import RedisServer, free_port
from gateway.service import Gateway

from .conftest import load_plan, signed_headers

REPO = Path(__file__).resolve().parent.parent
READ = "r" * 40
OPERATE = "o" * 40
DEMO_INTAKE = "whsec_dG9jc2luLWRlbW8taW50YWtlLXNlY3JldC0wMDAwMDAw"
ADMIN = f"""
[admin]
tokens = [
  {{ name = "viewer", scope = "read", token = "{READ}" }},
  {{ name = "oncall", scope = "operate", token = "{OPERATE}" }},
]
"""


class Merchant:
    """The merchant's receiver: 503 (retried) for any body naming a marker in
    ``failing`` (an event id), 400 (dead-lettered) for one in ``rejecting``, 204
    otherwise; records what arrived."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.rejecting: set[str] = set()
        self.ok: list[dict[str, Any]] = []
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        text = body.decode()
        if any(marker in text for marker in self.failing):
            self.refused += 1
            return web.Response(status=503)
        if any(marker in text for marker in self.rejecting):
            self.refused += 1
            return web.Response(status=400)
        self.ok.append(json.loads(body))
        return web.Response(status=204)


def write_default_conf(directory: Path, redis_url: str, merchant_url: str) -> Path:
    """The repository's conf/ copied, pointed at this Redis and receiver; the merchant
    webhook retries once at once, then in an hour (a delivery waits, to be retried now)."""
    conf_dir = directory / "conf"
    shutil.copytree(REPO / "conf", conf_dir)
    path = conf_dir / "tocsin.toml"
    text = path.read_text()
    replacements = {
        "${TOCSIN_REDIS_URL:-}": redis_url,
        "${TOCSIN_MERCHANT_URL:-http://127.0.0.1:8099/webhook}": merchant_url,
        "${TOCSIN_ERP_URL:-http://127.0.0.1:8099/webhook}": merchant_url,
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    text, n = re.subn(
        r'retry_schedule = \["0s", "5s"[^\]]*\]', 'retry_schedule = ["0s", "1h"]', text
    )
    assert n == 1
    path.write_text(text + ADMIN)
    return path


class Stack:
    def __init__(self, conf: Path, merchant: Merchant, redis: Redis) -> None:
        self.conf = conf
        self.merchant = merchant
        self.redis = redis
        self.gateway: Gateway | None = None
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        plan = load_plan(self.conf)
        self.gateway = Gateway(plan, load_conf(self.conf).redis.url, port=0)
        self.task = asyncio.create_task(self.gateway.run(self.stopping))
        await asyncio.wait_for(self.gateway.ready.wait(), 15)

    async def stop(self) -> None:
        self.stopping.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.bound_port}"

    @property
    def console(self) -> str:
        return self.url + "/console"

    async def post_event(
        self, sample: str = "payment_succeeded.json", **overrides: Any
    ) -> dict[str, Any]:
        """A sample event of the conf's examples, with a fresh id and the overrides."""
        event = json.loads((self.conf.parent / "examples" / sample).read_text())
        event["id"] = f"evt_console_{time.monotonic_ns()}"
        for key, value in overrides.items():
            event[key] = {**event.get(key, {}), **value} if isinstance(value, dict) else value
        body = json.dumps(event).encode()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url + "/v1/events", data=body, headers=signed_headers(body, secret=DEMO_INTAKE)
            ) as resp,
        ):
            assert resp.status == 202, await resp.text()
        return event

    async def record(self, delivery_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(Keys().record(delivery_id))
        return json.loads(raw) if raw else None

    async def records_of(
        self, event_id: str, timeout: float = 10, **want: str
    ) -> list[dict[str, Any]]:
        """The event's delivery records (the fan-out index), once every channel named in
        ``want`` has one in that status."""
        deadline = time.monotonic() + timeout
        while True:
            ids = [m.decode() for m in await self.redis.smembers(Keys().event_deliveries(event_id))]
            records = [r for r in [await self.record(i) for i in sorted(ids)] if r is not None]
            status = {r["channel"]: r["status"] for r in records}
            if all(status.get(channel) == s for channel, s in want.items()):
                return records
            assert time.monotonic() < deadline, f"{event_id}: {status}, want {want}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_stack(tmp: Path) -> AsyncIterator[Stack]:
    """Redis, the merchant's receiver and the gateway, for one test module."""
    server = RedisServer(tmp / "redis", port=free_port())
    url = server.start()
    merchant = Merchant()
    app = web.Application()
    app.router.add_post("/webhook", merchant.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    conf = write_default_conf(tmp, url, f"http://127.0.0.1:{port}/webhook")
    client = Redis.from_url(url)
    stack = Stack(conf, merchant, client)
    try:
        await stack.start()
        yield stack
    finally:
        if stack.task is not None:
            await stack.stop()
        await client.aclose()
        await runner.cleanup()
        server.stop()


async def login(session: aiohttp.ClientSession, stack: Stack, token: str) -> None:
    async with session.get(stack.console + "/login") as resp:
        assert resp.status == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert csrf is not None
    form = {"csrf": csrf.group(1), "token": token, "next": "/console/"}
    async with session.post(stack.console + "/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)
