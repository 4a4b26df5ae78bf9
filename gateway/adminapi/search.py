"""Search across both history tiers: Redis's hot window through the indexes the intake,
the router and the archiver keep (``Keys.by_customer``, ``by_invoice``,
``event_deliveries``), and the archive through its own.

Every listing is newest first and paged with a cursor: the position (time, id) of the
last item shown; the next page is what comes strictly after it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import msgspec

from ..admin import show_delivery
from ..admin_events import StoredEvent, archived_event, events_at, show_event, stream_page
from ..archive import DeliveryQuery, EventQuery, archived_deliveries
from ..history import STATUSES, DeliveryRecord, decode_record, iter_records
from ..keys import Keys
from ..privacy.recipients import recipient_hash
from ..streams import as_text, entry_order
from .common import AdminContext, BadRequest, Page, decode_cursor, encode_cursor, page_size

#: Events read from one index per search: past it, narrow by time.
INDEX_SCAN = 5000
#: Index entries read per round trip.
CHUNK = 100


class _Customer(msgspec.Struct):
    id: str | None = None


class _Head(msgspec.Struct):
    customer: _Customer | None = None
    refs: dict[str, str] = msgspec.field(default_factory=dict)


_head = msgspec.json.Decoder(_Head)


def _event_key(event: StoredEvent) -> tuple[int, int, str]:
    ms, seq = entry_order(event.entry_id)
    return ms, seq, event.id


def _head_of(event: StoredEvent) -> _Head:
    try:
        return _head.decode(event.raw)
    except msgspec.DecodeError:
        return _Head()


def event_item(event: StoredEvent) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, **event.as_dict()}


async def search_events(
    ctx: AdminContext,
    *,
    event_id: str | None = None,
    type_glob: str | None = None,
    customer_id: str | None = None,
    invoice_ref: str | None = None,
    since: float | None = None,
    until: float | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page:
    size = page_size(limit)
    before: tuple[int, int, str] | None = None
    if cursor is not None:
        ms, seq, last = decode_cursor(cursor, (int, int, str))
        before = (ms, seq, last)

    def wanted(event: StoredEvent) -> bool:
        if type_glob is not None and not fnmatch.fnmatchcase(event.type, type_glob):
            return False
        ms = entry_order(event.entry_id)[0]
        if (since is not None and ms < since * 1000) or (until is not None and ms >= until * 1000):
            return False
        if before is not None and _event_key(event) >= before:
            return False
        if customer_id is not None or invoice_ref is not None:
            head = _head_of(event)
            if customer_id is not None and (
                head.customer is None or head.customer.id != customer_id
            ):
                return False
            if invoice_ref is not None and head.refs.get("invoice_ref") != invoice_ref:
                return False
        return True

    found: list[StoredEvent] = []
    if event_id is not None:
        one = await show_event(ctx.redis, ctx.layout, event_id, ctx.archive)
        found = [one] if one is not None and wanted(one) else []
    elif customer_id is not None or invoice_ref is not None:
        found = await _indexed_events(
            ctx, customer_id, invoice_ref, until, before, size + 1, wanted
        )
        if ctx.archive is not None:
            query = EventQuery(
                customer_id=customer_id,
                invoice_ref=invoice_ref,
                type_glob=type_glob,
                since=since,
                until=until,
                before=(before[0], f"{before[0]}-{before[1]}") if before else None,
                limit=size + 1,
            )
            found += [archived_event(a) for a in await ctx.archive.find_events(query)]
    else:
        found = await _listed(ctx, type_glob, since, until, before, size + 1, wanted)
    unique = {(e.id, e.entry_id): e for e in found if wanted(e)}
    ordered = sorted(unique.values(), key=_event_key, reverse=True)
    page, more = ordered[:size], len(ordered) > size
    items = [event_item(e) for e in page]
    return Page(items, encode_cursor(_event_key(page[-1])) if more and page else None)


async def _listed(
    ctx: AdminContext,
    type_glob: str | None,
    since: float | None,
    until: float | None,
    before: tuple[int, int, str] | None,
    want: int,
    wanted: Any,
) -> list[StoredEvent]:
    """No index applies: each shard's stream from the cursor down, then the archive."""
    high = "+"
    if before is not None:
        high = f"{before[0]}-{before[1]}"  # inclusive: ``wanted`` drops the cursor's own
    if until is not None:
        bound = f"{int(until * 1000) - 1}-18446744073709551615"
        high = bound if high == "+" or entry_order(bound) < entry_order(high) else high
    low = f"{int(since * 1000)}-0" if since is not None else "-"
    found: list[StoredEvent] = []
    for shard in ctx.layout.shards:
        cursor, matched = high, 0
        while matched < want:
            page = await stream_page(ctx.redis, shard, high=cursor, low=low, count=200)
            for event in page:
                if wanted(event):
                    found.append(event)
                    matched += 1
            if len(page) < 200:
                break
            ms, seq = entry_order(page[-1].entry_id)
            cursor = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
    if ctx.archive is not None:
        query = EventQuery(
            type_glob=type_glob,
            since=since,
            until=until,
            before=(before[0], f"{before[0]}-{before[1]}") if before else None,
            limit=want,
        )
        found += [archived_event(a) for a in await ctx.archive.find_events(query)]
    return found


async def _indexed_events(
    ctx: AdminContext,
    customer_id: str | None,
    invoice_ref: str | None,
    until: float | None,
    before: tuple[int, int, str] | None,
    want: int,
    wanted: Any,
) -> list[StoredEvent]:
    """From the hot window's customer index (the customer's shard), else the invoice
    ref's (every shard's): entry ids newest first, read in chunks until enough match."""
    high: float | str = "+inf"
    if before is not None:
        high = before[0]
    if until is not None:
        high = min(float(high), until * 1000) if high != "+inf" else until * 1000
    if customer_id is not None:
        sources = [(s, s.by_customer(customer_id)) for s in [ctx.layout.shard(customer_id)]]
    else:
        assert invoice_ref is not None
        sources = [(s, s.by_invoice(invoice_ref)) for s in ctx.layout.shards]
    out: list[StoredEvent] = []
    for shard, key in sources:
        out += await _from_index(ctx, shard, key, high, want, wanted)
    return out


async def _from_index(
    ctx: AdminContext, shard: Keys, key: str, high: float | str, want: int, wanted: Any
) -> list[StoredEvent]:
    members: Any = await ctx.redis.zrevrangebyscore(key, high, "-inf", start=0, num=INDEX_SCAN)
    out: list[StoredEvent] = []
    for start in range(0, len(members), CHUNK):
        chunk = [as_text(m) for m in members[start : start + CHUNK]]
        out += [e for e in await events_at(ctx.redis, shard, chunk) if wanted(e)]
        if len(out) >= want:
            break
    return out


# -- deliveries ---------------------------------------------------------------------------


def _record_key(record: DeliveryRecord) -> tuple[int, str]:
    return int(record.updated * 1000), record.id


def delivery_item(ctx: AdminContext, record: DeliveryRecord) -> dict[str, Any]:
    item: dict[str, Any] = msgspec.to_builtins(record)
    item["erp"] = record.channel in ctx.erp_channels
    return item


async def hot_records(ctx: AdminContext, ids: Sequence[str]) -> dict[str, DeliveryRecord]:
    """Records by id, from whichever shard holds each (one MGET per shard)."""
    out: dict[str, DeliveryRecord] = {}
    if not ids:
        return out
    for shard in ctx.layout.shards:
        missing = [i for i in ids if i not in out]
        if not missing:
            break
        values: Any = await ctx.redis.mget([shard.record(i) for i in missing])
        for i, value in zip(missing, values, strict=True):
            if value is not None:
                out[i] = decode_record(value)
    return out


async def event_delivery_ids(ctx: AdminContext, event_ids: Sequence[str]) -> list[str]:
    """The hot window's delivery ids of these events (``ix:d``), every shard's."""
    if not event_ids:
        return []
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for shard in ctx.layout.shards:
            for event_id in event_ids:
                pipe.smembers(shard.event_deliveries(event_id))
        replies: list[Any] = await pipe.execute()
    return sorted({as_text(m) for members in replies for m in members})


#: The refusal of a search by address where history keeps no hash to match.
NO_KEY = "no privacy key: recipients are stored masked only"


def recipient_filter(ctx: AdminContext, address: str) -> str:
    """The keyed hash history records carry for ``address`` (``privacy.recipients``:
    same normalisation, same key), to match records by; refused without a key."""
    if ctx.privacy_key is None:
        raise BadRequest("to", NO_KEY)
    if not address.strip():
        raise BadRequest("to", "an email address or a phone number")
    return recipient_hash(ctx.privacy_key, address)


async def search_deliveries(
    ctx: AdminContext,
    *,
    event_id: str | None = None,
    customer_id: str | None = None,
    invoice_ref: str | None = None,
    channel: str | None = None,
    status: str | None = None,
    to: str | None = None,
    since: float | None = None,
    until: float | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page:
    """Newest first. ``to``, a full address, matches the records' keyed hash: the hot
    tier is scanned through its time index (bounded by ``since``), the archive answers
    from its ``to_hash`` index (``archived_deliveries``)."""
    size = page_size(limit)
    to_hash = recipient_filter(ctx, to) if to is not None else None
    if status is not None and status not in STATUSES:
        raise BadRequest("status", f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    if channel is not None and ctx.channels and channel not in ctx.channels:
        raise BadRequest("channel", f"no channel {channel!r} in the conf")
    before: tuple[int, str] | None = None
    if cursor is not None:
        ms, last = decode_cursor(cursor, (int, str))
        before = (ms, last)
    upper = until
    if before is not None:
        upper = min(until, (before[0] + 1) / 1000) if until is not None else (before[0] + 1) / 1000

    def wanted(record: DeliveryRecord) -> bool:
        if channel is not None and record.channel != channel:
            return False
        if status is not None and record.status != status:
            return False
        if to_hash is not None and record.to_hash != to_hash:
            return False
        ms = int(record.updated * 1000)
        if (since is not None and ms < since * 1000) or (until is not None and ms >= until * 1000):
            return False
        return before is None or _record_key(record) < before

    query = DeliveryQuery(
        event_id=event_id,
        customer_id=customer_id,
        invoice_ref=invoice_ref,
        channel=channel,
        status=status,
        since=since,
        until=upper,
        limit=size + 1,
        to_hash=to_hash,
    )
    archived = await archived_deliveries(ctx.archive, query) if ctx.archive is not None else []
    if event_id is not None or customer_id is not None or invoice_ref is not None:
        events = [event_id] if event_id is not None else []
        if not events:
            events = await _all_event_ids(ctx, customer_id, invoice_ref)
        ids = await event_delivery_ids(ctx, events)
        # A record archived, then updated again in Redis (a replay): Redis's is newer.
        hot = await hot_records(ctx, sorted({*ids, *(r.id for r in archived)}))
        records = [*hot.values(), *(r for r in archived if r.id not in hot)]
    else:
        hot_found: list[DeliveryRecord] = []
        async for record in iter_records(ctx.redis, ctx.layout, since=since, until=upper):
            if wanted(record):
                hot_found.append(record)
                if len(hot_found) > size:
                    break
        seen = {r.id for r in hot_found}
        records = [*hot_found, *(r for r in archived if r.id not in seen)]
    ordered = sorted((r for r in records if wanted(r)), key=_record_key, reverse=True)
    page_records, more = ordered[:size], len(ordered) > size
    items = [delivery_item(ctx, r) for r in page_records]
    next_cursor = encode_cursor(_record_key(page_records[-1])) if more and page_records else None
    return Page(items, next_cursor)


async def _all_event_ids(
    ctx: AdminContext, customer_id: str | None, invoice_ref: str | None
) -> list[str]:
    """The hot window's events of a customer or invoice ref (ids, via the indexes)."""
    if customer_id is not None:
        shard = ctx.layout.shard(customer_id)
        sources = [(shard, shard.by_customer(customer_id))]
    else:
        assert invoice_ref is not None
        sources = [(s, s.by_invoice(invoice_ref)) for s in ctx.layout.shards]
    ids: list[str] = []
    for shard, key in sources:
        members: Any = await ctx.redis.zrevrange(key, 0, INDEX_SCAN - 1)
        for start in range(0, len(members), 500):
            chunk = [as_text(m) for m in members[start : start + 500]]
            for event in await events_at(ctx.redis, shard, chunk):
                head = _head_of(event)
                if invoice_ref is not None and head.refs.get("invoice_ref") != invoice_ref:
                    continue
                ids.append(event.id)
    return ids


async def get_delivery(ctx: AdminContext, delivery_id: str) -> DeliveryRecord | None:
    return await show_delivery(ctx.redis, ctx.layout, delivery_id, ctx.archive)
