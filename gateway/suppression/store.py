"""The suppression list in Redis: one hash of entries, one sorted set of their expiries.

Layout (measured in docs/operations.md, "Suppression list"): ``<prefix>:{suppression}``
is a hash, field the normalised address, value the entry as JSON; entries with an expiry
are also in ``<prefix>:{suppression}:expiry`` scored by it. Both keys share a hash tag,
so an add or a remove is one MULTI even on a Redis Cluster; they are global (never a
shard's), read and written alone, never inside a shard's script or transaction.

One hash rather than a key per address: a check is one HGET either way, but one hash
costs less memory per entry, lists with HSCAN without walking the deployment's keyspace
(millions of delivery records), and copies whole into ``tocsin simulate``. An expired
entry is ignored as soon as its time passes (the check reads ``until``) and removed by
the next add or list (bounded work each), so no background task is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, get_args

import msgspec
from redis.asyncio import Redis

from ..keys import Keys, Layout

Reason = Literal[
    "unsubscribed", "hard_bounce", "complaint", "stop_reply", "invalid_number", "manual"
]
REASONS: tuple[str, ...] = get_args(Reason)
#: Reasons that block every message, transactional ones included: nothing can reach
#: the address. The others are the person's wish, which receipts do not override.
BLOCKS_ALL = frozenset({"hard_bounce", "invalid_number"})
#: Categories a suppressed address is never sent (any reason).
OPTIONAL_CATEGORIES = frozenset({"reminder", "marketing"})
#: Expired entries removed per add or list: bounded work, like every trimming pass.
TRIM_BATCH = 100


class Entry(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    address: str
    reason: Reason
    #: Who put it there: ``cli:alice``, ``sms:twilio 21610``, ``smtp:550 5.1.1``...
    author: str
    #: Epoch seconds when it was added.
    at: float
    #: Epoch seconds when it stops counting; ``None``: never.
    until: float | None = None
    note: str | None = None

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Entry)


def hash_key(keys: Keys | Layout | str) -> str:
    prefix = keys if isinstance(keys, str) else keys.prefix
    return f"{prefix}:{{suppression}}"


def expiry_key(keys: Keys | Layout | str) -> str:
    return hash_key(keys) + ":expiry"


def skip_reason(entry: Entry | None, category: str) -> str | None:
    """Why a message of ``category`` is not sent to a listed address (``None``: sent)."""
    if entry is None:
        return None
    if entry.reason in BLOCKS_ALL or category in OPTIONAL_CATEGORIES:
        return entry.reason
    return None


class SuppressionList:
    """The list as one deployment (or one simulation, under its own prefix) sees it.

    The functions of this class are what the CLI, the admin API and the automatic feeds
    call: ``add``, ``remove``, ``entries`` (list), ``get`` (check)."""

    def __init__(
        self, redis: Redis, keys: Keys | Layout | str, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.key = hash_key(keys)
        self.expiry = expiry_key(keys)
        self.clock = clock

    async def get(self, address: str) -> Entry | None:
        """The active entry for an already normalised address: one HGET."""
        raw: Any = await self.redis.hget(self.key, address)
        if raw is None:
            return None
        entry = _decoder.decode(raw)
        return entry if entry.active(self.clock()) else None

    async def add(
        self,
        address: str,
        reason: str,
        author: str,
        *,
        until: float | None = None,
        note: str | None = None,
        keep_blocking: bool = False,
    ) -> Entry:
        """List ``address`` (normalised); replaces its entry. ``keep_blocking``: the
        automatic feeds never turn a bounce or invalid number into a milder reason."""
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r} (reasons: {', '.join(REASONS)})")
        now = self.clock()
        if until is not None and until <= now:
            raise ValueError("the expiry is already past")
        if keep_blocking and reason not in BLOCKS_ALL:
            current = await self.get(address)
            if current is not None and current.reason in BLOCKS_ALL:
                return current
        entry = Entry(
            address=address,
            reason=reason,  # type: ignore[arg-type]
            author=author,
            at=round(now, 3),
            until=until,
            note=note,
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, address, _encoder.encode(entry))
            if until is None:
                pipe.zrem(self.expiry, address)
            else:
                pipe.zadd(self.expiry, {address: until})
            await pipe.execute()
        await self.trim()
        return entry

    async def remove(self, address: str) -> Entry | None:
        """Take ``address`` off the list; the entry it had (``None``: none, or expired)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.key, address)
            pipe.hdel(self.key, address)
            pipe.zrem(self.expiry, address)
            raw, _, _ = await pipe.execute()
        if raw is None:
            return None
        entry = _decoder.decode(raw)
        return entry if entry.active(self.clock()) else None

    async def entries(self, *, reason: str | None = None, limit: int | None = None) -> list[Entry]:
        """Active entries, newest first (the whole hash is read: ``HSCAN`` in chunks)."""
        await self.trim()
        now = self.clock()
        found = []
        async for _, raw in self.redis.hscan_iter(self.key, count=1000):
            entry = _decoder.decode(raw)
            if entry.active(now) and (reason is None or entry.reason == reason):
                found.append(entry)
        found.sort(key=lambda e: (-e.at, e.address))
        return found if limit is None else found[:limit]

    async def trim(self) -> int:
        """Remove up to ``TRIM_BATCH`` expired entries; how many went."""
        due: Any = await self.redis.zrangebyscore(
            self.expiry, "-inf", self.clock(), start=0, num=TRIM_BATCH
        )
        if not due:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key, *due)
            pipe.zrem(self.expiry, *due)
            await pipe.execute()
        return len(due)

    async def load(self, entries: list[Entry]) -> None:
        """Write entries as they are (``tocsin simulate`` copying a list)."""
        if not entries:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping={e.address: _encoder.encode(e) for e in entries})
            expiring = {e.address: e.until for e in entries if e.until is not None}
            if expiring:
                pipe.zadd(self.expiry, expiring)
            await pipe.execute()


def encode_entry(entry: Entry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> Entry:
    return _decoder.decode(data)
