"""What scenarios are made of: their compiled conf, the instance documents kept in Redis,
and the compiling itself. The engine that runs them is ``gateway.scenarios``."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import msgspec

from .conditions import Compiled, compile_condition
from .durations import Duration, shift
from .event import Event
from .rules import CompiledAction, Matcher, PlanParts, compile_actions, compile_match

_AT = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(?:([+-])\s*(\S+))?\s*$")
#: Separates scenario name, key and instance id in Redis members and job references.
SEP = "\x1f"


# -- compiled form ----------------------------------------------------------------------


@dataclass(frozen=True)
class At:
    """``data.due_at - 3d``: a date in the state, shifted by ``days`` calendar days in
    the conf's time zone, then by ``offset`` seconds (hours and minutes are exact)."""

    path: tuple[str, ...]
    offset: float
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> At:
        match = _AT.match(text)
        if not match:
            raise ValueError(f"{text!r}: write a date path and an offset, e.g. 'data.due_at - 3d'")
        path, sign, amount = match.groups()
        if not sign:
            return cls(tuple(path.split(".")), 0.0)
        duration, way = Duration.parse(amount), -1 if sign == "-" else 1
        return cls(tuple(path.split(".")), duration.clock * way, duration.days * way)

    def resolve(self, state: Mapping[str, Any], zone: ZoneInfo) -> float | None:
        value: Any = state
        for part in self.path:
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        when = parse_moment(value, zone)
        return None if when is None else shift(when, self.days, self.offset, zone)


def parse_moment(value: Any, zone: ZoneInfo) -> float | None:
    """Epoch seconds of an ISO date-time, or of a date's midnight in ``zone``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, datetime.min.time(), zone)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if len(value) == 10:  # a bare date
            moment = moment.replace(tzinfo=zone)
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


@dataclass(frozen=True)
class CompiledStep:
    name: str
    #: From the trigger; its days (``d``, ``w``) are calendar days in the conf's zone.
    after: Duration | None
    at: At | None
    conditions: tuple[Compiled, ...]
    actions: tuple[CompiledAction, ...]


@dataclass(frozen=True)
class CompiledScenario:
    name: str
    trigger: Matcher
    key: jinja2.Template
    key_source: str
    steps: tuple[CompiledStep, ...]
    cancel_on: tuple[Matcher, ...]
    update_on: tuple[Matcher, ...]
    on_retrigger: str
    past_steps: str
    tombstone_ttl: float


# -- instance documents -----------------------------------------------------------------


class StepState(msgspec.Struct, omit_defaults=True):
    name: str
    status: str  # pending | done | skipped | cancelled
    due: float | None = None
    fired: float | None = None
    note: str | None = None
    deliveries: int = 0


class Instance(msgspec.Struct, omit_defaults=True):
    scenario: str
    key: str
    id: str
    status: str  # active | completed | cancelled
    started: float
    trigger_event: str
    trigger_type: str
    #: The event as last known: the trigger, updated by later events for the key.
    state: dict[str, Any]
    last_occurred: str
    steps: list[StepState]
    updated: float = 0.0
    reason: str | None = None
    #: Events that changed this instance, oldest first: ``type id``.
    events: list[str] = msgspec.field(default_factory=list)


doc_decoder = msgspec.json.Decoder(Instance)
encoder = msgspec.json.Encoder()


class Tombstone(msgspec.Struct):
    why: str
    #: When the cancelling event occurred: triggers that occurred later are not stopped.
    occurred: float
    #: Until when it applies, on the engine's clock.
    until: float


class Timer(msgspec.Struct, array_like=True):
    scenario: str
    key: str
    instance: str
    step: int


def ms(moment: float) -> float:
    """Down to the millisecond: a due time rounded *up* would miss a timer check made at
    exactly that time (the sorted set is scored in whole milliseconds)."""
    return math.floor(moment * 1000) / 1000


def instance_id(scenario: str, key: str, trigger_event: str) -> str:
    """Deterministic: the same trigger for the same key is the same instance."""
    digest = hashlib.blake2b(
        f"{scenario}{SEP}{key}{SEP}{trigger_event}".encode(), digest_size=8
    ).hexdigest()
    return f"scn_{digest}"


def merge_state(state: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Later events refine the state: ``data`` and ``refs`` merge key by key, a customer
    given replaces the known one; envelope fields stay the trigger's."""
    for section in ("data", "refs"):
        incoming = update.get(section)
        if isinstance(incoming, Mapping):
            state.setdefault(section, {}).update(incoming)
    if update.get("customer"):
        state["customer"] = update["customer"]


def state_event(instance: Instance) -> Event:
    """The instance's state as the event its step's templates and channels see."""
    return msgspec.convert(instance.state, Event)


# -- compiling the conf -----------------------------------------------------------------


def compile_scenarios(plan: PlanParts, problems: list[str]) -> list[CompiledScenario]:
    conf = plan.conf
    out = []
    for name, scenario in conf.scenarios.items():
        where = f"{conf.scenario_files[name]}: scenarios.{name}"
        count = len(problems)
        trigger = compile_match(
            scenario.trigger.events, scenario.trigger.when, f"{where}.trigger", plan, problems
        )
        cancels = [
            compile_match(m.events, m.when, f"{where}.cancel_on[{i}]", plan, problems)
            for i, m in enumerate(scenario.cancel_on)
        ]
        updates = [
            compile_match(m.events, m.when, f"{where}.update_on[{i}]", plan, problems)
            for i, m in enumerate(scenario.update_on)
        ]
        try:
            key = plan.templates.from_string(scenario.key)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{where}.key: line {exc.lineno}: {exc.message}")
        steps = []
        if not scenario.steps:
            problems.append(f"{where}.steps: no step")
        names: set[str] = set()
        for i, step in enumerate(scenario.steps):
            at_where = f"{where}.steps[{i}]"
            if step.name in names:
                problems.append(f"{at_where}.name: {step.name!r} is used by an earlier step")
            names.add(step.name)
            at = None
            if (step.after is None) == (step.at is None):
                problems.append(f'{at_where}: give one of after = "24h" or at = "data.due_at - 3d"')
            elif step.at is not None:
                try:
                    at = At.parse(step.at)
                except ValueError as exc:
                    problems.append(f"{at_where}.at: {exc}")
            conditions = []
            for j, text in enumerate(step.when):
                try:
                    conditions.append(compile_condition(text, plan.registry.conditions))
                except ValueError as exc:
                    problems.append(f"{at_where}.when[{j}]: {exc}")
            actions = compile_actions(
                step.actions, at_where, conf, plan, step.window, problems, step.category
            )
            if actions is not None:
                steps.append(
                    CompiledStep(
                        name=step.name,
                        after=step.after,
                        at=at,
                        conditions=tuple(conditions),
                        actions=actions,
                    )
                )
        if len(problems) > count or trigger is None or not scenario.enabled:
            continue
        out.append(
            CompiledScenario(
                name=name,
                trigger=trigger,
                key=key,
                key_source=scenario.key,
                steps=tuple(steps),
                cancel_on=tuple(m for m in cancels if m is not None),
                update_on=tuple(m for m in updates if m is not None),
                on_retrigger=scenario.on_retrigger,
                past_steps=scenario.past_steps,
                tombstone_ttl=float(scenario.tombstone_ttl),
            )
        )
    return out
