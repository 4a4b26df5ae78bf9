"""Customers' personal data through the admin API: erasure (``gateway.privacy.forget``)
and the suppression list (``gateway.suppression``). The operations are theirs, shared
with ``tocsin forget`` and ``tocsin suppress``; this module maps their refusals to
``BadRequest``/``NotFound`` and audits the list's changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from .. import suppression
from ..privacy.forget import forget_customer
from ..privacy.recipients import mask
from .audit import audited
from .common import AdminContext, BadRequest, NotFound, Page, decode_cursor, encode_cursor
from .common import page_size as _page_size

#: The longest id or address taken (the API document's ``maxLength``).
MAX_TEXT = 256


async def forget(
    ctx: AdminContext, customer_id: str, values: Sequence[str] = (), *, rewrite_aof: bool = True
) -> dict[str, Any]:
    """Erase one customer (``forget_customer``, which audits the erasure itself under
    ``ctx.actor``: one entry, action ``forget``, with the report as its detail)."""
    if not customer_id.strip() or len(customer_id) > MAX_TEXT:
        raise BadRequest("customer_id", f"a customer id, 1 to {MAX_TEXT} characters")
    report = await forget_customer(
        ctx.redis,
        ctx.layout,
        customer_id,
        archive=ctx.archive,
        outbox_roots=ctx.outbox_roots,
        actor=ctx.actor,
        values=[v for v in values if v.strip()],
        rewrite=rewrite_aof,
    )
    return report.as_dict()


def _address(where: str, address: str, region: str | None = None) -> str:
    if len(address) > MAX_TEXT:
        raise BadRequest(where, f"at most {MAX_TEXT} characters")
    try:
        return suppression.normalise(address, region)
    except ValueError as exc:
        raise BadRequest(where, str(exc)) from None


def entry_item(entry: suppression.Entry) -> dict[str, Any]:
    item: dict[str, Any] = msgspec.to_builtins(entry)
    return {"until": None, "note": None, **item}


async def list_suppressions(
    ctx: AdminContext,
    *,
    reason: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page:
    """Active entries, newest first; the cursor is the last one's (time ms, address)."""
    size = _page_size(limit)
    if reason is not None and reason not in suppression.REASONS:
        raise BadRequest("reason", f"one of {', '.join(suppression.REASONS)}")
    after: tuple[int, str] | None = None
    if cursor is not None:
        ms, address = decode_cursor(cursor, (int, str))
        after = (-ms, address)
    entries = await suppression.list_entries(ctx.redis, ctx.layout, reason=reason)
    keyed = [((-round(e.at * 1000), e.address), e) for e in entries]
    keyed = [(k, e) for k, e in keyed if after is None or k > after]
    page, more = keyed[:size], len(keyed) > size
    next_cursor = encode_cursor((-page[-1][0][0], page[-1][0][1])) if more else None
    return Page([entry_item(e) for _, e in page], next_cursor)


async def add_suppression(
    ctx: AdminContext,
    address: str,
    reason: str,
    *,
    until: float | None = None,
    note: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """List an address (replacing its entry) with the token's name as author."""
    normal = _address("body.address", address, region)
    if reason not in suppression.REASONS:
        raise BadRequest("body.reason", f"one of {', '.join(suppression.REASONS)}")
    if until is not None and until <= time.time():
        raise BadRequest("body.until", "the expiry is already past")
    # The audit names the address masked: the trail outlives the list's entries.
    async with audited(ctx, "suppression.add", mask(normal)) as done:
        entry = await suppression.add(
            ctx.redis, ctx.layout, normal, reason, ctx.actor, until=until, note=note
        )
        done.detail = reason
        return entry_item(entry)


async def remove_suppression(ctx: AdminContext, address: str) -> dict[str, Any]:
    normal = _address("address", address)
    async with audited(ctx, "suppression.remove", mask(normal)):
        entry = await suppression.remove(ctx.redis, ctx.layout, normal)
        if entry is None:
            raise NotFound(f"{normal} is not on the suppression list")
        return entry_item(entry)


async def check_suppression(ctx: AdminContext, address: str) -> dict[str, Any]:
    """The entry an address has now, and what each category of message does."""
    normal = _address("address", address)
    entry = await suppression.check(ctx.redis, ctx.layout, normal)
    skips = {
        c: suppression.skip_reason(entry, c) for c in ("transactional", "reminder", "marketing")
    }
    return {
        "address": normal,
        "listed": entry is not None,
        "entry": entry_item(entry) if entry is not None else None,
        "skipped": skips,
    }
