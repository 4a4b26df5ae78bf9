"""A real PostgreSQL server for the archive tests, and the two archive backends as one
fixture (``archive_backend``) so the same assertions run on SQLite and on PostgreSQL.

The server is the machine's own (Debian's ``postgresql`` package: initdb and postgres
from /usr/lib/postgresql/<version>/bin, else from PATH), initialised in a temporary
folder and listening on a free loopback port, once per session; each test gets a schema
of its own. PostgreSQL refuses to run as root, so as root it runs as the ``postgres``
system user. In CI (``CI`` set) a server that cannot start fails the tests that need it;
elsewhere they are skipped, with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest

from gateway.archive import ArchiveStore, SqliteArchive, archive_path
from gateway.archive.postgres import PostgresArchive
from gateway.conf import HistorySection, Secret
from gateway.redis_server import free_port

START_TIMEOUT = 30.0


def server_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    def __init__(
        self, bin_dir: Path, user: pwd.struct_passwd | None, *, durable: bool = False
    ) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.port = free_port()
        # Not pytest's tmp dir: that is root's, mode 0700, where the postgres user
        # could not reach its socket.
        self.dir = Path(tempfile.mkdtemp(prefix="tocsin-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.as_user: list[str] = []
        if user is not None:  # root: postgres refuses to run as root
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--no-sync", "--locale=C", "--encoding=UTF8"],
            cwd=self.dir, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        # fsync off in tests: they kill gateways, never the server. The bench keeps
        # PostgreSQL's durable defaults, as production would.
        fast = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*self.as_user, str(self.bin_dir / "postgres"), "-D", str(self.data),
                 "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.dir),
                 *([] if self.durable else fast), "-c", "shared_buffers=64MB"],
                cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    log = self.log.read_text()[-2000:]
                    raise TimeoutError(f"postgres not ready: {log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # a "fast" shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable ({reason}); apt-get install postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = server_bin()
    if bin_dir is None:
        _unavailable("no postgres binary in /usr/lib/postgresql/*/bin or on PATH")
    try:
        user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    except KeyError:
        _unavailable("running as root, and there is no postgres user to run it as")
    server = PostgresServer(bin_dir, user)
    try:
        server.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        server.stop()
        detail = str(exc)
        if isinstance(exc, subprocess.CalledProcessError):
            detail = exc.stderr.decode(errors="replace")[-1000:]
        _unavailable(f"cannot start it: {detail}")
    yield server
    server.stop()


@dataclass(frozen=True)
class Backend:
    """One archive backend as a deployment configures it."""

    name: str
    url: str = ""
    schema: str = ""

    @property
    def history(self) -> HistorySection:
        if self.name == "sqlite":
            return HistorySection()
        return HistorySection(
            archive="postgresql", archive_url=Secret(self.url), archive_schema=self.schema
        )

    def conf_lines(self) -> str:
        """Lines of ``[history]`` that select it."""
        if self.name == "sqlite":
            return ""
        return (
            f'archive = "postgresql"\narchive_url = "{self.url}"\n'
            f'archive_schema = "{self.schema}"\n'
        )

    async def open(self, data_dir: Path) -> ArchiveStore:
        """The store the gateway opens with this conf (``gateway.archive.opened``)."""
        if self.name == "sqlite":
            return await SqliteArchive.open(archive_path(data_dir))
        return await PostgresArchive.open(self.url, self.schema)

    def rows(self, data_dir: Path) -> tuple[list[str], list[bytes]]:
        """Event ids and (packed) record blobs archived so far, read beside the writer."""
        if self.name == "sqlite":
            db = archive_path(data_dir)
            if not db.exists():
                return [], []
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
                try:
                    events = [r[0] for r in conn.execute("SELECT event_id FROM events")]
                    records = [r[0] for r in conn.execute("SELECT record FROM deliveries")]
                except sqlite3.OperationalError:  # schema not created yet
                    return [], []
            return events, records
        with psycopg.connect(self.url, autocommit=True) as conn:
            try:
                events = [r[0] for r in conn.execute(f"SELECT event_id FROM {self.schema}.events")]
                blobs = conn.execute(f"SELECT record FROM {self.schema}.deliveries")
                return events, [bytes(r[0]) for r in blobs]
            except psycopg.errors.UndefinedTable:  # schema not created yet
                return [], []


BACKENDS = ["sqlite", "postgresql"]


def make_backend(request: pytest.FixtureRequest, name: str) -> Backend:
    if name == "sqlite":
        return Backend("sqlite")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Backend("postgresql", server.url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def archive_backend(request: pytest.FixtureRequest) -> Backend:
    """Each archive backend in turn, fresh (PostgreSQL: a schema of its own)."""
    return make_backend(request, request.param)
