"""One function per operation, for ``tocsin suppress`` and the admin API alike.

Addresses are normalised here (``ValueError`` with the reason when one cannot be: the
caller turns it into its own error, a CLI message or an HTTP 400)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from ..address import normalise_address as normalise
from ..keys import Keys, Layout
from .store import Entry, SuppressionList


async def add(
    redis: Redis,
    keys: Keys | Layout,
    address: str,
    reason: str,
    author: str,
    *,
    until: float | None = None,
    note: str | None = None,
    region: str | None = None,
) -> Entry:
    """List an address (replacing its entry, if any); ``until`` epoch seconds, or never."""
    return await SuppressionList(redis, keys).add(
        normalise(address, region), reason, author, until=until, note=note
    )


async def remove(
    redis: Redis, keys: Keys | Layout, address: str, *, region: str | None = None
) -> Entry | None:
    """Unlist an address; the entry it had, ``None`` if it was not listed."""
    return await SuppressionList(redis, keys).remove(normalise(address, region))


async def list_entries(
    redis: Redis, keys: Keys | Layout, *, reason: str | None = None, limit: int | None = None
) -> list[Entry]:
    """Active entries, newest first."""
    return await SuppressionList(redis, keys).entries(reason=reason, limit=limit)


async def check(
    redis: Redis,
    keys: Keys | Layout,
    address: str,
    *,
    region: str | None = None,
    now: float | None = None,
) -> Entry | None:
    """The entry an address has now (``None``: not listed, or expired)."""
    clock = (lambda: now) if now is not None else time.time
    return await SuppressionList(redis, keys, clock).get(normalise(address, region))
