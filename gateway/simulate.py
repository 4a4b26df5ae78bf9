"""``tocsin simulate``: replay recorded events against a conf with a virtual clock.

The real router and scenario engine run on a scratch Redis; only the clock is virtual,
jumping from one event or due step to the next. Nothing is sent: every delivery that
would be queued is listed with when it would leave (after its sending window), through
which channel, to whom, and why. Output is deterministic, so tests and ops diffing a
conf change can rely on it.

A suppression list given to the run (``--suppressions FILE``, or the deployment's own
with ``--live-suppressions``) is copied into the scratch Redis, and each message is
checked against it at the virtual time it would leave, as the worker checks: those it
rules out are listed as skipped, with the entry's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from redis.asyncio import Redis

from .delivery import Delivery, decode_job
from .event import Event, decode_event, encode_event
from .keys import Keys
from .plan import Plan
from .router import plan_deliveries
from .scenarios import ScenarioEngine, moot
from .suppression import Entry, SuppressionList, skip_reason

#: Keys of a simulation live under their own prefix, never a deployment's.
PREFIX = "tocsin-simulate"
DEFAULT_HORIZON = 120 * 86400


@dataclass(frozen=True)
class Notification:
    #: When it would leave (its sending window may push it after ``queued``).
    at: float
    queued: float
    delivery: Delivery
    window: str | None
    #: Not sent: its address's suppression entry's reason.
    skipped: str | None = None

    @property
    def deferred(self) -> bool:
        return self.at > self.queued

    def to(self, field: str | None = None) -> str:
        """The address the channel would use (its ``recipient_field`` first)."""
        r = self.delivery.recipient
        if r is None:
            return "-"
        chosen = getattr(r, field) if field else None
        return chosen or r.address or r.email or r.phone or "(no address)"


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def read_events(data: bytes) -> list[tuple[Event, bytes]]:
    """One event, a JSON array or JSON lines of canonical events; raises
    ``EventInvalid``/``ValueError``/``msgspec.DecodeError``."""
    text = data.strip()
    items: list[Any]
    try:
        whole = msgspec.json.decode(text)
    except msgspec.DecodeError:  # JSON lines
        items = [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]
    else:
        items = whole if isinstance(whole, list) else [whole]
    out = []
    for item in items:
        raw = msgspec.json.encode(item)
        event = decode_event(raw)
        out.append((event, encode_event(event)))
    return out


async def simulate(
    plan: Plan,
    redis: Redis,
    events: list[tuple[Event, bytes]],
    *,
    horizon: float = DEFAULT_HORIZON,
    suppressions: list[Entry] | None = None,
) -> list[Notification]:
    keys = Keys(PREFIX)
    await _wipe(redis)
    listed = SuppressionList(redis, keys)
    await listed.load(suppressions or [])
    # Arrival order, as recorded: providers do not promise to send in occurred_at order,
    # and that is what cancel-before-trigger is about. The clock never goes back.
    ordered = list(events)
    if not ordered:
        return []
    clock = _Clock(min(event.occurred_at.timestamp() for event, _ in ordered))
    engine = ScenarioEngine(
        redis,
        keys,
        plan.scenarios,
        timezone=plan.conf.gateway.timezone,
        clock=clock,
    )
    out: list[Notification] = []
    try:
        for event, raw in ordered:
            await _advance(engine, redis, keys, plan, clock, event.occurred_at.timestamp(), out)
            clock.now = max(clock.now, event.occurred_at.timestamp())
            for delivery in plan_deliveries(plan.rules, event, raw):
                out.append(_notification(plan, delivery, clock.now))
            await engine.on_event(event)
            out = await _without_recalled(redis, keys, out, clock.now)
        await _advance(engine, redis, keys, plan, clock, clock.now + horizon, out)
        out = await _suppressed(plan, listed, out)
    finally:
        await _wipe(redis)
    return sorted(out, key=lambda n: (n.at, n.queued, n.delivery.rule, n.delivery.id))


async def _suppressed(
    plan: Plan, listed: SuppressionList, out: list[Notification]
) -> list[Notification]:
    """Mark what the worker would skip: checked when each message would leave."""
    marked = []
    for n in out:
        channel = plan.channels.get(n.delivery.channel)
        address = channel.suppression_address(n.delivery) if channel is not None else None
        if address is not None:
            listed.clock = _Clock(n.at)
            why = skip_reason(await listed.get(address), n.delivery.category)
            if why is not None:
                marked.append(replace(n, skipped=why))
                continue
        marked.append(n)
    return marked


async def _without_recalled(
    redis: Redis, keys: Keys, out: list[Notification], now: float
) -> list[Notification]:
    """Drop scenario messages still waiting for their window whose scenario was just
    cancelled: the worker would not send them (see ``Worker._recalled``)."""
    kept = []
    for n in out:
        ref = n.delivery.scenario
        if ref is not None and n.at > now and await moot(redis, keys, ref) is not None:
            continue
        kept.append(n)
    return kept


async def _advance(
    engine: ScenarioEngine,
    redis: Redis,
    keys: Keys,
    plan: Plan,
    clock: _Clock,
    until: float,
    out: list[Notification],
) -> None:
    """Fire every step due up to ``until``, in due order, the clock following."""
    while True:
        first: Any = await redis.zrange(keys.timers, 0, 0, withscores=True)
        if not first or first[0][1] / 1000 > until:
            return
        clock.now = max(clock.now, first[0][1] / 1000)
        await engine.promote()
        await engine.fire_pending("simulate")
        for channel in plan.channels:
            stream = keys.deliveries(channel)
            entries: Any = await redis.xrange(stream)
            for _, fields in entries:
                out.append(_notification(plan, decode_job(fields), clock.now))
            await redis.delete(stream)


def _notification(plan: Plan, delivery: Delivery, now: float) -> Notification:
    at = now
    window = plan.windows.get(delivery.window or "")
    if window is not None:
        opens = window.next_open(datetime.fromtimestamp(now, UTC))
        if opens is not None:
            at = opens.timestamp()
    return Notification(at=at, queued=now, delivery=delivery, window=delivery.window)


def read_suppressions(data: bytes, where: str) -> list[Entry]:
    """A suppression list for a run: ``tocsin suppress list --json`` output, or lines of
    ``ADDRESS REASON`` (``#`` comments); ``ValueError`` naming the line and the reason."""
    from .suppression import REASONS, normalise  # noqa: PLC0415
    from .suppression.store import decode_entry  # noqa: PLC0415

    entries = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line
        if not text.strip():
            continue
        try:
            if text.lstrip().startswith("{"):
                entry = decode_entry(text.encode())
                entries.append(replace(entry, address=normalise(entry.address)))
                continue
            address, _, reason = text.partition(" ")
            reason = reason.strip() or "manual"
            if reason not in REASONS:
                raise ValueError(f"unknown reason {reason!r} (reasons: {', '.join(REASONS)})")
            entries.append(
                Entry(address=normalise(address), reason=reason, author="simulate", at=0.0)  # type: ignore[arg-type]
            )
        except (ValueError, msgspec.DecodeError) as exc:
            raise ValueError(f"{where}: line {number}: {exc}") from None
    return entries


async def _wipe(redis: Redis) -> None:
    async for key in redis.scan_iter(match=f"{PREFIX}:*", count=1000):
        await redis.delete(key)


def format_notifications(plan: Plan, notifications: list[Notification]) -> list[str]:
    """One line each: when (weekday, time and zone: windows are about both), channel, to
    whom, template (locale), the rule or scenario step, the event; columns aligned."""
    from .cli_common import stamp  # noqa: PLC0415 - the one way every command tells times

    zone = ZoneInfo(plan.conf.gateway.timezone)

    def when(epoch: float) -> str:
        return f"{datetime.fromtimestamp(epoch, zone):%a} {stamp(epoch, zone)}"

    rows = []
    for n in notifications:
        d = n.delivery
        what = f"{d.template or '(event as JSON)'}" + (f" ({d.locale})" if d.locale else "")
        channel = plan.channels.get(d.channel)
        to = n.to(channel.recipient_field if channel is not None else None)
        tail = f"<- {d.rule}  [{d.event_type} {d.event_id}]"
        if n.deferred:
            tail += f"  (deferred from {when(n.queued)} by window {n.window})"
        if n.skipped:
            tail += f"  SKIPPED: suppressed ({n.skipped}; {d.category})"
        rows.append((when(n.at), d.channel, to, what, tail))
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[4]]) for r in rows]
