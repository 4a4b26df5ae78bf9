"""The router: read accepted events, evaluate rules, fan out delivery jobs atomically."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import confirm
from .delivery import Delivery, Recipient, delivery_id, encode_job
from .event import Customer, Event
from .keys import ROUTER_GROUP, Keys
from .rules import CompiledAction, CompiledRule, Target
from .scripts import FANOUT, is_noscript
from .streams import (
    Backoff,
    Entry,
    as_text,
    ensure_group,
    entry_order,
    is_nogroup,
    read_group,
)


class EventHook(Protocol):
    """What the router tells of each routed event (the scenario engine listens)."""

    async def on_event(self, event: Event) -> None: ...


log = logging.getLogger("tocsin.router")

#: The slowest a live router is taken to route one event. Measured: ~50 us (128-event
#: batches, a rule with a condition, so each event decoded whole; 2-core box while a
#: benchmark ran); 1 ms leaves room for scenarios' Redis round trips and a busier box.
SLOWEST_PER_EVENT = 0.001
#: How many times that batch time an event may stay read and unrouted before another
#: router takes it over (``[worker] router_reclaim_after`` unset), and the floor of that.
#: A takeover that comes too early costs only work done twice: the fan-out script skips
#: an event another router acknowledged, and scenarios ignore an event seen twice.
RECLAIM_MARGIN = 10
RECLAIM_FLOOR = 2.0
#: How often a router looks for events to take over: half the reclaim time, at most this.
RECLAIM_INTERVAL = 5.0


def default_reclaim_after(batch: int) -> float:
    """Seconds after which a read, unrouted event is taken as its router's death: ten
    times the longest a live router holds a batch of ``batch`` events, at least 2 s
    (128, the default batch: 2 s)."""
    return max(RECLAIM_FLOOR, RECLAIM_MARGIN * SLOWEST_PER_EVENT * batch)


#: The longest the router waits between tries while Redis is unreachable (as the
#: worker's read loop: routing resumes within 250 ms of Redis answering again).
RECONNECT_CAP = 0.25
#: How often routed events older than the retention are trimmed from the events stream.
TRIM_INTERVAL = 60.0

_event_decoder = msgspec.json.Decoder(Event)


class HeadSource(msgspec.Struct):
    confirm_by: str | None = None


class RoutingHead(msgspec.Struct):
    """What routing reads of an event when no condition and no scenario looks further:
    decoding only this takes half the time of decoding the whole event (its ``data``
    becomes Python objects nobody reads). Events were validated at intake."""

    id: str
    type: str
    source: HeadSource
    customer: Customer | None = None


_head_decoder = msgspec.json.Decoder(RoutingHead)


def _recipients(targets: tuple[Target, ...], event: Event | RoutingHead) -> list[Target]:
    if not targets:
        return [("", None)]
    out: list[Target] = []
    for target, fixed in targets:
        if target == "customer":
            c = event.customer
            recipient = Recipient(
                kind="customer",
                name=c.name if c else None,
                email=c.email if c else None,
                phone=c.phone if c else None,
                locale=c.locale if c else None,
            )
            out.append((target, recipient))
        else:
            out.append((target, fixed))
    return out


def action_deliveries(
    actions: tuple[CompiledAction, ...],
    event: Event | RoutingHead,
    raw: bytes,
    rule: str,
    id_base: str,
    *,
    scenario: str | None = None,
) -> list[Delivery]:
    """One delivery per (action, recipient). ``id_base`` (the event id, or a scenario
    step's) makes delivery ids stable: the same routing always yields the same ids."""
    deliveries = []
    customer_locale = event.customer.locale if event.customer else None
    for index, compiled in enumerate(actions):
        action = compiled.action
        for target, recipient in _recipients(compiled.targets, event):
            deliveries.append(
                Delivery(
                    id=delivery_id(id_base, rule, index, target),
                    event_id=event.id,
                    event_type=event.type,
                    rule=rule,
                    channel=action.channel,
                    event=msgspec.Raw(raw),
                    template=action.template,
                    locale=action.locale
                    or (recipient.locale if recipient is not None else None)
                    or customer_locale,
                    recipient=recipient,
                    window=compiled.window,
                    scenario=scenario,
                    category=compiled.category,
                )
            )
    return deliveries


def plan_deliveries(
    rules: list[CompiledRule], event: Event | RoutingHead, raw: bytes
) -> list[Delivery]:
    """The deliveries one event yields: one per matching (rule, action, recipient).
    A ``RoutingHead`` will do only when no rule matching its type has conditions.

    An event its source must confirm first goes to that confirmation alone."""
    if event.source.confirm_by is not None:
        return [confirmation(event, raw)]
    context: dict[str, Any] | None = None
    deliveries = []
    for rule in rules:
        if not rule.matches_type(event.type):
            continue
        if rule.matcher.conditions:
            if context is None:
                assert isinstance(event, Event), "conditions read the whole event"
                context = event.to_context()
            if not rule.matches(context):
                continue
        deliveries += action_deliveries(rule.actions, event, raw, rule.name, event.id)
    return deliveries


def confirmation(event: Event | RoutingHead, raw: bytes) -> Delivery:
    """The job that asks the event's source to confirm it (``gateway.confirm``)."""
    source = event.source.confirm_by or ""
    return Delivery(
        id=delivery_id(event.id, confirm.RULE, 0, ""),
        event_id=event.id,
        event_type=event.type,
        rule=confirm.RULE,
        channel=confirm.channel_name(source),
        event=msgspec.Raw(raw),
    )


class Router:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        rules: list[CompiledRule],
        consumer: str,
        batch: int = 512,
        *,
        reclaim_idle_ms: int | None = None,
        retention: float = 30 * 86400,
        scenarios: EventHook | None = None,
        index: bool = True,
        index_ttl: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.scenarios = scenarios
        self.retention = max(1, int(retention))
        #: Write the event -> deliveries search index (``Keys.event_deliveries``).
        self.index = keys.search_index if index else ""
        #: Its TTL (s): only without an archive, which otherwise empties it.
        self.index_ttl = int(index_ttl)
        if reclaim_idle_ms is None:
            reclaim_idle_ms = int(default_reclaim_after(batch) * 1000)
        self.reclaim_idle_ms = reclaim_idle_ms
        self.reclaim_interval = min(RECLAIM_INTERVAL, max(0.05, reclaim_idle_ms / 2000))
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.batch = batch
        self.routed = 0
        self.use_rules(rules)

    def use_rules(self, rules: list[CompiledRule]) -> None:
        """Route with these rules from the next event on (a conf reload)."""
        self.rules = rules
        self._conditional = [rule for rule in rules if rule.matcher.conditions]

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff(cap=RECONNECT_CAP)
        group_ready = False
        # Our own pending entries first (a restart under the same consumer name), then new ones.
        cursor = "0"
        next_reclaim = next_trim = time.monotonic()
        while not stopping.is_set():
            try:
                if not group_ready:
                    # A lost group is recreated where routing had got to: from the
                    # stream's start, it would route again the events kept for replay.
                    mark: Any = await self.redis.get(self.keys.routed_through)
                    await ensure_group(
                        self.redis, self.keys.events, ROUTER_GROUP, start=as_text(mark or "0")
                    )
                    await FANOUT.load(self.redis)
                    group_ready = True
                reply = await read_group(
                    self.redis,
                    ROUTER_GROUP,
                    self.consumer,
                    {self.keys.events: cursor},
                    self.batch,
                    None if cursor == "0" else 500,
                )
                entries = reply[0][1] if reply else []
                if cursor == "0" and not entries:
                    cursor = ">"
                    continue
                if entries:
                    await self._route(entries)
                if time.monotonic() >= next_reclaim:
                    await self._reclaim()
                    next_reclaim = time.monotonic() + self.reclaim_interval
                if time.monotonic() >= next_trim:
                    await self.trim()
                    next_trim = time.monotonic() + TRIM_INTERVAL
                backoff.reset()
            except (RedisError, OSError) as exc:
                if is_nogroup(exc) or is_noscript(exc):
                    group_ready = False
                # What this router read before the error is pending under its own name:
                # read it again first (fan-out skips what was already routed).
                cursor = "0"
                await backoff.wait("router", exc)

    async def _reclaim(self) -> None:
        """Route events another router read and then died holding (its name is never reused)."""
        start: Any = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                self.keys.events,
                ROUTER_GROUP,
                self.consumer,
                self.reclaim_idle_ms,
                start_id=start,
                count=self.batch,
            )
            start, entries = reply[0], [(i, f) for i, f in reply[1] if i is not None and f]
            if entries:
                log.info("router: took over %d events left pending by another router", len(entries))
                await self._route(entries)
            if start in (b"0-0", "0-0"):
                return

    async def trim(self) -> int:
        """Drop routed events older than the retention from the events stream; an event
        not routed yet stays, however old. Returns how many went. (Whole stream nodes
        go, so a few entries may outlive the retention a little.)"""
        mark: Any = await self.redis.get(self.keys.routed_through)
        if mark is None:
            return 0  # nothing is known to be routed
        cutoff = (int((self.clock() - self.retention) * 1000), 0)
        below = min(cutoff, entry_order(mark))  # MINID keeps ``below`` itself
        if below <= (0, 0):
            return 0
        dropped: int = await self.redis.xtrim(
            self.keys.events, minid=f"{below[0]}-{below[1]}", approximate=True
        )
        return dropped

    async def _route(self, entries: list[Entry]) -> None:
        stream_index: dict[str, int] = {}
        keys = [self.keys.events, self.keys.routed_through]
        args: list[Any] = [ROUTER_GROUP, len(entries), self.index, self.index_ttl]
        for entry_id, fields in entries:
            raw = fields.get(b"e", b"")
            event: Event | RoutingHead
            try:
                event = _head_decoder.decode(raw)
                if self._needs_whole(event.type):
                    event = _event_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                await self._dead_event(entry_id, raw, f"undecodable event: {exc}")
                args[1] -= 1
                continue
            if self.scenarios is not None and event.source.confirm_by is None:
                assert isinstance(event, Event)
                await self.scenarios.on_event(event)
            jobs = plan_deliveries(self.rules, event, raw)
            args += [entry_id, raw, len(jobs)]
            for job in jobs:
                stream = self.keys.deliveries(job.channel)
                if stream not in stream_index:
                    keys.append(stream)
                    stream_index[stream] = len(keys)
                args += [stream_index[stream], encode_job(job)]
        if args[1]:
            self.routed += await FANOUT(self.redis, keys, args)

    def _needs_whole(self, event_type: str) -> bool:
        """Whether routing this type reads more than its head: a scenario may, a rule
        with conditions does."""
        return self.scenarios is not None or any(
            rule.matches_type(event_type) for rule in self._conditional
        )

    async def _dead_event(self, entry_id: bytes, raw: bytes, reason: str) -> None:
        log.error("router: dead-lettering event entry %s: %s", entry_id.decode(), reason)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dead, {"kind": "event", "e": raw, "reason": reason})
            pipe.xack(self.keys.events, ROUTER_GROUP, entry_id)
            pipe.xdel(self.keys.events, entry_id)
            await pipe.execute()


async def routed_event(redis: Redis, keys: Keys, event_id: str) -> bytes | None:
    """An event as it was routed, from the events stream; ``None`` if there is none:
    never accepted, not routed yet, or trimmed after the retention."""
    entry: Any = await redis.get(keys.dedupe(event_id))
    if entry is None:
        return None
    found: Any = await redis.xrange(keys.events, entry, entry)
    if not found:
        return None
    groups = {as_text(g["name"]): g for g in await redis.xinfo_groups(keys.events)}
    router = groups.get(ROUTER_GROUP)
    if router is None or entry_order(entry) > entry_order(router["last-delivered-id"]):
        return None  # not read by a router yet
    if await redis.xpending_range(keys.events, ROUTER_GROUP, min=entry, max=entry, count=1):
        return None  # read, not routed yet
    raw: bytes | None = found[0][1].get(b"e")
    return raw
