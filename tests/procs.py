"""Real ``tocsin`` subprocesses for the multi-process tests, always reaped.

Linux only: child processes are found through ``/proc`` (the gateway itself relies on
``prctl(PR_SET_PDEATHSIG)``, Linux too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
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
#: The console script pip installed, as a user runs it.
TOCSIN_SCRIPT = str(Path(sys.executable).with_name("tocsin"))


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
            # Its own process group, as a shell gives a command: tests can signal the
            # group the way Ctrl-C in a terminal does.
            start_new_session=True,
        )
    return Proc(popen, out_path, err_path)


def run_tocsin(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The installed ``tocsin`` command, run to its end (killed past ``timeout``)."""
    proc = subprocess.Popen(
        [TOCSIN_SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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
    """A running ``tocsin serve``; ``port`` is ``None`` for a process without intake."""

    proc: Proc
    port: int | None

    @property
    def url(self) -> str:
        assert self.port is not None, "this process runs no intake"
        return f"http://127.0.0.1:{self.port}"

    @property
    def consumer(self) -> str:
        """Its consumer name in the Redis groups, from the start-up log."""
        found = re.search(r"consumer (\S+) running roles", self.proc.stderr)
        assert found, f"pid {self.proc.pid} has not logged its consumer name yet"
        return found.group(1)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until it runs its roles (and its intake answers, if it has one)."""
        await self.proc.wait_output("running roles", timeout, stream="stderr")
        if self.port is not None:
            await wait_http(self.url + "/healthz", self.proc, timeout)

    @property
    def redis_url(self) -> str | None:
        """The embedded Redis's address, from the start-up log."""
        found = re.search(r"embedded Redis ready at (\S+)", self.proc.stderr)
        return found.group(1) if found else None

    def redis_children(self) -> list[Pid]:
        """The embedded redis-server, by the pid the gateway logged (not by executable
        name: Debian's /usr/bin/redis-server is a symlink to redis-check-rdb)."""
        found = re.search(r"embedded Redis ready at \S+ \(Redis \S+, pid (\d+)\)", self.proc.stderr)
        if found is None:
            return []
        pid = int(found.group(1))
        return [p for p in children(self.proc.pid) if p.pid == pid]


@contextlib.asynccontextmanager
async def serving(
    conf: Path, port: int, log_dir: Path, name: str, *extra: str
) -> AsyncIterator[Serve]:
    """``tocsin serve`` on ``port``, ready (``/healthz`` answers) when the block starts."""
    args = ["serve", "--conf", str(conf), "--port", str(port), *extra]
    async with running(args, log_dir, name) as proc:
        serve = Serve(proc, port)
        # Ours first: under pytest-xdist another worker's server may briefly hold a port
        # free_port() gave out, and answer /healthz before this gateway has even started.
        await proc.wait_output("running roles", 30.0, stream="stderr")
        await wait_http(serve.url + "/healthz", proc)
        proc.offspring.extend(serve.redis_children())
        yield serve


class Gateways:
    """Several ``tocsin serve`` processes, started together, each reaped at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[str, Serve] = {}

    def spawn(
        self,
        name: str,
        conf: Path,
        roles: Sequence[str] = (),
        port: int | None = None,
        *,
        log_level: str = "info",
    ) -> Serve:
        """Start one (without waiting): ``roles`` empty runs all three; ``port`` for intake."""
        if port is None and (not roles or "intake" in roles):
            raise ValueError("a process with the intake role needs a port")
        # One process each: these model separate gateways (each its own consumer, killed
        # alone); `tocsin serve`'s own processes are tests/test_supervisor.py's.
        args = ["serve", "--conf", str(conf), "--log-level", log_level, "--processes", "1"]
        for role in roles:
            args += ["--role", role]
        if port is not None:
            args += ["--port", str(port)]
        serve = Serve(spawn(args, self.log_dir, name), port)
        self.started[name] = serve
        return serve

    async def start(self, *specs: tuple[Any, ...], timeout: float = 30.0) -> list[Serve]:
        """Spawn each ``(name, conf, roles[, port])`` at once, then wait until all are ready."""
        serves = [self.spawn(*spec) for spec in specs]
        await asyncio.gather(*(s.wait_ready(timeout) for s in serves))
        return serves

    async def terminate(self, *serves: Serve, timeout: float = 20.0) -> list[int]:
        """SIGTERM them all at once; their exit codes."""
        for serve in serves:
            serve.proc.signal(signal.SIGTERM)
        return list(await asyncio.gather(*(s.proc.wait(timeout) for s in serves)))

    def cleanup(self) -> None:
        for serve in self.started.values():
            serve.proc.cleanup()


@contextlib.asynccontextmanager
async def gateways(log_dir: Path) -> AsyncIterator[Gateways]:
    group = Gateways(log_dir)
    try:
        yield group
    finally:
        group.cleanup()


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


# --- a receiver that keeps a ledger of every attempt --------------------------------------

#: Header each test process's conf adds to its webhooks, naming the sending process.
SENDER_HEADER = "x-tocsin-proc"


@dataclass
class Attempt:
    """One signed request that reached the receiver."""

    webhook_id: str
    event_id: str
    #: The sending process (``SENDER_HEADER``), or ``""``.
    sender: str
    #: ``time.monotonic()`` when it arrived.
    at: float
    #: What it was answered; ``None`` while unanswered (held, or never answered).
    status: int | None = None


@dataclass
class LedgerReceiver:
    """Verifies each webhook with the ``standardwebhooks`` reference library, and records it.

    Behaviour can change while it runs: ``hold`` (take requests, answer none until
    ``release``), ``delay`` (answer after that long), ``fail_ratio`` (answer 500 to that
    share of requests, at random from a seeded generator).
    """

    url: str
    hold: bool = False
    delay: float = 0.0
    fail_ratio: float = 0.0
    seed: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def delivered(self) -> list[Attempt]:
        """Attempts answered 2xx: what the receiver accepted."""
        return [a for a in self.attempts if a.status is not None and 200 <= a.status < 300]

    def delivered_event_ids(self) -> set[str]:
        return {a.event_id for a in self.delivered()}

    def unanswered(self, sender: str | None = None) -> list[Attempt]:
        return [a for a in self.attempts if a.status is None and sender in (None, a.sender)]

    def by_webhook_id(self) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {}
        for attempt in self.attempts:
            out.setdefault(attempt.webhook_id, []).append(attempt)
        return out

    def duplicates(self) -> dict[str, int]:
        """webhook-ids accepted (2xx) more than once, with how often."""
        counts = Counter(a.webhook_id for a in self.delivered())
        return {k: n for k, n in counts.items() if n > 1}

    async def wait_delivered(self, event_ids: set[str], timeout: float) -> float:
        """Until every one of ``event_ids`` was accepted; when the last one was (monotonic)."""
        deadline = time.monotonic() + timeout
        while missing := event_ids - self.delivered_event_ids():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(missing)} of {len(event_ids)} events not delivered within "
                    f"{timeout}s, e.g. {sorted(missing)[:5]}"
                )
            await asyncio.sleep(0.05)
        return max(a.at for a in self.delivered() if a.event_id in event_ids)

    async def _handle(self, verifier: Webhook, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            self.rejected.append(str(exc))
            return web.Response(status=401)
        attempt = Attempt(
            webhook_id=request.headers["webhook-id"],
            event_id=str(json.loads(body).get("id", "")),
            sender=request.headers.get(SENDER_HEADER, ""),
            at=time.monotonic(),
        )
        self.attempts.append(attempt)
        if self.hold:
            await self.release.wait()
            return web.Response(status=503)  # too late: its sender gave up or died
        if self.delay:
            await asyncio.sleep(self.delay)
        status = 500 if self._random.random() < self.fail_ratio else 204
        attempt.status = status
        return web.Response(status=status)


@contextlib.asynccontextmanager
async def ledger_receiver(port: int, **behaviour: Any) -> AsyncIterator[LedgerReceiver]:
    verifier = Webhook(HOOK_SECRET)
    rec = LedgerReceiver(url=f"http://127.0.0.1:{port}/hook", **behaviour)

    async def handle(request: web.Request) -> web.Response:
        return await rec._handle(verifier, request)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


# --- producers: post events the way a provider does, retrying until acknowledged ----------


@dataclass
class Ledger:
    """What the producers sent and what the gateway acknowledged."""

    #: Every event id posted at least once.
    sent: set[str] = field(default_factory=set)
    #: Event id -> the answer that acknowledged it: 202, or 200 (an earlier try was stored).
    acked: dict[str, int] = field(default_factory=dict)
    #: Every answer received, by status, plus ``"error"`` for no answer at all.
    answers: Counter[int | str] = field(default_factory=Counter)
    #: Event id -> an answer a provider would not retry (4xx): the test's own bug.
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        """Tries that got no acknowledgement (503, connection refused or reset, timeout)."""
        return sum(n for k, n in self.answers.items() if k not in (200, 202))


async def _produce_one(
    session: aiohttp.ClientSession,
    ledger: Ledger,
    targets: Sequence[str],
    start: int,
    events: Sequence[dict[str, Any]],
    deadline: float,
) -> None:
    target = start
    for event in events:
        body = json.dumps(event).encode()
        ledger.sent.add(event["id"])
        pause = 0.02
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"event {event['id']} not acknowledged before the deadline")
            url = targets[target % len(targets)] + "/v1/events"
            try:
                async with session.post(
                    url, data=body, headers=signed_headers(body, msg_id=event["id"])
                ) as resp:
                    status = resp.status
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError):
                status, text = 0, ""
            ledger.answers[status or "error"] += 1
            if status in (200, 202):
                ledger.acked[event["id"]] = status
                break
            if 400 <= status < 500:
                ledger.refused[event["id"]] = f"{status} {text}"
                break
            # 503 (store unavailable) or no answer: retry, as a provider would, on the next
            # gateway if there are several. Providers wait Retry-After (5 s); kept short here.
            target += 1
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(0.25, pause * 2)


async def produce(
    ledger: Ledger,
    targets: Sequence[str],
    events: Sequence[dict[str, Any]],
    *,
    producers: int,
    timeout: float = 60.0,
) -> None:
    """``producers`` concurrent senders, each posting its share of ``events`` one at a time."""
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(limit=producers * 2)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=15)
    ) as session:
        await asyncio.gather(
            *(
                _produce_one(session, ledger, targets, i, events[i::producers], deadline)
                for i in range(producers)
            )
        )
