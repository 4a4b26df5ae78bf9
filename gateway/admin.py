"""Operator actions on a running deployment's Redis: history, dead letters, replay, endpoints.

The ``tocsin deliveries | dlq | events | endpoints`` commands are thin wrappers around
these, so tests drive the same code an operator does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis

from .archive import (
    ArchivedDeadLetter,
    ArchiveStore,
    DeliveryQuery,
    complete_records,
    find_archived,
    opened,
)
from .conf import Conf
from .delivery import Attempt, Delivery, decode_delivery, encode_delivery
from .event import Event
from .history import (
    DeliveryRecord,
    decode_record,
    encode_record,
    get_record,
    iter_records,
    record_of,
)
from .keys import WORKER_GROUP, Keys, Layout, as_layout, ordering_key
from .redis_client import connect
from .redis_server import RedisServer
from .router import plan_deliveries, routed_event
from .rules import CompiledRule
from .scripts import REPLAY

_event_decoder = msgspec.json.Decoder(Event)


@contextlib.asynccontextmanager
async def open_redis(conf: Conf) -> AsyncIterator[Redis]:
    """The deployment's Redis: ``redis.url``, the embedded one a running gateway owns, or
    the embedded one started just for this command (its data is on disk either way)."""
    started: RedisServer | None = None
    url = conf.redis.url
    if not url:
        server = RedisServer(conf.data_dir / "redis", server=conf.redis.embedded_server)
        url = server.running_url() or ""
        if not url:
            url = server.start()
            started = server
    redis = connect(url, cluster=conf.redis.cluster)
    try:
        yield redis
    finally:
        await redis.aclose()
        if started is not None:
            started.stop()


@contextlib.asynccontextmanager
async def open_archive(conf: Conf) -> AsyncIterator[ArchiveStore | None]:
    """The deployment's history archive (``None`` with ``[history] archive = "off"``, or
    before anything was archived): what commands read beside Redis. SQLite's WAL lets
    them read while a gateway writes."""
    async with opened(conf.data_dir, conf.history, create=False) as store:
        yield store


# -- history -------------------------------------------------------------------------


async def find_deliveries(
    redis: Redis,
    keys: Keys | Layout,
    *,
    event_id: str | None = None,
    channel: str | None = None,
    status: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 50,
    archive: ArchiveStore | None = None,
    to_hash: str | None = None,
) -> list[DeliveryRecord]:
    """Newest first, filtered; scans the time index (bounded by ``since``/``until``),
    then the archive's indexes for what is older than the hot window (the archive holds
    every shard's: one query). ``to_hash``: the recipient's keyed hash (no index in
    Redis: the scan reads every record in the time bound; the archive has one)."""
    found: list[DeliveryRecord] = []
    async for record in iter_records(redis, keys, since=since, until=until):
        if event_id is not None and record.event_id != event_id:
            continue
        if to_hash is not None and record.to_hash != to_hash:
            continue
        if channel is not None and record.channel != channel:
            continue
        if status is not None and record.status != status:
            continue
        found.append(record)
        if len(found) >= limit:
            break
    query = DeliveryQuery(
        event_id=event_id,
        channel=channel,
        status=status,
        since=since,
        until=until,
        limit=limit,
        to_hash=to_hash,
    )
    return await find_archived(archive, found, query)


async def show_delivery(
    redis: Redis, keys: Keys | Layout, delivery_id: str, archive: ArchiveStore | None = None
) -> DeliveryRecord | None:
    record = await get_record(redis, keys, delivery_id)
    if record is None and archive is not None:
        record = await archive.get_delivery(delivery_id)
    return record


# -- dead letters --------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    #: ``delivery`` (a job that failed) or ``event`` (an event that could not be routed).
    kind: str
    channel: str | None
    reason: str
    at: float
    status: int | None
    payload: bytes
    delivery: Delivery | None
    #: The shard whose dead-letter stream holds it (``Layout.shards``).
    shard: int = 0
    #: In the archive, not the dead-letter stream (older than the hot window).
    archived: bool = False

    @property
    def delivery_id(self) -> str | None:
        return self.delivery.id if self.delivery is not None else None


def _archived_letter(row: ArchivedDeadLetter) -> DeadLetter:
    delivery = None
    if row.kind == "delivery":
        with contextlib.suppress(msgspec.DecodeError):
            delivery = decode_delivery(row.payload)
    return DeadLetter(
        entry_id=row.entry,
        kind=row.kind,
        channel=row.channel,
        reason=row.reason,
        at=row.at / 1000,
        status=row.status,
        payload=row.payload,
        delivery=delivery,
        shard=row.shard,
        archived=True,
    )


def _dead_letter(entry_id: bytes, fields: dict[bytes, bytes], shard: int) -> DeadLetter:
    kind = fields.get(b"kind", b"delivery").decode()
    payload = fields.get(b"j" if kind == "delivery" else b"e", b"")
    delivery = None
    if kind == "delivery":
        with contextlib.suppress(msgspec.DecodeError):
            delivery = decode_delivery(payload)
    channel = fields.get(b"channel")
    status = fields.get(b"status")
    at = fields.get(b"at")
    return DeadLetter(
        entry_id=entry_id.decode(),
        kind=kind,
        channel=channel.decode() if channel else None,
        reason=fields.get(b"reason", b"").decode(),
        at=float(at) if at else int(entry_id.split(b"-")[0]) / 1000,
        status=int(status) if status else None,
        payload=payload,
        delivery=delivery,
        shard=shard,
    )


async def dead_letters(
    redis: Redis,
    keys: Keys | Layout,
    *,
    channel: str | None = None,
    since: float | None = None,
    ids: Iterable[str] = (),
    limit: int | None = None,
    archive: ArchiveStore | None = None,
) -> list[DeadLetter]:
    """Oldest first, every shard's, archived ones (older than the hot window) too.
    ``ids`` may name stream entry ids or delivery ids."""
    out: list[DeadLetter] = []
    wanted = set(ids)
    if archive is not None:
        for row in await archive.dead_letters(channel=channel, since=since, limit=None):
            letter = _archived_letter(row)
            if not wanted or {letter.entry_id, letter.delivery_id} & wanted:
                out.append(letter)
    for shard in as_layout(keys).shards:
        out += await _shard_dead_letters(redis, shard, channel, since, wanted, limit)
    out.sort(key=lambda letter: (letter.at, letter.entry_id))
    return out if limit is None else out[:limit]


async def _shard_dead_letters(
    redis: Redis,
    keys: Keys,
    channel: str | None,
    since: float | None,
    wanted: set[str],
    limit: int | None,
) -> list[DeadLetter]:
    start = f"{int(since * 1000)}-0" if since is not None else "-"
    out: list[DeadLetter] = []
    cursor: str = start
    while True:
        entries: Any = await redis.xrange(keys.dead, min=cursor, max="+", count=1000)
        if not entries:
            return out
        for entry_id, fields in entries:
            letter = _dead_letter(entry_id, fields, keys.index)
            if channel is not None and letter.channel != channel:
                continue
            if wanted and not ({letter.entry_id, letter.delivery_id} & wanted):
                continue
            out.append(letter)
            if limit is not None and len(out) >= limit:
                return out
        cursor = "(" + entries[-1][0].decode()


async def replay_dead_letter(
    redis: Redis,
    keys: Keys | Layout,
    letter: DeadLetter,
    *,
    retention: float,
    archive: ArchiveStore | None = None,
) -> bool:
    """Queue a dead letter again, once, in its shard; a delivery keeps its id
    (``webhook-id``) and history and gets the channel's whole retry schedule again."""
    now = time.time()
    keys = as_layout(keys).shards[letter.shard]
    if letter.archived:
        if archive is None:
            return False
        return await _replay_archived(redis, keys, letter, archive, retention, now)
    if letter.kind == "event":
        return bool(
            await REPLAY(
                redis,
                [keys.dead, keys.events, keys.history],
                [letter.entry_id, "e", letter.payload, "", "", 0, 0, ""],
            )
        )
    if letter.channel is None:
        return False
    payload = letter.payload
    record_key, record, delivery_id = "", b"", ""
    if letter.delivery is not None:
        job = msgspec.structs.replace(
            letter.delivery,
            attempt=1,
            history=[
                *letter.delivery.history,
                Attempt(n=0, at=round(now, 3), outcome="replayed", ms=0),
            ],
        )
        payload = encode_delivery(job)
        record_key = keys.record(job.id)
        record = encode_record(record_of(job, "pending", now=now))
        delivery_id = job.id
    return bool(
        await REPLAY(
            redis,
            [keys.dead, keys.deliveries(letter.channel), keys.history],
            [
                letter.entry_id,
                "j",
                payload,
                record_key,
                record,
                max(1, int(retention)),
                int(now * 1000),
                delivery_id,
            ],
        )
    )


async def _replay_archived(
    redis: Redis,
    keys: Keys,
    letter: DeadLetter,
    archive: ArchiveStore,
    retention: float,
    now: float,
) -> bool:
    """An archived dead letter: marking it replayed in the archive decides who queues
    it (once, as ``XDEL`` does for one in Redis); a failed queueing unmarks it."""
    if letter.kind != "event" and letter.channel is None:
        return False
    target = keys.events if letter.kind == "event" else keys.deliveries(letter.channel or "")
    if not await archive.claim_dead_letter(letter.shard, letter.entry_id, int(now * 1000)):
        return False
    try:
        async with redis.pipeline(transaction=True) as pipe:
            if letter.kind == "event":
                pipe.xadd(target, {"e": letter.payload})
            elif letter.delivery is None:
                pipe.xadd(target, {"j": letter.payload})
            else:
                job = msgspec.structs.replace(
                    letter.delivery,
                    attempt=1,
                    history=[
                        *letter.delivery.history,
                        Attempt(n=0, at=round(now, 3), outcome="replayed", ms=0),
                    ],
                )
                pipe.xadd(target, {"j": encode_delivery(job)})
                record = encode_record(record_of(job, "pending", now=now))
                pipe.set(keys.record(job.id), record, ex=max(1, int(retention)))
                pipe.zadd(keys.history, {job.id: now * 1000})
            await pipe.execute()
    except BaseException:
        await archive.unclaim_dead_letter(letter.shard, letter.entry_id)
        raise
    return True


# -- events --------------------------------------------------------------------------


@dataclass
class EventReplay:
    queued: list[Delivery]
    #: Deliveries left alone, with why (already delivered, retry already scheduled).
    skipped: list[tuple[Delivery, str]]


async def replay_event(
    redis: Redis,
    keys: Keys | Layout,
    rules: list[CompiledRule],
    event_id: str,
    *,
    force: bool = False,
    archive: ArchiveStore | None = None,
) -> EventReplay | None:
    """Route an event again with today's rules; ``None`` if there is none to route
    (never routed, or older than the retention).

    Deliveries already delivered are skipped unless ``force`` (they keep their id, so a
    forced resend carries the same ``webhook-id``); retries already scheduled are left
    to run.
    """
    raw: bytes | None = None
    layout = as_layout(keys)
    for shard in layout.shards:  # the event's shard is where its jobs go again
        raw = await routed_event(redis, shard, event_id)
        if raw is not None:
            keys = shard
            break
    if raw is None and archive is not None:
        older = await archive.get_event(event_id)  # past the hot window: routed long ago
        if older is not None:
            raw = older.raw
            keys = layout.shard(ordering_key(older.customer_id, event_id))
    if raw is None:
        return None
    assert isinstance(keys, Keys)
    event = _event_decoder.decode(raw)
    result = EventReplay(queued=[], skipped=[])
    deliveries = plan_deliveries(rules, event, raw)
    ids = [d.id for d in deliveries]
    values: list[Any] = await redis.mget([keys.record(i) for i in ids]) if ids else []
    hot = {i: decode_record(v) for i, v in zip(ids, values, strict=True) if v is not None}
    records = await complete_records(archive, ids, hot)
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        for delivery in deliveries:
            record = records.get(delivery.id)
            status = record.status if record is not None else None
            if status == "delivered" and not force:
                result.skipped.append((delivery, "already delivered (use --force to resend)"))
                continue
            if status == "retrying":
                result.skipped.append((delivery, "a retry is already scheduled"))
                continue
            if record is not None:
                delivery.history = record.attempts
            delivery.history.append(Attempt(n=0, at=round(now, 3), outcome="replayed", ms=0))
            pipe.xadd(keys.deliveries(delivery.channel), {"j": encode_delivery(delivery)})
            result.queued.append(delivery)
        await pipe.execute()
    return result


# -- endpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointState:
    channel: str
    failing_since: float | None
    disabled_at: float | None
    disabled_reason: str | None
    #: Jobs waiting in the channel's stream, read or not.
    queued: int
    #: Of those, read by a worker and not settled yet.
    in_flight: int
    #: Parked until their next attempt after a failure.
    retrying: int = 0
    #: Parked until their sending window opens.
    deferred: int = 0


class _LastOutcome(msgspec.Struct):
    outcome: str


class _Parked(msgspec.Struct):
    """Just enough of a parked job to tell a retry from a window deferral."""

    history: list[_LastOutcome] = msgspec.field(default_factory=list)


_parked_decoder = msgspec.json.Decoder(_Parked)


async def _parked_counts(redis: Redis, keys: Keys) -> dict[tuple[str, str], int]:
    """(stream key, ``retrying``/``deferred``) -> jobs parked in one shard's retries set:
    the worker parks both there (``Worker._park``), a deferral's last attempt saying
    ``deferred``."""
    counts: dict[tuple[str, str], int] = {}
    async for member, _score in redis.zscan_iter(keys.retries, count=1000):
        stream, _, job = bytes(member).partition(b"\n")
        try:
            history = _parked_decoder.decode(job).history
        except msgspec.DecodeError:
            continue  # the worker dead-letters an undecodable job when it comes due
        kind = "deferred" if history and history[-1].outcome == "deferred" else "retrying"
        slot = (stream.decode(), kind)
        counts[slot] = counts.get(slot, 0) + 1
    return counts


async def endpoint_states(
    redis: Redis, keys: Keys | Layout, channels: Iterable[str]
) -> list[EndpointState]:
    """Each channel's health and queues, summed over the shards."""
    layout = as_layout(keys)
    parked: dict[tuple[str, str], int] = {}
    for shard in layout.shards:
        parked |= await _parked_counts(redis, shard)
    out = []
    for name in channels:
        state: Any = await redis.hgetall(layout.endpoint(name))
        queued = in_flight = retrying = deferred = 0
        for shard in layout.shards:
            stream = shard.deliveries(name)
            waiting = int(await redis.xlen(stream))
            queued += waiting
            if waiting:
                with contextlib.suppress(Exception):  # no group yet: nothing read
                    summary: Any = await redis.xpending(stream, WORKER_GROUP)
                    in_flight += int(summary["pending"])
            retrying += parked.get((stream, "retrying"), 0)
            deferred += parked.get((stream, "deferred"), 0)

        def number(field: bytes, state: Any = state) -> float | None:
            value = state.get(field)
            return float(value) if value is not None else None

        reason = state.get(b"disabled_reason")
        out.append(
            EndpointState(
                channel=name,
                failing_since=number(b"failing_since"),
                disabled_at=number(b"disabled_at"),
                disabled_reason=reason.decode() if reason else None,
                queued=queued,
                in_flight=in_flight,
                retrying=retrying,
                deferred=deferred,
            )
        )
    return out


async def enable_endpoint(redis: Redis, keys: Keys | Layout, channel: str) -> bool:
    """Clear the disabled flag and the failure clock; whether it was disabled."""
    endpoint = as_layout(keys).endpoint(channel)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hget(endpoint, "disabled_at")
        pipe.delete(endpoint)
        was, _ = await pipe.execute()
    return was is not None
