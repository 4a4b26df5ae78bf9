"""``tocsin forget --customer ID``: erase one customer's personal data, everywhere.

Every shard is searched (a customer's events live in one, but jobs, scenario steps and
notices may sit in others), and every store: the events stream, delivery job streams,
the retries set, dead letters, delivery records with their receipts and kept bodies,
scenario instances, the archive, and local outbox files. The customer's values (email,
phone, name, from every event of theirs, plus any given) are looked for as well as the
id: an SMTP error quoting the address in another event's record is erased too.

What stays (docs/data-protection.md): events with their amounts, references and
timestamps (``redact``), delivery records with status and attempts but no recipient,
dedupe keys (an event id and a stream entry id: nothing personal, and without them a
provider's retry would be sent again). Streams cannot be edited in place, so an event's
entry is deleted and its redacted copy goes to the archive, where ``tocsin events``
and replay find it (the dedupe key still refuses the id; with ``[history] archive =
"off"`` the event is deleted). Running scenarios are cancelled; queued jobs dropped.

Redis keeps deleted values in its append-only file until it rewrites it: erasure ends
with ``BGREWRITEAOF`` and waits for it. Each erasure is audited (``audit``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..archive import ArchivedEvent, ArchiveStore, DeliveryQuery
from ..archive.archiver import pause_key
from ..keys import WORKER_GROUP, Keys, Layout
from ..scenario_model import SEP, Instance, doc_decoder, encoder
from ..scripts import SCENARIO_CAS
from ..streams import as_text, entry_order
from . import outboxes
from .audit import audit
from .bodies import body_key
from .redact import contains, customer_values, needles_of, redact_event, redact_record

PAGE = 1000
#: How long erasure waits for a shard's archiver to hand over the archive.
LOCK_WAIT = 30.0
REASON = "customer data erased (tocsin forget)"


@dataclass
class ForgetReport:
    customer: str
    #: What changed, per store: ``events_redacted``, ``deliveries_redacted``...
    counts: dict[str, int] = field(default_factory=dict)
    #: Redis rewrote its AOF (old values left the file); ``None`` if not asked.
    aof_rewritten: bool | None = None
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, n: int) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "changed": dict(sorted(self.counts.items())),
            "aof_rewritten": self.aof_rewritten,
            "problems": self.problems,
        }


class _Event(msgspec.Struct):
    customer: dict[str, Any] | None = None


class _Head(msgspec.Struct):
    """An event, or a job carrying one in ``event``."""

    customer: dict[str, Any] | None = None
    event: _Event | None = None


_head = msgspec.json.Decoder(_Head)


def _customer_of(raw: bytes) -> dict[str, Any] | None:
    # A retry's member is ``<stream>\n<job>``.
    _, _, raw = raw.rpartition(b"\n")
    try:
        head = _head.decode(raw)
    except msgspec.DecodeError:
        return None
    return head.customer or (head.event.customer if head.event else None)


def _job_event(fields: dict[bytes, bytes]) -> bytes:
    """A job's event: beside it (``e``) or inside its JSON."""
    return fields.get(b"e") or fields.get(b"j", b"")


async def _stream(redis: Redis, key: str) -> Any:
    """Every entry of a stream, a page at a time."""
    start = "-"
    while True:
        page: Any = await redis.xrange(key, min=start, max="+", count=PAGE)
        for entry in page:
            yield entry
        if len(page) < PAGE:
            return
        ms, seq = entry_order(page[-1][0])
        start = f"{ms}-{seq + 1}"


def _mine(raw: bytes, customer_id: str, needles: Sequence[str]) -> bool:
    if customer_id.encode() in raw:
        customer = _customer_of(raw)
        if customer is not None and customer.get("id") == customer_id:
            return True
    return contains(raw, needles)


class _Shard:
    """One shard's erasure (``forget_customer`` runs one per shard)."""

    def __init__(self, redis: Redis, keys: Keys, customer_id: str, report: ForgetReport) -> None:
        self.redis, self.keys, self.customer, self.report = redis, keys, customer_id, report
        self.event_ids: set[str] = set()
        self.delivery_ids: set[str] = set()

    async def values(self) -> list[str]:
        found: list[str] = []
        async for _, fields in _stream(self.redis, self.keys.events):
            raw = fields.get(b"e", b"")
            if self.customer.encode() in raw:
                customer = _customer_of(raw)
                if customer is not None and customer.get("id") == self.customer:
                    found += customer_values({"customer": customer})
        return found

    async def erase(self, needles: Sequence[str], archive: ArchiveStore | None) -> None:
        await self._events(needles, archive)
        await self._jobs(needles)
        await self._retries(needles)
        await self._dead(needles)
        await self._records(needles)
        await self._scenarios(needles)

    async def _events(self, needles: Sequence[str], archive: ArchiveStore | None) -> None:
        gone: list[tuple[Any, bytes]] = []
        async for entry_id, fields in _stream(self.redis, self.keys.events):
            raw = fields.get(b"e", b"")
            if _mine(raw, self.customer, needles):
                gone.append((entry_id, raw))
        rows = []
        for entry_id, raw in gone:
            event = msgspec.json.decode(raw)
            self.event_ids.add(str(event.get("id")))
            customer = event.get("customer") or {}
            entry = as_text(entry_id)
            rows.append(
                ArchivedEvent(
                    event_id=str(event.get("id")),
                    shard=self.keys.index,
                    entry=entry,
                    accepted=entry_order(entry)[0],
                    type=str(event.get("type", "?")),
                    customer_id=customer.get("id"),
                    invoice_ref=(event.get("refs") or {}).get("invoice_ref"),
                    raw=msgspec.json.encode(redact_event(event, needles)),
                )
            )
        if archive is not None and rows:
            # Insert-or-ignore: then the rewrite below replaces a copy archived earlier.
            await archive.put_events(rows)
        # The search indexes go with the events (the customer's is named after them).
        async with self.redis.pipeline(transaction=True) as pipe:
            if gone:
                pipe.xdel(self.keys.events, *[e for e, _ in gone])
            pipe.delete(self.keys.by_customer(self.customer))
            for row in rows:
                if row.invoice_ref:
                    pipe.zrem(self.keys.by_invoice(row.invoice_ref), row.entry)
            await pipe.execute()
        self.report.add("events_redacted" if archive is not None else "events_deleted", len(gone))

    async def _jobs(self, needles: Sequence[str]) -> None:
        async for key in self.redis.scan_iter(match=f"{self.keys.deliveries('*')}", count=500):
            stream = as_text(key)
            gone = [
                entry_id
                async for entry_id, fields in _stream(self.redis, stream)
                if _mine(_job_event(fields), self.customer, needles)
                or contains(fields.get(b"j", b""), needles)
            ]
            if gone:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.xack(stream, WORKER_GROUP, *gone)
                    pipe.xdel(stream, *gone)
                    await pipe.execute()
                self.report.add("queued_jobs_dropped", len(gone))

    async def _retries(self, needles: Sequence[str]) -> None:
        gone = [
            member
            async for member, _ in self.redis.zscan_iter(self.keys.retries, count=500)
            if _mine(member, self.customer, needles)
        ]
        if gone:
            await self.redis.zrem(self.keys.retries, *gone)
            self.report.add("retries_dropped", len(gone))

    async def _dead(self, needles: Sequence[str]) -> None:
        gone = []
        async for entry_id, fields in _stream(self.redis, self.keys.dead):
            payload = fields.get(b"j") or fields.get(b"e") or b""
            if _mine(payload, self.customer, needles) or contains(
                fields.get(b"reason", b""), needles
            ):
                gone.append(entry_id)
        if gone:
            await self.redis.xdel(self.keys.dead, *gone)
            self.report.add("dead_letters_deleted", len(gone))

    async def _records(self, needles: Sequence[str]) -> None:
        offset = 0
        while True:
            ids: Any = await self.redis.zrange(self.keys.history, offset, offset + PAGE - 1)
            if not ids:
                return
            offset += len(ids)
            keys = [self.keys.record(as_text(i)) for i in ids]
            values: Any = await self.redis.mget(keys)
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    continue
                record = msgspec.json.decode(value)
                if not (
                    record.get("customer") == self.customer
                    or record.get("event_id") in self.event_ids
                    or contains(value, needles)
                ):
                    continue
                delivery_id = str(record.get("id"))
                self.delivery_ids.add(delivery_id)
                new = msgspec.json.encode(redact_record(record, needles))
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.set(key, new, keepttl=True, xx=True)
                    pipe.delete(body_key(self.keys, delivery_id))
                    pipe.delete(Keys(self.keys.prefix).receipts(delivery_id))
                    _, body, receipts = await pipe.execute()
                self.report.add("deliveries_redacted", 1)
                self.report.add("bodies_deleted", int(body))
                self.report.add("receipts_deleted", int(receipts))

    async def _scenarios(self, needles: Sequence[str]) -> None:
        members: Any = await self.redis.zrange(self.keys.scenarios, 0, -1)
        for member in members:
            name, _, key = as_text(member).partition(SEP)
            for _ in range(20):  # compare-and-set: read again on a conflict
                if await self._scenario(name, key, needles):
                    break
            else:
                self.report.problems.append(f"scenario {name} {key}: kept conflicting")

    async def _scenario(self, name: str, key: str, needles: Sequence[str]) -> bool:
        hash_key = self.keys.scenario(name, key)
        rev, doc = await self.redis.hmget(hash_key, "rev", "doc")
        if doc is None:
            return True
        instance: Instance = doc_decoder.decode(doc)
        customer = instance.state.get("customer") or {}
        if customer.get("id") != self.customer and not contains(doc, needles):
            return True
        remove: list[bytes] = []
        if instance.status == "active":
            for n, step in enumerate(instance.steps):
                if step.status == "pending":
                    step.status, step.note = "cancelled", REASON
                    timer = encoder.encode([instance.scenario, instance.key, instance.id, n])
                    remove.append(self.keys.steps.encode() + b"\n" + timer)
            instance.status, instance.reason = "cancelled", REASON
            self.report.add("scenarios_cancelled", 1)
        instance.state = redact_event(instance.state, needles)
        instance.updated = round(time.time(), 3)
        args: list[Any] = [
            as_text(rev) if rev is not None else "0",
            encoder.encode(instance),
            f"{name}{SEP}{key}",
            int(time.time() * 1000),
            len(remove),
            *remove,
            0,
        ]
        keys = [hash_key, self.keys.timers, self.keys.scenarios]
        if not await SCENARIO_CAS(self.redis, keys, args):
            return False
        self.report.add("scenarios_redacted", 1)
        return True


async def _drop_receipts(
    redis: Redis, layout: Layout, delivery_ids: set[str], report: ForgetReport
) -> None:
    """Receipts and kept bodies of archived deliveries (Redis keeps them by TTL)."""
    for delivery_id in sorted(delivery_ids):
        receipts = await redis.delete(Keys(layout.prefix).receipts(delivery_id))
        report.add("receipts_deleted", int(receipts))
        for keys in layout.shards:
            report.add("bodies_deleted", int(await redis.delete(body_key(keys, delivery_id))))


async def _pause_archivers(redis: Redis, layout: Layout, owner: str) -> None:
    """Stop every shard's archiver and take its lock (see ``Archiver._hold_lock``)."""
    for keys in layout.shards:
        await redis.set(pause_key(keys), owner, px=int(LOCK_WAIT * 4000))
    deadline = time.monotonic() + LOCK_WAIT
    for keys in layout.shards:
        while not await redis.set(keys.archive_lock, owner, nx=True, px=int(LOCK_WAIT * 4000)):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the archiver of shard {keys.index} did not hand over within {LOCK_WAIT:g}s"
                )
            await asyncio.sleep(0.1)


async def _resume_archivers(redis: Redis, layout: Layout, owner: str) -> None:
    for keys in layout.shards:
        for key in (keys.archive_lock, pause_key(keys)):
            held: Any = await redis.get(key)
            if held is not None and as_text(held) == owner:
                await redis.delete(key)


async def rewrite_aof(redis: Redis, wait: float = 120.0) -> bool:
    """``BGREWRITEAOF`` and wait for it: deleted values leave the AOF only then. False
    if the server refuses (managed Redis often does) or has no AOF."""
    try:
        info: Any = await redis.info("persistence")
        if str(info.get("aof_enabled", 0)) != "1":
            return False
        before = int(info.get("aof_rewrites", 0))
        try:
            await redis.bgrewriteaof()
        except ResponseError as exc:
            if "already in progress" not in str(exc):
                raise
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            info = await redis.info("persistence")
            busy = int(info.get("aof_rewrite_in_progress", 0)) or int(
                info.get("aof_rewrite_scheduled", 0)
            )
            if not busy and int(info.get("aof_rewrites", before + 1)) > before:
                return str(info.get("aof_last_bgrewrite_status", "ok")) == "ok"
            await asyncio.sleep(0.05)
    except RedisError:
        return False
    return False


async def forget_customer(
    redis: Redis,
    layout: Layout,
    customer_id: str,
    *,
    archive: ArchiveStore | None,
    outbox_roots: Sequence[Path] = (),
    actor: str,
    values: Sequence[str] = (),
    rewrite: bool = True,
) -> ForgetReport:
    """Erase ``customer_id``'s personal data from every shard and tier (module doc).
    ``values``: more of the customer's values to erase (an address no event carried).
    Idempotent: running it again finds nothing more to change."""
    report = ForgetReport(customer_id)
    owner = f"forget-{uuid.uuid4().hex[:8]}"
    outcome = "error"
    try:
        await _pause_archivers(redis, layout, owner)
        try:
            shards = [_Shard(redis, keys, customer_id, report) for keys in layout.shards]
            found = list(values)
            for shard in shards:
                found += await shard.values()
            if archive is not None:
                for row in await archive.customer_events(customer_id):
                    with_customer = msgspec.json.decode(row.raw)
                    found += customer_values(with_customer)
            needles = needles_of(found)
            for shard in shards:
                await shard.erase(needles, archive)
            event_ids = sorted({i for s in shards for i in s.event_ids})
            if archive is not None:
                counts = await archive.erase_customer(customer_id, event_ids, needles)
                for name, n in counts.items():
                    report.add(f"archive_{name}", n)
                query = DeliveryQuery(customer_id=customer_id, limit=1_000_000)
                archived = {r.id for r in await archive.find_deliveries(query)}
                await _drop_receipts(redis, layout, archived, report)
                shards[0].delivery_ids |= archived
        finally:
            await _resume_archivers(redis, layout, owner)
        delivery_ids = {i for s in shards for i in s.delivery_ids}
        erased = await asyncio.to_thread(outboxes.erase, outbox_roots, delivery_ids, needles)
        report.add("outbox_files_deleted", erased["files"])
        report.add("outbox_lines_deleted", erased["lines"])
        if rewrite:
            report.aof_rewritten = await rewrite_aof(redis)
            if not report.aof_rewritten:
                report.problems.append(
                    "Redis did not rewrite its AOF: erased values stay in its files until it "
                    "does (BGREWRITEAOF)"
                )
        outcome = "ok" if not report.problems else "partial: " + "; ".join(report.problems)
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"
        raise
    finally:
        await audit(
            redis,
            layout.prefix,
            actor=actor,
            action="forget",
            target=f"customer:{customer_id}",
            outcome=outcome,
            detail=report.as_dict(),
        )
    return report
