"""Turn a loaded conf and the plugin registry into a runnable plan, or every reason it can't run.

This is what ``tocsin check`` runs, and ``tocsin serve`` refuses to start without.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .channel import Channel, ChannelContext
from .conf import Conf, PluginTable, convert, describe_validation_error
from .confirm import ConfirmChannel
from .default_plugins import StandardWebhooksConfig, StandardWebhooksSource
from .errors import ConfError
from .outbound import OutboundPolicy
from .plugins import Registry
from .policy import ChannelPolicy
from .rules import CompiledRule, compile_actions, compile_match
from .scenario_model import CompiledScenario, compile_scenarios
from .source import Source
from .templating import Templates
from .windows import SendingWindow, build_windows

#: The name under which ``POST /v1/events`` appears among sources.
EVENTS_SOURCE = "events"
#: A job is taken over only this long after its channel's send timeout would have fired.
VISIBILITY_MARGIN = 5.0


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


def _compile_rule(name: str, conf: Conf, plan: Plan, problems: list[str]) -> CompiledRule | None:
    rule = conf.rules[name]
    where = f"{conf.rule_files[name]}: rules.{name}"
    matcher = compile_match(rule.events, rule.when, where, plan, problems)
    actions = compile_actions(rule.actions, where, conf, plan, rule.window, problems, rule.category)
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
    plan.scenarios = compile_scenarios(plan, problems)
    return plan, problems


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
