"""``tocsin serve --processes N``: one parent, N gateway processes on one port.

Real processes throughout: the ``tocsin`` CLI with the embedded Redis, real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.redis_server import free_port
from gateway.service import PROCESS_HEADER
from gateway.supervisor import ChildSpec, RestartPolicy, Supervisor, layout, usable_cores
from gateway.supervisor.cores import _cgroup_limit

from .conftest import make_event, write_conf
from .procs import Pid, Serve, children, ledger_receiver, post_event, run_to_end, serving, wait_gone

pytestmark = pytest.mark.slow

STARTED = re.compile(r"supervisor: gateway (\d+) started \(pid (\d+)")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path, so the embedded Redis can use its unix socket."""
    path = Path(tempfile.mkdtemp(prefix="tocsin-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def gateway_children(gw: Serve) -> list[Pid]:
    """The supervisor's gateway processes (its children other than redis-server)."""
    redis = {p.pid for p in gw.redis_children()}
    return [p for p in children(gw.proc.pid) if p.pid not in redis]


async def wait_ready_count(gw: Serve, count: int, timeout: float = 30.0) -> None:
    """Until ``count`` gateway processes have logged that their roles run."""
    deadline = time.monotonic() + timeout
    while gw.proc.stderr.count("running roles") < count:
        if time.monotonic() > deadline or gw.proc.popen.poll() is not None:
            raise AssertionError(f"not {count} gateways ready:\n{gw.proc.stderr[-3000:]}")
        await asyncio.sleep(0.05)


async def answering_pids(url: str, connections: int = 40) -> set[int]:
    """Which processes answer ``/healthz``, each request on a new connection."""
    seen: set[int] = set()
    for _ in range(connections):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url + "/healthz") as resp,
        ):
            assert resp.status == 200
            seen.add(int(resp.headers[PROCESS_HEADER]))
    return seen


async def test_two_processes_answer_on_one_port(short_dir, receiver):
    """Both children accept on the one port, and events posted to it are delivered."""
    conf = write_conf(short_dir, redis_url="", hook_url=receiver.url)
    async with (
        serving(conf, free_port(), short_dir, "two", "--processes", "2") as gw,
        aiohttp.ClientSession() as session,
    ):
        await wait_ready_count(gw, 2)
        kids = {p.pid for p in gateway_children(gw)}
        assert len(kids) == 2, gw.proc.stderr[-2000:]
        assert len(gw.redis_children()) == 1, "the parent, not each child, runs the Redis"
        assert await answering_pids(gw.url) == kids

        events = [make_event() for _ in range(50)]
        statuses = await asyncio.gather(*(post_event(session, gw.url, e) for e in events))
        assert [s for s, _ in statuses] == [202] * len(events)
        got = await receiver.wait_for(len(events), timeout=15)
        assert {r.json()["id"] for r in got} == {e["id"] for e in events}


def set_processes(conf: Path, value: str) -> None:
    conf.write_text(
        conf.read_text().replace('data_dir = "var"', f'data_dir = "var"\nprocesses = {value}')
    )


async def test_processes_1_in_the_conf_runs_no_supervisor(tmp_path, redis_url, receiver):
    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url)
    set_processes(conf, "1")
    async with serving(conf, free_port(), tmp_path, "one") as gw:
        assert children(gw.proc.pid) == []
        assert await answering_pids(gw.url, 5) == {gw.proc.pid}
        assert "supervisor" not in gw.proc.stderr


async def test_a_killed_child_is_restarted_and_the_port_keeps_answering(short_dir, receiver):
    conf = write_conf(short_dir, redis_url="", hook_url=receiver.url)
    async with (
        serving(conf, free_port(), short_dir, "restart", "--processes", "2") as gw,
        aiohttp.ClientSession() as session,
    ):
        await wait_ready_count(gw, 2)
        victim, survivor = gateway_children(gw)
        gw.proc.offspring.extend([victim, survivor])
        victim.kill()
        assert await wait_gone(victim)
        await gw.proc.wait_output("died (signal SIGKILL)", stream="stderr")
        # The other process keeps taking events while the dead one's slot restarts.
        assert (await post_event(session, gw.url, make_event()))[0] == 202

        await wait_ready_count(gw, 3)
        kids = gateway_children(gw)
        gw.proc.offspring.extend(kids)
        assert len(kids) == 2 and survivor in kids and victim not in kids
        assert await answering_pids(gw.url) == {p.pid for p in kids}
        assert (await post_event(session, gw.url, make_event()))[0] == 202
        await receiver.wait_for(2)
        assert survivor.alive(), "restarting one child disturbed the other"


async def test_sigterm_drains_the_children_before_stopping_redis(short_dir):
    """A send in flight at SIGTERM is finished and recorded: Redis stops only after the
    children drained."""
    async with ledger_receiver(free_port(), delay=1.5) as rec:
        conf = write_conf(short_dir, redis_url="", hook_url=rec.url)
        args = ("--processes", "2", "--log-level", "debug")
        async with serving(conf, free_port(), short_dir, "drain", *args) as gw:
            await wait_ready_count(gw, 2)
            kids = gateway_children(gw)
            [redis_proc] = gw.redis_children()
            async with aiohttp.ClientSession() as session:
                assert (await post_event(session, gw.url, make_event()))[0] == 202
            for _ in range(500):  # until the receiver holds it (for 1.5 s)
                if rec.attempts:
                    break
                await asyncio.sleep(0.02)
            gw.proc.signal(signal.SIGTERM)
            assert await gw.proc.wait(timeout=30) == 0, gw.proc.stderr[-3000:]
            assert not redis_proc.alive() and not any(k.alive() for k in kids)
        log = gw.proc.stderr
        [attempt] = rec.attempts
        assert attempt.status == 204
        delivered = re.search(r"delivered \S+ via hook", log)
        assert delivered, log[-3000:]
        assert delivered.start() < log.index("embedded Redis stopped")
        assert "Connection closed by server" not in log and "retrying" not in log, log[-3000:]


async def test_sigkill_of_the_parent_leaves_no_orphans(short_dir, receiver):
    conf = write_conf(short_dir, redis_url="", hook_url=receiver.url)
    async with serving(conf, free_port(), short_dir, "orphans", "--processes", "2") as gw:
        await wait_ready_count(gw, 2)
        kids = gateway_children(gw)
        [redis_proc] = gw.redis_children()
        assert len(kids) == 2
        gw.proc.offspring.extend(kids)
        gw.proc.signal(signal.SIGKILL)
        assert await gw.proc.wait() == -signal.SIGKILL
        for proc in (*kids, redis_proc):
            assert await wait_gone(proc), f"pid {proc.pid} outlived its SIGKILLed supervisor"


@pytest.mark.parametrize("reuseport", [False, True])
async def test_port_in_use_exits_2_before_anything_starts(short_dir, reuseport):
    """Also when the holder set SO_REUSEPORT (another supervisor): the port is not shared
    with a stranger."""
    conf = write_conf(short_dir, redis_url="")
    with socket.socket() as holder:
        if reuseport:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = ["serve", "--conf", str(conf), "--port", str(port), "--processes", "2"]
        proc = await run_to_end(args, short_dir, f"in-use-{reuseport}")
    assert proc.popen.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
    assert not (short_dir / "var" / "redis").exists(), "Redis started before the port check"


async def test_a_bad_process_count_is_refused_before_anything_starts(short_dir):
    conf = write_conf(short_dir, redis_url="")
    args = ["serve", "--conf", str(conf), "--port", str(free_port())]
    bad_flag = await run_to_end([*args, "--processes", "0"], short_dir, "bad-flag")
    assert bad_flag.popen.returncode == 2
    assert "--processes" in bad_flag.stderr and "'0'" in bad_flag.stderr
    set_processes(conf, '"many"')
    bad_conf = await run_to_end(args, short_dir, "bad-conf")
    assert bad_conf.popen.returncode == 2
    assert "gateway.processes" in bad_conf.stderr, bad_conf.stderr
    assert not (short_dir / "var" / "redis").exists()


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # systemd CPUQuota=150%
    assert _cgroup_limit(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert _cgroup_limit(cpu_max) is None
    assert _cgroup_limit(tmp_path / "absent") is None


def test_layouts():
    assert layout(3, ("intake", "router", "worker")) == [("intake", "router", "worker")] * 3
    assert layout(3, ("intake", "router", "worker"), "split") == [
        ("intake",),
        ("router", "worker"),
        ("router", "worker"),
    ]
    assert layout(1, ("intake", "worker"), "split") == [("intake", "worker")]
    assert layout(2, ("worker",), "split") == [("worker",), ("worker",)]
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


async def test_a_crash_loop_is_bounded_and_reported(tmp_path, caplog):
    """Real children that exit at once: restarted with growing delays, then given up."""
    marker = tmp_path / "starts"
    script = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"
    policy = RestartPolicy(first=0.1, cap=0.3, stable_after=30.0, give_up_after=3)
    supervisor = Supervisor(
        [ChildSpec(0, ("worker",))], lambda _spec: [sys.executable, "-c", script], 5.0, policy
    )
    stopping = asyncio.Event()
    with caplog.at_level("INFO", logger="tocsin"):
        started = time.monotonic()
        code = await asyncio.wait_for(supervisor.run(stopping), 30)
    assert code == 1 and supervisor.gave_up
    assert marker.read_text() == "x" * 4  # the first start and 3 restarts
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.3  # backoff: 0.1, 0.2, 0.3 (cap)
    died = [r.getMessage() for r in caplog.records if "died (exit code 3)" in r.getMessage()]
    assert [m.rsplit("restarting in ", 1)[1] for m in died] == ["0.1s", "0.2s", "0.3s"]
    assert any("giving up" in r.getMessage() for r in caplog.records)


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor = Supervisor(
        [ChildSpec(0, ("worker",))], lambda _spec: [sys.executable, "-c", script], grace=1.0
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stopping))
    for _ in range(500):
        if supervisor.running:
            break
        await asyncio.sleep(0.02)
    child = supervisor.running[0]
    await asyncio.sleep(0.3)  # let it install its handler
    stopping.set()
    assert await asyncio.wait_for(task, 10) == 1
    assert child.returncode == -signal.SIGKILL
    with contextlib.suppress(ProcessLookupError):
        child.kill()
