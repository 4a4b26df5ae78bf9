"""``[watch]``: what the gateway checks about itself (docs/operations.md, "Watch").

```toml
[watch]
every = "30s"                 # how often one process evaluates

[watch.centralpay-quiet]      # a watch: its name is the alert's and the gauge's label
kind = "activity"             # activity | queue_age | dead_letters | endpoint_disabled
provider = "centralpay"
at_least = 1
per = "1h"
during = "office"             # a [windows.NAME]; unset: always
```

This module depends on nothing of the conf module (which imports it): it decodes the
table itself and returns (path, reason) pairs that ``gateway.conf`` files under its file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from ..durations import Duration

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
#: Conf names cannot hold a dot; a source's confirmation runs on ``source.NAME``.
CONFIRM_PREFIX = "source."


class _Watch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    description: str = ""


class ActivityWatch(_Watch, tag="activity", kw_only=True):
    """Breached when fewer than ``at_least`` events from ``provider`` reached the rules in
    the last ``per``, counted only while ``during`` was open for the whole of it."""

    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    at_least: Annotated[int, msgspec.Meta(ge=1)] = 1
    per: Duration
    during: str | None = None


class QueueAgeWatch(_Watch, tag="queue_age", kw_only=True):
    """Breached while a channel's oldest due, unsent job has waited longer than ``max_age``."""

    #: Unset: every channel.
    channel: str | None = None
    max_age: Duration


class DeadLettersWatch(_Watch, tag="dead_letters", kw_only=True):
    """Breached while more than ``more_than`` deliveries were dead-lettered in the last ``per``."""

    channel: str | None = None
    more_than: Annotated[int, msgspec.Meta(ge=0)] = 0
    per: Duration


class EndpointWatch(_Watch, tag="endpoint_disabled", kw_only=True):
    """Breached while a channel's endpoint is disabled."""

    channel: str | None = None


WatchRule = ActivityWatch | QueueAgeWatch | DeadLettersWatch | EndpointWatch
KINDS: dict[str, type[_Watch]] = {
    "activity": ActivityWatch,
    "queue_age": QueueAgeWatch,
    "dead_letters": DeadLettersWatch,
    "endpoint_disabled": EndpointWatch,
}


class WatchSection(msgspec.Struct, kw_only=True):
    #: How often the evaluating process checks (one process: docs/operations.md).
    every: Duration = Duration(30)
    watches: dict[str, WatchRule] = msgspec.field(default_factory=dict)

    def channels(self) -> set[str | None]:
        return {w.channel for w in self.watches.values() if not isinstance(w, ActivityWatch)}


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is Duration:
        return Duration.parse(value)
    raise NotImplementedError


def _reason(exc: msgspec.ValidationError, where: str) -> tuple[str, str]:
    message = str(exc)
    reason, sep, at = message.rpartition(" - at ")
    if not sep:
        return where, message
    suffix = at.strip("`")[1:]
    return f"{where}{suffix}", reason


def read_watch(raw: Any) -> tuple[WatchSection, list[tuple[str, str]]]:
    """The ``[watch]`` table and every problem in it, as (dotted path, reason). A watch
    with a problem is left out; the others still run."""
    section = WatchSection()
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        return section, [("watch", "must be a table: [watch] and [watch.NAME] tables")]
    for key, value in raw.items():
        where = f"watch.{key}"
        if key == "every":
            try:
                every = Duration.parse(value)
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
            if every <= 0:
                problems.append((where, "must be a positive duration"))
            else:
                section.every = every
            continue
        if not isinstance(value, dict):
            problems.append(
                (where, "unknown setting (known: every); a watch is a [watch.NAME] table")
            )
            continue
        if not _NAME.match(key):
            problems.append((where, "names use letters, digits, '_' and '-' (64 at most)"))
            continue
        found = _one_watch(value, where)
        if isinstance(found, list):
            problems.extend(found)
        else:
            section.watches[key] = found
    return section, problems


def _one_watch(table: dict[str, Any], where: str) -> WatchRule | list[tuple[str, str]]:
    kind = table.get("kind")
    if kind not in KINDS:
        return [(f"{where}.kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")]
    type_ = KINDS[kind]
    rest = {k: v for k, v in table.items() if k != "kind"}
    # Field by field, so that one run lists every mistake of a watch.
    fields = {f.encode_name: f for f in msgspec.structs.fields(type_)}
    problems = [
        (where, f"unknown field `{k}` for kind {kind!r} (known: {', '.join(fields)})")
        for k in rest
        if k not in fields
    ]
    problems += [
        (where, f"missing required field `{name}`")
        for name, f in fields.items()
        if f.required and name not in rest
    ]
    for name, value in rest.items():
        if name not in fields:
            continue
        try:
            msgspec.convert(value, fields[name].type, dec_hook=_dec_hook, strict=True)
        except msgspec.ValidationError as exc:
            problems.append(_reason(exc, f"{where}.{name}"))
    if problems:
        return problems
    rule: WatchRule = msgspec.convert(table, WatchRule, dec_hook=_dec_hook, strict=True)
    for field_name in ("per", "max_age"):
        if getattr(rule, field_name, 1) <= 0:
            return [(f"{where}.{field_name}", "must be a positive duration")]
    return rule


def watch_references(
    section: WatchSection, channels: Iterable[str], sources: Iterable[str], windows: Iterable[str]
) -> list[tuple[str, str]]:
    """Channels and windows a watch names that the conf lacks."""
    known_channels = {*channels, *(CONFIRM_PREFIX + s for s in sources)}
    known_windows = set(windows)
    problems = []
    for name, rule in section.watches.items():
        if isinstance(rule, ActivityWatch):
            if rule.during is not None and rule.during not in known_windows:
                listed = ", ".join(sorted(known_windows))
                problems.append(
                    (f"watch.{name}.during", f"no window {rule.during!r} (windows: {listed})")
                )
        elif rule.channel is not None and rule.channel not in known_channels:
            listed = ", ".join(sorted(known_channels)) or "none"
            problems.append(
                (f"watch.{name}.channel", f"no channel {rule.channel!r} (channels: {listed})")
            )
    return problems
