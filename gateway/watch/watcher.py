"""The gateway warning about itself: one process evaluates the ``[watch]`` conf each round.

Every gateway process runs a ``Watcher``. Each round one of them holds a lease in Redis
(``<prefix>:watch:lease``, like the metrics poller's); it reads the new events of every
shard (their providers only, counted by Lua: no event body crosses the network), reads
the queue snapshot the metrics leaseholder wrote (``gateway.metrics``), decides each
watch, and writes what it remembers back to Redis, so that a process taking over goes
on where it left off. A watch changing state emits ``watch.breached`` or
``watch.recovered`` into the events stream in the same Lua step that records the new
state: one alert per breach and one recovery, however many rounds or processes.
Every process then reads the states for its ``tocsin_watch_breached`` gauge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..event import Event, EventSource, encode_event
from ..keys import Keys, Layout
from ..metrics.families import Metrics
from ..metrics.poller import LEASE_LUA, snapshot_key
from ..metrics.snapshot import CHUNK, Snapshot, decode_snapshot
from ..windows import SendingWindow
from ..worker import INTERNAL_PROVIDER
from .conf import ActivityWatch, WatchRule, WatchSection
from .evaluate import Memory, longest_period, verdict

log = logging.getLogger("tocsin.watch")

#: Event chunks read per shard and round at most: a backlog is caught up over rounds.
MAX_CHUNKS = 50

# New events after ARGV[1] (exclusive; '-': from the start), counted by provider. An
# event waiting for its source's confirmation is not counted: the event it confirms is
# (so a confirming source's events count once, as they reach the rules). msgspec writes
# an event's fields in order, so "source" then "provider" lead the source object.
EVENTS_LUA = """
local start = ARGV[1]
if start ~= '-' then start = '(' .. start end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[2])
local found, order, last = {}, {}, ARGV[1]
for _, e in ipairs(entries) do
  last = e[1]
  local f, body = e[2], nil
  for i = 1, #f, 2 do
    if f[i] == 'e' then body = f[i + 1]; break end
  end
  local provider = ''
  if body then
    local _, t = string.find(body, '"source":{"provider":"', 1, true)
    if t then
      local q = string.find(body, '"', t + 1, true)
      if q then provider = string.sub(body, t + 1, q - 1) end
      if string.find(body, '"confirm_by":"', t, true) then provider = nil end
    end
  end
  if provider then
    if not found[provider] then found[provider] = 0; order[#order + 1] = provider end
    found[provider] = found[provider] + 1
  end
end
local reply = {#entries, last}
for _, p in ipairs(order) do
  reply[#reply + 1] = p
  reply[#reply + 1] = found[p]
end
return reply
"""

# Record a watch's new state and tell staff, once: only a call that changes the state
# appends the event. KEYS[1] states hash, KEYS[2] events stream, KEYS[3] the event's
# dedupe key. ARGV[1] watch, ARGV[2] the breach (JSON) or '' when cleared, ARGV[3] the
# encoded event, ARGV[4] how long the dedupe key is kept (s). Returns 1 if it changed.
TRANSITION_LUA = """
local had = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
local breached = ARGV[2] ~= ''
if had == breached then return 0 end
if breached then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
redis.call('SET', KEYS[3], id, 'EX', ARGV[4])
return 1
"""


class Breach(msgspec.Struct):
    """A watch breached now: what the console and ``tocsin status`` list."""

    watch: str
    kind: str
    #: Epoch seconds (the evaluating process's clock).
    since: float
    detail: str


_breach = msgspec.json.Decoder(Breach)
_memory = msgspec.json.Decoder(Memory)
_json = msgspec.json.Encoder()


def home(layout: Layout) -> Keys:
    """The shard holding the watch states and getting the watch events."""
    return layout.shard("watch")


def lease_key(prefix: str) -> str:
    return f"{prefix}:watch:lease"


def states_key(keys: Keys) -> str:
    return f"{keys.base}:watch:state"


def memory_key(keys: Keys) -> str:
    return f"{keys.base}:watch:memory"


async def current_breaches(redis: Redis, layout: Layout) -> list[Breach]:
    """Every watch breached now, oldest first (for the console and ``tocsin status``)."""
    raw: Any = await redis.hgetall(states_key(home(layout)))
    found = []
    for value in raw.values():
        try:
            found.append(_breach.decode(value))
        except msgspec.DecodeError:
            continue
    return sorted(found, key=lambda b: (b.since, b.watch))


async def read_memory(redis: Redis, layout: Layout) -> Memory | None:
    data: Any = await redis.get(memory_key(home(layout)))
    if data is None:
        return None
    try:
        return _memory.decode(data)
    except msgspec.DecodeError:
        return None


async def count_new_events(
    redis: Redis, keys: Keys, after: str | None
) -> tuple[dict[str, int], str]:
    """Events in one shard's stream after ``after``, by provider, and the last entry read.
    ``None``: watching starts now, so the stream's current end is only noted."""
    if after is None:
        last: Any = await redis.xrevrange(keys.events, "+", "-", count=1)
        return {}, (last[0][0].decode() if last else "-")
    counts: dict[str, int] = {}
    for _ in range(MAX_CHUNKS):
        reply: Any = await redis.eval(EVENTS_LUA, 1, keys.events, after, CHUNK)
        n = int(reply[0])
        after = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        for i in range(2, len(reply), 2):
            name = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
            counts[name] = counts.get(name, 0) + int(reply[i + 1])
        if n < CHUNK:
            break
    return counts, after


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


@dataclass
class Watcher:
    redis: Redis
    layout: Layout
    conf: WatchSection
    windows: dict[str, SendingWindow]
    #: Unique per process: the lease's holder.
    holder: str
    metrics: Metrics | None = None
    #: How long a watch event's dedupe key is kept (the events' retention).
    keep: float = 30 * 86400
    clock: Callable[[], float] = time.time
    leader: bool = False
    _scripts: dict[str, Any] = field(default_factory=dict)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.check()
            except (RedisError, OSError) as exc:
                log.debug("watch: Redis unavailable: %s", exc)
            try:
                async with asyncio.timeout(float(self.conf.every)):
                    await stopping.wait()
            except TimeoutError:
                pass

    async def check(self) -> list[Breach]:
        """One round: evaluate if this process holds the lease; the breaches now."""
        ttl = int(float(self.conf.every) * 3000)
        lease = lease_key(self.layout.prefix)
        won = bool(await self.redis.eval(LEASE_LUA, 1, lease, self.holder, ttl))
        if won != self.leader:
            log.info("watch: %s the evaluation", "taking" if won else "no longer taking")
            self.leader = won
        if won:
            await self._evaluate()
        breaches = await current_breaches(self.redis, self.layout)
        if self.metrics is not None:
            self.metrics.watch_breached_set(self.conf.watches, {b.watch for b in breaches})
        return breaches

    async def _evaluate(self) -> None:
        now = self.clock()
        keys = home(self.layout)
        memory = await read_memory(self.redis, self.layout) or Memory(started=now)
        counts: dict[str, int] = {}
        for shard in self.layout.shards:
            found, memory.cursors[shard.events] = await count_new_events(
                self.redis, shard, memory.cursors.get(shard.events)
            )
            for name, n in found.items():
                counts[name] = counts.get(name, 0) + n
        memory.count_events(now, counts)
        snapshot = await self._snapshot()
        if snapshot is not None:
            memory.count_dead(snapshot, now)
        memory.trim(now, longest_period(self.conf.watches))
        states: Any = await self.redis.hgetall(states_key(keys))
        breached = {(k.decode() if isinstance(k, bytes) else k): v for k, v in states.items()}
        for name, rule in self.conf.watches.items():
            found_verdict = verdict(rule, memory, snapshot, self.windows, now)
            if found_verdict is None or bool(found_verdict) == (name in breached):
                continue
            if found_verdict:
                await self._breached(keys, name, rule, found_verdict, now)
            else:
                await self._recovered(keys, name, rule, _breach.decode(breached[name]), now)
        await self.redis.set(memory_key(keys), _json.encode(memory))

    async def _snapshot(self) -> Snapshot | None:
        """The metrics leaseholder's snapshot; none while it is missing (it expires after
        three missed refreshes, so a present one is recent)."""
        data: Any = await self.redis.get(snapshot_key(self.layout.prefix))
        if data is None:
            return None
        try:
            return decode_snapshot(data)
        except msgspec.DecodeError:
            return None

    async def _breached(
        self, keys: Keys, name: str, rule: WatchRule, detail: str, now: float
    ) -> None:
        breach = Breach(watch=name, kind=_kind(rule), since=now, detail=detail)
        data = {**_subject(name, rule), "detail": detail, "breached_at": _iso(now)}
        event = _event(f"watch_breached_{name}_{int(now)}", "watch.breached", now, data)
        if await self._transition(keys, name, _json.encode(breach), event):
            log.warning("watch %s breached: %s", name, detail)

    async def _recovered(
        self, keys: Keys, name: str, rule: WatchRule, breach: Breach, now: float
    ) -> None:
        data = {
            **_subject(name, rule),
            "detail": breach.detail,
            "breached_at": _iso(breach.since),
            "recovered_at": _iso(now),
            "breached_for_seconds": max(0, int(now - breach.since)),
        }
        event = _event(f"watch_recovered_{name}_{int(now)}", "watch.recovered", now, data)
        if await self._transition(keys, name, b"", event):
            log.info("watch %s recovered (breached since %s)", name, _iso(breach.since))

    async def _transition(self, keys: Keys, name: str, state: bytes, event: Event) -> bool:
        script = self._scripts.get("transition")
        if script is None:
            script = self._scripts["transition"] = self.redis.register_script(TRANSITION_LUA)
        changed = await script(
            keys=[states_key(keys), keys.events, keys.dedupe(event.id)],
            args=[name, state, encode_event(event), int(self.keep)],
        )
        return bool(changed)


def _kind(rule: WatchRule) -> str:
    return str(type(rule).__struct_config__.tag)


def _subject(name: str, rule: WatchRule) -> dict[str, Any]:
    data: dict[str, Any] = {"watch": name, "kind": _kind(rule)}
    if rule.description:
        data["description"] = rule.description
    if isinstance(rule, ActivityWatch):
        data["provider"] = rule.provider
    elif rule.channel is not None:
        data["channel"] = rule.channel
    return data


def _event(event_id: str, type_: str, now: float, data: dict[str, Any]) -> Event:
    return Event(
        id=event_id,
        type=type_,
        occurred_at=datetime.fromtimestamp(now, UTC),
        source=EventSource(provider=INTERNAL_PROVIDER, event_type=type_),
        data=data,
    )
