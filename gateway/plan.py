"""Turn a loaded conf and the plugin registry into a runnable plan, or every reason it can't run.

This is what ``tocsin check`` runs, and ``tocsin serve`` refuses to start without.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .channel import Channel, ChannelContext
from .conditions import Compiled, compile_condition
from .conf import Action, Conf, PluginTable, convert, describe_validation_error
from .default_plugins import StandardWebhooksConfig, StandardWebhooksSource
from .errors import ConfError
from .plugins import Registry
from .source import Source
from .templating import Templates

#: The name under which ``POST /v1/events`` appears among sources.
EVENTS_SOURCE = "events"


@dataclass(frozen=True)
class CompiledRule:
    name: str
    exact: frozenset[str]
    globs: tuple[str, ...]
    conditions: tuple[Compiled, ...]
    actions: tuple[Action, ...]

    def matches_type(self, event_type: str) -> bool:
        return event_type in self.exact or any(
            fnmatch.fnmatchcase(event_type, g) for g in self.globs
        )

    def matches(self, context: Mapping[str, Any]) -> bool:
        return all(condition(context) for condition in self.conditions)


@dataclass
class Plan:
    conf: Conf
    registry: Registry
    templates: Templates
    channels: dict[str, Channel[Any]] = field(default_factory=dict)
    sources: dict[str, Source[Any]] = field(default_factory=dict)
    rules: list[CompiledRule] = field(default_factory=list)


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


def _compile_rule(name: str, conf: Conf, plan: Plan, problems: list[str]) -> CompiledRule | None:
    rule = conf.rules[name]
    file = conf.rule_files[name]
    where = f"rules.{name}"
    ok = True
    if not rule.events:
        problems.append(f"{file}: {where}.events: lists no event type")
        ok = False
    exact, globs = set(), []
    for i, pattern in enumerate(rule.events):
        if fnmatch.fnmatchcase(pattern, "*[A-Z ]*") or not pattern:
            problems.append(f"{file}: {where}.events[{i}]: {pattern!r} is not an event type")
            ok = False
        elif _glob_chars & set(pattern):
            globs.append(pattern)
        else:
            exact.add(pattern)
    compiled = []
    for i, text in enumerate(rule.when):
        try:
            compiled.append(compile_condition(text, plan.registry.conditions))
        except ValueError as exc:
            problems.append(f"{file}: {where}.when[{i}]: {exc}")
            ok = False
    if not rule.actions:
        problems.append(f"{file}: {where}.actions: no action")
        ok = False
    for i, action in enumerate(rule.actions):
        at = f"{file}: {where}.actions[{i}]"
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
    if not ok:
        return None
    return CompiledRule(name, frozenset(exact), tuple(globs), tuple(compiled), tuple(rule.actions))


def build_plan(conf: Conf, registry: Registry) -> Plan:
    """Validate everything a conf refers to; ``ConfError`` lists every problem at once."""
    problems: list[str] = []
    templates = Templates(conf.templates_dir, conf.gateway.default_locale, registry.filters)
    plan = Plan(conf=conf, registry=registry, templates=templates)
    if not conf.templates_dir.is_dir() and conf.gateway.templates != "templates":
        problems.append(f"{conf.path}: gateway.templates: no folder {conf.templates_dir}")
    problems.extend(templates.compile_all())

    context = ChannelContext(
        templates=templates,
        data_dir=conf.data_dir,
        default_locale=conf.gateway.default_locale,
    )
    for name, table in conf.channels.items():
        found = _plugin_instance(table, registry.channels, "channels", problems)
        if found is not None:
            cls, config = found
            try:
                plan.channels[name] = cls(name, config, context)
            except ValueError as exc:
                problems.append(f"{table.file}: channels.{name}: {exc}")

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
                plan.sources[name] = cls(name, config)
            except ValueError as exc:
                problems.append(f"{table.file}: sources.{name}: {exc}")

    for name in conf.rules:
        compiled = _compile_rule(name, conf, plan, problems)
        if compiled is not None and conf.rules[name].enabled:
            plan.rules.append(compiled)
    if problems:
        raise ConfError(problems)
    return plan


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
