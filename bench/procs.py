"""Child processes of the benchmark: started, tracked by PID, and always stopped by PID.

Every child gets ``PR_SET_PDEATHSIG`` so it dies with the orchestrator even if that is
SIGKILLed; otherwise ``stop_all`` runs from ``finally`` and from ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU of a live process, from /proc (children not included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


class Procs:
    def __init__(self) -> None:
        self.running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        atexit.register(self.stop_all)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start a child; its stderr goes to ``log`` (else inherited), stdout piped if asked."""
        stderr: Any = None
        if log is not None:
            stderr = log.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - the orchestrator runs no threads
            )
        finally:
            if stderr is not None:
                stderr.close()
        self.running[proc.pid] = (name, proc)
        return proc

    def python(self, name: str, module: str, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, "-m", module, *args], **kwargs)

    def stop(
        self,
        proc: subprocess.Popen[bytes] | None,
        timeout: float = 15.0,
        sig: signal.Signals = signal.SIGTERM,
    ) -> int | None:
        """``sig`` (SIGTERM) by PID, then SIGKILL after ``timeout``; returns the exit code."""
        if proc is None:
            return None
        self.running.pop(proc.pid, None)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def result(self, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        """Wait (bounded) for a child that prints one JSON line, and return it."""
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            name = self.running.get(proc.pid, ("child",))[0]
            self.stop(proc)
            raise RuntimeError(f"{name} did not finish within {timeout:.0f}s") from None
        name = self.running.pop(proc.pid, ("child",))[0]
        if proc.returncode != 0:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{name} printed no result")
        return json.loads(lines[-1])  # type: ignore[no-any-return]

    def stop_all(self) -> None:
        for _, proc in list(self.running.values()):
            self.stop(proc, timeout=5.0)


def http_json(url: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200, the child dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} at start{tail(log)}")
        with contextlib.suppress(OSError, ValueError):
            if http_json(url, timeout=1.0)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready within {timeout:.0f}s{tail(log)}")
        time.sleep(0.05)


def tail(log: Path | None) -> str:
    """The end of a child's log, to put in an error message."""
    if log is None or not log.exists():
        return ""
    return "\n--- " + str(log) + " ---\n" + log.read_text(errors="replace")[-2000:]
