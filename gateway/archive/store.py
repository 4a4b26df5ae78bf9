"""The archive's embedded implementation: SQLite in the data dir (the contract both
implement is gateway.archive.contract; the server one, PostgreSQL, is
gateway.archive.postgres).

One database file, not one per day: searches by event id, customer or invoice ref must
answer from one index probe each, where a file per day would probe every day's file
(and SQLite attaches at most 10 by default). Whole days are dropped with a range on the
time index (``drop_before``); one customer's rows with the customer index
(``delete_customer``); freed pages are reused by later writes, and
``auto_vacuum = INCREMENTAL`` lets them be handed back to the filesystem.

SQLite is synchronous: every call runs on one thread of its own, so the event loop
(intake, delivery) never waits on the disk. WAL journal, ``synchronous = FULL``: a
commit is on disk before the archiver deletes anything from Redis, power loss included.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..history import DeliveryRecord, decode_record
from ..privacy.redact import redact_event, redact_record
from .contract import (
    LEVEL,
    ArchivedDeadLetter,
    ArchivedDelivery,
    ArchivedEvent,
    ArchiveStore,
    DeliveryQuery,
    EventQuery,
    dead_letter_filters,
    dead_letter_from_row,
    delivery_filters,
    event_from_row,
    job_customer,
    pack,
    unpack,
)
from .migrate import sqlite_backfill, sqlite_migrate, sqlite_pending

# The contract's names stay importable from here, where they lived first.
__all__ = [
    "LEVEL",
    "SCHEMA",
    "ArchiveStore",
    "ArchivedDeadLetter",
    "ArchivedDelivery",
    "ArchivedEvent",
    "DeliveryQuery",
    "EventQuery",
    "SqliteArchive",
    "archive_path",
    "dead_letter_from_row",
    "delivery_filters",
    "event_from_row",
    "job_customer",
    "pack",
    "unpack",
]

T = TypeVar("T")

# Version 2 (gateway.archive.migrate, which adds what an older file lacks): ``meta``, and
# the deliveries' ``to_hash`` column with its index (created there, after the column).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT    NOT NULL,
    shard       INTEGER NOT NULL,
    entry       TEXT    NOT NULL,
    accepted    INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    customer_id TEXT,
    invoice_ref TEXT,
    body        BLOB    NOT NULL,
    UNIQUE (event_id, shard, entry)
);
CREATE INDEX IF NOT EXISTS events_accepted ON events (accepted);
CREATE INDEX IF NOT EXISTS events_customer ON events (customer_id) WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_invoice ON events (invoice_ref) WHERE invoice_ref IS NOT NULL;

CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT    NOT NULL PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    updated     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    customer_id TEXT,
    invoice_ref TEXT,
    record      BLOB    NOT NULL,
    to_hash     TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
CREATE INDEX IF NOT EXISTS deliveries_updated ON deliveries (updated);
CREATE INDEX IF NOT EXISTS deliveries_customer ON deliveries (customer_id, updated)
    WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_invoice ON deliveries (invoice_ref, updated)
    WHERE invoice_ref IS NOT NULL;

CREATE TABLE IF NOT EXISTS dead_letters (
    shard       INTEGER NOT NULL,
    entry       TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    channel     TEXT,
    delivery_id TEXT,
    event_id    TEXT,
    customer_id TEXT,
    reason      TEXT    NOT NULL,
    status      INTEGER,
    payload     BLOB    NOT NULL,
    replayed    INTEGER,
    PRIMARY KEY (shard, entry)
);
CREATE INDEX IF NOT EXISTS dead_at ON dead_letters (at);
CREATE INDEX IF NOT EXISTS dead_customer ON dead_letters (customer_id)
    WHERE customer_id IS NOT NULL;
"""

# A delivery record carries no customer: it takes its event's, from the archive (the
# archiver archives an event before any of its records: see Archiver).
_PUT_DELIVERY = """
INSERT OR REPLACE INTO deliveries
    (delivery_id, event_id, updated, status, channel, customer_id, invoice_ref, record, to_hash)
VALUES (:id, :event_id, :updated, :status, :channel,
    (SELECT customer_id FROM events WHERE event_id = :event_id ORDER BY accepted DESC LIMIT 1),
    (SELECT invoice_ref FROM events WHERE event_id = :event_id ORDER BY accepted DESC LIMIT 1),
    :record, :to_hash)
"""

#: Retention kinds: their table and time column.
_KINDS = {
    "events": ("events", "accepted"),
    "deliveries": ("deliveries", "updated"),
    "dead_letters": ("dead_letters", "at"),
}

_EVENT_COLUMNS = "event_id, shard, entry, accepted, type, customer_id, invoice_ref, body"
_DEAD_COLUMNS = (
    "shard, entry, at, kind, channel, delivery_id, event_id, reason, status, payload, replayed"
)


class SqliteArchive:
    """``ArchiveStore`` on one SQLite file; every call on one thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tocsin-archive")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteArchive:
        store = cls(path)
        await store._call(store._open)
        return store

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly around each write batch.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")  # several gateway processes share it
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.executescript(SCHEMA)
        sqlite_migrate(db)
        self._db = db

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "archive not open"
        return self._db

    def _write(self, sql: str, rows: Iterable[Any]) -> int:
        """One transaction. ``rows`` may be a generator, then run on this thread: that
        keeps compression off the event loop (and zlib lets go of the GIL)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            count = db.executemany(sql, rows).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return count

    # -- writes ------------------------------------------------------------------------

    async def put_events(self, rows: Sequence[ArchivedEvent]) -> None:
        values = (
            (
                r.event_id,
                r.shard,
                r.entry,
                r.accepted,
                r.type,
                r.customer_id,
                r.invoice_ref,
                pack(r.raw),
            )
            for r in rows
        )
        sql = f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
        await self._call(self._write, sql, values)

    async def put_deliveries(self, rows: Sequence[ArchivedDelivery]) -> None:
        values = (
            {
                "id": r.id,
                "event_id": r.event_id,
                "updated": r.updated,
                "status": r.status,
                "channel": r.channel,
                "record": pack(r.raw),
                "to_hash": r.to_hash,
            }
            for r in rows
        )
        await self._call(self._write, _PUT_DELIVERY, values)

    async def put_dead_letters(self, rows: Sequence[ArchivedDeadLetter]) -> None:
        values = []
        for r in rows:
            customer = None
            if r.kind == "delivery" and r.event_id is not None:
                customer = job_customer(r.payload)
            values.append(
                (
                    r.shard,
                    r.entry,
                    r.at,
                    r.kind,
                    r.channel,
                    r.delivery_id,
                    r.event_id,
                    customer,
                    r.reason,
                    r.status,
                    pack(r.payload),
                    r.replayed,
                )
            )
        sql = (
            "INSERT OR IGNORE INTO dead_letters (shard, entry, at, kind, channel, delivery_id, "
            "event_id, customer_id, reason, status, payload, replayed) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        )
        await self._call(self._write, sql, values)

    async def claim_dead_letter(self, shard: int, entry: str, now_ms: int) -> bool:
        """Mark an archived dead letter replayed, once: whoever marks it queues it."""
        sql = (
            "UPDATE dead_letters SET replayed = ? "
            "WHERE shard = ? AND entry = ? AND replayed IS NULL"
        )
        return await self._call(self._write, sql, [(now_ms, shard, entry)]) == 1

    async def unclaim_dead_letter(self, shard: int, entry: str) -> None:
        sql = "UPDATE dead_letters SET replayed = NULL WHERE shard = ? AND entry = ?"
        await self._call(self._write, sql, [(shard, entry)])

    async def delete_customer(self, customer_id: str) -> int:
        """Every archived row about one customer (for erasure)."""

        def run() -> int:
            total = 0
            for table in ("events", "deliveries", "dead_letters"):
                sql = f"DELETE FROM {table} WHERE customer_id = ?"
                total += self._write(sql, [(customer_id,)])
            return total

        return await self._call(run)

    async def erase_customer(
        self, customer_id: str, event_ids: Sequence[str], needles: Sequence[str]
    ) -> dict[str, int]:
        """Erasure (``tocsin forget``): the customer's events and delivery records are
        rewritten with personal fields replaced (gateway.privacy.redact), their dead
        letters deleted. With ``secure_delete`` the old bytes are zeroed in the file, and
        the WAL is checkpointed and truncated: no copy is left on disk."""

        def run() -> dict[str, int]:
            db = self.db
            db.execute("PRAGMA secure_delete = ON")
            ids = sorted(set(event_ids))
            marks = ",".join("?" * len(ids)) or "NULL"
            where = f"customer_id = ? OR event_id IN ({marks})"
            args = (customer_id, *ids)
            counts = {"events": 0, "deliveries": 0, "dead_letters": 0}
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(f"SELECT rowid, body FROM events WHERE {where}", args)
                for rowid, body in rows.fetchall():
                    event = msgspec.json.decode(unpack(body))
                    new = pack(msgspec.json.encode(redact_event(event, needles)))
                    db.execute("UPDATE events SET body = ? WHERE rowid = ?", (new, rowid))
                    counts["events"] += 1
                rows = db.execute(f"SELECT rowid, record FROM deliveries WHERE {where}", args)
                for rowid, record in rows.fetchall():
                    scrubbed = redact_record(msgspec.json.decode(unpack(record)), needles)
                    new = pack(msgspec.json.encode(scrubbed))
                    db.execute(
                        "UPDATE deliveries SET record = ?, to_hash = NULL WHERE rowid = ?",
                        (new, rowid),
                    )
                    counts["deliveries"] += 1
                gone = db.execute(f"DELETE FROM dead_letters WHERE {where}", args)
                counts["dead_letters"] = gone.rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return counts

        return await self._call(run)

    async def drop_kind_before(
        self, kind: str, before_ms: int, limit: int, *, dry_run: bool = False
    ) -> int:
        """One kind's rows older than ``before_ms`` (``[retention]`` per kind), at most
        ``limit``; ``dry_run`` counts them (all of them)."""
        table, column = _KINDS[kind]

        def run() -> int:
            if dry_run:
                sql = f"SELECT COUNT(*) FROM {table} WHERE {column} < ?"
                return int(self.db.execute(sql, (before_ms,)).fetchone()[0])
            sql = (
                f"DELETE FROM {table} WHERE rowid IN "
                f"(SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
            )
            count = self._write(sql, [(before_ms, limit)])
            if count:
                self.db.execute("PRAGMA incremental_vacuum")
            return count

        return await self._call(run)

    async def drop_before(self, before_ms: int, limit: int) -> int:
        """Rows older than ``before_ms`` (whole days, when given a midnight), at most
        ``limit`` per table: what the retention drops, a bounded step at a time."""

        def run() -> int:
            total = 0
            for table, column in (("events", "accepted"), ("deliveries", "updated")):
                sql = (
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)"
                )
                total += self._write(sql, [(before_ms, limit)])
            sql = (
                "DELETE FROM dead_letters WHERE rowid IN "
                "(SELECT rowid FROM dead_letters WHERE at < ? LIMIT ?)"
            )
            total += self._write(sql, [(before_ms, limit)])
            if total:
                self.db.execute("PRAGMA incremental_vacuum")
            return total

        return await self._call(run)

    # -- reads -------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        return self.db.execute(sql, args).fetchall()

    async def customer_events(self, customer_id: str) -> list[ArchivedEvent]:
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE customer_id = ?"
        rows = await self._call(self._rows, sql, (customer_id,))
        return [event_from_row(r) for r in rows]

    async def get_event(self, event_id: str) -> ArchivedEvent | None:
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id = ? ORDER BY accepted DESC LIMIT 1"
        )
        rows = await self._call(self._rows, sql, (event_id,))
        return event_from_row(rows[0]) if rows else None

    async def list_events(
        self, *, type_glob: str | None, since: float | None, limit: int
    ) -> list[ArchivedEvent]:
        """Newest first. GLOB matches as ``fnmatchcase`` does (``*``, ``?``, ``[...]``)."""
        where, args = ["1"], list[Any]()
        if type_glob is not None:
            where.append("type GLOB ?")
            args.append(type_glob)
        if since is not None:
            where.append("accepted >= ?")
            args.append(int(since * 1000))
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
            "ORDER BY accepted DESC LIMIT ?"
        )
        rows = await self._call(self._rows, sql, (*args, limit))
        return [event_from_row(r) for r in rows]

    async def find_events(self, query: EventQuery) -> list[ArchivedEvent]:
        where, args = ["1"], list[Any]()
        indexed = (("customer_id", query.customer_id), ("invoice_ref", query.invoice_ref))
        for column, value in indexed:
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.type_glob is not None:
            where.append("type GLOB ?")
            args.append(query.type_glob)
        if query.since is not None:
            where.append("accepted >= ?")
            args.append(int(query.since * 1000))
        if query.until is not None:
            where.append("accepted < ?")
            args.append(int(query.until * 1000))
        if query.before is not None:
            where.append("(accepted < ? OR (accepted = ? AND entry < ?))")
            args += [query.before[0], query.before[0], query.before[1]]
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
            "ORDER BY accepted DESC, entry DESC LIMIT ?"
        )
        rows = await self._call(self._rows, sql, (*args, query.limit))
        return [event_from_row(r) for r in rows]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        found = await self.get_deliveries([delivery_id])
        return found.get(delivery_id)

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryRecord]:
        if not delivery_ids:
            return {}
        marks = ",".join("?" * len(delivery_ids))
        sql = f"SELECT record FROM deliveries WHERE delivery_id IN ({marks})"
        rows = await self._call(self._rows, sql, tuple(delivery_ids))
        records = [decode_record(unpack(r[0])) for r in rows]
        return {r.id: r for r in records}

    async def find_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        """Newest first, filtered as ``delivery_filters`` says."""
        where, args = delivery_filters(query, "?")
        sql = (
            f"SELECT record FROM deliveries WHERE {' AND '.join(where) or '1'} "
            "ORDER BY updated DESC LIMIT ?"
        )
        rows = await self._call(self._rows, sql, (*args, query.limit))
        return [decode_record(unpack(r[0])) for r in rows]

    async def dead_letters(
        self, *, channel: str | None, since: float | None, limit: int | None
    ) -> list[ArchivedDeadLetter]:
        """Oldest first, not yet replayed."""
        where, args = dead_letter_filters(channel, since, "?")
        sql = (
            f"SELECT {_DEAD_COLUMNS} FROM dead_letters WHERE {' AND '.join(where)} "
            "ORDER BY at LIMIT ?"
        )
        rows = await self._call(self._rows, sql, (*args, -1 if limit is None else limit))
        return [dead_letter_from_row(r) for r in rows]

    async def to_hash_pending(self) -> str | None:
        """The backfill's cursor while rows archived before the ``to_hash`` column are
        not all filled; ``None`` once they are (gateway.archive.migrate)."""
        return await self._call(sqlite_pending, self.db)

    async def backfill_to_hash(self, limit: int) -> int:
        """Fills the column on at most ``limit`` older rows; how many were read."""
        return await self._call(sqlite_backfill, self.db, limit)

    async def close(self) -> None:
        def run() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(run)
        self._pool.shutdown(wait=True)


def archive_path(data_dir: Path) -> Path:
    return data_dir / "archive" / "history.sqlite3"
