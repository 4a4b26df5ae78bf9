"""History off RAM: records older than the hot window move from Redis to an archive.

Redis keeps what the pipeline needs hot (queues, the dedupe window, scenario state and
timers, history for ``[history] hot_window``); the ``Archiver`` moves older routed
events, delivery records and dead letters to an ``ArchiveStore`` (embedded: SQLite in
the data dir; or a PostgreSQL server: gateway.archive.postgres), which ``tocsin events |
deliveries | dlq`` read beside Redis (docs/delivery.md, "Two tiers").
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from .archiver import Archiver, PassResult
from .contract import (
    ArchivedDeadLetter,
    ArchivedDelivery,
    ArchivedEvent,
    ArchiveStore,
    DeliveryQuery,
    EventQuery,
)
from .store import SqliteArchive, archive_path
from .tiers import archived_deliveries, complete_records, find_archived, merge_records

if TYPE_CHECKING:
    from ..conf import HistorySection


@contextlib.asynccontextmanager
async def opened(
    data_dir: Path, history: HistorySection, *, create: bool = True
) -> AsyncIterator[ArchiveStore | None]:
    """The deployment's archive (``[history] archive``), or ``None`` when it is ``off``
    (or, unless ``create``, not written yet: a command reading history creates nothing)."""
    store: ArchiveStore
    if history.archive == "off":
        yield None
        return
    if history.archive == "postgresql":
        from .postgres import PostgresArchive  # noqa: PLC0415 - an optional extra

        assert history.archive_url is not None  # conf checks it
        url = history.archive_url.reveal()
        pg = await PostgresArchive.open(url, history.archive_schema, create=create)
        if not create and not await pg.exists():
            await pg.close()
            yield None
            return
        store = pg
    else:
        path = archive_path(data_dir)
        if not create and not path.exists():
            yield None
            return
        store = await SqliteArchive.open(path)
    try:
        yield store
    finally:
        await store.close()


def archive_errors() -> tuple[type[Exception], ...]:
    """What an archive raises when it cannot be read or written (its file, its server)."""
    try:
        import psycopg  # noqa: PLC0415 - an optional extra
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


__all__ = [
    "ArchiveStore",
    "ArchivedDeadLetter",
    "ArchivedDelivery",
    "ArchivedEvent",
    "Archiver",
    "DeliveryQuery",
    "EventQuery",
    "PassResult",
    "SqliteArchive",
    "archive_errors",
    "archive_path",
    "archived_deliveries",
    "complete_records",
    "find_archived",
    "merge_records",
    "opened",
]
