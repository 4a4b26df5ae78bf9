"""The parent process: keep N gateway children running, restart the dead, drain on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("tocsin")


@dataclass(frozen=True)
class ChildSpec:
    """One child slot: its roles and (with the intake role) its listening socket."""

    slot: int
    roles: tuple[str, ...]
    sock: socket.socket | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts of a slot, and when to give up.

    A child that ran ``stable_after`` seconds or more resets its slot's count: only
    deaths in a row, each soon after its start, make a crash loop.
    """

    first: float = 0.5
    cap: float = 30.0
    stable_after: float = 30.0
    #: Quick deaths in a row after which the supervisor stops everything (exit 1).
    give_up_after: int = 5

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** max(0, failures - 1)))


def describe_exit(code: int) -> str:
    """``exit code 3`` / ``signal SIGKILL`` from a returncode."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class Supervisor:
    """Runs ``command(spec)`` for each spec, until ``stopping`` is set.

    ``grace``: how long children may take to drain after SIGTERM before SIGKILL (their
    own shutdown grace plus a margin).
    """

    specs: Sequence[ChildSpec]
    command: Callable[[ChildSpec], list[str]]
    grace: float
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    #: slot -> the running child.
    running: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    #: slot -> how many times it was restarted.
    restarts: dict[int, int] = field(default_factory=dict)
    gave_up: bool = False

    async def run(self, stopping: asyncio.Event) -> int:
        """0 once every child drained after ``stopping``; 1 after a crash loop or a child
        that had to be killed."""
        keepers = [asyncio.create_task(self._keep(spec, stopping)) for spec in self.specs]
        await stopping.wait()
        log.info("supervisor: stopping %d gateway process(es)", len(self.running))
        for child in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        done, pending = await asyncio.wait(keepers, timeout=self.grace)
        killed = False
        if pending:
            for slot, child in list(self.running.items()):
                log.error("supervisor: gateway %s (pid %s) not drained in %.0fs: SIGKILL",
                          slot, child.pid, self.grace)  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
            killed = True
            await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                log.error("supervisor: slot task failed: %r", task.exception())
        return 1 if self.gave_up or killed else 0

    def forward(self, sig: int) -> None:
        """Pass a signal on to every running child (SIGHUP: each reloads its conf; a
        child started later reads the conf file as it is then)."""
        log.info("supervisor: %s to %d gateway process(es)", signal.Signals(sig).name,
                 len(self.running))  # fmt: skip
        for child in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)

    async def _spawn(self, spec: ChildSpec) -> asyncio.subprocess.Process:
        fds = () if spec.sock is None else (spec.sock.fileno(),)
        child = await asyncio.create_subprocess_exec(
            *self.command(spec),
            stdin=asyncio.subprocess.DEVNULL,
            pass_fds=fds,
        )
        self.running[spec.slot] = child
        log.info("supervisor: gateway %d started (pid %d, roles: %s)",
                 spec.slot, child.pid, ", ".join(spec.roles))  # fmt: skip
        return child

    async def _keep(self, spec: ChildSpec, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            started = time.monotonic()
            child = await self._spawn(spec)
            if stopping.is_set():  # asked to stop while it was being started
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
            code = await child.wait()
            self.running.pop(spec.slot, None)
            if stopping.is_set():
                if code != 0:
                    log.warning("supervisor: gateway %d (pid %d) ended with %s while stopping",
                                spec.slot, child.pid, describe_exit(code))  # fmt: skip
                return
            lived = time.monotonic() - started
            failures = 1 if lived >= self.policy.stable_after else failures + 1
            if failures > self.policy.give_up_after:
                log.error(
                    "supervisor: gateway %d died %d times in a row, each within %.0fs of its "
                    "start (last: %s): giving up, stopping every process",
                    spec.slot, failures, self.policy.stable_after, describe_exit(code),
                )  # fmt: skip
                self.gave_up = True
                stopping.set()
                return
            delay = self.policy.delay(failures)
            self.restarts[spec.slot] = self.restarts.get(spec.slot, 0) + 1
            log.error("supervisor: gateway %d (pid %d) died (%s) after %.1fs; restarting in %.1fs",
                      spec.slot, child.pid, describe_exit(code), lived, delay)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
