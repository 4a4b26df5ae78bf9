"""Rendering without sending: ``tocsin render`` and the sample events ``tocsin check`` renders.

``tocsin render TEMPLATE --event FILE`` builds the delivery the router would build for the
event's customer and prints what each channel's ``preview`` returns: exactly the parts
``send`` would send. ``tocsin check`` routes every sample event (``*.json`` in the
``examples/`` folder next to the conf, or ``--samples DIR``) through the rules, and
previews every delivery that uses a template, in the delivery's locale and in every
locale the template folder has; each failure is one ``file: line N: reason`` problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import msgspec

from .channel import Channel
from .conf import Action
from .delivery import Delivery, Recipient, delivery_id, template_context
from .errors import DeliveryError
from .event import Event, EventInvalid, decode_event
from .plan import Plan, relative
from .templating import TemplateFailure

#: Where ``tocsin check`` looks for sample events, relative to the conf file's folder.
#: The rule name a ``tocsin render`` delivery carries (``delivery.rule`` in templates).
RENDER_RULE = "render"


class RenderError(Exception):
    """Nothing could be rendered; ``lines`` say why, one problem each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass
class Preview:
    channel: str
    type_name: str
    template: str
    locale: str | None
    parts: dict[str, str]


@dataclass
class RenderResult:
    """What ``tocsin render`` prints: ``text`` on stdout, ``problems`` on stderr."""

    text: str
    problems: list[str]


@dataclass
class SampleReport:
    folder: Path
    samples: int = 0
    renders: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        if not self.samples:
            return self.notes
        failed = f", {len(self.problems)} failed" if self.problems else ""
        line = (
            f"{self.folder}: {self.samples} sample event(s), "
            f"{self.renders} template render(s){failed}"
        )
        return [line, *self.notes]


# -- events ------------------------------------------------------------------------------


def read_events(
    path: Path, label: str | None = None
) -> tuple[list[tuple[str, Event, bytes]], list[str]]:
    """The canonical events in a file (one object, or a JSON array), and its problems.

    Each event comes with a label (``label``, or ``label[i]`` in an array) and its JSON.
    """
    label = label or relative(path)
    try:
        body = path.read_bytes()
    except OSError as exc:
        return [], [f"{label}: cannot read: {exc.strerror}"]
    if body.lstrip().startswith(b"["):
        try:
            items = msgspec.json.decode(body, type=list[msgspec.Raw])
        except msgspec.DecodeError as exc:
            return [], [f"{label}: $: malformed JSON: {exc}"]
        labelled = [(f"{label}[{i}]", bytes(item)) for i, item in enumerate(items)]
    else:
        labelled = [(label, body)]
    events, problems = [], []
    for where, raw in labelled:
        try:
            events.append((where, decode_event(raw), raw))
        except EventInvalid as exc:
            problems.append(f"{where}: {exc.path}: {exc.reason}")
    return events, problems


def customer_recipient(event: Event) -> Recipient:
    """The event's customer as a recipient, as the router makes it for ``to = ["customer"]``."""
    c = event.customer
    return Recipient(
        kind="customer",
        name=c.name if c else None,
        email=c.email if c else None,
        phone=c.phone if c else None,
        locale=c.locale if c else None,
    )


def make_delivery(
    event: Event, raw: bytes, template: str, channel: str, locale: str | None
) -> Delivery:
    recipient = customer_recipient(event)
    return Delivery(
        id=delivery_id(event.id, RENDER_RULE, 0, "customer"),
        event_id=event.id,
        event_type=event.type,
        rule=RENDER_RULE,
        channel=channel,
        event=msgspec.Raw(raw),
        template=template,
        locale=locale or recipient.locale,
        recipient=recipient,
    )


# -- previews ----------------------------------------------------------------------------


def has_preview(channel: Channel[Any]) -> bool:
    return type(channel).preview is not Channel.preview


def describe_failure(exc: Exception, plan: Plan, show: Callable[[Path], str] = relative) -> str:
    """``templates/receipt/fr/sms.j2: line 3: reason`` for a template, else the reason."""
    if isinstance(exc, TemplateFailure) and exc.template:
        where = show(plan.templates.root / exc.template)
        return f"{where}: line {exc.line}: {exc.detail}" if exc.line else f"{where}: {exc.detail}"
    if isinstance(exc, DeliveryError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


def format_preview(preview: Preview, default_locale: str) -> str:
    locale = preview.locale or f"{default_locale} (default)"
    lines = [
        f"=== {preview.channel} ({preview.type_name}): template {preview.template}, "
        f"locale {locale} ==="
    ]
    for label, text in preview.parts.items():
        lines.append(f"--- {label} ---")
        lines.append(text.removesuffix("\n"))  # the text as is; echo adds one newline
    return "\n".join(lines) + "\n"


def _action_for(channel: Channel[Any], action: Action) -> Action:
    """The customer as recipient, for channels that take recipients (an ERP does not)."""
    return action if channel.needs_recipients else msgspec.structs.replace(action, to=[])


def _channels_for(plan: Plan, template: str, name: str | None) -> tuple[list[str], list[str]]:
    """The channels to preview ``template`` on, and why each other one was left out."""
    action = Action(channel=name or "", template=template, to=["customer"])
    if name is not None:
        channel = plan.channels.get(name)
        if channel is None:
            known = ", ".join(sorted(plan.channels)) or "none"
            raise RenderError([f"no channel {name!r} (channels: {known})"])
        if not has_preview(channel):
            raise RenderError([f"channel {name!r} ({channel.type_name}) has no preview"])
        problems = channel.check_action(_action_for(channel, action))
        if problems:
            why = f"channel {name!r} cannot use template {template!r}"
            raise RenderError([f"{why}: {problem}" for problem in problems])
        return [name], []
    chosen, skipped = [], []
    for cname, channel in plan.channels.items():
        if not has_preview(channel):
            skipped.append(f"{cname} ({channel.type_name}): no preview")
            continue
        problems = channel.check_action(
            _action_for(channel, msgspec.structs.replace(action, channel=cname))
        )
        if problems:
            skipped.append(f"{cname} ({channel.type_name}): {'; '.join(problems)}")
            continue
        chosen.append(cname)
    return chosen, skipped


def render_template(
    plan: Plan,
    template: str,
    event_path: Path,
    *,
    locale: str | None = None,
    channel: str | None = None,
) -> RenderResult:
    """What ``tocsin render`` prints; ``RenderError`` when nothing could be rendered."""
    previews, failures = preview_template(
        plan, template, event_path, locale=locale, channel=channel
    )
    texts = [format_preview(p, plan.templates.default_locale) for p in previews]
    return RenderResult("\n".join(texts), failures)


def preview_template(
    plan: Plan,
    template: str,
    event_path: Path,
    *,
    locale: str | None = None,
    channel: str | None = None,
) -> tuple[list[Preview], list[str]]:
    """Each channel's preview and each failure, as ``tocsin render`` and the console's
    template preview show them."""
    folder = plan.templates.root / template
    if not template or not folder.is_dir():
        raise RenderError([f"no template {template!r}: no folder {relative(folder)}"])
    events, problems = read_events(event_path)
    if problems:
        raise RenderError(problems)
    if len(events) != 1:
        raise RenderError([f"{relative(event_path)}: holds {len(events)} events; give one"])
    _label, event, raw = events[0]
    names, skipped = _channels_for(plan, template, channel)
    if not names:
        reasons = [f"  {line}" for line in skipped] or ["  (the conf has no channel)"]
        raise RenderError([f"no channel can render template {template!r}:", *reasons])
    previews: list[Preview] = []
    failures: list[str] = []
    for name in names:
        instance = plan.channels[name]
        delivery = make_delivery(event, raw, template, name, locale)
        try:
            parts = instance.preview(delivery)
        except Exception as exc:
            failures.append(f"{name} ({instance.type_name}): {describe_failure(exc, plan)}")
            continue
        previews.append(Preview(name, instance.type_name, template, delivery.locale, parts))
    return previews, failures


# -- tocsin check: sample events ---------------------------------------------------------


def _locale_folders(plan: Plan, template: str) -> list[str]:
    folder = plan.templates.root / template
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.j2")))


def _parts(plan: Plan, template: str) -> list[str]:
    folder = plan.templates.root / template
    names = {p.name[: -len(".j2")] for p in (*folder.glob("*.j2"), *folder.glob("*/*.j2"))}
    return sorted(names)


def _render_parts(plan: Plan, delivery: Delivery, event: Event) -> None:
    """For a channel without ``preview``: render every part the template folder has."""
    assert delivery.template is not None
    context = template_context(delivery, event)
    for part in _parts(plan, delivery.template):
        if plan.templates.find(delivery.template, part, delivery.locale) is not None:
            plan.templates.render(delivery.template, part, delivery.locale, context)


def _sample_label(plan: Plan, path: Path, where: str) -> str:
    """``examples/x.json`` (``[i]``): the sample, relative to the conf's folder."""
    try:
        short = str(path.resolve().relative_to(plan.conf.base_dir))
    except ValueError:
        return where
    return short + where[len(str(path)) :]


def render_samples(plan: Plan, folder: Path | None = None) -> SampleReport:
    """Route each sample event and render every templated delivery; report each failure."""
    from .router import plan_deliveries  # noqa: PLC0415 - only when there are samples

    folder = folder if folder is not None else plan.conf.samples_dir
    report = SampleReport(folder=folder)
    templated = [
        (rule.name, i, action)
        for rule in plan.rules
        for i, action in enumerate(rule.actions)
        if action.template is not None
    ] + [
        (f"scenario:{scenario.name}/{step.name}", i, action)
        for scenario in plan.scenarios
        for step in scenario.steps
        for i, action in enumerate(step.actions)
        if action.template is not None
    ]
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        if templated:
            report.notes.append(
                f"note: no sample events in {folder}: templates were not rendered "
                "(add canonical event JSON files there; see docs/templates.md)"
            )
        return report
    reached: set[tuple[str, str, str]] = set()
    problems: dict[str, None] = {}  # ordered, without duplicates
    # Files that do not compile are already reported (once) by the plan's checks.
    broken = {name for name in plan.templates.all_files() if not _compiles(plan, name)}
    for path in files:
        events, bad = read_events(path, str(path))
        problems.update(dict.fromkeys(bad))
        for where, event, raw in events:
            report.samples += 1
            sample = _sample_label(plan, path, where)
            routed = plan_deliveries(plan.rules, event, raw) + _scenario_deliveries(
                plan, event, raw
            )
            for delivery in routed:
                if delivery.template is None:
                    continue
                reached.add((delivery.rule, delivery.channel, delivery.template))
                channel = plan.channels[delivery.channel]
                for locale in _locales(plan, delivery):
                    report.renders += 1
                    attempt = msgspec.structs.replace(delivery, locale=locale)
                    problem = _render_one(plan, channel, attempt, event, sample, broken)
                    if problem is not None:
                        problems[problem] = None
    report.problems = list(problems)
    for rule, i, action in templated:
        if (rule, action.channel, action.template or "") not in reached:
            where = (
                f"scenarios.{rule[len('scenario:') :].replace('/', ' step ')}"
                if rule.startswith("scenario:")
                else f"rules.{rule}"
            )
            report.notes.append(
                f"note: {where}.actions[{i}]: template {action.template!r} not rendered: "
                "no sample event reaches it"
            )
    return report


def _scenario_deliveries(plan: Plan, event: Event, raw: bytes) -> list[Delivery]:
    """Every step of every scenario this sample would start, rendered with the sample
    as the scenario's state (what a step sees when nothing updated it)."""
    from .router import action_deliveries  # noqa: PLC0415

    out: list[Delivery] = []
    context = event.to_context()
    for scenario in plan.scenarios:
        if not (scenario.trigger.matches_type(event.type) and scenario.trigger.matches(context)):
            continue
        for n, step in enumerate(scenario.steps):
            rule = f"scenario:{scenario.name}/{step.name}"
            out += action_deliveries(step.actions, event, raw, rule, f"{event.id}:{n}")
    return out


def _locales(plan: Plan, delivery: Delivery) -> list[str | None]:
    """The delivery's own locale, then every other locale the template folder has."""
    assert delivery.template is not None
    others = [loc for loc in _locale_folders(plan, delivery.template) if loc != delivery.locale]
    return [delivery.locale, *others]


def _compiles(plan: Plan, name: str) -> bool:
    try:
        plan.templates.env.get_template(name)
    except jinja2.TemplateError:
        return False
    return True


def _render_one(
    plan: Plan,
    channel: Channel[Any],
    delivery: Delivery,
    event: Event,
    sample: str,
    broken: set[str],
) -> str | None:
    """Preview one delivery (or render its parts); the problem, if any."""
    shown = delivery.locale or f"{plan.templates.default_locale} (default)"
    where = f"sample {sample}, rules.{delivery.rule}, channel {delivery.channel}, locale {shown}"
    try:
        if has_preview(channel):
            try:
                channel.preview(delivery)
            except NotImplementedError:
                _render_parts(plan, delivery, event)
        else:
            _render_parts(plan, delivery, event)
    except TemplateFailure as exc:
        if exc.template in broken:
            return None
        return f"{describe_failure(exc, plan, str)} ({where})"
    except Exception as exc:
        return f"{plan.conf.base_dir / sample}: {describe_failure(exc, plan, str)} ({where})"
    return None
