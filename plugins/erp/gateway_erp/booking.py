"""What an event asks the ERP to do: which invoice, how much, when, under which reference.

Everything is read once from the event, through the paths of ``[channels.NAME.fields]``,
and checked before any request leaves: an event that cannot be booked (no invoice
reference, a float amount, no payment id) fails for good without touching the ERP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from gateway import PermanentError

from .config import EventFields
from .money import from_minor

_CURRENCY = re.compile(r"^[A-Z]{3}$")
#: Longer references are refused: ERPs truncate them, and a truncated reference would
#: not find the payment again on a redelivery.
MAX_REFERENCE = 140
MAX_INVOICE_REF = 140

_MISSING: Any = object()


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """The value at ``data.match.invoice_ref``, or ``_MISSING``."""
    value: Any = context
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _first(context: Mapping[str, Any], paths: Sequence[str]) -> tuple[str, Any] | None:
    """The first path holding a value that is not null or empty, with that value."""
    for path in paths:
        value = lookup(context, path)
        if value is _MISSING or value is None or value == "":
            continue
        return path, value
    return None


def _looked(paths: Sequence[str]) -> str:
    return ", ".join(paths)


def _text(context: Mapping[str, Any], paths: Sequence[str], what: str, limit: int) -> str:
    found = _first(context, paths)
    if found is None:
        raise PermanentError(f"no {what} in the event (looked at {_looked(paths)})")
    path, value = found
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PermanentError(f"{path}: the {what} must be a string, not {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > limit or any(ord(c) < 32 for c in text):
        raise PermanentError(
            f"{path}: the {what} must be 1-{limit} printable characters, got {text[:40]!r}"
        )
    return text


def invoice_ref(context: Mapping[str, Any], fields: EventFields) -> str:
    """The invoice the event is about, or ``PermanentError``."""
    return _text(context, fields.invoice_ref, "invoice reference", MAX_INVOICE_REF)


def _when(value: Any) -> datetime | date | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class Booking:
    """One payment to register on one invoice."""

    invoice_ref: str
    #: The ERP payment's reference: the provider's id for the money movement (prefixed).
    reference: str
    #: Integer minor units, as the event says, and the same in major units.
    minor: int
    amount: Decimal
    currency: str
    paid_on: date
    #: Epoch seconds (Dolibarr's ``datepaye``): noon of ``paid_on`` in the ERP's time zone.
    paid_ts: int
    #: Free text for the payment's comment: provider, event type and id.
    memo: str

    def details(self) -> dict[str, Any]:
        """For ``erp.sync_failed``: money stays in minor units, like every event's."""
        return {
            "invoice_ref": self.invoice_ref,
            "payment_reference": self.reference,
            "amount": self.minor,
            "currency": self.currency,
            "amount_decimal": str(self.amount),
            "paid_on": self.paid_on.isoformat(),
        }


def booking(
    context: Mapping[str, Any], fields: EventFields, zone: ZoneInfo, reference_prefix: str = ""
) -> Booking:
    """The booking an event asks for, or ``PermanentError`` naming what is wrong with it."""
    ref = invoice_ref(context, fields)
    reference = reference_prefix + _text(
        context, fields.reference, "payment id (the ERP payment's reference)", MAX_REFERENCE
    )
    if len(reference) > MAX_REFERENCE:
        raise PermanentError(f"payment reference {reference[:40]!r}… is over {MAX_REFERENCE}")

    found = _first(context, fields.amount)
    if found is None:
        raise PermanentError(f"no amount in the event (looked at {_looked(fields.amount)})")
    amount_path, minor = found
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise PermanentError(
            f"{amount_path}: amounts are integers in minor units (1250 = 12.50), "
            f"got {type(minor).__name__}"
        )
    if minor <= 0:
        raise PermanentError(f"{amount_path}: {minor} is not a positive amount: nothing to book")

    found = _first(context, fields.currency)
    if found is None:
        raise PermanentError(f"no currency in the event (looked at {_looked(fields.currency)})")
    currency_path, currency = found
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise PermanentError(f"{currency_path}: {currency!r} is not an ISO 4217 code such as EUR")

    when: datetime | date | None = None
    for path in fields.paid_at:
        when = _when(lookup(context, path))
        if when is not None:
            break
    if when is None:
        raise PermanentError(
            f"no payment date with a time zone in the event (looked at {_looked(fields.paid_at)})"
        )
    paid_on = when.astimezone(zone).date() if isinstance(when, datetime) else when
    paid_ts = int(datetime.combine(paid_on, time(12), zone).astimezone(UTC).timestamp())

    source = context.get("source") or {}
    memo = f"{source.get('provider', '?')} {reference} ({context.get('type')} {context.get('id')})"
    return Booking(
        invoice_ref=ref,
        reference=reference,
        minor=minor,
        amount=from_minor(minor, currency),
        currency=currency,
        paid_on=paid_on,
        paid_ts=paid_ts,
        memo=memo,
    )


def optional(context: Mapping[str, Any], fields: EventFields) -> dict[str, Any]:
    """What a ``call`` template sees as ``erp``: each value, or ``None`` when absent."""
    values: dict[str, Any] = {}
    for name in ("invoice_ref", "reference", "currency"):
        found = _first(context, getattr(fields, name))
        values[name] = str(found[1]) if found is not None else None
    found = _first(context, fields.amount)
    minor = found[1] if found is not None else None
    currency = values["currency"]
    if isinstance(minor, int) and not isinstance(minor, bool) and currency:
        values["amount"] = str(from_minor(minor, currency))
        values["amount_minor"] = minor
    else:
        values["amount"] = values["amount_minor"] = None
    return values
