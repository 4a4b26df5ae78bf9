"""The core's own plugin: built-in conditions, template filters and the Standard Webhooks source.

Written with ``@hookimpl`` like any third-party plugin, so it doubles as an example.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from .conditions import MISSING, Condition
from .conf import Secret
from .durations import Duration
from .event import Event, decode_event
from .filters import FILTERS
from .markers import hookimpl
from .signing import Verifier
from .source import Source


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _needs_number(operand: Any) -> str | None:
    return None if _number(operand) else f"compares numbers; {operand!r} is not a number"


def _needs_list(operand: Any) -> str | None:
    return None if isinstance(operand, list) else 'needs a JSON list such as ["a", "b"]'


def _needs_string(operand: Any) -> str | None:
    return None if isinstance(operand, str) else "needs a quoted string"


def _needs_regex(operand: Any) -> str | None:
    if not isinstance(operand, str):
        return "needs a quoted regular expression"
    try:
        re.compile(operand)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


def _equals(actual: Any, operand: Any) -> bool:
    # true == 1 in Python; in a rule it must not.
    if isinstance(actual, bool) or isinstance(operand, bool):
        return actual is operand
    if isinstance(actual, list) and isinstance(operand, list):
        return len(actual) == len(operand) and all(map(_equals, actual, operand))
    if isinstance(actual, dict) and isinstance(operand, dict):
        return actual.keys() == operand.keys() and all(
            _equals(actual[k], operand[k]) for k in actual
        )
    return bool(actual == operand)


def _one_of(actual: Any, operand: list[Any]) -> bool:
    # `in` means "== one of them": true is no more 1 in a list than alone.
    return any(_equals(actual, item) for item in operand)


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    # Booleans are ints in Python; never let `true >= 1` match.
    return lambda actual, operand: _number(actual) and test(actual, operand)


BUILTIN_CONDITIONS: tuple[Condition, ...] = (
    Condition("==", _equals, "equals"),
    Condition("!=", lambda a, b: not _equals(a, b), "differs"),
    Condition(">", _ordered(lambda a, b: a > b), "greater than", check_operand=_needs_number),
    Condition(">=", _ordered(lambda a, b: a >= b), "at least", check_operand=_needs_number),
    Condition("<", _ordered(lambda a, b: a < b), "less than", check_operand=_needs_number),
    Condition("<=", _ordered(lambda a, b: a <= b), "at most", check_operand=_needs_number),
    Condition("in", _one_of, "one of a list", check_operand=_needs_list),
    Condition(
        "not in", lambda a, b: not _one_of(a, b), "none of a list", check_operand=_needs_list
    ),
    Condition(
        "glob",
        lambda a, b: isinstance(a, str) and fnmatch.fnmatchcase(a, b),
        "shell-style pattern (FR*)",
        check_operand=_needs_string,
    ),
    Condition(
        "matches",
        lambda a, b: isinstance(a, str) and re.search(b, a) is not None,
        "regular expression search",
        check_operand=_needs_regex,
    ),
    Condition("exists", lambda a, b: True, "the field is present", takes_operand=False),
    Condition(
        "missing",
        lambda a, b: a is MISSING,
        "the field is absent",
        takes_operand=False,
        sees_missing=True,
    ),
)


@hookimpl
def tocsin_register_conditions() -> Sequence[Condition]:
    return BUILTIN_CONDITIONS


_json = msgspec.json.Encoder()


def json(value: Any) -> str:
    """Render a value as a JSON literal (for JSON body templates)."""
    return _json.encode(value).decode()


@hookimpl
def tocsin_register_template_filters() -> dict[str, Callable[..., Any]]:
    # money, date, datetime, time, relative_days, card_mask, iban_mask: gateway/filters.py
    return {"json": json, **FILTERS}


class StandardWebhooksConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    secrets: list[Secret]
    tolerance: Duration = Duration(300)


class StandardWebhooksSource(Source[StandardWebhooksConfig]):
    """Canonical events signed with Standard Webhooks headers (what ``/v1/events`` speaks)."""

    type_name = "standard_webhooks"
    config_type = StandardWebhooksConfig

    def __init__(self, name: str, config: StandardWebhooksConfig) -> None:
        super().__init__(name, config)
        self._verifier = Verifier([s.reveal() for s in config.secrets], config.tolerance)

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        self._verifier.verify(headers, body)

    def parse(self, body: bytes) -> list[Event]:
        return [decode_event(body)]


@hookimpl
def tocsin_register_sources() -> Sequence[type[Source[Any]]]:
    return [StandardWebhooksSource]
