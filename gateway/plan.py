"""Turn a loaded conf and the plugin registry into a runnable plan, or every reason it can't run.

This is what ``tocsin check`` runs, and ``tocsin serve`` refuses to start without.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .channel import Channel, ChannelContext
from .conditions import Compiled, compile_condition
from .conf import Action, Conf, PluginTable, convert, describe_validation_error
from .confirm import ConfirmChannel
from .default_plugins import StandardWebhooksConfig, StandardWebhooksSource
from .delivery import Recipient
from .errors import ConfError
from .outbound import OutboundPolicy
from .plugins import Registry
from .policy import ChannelPolicy
from .source import Source
from .templating import Templates

if TYPE_CHECKING:
    from .scenarios import CompiledScenario
from .windows import NO_WINDOW, SendingWindow, build_windows

#: ``to = ["audience:sales"]`` names a staff group from ``[audiences.sales]``.
AUDIENCE_PREFIX = "audience:"
#: The name under which ``POST /v1/events`` appears among sources.
EVENTS_SOURCE = "events"
#: Event types whose glob matches each matcher remembers (types are few; unknown
#: types may be accepted, so the memory is bounded).
GLOB_MEMORY = 1024
#: A job is taken over only this long after its channel's send timeout would have fired.
VISIBILITY_MARGIN = 5.0


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


@dataclass
class Plan:
    conf: Conf
    registry: Registry
    templates: Templates
    channels: dict[str, Channel[Any]] = field(default_factory=dict)
    #: Per channel: ``[channels.NAME.delivery]``.
    policies: dict[str, ChannelPolicy] = field(default_factory=dict)
    sources: dict[str, Source[Any]] = field(default_factory=dict)
    rules: list[CompiledRule] = field(default_factory=list)
    windows: dict[str, SendingWindow] = field(default_factory=dict)
    scenarios: list[CompiledScenario] = field(default_factory=list)

    def visibility_timeout(self, channel: str) -> float:
        """How long a job of this channel may stay read but unsettled before a takeover."""
        configured = self.conf.worker.visibility_timeout
        if configured is not None:
            return float(configured)
        return self.channels[channel].send_timeout + VISIBILITY_MARGIN


def _plugin_instance(
    table: PluginTable,
    classes: Mapping[str, type[Channel[Any]]] | Mapping[str, type[Source[Any]]],
    kind: str,
    problems: list[str],
) -> tuple[Any, Any] | None:
    where = f"{kind}.{table.name}"
    cls = classes.get(table.type)
    if cls is None:
        known = ", ".join(sorted(classes)) or "none loaded"
        problems.append(
            f"{table.file}: {where}.type: unknown {kind[:-1]} type {table.type!r} "
            f"(known: {known}; see `tocsin plugins`)"
        )
        return None
    try:
        config = convert(table.options, cls.config_type)
    except msgspec.ValidationError as exc:
        problems.append(f"{table.file}: {describe_validation_error(exc, where)}")
        return None
    return cls, config


_glob_chars = frozenset("*?[")


def compile_match(
    events: list[str], when: list[str], where: str, plan: Plan, problems: list[str]
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
    plan: Plan,
    window: str | None,
    problems: list[str],
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
        out.append(CompiledAction(action, targets, None if chosen == NO_WINDOW else chosen))
    return tuple(out) if ok else None


def _compile_rule(name: str, conf: Conf, plan: Plan, problems: list[str]) -> CompiledRule | None:
    rule = conf.rules[name]
    where = f"{conf.rule_files[name]}: rules.{name}"
    matcher = compile_match(rule.events, rule.when, where, plan, problems)
    actions = compile_actions(rule.actions, where, conf, plan, rule.window, problems)
    if matcher is None or actions is None:
        return None
    return CompiledRule(name, matcher, actions)


def _check_visibility(conf: Conf, plan: Plan, problems: list[str]) -> None:
    visibility = conf.worker.visibility_timeout
    for name, channel in plan.channels.items():
        needed = channel.send_timeout + VISIBILITY_MARGIN
        if visibility is not None and float(visibility) < needed:
            problems.append(
                f"{conf.path}: worker.visibility_timeout: {float(visibility):g}s would let a "
                f"second worker take over jobs of channel {name!r} while the first may still be "
                f"sending (send timeout {channel.send_timeout:g}s + {VISIBILITY_MARGIN:g}s "
                f"margin): raise it to at least {needed:g}s or lower the channel's timeout"
            )


def build_plan(conf: Conf, registry: Registry) -> Plan:
    """Validate everything a conf refers to; ``ConfError`` lists every problem at once."""
    plan, problems = check_plan(conf, registry)
    if problems:
        raise ConfError(problems)
    return plan


def _build_sources(
    conf: Conf, registry: Registry, plan: Plan, context: ChannelContext, problems: list[str]
) -> None:
    """``/v1/events`` and the ``[sources.NAME]`` tables; a source that confirms its events
    with the provider brings its confirmation channel (``gateway.confirm``)."""
    if conf.intake.secrets:
        try:
            plan.sources[EVENTS_SOURCE] = StandardWebhooksSource(
                EVENTS_SOURCE,
                StandardWebhooksConfig(
                    secrets=conf.intake.secrets, tolerance=conf.intake.tolerance
                ),
            )
        except ValueError as exc:
            problems.append(f"{conf.path}: intake.secrets: {exc}")
    else:
        problems.append(
            f"{conf.path}: intake.secrets: no secret: POST /v1/events would accept anything "
            "(generate one with `tocsin secret`)"
        )
    for name, table in conf.sources.items():
        if name == EVENTS_SOURCE:
            problems.append(f"{table.file}: sources.{name}: {name!r} is reserved for /v1/events")
            continue
        found = _plugin_instance(table, registry.sources, "sources", problems)
        if found is not None:
            cls, config = found
            try:
                source = plan.sources[name] = cls(name, config)
            except ValueError as exc:
                problems.append(f"{table.file}: sources.{name}: {exc}")
                continue
            if source.confirms:
                confirm = ConfirmChannel(source, context, conf.intake.unknown_types)
                plan.channels[confirm.name] = confirm
                try:
                    plan.policies[confirm.name] = convert(table.delivery, ChannelPolicy)
                except msgspec.ValidationError as exc:
                    where = f"sources.{name}.delivery"
                    problems.append(f"{table.file}: {describe_validation_error(exc, where)}")
            elif table.delivery:
                problems.append(
                    f"{table.file}: sources.{name}.delivery: only a source that confirms its "
                    "events with the provider retries anything"
                )


def check_plan(conf: Conf, registry: Registry) -> tuple[Plan, list[str]]:
    """The plan as far as it can be built (what is wrong left out) and every problem found.

    ``tocsin check`` goes on with the partial plan (rendering sample events) so that one
    run reports everything.
    """
    problems: list[str] = []
    templates = Templates(
        conf.templates_dir,
        conf.gateway.default_locale,
        registry.filters,
        default_timezone=conf.gateway.timezone,
        brand=conf.brand,
    )
    plan = Plan(conf=conf, registry=registry, templates=templates)
    if not conf.templates_dir.is_dir() and conf.gateway.templates != "templates":
        problems.append(f"{conf.path}: gateway.templates: no folder {conf.templates_dir}")
    problems.extend(templates.compile_all())

    try:
        outbound = OutboundPolicy(conf.outbound.allow)
    except ValueError as exc:
        problems.append(f"{conf.path}: outbound.allow: {exc}")
        outbound = OutboundPolicy()
    context = ChannelContext(
        templates=templates,
        data_dir=conf.data_dir,
        default_locale=conf.gateway.default_locale,
        outbound=outbound,
    )
    plan.windows, window_problems = build_windows(conf.windows)
    problems.extend(f"{conf.path}: {problem}" for problem in window_problems)
    for name, table in conf.channels.items():
        try:
            plan.policies[name] = convert(table.delivery, ChannelPolicy)
        except msgspec.ValidationError as exc:
            problems.append(
                f"{table.file}: {describe_validation_error(exc, f'channels.{name}.delivery')}"
            )
        found = _plugin_instance(table, registry.channels, "channels", problems)
        if found is not None:
            cls, config = found
            try:
                plan.channels[name] = cls(name, config, context)
            except ValueError as exc:
                problems.append(f"{table.file}: channels.{name}: {exc}")

    _build_sources(conf, registry, plan, context, problems)
    _check_visibility(conf, plan, problems)

    for name in conf.rules:
        compiled = _compile_rule(name, conf, plan, problems)
        if compiled is not None and conf.rules[name].enabled:
            plan.rules.append(compiled)
    from .scenarios import compile_scenarios  # noqa: PLC0415 - scenarios build on this module

    plan.scenarios = compile_scenarios(plan, problems)
    return plan, problems


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
