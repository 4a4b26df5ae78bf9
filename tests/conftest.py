"""Shared fixtures: a real redis-server, a real signature-verifying receiver, a real gateway.

Nothing here is mocked: the redis-server is the embedded one Tocsin itself starts, the
receiver verifies with the ``standardwebhooks`` reference library, and the gateway
runs its real aiohttp app on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.conf import load_conf
from gateway.plan import Plan, build_plan
from gateway.plugins import load_registry
from gateway.redis_server import RedisServer, free_port
from gateway.service import Gateway
from gateway.signing import Signer

from .postgres_server import archive_backend, postgres_server  # noqa: F401 - archive tests'
from .sms_standins import twilio, vonage  # noqa: F401 - the SMS stand-ins' fixtures

INTAKE_SECRET = "whsec_" + "dGVzdC1pbnRha2Utc2VjcmV0LTAxMjM0NTY3ODk="
HOOK_SECRET = "whsec_" + "dGVzdC1ob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI="


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid canonical event; any top-level field can be overridden."""
    event: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "payment.succeeded",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": {"provider": "test", "event_id": "tx_1", "livemode": False},
        "customer": {"id": "cus_1", "email": "client@example.com", "locale": "fr", "kind": "b2c"},
        "refs": {"invoice_ref": "FA-1"},
        "data": {"amount": 1250, "currency": "EUR"},
    }
    event.update(overrides)
    return event


def signed_headers(
    body: bytes,
    msg_id: str | None = None,
    secret: str = INTAKE_SECRET,
    timestamp: int | None = None,
) -> dict[str, str]:
    headers = Signer([secret]).headers(msg_id or f"msg_{uuid.uuid4().hex}", body, timestamp)
    headers["Content-Type"] = "application/json"
    return headers


@dataclass
class Received:
    msg_id: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver verifying with the standardwebhooks reference library."""

    url: str
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    #: Status to answer; a callable gets the request count and returns one.
    status: int | Callable[[int], int] = 204
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} webhooks, got {len(self.received)} after {timeout}s"
                )
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.received


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    verifier = Webhook(HOOK_SECRET)
    port = free_port()
    rec = Receiver(url=f"http://127.0.0.1:{port}/hook")
    calls = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        body = await request.read()
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            rec.rejected.append(str(exc))
            return web.Response(status=401)
        status = rec.status(calls) if callable(rec.status) else rec.status
        if 200 <= status < 300:
            rec.received.append(
                Received(request.headers["webhook-id"], body, dict(request.headers))
            )
            rec.arrived.set()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield rec
    await runner.cleanup()


def write_conf(
    directory: Path,
    *,
    redis_url: str,
    hook_url: str = "http://127.0.0.1:9/unused",
    rules: str | None = None,
    extra: str = "",
    templates: dict[str, str] | None = None,
    intake_extra: str = "",
) -> Path:
    """Write a conf with one json_hook channel ``hook`` and (by default) one catch-all rule.

    ``intake_extra`` is TOML appended inside the ``[intake]`` table (e.g. ``max_body = 1024``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (templates or {}).items():
        path = directory / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (directory / "templates").mkdir(exist_ok=True)
    if rules is None:
        rules = """
        [rules.all-payments]
        events = ["payment.*"]
        [[rules.all-payments.actions]]
        channel = "hook"
        """
    conf = directory / "tocsin.toml"
    conf.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            data_dir = "var"
            [intake]
            secrets = ["{INTAKE_SECRET}"]
            """
        )
        + textwrap.dedent(intake_extra).strip("\n")
        + textwrap.dedent(
            f"""
            [redis]
            url = "{redis_url}"
            [worker]
            shutdown_grace = "2s"
            [outbound]
            # The receivers run on loopback, which the SSRF guard refuses unless listed.
            allow = ["127.0.0.0/8"]
            [channels.hook]
            type = "json_hook"
            url = "{hook_url}"
            secret = "{HOOK_SECRET}"
            timeout = "2s"
            """
        )
        + textwrap.dedent(rules)
        + textwrap.dedent(extra)
    )
    return conf


def load_plan(conf_path: Path) -> Plan:
    conf = load_conf(conf_path)
    registry = load_registry(blocked=conf.plugins.block, modules=conf.plugins.modules)
    return build_plan(conf, registry)


@dataclass
class RunningGateway:
    gateway: Gateway
    stopping: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.bound_port}"

    async def post(self, event: dict[str, Any] | bytes, **kwargs: Any) -> tuple[int, Any]:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = kwargs.pop("headers", None) or signed_headers(body)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url + kwargs.pop("path", "/v1/events"), data=body, headers=headers, **kwargs
            ) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Any]]:
    """``await start_gateway(conf_path, roles=...)`` runs a gateway in this test's loop."""
    running: list[RunningGateway] = []

    async def start(
        conf_path: Path, roles: tuple[str, ...] = ("intake", "router", "worker")
    ) -> RunningGateway:
        gateway = Gateway(load_plan(conf_path), load_conf(conf_path).redis.url, roles, port=0)
        stopping = asyncio.Event()
        task = asyncio.create_task(gateway.run(stopping))
        ready = asyncio.create_task(gateway.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raise what broke start-up
        assert ready in done, "gateway did not become ready"
        rg = RunningGateway(gateway, stopping, task)
        running.append(rg)
        return rg

    yield start
    for rg in running:
        if not rg.task.done():
            await rg.stop()


# --- figures: real-process tests print what they measured, again at the end of the run ---


#: Where real-process tests write what they measured: under pytest-xdist (the README's
#: test command) a worker's output is not shown, so the controller prints this file at
#: the end of the run (``pytest_terminal_summary`` below).
FIGURES = Path(__file__).resolve().parent.parent / "var" / "test-artifacts" / "figures.txt"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a plain run): start afresh
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text("")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = FIGURES.read_text().splitlines() if FIGURES.exists() else []
    if lines and not hasattr(config, "workerinput"):
        terminalreporter.section("chaos figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(**values: Any) -> None:
        text = ", ".join(
            f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )
        with FIGURES.open("a") as out:  # one short line per write: appends don't interleave
            out.write(f"{request.node.name}: {text}\n")

    return record


# Last: erp_helpers builds on the helpers above, so it can only be imported once they exist.
from .erp_helpers import (  # noqa: E402, F401 - the ERP stand-ins' fixtures
    dolibarr,
    erpnext,
    inhouse,
    make_channel,
    odoo,
    odoo_api,
)
