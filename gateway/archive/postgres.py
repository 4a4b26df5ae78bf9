"""The archive on a PostgreSQL server (``[history] archive = "postgresql"``): history that
several gateway boxes share, on a server the operator already runs, backs up and watches.

Same contract (gateway.archive.contract) and semantics as ``SqliteArchive``
(gateway.archive.store): the same rows keyed the same way (insert-or-ignore on event id
+ shard + entry id and on shard + dead letter entry, insert-or-replace on delivery id),
the same zlib-packed bodies, the same indexes and orderings. Plain tables, not
partitioned by day: PostgreSQL wants the partition key in every unique index, and a
delivery record's day (its last update) moves when it is replayed, so "one row per
delivery id" could no longer be enforced; and every search (by event id, customer,
invoice ref, delivery id) would probe each day's partition. Retention deletes in bounded
batches down the time indexes; autovacuum hands the space to later inserts, so the
tables stay at the retention's size (docs/delivery.md).

Asynchronous (psycopg 3 and its pool): the event loop never waits on the server, and
compressing a batch runs on a thread. The pool connects lazily and reconnects: a server
down only keeps history in Redis until it is back (the archiver retries every pass).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from ..history import DeliveryRecord, decode_record
from ..privacy.redact import redact_event, redact_record
from .contract import (
    ArchivedDeadLetter,
    ArchivedDelivery,
    ArchivedEvent,
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
from .migrate import pg_backfill, pg_has_column, pg_migrate, pg_pending

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Any fixed number: concurrent ``CREATE ... IF NOT EXISTS`` from several processes can
#: still collide in the catalog, so schema creation is serialized by this advisory lock.
_DDL_LOCK = 0x70C5_1A0C
#: Seconds a command reading history waits for the server.
CONNECT_TIMEOUT = 5

# Text columns compare bytewise (COLLATE "C"): orderings and cursors on entry ids match
# SQLite's, whatever the database's locale, and the indexes are cheaper. Each searched
# column's index also holds the time a search sorts on: with statistics not gathered yet
# (a new or freshly loaded table) the planner could otherwise walk the whole time index
# backwards for a LIMIT; ``accepted + 0`` keeps it off that index where the key is an
# event id (one or two rows to sort).
SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.events (
    accepted    bigint  NOT NULL,
    shard       integer NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    entry       text COLLATE "C" NOT NULL,
    type        text COLLATE "C" NOT NULL,
    customer_id text COLLATE "C",
    invoice_ref text COLLATE "C",
    body        bytea   NOT NULL,
    UNIQUE (event_id, shard, entry)
);
CREATE INDEX IF NOT EXISTS events_accepted ON {s}.events (accepted);
CREATE INDEX IF NOT EXISTS events_customer ON {s}.events (customer_id, accepted)
    WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_invoice ON {s}.events (invoice_ref, accepted)
    WHERE invoice_ref IS NOT NULL;

CREATE TABLE IF NOT EXISTS {s}.deliveries (
    updated     bigint NOT NULL,
    delivery_id text COLLATE "C" PRIMARY KEY,
    event_id    text COLLATE "C" NOT NULL,
    status      text COLLATE "C" NOT NULL,
    channel     text COLLATE "C" NOT NULL,
    customer_id text COLLATE "C",
    invoice_ref text COLLATE "C",
    record      bytea  NOT NULL,
    to_hash     text COLLATE "C"
);
CREATE INDEX IF NOT EXISTS deliveries_event ON {s}.deliveries (event_id, updated);
CREATE INDEX IF NOT EXISTS deliveries_updated ON {s}.deliveries (updated);
CREATE INDEX IF NOT EXISTS deliveries_customer ON {s}.deliveries (customer_id, updated)
    WHERE customer_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_invoice ON {s}.deliveries (invoice_ref, updated)
    WHERE invoice_ref IS NOT NULL;

CREATE TABLE IF NOT EXISTS {s}.dead_letters (
    at          bigint  NOT NULL,
    replayed    bigint,
    shard       integer NOT NULL,
    status      integer,
    entry       text COLLATE "C" NOT NULL,
    kind        text COLLATE "C" NOT NULL,
    channel     text COLLATE "C",
    delivery_id text COLLATE "C",
    event_id    text COLLATE "C",
    customer_id text COLLATE "C",
    reason      text    NOT NULL,
    payload     bytea   NOT NULL,
    PRIMARY KEY (shard, entry)
);
CREATE INDEX IF NOT EXISTS dead_at ON {s}.dead_letters (at);
CREATE INDEX IF NOT EXISTS dead_customer ON {s}.dead_letters (customer_id)
    WHERE customer_id IS NOT NULL;
"""

_EVENT_COLUMNS = "event_id, shard, entry, accepted, type, customer_id, invoice_ref, body"
_DEAD_COLUMNS = (
    "shard, entry, at, kind, channel, delivery_id, event_id, reason, status, payload, replayed"
)
_KINDS = {
    "events": ("events", "accepted"),
    "deliveries": ("deliveries", "updated"),
    "dead_letters": ("dead_letters", "at"),
}


def glob_regex(glob: str) -> str:
    """A GLOB pattern (as SQLite and ``fnmatchcase`` read it: ``*``, ``?``, ``[...]``,
    ``[!...]``) as an anchored POSIX regular expression for ``~``."""
    out, i = ["^"], 0
    while i < len(glob):
        c = glob[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 1 if glob[i : i + 1] in ("!", "]") else i)
            if end < 0:
                out.append(r"\[")
                continue
            body = glob[i:end]
            i = end + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(c))
    return "".join(out) + "$"


def _decoded(blob: bytes) -> Any:
    return msgspec.json.decode(unpack(blob))


def _packed(blobs: Iterable[bytes]) -> list[bytes]:
    return [pack(b) for b in blobs]


Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


class PostgresArchive:
    """``ArchiveStore`` in one schema of a PostgreSQL database."""

    def __init__(self, pool: Pool, url: str, schema: str, *, create: bool) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"not a lower-case SQL name: {schema!r}")
        self.pool = pool
        self._url = url  # holds the password: never logged
        self.schema = schema
        self._s = f'"{schema}"'
        self._create = create
        self._ready = False
        self._lock = asyncio.Lock()
        #: Whether the deliveries have ``to_hash``: a reader (not ``create``) may open a
        #: version-1 schema no gateway has migrated yet, and search it the old way.
        self._hashed = True

    @classmethod
    async def open(
        cls, url: str, schema: str = "tocsin", *, create: bool = True, max_size: int = 4
    ) -> PostgresArchive:
        """Without waiting for the server: the first call that needs it does (and, with
        ``create``, creates the schema if missing)."""
        pool: Pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=10.0,
            kwargs={"autocommit": True},
            # A server restarted since: the connection is replaced, not handed out broken.
            check=AsyncConnectionPool.check_connection,
            name="tocsin-archive",
        )
        await pool.open(wait=False)
        return cls(pool, url, schema, create=create)

    async def exists(self) -> bool:
        """Whether the archive's tables are there (nothing archived yet otherwise). On a
        connection of its own, not the pool's: a server that cannot be reached fails at
        once, with libpq's reason, where the pool would retry until its timeout."""
        connect = AsyncConnection.connect(self._url, connect_timeout=CONNECT_TIMEOUT)
        async with await connect as conn:
            cur = await conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{self._s}.deliveries",)
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await self._prepare()
                self._ready = True

    async def _prepare(self) -> None:
        if not self._create:
            async with self.pool.connection() as conn:
                self._hashed = await pg_has_column(conn, self.schema)
            return
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            await conn.execute(SCHEMA.format(s=self._s))
            await pg_migrate(conn, self._s)

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        await self._ensure()
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return cur.rowcount

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[TupleRow]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchall()

    async def _select(self, sql: str, args: Sequence[Any] = ()) -> list[TupleRow]:
        await self._ensure()
        return await self._rows(sql, args)

    # -- writes ------------------------------------------------------------------------

    async def put_events(self, rows: Sequence[ArchivedEvent]) -> None:
        if not rows:
            return
        bodies = await asyncio.to_thread(_packed, [r.raw for r in rows])
        sql = (
            f"INSERT INTO {self._s}.events ({_EVENT_COLUMNS}) "
            "SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::bigint[], "
            "%s::text[], %s::text[], %s::text[], %s::bytea[]) ON CONFLICT DO NOTHING"
        )
        await self._execute(
            sql,
            (
                [r.event_id for r in rows],
                [r.shard for r in rows],
                [r.entry for r in rows],
                [r.accepted for r in rows],
                [r.type for r in rows],
                [r.customer_id for r in rows],
                [r.invoice_ref for r in rows],
                bodies,
            ),
        )

    async def put_deliveries(self, rows: Sequence[ArchivedDelivery]) -> None:
        """A delivery record carries no customer: it takes its event's, from the archive
        (the archiver archives an event before its records), as SQLite's does."""
        # One statement may not touch a row twice: the last copy of an id wins, as the
        # last of several INSERT OR REPLACE would.
        rows = list({r.id: r for r in rows}.values())
        if not rows:
            return
        records = await asyncio.to_thread(_packed, [r.raw for r in rows])
        s = self._s
        sql = (
            f"INSERT INTO {s}.deliveries (delivery_id, event_id, updated, status, channel, "
            "customer_id, invoice_ref, record, to_hash) "
            "SELECT n.id, n.event_id, n.updated, n.status, n.channel, e.customer_id, "
            "e.invoice_ref, n.record, n.to_hash FROM unnest(%s::text[], %s::text[], "
            "%s::bigint[], %s::text[], %s::text[], %s::bytea[], %s::text[]) AS n(id, event_id, "
            "updated, status, channel, record, to_hash) LEFT JOIN LATERAL (SELECT customer_id, "
            "invoice_ref FROM "
            f"{s}.events WHERE event_id = n.event_id ORDER BY accepted + 0 DESC LIMIT 1) e ON true "
            "ON CONFLICT (delivery_id) DO UPDATE SET event_id = excluded.event_id, "
            "updated = excluded.updated, status = excluded.status, channel = excluded.channel, "
            "customer_id = excluded.customer_id, invoice_ref = excluded.invoice_ref, "
            "record = excluded.record, to_hash = excluded.to_hash"
        )
        await self._execute(
            sql,
            (
                [r.id for r in rows],
                [r.event_id for r in rows],
                [r.updated for r in rows],
                [r.status for r in rows],
                [r.channel for r in rows],
                records,
                [r.to_hash for r in rows],
            ),
        )

    async def put_dead_letters(self, rows: Sequence[ArchivedDeadLetter]) -> None:
        if not rows:
            return
        payloads = await asyncio.to_thread(_packed, [r.payload for r in rows])
        customers = [
            job_customer(r.payload) if r.kind == "delivery" and r.event_id is not None else None
            for r in rows
        ]
        sql = (
            f"INSERT INTO {self._s}.dead_letters (shard, entry, at, kind, channel, delivery_id, "
            "event_id, customer_id, reason, status, payload, replayed) "
            "SELECT * FROM unnest(%s::int[], %s::text[], %s::bigint[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::bytea[], "
            "%s::bigint[]) ON CONFLICT DO NOTHING"
        )
        await self._execute(
            sql,
            (
                [r.shard for r in rows],
                [r.entry for r in rows],
                [r.at for r in rows],
                [r.kind for r in rows],
                [r.channel for r in rows],
                [r.delivery_id for r in rows],
                [r.event_id for r in rows],
                customers,
                [r.reason for r in rows],
                [r.status for r in rows],
                payloads,
                [r.replayed for r in rows],
            ),
        )

    async def claim_dead_letter(self, shard: int, entry: str, now_ms: int) -> bool:
        """Mark an archived dead letter replayed, once: whoever marks it queues it."""
        sql = (
            f"UPDATE {self._s}.dead_letters SET replayed = %s "
            "WHERE shard = %s AND entry = %s AND replayed IS NULL"
        )
        return await self._execute(sql, (now_ms, shard, entry)) == 1

    async def unclaim_dead_letter(self, shard: int, entry: str) -> None:
        sql = f"UPDATE {self._s}.dead_letters SET replayed = NULL WHERE shard = %s AND entry = %s"
        await self._execute(sql, (shard, entry))

    async def delete_customer(self, customer_id: str) -> int:
        """Every archived row about one customer (for erasure)."""
        await self._ensure()
        total = 0
        async with self.pool.connection() as conn, conn.transaction():
            for table in ("events", "deliveries", "dead_letters"):
                sql = f"DELETE FROM {self._s}.{table} WHERE customer_id = %s"
                total += (await conn.execute(sql, (customer_id,))).rowcount
        return total

    async def erase_customer(
        self, customer_id: str, event_ids: Sequence[str], needles: Sequence[str]
    ) -> dict[str, int]:
        """Erasure (``tocsin forget``), as SQLite's: events and delivery records rewritten
        with personal fields replaced, dead letters deleted, in one transaction. Then a
        VACUUM removes the old row versions from the tables (PostgreSQL has no
        ``secure_delete``: see docs/delivery.md for what may remain in WAL and backups)."""
        await self._ensure()
        s = self._s
        ids = sorted(set(event_ids))
        where = "customer_id = %s OR event_id = ANY(%s::text[])"
        counts = {"events": 0, "deliveries": 0, "dead_letters": 0}
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT event_id, shard, entry, body FROM {s}.events WHERE {where} FOR UPDATE",
                    (customer_id, ids),
                )
                events = await cur.fetchall()
                keys, bodies = [], []
                for event_id, shard, entry, body in events:
                    event = _decoded(body)
                    keys.append((event_id, shard, entry))
                    bodies.append(pack(msgspec.json.encode(redact_event(event, needles))))
                if keys:
                    await conn.execute(
                        f"UPDATE {s}.events e SET body = n.body FROM unnest(%s::text[], "
                        "%s::int[], %s::text[], %s::bytea[]) AS n(event_id, shard, entry, body) "
                        "WHERE e.event_id = n.event_id AND e.shard = n.shard AND e.entry = n.entry",
                        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], bodies),
                    )
                counts["events"] = len(keys)
                cur = await conn.execute(
                    f"SELECT delivery_id, record FROM {s}.deliveries WHERE {where} FOR UPDATE",
                    (customer_id, ids),
                )
                found = await cur.fetchall()
                records = [
                    pack(msgspec.json.encode(redact_record(_decoded(r), needles))) for _, r in found
                ]
                if found:
                    await conn.execute(
                        f"UPDATE {s}.deliveries d SET record = n.record, to_hash = NULL FROM "
                        "unnest(%s::text[], "
                        "%s::bytea[]) AS n(id, record) WHERE d.delivery_id = n.id",
                        ([f[0] for f in found], records),
                    )
                counts["deliveries"] = len(found)
                cur = await conn.execute(
                    f"DELETE FROM {s}.dead_letters WHERE {where}",
                    (customer_id, ids),
                )
                counts["dead_letters"] = cur.rowcount
            if any(counts.values()):
                await conn.execute(f"VACUUM {s}.events, {s}.deliveries, {s}.dead_letters")
        return counts

    async def _delete_older(self, table: str, column: str, before_ms: int, limit: int) -> int:
        """At most ``limit`` rows, down the time index: a bounded step, whatever is due."""
        sql = (
            f"DELETE FROM {self._s}.{table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {self._s}.{table} WHERE {column} < %s LIMIT %s))"
        )
        return await self._execute(sql, (before_ms, limit))

    async def drop_kind_before(
        self, kind: str, before_ms: int, limit: int, *, dry_run: bool = False
    ) -> int:
        """One kind's rows older than ``before_ms`` (``[retention]`` per kind), at most
        ``limit``; ``dry_run`` counts them (all of them)."""
        table, column = _KINDS[kind]
        if dry_run:
            sql = f"SELECT count(*) FROM {self._s}.{table} WHERE {column} < %s"
            return int((await self._select(sql, (before_ms,)))[0][0])
        return await self._delete_older(table, column, before_ms, limit)

    async def drop_before(self, before_ms: int, limit: int) -> int:
        """Rows older than ``before_ms`` (whole days, when given a midnight), at most
        ``limit`` per table: what the retention drops, a bounded step at a time."""
        total = 0
        for table, column in _KINDS.values():
            total += await self._delete_older(table, column, before_ms, limit)
        return total

    # -- reads -------------------------------------------------------------------------

    async def customer_events(self, customer_id: str) -> list[ArchivedEvent]:
        sql = f"SELECT {_EVENT_COLUMNS} FROM {self._s}.events WHERE customer_id = %s"
        return [event_from_row(r) for r in await self._select(sql, (customer_id,))]

    async def get_event(self, event_id: str) -> ArchivedEvent | None:
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM {self._s}.events WHERE event_id = %s "
            "ORDER BY accepted + 0 DESC LIMIT 1"
        )
        rows = await self._select(sql, (event_id,))
        return event_from_row(rows[0]) if rows else None

    async def list_events(
        self, *, type_glob: str | None, since: float | None, limit: int
    ) -> list[ArchivedEvent]:
        """Newest first; ``type_glob`` matches as SQLite's GLOB does."""
        return await self.find_events(EventQuery(type_glob=type_glob, since=since, limit=limit))

    async def find_events(self, query: EventQuery) -> list[ArchivedEvent]:
        """Newest first (acceptance, then entry id), strictly before ``query.before``."""
        where, args = ["true"], list[Any]()
        for column, value in (
            ("customer_id", query.customer_id),
            ("invoice_ref", query.invoice_ref),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if query.type_glob is not None:
            where.append("type ~ %s")
            args.append(glob_regex(query.type_glob))
        if query.since is not None:
            where.append("accepted >= %s")
            args.append(int(query.since * 1000))
        if query.until is not None:
            where.append("accepted < %s")
            args.append(int(query.until * 1000))
        if query.before is not None:
            where.append("(accepted, entry) < (%s, %s)")
            args += [query.before[0], query.before[1]]
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM {self._s}.events WHERE {' AND '.join(where)} "
            "ORDER BY accepted DESC, entry DESC LIMIT %s"
        )
        return [event_from_row(r) for r in await self._select(sql, (*args, query.limit))]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        found = await self.get_deliveries([delivery_id])
        return found.get(delivery_id)

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryRecord]:
        if not delivery_ids:
            return {}
        sql = f"SELECT record FROM {self._s}.deliveries WHERE delivery_id = ANY(%s::text[])"
        rows = await self._select(sql, (list(delivery_ids),))
        records = [decode_record(unpack(r[0])) for r in rows]
        return {r.id: r for r in records}

    async def find_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        """Newest first, filtered as ``delivery_filters`` says."""
        await self._ensure()
        if not self._hashed:  # version 1, not migrated yet: every row is "not filled"
            if query.to_hash is not None:
                return []
            query = replace(query, backfill_after=None)
        where, args = delivery_filters(query, "%s")
        sql = (
            f"SELECT record FROM {self._s}.deliveries WHERE {' AND '.join(where) or 'true'} "
            "ORDER BY updated DESC LIMIT %s"
        )
        rows = await self._select(sql, (*args, query.limit))
        return [decode_record(unpack(r[0])) for r in rows]

    async def dead_letters(
        self, *, channel: str | None, since: float | None, limit: int | None
    ) -> list[ArchivedDeadLetter]:
        """Oldest first, not yet replayed."""
        where, args = dead_letter_filters(channel, since, "%s")
        sql = (
            f"SELECT {_DEAD_COLUMNS} FROM {self._s}.dead_letters WHERE {' AND '.join(where)} "
            "ORDER BY at LIMIT %s"  # LIMIT NULL: no limit
        )
        return [dead_letter_from_row(r) for r in await self._select(sql, (*args, limit))]

    async def to_hash_pending(self) -> str | None:
        """The backfill's cursor while rows archived before the ``to_hash`` column are
        not all filled; ``None`` once they are (gateway.archive.migrate)."""
        await self._ensure()
        if not self._hashed:
            return ""
        async with self.pool.connection() as conn:
            return await pg_pending(conn, self._s)

    async def backfill_to_hash(self, limit: int) -> int:
        """Fills the column on at most ``limit`` older rows; how many were read."""
        await self._ensure()
        if not self._hashed:
            return 0
        async with self.pool.connection() as conn:
            return await pg_backfill(conn, self._s, limit)

    async def close(self) -> None:
        await self.pool.close()
