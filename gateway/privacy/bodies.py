"""Rendered bodies, kept only when ``[privacy] keep_bodies = true`` (default: not).

A delivered message's parts, as the channel's ``preview`` renders them (subject, text,
html, sms...), are stored as JSON under ``<shard>:body:<delivery id>`` with the TTL
``[privacy] bodies_retention``: Redis expires them, they are never archived, and
``tocsin forget`` deletes a customer's. Rendering again costs one template render per
delivered message; the send itself is not touched.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from redis.asyncio import Redis

from ..channel import Channel
from ..delivery import Delivery
from ..keys import Keys

log = logging.getLogger("tocsin.privacy")


def body_key(keys: Keys, delivery_id: str) -> str:
    return f"{keys.base}:body:{delivery_id}"


class BodyKeeper:
    def __init__(self, redis: Redis, retention: float) -> None:
        self.redis = redis
        self.ttl = max(1, int(retention))

    async def keep(self, shard: Keys, channel: Channel[Any], delivery: Delivery) -> None:
        try:
            parts = channel.preview(delivery)
        except Exception as exc:  # a channel without preview: nothing to keep
            log.debug("body of %s not kept: %s", delivery.id, exc)
            return
        await self.redis.set(body_key(shard, delivery.id), msgspec.json.encode(parts), ex=self.ttl)


async def get_body(redis: Redis, shards: tuple[Keys, ...], delivery_id: str) -> Any:
    for shard in shards:
        data: Any = await redis.get(body_key(shard, delivery_id))
        if data is not None:
            return msgspec.json.decode(data)
    return None
