"""The archive phase's stores: a local PostgreSQL server, and the search measurement
(``search``: N deliveries and their events written to a fresh archive with the
archiver's own calls, then searched by event id, customer and invoice ref)."""

from __future__ import annotations

import pwd
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from gateway.archive import (
    ArchivedDelivery,
    ArchivedEvent,
    ArchiveStore,
    DeliveryQuery,
    SqliteArchive,
)
from gateway.archive.postgres import PostgresArchive
from gateway.delivery import Attempt
from gateway.history import DeliveryRecord


class Postgres:
    """A PostgreSQL server for the phase (tests/postgres_server.py's, with its durable
    defaults: fsync, synchronous commit and full-page writes on, as in production)."""

    def __init__(self) -> None:
        from tests.postgres_server import PostgresServer, server_bin  # noqa: PLC0415

        bin_dir = server_bin()
        if bin_dir is None:
            raise SystemExit("archive phase: no PostgreSQL server (apt-get install postgresql)")
        user = pwd.getpwnam("postgres") if _root() else None
        self.server = PostgresServer(bin_dir, user, durable=True)
        self.server.start()
        self.url = self.server.url

    def schema(self) -> str:
        return f"bench_{uuid.uuid4().hex[:8]}"

    def bytes_by_table(self, schema: str) -> dict[str, int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            rows = conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            ).fetchall()
        return {name: int(size) for name, size in rows}

    def stop(self) -> None:
        self.server.stop()


def _root() -> bool:
    import os  # noqa: PLC0415

    return os.geteuid() == 0


async def search(count: int, postgres: Postgres | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-archive-search-"))
    try:
        store: ArchiveStore
        if postgres is None:
            store = await SqliteArchive.open(tmp / "history.sqlite3")
        else:
            schema = postgres.schema()
            store = await PostgresArchive.open(postgres.url, schema)
        base = 1_790_000_000.0
        started = time.perf_counter()
        chunk = 100_000
        for low in range(0, count, chunk):
            ids = range(low, min(count, low + chunk))
            await store.put_events(
                [
                    ArchivedEvent(
                        f"evt_{i:08d}", 0, f"{int((base + i) * 1000)}-0", int((base + i) * 1000),
                        "payment.succeeded", f"cus_{i % 50_000:05d}", f"FA-{i:08d}",
                        b'{"id":"evt_%08d"}' % i,
                    )
                    for i in ids
                ]
            )  # fmt: skip
            await store.put_deliveries(
                [
                    ArchivedDelivery.of(
                        DeliveryRecord(
                            id=f"msg_{i:08d}", event_id=f"evt_{i:08d}",
                            event_type="payment.succeeded", rule="r", channel="hook",
                            status="delivered", updated=base + i,
                            attempts=[Attempt(n=1, at=base + i, outcome="delivered", ms=12.0)],
                        )
                    )
                    for i in ids
                ]
            )  # fmt: skip
        built = time.perf_counter() - started
        mid = count // 2
        queries = {
            "event_id": DeliveryQuery(event_id=f"evt_{mid:08d}"),
            "customer": DeliveryQuery(customer_id=f"cus_{mid % 50_000:05d}"),
            "invoice_ref": DeliveryQuery(invoice_ref=f"FA-{mid:08d}"),
        }
        times: dict[str, float] = {}
        for name, query in queries.items():
            slowest = 0.0
            for _ in range(5):
                t0 = time.perf_counter()
                found = await store.find_deliveries(query)
                slowest = max(slowest, time.perf_counter() - t0)
            assert found, f"search by {name} found nothing"
            times[name] = round(slowest * 1000, 2)
        await store.close()
        if postgres is None:
            files = tmp.glob("history.sqlite3*")  # noqa: ASYNC240 - measured after the run
            disk = sum(p.stat().st_size for p in files)
        else:
            disk = sum(postgres.bytes_by_table(schema).values())
        return {
            "deliveries": count,
            "build_s": round(built, 1),
            # Events and their deliveries written per second, by the archiver's calls.
            "write_rate": round(count / built) if built else None,
            "bytes_per_delivery": round(disk / count, 1),
            "search_ms": times,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
