"""Scenarios: multi-step notification sequences that stop when a later event makes them moot.

A scenario instance is keyed by a business object (``payment_request:pr_42``). Events
start it (trigger), update its state (``update_on``) or cancel it (``cancel_on``, which
also works when the cancel arrives before the trigger: a tombstone keeps the scenario
from starting). Each step has a due time; timers live in a Redis sorted set and move,
once due, to a stream read by a consumer group, so a step fires exactly once however
many gateways run. Every write to an instance is a compare-and-set on its revision.

The clock is injected: ``tocsin simulate`` drives the same code with a virtual one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .delivery import encode_delivery
from .durations import Duration, shift
from .event import Event, encode_event
from .keys import SCENARIO_GROUP, Keys, Layout, as_layout
from .router import action_deliveries
from .scenario_model import (
    SEP,
    CompiledScenario,
    CompiledStep,
    Instance,
    StepState,
    Timer,
    Tombstone,
    doc_decoder,
    encoder,
    instance_id,
    merge_state,
    ms,
    state_event,
)
from .scripts import PROMOTE, SCENARIO_CAS, SCENARIO_STEP
from .streams import Backoff, Entry, ensure_group, read_group

log = logging.getLogger("tocsin.scenarios")

#: Writes retried this many times on compare-and-set conflicts before giving up.
CAS_ATTEMPTS = 20
#: How often due timers are looked for: steps fire within this of their due time.
TIMER_INTERVAL = 0.25
#: A due step read by a gateway that died is taken over after this long, unless the
#: gateway passes ``[worker] router_reclaim_after`` (what ``tocsin serve`` does: the
#: router role fires steps, so a step waits no longer than an event would).
RECLAIM_AFTER = 30.0
#: How often due steps to take over are looked for: half the reclaim time, at most this.
RECLAIM_INTERVAL = 5.0


# -- the engine -------------------------------------------------------------------------


class ScenarioEngine:
    def __init__(
        self,
        redis: Redis,
        keys: Keys | Layout,
        scenarios: list[CompiledScenario],
        *,
        timezone: str = "Europe/Paris",
        clock: Callable[[], float],
        retention: float = 30 * 86400,
        reclaim_after: float = RECLAIM_AFTER,
    ) -> None:
        self.redis = redis
        #: An instance lives in its key's shard, with its timers and the steps stream
        #: they go to when due; its steps' jobs go to that shard's delivery streams.
        self.layout = as_layout(keys)
        self.scenarios = scenarios
        self.zone = ZoneInfo(timezone)
        self.clock = clock
        self.retention = retention
        self.reclaim_idle_ms = int(reclaim_after * 1000)
        self.reclaim_interval = min(RECLAIM_INTERVAL, max(0.05, reclaim_after / 2))

    def _timer(self, instance: Instance, step: int) -> bytes:
        """A timers member: where it goes when due (the steps stream) and what fires."""
        payload = encoder.encode(Timer(instance.scenario, instance.key, instance.id, step))
        return self.layout.shard(instance.key).steps.encode() + b"\n" + payload

    # -- reading and writing instances ------------------------------------------------

    async def load(self, name: str, key: str) -> tuple[str, Instance | None]:
        reply: Any = await self.redis.hmget(
            self.layout.shard(key).scenario(name, key), "rev", "doc"
        )
        rev, doc = reply
        rev_text = rev.decode() if rev is not None else "0"
        return rev_text, (doc_decoder.decode(doc) if doc is not None else None)

    async def _cas(
        self,
        rev: str,
        instance: Instance,
        remove: list[bytes],
        add: list[tuple[float, bytes]],
    ) -> bool:
        now = self.clock()
        instance.updated = round(now, 3)
        args: list[Any] = [
            rev,
            encoder.encode(instance),
            f"{instance.scenario}{SEP}{instance.key}",
            int(now * 1000),
            len(remove),
            *remove,
            len(add),
        ]
        for due, member in add:
            args += [int(due * 1000), member]
        shard = self.layout.shard(instance.key)
        keys = [shard.scenario(instance.scenario, instance.key), shard.timers, shard.scenarios]
        return bool(await SCENARIO_CAS(self.redis, keys, args))

    # -- events -----------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        """Start, update or cancel the scenarios this event concerns. Idempotent: an
        event seen twice (a router crash before its fan-out) changes nothing more."""
        context: dict[str, Any] | None = None
        for scenario in self.scenarios:
            trigger = scenario.trigger.matches_type(event.type)
            cancel = any(m.matches_type(event.type) for m in scenario.cancel_on)
            update = any(m.matches_type(event.type) for m in scenario.update_on)
            if not (trigger or cancel or update):
                continue
            if context is None:
                context = event.to_context()
            trigger = trigger and scenario.trigger.matches(context)
            cancel = cancel and any(
                m.matches_type(event.type) and m.matches(context) for m in scenario.cancel_on
            )
            update = update and any(
                m.matches_type(event.type) and m.matches(context) for m in scenario.update_on
            )
            if not (trigger or cancel or update):
                continue
            try:
                key = scenario.key.render(context).strip()
            except jinja2.TemplateError as exc:
                log.warning(
                    "scenario %s: event %s (%s) has no key (%s): %s",
                    scenario.name,
                    event.id,
                    event.type,
                    scenario.key_source,
                    exc,
                )
                continue
            if not key:
                continue
            try:
                await self._apply(scenario, key, event, context, cancel=cancel, trigger=trigger)
            except (RedisError, OSError):
                raise  # the router retries the whole event: every step here is idempotent
            except Exception:
                log.exception("scenario %s/%s: event %s not applied", scenario.name, key, event.id)

    async def _apply(
        self,
        scenario: CompiledScenario,
        key: str,
        event: Event,
        context: dict[str, Any],
        *,
        cancel: bool,
        trigger: bool,
    ) -> None:
        for _ in range(CAS_ATTEMPTS):
            if cancel:
                done = await self._cancel(scenario, key, event)
            elif trigger:
                done = await self._start(scenario, key, event, context)
            else:
                done = await self._update(scenario, key, event, context)
            if done:
                return
        log.error("scenario %s/%s: gave up after %d conflicts", scenario.name, key, CAS_ATTEMPTS)

    async def _cancel(self, scenario: CompiledScenario, key: str, event: Event) -> bool:
        rev, instance = await self.load(scenario.name, key)
        why = f"cancelled by {event.type} {event.id}"
        if instance is None or instance.status != "active":
            # Providers do not guarantee order: a cancel may precede its trigger. The
            # tombstone stops triggers that *occurred* before this cancel, for the TTL
            # (on the engine's clock, so simulations age it too); a later trigger is a
            # new cycle and starts.
            mark = Tombstone(
                why=why,
                occurred=event.occurred_at.timestamp(),
                until=self.clock() + scenario.tombstone_ttl,
            )
            await self.redis.set(
                self.layout.shard(key).tombstone(scenario.name, key),
                encoder.encode(mark),
                ex=max(1, int(scenario.tombstone_ttl)),
            )
            return True
        remove = self._cancel_steps(instance, why)
        instance.events.append(f"{event.type} {event.id}")
        return await self._cas(rev, instance, remove, [])

    def _cancel_steps(self, instance: Instance, why: str) -> list[bytes]:
        """Mark the instance and its pending steps cancelled; the timers to remove."""
        remove = []
        for n, step in enumerate(instance.steps):
            if step.status == "pending":
                step.status = "cancelled"
                step.note = why
                remove.append(self._timer(instance, n))
        instance.status = "cancelled"
        instance.reason = why
        return remove

    async def _start(
        self, scenario: CompiledScenario, key: str, event: Event, context: dict[str, Any]
    ) -> bool:
        rev, current = await self.load(scenario.name, key)
        remove: list[bytes] = []
        if current is not None and current.status == "active":
            if current.trigger_event == event.id or scenario.on_retrigger == "ignore":
                return True
            for n, step in enumerate(current.steps):  # restart: the old timers go
                if step.status == "pending":
                    remove.append(self._timer(current, n))
        now = self.clock()
        tombstone = await self._tombstone(scenario, key, event)
        instance = Instance(
            scenario=scenario.name,
            key=key,
            id=instance_id(scenario.name, key, event.id),
            status="active",
            started=round(now, 3),
            trigger_event=event.id,
            trigger_type=event.type,
            state=context,
            last_occurred=event.occurred_at.isoformat(),
            steps=[],
            events=[f"{event.type} {event.id}"],
        )
        if current is not None and current.id == instance.id:
            return True  # this very trigger already ran and ended
        if tombstone is not None:
            instance.status = "cancelled"
            instance.reason = f"not started: {tombstone.why}, which arrived before it"
            instance.steps = [
                StepState(name=s.name, status="cancelled", note=instance.reason)
                for s in scenario.steps
            ]
            return await self._cas(rev, instance, remove, [])
        add = []
        for n, compiled in enumerate(scenario.steps):
            scheduled = self._schedule(scenario, compiled, context, now)
            instance.steps.append(scheduled)
            if scheduled.status == "pending" and scheduled.due is not None:
                add.append((scheduled.due, self._timer(instance, n)))
        if not add:
            instance.status = "completed"
        return await self._cas(rev, instance, remove, add)

    async def _tombstone(
        self, scenario: CompiledScenario, key: str, event: Event
    ) -> Tombstone | None:
        """The cancel that came first and still applies to this trigger, if any."""
        data: Any = await self.redis.get(self.layout.shard(key).tombstone(scenario.name, key))
        if data is None:
            return None
        try:
            mark = msgspec.json.decode(data, type=Tombstone)
        except msgspec.DecodeError:
            return None
        if self.clock() >= mark.until or event.occurred_at.timestamp() > mark.occurred:
            return None
        return mark

    def _schedule(
        self, scenario: CompiledScenario, step: CompiledStep, state: Mapping[str, Any], now: float
    ) -> StepState:
        if step.at is not None:
            due = step.at.resolve(state, self.zone)
            if due is None:
                return StepState(
                    name=step.name,
                    status="skipped",
                    note=f"no date at {'.'.join(step.at.path)} in the event",
                )
        else:
            after = step.after or Duration(0)
            due = shift(now, after.days, after.clock, self.zone)
        if due < now - 1:
            stamp = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
            if scenario.past_steps == "skip":
                return StepState(
                    name=step.name,
                    status="skipped",
                    due=ms(due),
                    note=f"already past when the scenario started (due {stamp})",
                )
            return StepState(
                name=step.name,
                status="pending",
                due=ms(now),
                note=f"due {stamp}, already past at start: fired once now",
            )
        return StepState(name=step.name, status="pending", due=ms(due))

    async def _update(
        self, scenario: CompiledScenario, key: str, event: Event, context: dict[str, Any]
    ) -> bool:
        rev, instance = await self.load(scenario.name, key)
        if instance is None or instance.status != "active":
            return True
        marker = f"{event.type} {event.id}"
        if marker in instance.events:
            return True
        instance.events.append(marker)
        if event.occurred_at.isoformat() >= instance.last_occurred:
            merge_state(instance.state, context)
            instance.last_occurred = event.occurred_at.isoformat()
        # Dates may have moved (a new due date): reschedule pending dated steps.
        now = self.clock()
        remove, add = [], []
        for n, (step, state) in enumerate(zip(scenario.steps, instance.steps, strict=True)):
            if state.status != "pending" or step.at is None:
                continue
            due = step.at.resolve(instance.state, self.zone)
            if due is not None and ms(max(due, now)) != state.due:
                remove.append(self._timer(instance, n))
                state.due = ms(max(due, now))
                add.append((state.due, self._timer(instance, n)))
        return await self._cas(rev, instance, remove, add)

    # -- timers -----------------------------------------------------------------------

    async def promote(self) -> int:
        """Move due timers to the steps stream (each exactly once, whoever runs this)."""
        moved = 0
        while True:
            count = 0
            for shard in self.layout.shards:
                count += int(
                    await PROMOTE(self.redis, [shard.timers], [int(self.clock() * 1000), 500])
                )
            moved += count
            if count < 500:
                return moved

    async def fire_pending(
        self, consumer: str, block_ms: int | None = None, shard: Keys | None = None
    ) -> int:
        """Fire the due steps in the steps stream of ``shard`` (of every shard, without
        blocking unless there is one); returns how many entries were handled."""
        if shard is None and len(self.layout.shards) > 1:
            handled = 0
            for one in self.layout.shards:
                handled += await self.fire_pending(consumer, None, one)
            return handled
        shard = shard or self.layout.shards[0]
        await ensure_group(self.redis, shard.steps, SCENARIO_GROUP)
        handled = 0
        for cursor in ("0", ">"):
            while True:
                reply = await read_group(
                    self.redis,
                    SCENARIO_GROUP,
                    consumer,
                    {shard.steps: cursor},
                    100,
                    block_ms if cursor == ">" else None,
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                for entry in entries:
                    await self.fire(entry, shard)
                    handled += 1
                if cursor == ">" and block_ms is not None:
                    break
        return handled

    async def fire(self, entry: Entry, shard: Keys) -> None:
        """Fire one entry of ``shard``'s steps stream."""
        entry_id, fields = entry
        try:
            timer = msgspec.json.decode(fields.get(b"j", b""), type=Timer)
        except msgspec.DecodeError:
            log.error("scenario step entry %s is unreadable: dropped", entry_id)
            await self._ack_only(shard, entry_id)
            return
        scenario = next((s for s in self.scenarios if s.name == timer.scenario), None)
        for _ in range(CAS_ATTEMPTS):
            rev, instance = await self.load(timer.scenario, timer.key)
            if (
                scenario is None
                or instance is None
                or instance.id != timer.instance
                or instance.status != "active"
                or timer.step >= len(instance.steps)
                or instance.steps[timer.step].status != "pending"
                # A reload changed the scenario and has not re-planned this instance
                # yet: the step at this index may be another one (gateway/reload).
                or timer.step >= len(scenario.steps)
                or scenario.steps[timer.step].name != instance.steps[timer.step].name
            ):
                await self._ack_only(shard, entry_id)  # cancelled, restarted or already fired
                return
            outcome = await self._fire_step(shard, entry_id, scenario, rev, instance, timer.step)
            if outcome >= 0:
                return
        log.error("scenario %s/%s: step kept conflicting", timer.scenario, timer.key)

    async def _fire_step(
        self,
        shard: Keys,
        entry_id: bytes,
        scenario: CompiledScenario,
        rev: str,
        instance: Instance,
        index: int,
    ) -> int:
        step = scenario.steps[index]
        state = instance.steps[index]
        now = self.clock()
        state.fired = round(now, 3)
        jobs: list[Any] = []
        if all(condition(instance.state) for condition in step.conditions):
            event = state_event(instance)
            raw = encode_event(event)
            deliveries = action_deliveries(
                step.actions,
                event,
                raw,
                f"scenario:{scenario.name}/{step.name}",
                f"{instance.id}:{index}",
                scenario=SEP.join((instance.scenario, instance.key, instance.id)),
            )
            state.status = "done"
            state.deliveries = len(deliveries)
            jobs = deliveries
        else:
            state.status = "skipped"
            state.note = "conditions false at fire time: " + "; ".join(
                c.source for c in step.conditions
            )
        if all(s.status != "pending" for s in instance.steps):
            instance.status = "completed"
        instance.updated = round(now, 3)
        stream_keys: list[str] = []
        job_args: list[Any] = []
        for job in jobs:
            stream = shard.deliveries(job.channel)
            if stream not in stream_keys:
                stream_keys.append(stream)
            job_args += [4 + stream_keys.index(stream), encode_delivery(job)]
        result = await SCENARIO_STEP(
            self.redis,
            [
                shard.steps,
                shard.scenario(instance.scenario, instance.key),
                shard.scenarios,
                *stream_keys,
            ],
            [
                SCENARIO_GROUP,
                entry_id,
                rev,
                encoder.encode(instance),
                f"{instance.scenario}{SEP}{instance.key}",
                int(now * 1000),
                len(jobs),
                *job_args,
            ],
        )
        if result == 1:
            log.info(
                "scenario %s/%s step %s: %s (%d deliveries)",
                instance.scenario,
                instance.key,
                step.name,
                state.status,
                state.deliveries,
            )
        return int(result)

    async def _ack_only(self, shard: Keys, entry_id: bytes) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(shard.steps, SCENARIO_GROUP, entry_id)
            pipe.xdel(shard.steps, entry_id)
            await pipe.execute()

    async def run(self, stopping: asyncio.Event, consumer: str) -> None:
        """The timer loops, one per shard: promote due timers, fire due steps, take over
        the steps a dead gateway had read. One set per router process; any number may
        run at once."""
        await asyncio.gather(*(self._run(stopping, consumer, s) for s in self.layout.shards))

    async def _run(self, stopping: asyncio.Event, consumer: str, shard: Keys) -> None:
        backoff = Backoff()
        next_reclaim = 0.0
        while not stopping.is_set():
            try:
                while (
                    await PROMOTE(self.redis, [shard.timers], [int(self.clock() * 1000), 500])
                    == 500
                ):
                    pass
                await self.fire_pending(consumer, int(TIMER_INTERVAL * 1000), shard)
                if time.monotonic() >= next_reclaim:
                    await self._reclaim(consumer, shard)
                    next_reclaim = time.monotonic() + self.reclaim_interval
                backoff.reset()
            except (RedisError, OSError) as exc:
                await backoff.wait("scenarios", exc)

    async def _reclaim(self, consumer: str, shard: Keys) -> None:
        start: Any = "0-0"
        while True:
            reply: Any = await self.redis.xautoclaim(
                shard.steps, SCENARIO_GROUP, consumer, self.reclaim_idle_ms, start_id=start
            )
            start = reply[0]
            for entry_id, fields in reply[1]:
                if entry_id is not None and fields:
                    await self.fire((entry_id, fields), shard)
            if start in (b"0-0", "0-0"):
                return

    # -- operators ----------------------------------------------------------------------

    async def cancel(self, name: str, key: str, reason: str) -> Instance | None:
        for _ in range(CAS_ATTEMPTS):
            rev, instance = await self.load(name, key)
            if instance is None or instance.status != "active":
                return instance
            remove = self._cancel_steps(instance, reason)
            if await self._cas(rev, instance, remove, []):
                return instance
        raise RuntimeError(f"scenario {name}/{key}: kept conflicting")

    async def list(self, key: str | None = None, limit: int = 100) -> list[Instance]:
        members: list[tuple[bytes, float]] = []
        for shard in self.layout.shards:
            reply: Any = await self.redis.zrevrange(shard.scenarios, 0, -1, withscores=True)
            members += reply
        members.sort(key=lambda pair: pair[1], reverse=True)
        out = []
        for member, _score in members:
            name, _, instance_key = member.decode().partition(SEP)
            if key is not None and instance_key != key:
                continue
            _, instance = await self.load(name, instance_key)
            if instance is not None:
                out.append(instance)
            if len(out) >= limit:
                break
        return out


async def moot(redis: Redis, keys: Keys | Layout, ref: str) -> str | None:
    """Why a scenario step's message must no longer go (its instance was cancelled or
    restarted since the step fired), or ``None``. ``ref`` is ``Delivery.scenario``."""
    name, key, wanted = ref.split(SEP, 2)
    doc: Any = await redis.hget(as_layout(keys).shard(key).scenario(name, key), "doc")
    if doc is None:
        return None  # past the retention: nothing says it is moot
    instance = doc_decoder.decode(doc)
    if instance.id != wanted:
        return f"scenario {name} {key} was restarted"
    if instance.status == "cancelled":
        return f"scenario {name} {key}: {instance.reason or 'cancelled'}"
    return None
