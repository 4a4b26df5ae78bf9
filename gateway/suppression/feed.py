"""What feeds the suppression list on its own: providers' answers at send time
(``PermanentError.suppress``), their receipts (``Receipt.suppress``) and the
recipients' replies (``Reply``: an SMS ``STOP``, or ``START`` to opt back in)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from ..address import normalise_address as normalise
from ..keys import Keys, Layout
from ..receipts import Receipt, Reply
from .store import REASONS, SuppressionList

if TYPE_CHECKING:
    from ..channel import Channel
    from ..delivery import Delivery

log = logging.getLogger("tocsin.suppression")

#: Of a provider's words, this much goes into an entry's note.
NOTE_CHARS = 200


async def feed_error(
    suppressions: SuppressionList, channel: Channel[Any], delivery: Delivery, exc: Any
) -> None:
    """A send refused for a reason that proves the address unusable (or opted out)."""
    reason = getattr(exc, "suppress", None)
    if reason not in REASONS:
        return
    address = channel.suppression_address(delivery)
    if address is None:
        return
    status = f" {exc.status}" if getattr(exc, "status", None) is not None else ""
    entry = await suppressions.add(
        address,
        reason,
        f"{channel.name}:{channel.type_name}{status}",
        note=str(exc.reason)[:NOTE_CHARS],
        keep_blocking=True,
    )
    log.warning("suppression: delivery %s: address listed as %s", delivery.id, entry.reason)


async def feed_receipt(
    redis: Redis, keys: Keys | Layout, item: Receipt | Reply, *, channel: str | None
) -> None:
    """A receipt proving an address unusable, or a reply opting out or back in."""
    suppressions = SuppressionList(redis, keys)
    where = f"{channel}:" if channel else ""
    if isinstance(item, Reply):
        try:
            address = normalise(item.sender)
        except ValueError:
            log.warning("suppression: a reply from an unreadable number was ignored")
            return
        if item.opt == "stop":
            await suppressions.add(
                address,
                "stop_reply",
                f"{where}reply {item.provider_id or ''}".strip(),
                note=item.text[:NOTE_CHARS],
                keep_blocking=True,
            )
            log.info("suppression: a recipient replied %r: listed", item.text[:20])
        elif item.opt == "start":
            # Opting back in undoes a STOP, never an operator's or a bounce's entry.
            current = await suppressions.get(address)
            if current is not None and current.reason == "stop_reply":
                await suppressions.remove(address)
                log.info("suppression: a recipient replied %r: unlisted", item.text[:20])
        return
    if item.suppress not in REASONS or not item.address:
        return
    try:
        address = normalise(item.address)
    except ValueError:
        return
    await suppressions.add(
        address,
        item.suppress,
        f"{where}receipt {item.provider_id or item.delivery_id}",
        note=(item.detail or "")[:NOTE_CHARS] or None,
        keep_blocking=True,
    )
