"""Real ``tocsin`` processes: several gateways on one Redis, the embedded Redis across
restarts and crashes, and the ``emit`` / ``receive`` commands.

Every process is started through the real CLI and always killed when its test ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from gateway.redis_server import find_redis_server, free_port
from gateway.signing import Signer, generate_secret

from .conftest import HOOK_SECRET, INTAKE_SECRET, Receiver, make_event, write_conf
from .procs import holding_receiver, post_event, run_to_end, running, serving, wait_gone, wait_http

pytestmark = pytest.mark.slow

EXAMPLE_EVENT = (
    Path(__file__).resolve().parent.parent / "conf" / "examples" / "payment_succeeded.json"
)
DELIVERED = re.compile(r"delivered (\S+) via hook")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path, so the embedded Redis can use its unix socket."""
    path = Path(tempfile.mkdtemp(prefix="tocsin-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def retries_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard("tocsin:retries"))
    finally:
        client.close()


async def wait_for_retry(url: str, count: int = 1, timeout: float = 10.0) -> None:
    """Until ``count`` failed deliveries wait in the retries set."""
    for _ in range(int(timeout / 0.05)):
        if retries_count(url) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no failed delivery reached the retries set within {timeout}s")


async def test_two_gateways_share_the_work(tmp_path, redis_url, receiver: Receiver):
    """Two ``tocsin serve`` on one Redis: every event delivered once, by one of them."""
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url)
    ports = [free_port(), free_port()]
    events = [make_event() for _ in range(400)]
    async with (
        serving(conf, ports[0], tmp_path, "gw-a", "--log-level", "debug") as gw_a,
        serving(conf, ports[1], tmp_path, "gw-b", "--log-level", "debug") as gw_b,
    ):
        gateways = (gw_a, gw_b)
        limit = asyncio.Semaphore(64)
        async with aiohttp.ClientSession() as session:

            async def post(i: int) -> int:
                async with limit:
                    status, _ = await post_event(session, gateways[i % 2].url, events[i])
                    return status

            statuses = await asyncio.gather(*(post(i) for i in range(len(events))))
        assert statuses == [202] * len(events)
        await receiver.wait_for(len(events), timeout=15)

        for gw in gateways:
            gw.proc.signal(signal.SIGTERM)
        codes = [await gw.proc.wait(timeout=10) for gw in gateways]
        assert codes == [0, 0], [gw.proc.stderr[-2000:] for gw in gateways]

    # Both stopped: nothing more can arrive, so the counts below are final.
    assert receiver.rejected == []
    webhook_ids = [r.msg_id for r in receiver.received]
    assert len(webhook_ids) == len(events)
    assert len(set(webhook_ids)) == len(events), "a webhook-id arrived twice"
    assert {r.json()["id"] for r in receiver.received} == {e["id"] for e in events}

    sent_by_a = DELIVERED.findall(gw_a.proc.stderr)
    sent_by_b = DELIVERED.findall(gw_b.proc.stderr)
    assert sent_by_a, "the first gateway delivered nothing"
    assert sent_by_b, "the second gateway delivered nothing"
    assert not set(sent_by_a) & set(sent_by_b), "both gateways sent the same delivery"
    assert sorted(sent_by_a + sent_by_b) == sorted(webhook_ids)


async def test_embedded_redis_keeps_events_across_restart(short_dir, receiver: Receiver):
    """No redis.url: ``tocsin serve`` runs its own Redis, whose AOF outlives the gateway."""
    conf = write_conf(short_dir, redis_url="", hook_url=receiver.url)
    data_dir = (short_dir / "var" / "redis").resolve()
    port = free_port()
    event = make_event()
    receiver.status = 503  # the merchant's system is down during the first run

    async with serving(conf, port, short_dir, "first") as gw, aiohttp.ClientSession() as session:
        stderr = gw.proc.stderr
        assert f"data in {data_dir}" in stderr
        assert gw.redis_url == f"unix://{data_dir / 'redis.sock'}"
        [redis_proc] = gw.redis_children()
        client = redis.Redis.from_url(gw.redis_url, decode_responses=True)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            client.close()

        assert await post_event(session, gw.url, event) == (
            202,
            {"id": event["id"], "duplicate": False},
        )
        await wait_for_retry(gw.redis_url)  # the receiver refused it: it waits for a retry

        # A second gateway on the same data folder is refused, and told how to share.
        second = await run_to_end(
            ["serve", "--conf", str(conf), "--port", str(free_port())], short_dir, "second"
        )
        assert second.popen.returncode != 0
        assert f"(pid {redis_proc.pid})" in second.stderr
        assert f'redis.url = "{gw.redis_url}"' in second.stderr
        assert redis_proc.alive(), "the refused gateway disturbed the running Redis"

        gw.proc.signal(signal.SIGTERM)
        assert await gw.proc.wait(timeout=10) == 0
        assert "embedded Redis stopped" in gw.proc.stderr
        assert not redis_proc.alive(), "redis-server outlived its gateway"

    assert receiver.received == []
    receiver.status = 204  # the merchant is back
    async with serving(conf, port, short_dir, "restarted") as gw:
        [got] = await receiver.wait_for(1, timeout=15)
        assert got.json()["id"] == event["id"]
        gw.proc.signal(signal.SIGTERM)
        assert await gw.proc.wait(timeout=10) == 0
    assert receiver.rejected == []


async def test_embedded_redis_with_a_long_data_path_uses_tcp(tmp_path, receiver: Receiver):
    """A data folder too deep for a unix socket still works (Redis on a local TCP port)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    conf = write_conf(deep, redis_url="", hook_url=receiver.url)
    async with (
        serving(conf, free_port(), tmp_path, "deep") as gw,
        aiohttp.ClientSession() as session,
    ):
        assert (gw.redis_url or "").startswith("redis://127.0.0.1:")
        [redis_proc] = gw.redis_children()
        event = make_event()
        assert (await post_event(session, gw.url, event))[0] == 202
        [got] = await receiver.wait_for(1)
        assert got.json()["id"] == event["id"]
        gw.proc.signal(signal.SIGTERM)
        assert await gw.proc.wait(timeout=10) == 0
        assert not redis_proc.alive()
    data_dir = deep / "var" / "redis"
    # Redis >= 7 keeps its AOF in a folder, 6.2 in one file.
    assert (data_dir / "appendonlydir").is_dir() or (data_dir / "appendonly.aof").exists()
    assert json.loads((data_dir / "SERVER.json").read_text())["path"] == find_redis_server()


async def test_sigkill_leaves_no_orphan_redis_and_keeps_events(short_dir, receiver: Receiver):
    """A crashed gateway takes its Redis down with it, and a 202 outlives the crash."""
    conf = write_conf(short_dir, redis_url="", hook_url=receiver.url)
    port = free_port()
    event = make_event()

    # Intake only: the accepted event is certainly still waiting in Redis at the crash.
    async with (
        serving(conf, port, short_dir, "killed", "--role", "intake") as gw,
        aiohttp.ClientSession() as session,
    ):
        [redis_proc] = gw.redis_children()
        assert (await post_event(session, gw.url, event))[0] == 202
        gw.proc.signal(signal.SIGKILL)
        assert await gw.proc.wait() == -signal.SIGKILL
        assert await wait_gone(redis_proc), "redis-server survived its SIGKILLed gateway"

    async with serving(conf, port, short_dir, "after-crash") as gw:
        [got] = await receiver.wait_for(1, timeout=10)
        assert got.json()["id"] == event["id"]
        gw.proc.signal(signal.SIGTERM)
        assert await gw.proc.wait(timeout=10) == 0
    assert receiver.rejected == []


async def test_send_in_flight_at_sigkill_is_delivered_after_restart(short_dir):
    """A crash mid-send must not lose the delivery: the next gateway sends it again."""
    async with holding_receiver(free_port()) as rec:
        conf = write_conf(short_dir, redis_url="", hook_url=rec.url)
        port = free_port()
        rec.hold = True  # the receiver takes the request and does not answer yet
        async with serving(conf, port, short_dir, "killed") as gw, aiohttp.ClientSession() as s:
            [redis_proc] = gw.redis_children()
            assert (await post_event(s, gw.url, make_event()))[0] == 202
            [in_flight] = await rec.wait_until("held", 1)
            gw.proc.signal(signal.SIGKILL)
            await gw.proc.wait()
            assert await wait_gone(redis_proc)

        rec.hold = False
        async with serving(conf, port, short_dir, "after-crash") as gw:
            # json_hook's send timeout is 3 s here: another gateway may take the job over
            # only after that, so allow for it.
            await rec.wait_until("received", 1, timeout=10)
            gw.proc.signal(signal.SIGTERM)
            assert await gw.proc.wait(timeout=10) == 0
        assert rec.received == [in_flight], "not the same webhook-id: receivers cannot dedupe"
        assert rec.rejected == []


async def test_emit_and_receive_commands(tmp_path, redis_url, start_gateway):
    """``tocsin emit`` posts a signed event; ``tocsin receive`` verifies what arrives."""
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/webhook"
    args = ["receive", "--port", str(port), "--secret", HOOK_SECRET]
    async with running(args, tmp_path, "receive") as receive:
        await wait_http(f"http://127.0.0.1:{port}/", receive)
        gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url, hook_url=hook_url))

        url = f"{gw.url}/v1/events"
        args = ["emit", str(EXAMPLE_EVENT), "--new-id", "--url", url, "--secret", INTAKE_SECRET]
        emit = await run_to_end(args, tmp_path, "emit")
        assert emit.popen.returncode == 0, emit.stderr
        [line] = emit.stdout.splitlines()
        assert "HTTP 202" in line
        event_id = line.split(":")[0]
        assert event_id.startswith("evt_") and event_id != "evt_demo_0001"

        out = await receive.wait_output("payment.succeeded")
        [verified] = [x for x in out.splitlines() if " verified " in x]
        assert verified.endswith(" payment.succeeded")
        assert f'"id": "{event_id}"' in out

        # Someone posting with another secret is turned away, and the receiver says so.
        body = json.dumps({"type": "payment.succeeded"}).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(Signer([generate_secret()]).headers("msg_forged", body))
        async with (
            aiohttp.ClientSession() as session,
            session.post(hook_url, data=body, headers=headers) as resp,
        ):
            assert resp.status == 401
        out = await receive.wait_output("REJECTED")
        assert "REJECTED msg_forged" in out
        assert out.count(" verified ") == 1


async def test_ctrl_c_stops_the_gateway_before_its_embedded_redis(short_dir, receiver: Receiver):
    """Ctrl-C signals the terminal's whole process group: only the gateway may act on it
    (drain, then stop its Redis); a Redis quitting first fails the drain."""
    conf = write_conf(short_dir, redis_url="", hook_url=receiver.url)
    async with (
        serving(conf, free_port(), short_dir, "ctrl-c") as gw,
        aiohttp.ClientSession() as session,
    ):
        assert (await post_event(session, gw.url, make_event()))[0] == 202
        await receiver.wait_for(1)
        os.killpg(gw.proc.popen.pid, signal.SIGINT)
        assert await gw.proc.wait(timeout=10) == 0
    log = gw.proc.stderr
    assert "embedded Redis stopped" in log
    assert "Connection closed by server" not in log and "retrying" not in log, log[-2000:]
