"""Rules as the router runs them: event matchers and actions with their recipients, compiled
from conf. Scenarios compile their triggers and steps with the same pieces.

Compiling reads a few parts of the plan being built (``PlanParts``); the plan module
builds on this one, never the other way round.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .channel import Channel
from .conditions import Compiled, compile_condition
from .conf import Action, Conf
from .delivery import Recipient
from .plugins import Registry
from .policy import ChannelPolicy
from .templating import Templates
from .windows import NO_WINDOW, SendingWindow

#: ``to = ["audience:sales"]`` names a staff group from ``[audiences.sales]``.
AUDIENCE_PREFIX = "audience:"
#: Event types whose glob matches each matcher remembers (types are few; unknown
#: types may be accepted, so the memory is bounded).
GLOB_MEMORY = 1024


class PlanParts(Protocol):
    """What compiling a rule reads of the plan being built."""

    conf: Conf
    registry: Registry
    templates: Templates
    channels: dict[str, Channel[Any]]
    policies: dict[str, ChannelPolicy]
    windows: dict[str, SendingWindow]


@dataclass(frozen=True)
class Matcher:
    """Event types (exact or glob) and conditions: what a rule, trigger or cancel matches."""

    exact: frozenset[str]
    globs: tuple[str, ...]
    conditions: tuple[Compiled, ...]
    #: Glob answers per event type, remembered: the router asks for every event and rule.
    _globbed: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def matches_type(self, event_type: str) -> bool:
        if event_type in self.exact:
            return True
        if not self.globs:
            return False
        known = self._globbed.get(event_type)
        if known is None:
            known = any(fnmatch.fnmatchcase(event_type, g) for g in self.globs)
            if len(self._globbed) < GLOB_MEMORY:
                self._globbed[event_type] = known
        return known

    def matches(self, context: Mapping[str, Any]) -> bool:
        return all(condition(context) for condition in self.conditions)


#: Whom an action is for: ``("customer", None)`` is filled from each event; the others
#: are fixed at start-up (``(key, recipient)``; key goes into the delivery id).
Target = tuple[str, Recipient | None]


@dataclass(frozen=True)
class CompiledAction:
    action: Action
    targets: tuple[Target, ...]
    #: The sending window's name, or ``None`` to send at once.
    window: str | None
    #: The rule's or step's category (``gateway.conf.Category``).
    category: str = "transactional"

    @property
    def channel(self) -> str:
        return self.action.channel

    @property
    def template(self) -> str | None:
        return self.action.template

    @property
    def locale(self) -> str | None:
        return self.action.locale


@dataclass(frozen=True)
class CompiledRule:
    name: str
    matcher: Matcher
    actions: tuple[CompiledAction, ...]

    def matches_type(self, event_type: str) -> bool:
        return self.matcher.matches_type(event_type)

    def matches(self, context: Mapping[str, Any]) -> bool:
        return self.matcher.matches(context)


_glob_chars = frozenset("*?[")


def compile_match(
    events: list[str], when: list[str], where: str, plan: PlanParts, problems: list[str]
) -> Matcher | None:
    """``where`` is ``file: path`` of the table holding ``events`` and ``when``."""
    ok = True
    if not events:
        problems.append(f"{where}.events: lists no event type")
        ok = False
    exact, globs = set(), []
    for i, pattern in enumerate(events):
        if fnmatch.fnmatchcase(pattern, "*[A-Z ]*") or not pattern:
            problems.append(f"{where}.events[{i}]: {pattern!r} is not an event type")
            ok = False
        elif _glob_chars & set(pattern):
            globs.append(pattern)
        else:
            exact.add(pattern)
    compiled = []
    for i, text in enumerate(when):
        try:
            compiled.append(compile_condition(text, plan.registry.conditions))
        except ValueError as exc:
            problems.append(f"{where}.when[{i}]: {exc}")
            ok = False
    return Matcher(frozenset(exact), tuple(globs), tuple(compiled)) if ok else None


def _targets(
    action: Action, channel: Channel[Any], where: str, conf: Conf, problems: list[str]
) -> tuple[Target, ...] | None:
    targets: list[Target] = []
    ok = True
    for i, target in enumerate(action.to):
        if target == "customer":
            targets.append((target, None))
        elif target.startswith(AUDIENCE_PREFIX):
            name = target[len(AUDIENCE_PREFIX) :]
            audience = conf.audiences.get(name)
            if audience is None:
                known = ", ".join(sorted(conf.audiences)) or "none"
                problems.append(f"{where}.to[{i}]: no audience {name!r} (audiences: {known})")
                ok = False
                continue
            field_name = channel.recipient_field
            for n, member in enumerate(audience.members):
                if field_name is not None and getattr(member, field_name) is None:
                    continue  # this member has no address on this channel
                key = f"{target}:{member.email or member.phone or n}"
                targets.append(
                    (
                        key,
                        Recipient(
                            kind="audience",
                            address=getattr(member, field_name) if field_name else None,
                            name=member.name,
                            email=member.email,
                            phone=member.phone,
                            locale=member.locale,
                        ),
                    )
                )
        else:
            targets.append((target, Recipient(kind="address", address=target)))
    return tuple(targets) if ok else None


def compile_actions(
    actions: list[Action],
    where: str,
    conf: Conf,
    plan: PlanParts,
    window: str | None,
    problems: list[str],
    category: str = "transactional",
) -> tuple[CompiledAction, ...] | None:
    """``window``: the rule's or step's own (``"none"`` for none), else each channel's."""
    ok = True
    if not actions:
        problems.append(f"{where}.actions: no action")
        return None
    out = []
    for i, action in enumerate(actions):
        at = f"{where}.actions[{i}]"
        channel = plan.channels.get(action.channel)
        if channel is None:
            if action.channel not in conf.channels:  # else its own error is already reported
                known = ", ".join(sorted(conf.channels)) or "none"
                problems.append(f"{at}.channel: no channel {action.channel!r} (channels: {known})")
            ok = False
            continue
        if channel.needs_recipients and not action.to:
            problems.append(f"{at}.to: channel {action.channel!r} needs recipients")
            ok = False
        if action.template is not None and not (plan.templates.root / action.template).is_dir():
            problems.append(
                f"{at}.template: no folder {action.template!r} in {plan.templates.root}"
            )
            ok = False
        elif channel.needs_template and action.template is None:
            problems.append(f"{at}.template: channel {action.channel!r} needs a template")
            ok = False
        else:
            for problem in channel.check_action(action):
                problems.append(f"{at}: {problem}")
                ok = False
        targets = _targets(action, channel, at, conf, problems)
        policy = plan.policies.get(action.channel)
        chosen = window if window is not None else (policy.window if policy else None)
        if chosen is not None and chosen != NO_WINDOW and chosen not in plan.windows:
            known = ", ".join(sorted(plan.windows))
            problems.append(f"{where}.window: no window {chosen!r} (windows: {known})")
            ok = False
        if targets is None:
            ok = False
            continue
        out.append(
            CompiledAction(action, targets, None if chosen == NO_WINDOW else chosen, category)
        )
    return tuple(out) if ok else None
