"""Search by recipient address in the archive (docs/data-protection.md, "Search by
address"), on each backend (SQLite; a real PostgreSQL server): the deliveries'
``to_hash`` column answers from its index however many rows are newer, and an archive
created before that column (schema version 1, made here with its own DDL) is migrated
on open, filled by bounded backfill calls, and searchable before, during and after."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aredis

from gateway.archive import (
    ArchivedDelivery,
    ArchivedEvent,
    Archiver,
    ArchiveStore,
    DeliveryQuery,
    archive_path,
    archived_deliveries,
)
from gateway.archive.contract import pack
from gateway.archive.postgres import PostgresArchive
from gateway.archive.tiers import RECIPIENT_SCAN
from gateway.history import DeliveryRecord, encode_record
from gateway.keys import Keys
from gateway.privacy.recipients import recipient_hash

from .postgres_server import Backend

KEY = b"k" * 32
WANTED = recipient_hash(KEY, "jeanne.dupont@example.com")
BASE = 1_790_000_000_000  # ms

# Version 1's deliveries and metadata, as a Tocsin before the ``to_hash`` column created
# them (only what the migration touches; events and dead letters are unchanged).
OLD_SQLITE = """
CREATE TABLE deliveries (
    delivery_id TEXT    NOT NULL PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    updated     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    customer_id TEXT,
    invoice_ref TEXT,
    record      BLOB    NOT NULL
);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_updated ON deliveries (updated);
CREATE INDEX deliveries_customer ON deliveries (customer_id, updated)
    WHERE customer_id IS NOT NULL;
CREATE INDEX deliveries_invoice ON deliveries (invoice_ref, updated)
    WHERE invoice_ref IS NOT NULL;
"""
OLD_PG = """
CREATE SCHEMA {s};
CREATE TABLE {s}.meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE {s}.deliveries (
    updated     bigint NOT NULL,
    delivery_id text COLLATE "C" PRIMARY KEY,
    event_id    text COLLATE "C" NOT NULL,
    status      text COLLATE "C" NOT NULL,
    channel     text COLLATE "C" NOT NULL,
    customer_id text COLLATE "C",
    invoice_ref text COLLATE "C",
    record      bytea  NOT NULL
);
CREATE INDEX deliveries_event ON {s}.deliveries (event_id, updated);
CREATE INDEX deliveries_updated ON {s}.deliveries (updated);
CREATE INDEX deliveries_customer ON {s}.deliveries (customer_id, updated)
    WHERE customer_id IS NOT NULL;
CREATE INDEX deliveries_invoice ON {s}.deliveries (invoice_ref, updated)
    WHERE invoice_ref IS NOT NULL;
INSERT INTO {s}.meta VALUES ('version', '1');
"""


def record(i: int, to_hash: str | None, ms: int) -> DeliveryRecord:
    return DeliveryRecord(
        id=f"d{i:06}",
        event_id=f"e{i}",
        event_type="payment.succeeded",
        rule="paid",
        channel="mail",
        status="delivered",
        updated=ms / 1000,
        to="j***@e***.com" if to_hash else None,
        to_hash=to_hash,
    )


def sql(backend: Backend, tmp_path: Path, statement: str, *args: Any) -> list[Any]:
    """A statement on the archive's own database, beside the store (``{s}``: its schema)."""
    if backend.name == "sqlite":
        with sqlite3.connect(archive_path(tmp_path), timeout=10) as db:
            return db.execute(statement.format(s="main"), args).fetchall()
    with psycopg.connect(backend.url, autocommit=True) as conn:
        cur = conn.execute(statement.format(s=backend.schema).replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []


async def test_search_by_address_finds_a_delivery_older_than_the_old_scan_reached(
    archive_backend: Backend, tmp_path: Path
) -> None:
    """Version 1 read at most ``RECIPIENT_SCAN`` rows, newest first: one delivery more
    recent than those stayed out of reach. The column's index finds it, erasure empties
    it, and the archiver fills it from the record it archives."""
    store = await archive_backend.open(tmp_path)
    try:
        assert await store.to_hash_pending() is None  # a new archive has nothing to fill
        await store.put_events(
            [ArchivedEvent("e0", 0, "1-0", BASE, "payment.succeeded", "c-old", None, b"{}")]
        )
        newer = RECIPIENT_SCAN + 10
        rows = [record(0, WANTED, BASE)]
        rows += [
            record(i, None if i % 2 else recipient_hash(KEY, f"o{i}@example.org"), BASE + i)
            for i in range(1, newer + 1)
        ]
        for start in range(0, len(rows), 5000):
            await store.put_deliveries([ArchivedDelivery.of(r) for r in rows[start : start + 5000]])
        rows.append(record(newer + 1, WANTED, BASE + newer + 1))
        await store.put_deliveries([ArchivedDelivery.of(rows[-1])])

        found = await archived_deliveries(store, DeliveryQuery(to_hash=WANTED))
        assert [r.id for r in found] == [rows[-1].id, "d000000"]
        assert found[1].to_hash == WANTED and found[1].updated == BASE / 1000
        newest = await archived_deliveries(store, DeliveryQuery(to_hash=WANTED, limit=1))
        assert [r.id for r in newest] == [rows[-1].id]
        bounded = DeliveryQuery(to_hash=WANTED, until=(BASE + 1) / 1000, channel="mail")
        assert [r.id for r in await archived_deliveries(store, bounded)] == ["d000000"]
        later = DeliveryQuery(to_hash=WANTED, since=(BASE + 1) / 1000)
        assert [r.id for r in await archived_deliveries(store, later)] == [rows[-1].id]
        nobody = recipient_hash(KEY, "nobody@example.org")
        assert await archived_deliveries(store, DeliveryQuery(to_hash=nobody)) == []
        if archive_backend.name == "sqlite":  # one probe of the index, not a walk in time
            plan = sql(
                archive_backend, tmp_path, "EXPLAIN QUERY PLAN SELECT record FROM deliveries "
                "WHERE to_hash = ? ORDER BY updated DESC LIMIT 50", WANTED,
            )  # fmt: skip
            assert "deliveries_to" in " ".join(str(step[-1]) for step in plan), plan

        # Erasure keeps the row, redacted: it is no longer found by the address.
        counts = await store.erase_customer("c-old", ["e0"], [])
        assert counts["deliveries"] == 1
        found = await archived_deliveries(store, DeliveryQuery(to_hash=WANTED))
        assert [r.id for r in found] == [rows[-1].id]
    finally:
        await store.close()


async def test_the_archiver_writes_the_hash_column(
    archive_backend: Backend, tmp_path: Path, redis_url: str
) -> None:
    client = aredis.Redis.from_url(redis_url)
    await client.flushdb()
    store = await archive_backend.open(tmp_path)
    keys = Keys()
    old = record(7, WANTED, int((time.time() - 7200) * 1000))
    try:
        await client.set(keys.record(old.id), encode_record(old))
        await client.zadd(keys.history, {old.id: old.updated * 1000})
        archiver = Archiver(
            client, keys, store, hot_window=60, retention=30 * 86400, owner="t", rate=0
        )
        result = await archiver.archive_once()
        assert result.deliveries == 1 and not await client.exists(keys.record(old.id))
        found = await store.find_deliveries(DeliveryQuery(to_hash=WANTED))
        assert [r.id for r in found] == [old.id]
    finally:
        await store.close()
        await client.aclose()


async def _create_old(backend: Backend, tmp_path: Path, rows: list[DeliveryRecord]) -> None:
    insert = (
        "INSERT INTO {s}.deliveries (delivery_id, event_id, updated, status, channel, record) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    values = [
        (r.id, r.event_id, int(r.updated * 1000), r.status, r.channel, pack(encode_record(r)))
        for r in rows
    ]
    if backend.name == "sqlite":
        path = archive_path(tmp_path)
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(OLD_SQLITE)
            db.executemany(insert.format(s="main"), values)
        return
    with psycopg.connect(backend.url, autocommit=True) as conn:
        conn.execute(OLD_PG.format(s=backend.schema).encode())
        with conn.cursor() as cur:
            cur.executemany(insert.format(s=backend.schema).replace("?", "%s"), values)


async def _search(store: ArchiveStore) -> list[str]:
    return [r.id for r in await archived_deliveries(store, DeliveryQuery(to_hash=WANTED))]


async def test_an_archive_of_the_old_schema_is_migrated_then_backfilled_in_bounded_steps(
    archive_backend: Backend, tmp_path: Path
) -> None:
    """Records with the wanted hash, another, or none (no recipient): the backfill
    fills what records hold, 100 rows a call, and says when it is done."""
    old = [
        record(i, WANTED if i % 7 == 0 else (None if i % 3 else recipient_hash(KEY, f"{i}@x")),
               BASE + i * 1000)
        for i in range(250)
    ]  # fmt: skip
    expected = sorted((r for r in old if r.to_hash == WANTED), key=lambda r: -r.updated)
    await _create_old(archive_backend, tmp_path, old)
    if archive_backend.name == "postgresql":
        # A command that only reads (``create=False``) migrates nothing: it searches as
        # version 1 did until a gateway has migrated the schema.
        url, schema = archive_backend.url, archive_backend.schema
        reader = await PostgresArchive.open(url, schema, create=False)
        try:
            assert await _search(reader) == [r.id for r in expected]
            assert await reader.backfill_to_hash(100) == 0
        finally:
            await reader.close()

    store = await archive_backend.open(tmp_path)
    try:
        assert await store.to_hash_pending() == ""  # migrated on open, nothing filled yet
        meta = dict(sql(archive_backend, tmp_path, "SELECT key, value FROM {s}.meta"))
        assert meta["version"] == "2" and "to_hash_backfilled" not in meta
        filled = "SELECT count(*) FROM {s}.deliveries WHERE to_hash IS NOT NULL"
        assert sql(archive_backend, tmp_path, filled) == [(0,)]
        # Not filled yet, found all the same: their records are read and compared.
        assert await store.find_deliveries(DeliveryQuery(to_hash=WANTED)) == []
        assert await _search(store) == [r.id for r in expected]
        # Written since the migration: in the column at once.
        new = record(999, WANTED, BASE + 999_000)
        await store.put_deliveries([ArchivedDelivery.of(new)])
        assert await _search(store) == [new.id, *(r.id for r in expected)]

        steps = []
        while (step := await store.backfill_to_hash(100)) == 100:
            steps.append(step)
            # Half filled: the index and the rows past the cursor answer together.
            assert await store.to_hash_pending() not in (None, "")
            assert await _search(store) == [new.id, *(r.id for r in expected)]
        steps.append(step)
        assert steps == [100, 100, 51]  # 250 old rows and the new one, 100 at a time
        assert await store.to_hash_pending() is None
        assert await store.backfill_to_hash(100) == 0
        meta = dict(sql(archive_backend, tmp_path, "SELECT key, value FROM {s}.meta"))
        assert meta["to_hash_backfilled"] == "1" and "to_hash_cursor" not in meta
        hashed = [r for r in old if r.to_hash is not None]
        assert sql(archive_backend, tmp_path, filled) == [(len(hashed) + 1,)]
        # The index alone answers now.
        indexed = await store.find_deliveries(DeliveryQuery(to_hash=WANTED))
        assert [r.id for r in indexed] == [new.id, *(r.id for r in expected)]
    finally:
        await store.close()

    store = await archive_backend.open(tmp_path)  # opened again: nothing left to migrate
    try:
        assert await store.to_hash_pending() is None
        assert await _search(store) == [new.id, *(r.id for r in expected)]
    finally:
        await store.close()
