"""Operator actions, one implementation each: the API, the CLI and the console call
these. Every write is audited (``audit.audited``) under ``ctx.actor``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jinja2
import msgspec

from .. import admin
from ..admin_events import show_event
from ..archive import DeliveryQuery
from ..delivery import Attempt, decode_delivery, encode_delivery
from ..event import Event
from ..history import DeliveryRecord, decode_record, encode_record, record_of
from ..reload.bus import read_processes
from ..reload.swap import ReloadResult
from ..scenario_model import SEP, Instance, doc_decoder
from ..scripts import Script
from ..streams import as_text
from .audit import audited
from .common import (
    AdminContext,
    BadRequest,
    Conflict,
    NotFound,
    Page,
    decode_cursor,
    encode_cursor,
    page_size,
)
from .search import delivery_item, event_delivery_ids, event_item, hot_records

RETRY_NOW = Script("retry_now")
_GLOB = re.compile(rb"([*?\[\]\\])")
_event_decoder = msgspec.json.Decoder(Event)


# -- retry now ----------------------------------------------------------------------------


async def retry_now(ctx: AdminContext, delivery_id: str) -> dict[str, Any]:
    """Send at once a delivery waiting for its next attempt: out of its shard's retries
    set, onto its channel's stream, in one step (``retry_now.lua``). It keeps its
    attempt count and retry schedule; its history notes who sent it early."""
    async with audited(ctx, "delivery.retry_now", delivery_id) as done:
        found: tuple[Any, DeliveryRecord] | None = None
        for shard in ctx.layout.shards:
            data: Any = await ctx.redis.get(shard.record(delivery_id))
            if data is not None:
                found = (shard, decode_record(data))
                break
        if found is None:
            raise NotFound(f"no delivery {delivery_id} in the hot window")
        shard, record = found
        if record.status != "retrying":
            raise Conflict(
                f"delivery {delivery_id} is {record.status}: only one waiting for a retry "
                "can be sent now (a dead one is replayed)"
            )
        stream = shard.deliveries(record.channel)
        prefix = stream.encode() + b"\n"
        pattern = _GLOB.sub(rb"\\\1", prefix + b'{"id":"' + delivery_id.encode() + b'",') + b"*"
        member: bytes | None = None
        async for candidate, _score in ctx.redis.zscan_iter(shard.retries, match=pattern):
            member = bytes(candidate)
            break
        if member is None:
            raise Conflict(f"delivery {delivery_id} is not waiting any more (sent meanwhile?)")
        job = decode_delivery(member[len(prefix) :])
        now = time.time()
        job.history.append(
            Attempt(
                n=0, at=round(now, 3), outcome="replayed", ms=0, note=f"sent now by {ctx.actor}"
            )
        )
        moved = await RETRY_NOW(
            ctx.redis,
            [shard.retries, stream, shard.history],
            [
                member,
                encode_delivery(job),
                shard.record(job.id),
                encode_record(record_of(job, "pending", now=now)),
                max(1, int(ctx.retention)),
                int(now * 1000),
                job.id,
            ],
        )
        if not moved:
            raise Conflict(f"delivery {delivery_id} was sent meanwhile")
        done.detail = f"queued on {record.channel}, attempt {job.attempt}"
        return {"delivery_id": delivery_id, "channel": record.channel, "queued": True}


# -- events -------------------------------------------------------------------------------


async def timeline(ctx: AdminContext, event_id: str) -> dict[str, Any]:
    """An event's whole story: the event, its deliveries with every attempt (ERP calls
    are those on ``erp`` channels), and the scenario instances it started, updated or
    cancelled."""
    event = await show_event(ctx.redis, ctx.layout, event_id, ctx.archive)
    if event is None:
        raise NotFound(f"no event {event_id} (never accepted, or past the retention)")
    ids = await event_delivery_ids(ctx, [event_id])
    archived = []
    if ctx.archive is not None:
        query = DeliveryQuery(event_id=event_id, limit=1000)
        archived = await ctx.archive.find_deliveries(query)
    hot = await hot_records(ctx, sorted({*ids, *(r.id for r in archived)}))
    records = {**{r.id: r for r in archived}, **hot}
    deliveries = [delivery_item(ctx, r) for r in sorted(records.values(), key=lambda r: r.id)]
    # Queued, not attempted yet: in the index, no record yet.
    deliveries += [{"id": i, "status": "queued", "attempts": []} for i in ids if i not in records]
    return {
        "event": event_item(event),
        "deliveries": deliveries,
        "erp_calls": [d for d in deliveries if d.get("erp")],
        "scenarios": await _event_scenarios(ctx, event.raw, event_id),
    }


async def _event_scenarios(ctx: AdminContext, raw: bytes, event_id: str) -> list[dict[str, Any]]:
    """The instances this event touched: each scenario's key for it, rendered as the
    engine does, names at most one instance per scenario."""
    if not ctx.scenarios:
        return []
    try:
        context = _event_decoder.decode(raw).to_context()
    except msgspec.DecodeError:
        return []
    out = []
    for scenario in ctx.scenarios:
        try:
            key = scenario.key.render(context).strip()
        except jinja2.TemplateError:
            continue
        if not key:
            continue
        instance = await _instance(ctx, scenario.name, key)
        if instance is None:
            continue
        if instance.trigger_event == event_id:
            role = "started"
        elif any(marker.endswith(f" {event_id}") for marker in instance.events):
            role = "cancelled" if instance.status == "cancelled" else "updated"
        else:
            continue
        out.append({"role": role, **msgspec.to_builtins(instance)})
    return out


async def replay_event(ctx: AdminContext, event_id: str, *, force: bool = False) -> dict[str, Any]:
    async with audited(ctx, "event.replay", event_id) as done:
        result = await admin.replay_event(
            ctx.redis, ctx.layout, ctx.rules, event_id, force=force, archive=ctx.archive
        )
        if result is None:
            raise NotFound(f"no routed event {event_id} (not routed yet, or past the retention)")
        done.detail = f"{len(result.queued)} queued, {len(result.skipped)} skipped"
        return {
            "queued": [{"id": d.id, "rule": d.rule, "channel": d.channel} for d in result.queued],
            "skipped": [
                {"id": d.id, "rule": d.rule, "channel": d.channel, "reason": why}
                for d, why in result.skipped
            ],
        }


# -- dead letters ------------------------------------------------------------------------


def letter_item(letter: admin.DeadLetter) -> dict[str, Any]:
    return {
        "entry_id": letter.entry_id,
        "kind": letter.kind,
        "channel": letter.channel,
        "delivery_id": letter.delivery_id,
        "event_id": letter.delivery.event_id if letter.delivery else None,
        "reason": letter.reason,
        "status": letter.status,
        "at": letter.at,
        "archived": letter.archived,
    }


async def list_dead_letters(
    ctx: AdminContext,
    *,
    channel: str | None = None,
    since: float | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page:
    """Oldest first (the order they are replayed in), both tiers."""
    size = page_size(limit)
    after: tuple[int, str] | None = None
    if cursor is not None:
        ms, entry = decode_cursor(cursor, (int, str))
        after = (ms, entry)
        since = max(since or 0, ms / 1000)
    _known_channel(ctx, channel)
    letters = await admin.dead_letters(
        ctx.redis,
        ctx.layout,
        channel=channel,
        since=since,
        archive=ctx.archive,
        limit=size + 1 + (1000 if after else 0),
    )
    keyed = [((int(lt.at * 1000), lt.entry_id), lt) for lt in letters]
    keyed = [(k, lt) for k, lt in keyed if after is None or k > after]
    page, more = keyed[:size], len(keyed) > size
    return Page([letter_item(lt) for _, lt in page], encode_cursor(page[-1][0]) if more else None)


async def replay_dead_letters(ctx: AdminContext, ids: list[str]) -> dict[str, Any]:
    """Queue dead letters again by entry or delivery id (``tocsin dlq replay``)."""
    if not ids:
        raise BadRequest("ids", "name at least one dead letter")
    async with audited(ctx, "dlq.replay", ",".join(ids)[:200]) as done:
        letters = await admin.dead_letters(ctx.redis, ctx.layout, ids=ids, archive=ctx.archive)
        moved = 0
        for letter in letters:
            moved += await admin.replay_dead_letter(
                ctx.redis, ctx.layout, letter, retention=ctx.retention, archive=ctx.archive
            )
        missing = sorted(set(ids) - {x for lt in letters for x in (lt.entry_id, lt.delivery_id)})
        done.detail = f"replayed {moved} of {len(letters)}; missing {len(missing)}"
        return {"replayed": moved, "found": len(letters), "missing": missing}


# -- endpoints ---------------------------------------------------------------------------


def _known_channel(ctx: AdminContext, channel: str | None) -> None:
    if channel is not None and ctx.channels and channel not in ctx.channels:
        known = ", ".join(sorted(ctx.channels))
        raise BadRequest("channel", f"no channel {channel!r} in the conf (channels: {known})")


async def list_endpoints(ctx: AdminContext) -> list[dict[str, Any]]:
    states = await admin.endpoint_states(ctx.redis, ctx.layout, ctx.channels)
    return [{**s.__dict__, "type": ctx.channels.get(s.channel)} for s in states]


async def disable_endpoint(ctx: AdminContext, channel: str, reason: str = "") -> dict[str, Any]:
    """Hold a channel's jobs (workers stop reading its stream) until enabled."""
    async with audited(ctx, "endpoint.disable", channel) as done:
        _known_channel(ctx, channel)
        why = f"disabled by {ctx.actor}" + (f": {reason}" if reason else "")
        key = ctx.layout.endpoint(channel)
        was = not await ctx.redis.hsetnx(key, "disabled_at", f"{time.time():.3f}")
        if not was:
            await ctx.redis.hset(key, "disabled_reason", why)
        done.outcome = "ok" if not was else "unchanged"
        return {"channel": channel, "disabled": True, "was_disabled": was}


async def enable_endpoint(ctx: AdminContext, channel: str) -> dict[str, Any]:
    async with audited(ctx, "endpoint.enable", channel) as done:
        _known_channel(ctx, channel)
        was = await admin.enable_endpoint(ctx.redis, ctx.layout, channel)
        done.outcome = "ok" if was else "unchanged"
        return {"channel": channel, "disabled": False, "was_disabled": was}


# -- scenario instances ------------------------------------------------------------------


async def _instance(ctx: AdminContext, name: str, key: str) -> Instance | None:
    doc: Any = await ctx.redis.hget(ctx.layout.shard(key).scenario(name, key), "doc")
    if doc is None:
        return None
    with contextlib.suppress(msgspec.DecodeError):
        return doc_decoder.decode(doc)
    return None


async def list_instances(
    ctx: AdminContext,
    *,
    key: str | None = None,
    scenario: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int | None = None,
) -> Page:
    """Most recently changed first."""
    size = page_size(limit)
    if status is not None and status not in ("active", "completed", "cancelled"):
        raise BadRequest("status", "one of active, completed, cancelled")
    high: Any = "+inf"
    after: tuple[int, str] | None = None
    if cursor is not None:
        ms, member = decode_cursor(cursor, (int, str))
        after, high = (ms, member), ms
    shards = [ctx.layout.shard(key)] if key is not None else list(ctx.layout.shards)
    found: list[tuple[tuple[int, str], Instance]] = []
    for shard in shards:
        offset = 0
        while True:
            reply: Any = await ctx.redis.zrevrangebyscore(
                shard.scenarios, high, "-inf", start=offset, num=500, withscores=True
            )
            offset += len(reply)
            matched = 0
            for raw_member, score in reply:
                member = as_text(raw_member)
                name, _, instance_key = member.partition(SEP)
                position = (int(score), member)
                if after is not None and position >= after:
                    continue
                if (key is not None and instance_key != key) or (scenario not in (None, name)):
                    continue
                instance = await _instance(ctx, name, instance_key)
                if instance is None or status not in (None, instance.status):
                    continue
                found.append((position, instance))
                matched += 1
            if len(reply) < 500 or matched > size:
                break
    found.sort(key=lambda pair: pair[0], reverse=True)
    page, more = found[:size], len(found) > size
    items = [msgspec.to_builtins(i) for _, i in page]
    return Page(items, encode_cursor(page[-1][0]) if more else None)


async def cancel_instances(
    ctx: AdminContext, key: str, scenario: str | None = None
) -> dict[str, Any]:
    """Cancel the active instances for ``key`` (of one scenario, or all): their pending
    steps will not fire (``tocsin scenarios cancel``)."""
    from ..scenarios import ScenarioEngine  # noqa: PLC0415 - the engine pulls in the plan

    async with audited(ctx, "scenario.cancel", f"{scenario or '*'} {key}") as done:
        engine = ScenarioEngine(ctx.redis, ctx.layout, [], timezone=ctx.timezone, clock=time.time)
        cancelled, active = [], []
        for instance in await engine.list(key=key):
            if instance.status != "active":
                continue
            active.append(instance.scenario)
            if scenario in (None, instance.scenario):
                await engine.cancel(instance.scenario, key, f"cancelled by {ctx.actor}")
                cancelled.append(instance.scenario)
        if not cancelled:
            done.outcome = "unchanged"
        return {"key": key, "cancelled": cancelled, "active": active}


# -- the conf ------------------------------------------------------------------------------

#: What reloads this process's conf (``gateway.reload.reload`` bound to its gateway).
Reload = Callable[[], Awaitable[ReloadResult]]


async def reload_conf(ctx: AdminContext, reload: Reload) -> dict[str, Any]:
    """Reload the conf (``gateway.reload``): this process at once, the others nudged.
    A refused conf changes nothing; its problems are in the answer and the audit."""
    async with audited(ctx, "conf.reload", "conf") as done:
        result = await reload()
        done.outcome = "ok" if result.ok else "refused"
        if result.problems:
            done.detail = f"{len(result.problems)} problem(s): {result.problems[0]}"[:500]
        return dataclasses.asdict(result)


async def processes(ctx: AdminContext) -> dict[str, Any]:
    """Every gateway process sharing this Redis, with the conf it runs (its hash)."""
    found = await read_processes(ctx.redis, ctx.layout.prefix)
    return {"items": [msgspec.structs.asdict(p) for p in found]}
