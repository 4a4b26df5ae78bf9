"""The queue snapshot: what is waiting where, read from Redis by one process at a time.

Everything is read per shard (one ``Keys``) and summed over ``Layout.shards``. Sets that
can grow large (retries, dead letters, scenario timers) are walked in chunks, by Lua
where members are big, so Redis is never held for more than a chunk and no job body
crosses the network; only the leaseholder does it (gateway/metrics/poller.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.asyncio import Redis

from ..keys import WORKER_GROUP, Keys, Layout

#: Members walked per Lua call or ZRANGE: ~1 ms of Redis time each.
CHUNK = 1000
#: Due scenario steps read from the steps stream at most (it holds only fired steps
#: not yet carried out: a few, unless the scenario engine is down).
STEPS_READ = 10_000


class ChannelQueue(msgspec.Struct, omit_defaults=True):
    ready: int = 0
    in_flight: int = 0
    retrying: int = 0
    deferred: int = 0
    dead: int = 0
    #: Epoch seconds the oldest due, unsent job became due.
    oldest_due: float | None = None
    disabled: bool = False
    failing: bool = False

    def add(self, other: ChannelQueue) -> None:
        self.ready += other.ready
        self.in_flight += other.in_flight
        self.retrying += other.retrying
        self.deferred += other.deferred
        self.dead += other.dead
        self.oldest_due = _earliest(self.oldest_due, other.oldest_due)
        self.disabled |= other.disabled
        self.failing |= other.failing


class ScenarioLoad(msgspec.Struct, omit_defaults=True):
    live: int = 0
    due: int = 0


class Snapshot(msgspec.Struct):
    #: Epoch seconds when it was taken.
    at: float
    channels: dict[str, ChannelQueue] = msgspec.field(default_factory=dict)
    scenarios: dict[str, ScenarioLoad] = msgspec.field(default_factory=dict)
    #: Epoch seconds of the oldest event or delivery record still in Redis, over
    #: all shards (None: none). The hot window is applied by whoever exports it, so the
    #: snapshot says the same to every gateway and needs no conf.
    oldest_history: float | None = None

    @classmethod
    def empty(cls, channels: Iterable[str], scenarios: Iterable[str], at: float = 0.0) -> Snapshot:
        return cls(
            at=at,
            channels={name: ChannelQueue() for name in channels},
            scenarios={name: ScenarioLoad() for name in scenarios},
        )

    def add(self, other: Snapshot) -> None:
        for name, queue in other.channels.items():
            self.channels.setdefault(name, ChannelQueue()).add(queue)
        for name, load in other.scenarios.items():
            mine = self.scenarios.setdefault(name, ScenarioLoad())
            mine.live += load.live
            mine.due += load.due
        self.oldest_history = _earliest(self.oldest_history, other.oldest_history)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)
_timer = msgspec.json.Decoder(tuple[str, str, str, int])


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode_snapshot(data: bytes) -> Snapshot:
    return _decoder.decode(data)


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


# Per channel stream: [retrying later, deferred later, due, earliest due ms or -1]. A
# parked job's last attempt (its history comes last in the job's JSON) says why it waits.
RETRIES_LUA = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1] + ARGV[2] - 1, 'WITHSCORES')
local now = tonumber(ARGV[3])
local found, order = {}, {}
for i = 1, #members, 2 do
  local m, score = members[i], tonumber(members[i + 1])
  local nl = string.find(m, '\\n', 1, true) or 1
  local stream = string.sub(m, 1, nl - 1)
  local t = found[stream]
  if not t then t = {0, 0, 0, -1}; found[stream] = t; order[#order + 1] = stream end
  if score <= now then
    t[3] = t[3] + 1
    if t[4] < 0 or score < t[4] then t[4] = score end
  else
    local at, from = nil, math.max(1, #m - 2048)
    while true do
      local found = string.find(m, '"outcome":"', from, true)
      if not found then break end
      at, from = found, found + 11
    end
    if at and string.sub(m, at + 11, at + 18) == 'deferred' then
      t[2] = t[2] + 1
    else
      t[1] = t[1] + 1
    end
  end
end
local reply = {#members / 2}
for _, s in ipairs(order) do
  local t = found[s]
  reply[#reply + 1] = s
  for j = 1, 4 do reply[#reply + 1] = t[j] end
end
return reply
"""

# Dead letters after ARGV[1] (exclusive; '-' from the start), by channel.
DEAD_LUA = """
local start = ARGV[1]
if start ~= '-' then start = '(' .. start end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[2])
local found, order, last = {}, {}, ARGV[1]
for _, e in ipairs(entries) do
  last = e[1]
  local f, channel = e[2], ''
  for i = 1, #f, 2 do
    if f[i] == 'channel' then channel = f[i + 1]; break end
  end
  if not found[channel] then found[channel] = 0; order[#order + 1] = channel end
  found[channel] = found[channel] + 1
end
local reply = {#entries, last}
for _, c in ipairs(order) do
  reply[#reply + 1] = c
  reply[#reply + 1] = found[c]
end
return reply
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_seconds(entry_id: Any) -> float:
    return int(_text(entry_id).partition("-")[0]) / 1000


@dataclass
class DeadTally:
    """Dead letters per channel in one shard, kept between refreshes: entries added since
    the last one are counted alone; a trim or a replay (the first entry or the length no
    longer agree) makes a full recount."""

    first: str | None = None
    last: str = "-"
    length: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    async def refresh(self, redis: Redis, key: str) -> dict[str, int]:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", count=1)
            length, head = await pipe.execute()
        first = _text(head[0][0]) if head else None
        if first != self.first or length < self.length:
            self.first, self.last, self.length, self.counts = first, "-", 0, {}
        added, last = await _count_dead(redis, key, self.last)
        if self.length + sum(added.values()) != length:  # removed meanwhile: recount
            added, last = await _count_dead(redis, key, "-")
            self.counts = {}
        for channel, n in added.items():
            self.counts[channel] = self.counts.get(channel, 0) + n
        self.first, self.last, self.length = first, last, sum(self.counts.values())
        return self.counts


async def _count_dead(redis: Redis, key: str, after: str) -> tuple[dict[str, int], str]:
    counts: dict[str, int] = {}
    while True:
        reply: Any = await redis.eval(DEAD_LUA, 1, key, after, CHUNK)
        n, after = int(reply[0]), _text(reply[1])
        for i in range(2, len(reply), 2):
            channel = _text(reply[i])
            counts[channel] = counts.get(channel, 0) + int(reply[i + 1])
        if n < CHUNK:
            return counts, after


async def _retries(
    redis: Redis, keys: Keys, now_ms: int
) -> dict[str, tuple[int, int, int, float | None]]:
    """Per stream key: (retrying later, deferred later, due now, earliest due s)."""
    out: dict[str, tuple[int, int, int, float | None]] = {}
    start = 0
    while True:
        reply: Any = await redis.eval(RETRIES_LUA, 1, keys.retries, start, CHUNK, now_ms)
        n = int(reply[0])
        for i in range(1, len(reply), 5):
            stream = _text(reply[i])
            later, deferred, due, earliest = (int(v) for v in reply[i + 1 : i + 5])
            before = out.get(stream, (0, 0, 0, None))
            first = _earliest(before[3], earliest / 1000 if earliest >= 0 else None)
            out[stream] = (before[0] + later, before[1] + deferred, before[2] + due, first)
        start += n
        if n < CHUNK:
            return out


async def _scenarios(redis: Redis, keys: Keys, now_ms: int) -> dict[str, ScenarioLoad]:
    """Live instances (a step still to come) and due steps, per scenario."""
    live: dict[str, set[str]] = {}
    due: dict[str, int] = {}
    start = 0
    while True:
        members: Any = await redis.zrange(keys.timers, start, start + CHUNK - 1, withscores=True)
        for member, score in members:
            try:
                name, _key, instance, _step = _timer.decode(member.partition(b"\n")[2])
            except msgspec.DecodeError:
                continue
            live.setdefault(name, set()).add(instance)
            if score <= now_ms:
                due[name] = due.get(name, 0) + 1
        start += len(members)
        if len(members) < CHUNK:
            break
    fired: Any = await redis.xrange(keys.steps, "-", "+", count=STEPS_READ)
    for _entry_id, fields in fired:
        try:
            name = _timer.decode(fields.get(b"j", b""))[0]
        except msgspec.DecodeError:
            continue
        due[name] = due.get(name, 0) + 1
    names = {*live, *due}
    return {n: ScenarioLoad(live=len(live.get(n, ())), due=due.get(n, 0)) for n in names}


async def shard_snapshot(
    redis: Redis, keys: Keys, channels: Iterable[str], dead: DeadTally, now: float
) -> Snapshot:
    """One shard's queues. Endpoint health is not per shard: see ``take_snapshot``."""
    names = list(channels)
    now_ms = int(now * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            stream = keys.deliveries(name)
            pipe.xlen(stream)
            pipe.xpending(stream, WORKER_GROUP)
            pipe.xrange(stream, "-", "+", count=1)
        # The archive's lag: the heads of the events stream and of the history index.
        # O(1) each; XRANGE carries the head event's body (~1 KB), which XINFO STREAM
        # would too (with the last entry besides), and a Lua script returning the id alone
        # saves that kilobyte only for a script call's cost.
        pipe.xrange(keys.events, "-", "+", count=1)
        pipe.zrange(keys.history, 0, 0, withscores=True)
        *replies, events_head, history_head = await pipe.execute(raise_on_error=False)
    parked = await _retries(redis, keys, now_ms)
    dead_counts = await dead.refresh(redis, keys.dead)
    snapshot = Snapshot(at=now, oldest_history=_oldest_history(events_head, history_head))
    for i, name in enumerate(names):
        length, pending, head = replies[3 * i : 3 * i + 3]
        length = length if isinstance(length, int) else 0
        in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
        later, deferred, due, earliest = parked.get(keys.deliveries(name), (0, 0, 0, None))
        oldest = _entry_seconds(head[0][0]) if isinstance(head, list) and head else None
        snapshot.channels[name] = ChannelQueue(
            ready=max(0, length - in_flight) + due,
            in_flight=in_flight,
            retrying=later,
            deferred=deferred,
            dead=dead_counts.get(name, 0),
            oldest_due=_earliest(oldest, earliest),
        )
    snapshot.scenarios = await _scenarios(redis, keys, now_ms)
    return snapshot


def _oldest_history(events_head: Any, history_head: Any) -> float | None:
    """The older of the events stream's head (its id's time) and the history index's
    first member (scored by its record's last update, in ms)."""
    event = record = None
    if isinstance(events_head, list) and events_head:
        event = _entry_seconds(events_head[0][0])
    if isinstance(history_head, list) and history_head:
        record = float(history_head[0][1]) / 1000
    return _earliest(event, record)


async def take_snapshot(
    redis: Redis,
    layout: Layout,
    channels: Iterable[str],
    tallies: dict[str, DeadTally],
    now: float,
) -> Snapshot:
    """The whole data set's queues: each shard's, summed, plus endpoint health."""
    names = list(channels)
    total = Snapshot.empty(names, (), at=now)
    for keys in layout.shards:
        tally = tallies.setdefault(keys.dead, DeadTally())
        total.add(await shard_snapshot(redis, keys, names, tally, now))
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(layout.endpoint(name), "failing_since", "disabled_at")
        health = await pipe.execute()
    for name, (failing_since, disabled_at) in zip(names, health, strict=True):
        total.channels[name].failing = failing_since is not None
        total.channels[name].disabled = disabled_at is not None
    return total
