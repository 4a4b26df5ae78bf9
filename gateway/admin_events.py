"""Accepted events as an operator looks for them: newest first, by type, one by id.

Every accepted event stays in the events stream for the history retention, routed or not
(an unknown type, an event waiting for its source's confirmation): listing the stream is
how an operator sees that nothing was dropped.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .archive import ArchivedEvent, ArchiveStore
from .keys import ROUTER_GROUP, Keys, Layout, as_layout
from .streams import as_text, entry_order

#: Stream entries read per round trip while filtering.
PAGE = 200


class _Source(msgspec.Struct):
    provider: str = "?"
    event_type: str | None = None
    confirm_by: str | None = None


class _Head(msgspec.Struct):
    id: str
    type: str
    source: _Source


_head = msgspec.json.Decoder(_Head)


@dataclass(frozen=True)
class StoredEvent:
    entry_id: str
    #: When the intake accepted it (the entry id's milliseconds), Unix seconds.
    accepted: float
    id: str
    type: str
    provider: str
    provider_type: str | None
    #: The source that must confirm it first (``gateway.confirm``), if any.
    confirm_by: str | None
    #: ``routed``, ``waiting`` (not routed yet) or ``undecodable``.
    state: str
    raw: bytes

    def as_dict(self) -> dict[str, Any]:
        event: Any = msgspec.json.decode(self.raw) if self.state != "undecodable" else None
        return {
            "entry_id": self.entry_id,
            "accepted": self.accepted,
            "state": self.state,
            "confirm_by": self.confirm_by,
            "event": event,
        }


class _Progress:
    """Which entries the router has done with: read (at or below its group's last id)
    and acknowledged (not pending)."""

    def __init__(self, last: tuple[int, int], pending: set[str]) -> None:
        self.last = last
        self.pending = pending

    def state(self, entry_id: str) -> str:
        if entry_order(entry_id) > self.last or entry_id in self.pending:
            return "waiting"
        return "routed"


async def _progress(redis: Redis, keys: Keys) -> _Progress:
    try:
        reply: Any = await redis.xinfo_groups(keys.events)
        groups = {as_text(g["name"]): g for g in reply}
    except ResponseError:  # no stream yet
        return _Progress((0, 0), set())
    group = groups.get(ROUTER_GROUP)
    if group is None:
        return _Progress((0, 0), set())
    pending: Any = await redis.xpending_range(
        keys.events, ROUTER_GROUP, min="-", max="+", count=10_000
    )
    return _Progress(
        entry_order(group["last-delivered-id"]),
        {as_text(p["message_id"]) for p in pending},
    )


def _stored(entry_id: Any, fields: Any, progress: _Progress) -> StoredEvent:
    entry = as_text(entry_id)
    raw = fields.get(b"e", b"")
    accepted = entry_order(entry)[0] / 1000
    try:
        head = _head.decode(raw)
    except msgspec.DecodeError:
        return StoredEvent(entry, accepted, "?", "?", "?", None, None, "undecodable", raw)
    return StoredEvent(
        entry,
        accepted,
        head.id,
        head.type,
        head.source.provider,
        head.source.event_type,
        head.source.confirm_by,
        progress.state(entry),
        raw,
    )


async def list_events(
    redis: Redis,
    keys: Keys | Layout,
    *,
    type_glob: str | None = None,
    since: float | None = None,
    limit: int = 50,
    archive: ArchiveStore | None = None,
) -> list[StoredEvent]:
    """Newest first, every shard's; ``type_glob`` as rules write theirs (``payment.*``).
    The streams hold the hot window; older events come from the archive."""
    found: list[StoredEvent] = []
    for shard in as_layout(keys).shards:
        found += await _shard_events(redis, shard, type_glob, since, limit)
    if archive is not None:
        # One archived while this listing read the streams is shown once, from the stream.
        shown = {(e.id, e.entry_id) for e in found}
        older = await archive.list_events(type_glob=type_glob, since=since, limit=limit)
        found += [_archived(a) for a in older if (a.event_id, a.entry) not in shown]
    found.sort(key=lambda event: entry_order(event.entry_id), reverse=True)
    return found[:limit]


def _archived(event: ArchivedEvent) -> StoredEvent:
    """An archived event: routed (only routed events are archived)."""
    return _stored(event.entry, {b"e": event.raw}, _Progress((2**63, 0), set()))


async def _shard_events(
    redis: Redis, keys: Keys, type_glob: str | None, since: float | None, limit: int
) -> list[StoredEvent]:
    progress = await _progress(redis, keys)
    low = f"{int(since * 1000)}-0" if since is not None else "-"
    high: str = "+"
    found: list[StoredEvent] = []
    while len(found) < limit:
        page: Any = await redis.xrevrange(keys.events, max=high, min=low, count=PAGE)
        for entry_id, fields in page:
            event = _stored(entry_id, fields, progress)
            if type_glob is None or fnmatch.fnmatchcase(event.type, type_glob):
                found.append(event)
                if len(found) >= limit:
                    break
        if len(page) < PAGE:
            break
        ms, seq = entry_order(page[-1][0])
        high = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
    return found


async def show_event(
    redis: Redis, keys: Keys | Layout, event_id: str, archive: ArchiveStore | None = None
) -> StoredEvent | None:
    """The event accepted under this id, while it is kept: in its shard's stream for the
    hot window (its dedupe key points at it), then in the archive."""
    for shard in as_layout(keys).shards:
        entry: Any = await redis.get(shard.dedupe(event_id))
        if entry is None:
            continue
        found: Any = await redis.xrange(shard.events, entry, entry)
        if found:
            return _stored(found[0][0], found[0][1], await _progress(redis, shard))
    older = await archive.get_event(event_id) if archive is not None else None
    return _archived(older) if older is not None else None


async def events_at(redis: Redis, keys: Keys, entries: list[str]) -> list[StoredEvent]:
    """The events at these entry ids of one shard's stream (one round trip), in order;
    entries trimmed meanwhile are left out (a search index read just before)."""
    if not entries:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.xrange(keys.events, entry, entry)
        found: list[Any] = await pipe.execute()
    progress = await _progress(redis, keys)
    return [_stored(hit[0][0], hit[0][1], progress) for hit in found if hit]


def archived_event(event: ArchivedEvent) -> StoredEvent:
    """An archived event as the stream listing shows one."""
    return _archived(event)


async def stream_page(
    redis: Redis, keys: Keys, *, high: str = "+", low: str = "-", count: int = PAGE
) -> list[StoredEvent]:
    """One shard's events from entry ``high`` down to ``low`` (inclusive), newest first."""
    page: Any = await redis.xrevrange(keys.events, max=high, min=low, count=count)
    if not page:
        return []
    progress = await _progress(redis, keys)
    return [_stored(entry_id, fields, progress) for entry_id, fields in page]
