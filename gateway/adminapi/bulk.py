"""Bulk replay by filter, safely: count first (a dry run with a sample), then a
background job that is resumable, idempotent and cancellable.

A job's state lives in Redis (``Layout.job``): its filter, state, position and counts;
what it replays is fixed when it is planned (``Layout.job_todo``, at most ``MAX_ITEMS``).
Any gateway process serving the admin API runs jobs: one at a time per job (a lease that
expires, so another process resumes a job whose runner died). Each delivery is queued
with ``replay_once.lua``, which records it in the job's set in the delivery's shard in
the same step: a job resumed from a position saved a little behind skips what it
already sent. Position and counts are saved together after each batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Annotated, Any

import msgspec
from redis.exceptions import RedisError

from .. import admin
from ..delivery import Attempt, Delivery, encode_delivery
from ..event import Event
from ..history import DeliveryRecord, encode_record, record_of
from ..keys import Keys, ordering_key
from ..router import plan_deliveries, routed_event
from ..scripts import Script
from ..streams import as_text
from .audit import audited
from .common import AdminContext, BadRequest, Conflict, NotFound
from .search import hot_records, search_deliveries

log = logging.getLogger("tocsin.admin")

REPLAY_ONCE = Script("replay_once")
#: The most deliveries one job replays: past it, narrow the filter (or run several).
MAX_ITEMS = 100_000
#: Deliveries shown by a dry run.
SAMPLE = 10
#: Deliveries handled between two saves of the position.
BATCH = 50
LEASE_MS = 15_000
#: How long a job's state is kept once it ended.
KEEP_S = 30 * 86400
STATES = ("planning", "running", "cancelled", "done", "failed")
FILTER_FIELDS = ("event_id", "customer_id", "invoice_ref", "channel", "status", "since", "until")
_event_decoder = msgspec.json.Decoder(Event)


#: Epoch seconds, within the years a history can span.
Epoch = Annotated[float, msgspec.Meta(ge=0, lt=1e11)]


class ReplayFilter(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    event_id: str | None = None
    customer_id: str | None = None
    invoice_ref: str | None = None
    channel: str | None = None
    status: str | None = None
    since: Epoch | None = None
    until: Epoch | None = None

    def is_empty(self) -> bool:
        return not any(getattr(self, f) is not None for f in FILTER_FIELDS)


async def matching(ctx: AdminContext, flt: ReplayFilter, most: int) -> list[dict[str, Any]]:
    """Deliveries the filter selects, newest first, at most ``most``."""
    if flt.is_empty():
        raise BadRequest("filter", "a bulk replay needs at least one filter")
    out: list[dict[str, Any]] = []
    cursor = None
    while len(out) < most:
        page = await search_deliveries(ctx, **msgspec.to_builtins(flt), cursor=cursor, limit=500)
        out += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return out[:most]


async def dry_run(ctx: AdminContext, flt: ReplayFilter) -> dict[str, Any]:
    found = await matching(ctx, flt, MAX_ITEMS + 1)
    return {
        "count": min(len(found), MAX_ITEMS),
        "over_limit": len(found) > MAX_ITEMS,
        "by_status": _by_status(found),
        "sample": found[:SAMPLE],
    }


def _by_status(items: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    return counts


async def start_job(ctx: AdminContext, flt: ReplayFilter, *, rate: float = 100.0) -> dict[str, Any]:
    """Create a job (state ``planning``); a runner plans and runs it in the background."""
    if flt.is_empty():
        raise BadRequest("filter", "a bulk replay needs at least one filter")
    if not 0 < rate <= 10_000:
        raise BadRequest("rate", "deliveries per second, between 0 and 10000")
    await search_deliveries(ctx, **msgspec.to_builtins(flt), limit=1)  # refuses a bad filter
    now = time.time()
    job_id = f"job_{int(now * 1000):013d}_{secrets.token_hex(4)}"
    async with audited(ctx, "replay.start", job_id) as done:
        fields = {
            "id": job_id,
            "filter": msgspec.json.encode(flt).decode(),
            "state": "planning",
            "actor": ctx.actor,
            "created": f"{now:.3f}",
            "rate": str(rate),
            "total": "0",
            "position": "0",
            "queued": "0",
            "skipped": "0",
        }
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hset(ctx.layout.job(job_id), mapping=fields)  # type: ignore[arg-type]
            pipe.zadd(ctx.layout.jobs, {job_id: now * 1000})
            await pipe.execute()
        done.detail = fields["filter"]
        return await job_status(ctx, job_id)


async def job_status(ctx: AdminContext, job_id: str) -> dict[str, Any]:
    raw: Any = await ctx.redis.hgetall(ctx.layout.job(job_id))
    if not raw:
        raise NotFound(f"no replay job {job_id}")
    job = {as_text(k): as_text(v) for k, v in raw.items()}
    out: dict[str, Any] = {
        "id": job["id"],
        "state": job["state"],
        "actor": job.get("actor"),
        "filter": msgspec.json.decode(job["filter"]),
        "created": float(job["created"]),
        "rate": float(job.get("rate", 100)),
        "total": int(job.get("total", 0)),
        "position": int(job.get("position", 0)),
        "queued": int(job.get("queued", 0)),
        "skipped": int(job.get("skipped", 0)),
    }
    if "finished" in job:
        out["finished"] = float(job["finished"])
    if "error" in job:
        out["error"] = job["error"]
    return out


async def list_jobs(ctx: AdminContext, limit: int = 50) -> list[dict[str, Any]]:
    ids: Any = await ctx.redis.zrevrange(ctx.layout.jobs, 0, limit - 1)
    out = []
    for job_id in ids:
        with contextlib.suppress(NotFound):
            out.append(await job_status(ctx, as_text(job_id)))
    return out


async def cancel_job(ctx: AdminContext, job_id: str) -> dict[str, Any]:
    async with audited(ctx, "replay.cancel", job_id) as done:
        state: Any = await ctx.redis.hget(ctx.layout.job(job_id), "state")
        if state is None:
            raise NotFound(f"no replay job {job_id}")
        if as_text(state) not in ("planning", "running"):
            raise Conflict(f"job {job_id} is {as_text(state)}: nothing to cancel")
        await ctx.redis.hset(ctx.layout.job(job_id), "state", "cancelled")
        done.detail = "cancelled"
        return await job_status(ctx, job_id)


# -- running ------------------------------------------------------------------------------


class JobRunner:
    """Runs the deployment's pending replay jobs, in any process serving the admin API.
    ``ctx`` carries the plan's rules (a delivered message is re-planned from its event)."""

    def __init__(self, ctx: AdminContext, owner: str, *, interval: float = 1.0) -> None:
        self.ctx = ctx
        self.owner = owner
        self.interval = interval

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.run_pending(stopping)
            except (RedisError, OSError) as exc:
                log.warning("replay jobs: Redis error, trying again: %s", exc)
            except Exception:
                log.exception("replay jobs: a pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    async def run_pending(self, stopping: asyncio.Event) -> None:
        ids: Any = await self.ctx.redis.zrevrange(self.ctx.layout.jobs, 0, 99)
        for raw_id in ids:
            job_id = as_text(raw_id)
            state: Any = await self.ctx.redis.hget(self.ctx.layout.job(job_id), "state")
            if state is None or as_text(state) not in ("planning", "running"):
                continue
            if await self._lease(job_id):
                try:
                    await self.run_job(job_id, stopping)
                finally:
                    await self._release(job_id)

    async def _lease(self, job_id: str) -> bool:
        key = self.ctx.layout.job_lease(job_id)
        if await self.ctx.redis.set(key, self.owner, nx=True, px=LEASE_MS):
            return True
        holder: Any = await self.ctx.redis.get(key)
        if holder is not None and as_text(holder) == self.owner:
            await self.ctx.redis.pexpire(key, LEASE_MS)
            return True
        return False

    async def _release(self, job_id: str) -> None:
        key = self.ctx.layout.job_lease(job_id)
        holder: Any = await self.ctx.redis.get(key)
        if holder is not None and as_text(holder) == self.owner:
            await self.ctx.redis.delete(key)

    async def run_job(self, job_id: str, stopping: asyncio.Event) -> None:
        layout = self.ctx.layout
        status = await job_status(self.ctx, job_id)
        ctx = self.ctx.acting(status["actor"] or "replay-job")
        if status["state"] == "planning":
            flt = msgspec.convert(status["filter"], ReplayFilter)
            try:
                found = await matching(ctx, flt, MAX_ITEMS)
            except BadRequest as exc:  # the conf changed since: a channel went
                await ctx.redis.hset(layout.job(job_id), "error", str(exc))
                await self._finish(job_id, "failed")
                return
            async with ctx.redis.pipeline(transaction=True) as pipe:
                pipe.delete(layout.job_todo(job_id))  # a planning cut short starts over
                for start in range(0, len(found), 1000):
                    chunk = [item["id"] for item in found[start : start + 1000]]
                    pipe.rpush(layout.job_todo(job_id), *chunk)
                pipe.expire(layout.job_todo(job_id), KEEP_S)
                pipe.hset(layout.job(job_id), mapping={"state": "running", "total": len(found)})
                await pipe.execute()
            if not found:
                await self._finish(job_id, "done")
                return
            log.info("replay job %s: %d deliveries to replay", job_id, len(found))
        rate = float(status["rate"])
        position = int(status["position"])
        while not stopping.is_set():
            state: Any = await ctx.redis.hget(layout.job(job_id), "state")
            if state is None or as_text(state) != "running":
                return  # cancelled
            batch = max(1, min(BATCH, int(rate / 2)))  # a pause at least twice a second
            ids: Any = await ctx.redis.lrange(
                layout.job_todo(job_id), position, position + batch - 1
            )
            if not ids:
                await self._finish(job_id, "done")
                return
            started = time.monotonic()
            queued, skipped = await replay_batch(ctx, job_id, [as_text(i) for i in ids])
            position += len(ids)
            async with ctx.redis.pipeline(transaction=True) as pipe:
                pipe.hset(layout.job(job_id), "position", position)
                pipe.hincrby(layout.job(job_id), "queued", queued)
                pipe.hincrby(layout.job(job_id), "skipped", skipped)
                pipe.pexpire(layout.job_lease(job_id), LEASE_MS)
                await pipe.execute()
            pause = len(ids) / rate - (time.monotonic() - started)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), pause)

    async def _finish(self, job_id: str, state: str) -> None:
        layout = self.ctx.layout
        async with self.ctx.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                layout.job(job_id), mapping={"state": state, "finished": f"{time.time():.3f}"}
            )
            pipe.expire(layout.job(job_id), KEEP_S)
            await pipe.execute()
        log.info("replay job %s: %s", job_id, state)


async def replay_batch(ctx: AdminContext, job_id: str, ids: list[str]) -> tuple[int, int]:
    """Queue each delivery again unless this job already did; (queued, skipped)."""
    hot = await hot_records(ctx, ids)
    missing = [i for i in ids if i not in hot]
    archived = await ctx.archive.get_deliveries(missing) if ctx.archive and missing else {}
    records = {**archived, **hot}
    dead_ids = [i for i, r in records.items() if r.status == "dead"]
    letters = {}
    if dead_ids:
        found = await admin.dead_letters(ctx.redis, ctx.layout, ids=dead_ids, archive=ctx.archive)
        letters = {lt.delivery_id: lt for lt in found}
    queued = skipped = 0
    for delivery_id in ids:
        record = records.get(delivery_id)
        if record is None:
            skipped += 1  # past the retention since the job was planned
            continue
        outcome = await _replay_one(ctx, job_id, record, letters.get(delivery_id))
        queued += outcome
        skipped += 1 - outcome
    return queued, skipped


async def _replay_one(
    ctx: AdminContext, job_id: str, record: DeliveryRecord, letter: admin.DeadLetter | None
) -> int:
    now = time.time()
    dead_entry = ""
    shard: Keys
    if record.status == "dead":
        if letter is None or letter.delivery is None or letter.channel is None:
            return 0  # replayed by someone else meanwhile
        shard = ctx.layout.shards[letter.shard]
        if await ctx.redis.sismember(shard.replayed_by(job_id), record.id):
            return 1
        job = msgspec.structs.replace(letter.delivery, attempt=1)
        job.history = [*letter.delivery.history]
        if letter.archived:
            if ctx.archive is None or not await ctx.archive.claim_dead_letter(
                letter.shard, letter.entry_id, int(now * 1000)
            ):
                return 0
        else:
            dead_entry = letter.entry_id
    elif record.status in ("delivered", "cancelled"):
        planned = await _planned(ctx, record)
        if planned is None:
            return 0  # its event is gone, or today's rules no longer yield it
        shard, job = planned
        job.history = [*record.attempts]
    else:
        return 0  # pending, retrying or deferred: already on its way
    job.history.append(
        Attempt(n=0, at=round(now, 3), outcome="replayed", ms=0, note=f"bulk replay {job_id}")
    )
    result = await REPLAY_ONCE(
        ctx.redis,
        [shard.replayed_by(job_id), shard.dead, shard.deliveries(job.channel), shard.history],
        [
            job.id,
            dead_entry,
            encode_delivery(job),
            shard.record(job.id),
            encode_record(record_of(job, "pending", now=now)),
            max(1, int(ctx.retention)),
            int(now * 1000),
        ],
    )
    return 1 if int(result) >= 0 else 0


async def _planned(ctx: AdminContext, record: DeliveryRecord) -> tuple[Keys, Delivery] | None:
    """The delivery as today's rules plan it from its event, and the event's shard."""
    raw: bytes | None = None
    shard: Keys | None = None
    for candidate in ctx.layout.shards:
        raw = await routed_event(ctx.redis, candidate, record.event_id)
        if raw is not None:
            shard = candidate
            break
    if raw is None and ctx.archive is not None:
        older = await ctx.archive.get_event(record.event_id)
        if older is not None:
            raw = older.raw
            shard = ctx.layout.shard(ordering_key(older.customer_id, record.event_id))
    if raw is None or shard is None:
        return None
    try:
        event = _event_decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    for delivery in plan_deliveries(ctx.rules, event, raw):
        if delivery.id == record.id:
            return shard, delivery
    return None
