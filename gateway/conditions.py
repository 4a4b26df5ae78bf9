"""Rule conditions: ``'<dotted.path> <operator> <JSON value>'`` or a bare path (truthy).

Operators come from condition plugins (``tocsin_register_conditions``); the built-in
ones are in ``default_plugins``. A path that does not resolve makes the condition false,
whatever the operator, except ``missing``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .event import ENVELOPE_FIELDS


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Condition:
    """An operator usable in ``when = [...]``.

    ``test(actual, operand)`` decides; ``actual`` is ``MISSING`` when the path does not
    resolve and the condition has ``sees_missing`` set (otherwise it is simply false).
    ``check_operand`` returns a reason when an operand is unusable, at conf-check time.
    """

    operator: str
    test: Callable[[Any, Any], bool]
    description: str
    takes_operand: bool = True
    sees_missing: bool = False
    check_operand: Callable[[Any], str | None] | None = None


_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*")


@dataclass(frozen=True)
class Compiled:
    source: str
    path: tuple[str, ...]
    condition: Condition | None
    operand: Any

    def __call__(self, event: Mapping[str, Any]) -> bool:
        value: Any = event
        for part in self.path:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                value = MISSING
                break
        if self.condition is None:
            return value is not MISSING and bool(value)
        if value is MISSING and not self.condition.sees_missing:
            return False
        try:
            return self.condition.test(value, self.operand)
        except TypeError:
            # Comparing a string with a number is "does not match", not a crash.
            return False


def _check_path(path: tuple[str, ...]) -> str | None:
    root = path[0]
    if root not in ENVELOPE_FIELDS:
        return f"unknown field {root!r} (fields: {', '.join(ENVELOPE_FIELDS)})"
    struct = ENVELOPE_FIELDS[root]
    if struct is not None:
        if len(path) < 2:
            return None
        fields = struct.__struct_fields__
        if path[1] not in fields:
            return f"unknown field {root}.{path[1]} (fields: {', '.join(fields)})"
    return None


def compile_condition(source: str, conditions: Mapping[str, Condition]) -> Compiled:
    """Parse one condition, or raise ``ValueError`` with an operator-friendly reason."""
    text = source.strip()
    match = _PATH.match(text)
    if not match:
        raise ValueError("a condition starts with a field path such as data.amount")
    path = tuple(match.group(0).split("."))
    problem = _check_path(path)
    if problem:
        raise ValueError(problem)
    rest = text[match.end() :].strip()
    if not rest:
        return Compiled(source, path, None, None)
    # Longest operator first, so ">=" wins over ">" and "not in" over "in".
    for operator in sorted(conditions, key=len, reverse=True):
        if rest.startswith(operator) and (
            not operator[-1].isalpha() or rest[len(operator) :][:1] in ("", " ")
        ):
            condition = conditions[operator]
            operand_text = rest[len(operator) :].strip()
            break
    else:
        known = ", ".join(sorted(conditions))
        raise ValueError(f"unknown operator in {rest!r} (operators: {known})")
    operand: Any = None
    if condition.takes_operand:
        if not operand_text:
            raise ValueError(f"{operator!r} needs a value after it")
        try:
            operand = msgspec.json.decode(operand_text)
        except msgspec.DecodeError:
            raise ValueError(
                f'{operand_text!r} is not a JSON value (quote strings: "b2b")'
            ) from None
        if condition.check_operand is not None:
            reason = condition.check_operand(operand)
            if reason:
                raise ValueError(reason)
    elif operand_text:
        raise ValueError(f"{operator!r} takes no value")
    return Compiled(source, path, condition, operand)
