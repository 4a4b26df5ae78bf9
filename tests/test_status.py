"""``tocsin status`` against real traffic: a gateway delivers to a real receiver, one
channel's deliveries are refused into the dead letters, and the command (a real
subprocess) reports what happened: the last hour's figures, queues, the breach."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gateway.keys import Layout
from gateway.watch import current_breaches
from gateway.watch.status import overview
from gateway.watch.watcher import read_memory

from .conftest import make_event, write_conf
from .procs import run_tocsin, tocsin_env

# The receiver verifies signatures: this channel signs with another secret, so every
# delivery is refused (401) and dead-lettered.
CHANNELS = """
[rules.ok]
events = ["payment.succeeded"]
[[rules.ok.actions]]
channel = "hook"
[rules.refused]
events = ["payment.failed"]
[[rules.refused.actions]]
channel = "refused"
[channels.refused]
type = "json_hook"
url = "{url}"
secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0"
"""

WATCH = """
[metrics]
refresh = "0.2s"
[watch]
every = "0.2s"
[watch.refused-dlq]
kind = "dead_letters"
channel = "refused"
more_than = 0
per = "1h"
"""


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_status_reports_real_traffic(
    redis_url: str, tmp_path: Path, receiver: Any, start_gateway: Any
) -> None:
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=CHANNELS.format(url=receiver.url),
        extra=WATCH,
    )
    gateway = await start_gateway(conf)
    redis = Redis.from_url(redis_url)
    try:
        await _check(gateway, redis, receiver, conf, tmp_path)
    finally:
        await redis.aclose()
    await gateway.stop()


async def _check(gateway: Any, redis: Redis, receiver: Any, conf: Path, tmp_path: Path) -> None:
    layout = Layout("tocsin")

    async def watching() -> bool:
        return await read_memory(redis, layout) is not None

    # Watching starts at the watcher's first round (it notes the stream's end then):
    # events posted before it are not counted, which on a loaded box once made this
    # test wait for counts that never came.
    await _until(watching)
    for _ in range(3):
        assert (await gateway.post(make_event()))[0] == 202
    assert (await gateway.post(make_event(type="payment.failed")))[0] == 202
    await receiver.wait_for(3)

    async def breached() -> bool:
        return [b.watch for b in await current_breaches(redis, layout)] == ["refused-dlq"]

    async def counted() -> bool:
        # The watcher counts events at its rounds: the status below must see all four.
        view = await overview(redis, layout, ["hook", "refused"], "Europe/Paris")
        return (view.events_last_hour or 0) >= 4

    await _until(breached)
    await _until(counted)
    env = tocsin_env()
    done = await asyncio.to_thread(
        run_tocsin, "status", "--json", "--conf", str(conf), env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    assert view["deliveries_last_hour"] == 4
    assert view["dead_last_hour"] == 1
    # The four posted, and the watch's own alert once the watcher has read it.
    assert view["events_last_hour"] in (4, 5)
    channels = {c["name"]: c for c in view["channels"]}
    assert channels["refused"]["dead"] == 1
    assert channels["refused"]["dead_last_hour"] == 1
    assert channels["hook"]["dead"] == 0
    assert channels["hook"]["ready"] == 0
    assert [b["watch"] for b in view["breaches"]] == ["refused-dlq"]
    assert "1 dead letter in the last 1h (more than 0): refused 1" in view["breaches"][0]["detail"]

    done = await asyncio.to_thread(
        run_tocsin,
        "status",
        "--once",
        "--conf",
        str(conf),
        env={**env, "COLUMNS": "160"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "last hour:" in done.stdout
    assert "4 deliveries, 1 dead-lettered" in done.stdout
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert "1 (1)" in lines["refused"]
    assert "refused-dlq" in done.stdout


def test_status_without_redis_is_one_line(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, redis_url="redis://127.0.0.1:9/0")
    done = run_tocsin("status", "--once", "--conf", str(conf), env=tocsin_env(), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("Error: Redis (redis://127.0.0.1:9/0):")
    assert len(done.stderr.strip().splitlines()) == 1
