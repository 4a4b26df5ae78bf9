"""Archiving's pace: ``[history] archive_rate`` bounds the records archived per second
(so archiving's CPU beside deliveries is bounded), and the pace is lifted while the
backlog is more than ``archive_max_lag`` beyond the hot window. Real Redis, a real
SQLite archive, the archiver's own loop."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aredis

from gateway.archive import Archiver
from gateway.archive.store import SqliteArchive
from gateway.keys import Keys

from .conftest import make_event

N = 300
HOT = 60.0


async def _preload(client: aredis.Redis) -> None:
    """N routed events two hours old (past the hot window), as the router leaves them."""
    keys = Keys()
    base = int((time.time() - 7200) * 1000)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(N):
            event = make_event(id=f"evt_{i:04d}")
            pipe.xadd(keys.events, {"e": msgspec.json.encode(event)}, id=f"{base + i}-0")
        pipe.set(keys.routed_through, f"{base + N - 1}-0")
        await pipe.execute()


async def _archiver(redis_url: str, tmp_path: Path, **pace: float) -> tuple[Archiver, aredis.Redis]:
    client = aredis.Redis.from_url(redis_url)
    await client.flushdb()
    await _preload(client)
    store = await SqliteArchive.open(tmp_path / "history.sqlite3")
    archiver = Archiver(
        client, Keys(), store, hot_window=HOT, retention=30 * 86400, owner="t", batch=20,
        interval=0.05, **pace,
    )  # fmt: skip
    return archiver, client


async def test_archiving_keeps_its_pace(redis_url: str, tmp_path: Path) -> None:
    archiver, client = await _archiver(redis_url, tmp_path, rate=100, max_lag=10 * 86400)
    stopping = asyncio.Event()
    task = asyncio.create_task(archiver.run(stopping))
    try:
        deadline = time.monotonic() + 10
        while archiver.total.events == 0:
            assert time.monotonic() < deadline, "the archiver never archived"
            await asyncio.sleep(0.01)
        first = time.monotonic()
        await asyncio.sleep(1.0)
        archived = archiver.total.events
        elapsed = time.monotonic() - first
        stopping.set()
        await task
        # At 100 records/s: the first pass's 20, then 100 a second (a slow box archives
        # fewer, never more), and the rest still waiting in Redis.
        assert archived <= 20 + 100 * elapsed + 20, archived
        assert await client.xlen(Keys().events) == N - archiver.total.events
    finally:
        stopping.set()
        await task
        await client.aclose()
        await archiver.store.close()


@pytest.mark.parametrize("pace", [{"rate": 3, "max_lag": 60.0}, {"rate": 0}], ids=["lag", "off"])
async def test_the_pace_is_lifted_past_the_max_lag_or_when_off(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, pace: dict[str, float]
) -> None:
    # Events two hours old, a one-minute hot window: ~2 h behind, far beyond max_lag.
    archiver, client = await _archiver(redis_url, tmp_path, **pace)
    counted: list[tuple[str, int]] = []
    archiver.counted = lambda kind, n: counted.append((kind, n))  # the metrics' counter
    stopping = asyncio.Event()
    caplog.set_level(logging.INFO, "tocsin.archive")
    task = asyncio.create_task(archiver.run(stopping))
    try:
        deadline = time.monotonic() + 10
        while await client.xlen(Keys().events):
            assert time.monotonic() < deadline, f"{archiver.total.events} of {N} archived"
            await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await task
        await client.aclose()
        await archiver.store.close()
    assert archiver.total.events == N
    assert {kind for kind, _ in counted} == {"events"} and sum(n for _, n in counted) == N
    lifted = [r.getMessage() for r in caplog.records if "archive_max_lag" in r.getMessage()]
    if pace["rate"]:
        assert "more than archive_max_lag (60s): archiving at full speed" in lifted[0]
        assert "back under archive_max_lag; archiving at 3 records/s again" in lifted[1]
    else:
        assert lifted == []


async def test_a_slow_pace_takes_smaller_batches_not_longer_pauses(redis_url: str) -> None:
    # The pause after a full pass stays within a third of the shard lock's 15 s, so no
    # other process takes the shard over between two passes of a slow pace.
    client = aredis.Redis.from_url(redis_url)
    try:
        for rate, batch in ((10, 16), (1000, 1000), (0, 1000)):
            archiver = Archiver(
                client, Keys(), None, hot_window=HOT, retention=86400, owner="t",  # type: ignore[arg-type]
                batch=1000, rate=rate,
            )  # fmt: skip
            assert archiver.batch == batch
            if rate:
                assert 3 * archiver.batch / rate <= 5.0
    finally:
        await client.aclose()
