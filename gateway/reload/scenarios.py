"""Running scenario instances across a reload.

An instance whose scenario is unchanged keeps its timers as they are. When a scenario's
definition changed, its active instances are re-planned under the new one: steps are
matched by name; a step already done, skipped or cancelled stays so; every other step
of the new definition is scheduled again from the instance's start (``after``) or its
state (``at``), and one whose new time is already past fires now or is skipped, as the
scenario's ``past_steps`` says; a step the new definition dropped is listed in the
instance's events and no longer fires. When a scenario is removed, its active
instances are cancelled ("scenario removed by a conf reload"). One process does it for
a given conf (a lock per scenario and conf hash); each instance is one compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from ..conf import Conf
from ..durations import Duration, shift
from ..scenario_model import SEP, CompiledScenario, StepState, ms
from ..scenarios import CAS_ATTEMPTS, ScenarioEngine

log = logging.getLogger("tocsin.reload")

#: How long the lock saying "this conf's scenario change is being applied" lives.
LOCK_TTL = 300


def changed_scenarios(old: Conf, new: Conf) -> tuple[set[str], set[str]]:
    """(changed, removed) scenario names; a disabled scenario counts as removed."""
    running = {n for n, s in old.scenarios.items() if s.enabled}
    wanted = {n for n, s in new.scenarios.items() if s.enabled}
    changed = {n for n in running & wanted if old.scenarios[n] != new.scenarios[n]}
    return changed, running - wanted


async def _members(engine: ScenarioEngine, name: str) -> list[str]:
    keys = []
    for shard in engine.layout.shards:
        reply: Any = await engine.redis.zrange(shard.scenarios, 0, -1)
        for member in reply:
            scenario, _, key = member.decode().partition(SEP)
            if scenario == name:
                keys.append(key)
    return keys


def _due(engine: ScenarioEngine, step: Any, state: dict[str, Any], started: float) -> float | None:
    if step.at is not None:
        due: float | None = step.at.resolve(state, engine.zone)
        return due
    after = step.after or Duration(0)
    return shift(started, after.days, after.clock, engine.zone)


async def replan(engine: ScenarioEngine, scenario: CompiledScenario, why: str) -> int:
    """Re-plan every active instance of ``scenario`` (its new definition); how many."""
    count = 0
    for key in await _members(engine, scenario.name):
        for _ in range(CAS_ATTEMPTS):
            rev, instance = await engine.load(scenario.name, key)
            if instance is None or instance.status != "active":
                break
            now = engine.clock()
            remove = [
                engine._timer(instance, n)
                for n, s in enumerate(instance.steps)
                if s.status == "pending"
            ]
            before = {s.name: s for s in instance.steps}
            steps: list[StepState] = []
            add: list[tuple[float, bytes]] = []
            for step in scenario.steps:
                old = before.pop(step.name, None)
                if old is not None and old.status != "pending":
                    steps.append(old)
                    continue
                due = _due(engine, step, instance.state, instance.started)
                if due is None:
                    steps.append(StepState(name=step.name, status="skipped", note=why))
                elif due < now - 1 and scenario.past_steps == "skip":
                    stamp = datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
                    note = f"{why}: new time {stamp} already past"
                    steps.append(
                        StepState(name=step.name, status="skipped", due=ms(due), note=note)
                    )
                else:
                    steps.append(
                        StepState(name=step.name, status="pending", due=ms(max(due, now)), note=why)
                    )
                    add.append((ms(max(due, now)), b""))
            instance.steps = steps
            # Timers name their step by index: made once the new list is in place.
            add = [
                (due, engine._timer(instance, n))
                for (due, _), n in zip(
                    add, [i for i, s in enumerate(steps) if s.status == "pending"], strict=True
                )
            ]
            dropped = [name for name, s in before.items() if s.status == "pending"]
            gone = f"; steps dropped: {', '.join(dropped)}" if dropped else ""
            instance.events.append(why + gone)
            if not add:
                instance.status = "completed"
            if await engine._cas(rev, instance, remove, add):
                count += 1
                break
    return count


async def cancel_all(engine: ScenarioEngine, name: str, why: str) -> int:
    count = 0
    for key in await _members(engine, name):
        instance = await engine.cancel(name, key, why)
        if instance is not None and instance.status == "cancelled" and instance.reason == why:
            count += 1
    return count


async def apply_scenario_changes(
    redis: Redis,
    engine: ScenarioEngine,
    old: Conf,
    new: Conf,
    conf_hash: str,
) -> dict[str, int]:
    """Re-plan changed scenarios' instances and cancel removed ones'; per scenario, how
    many instances this process changed (0 where another process holds the lock)."""
    changed, removed = changed_scenarios(old, new)
    done: dict[str, int] = {}
    prefix = engine.layout.shards[0].prefix
    by_name = {s.name: s for s in engine.scenarios}
    for name in sorted(changed | removed):
        lock = f"{prefix}:reload:scenario:{name}:{conf_hash}"
        if not await redis.set(lock, "1", nx=True, ex=LOCK_TTL):
            done[name] = 0
            continue
        if name in removed:
            done[name] = await cancel_all(
                engine, name, f"scenario {name} removed by a conf reload (conf {conf_hash})"
            )
        elif name in by_name:
            why = f"re-planned: scenario {name} changed by a conf reload (conf {conf_hash})"
            done[name] = await replan(engine, by_name[name], why)
        log.info("scenario %s: %d running instance(s) updated for the new conf", name, done[name])
    return done
