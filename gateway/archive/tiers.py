"""Reading history from both tiers, Redis's hot window first, as one.

A record may be in both for a moment (archived, not yet dropped from Redis; or updated
in Redis after it was archived, by a replay): Redis's copy is the newer, so it wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ..history import DeliveryRecord
from .contract import ArchiveStore, DeliveryQuery


def merge_records(
    hot: Sequence[DeliveryRecord], archived: Sequence[DeliveryRecord], limit: int
) -> list[DeliveryRecord]:
    """Newest first, at most ``limit``; a delivery in both tiers shows Redis's copy."""
    seen = {r.id for r in hot}
    merged = [*hot, *(r for r in archived if r.id not in seen)]
    merged.sort(key=lambda r: r.updated, reverse=True)
    return merged[:limit]


async def find_archived(
    archive: ArchiveStore | None,
    hot: Sequence[DeliveryRecord],
    query: DeliveryQuery,
) -> list[DeliveryRecord]:
    """``hot`` (found in Redis, newest first) completed from the archive."""
    if archive is None:
        return list(hot)
    return merge_records(hot, await archived_deliveries(archive, query), query.limit)


#: Rows not backfilled yet (archived before the ``to_hash`` column) a search by recipient
#: decodes at most, per query, while the backfill runs (gateway.archive.migrate).
RECIPIENT_SCAN = 20_000
SCAN_PAGE = 1000


async def archived_deliveries(archive: ArchiveStore, query: DeliveryQuery) -> list[DeliveryRecord]:
    """``archive.find_deliveries``: a recipient (``query.to_hash``) is one probe of its
    column's index. While rows archived before that column are not all filled, those
    are also read, newest first, and their decoded hashes compared (``_unfilled``),
    then both are merged."""
    if query.to_hash is None:
        return await archive.find_deliveries(query)
    after = await archive.to_hash_pending()
    # Scanned before the index is probed: a row the backfill fills in between is then
    # found by one or the other.
    unfilled = [] if after is None else await _unfilled(archive, query, after)
    indexed = await archive.find_deliveries(query)
    seen = {r.id for r in indexed}
    found = [*indexed, *(r for r in unfilled if r.id not in seen)]
    found.sort(key=lambda r: r.updated, reverse=True)
    return found[: query.limit]


async def _unfilled(
    archive: ArchiveStore, query: DeliveryQuery, after: str
) -> list[DeliveryRecord]:
    """Rows past the backfill's cursor whose column is empty, matching ``query.to_hash``:
    pages through the time index from ``query.until`` down until ``query.limit`` match or
    ``RECIPIENT_SCAN`` rows were read."""
    found: list[DeliveryRecord] = []
    seen: set[str] = set()
    until, read = query.until, 0
    while read < RECIPIENT_SCAN and len(found) < query.limit:
        page = await archive.find_deliveries(
            replace(query, to_hash=None, backfill_after=after, until=until, limit=SCAN_PAGE)
        )
        read += len(page)
        fresh = [r for r in page if r.id not in seen]
        seen.update(r.id for r in fresh)
        found += [r for r in fresh if r.to_hash == query.to_hash]
        if len(page) < SCAN_PAGE:
            break
        last_ms = int(page[-1].updated * 1000)
        # ``until`` is exclusive: the next page ends just after the last row's
        # millisecond (its ties come again, dropped as seen), or before it when a whole
        # page shared it.
        until = (last_ms + (1.5 if fresh else 0.5)) / 1000
    return found


async def complete_records(
    archive: ArchiveStore | None,
    ids: Sequence[str],
    hot: dict[str, DeliveryRecord],
) -> dict[str, DeliveryRecord]:
    """Records by id: Redis's (``hot``), else the archive's."""
    missing = [i for i in ids if i not in hot]
    if archive is None or not missing:
        return hot
    return {**await archive.get_deliveries(missing), **hot}
