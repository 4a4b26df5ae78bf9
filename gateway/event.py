"""The canonical event: the one shape every source maps to and every rule reads.

Money is always integer minor units plus an ISO-4217 currency (``amount=1250,
currency="EUR"`` is 12.50 EUR); amounts are formatted only in templates.
"""

from __future__ import annotations

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
    """The body is not a valid canonical event; ``path`` names the offending field."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _split_msgspec_error(message: str) -> tuple[str, str]:
    # msgspec says "Expected `int`, got `str` - at `$.data.amount`".
    reason, sep, where = message.rpartition(" - at ")
    if not sep:
        return "$", message
    return where.strip("`"), reason


def _check_money(data: Any, path: str) -> None:
    """Amounts are integer minor units; currencies are ISO-4217 codes."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{path}.{key}"
            if (key == "amount" or key.endswith("_amount")) and (
                not isinstance(value, int) or isinstance(value, bool)
            ):
                raise EventInvalid(here, "amounts are integers in minor units (1250 = 12.50)")
            if (key == "currency" or key.endswith("_currency")) and not (
                isinstance(value, str) and len(value) == 3 and value.isascii() and value.isupper()
            ):
                raise EventInvalid(here, "currency must be an ISO-4217 code such as EUR")
            _check_money(value, here)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            _check_money(item, f"{path}[{i}]")


def decode_event(body: bytes) -> Event:
    """Decode and validate one canonical event, or raise ``EventInvalid``."""
    try:
        event = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise EventInvalid(*_split_msgspec_error(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise EventInvalid("$", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise EventInvalid("$", "nested too deeply") from None
    if event.occurred_at.tzinfo is None:
        raise EventInvalid("$.occurred_at", "needs a time zone offset (e.g. Z or +01:00)")
    _check_money(event.data, "$.data")
    return event


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)
