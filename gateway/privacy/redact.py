"""What erasure keeps of an event and replaces.

Kept (what accounting needs, and what lets Tocsin keep working): the envelope (id,
type, occurred_at, the provider's name, event type and event id), the customer's id,
kind and locale, ``refs``, and in ``data`` every number, boolean and every string whose
key names an amount, a currency, a date, an id, a reference or a status (``keeps``).
Replaced by ``[erased]``: every other string in ``data``, and any string anywhere that
contains one of the customer's known values (email, phone, name). Removed: the
customer's name, email and phone, and the provider's original payload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import phonenumbers

ERASED = "[erased]"

#: ``data`` keys whose string values are kept: amounts, currencies, dates, ids, refs...
_KEPT_KEY = re.compile(
    r"^(id|ref|reference|currency|status|type|method|payment_method|reason|date|livemode)$"
    r"|(_id|_ref|_reference|_amount|_currency|_at|_date|_status|_type|_count)$",
)


def keeps(key: str) -> bool:
    return key == "amount" or bool(_KEPT_KEY.search(key))


def needles_of(values: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased forms a value may be stored in: as written, JSON-escaped, and for a
    phone number its E.164, national and digits-only forms."""
    found: set[str] = set()
    for given in values:
        value = given.strip()
        if len(value) < 4:
            continue  # too short to be told from other text
        forms = {value, json.dumps(value)[1:-1]}
        if value.startswith("+") and value[1:].isdigit():
            forms.add(value[1:])
            try:
                number = phonenumbers.parse(value)
                national = phonenumbers.format_number(
                    number, phonenumbers.PhoneNumberFormat.NATIONAL
                )
                forms |= {national, national.replace(" ", "")}
            except phonenumbers.NumberParseException:
                pass
        found |= {f.lower() for f in forms if len(f) >= 4}
    return tuple(sorted(found))


def contains(text: str | bytes, needles: Sequence[str]) -> bool:
    if not needles:
        return False
    low = text.decode("utf-8", "replace").lower() if isinstance(text, bytes) else text.lower()
    return any(n in low for n in needles)


def scrub(text: str, needles: Sequence[str]) -> str:
    """``text`` with each known value replaced (case-insensitively)."""
    for needle in needles:
        if needle in text.lower():
            text = re.sub(re.escape(needle), ERASED, text, flags=re.IGNORECASE)
    return text


def scrub_any(value: Any, needles: Sequence[str]) -> Any:
    """Every string in a JSON value scrubbed (structure kept)."""
    if isinstance(value, str):
        return scrub(value, needles)
    if isinstance(value, dict):
        return {k: scrub_any(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_any(v, needles) for v in value]
    return value


def accounting_view(data: Any, needles: Sequence[str], key: str = "") -> Any:
    """``data`` with only what ``keeps`` allows: other strings become ``[erased]``."""
    if isinstance(data, dict):
        return {k: accounting_view(v, needles, str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [accounting_view(v, needles, key) for v in data]
    if isinstance(data, str):
        return data if keeps(key) and not contains(data, needles) else ERASED
    return data


def redact_event(event: dict[str, Any], needles: Sequence[str]) -> dict[str, Any]:
    """A decoded event (or a scenario state, which has its shape) as erasure leaves it."""
    out = dict(event)
    customer = out.get("customer")
    if isinstance(customer, dict):
        out["customer"] = {
            k: v for k, v in customer.items() if k in ("id", "kind", "locale") and v is not None
        }
    source = out.get("source")
    if isinstance(source, dict):
        out["source"] = scrub_any({k: v for k, v in source.items() if k != "payload"}, needles)
    if isinstance(out.get("refs"), dict):
        out["refs"] = scrub_any(out["refs"], needles)
    if isinstance(out.get("data"), dict):
        out["data"] = accounting_view(out["data"], needles)
    for name, value in list(out.items()):
        if name not in ("customer", "source", "refs", "data", "event"):
            out[name] = scrub_any(value, needles)
    if isinstance(out.get("event"), dict):  # a template context carries it again
        out["event"] = redact_event(out["event"], needles)
    return out


def customer_values(event: dict[str, Any]) -> list[str]:
    """The personal values an event carries about its customer."""
    customer = event.get("customer")
    if not isinstance(customer, dict):
        return []
    return [v for k in ("email", "phone", "name") if isinstance(v := customer.get(k), str) and v]


def redact_record(record: dict[str, Any], needles: Sequence[str]) -> dict[str, Any]:
    """A delivery record (JSON) as erasure leaves it: no recipient, no hash, attempts'
    errors and notes scrubbed of the customer's values, audit variables as events keep."""
    out = dict(record)
    if out.get("to") is not None:
        out["to"] = ERASED
    out.pop("to_hash", None)
    if isinstance(out.get("vars"), dict):
        out["vars"] = scrub_any(out["vars"], needles)
    if isinstance(out.get("attempts"), list):
        out["attempts"] = scrub_any(out["attempts"], needles)
    return out
