"""Conf data into typed values: msgspec conversion with conf-friendly types, and every
problem of a table described as ``path: reason`` (collected, never just the first)."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..durations import Duration
from .model import PluginTable, Secret, _Section

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is Duration:
        return Duration.parse(value)
    if type_ is Secret:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret is a non-empty string (use ${ENV_VAR} to read it)")
        return Secret(value)
    raise NotImplementedError


def convert(value: Any, type_: type[Any]) -> Any:
    """Decode conf data into a Struct, with conf-friendly types (durations, secrets)."""
    return msgspec.convert(value, type_, dec_hook=_dec_hook, strict=True)


def describe_validation_error(exc: msgspec.ValidationError, prefix: str) -> str:
    """``Expected `int`, got `str` - at `$.port``` -> ``prefix.port: Expected `int`...``"""
    message = str(exc)
    reason, sep, where = message.rpartition(" - at ")
    if not sep:
        return f"{prefix}: {message}"
    where = where.strip("`")
    suffix = where[1:] if where.startswith("$") else where
    return f"{prefix}{suffix}: {reason}"


def every_problem(value: Any, type_: Any, where: str) -> list[str]:
    """Every reason ``value`` is not a ``type_`` (msgspec stops at the first), each as
    ``path: reason`` in msgspec's words: field by field through structs and lists."""
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct) and isinstance(value, dict):
        fields = {f.encode_name: f for f in msgspec.structs.fields(type_)}
        found = [f"{where}: Object contains unknown field `{k}`" for k in value if k not in fields]
        for name, info in fields.items():
            if name in value:
                found.extend(every_problem(value[name], info.type, f"{where}.{name}"))
            elif info.required:
                found.append(f"{where}: Object missing required field `{name}`")
        return found
    if typing.get_origin(type_) is list and isinstance(value, list):
        (item,) = typing.get_args(type_)
        return [p for i, v in enumerate(value) for p in every_problem(v, item, f"{where}[{i}]")]
    try:
        convert(value, type_)
    except msgspec.ValidationError as exc:
        return [describe_validation_error(exc, where)]
    return []


_FIELD_AT = re.compile(r" - at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def _section(raw: Any, key: str, type_: type[_Section], file: Path, problems: _Problems) -> Any:
    """Decode a core section; each bad field is reported and left at its default."""
    table = dict(raw) if isinstance(raw, dict) else raw
    while True:
        try:
            return convert(table, type_)
        except msgspec.ValidationError as exc:
            problems.items.append(f"{file}: {describe_validation_error(exc, key)}")
            found = _FIELD_AT.search(str(exc)) or _UNKNOWN_FIELD.search(str(exc))
            if not isinstance(table, dict) or found is None or found.group(1) not in table:
                return type_()
            del table[found.group(1)]


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: Path, path: str, reason: str) -> None:
        self.items.append(f"{file}: {path}: {reason}" if path else f"{file}: {reason}")


def _plugin_tables(kind: str, raw: Any, file: Path, problems: _Problems) -> dict[str, PluginTable]:
    out: dict[str, PluginTable] = {}
    if not isinstance(raw, dict):
        problems.add(file, kind, "must be a table of named tables")
        return out
    for name, table in raw.items():
        where = f"{kind}.{name}"
        if not _NAME.match(name):
            problems.add(file, where, "names use letters, digits, '_' and '-' (64 at most)")
            continue
        if not isinstance(table, dict):
            problems.add(file, where, "must be a table")
            continue
        options = dict(table)
        type_name = options.pop("type", None)
        if not isinstance(type_name, str) or not type_name:
            problems.add(file, f"{where}.type", "missing: which plugin type this is")
            continue
        delivery: dict[str, Any] = {}
        if "delivery" in options:  # a confirming source's confirmation job retries too
            raw_delivery = options.pop("delivery")
            if isinstance(raw_delivery, dict):
                delivery = raw_delivery
            else:
                problems.add(file, f"{where}.delivery", "must be a table")
        out[name] = PluginTable(
            name=name, type=type_name, options=options, file=file, delivery=delivery
        )
    return out


def _named(kind: str, raw: Any, type_: type[T], file: Path, problems: _Problems) -> dict[str, T]:
    """``[KIND.NAME]`` tables, each decoded into ``type_``; problems name the field."""
    out: dict[str, T] = {}
    if not isinstance(raw, dict):
        problems.add(file, kind, f"must be a table of named tables: [{kind}.my-name]")
        return out
    for name, table in raw.items():
        where = f"{kind}.{name}"
        if not _NAME.match(name):
            problems.add(file, where, "names use letters, digits, '_' and '-' (64 at most)")
            continue
        try:
            out[name] = convert(table, type_)
        except msgspec.ValidationError as exc:
            found = every_problem(table, type_, where) or [describe_validation_error(exc, where)]
            problems.items.extend(f"{file}: {problem}" for problem in found)
    return out
