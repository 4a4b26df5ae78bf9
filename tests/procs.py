"""Real ``tocsin`` subprocesses for the multi-process tests, always reaped.

Linux only: child processes are found through ``/proc`` (the gateway itself relies on
``prctl(PR_SET_PDEATHSIG)``, Linux too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import gateway

from .conftest import HOOK_SECRET, signed_headers

#: The code under test: the same ``gateway`` package this test process imported.
SOURCE_ROOT = Path(gateway.__file__).resolve().parent.parent
TOCSIN = [sys.executable, "-m", "gateway.cli"]


def tocsin_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- processes, through /proc --------------------------------------------------------


@dataclass(frozen=True)
class Pid:
    """A process, robust to pid reuse: identified by pid and start time."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> Pid | None:
        stat = _stat(pid)
        return None if stat is None else cls(pid, int(stat[19]))

    def alive(self) -> bool:
        """Running (a zombie waiting to be reaped counts as gone)."""
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.started and stat[0] != "Z"

    def exe_name(self) -> str:
        try:
            return Path(os.readlink(f"/proc/{self.pid}/exe")).name
        except OSError:
            return ""

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> list[Pid]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and int(stat[1]) == pid and stat[0] != "Z":
                ref = Pid.of(int(entry.name))
                if ref is not None:
                    found.append(ref)
    return found


async def wait_gone(proc: Pid, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while proc.alive():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# --- subprocesses ------------------------------------------------------------------------


@dataclass
class Proc:
    """A subprocess whose stdout and stderr go to files (no pipe to fill up and block)."""

    popen: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    #: Processes it started (embedded redis-server), killed on cleanup if still there.
    offspring: list[Pid] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    async def wait(self, timeout: float = 15.0) -> int:
        """The exit code; fails the test if the process outlives ``timeout``."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pid {self.pid} still running after {timeout}s; stderr:\n{self.stderr[-3000:]}"
                )
            await asyncio.sleep(0.05)
        return code

    async def wait_output(self, text: str, timeout: float = 10.0, stream: str = "stdout") -> str:
        deadline = time.monotonic() + timeout
        while text not in (seen := self.stdout if stream == "stdout" else self.stderr):
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise AssertionError(f"{text!r} not in {stream} of pid {self.pid}:\n{seen[-3000:]}")
            await asyncio.sleep(0.05)
        return seen

    def cleanup(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for pid in self.offspring:
            pid.kill()


def spawn(args: Sequence[str], log_dir: Path, name: str) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        popen = subprocess.Popen(
            [*TOCSIN, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=tocsin_env(),
            cwd=log_dir,
        )
    return Proc(popen, out_path, err_path)


@contextlib.asynccontextmanager
async def running(args: Sequence[str], log_dir: Path, name: str) -> AsyncIterator[Proc]:
    """A ``tocsin`` subprocess, killed (with what it started) when the block ends."""
    proc = spawn(args, log_dir, name)
    try:
        yield proc
    finally:
        proc.cleanup()


async def run_to_end(args: Sequence[str], log_dir: Path, name: str, timeout: float = 15.0) -> Proc:
    async with running(args, log_dir, name) as proc:
        await proc.wait(timeout)
    return proc


async def wait_http(url: str, proc: Proc | None = None, timeout: float = 15.0) -> None:
    """Until ``url`` answers at all (any status); fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while True:
            if proc is not None and proc.popen.poll() is not None:
                raise AssertionError(
                    f"pid {proc.pid} exited with {proc.popen.returncode} before {url} answered;"
                    f" stderr:\n{proc.stderr[-3000:]}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    await resp.read()
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout}s")
            await asyncio.sleep(0.05)


@dataclass
class Serve:
    """A running ``tocsin serve``."""

    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str | None:
        """The embedded Redis's address, from the start-up log."""
        found = re.search(r"embedded Redis ready at (\S+)", self.proc.stderr)
        return found.group(1) if found else None

    def redis_children(self) -> list[Pid]:
        return [p for p in children(self.proc.pid) if p.exe_name().startswith("redis-server")]


@contextlib.asynccontextmanager
async def serving(
    conf: Path, port: int, log_dir: Path, name: str, *extra: str
) -> AsyncIterator[Serve]:
    """``tocsin serve`` on ``port``, ready (``/healthz`` answers) when the block starts."""
    args = ["serve", "--conf", str(conf), "--port", str(port), *extra]
    async with running(args, log_dir, name) as proc:
        serve = Serve(proc, port)
        await wait_http(serve.url + "/healthz", proc)
        proc.offspring.extend(serve.redis_children())
        yield serve


async def post_event(
    session: aiohttp.ClientSession, base_url: str, event: dict[str, Any]
) -> tuple[int, Any]:
    body = json.dumps(event).encode()
    async with session.post(
        base_url + "/v1/events", data=body, headers=signed_headers(body)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


# --- a receiver that can hold a request open ------------------------------------------


@dataclass
class HoldingReceiver:
    """Verifies like the ``receiver`` fixture; while ``hold`` is set it never answers."""

    url: str
    hold: bool = False
    #: webhook-ids of requests held open (the sender never got an answer).
    held: list[str] = field(default_factory=list)
    #: webhook-ids answered 204.
    received: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_until(self, what: str, count: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(items := self.held if what == "held" else self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {what} webhooks, got {items}")
            await asyncio.sleep(0.05)
        return items


@contextlib.asynccontextmanager
async def holding_receiver(port: int) -> AsyncIterator[HoldingReceiver]:
    verifier = Webhook(HOOK_SECRET)
    rec = HoldingReceiver(url=f"http://127.0.0.1:{port}/hook")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            rec.rejected.append(str(exc))
            return web.Response(status=401)
        msg_id = request.headers["webhook-id"]
        if rec.hold:
            rec.held.append(msg_id)
            await rec.release.wait()
            return web.Response(status=503)
        rec.received.append(msg_id)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()
