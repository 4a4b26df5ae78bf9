"""acme: a Tocsin event source for Acme Pay's webhooks (Acme Pay is made up).

Conf::

    [sources.acme]                       # served at POST /v1/sources/acme
    type = "acme"
    secret = "${ACME_WEBHOOK_SECRET}"

Acme Pay posts ``{"id": "n_1", "kind": "payment.ok", "at": <unix time>, "cents": 990,
"cur": "eur"}`` and signs the raw body: ``X-Acme-Signature: <hex HMAC-SHA256>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway import (
    Event,
    EventInvalid,
    Secret,
    SignatureError,
    Source,
    catalog,
    decode_event,
    hookimpl,
)

#: Acme's kinds -> canonical types (docs/events.md): a table, not if-chains.
KINDS = {"payment.ok": "payment.succeeded", "payment.ko": "payment.failed"}


class AcmeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    secret: Secret


class Notification(msgspec.Struct):
    """What Acme posts; decoding checks the shape and the types."""

    id: str
    kind: str
    at: int
    cents: int
    cur: str


class AcmeSource(Source[AcmeConfig]):
    type_name = "acme"
    config_type = AcmeConfig

    def __init__(self, name: str, config: AcmeConfig) -> None:
        super().__init__(name, config)  # runs in `tocsin check` too: validate, open nothing
        self._key = config.secret.reveal().encode()

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """1. Authenticity, on the raw bytes, before anything parses them."""
        signature = headers.get("X-Acme-Signature", "")
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise SignatureError("X-Acme-Signature: missing or wrong")  # never echo the secret

    def parse(self, body: bytes) -> list[Event]:
        """2. Map to the catalog; 3. derive the dedupe key from Acme's own id."""
        try:
            note = msgspec.json.decode(body, type=Notification)
        except msgspec.ValidationError as exc:
            raise EventInvalid("$", str(exc)) from None  # "... - at `$.cents`"
        except msgspec.DecodeError as exc:
            raise EventInvalid("$", f"malformed JSON: {exc}") from None
        event = {
            "id": catalog.canonical_id("acme", note.id),  # "acme:n_1": retries collapse
            "type": KINDS.get(note.kind) or catalog.provider_type("acme", note.kind),
            "occurred_at": catalog.timestamp(note.at),
            "source": {
                "provider": "acme",
                "event_type": note.kind,
                "event_id": note.id,
                "payload": msgspec.json.decode(body),  # the original, for audit and templates
            },
            "data": {"amount": note.cents, "currency": note.cur.upper()},  # ISO-4217: EUR
        }
        # decode_event checks what the intake would: id, type, dates, money.
        return [decode_event(msgspec.json.encode(event))]


@hookimpl
def tocsin_register_sources() -> Sequence[type[Source[Any]]]:
    return [AcmeSource]


__all__ = ["AcmeConfig", "AcmeSource"]
