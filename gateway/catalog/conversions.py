"""Conversions shared by source plugins (a ``Take``'s ``convert``), and the ids and type
names a source derives from its provider's."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..event import EVENT_ID_PATTERN


def upper(value: Any) -> str | None:
    """``eur`` -> ``EUR`` (Stripe sends currencies in lower case)."""
    return value.upper() if isinstance(value, str) else None


def timestamp(value: Any) -> str | None:
    """Unix seconds or an ISO 8601 string -> RFC 3339 in UTC (``2026-11-25T10:15:00Z``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def integer(value: Any) -> int | None:
    """An integer, or an integer-valued string (``"1250"``); anything else is left out."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def id_of(value: Any) -> str | None:
    """An id, or the ``id`` of an expanded object (``"cus_1"`` or ``{"id": "cus_1", ...}``)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def e164(value: Any) -> str | None:
    """A phone number already in E.164 form; anything else is left out, not guessed."""
    if not isinstance(value, str):
        return None
    compact = re.sub(r"[\s.\-()]", "", value)
    return compact if _E164.match(compact) else None


def iban_masked(value: Any) -> str | None:
    """``FR7630006000011234567890189`` -> ``FR76 •••• •••• 0189``; never the whole number."""
    if not isinstance(value, str):
        return None
    compact = re.sub(r"\s", "", value).upper()
    if len(compact) < 8:
        return None
    return f"{compact[:4]} •••• •••• {compact[-4:]}"


def string_map(value: Any) -> dict[str, str] | None:
    """A provider's ``metadata``: its string values, for ``refs``."""
    if not isinstance(value, Mapping):
        return None
    return {str(k): v for k, v in value.items() if isinstance(v, str) and v} or None


def canonical_id(provider: str, event_id: str) -> str:
    """A dedupe key from the provider's own event id: ``stripe:evt_123``.

    Ids that would not fit the canonical pattern (too long, other characters) are
    hashed, deterministically, so a provider's retry still gets the same key.
    """
    candidate = f"{provider}:{event_id}"
    if re.match(EVENT_ID_PATTERN, candidate):
        return candidate
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return f"{provider}:h_{digest}"


def provider_type(provider: str, event: str) -> str:
    """The type an unmapped provider event is routed as: ``stripe.customer.created``."""
    parts = [re.sub(r"[^a-z0-9_]", "_", p.lower()) for p in event.split(".") if p]
    parts = [p if p[:1].isalpha() else f"x{p}" for p in parts if p]
    return ".".join([provider, *parts]) if parts else f"{provider}.unknown"
