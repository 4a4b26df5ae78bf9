"""Mapping a provider's events onto the catalog.

Source plugins describe their mapping as data: a ``ProviderMapping`` of ``Route`` rows
(provider event -> canonical type) reading fields through ``FieldMap`` groups of
``Take`` (canonical path <- provider path, with an optional conversion).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .table import TYPES


@dataclass(frozen=True)
class Const:
    """A fixed value, for a ``Take`` that reads nothing from the payload."""

    value: Any


Getter = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
"""A computed source: ``getter(provider_object, envelope)``."""


@dataclass(frozen=True)
class Take:
    """One canonical field, read from the provider's object.

    ``source`` is a dotted path in the object (``"evidence_details.due_by"``, list
    indexes as numbers: ``"items.data.0.price.unit_amount"``), several paths (the first
    present wins), a ``Const``, or a getter ``(object, envelope) -> value``.
    ``convert`` turns the provider's value into the canonical one; a conversion that
    returns ``None`` leaves the field out.
    """

    target: str
    source: str | tuple[str, ...] | Const | Getter
    convert: Callable[[Any], Any] | None = None
    note: str = ""


@dataclass(frozen=True)
class FieldMap:
    """The fields read from one kind of provider object (a charge, an invoice...)."""

    name: str
    takes: tuple[Take, ...]


@dataclass(frozen=True)
class Route:
    """A provider event type, optionally narrowed by a field of its object, to a type.

    ``when = ("status", "warning_*")`` matches when the object's ``status`` matches the
    glob. Rows are tried in order; the first match wins. ``canonical=None`` marks an
    event deliberately left unmapped (it is handled like an unknown one).
    """

    event: str
    canonical: str | None
    fields: FieldMap | None = None
    when: tuple[str, str] | None = None
    extra: tuple[Take, ...] = ()
    note: str = ""


def dig(obj: Any, path: str) -> Any:
    """The value at a dotted path (numbers index lists), or ``None``."""
    for part in path.split("."):
        if isinstance(obj, Mapping):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit():
            index = int(part)
            obj = obj[index] if index < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj


def _put(out: dict[str, Any], target: str, value: Any) -> None:
    parts = target.split(".")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _source_text(take: Take) -> str:
    src = take.source
    if isinstance(src, str):
        text = f"`{src}`"
    elif isinstance(src, tuple):
        text = " or ".join(f"`{s}`" for s in src)
    elif isinstance(src, Const):
        text = f"`{src.value!r}`".replace("'", '"')
    else:
        text = "computed"
    if take.convert is not None:
        text += f" → {take.convert.__name__}"
    if take.note:
        text += f" ({take.note})"
    return text


class ProviderMapping:
    """A provider's routing table: which canonical type and fields each event gives."""

    def __init__(self, provider: str, routes: Sequence[Route]) -> None:
        self.provider = provider
        self.routes = tuple(routes)
        self._by_event: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_event.setdefault(route.event, []).append(route)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(self._by_event)

    def route(self, event: str, obj: Mapping[str, Any]) -> Route | None:
        """The first row for this event whose condition holds (``None``: unmapped)."""
        for route in self._by_event.get(event, ()):
            if route.when is not None:
                path, pattern = route.when
                value = dig(obj, path)
                if not isinstance(value, str) or not fnmatch.fnmatchcase(value, pattern):
                    continue
            return route if route.canonical is not None else None
        return None

    def fields(self, route: Route, obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> Any:
        """``{"data": ..., "refs": ..., "customer": ...}`` read from the object."""
        out: dict[str, Any] = {}
        takes = (*(route.fields.takes if route.fields else ()), *route.extra)
        for take in takes:
            value = self._read(take, obj, envelope)
            if value is not None and take.convert is not None:
                value = take.convert(value)
            if value is not None:
                _put(out, take.target, value)
        return out

    @staticmethod
    def _read(take: Take, obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> Any:
        src = take.source
        if isinstance(src, str):
            return dig(obj, src)
        if isinstance(src, tuple):
            for path in src:
                value = dig(obj, path)
                if value is not None:
                    return value
            return None
        if isinstance(src, Const):
            return src.value
        return src(obj, envelope)

    def problems(self) -> list[str]:
        """Routes to unknown types, or whose fields cannot cover a required field."""
        found = []
        for route in self.routes:
            if route.canonical is None:
                continue
            spec = TYPES.get(route.canonical)
            if spec is None:
                found.append(f"{route.event}: {route.canonical!r} is not in the catalog")
                continue
            takes = (*(route.fields.takes if route.fields else ()), *route.extra)
            targets = {t.target for t in takes}
            prefixes = {t.target.rsplit(".", i)[0] for t in takes for i in range(3)}
            for f in spec.required:
                if f.path not in targets and f.path not in prefixes:
                    found.append(f"{route.event} -> {route.canonical}: nothing maps {f.path}")
        return found

    def markdown(self) -> str:
        """The routing table and each field map, for ``docs/sources.md``."""
        out = ["| provider event | when | canonical type |", "|---|---|---|"]
        for route in self.routes:
            when = f"`{route.when[0]}` matches `{route.when[1]}`" if route.when else ""
            target = f"`{route.canonical}`" if route.canonical else "*not mapped*"
            fields = f" ({route.fields.name} fields)" if route.fields else ""
            note = f" — {route.note}" if route.note else ""
            out.append(f"| `{route.event}` | {when} | {target}{fields}{note} |")
        maps: list[FieldMap] = []
        for route in self.routes:
            if route.fields is not None and route.fields not in maps:
                maps.append(route.fields)
        for fmap in maps:
            out += ["", f"**{fmap.name} fields**", "", "| canonical | from |", "|---|---|"]
            out += [f"| `{t.target}` | {_source_text(t)} |" for t in fmap.takes]
        extras = [(r, t) for r in self.routes for t in r.extra]
        if extras:
            out += ["", "**Per-event additions**", "", "| provider event | canonical | from |"]
            out.append("|---|---|---|")
            out += [f"| `{r.event}` | `{t.target}` | {_source_text(t)} |" for r, t in extras]
        return "\n".join(out)
