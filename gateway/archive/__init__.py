"""History off RAM: records older than the hot window move from Redis to an archive.

Redis keeps what the pipeline needs hot (queues, the dedupe window, scenario state and
timers, history for ``[history] hot_window``); the ``Archiver`` moves older routed
events, delivery records and dead letters to an ``ArchiveStore`` (embedded: SQLite in
the data dir), which ``tocsin events | deliveries | dlq`` read beside Redis
(docs/delivery.md, "Two tiers").
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from .archiver import Archiver, PassResult
from .store import (
    ArchivedDeadLetter,
    ArchivedDelivery,
    ArchivedEvent,
    ArchiveStore,
    DeliveryQuery,
    EventQuery,
    SqliteArchive,
    archive_path,
)
from .tiers import complete_records, find_archived, merge_records


@contextlib.asynccontextmanager
async def opened(
    data_dir: Path, kind: str, *, create: bool = True
) -> AsyncIterator[ArchiveStore | None]:
    """The deployment's archive (``[history] archive``), or ``None`` when it is ``off``
    (or, unless ``create``, not written yet: a command reading history creates nothing)."""
    path = archive_path(data_dir)
    if kind == "off" or (not create and not path.exists()):
        yield None
        return
    store = await SqliteArchive.open(path)
    try:
        yield store
    finally:
        await store.close()


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
    "archive_path",
    "complete_records",
    "find_archived",
    "merge_records",
    "opened",
]
