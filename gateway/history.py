"""What happened to each delivery: every attempt, kept for the retention period.

A delivery's attempts travel with its job (``Delivery.history``), so whoever settles it
writes the whole record in the same Redis transaction that acknowledges the job: the
record saying "delivered" exists if and only if the job left its stream as delivered.
Records are one JSON string each (``Keys.record``), expiring after the retention, and
indexed by last update in a sorted set (``Keys.history``) for listing by time.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from .delivery import Attempt, Delivery
from .keys import Keys, Layout, as_layout
from .privacy.recipients import MASK_ONLY, RecordPrivacy, audited, mask

Status = Literal["delivered", "retrying", "deferred", "dead", "pending", "cancelled", "suppressed"]
#: ``suppressed``: not sent, its address is on the suppression list (gateway.suppression).
STATUSES: tuple[str, ...] = (
    "delivered",
    "retrying",
    "deferred",
    "dead",
    "pending",
    "cancelled",
    "suppressed",
)
#: Attempt outcomes that were a real try at sending (not a deferral or a replay mark).
SENDS = frozenset({"delivered", "retry", "failed"})


class DeliveryRecord(msgspec.Struct, omit_defaults=True):
    id: str
    event_id: str
    event_type: str
    rule: str
    channel: str
    status: Status
    #: Epoch seconds of the last change.
    updated: float
    #: Epoch seconds of the next attempt, while ``retrying`` or ``deferred``.
    next_at: float | None = None
    #: Where the message went, masked (``j***@e***.com``), when a recipient was named.
    to: str | None = None
    attempts: list[Attempt] = msgspec.field(default_factory=list)
    #: HMAC of the full address (``[privacy] key``): found by it, never stored in clear.
    to_hash: str | None = None
    #: The event's customer id (erasure and support find records by it).
    customer: str | None = None
    template: str | None = None
    #: Digest of the template's files when sent (gateway.privacy.recipients).
    template_version: str | None = None
    locale: str | None = None
    #: What an audit of the message needs: the event's refs and non-personal data.
    vars: dict[str, Any] | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeliveryRecord)


def record_of(
    delivery: Delivery,
    status: Status,
    *,
    now: float | None = None,
    next_at: float | None = None,
    privacy: RecordPrivacy = MASK_ONLY,
) -> DeliveryRecord:
    """The record of a delivery: recipient masked and hashed, never in clear
    (docs/data-protection.md)."""
    recipient = delivery.recipient
    address = None
    if recipient is not None:
        address = recipient.address or recipient.email or recipient.phone
    seen = audited(delivery.event_bytes())
    return DeliveryRecord(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        rule=delivery.rule,
        channel=delivery.channel,
        status=status,
        updated=time.time() if now is None else now,
        next_at=next_at,
        to=mask(address) if address else None,
        attempts=delivery.history,
        to_hash=privacy.hash(address) if address else None,
        customer=seen.customer,
        template=delivery.template,
        template_version=privacy.version(delivery.channel, delivery.template),
        locale=delivery.locale or (recipient.locale if recipient is not None else None),
        vars=seen.vars or None,
    )


def encode_record(record: DeliveryRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> DeliveryRecord:
    return _decoder.decode(data)


async def get_record(redis: Redis, keys: Keys | Layout, delivery_id: str) -> DeliveryRecord | None:
    """A delivery's record, from whichever shard holds it (its job's)."""
    for shard in as_layout(keys).shards:
        data: Any = await redis.get(shard.record(delivery_id))
        if data is not None:
            return decode_record(data)
    return None


async def iter_records(
    redis: Redis,
    keys: Keys | Layout,
    *,
    since: float | None = None,
    until: float | None = None,
    newest_first: bool = True,
    chunk: int = 500,
) -> AsyncIterator[DeliveryRecord]:
    """Records by last update, from the index; expired ones are skipped. Several shards'
    indexes are merged as they are read."""
    shards = as_layout(keys).shards
    iterators = [
        _shard_records(redis, shard, since, until, newest_first, chunk).__aiter__()
        for shard in shards
    ]
    if len(iterators) == 1:
        async for record in iterators[0]:
            yield record
        return
    heads: list[tuple[float, int, DeliveryRecord]] = []
    for n, iterator in enumerate(iterators):
        first = await anext(iterator, None)
        if first is not None:
            heads.append((_order(first, newest_first), n, first))
    heapq.heapify(heads)
    while heads:
        _, n, record = heapq.heappop(heads)
        yield record
        following = await anext(iterators[n], None)
        if following is not None:
            heapq.heappush(heads, (_order(following, newest_first), n, following))


def _order(record: DeliveryRecord, newest_first: bool) -> float:
    return -record.updated if newest_first else record.updated


async def _shard_records(
    redis: Redis,
    keys: Keys,
    since: float | None,
    until: float | None,
    newest_first: bool,
    chunk: int,
) -> AsyncIterator[DeliveryRecord]:
    low = "-inf" if since is None else since * 1000
    high = "+inf" if until is None else until * 1000
    offset = 0
    while True:
        ids: Any
        if newest_first:
            ids = await redis.zrevrangebyscore(keys.history, high, low, start=offset, num=chunk)
        else:
            ids = await redis.zrangebyscore(keys.history, low, high, start=offset, num=chunk)
        if not ids:
            return
        offset += len(ids)
        values: Any = await redis.mget([keys.record(i.decode()) for i in ids])
        for value in values:
            if value is not None:
                yield decode_record(value)
