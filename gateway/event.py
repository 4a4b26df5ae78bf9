"""The canonical event: the one shape every source maps to and every rule reads.

Money is always integer minor units plus an ISO-4217 currency (``amount=1250,
currency="EUR"`` is 12.50 EUR); amounts are formatted only in templates.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# Standard Webhooks forbids '.' in message ids: they are joined with '.' when signed.
EVENT_ID_PATTERN = r"^[A-Za-z0-9_:\-]{1,128}$"
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"

EventId = Annotated[str, msgspec.Meta(pattern=EVENT_ID_PATTERN)]
EventType = Annotated[str, msgspec.Meta(pattern=EVENT_TYPE_PATTERN)]


class EventSource(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Where the event came from: the provider and its own name and id for it."""

    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    event_type: str | None = None
    event_id: str | None = None
    livemode: bool = True
    #: The provider's original payload, kept by source plugins for audit and templates.
    payload: dict[str, Any] | None = None
    #: Set by the intake, never by a sender: the source that must confirm this event with
    #: its provider before any rule sees it (``gateway.confirm``). Such an event is routed
    #: to that confirmation alone; what the provider confirms is accepted as new events.
    confirm_by: str | None = None


class Customer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    id: str | None = None
    name: str | None = None
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    phone: Annotated[str, msgspec.Meta(pattern=E164_PATTERN)] | None = None
    locale: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] | None = (
        None
    )
    kind: Literal["b2b", "b2c"] | None = None


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A payment event, as Tocsin routes it."""

    id: EventId
    type: EventType
    occurred_at: datetime
    source: EventSource
    customer: Customer | None = None
    #: Business references: invoice_ref, payment_request_id, subscription_id, ...
    refs: dict[str, str] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_context(self) -> dict[str, Any]:
        """The event as plain data: what conditions and templates see."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


#: The top-level names a rule condition may start its path with.
ENVELOPE_FIELDS: dict[str, type[msgspec.Struct] | None] = {
    "id": None,
    "type": None,
    "occurred_at": None,
    "source": EventSource,
    "customer": Customer,
    "refs": None,
    "data": None,
}

_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


class EventInvalid(ValueError):
    """The body is not a valid canonical event; ``path`` names the (first) offending field
    and ``problems`` every one found, as ``(path, reason)``."""

    def __init__(self, path: str, reason: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.problems: list[tuple[str, str]] = list(problems) or [(path, reason)]

    @classmethod
    def of(cls, problems: Sequence[tuple[str, str]]) -> EventInvalid:
        """One error naming every problem; the first is its ``path`` and ``reason``."""
        path, reason = problems[0]
        return cls(path, reason, problems)


#: What a pattern means, in words: msgspec would print (and truncate) the regex.
_PATTERN_REASONS: dict[str, str] = {
    "$.type": "type must be dotted lower case, e.g. payment.succeeded",
    "$.id": "id must be 1-128 letters, digits, '_', ':' or '-' (no '.'), e.g. evt_123",
    "$.customer.phone": "phone must be E.164, e.g. +33612345678",
    "$.customer.locale": "locale must be a language tag, e.g. fr or fr-FR",
}


def _split_msgspec_error(message: str) -> tuple[str, str]:
    # msgspec says "Expected `int`, got `str` - at `$.data.amount`".
    reason, sep, where = message.rpartition(" - at ")
    if not sep:
        return "$", message
    path = where.strip("`")
    if "matching regex" in reason and path in _PATTERN_REASONS:
        reason = _PATTERN_REASONS[path]
    return path, reason


def _struct_of(annotation: Any) -> type[msgspec.Struct] | None:
    """``Customer`` for ``Customer`` or ``Customer | None``; else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
                return arg
    return None


def _struct_problems(
    raw: dict[str, Any], struct: type[msgspec.Struct], path: str
) -> list[tuple[str, str]]:
    """Every field msgspec would refuse, not only the first it meets: each field is
    decoded on its own, with the same types and so the same rules."""
    fields = msgspec.structs.fields(struct)
    known = {f.encode_name for f in fields}
    problems = [(path, f"Object contains unknown field `{key}`") for key in raw if key not in known]
    for f in fields:
        here = f"{path}.{f.encode_name}"
        if f.encode_name not in raw:
            if f.required:
                problems.append((path, f"Object missing required field `{f.encode_name}`"))
            continue
        value = raw[f.encode_name]
        inner = _struct_of(f.type)
        if inner is not None and isinstance(value, dict):
            problems += _struct_problems(value, inner, here)
            continue
        try:
            msgspec.json.decode(_encoder.encode(value), type=f.type)
        except msgspec.ValidationError as exc:
            where, reason = _split_msgspec_error(str(exc))
            problems.append(_split_msgspec_error(f"{reason} - at `{here}{where[1:]}`"))
    return problems


def _money_problems(data: Any, path: str) -> list[tuple[str, str]]:
    """Amounts are integer minor units; currencies are ISO-4217 codes."""
    problems: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}"
            if (key == "amount" or key.endswith("_amount")) and (
                not isinstance(value, int) or isinstance(value, bool)
            ):
                problems.append((here, "amounts are integers in minor units (1250 = 12.50)"))
            if (key == "currency" or key.endswith("_currency")) and not (
                isinstance(value, str) and len(value) == 3 and value.isascii() and value.isupper()
            ):
                problems.append((here, "currency must be an ISO-4217 code such as EUR"))
            problems += _money_problems(value, here)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            problems += _money_problems(item, f"{path}[{i}]")
    return problems


def decode_event(body: bytes) -> Event:
    """Decode and validate one canonical event, or raise ``EventInvalid`` naming every
    field that is wrong."""
    try:
        event = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        first = _split_msgspec_error(str(exc))
        try:
            raw = msgspec.json.decode(body)  # valid JSON: only its shape was refused
        except (msgspec.DecodeError, RecursionError):
            raw = None
        problems = _struct_problems(raw, Event, "$") if isinstance(raw, dict) else []
        if first not in problems:
            problems.insert(0, first)
        raise EventInvalid.of(problems) from None
    except msgspec.DecodeError as exc:
        raise EventInvalid("$", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise EventInvalid("$", "nested too deeply") from None
    problems = []
    if event.occurred_at.tzinfo is None:
        problems.append(("$.occurred_at", "needs a time zone offset (e.g. Z or +01:00)"))
    problems += _money_problems(event.data, "$.data")
    if problems:
        raise EventInvalid.of(problems)
    return event


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)
