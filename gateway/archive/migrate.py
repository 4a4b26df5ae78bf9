"""Schema version 2 of both archive backends: the deliveries' ``to_hash`` column, and the
bounded backfill that fills it on rows archived before it existed.

Version 1 kept the recipient's keyed hash only inside each record's compressed JSON, so
a search by address had to decode rows and gave up after a bounded number
(docs/data-protection.md, "Search by address"). Opening an archive adds the column and
its index when missing: a column without a default is a catalog change in both SQLite
and PostgreSQL, and the index is partial (``WHERE to_hash IS NOT NULL``), so it starts
empty; no row is rewritten at open, whatever the archive's size. The old rows are filled
afterwards by ``backfill_to_hash`` calls (the archiver makes one per pass), a bounded
number of rows each, walking the primary key from a cursor kept in ``meta``; the cursor
is removed and ``to_hash_backfilled`` set once it reaches the end. Until then,
``tiers.archived_deliveries`` also decodes the rows past the cursor whose column is
still empty (bounded, as version 1 did for every row).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

from .contract import BACKFILL_CURSOR, BACKFILL_DONE, stored_hash

if TYPE_CHECKING:  # psycopg is an optional extra: SQLite's archive runs without it
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

    Conn = AsyncConnection[TupleRow]

#: Both backends' schema version (in their ``meta`` table); 2 added ``to_hash``.
VERSION = 2

_SQLITE_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_to ON deliveries (to_hash, updated) "
    "WHERE to_hash IS NOT NULL"
)
_PG_INDEX = (
    "CREATE INDEX IF NOT EXISTS deliveries_to ON {s}.deliveries (to_hash, updated) "
    "WHERE to_hash IS NOT NULL"
)


def _sqlite_current(db: sqlite3.Connection) -> bool:
    version = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    return version is not None and int(version[0]) >= VERSION


def sqlite_migrate(db: sqlite3.Connection) -> None:
    """After the tables are created if missing: the column, index and version, in one
    write transaction (several processes may open the file at once). A file already at
    this version is only read: commands that read history write nothing."""
    if _sqlite_current(db):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if not _sqlite_current(db):
            columns = {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}
            if "to_hash" not in columns:
                db.execute("ALTER TABLE deliveries ADD COLUMN to_hash TEXT")
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, '')", (BACKFILL_CURSOR,))
            else:  # created with the column: nothing to fill
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, '1')", (BACKFILL_DONE,))
            db.execute(_SQLITE_INDEX)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def sqlite_pending(db: sqlite3.Connection) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (BACKFILL_CURSOR,)).fetchone()
    return None if row is None else str(row[0])


def sqlite_backfill(db: sqlite3.Connection, limit: int) -> int:
    """At most ``limit`` rows past the cursor filled; how many were read (0: done)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        after = sqlite_pending(db)
        if after is None:
            db.execute("COMMIT")
            return 0
        rows = db.execute(
            "SELECT delivery_id, record FROM deliveries WHERE delivery_id > ? "
            "ORDER BY delivery_id LIMIT ?",
            (after, limit),
        ).fetchall()
        fills = [(h, i) for i, record in rows if (h := stored_hash(record)) is not None]
        # A row written since the column exists already has its hash (and an erased one
        # has none in its record): only empty columns are filled.
        db.executemany(
            "UPDATE deliveries SET to_hash = ? WHERE delivery_id = ? AND to_hash IS NULL", fills
        )
        if len(rows) < limit:
            db.execute("DELETE FROM meta WHERE key = ?", (BACKFILL_CURSOR,))
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, '1')", (BACKFILL_DONE,))
        else:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (rows[-1][0], BACKFILL_CURSOR))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(rows)


async def pg_migrate(conn: Conn, s: str) -> None:
    """Inside the schema's creation transaction (under its advisory lock), after the
    tables are created if missing: a version-1 schema gets the column and the cursor."""
    cur = await conn.execute(f"SELECT value FROM {s}.meta WHERE key = 'version'")
    row = await cur.fetchone()
    if row is None:  # a new schema: its table was created with the column
        await conn.execute(f"INSERT INTO {s}.meta VALUES (%s, '1')", (BACKFILL_DONE,))
    elif int(row[0]) < 2:
        await conn.execute(
            f'ALTER TABLE {s}.deliveries ADD COLUMN IF NOT EXISTS to_hash text COLLATE "C"'
        )
        await conn.execute(
            f"INSERT INTO {s}.meta VALUES (%s, '') ON CONFLICT DO NOTHING", (BACKFILL_CURSOR,)
        )
    await conn.execute(_PG_INDEX.format(s=s))
    await conn.execute(
        f"INSERT INTO {s}.meta VALUES ('version', %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(VERSION),),
    )


async def pg_has_column(conn: Conn, schema: str) -> bool:
    """Whether a schema's deliveries have ``to_hash`` (a command that only reads does
    not migrate: until a gateway has, it searches the old way)."""
    cur = await conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'deliveries' AND column_name = 'to_hash'",
        (schema,),
    )
    return await cur.fetchone() is not None


async def pg_pending(conn: Conn, s: str) -> str | None:
    cur = await conn.execute(f"SELECT value FROM {s}.meta WHERE key = %s", (BACKFILL_CURSOR,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


def _hashes(records: list[Any]) -> list[str | None]:
    return [stored_hash(bytes(r)) for r in records]


async def pg_backfill(conn: Conn, s: str, limit: int) -> int:
    """As ``sqlite_backfill``, in one transaction: the cursor's row is locked (two
    archivers take turns), and so are the rows read, so an erasure committing meanwhile
    (which empties the column) cannot be undone by this batch's older copy."""
    async with conn.transaction():
        cur = await conn.execute(
            f"SELECT value FROM {s}.meta WHERE key = %s FOR UPDATE", (BACKFILL_CURSOR,)
        )
        row = await cur.fetchone()
        if row is None:
            return 0
        cur = await conn.execute(
            f"SELECT delivery_id, record FROM {s}.deliveries WHERE delivery_id > %s "
            "ORDER BY delivery_id LIMIT %s FOR UPDATE",
            (row[0], limit),
        )
        rows = await cur.fetchall()
        hashes = await asyncio.to_thread(_hashes, [r[1] for r in rows])
        fills = [(r[0], h) for r, h in zip(rows, hashes, strict=True) if h is not None]
        if fills:
            await conn.execute(
                f"UPDATE {s}.deliveries d SET to_hash = n.h FROM unnest(%s::text[], %s::text[]) "
                "AS n(id, h) WHERE d.delivery_id = n.id AND d.to_hash IS NULL",
                ([f[0] for f in fills], [f[1] for f in fills]),
            )
        if len(rows) < limit:
            await conn.execute(f"DELETE FROM {s}.meta WHERE key = %s", (BACKFILL_CURSOR,))
            await conn.execute(
                f"INSERT INTO {s}.meta VALUES (%s, '1') ON CONFLICT DO NOTHING", (BACKFILL_DONE,)
            )
        else:
            await conn.execute(
                f"UPDATE {s}.meta SET value = %s WHERE key = %s", (rows[-1][0], BACKFILL_CURSOR)
            )
    return len(rows)
