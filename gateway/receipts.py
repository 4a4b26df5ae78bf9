"""Delivery receipts: what a provider reports after accepting a message (an SMS reached the
handset, or the carrier refused it). Providers call ``/v1/receipts/{channel}``; the
channel plugin verifies and reads the call (``Channel.parse_receipt``), and the core
appends the receipt to the delivery's history, where ``tocsin deliveries show`` lists it.

The same call may carry what feeds the suppression list (``gateway.suppression``): a
receipt saying the number is unusable or opted out (``Receipt.suppress``), or a reply
from the recipient (``Reply``: an SMS ``STOP`` sent to the channel's number).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from .keys import Keys, Layout

#: ``delivered``: reached the person; ``failed``: the carrier gave up; ``pending``: on its way.
ReceiptStatus = Literal["delivered", "failed", "pending"]


@dataclass(frozen=True)
class ReceiptRequest:
    """A provider's status callback, as the channel plugin needs it to verify and read it."""

    method: str
    #: The URL as the provider called it (signatures often cover it).
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    #: Form fields, when the body is ``application/x-www-form-urlencoded``.
    form: Mapping[str, str]


class Receipt(msgspec.Struct, omit_defaults=True):
    #: The Tocsin delivery id (providers echo it: Vonage ``client-ref``, a callback URL
    #: parameter for Twilio...).
    delivery_id: str
    status: ReceiptStatus
    #: The provider's own words: ``undelivered (30003)``...
    detail: str | None = None
    #: The provider's message id.
    provider_id: str | None = None
    #: Epoch seconds; set by the core when received.
    at: float = 0.0
    #: A suppression reason (``gateway.suppression.REASONS``) the receipt proves for
    #: ``address``: Vonage's err-code 9, the recipient opted out...
    suppress: str | None = None
    #: The recipient the receipt is about (E.164, as the provider echoes it).
    address: str | None = None


class Reply(msgspec.Struct, omit_defaults=True):
    """A message a recipient sent to the channel's number (an SMS reply), as the channel
    plugin read it: ``opt`` says whether it opts out (``STOP``) or back in (``START``)."""

    #: The sender, E.164.
    sender: str
    text: str
    opt: Literal["stop", "start"] | None = None
    #: The provider's message id.
    provider_id: str | None = None
    at: float = 0.0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Receipt)


async def record_receipt(
    redis: Redis, keys: Keys | Layout, receipt: Receipt | Reply, retention: float
) -> None:
    """Keep a receipt with its delivery (a reply is for the suppression list alone: the
    intake feeds ``gateway.suppression.feed_receipt`` with both)."""
    if isinstance(receipt, Reply):
        return
    # Untagged, under any layout: one key, read and written alone, spread by its own hash.
    key = Keys(keys.prefix).receipts(receipt.delivery_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, _encoder.encode(receipt))
        pipe.expire(key, max(1, int(retention)))
        await pipe.execute()


async def receipts_of(redis: Redis, keys: Keys | Layout, delivery_id: str) -> list[Receipt]:
    items: Any = await redis.lrange(Keys(keys.prefix).receipts(delivery_id), 0, -1)
    return [_decoder.decode(item) for item in items]
