"""Reading history from both tiers, Redis's hot window first, as one.

A record may be in both for a moment (archived, not yet dropped from Redis; or updated
in Redis after it was archived, by a replay): Redis's copy is the newer, so it wins.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..history import DeliveryRecord
from .store import ArchiveStore, DeliveryQuery


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
    return merge_records(hot, await archive.find_deliveries(query), query.limit)


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
