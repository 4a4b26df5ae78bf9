"""Checking events at intake against the catalog: a known type missing a required field,
or carrying a catalog field of the wrong type, is refused naming the field's path."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Literal

from ..address import check_address
from ..event import Event, EventInvalid
from .table import TYPES, Kind

UnknownTypes = Literal["accept", "reject"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Final = _Missing()


@functools.cache
def _parts(path: str) -> tuple[str, tuple[str, ...]]:
    head, _, rest = path.partition(".")
    return head, tuple(rest.split(".")) if rest else ()


def _resolve(event: Event, path: str) -> Any:
    """The value at a dotted path of the event, or ``_MISSING``."""
    head, rest = _parts(path)  # split once per path, not once per event
    value: Any = getattr(event, head, _MISSING)
    for part in rest:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif value is not None and hasattr(value, "__struct_fields__"):
            value = getattr(value, part, _MISSING)
        else:
            return _MISSING
        if value is None:
            return _MISSING
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


_CURRENCY = re.compile(r"^[A-Z]{3}$")
_KIND_CHECKS: Final[dict[Kind, tuple[Callable[[Any], bool], str]]] = {
    Kind.STRING: (lambda v: isinstance(v, str), "a string"),
    Kind.INTEGER: (_is_int, "an integer"),
    Kind.AMOUNT: (_is_int, "an integer amount in minor units (1250 = 12.50)"),
    Kind.CURRENCY: (
        lambda v: isinstance(v, str) and _CURRENCY.match(v) is not None,
        "an ISO-4217 code such as EUR",
    ),
    Kind.DATETIME: (_is_datetime, "an RFC 3339 date-time with an offset (2026-11-25T10:15:00Z)"),
    Kind.BOOLEAN: (lambda v: isinstance(v, bool), "true or false"),
    Kind.LIST: (lambda v: isinstance(v, list), "a list"),
    Kind.OBJECT: (lambda v: isinstance(v, dict), "an object"),
}


def check_event(event: Event, unknown_types: UnknownTypes = "accept") -> None:
    """Raise ``EventInvalid`` naming every field that breaks its type's contract."""
    problems: list[tuple[str, str]] = []
    email = event.customer.email if event.customer is not None else None
    if email is not None:
        try:
            check_address(email)
        except ValueError as exc:  # the email channel would refuse it, later and unseen
            problems.append(("$.customer.email", f"not an email address: {exc}"))
    spec = TYPES.get(event.type)
    if spec is None:
        if unknown_types == "reject":
            hint = suggest_type(event.type)
            problems.append(
                (
                    "$.type",
                    f"unknown event type {event.type!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + ": this gateway only takes the catalog's types "
                    '([intake] unknown_types = "reject"; see docs/events.md)',
                )
            )
    else:
        for f in spec.fields:
            value = _resolve(event, f.path)
            if value is _MISSING:
                if f.required:
                    problems.append((f"$.{f.path}", f"required for {event.type} events"))
                continue
            test, expected = _KIND_CHECKS[f.kind]
            if not test(value):
                problems.append((f"$.{f.path}", f"must be {expected} for {event.type} events"))
    if problems:
        raise EventInvalid.of(problems)


def suggest_type(event_type: str) -> str | None:
    """The catalog type an unknown one most likely meant (``payment.succeded``), if any."""
    close = difflib.get_close_matches(event_type, TYPES, n=1, cutoff=0.8)
    return close[0] if close else None
