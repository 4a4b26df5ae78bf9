"""centralpay: CentralPay webhooks in, canonical events out.

Conf::

    [sources.centralpay]                      # served at POST /v1/sources/centralpay
    type = "centralpay"
    secrets = ["${CENTRALPAY_WEBHOOK_SECRET}"]  # the merchant secret key; two during a rotation
    signature_header = "X-CentralPay-Signature" # where this deployment puts the signature
    signature_encoding = "hex"                # or "base64"

Authenticity: an HMAC-SHA256 of the raw body keyed with the merchant secret, in the
configured header (several comma- or space-separated values: any valid one
suffices). CentralPay's envelope carries no signed timestamp, so replays are stopped
by the dedupe window rather than by a clock check.

The envelope: ``{"id": ..., "event": "TRANSACTION_SUCCEEDED", "creationDate": ...,
"data": {the object}}``. The event id is the dedupe key; without one, a hash of the
event name, date and object stands in, so CentralPay's retries of one notification
still collapse into one event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from gateway import (
    Event,
    EventInvalid,
    Secret,
    SignatureError,
    Source,
    catalog,
    decode_event,
    decode_payload,
    hookimpl,
)

from .mapping import MAPPING, PROVIDER

#: Envelope keys, in the order tried.
EVENT_KEYS = ("event", "type", "eventType")
ID_KEYS = ("id", "eventId", "uuid")
DATE_KEYS = ("creationDate", "date", "createdAt")
OBJECT_KEYS = ("data", "object")


class CentralPayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The merchant secret key(s) CentralPay signs with; several while rolling one.
    secrets: list[Secret]
    #: The request header holding the signature (deployments differ: ask CentralPay).
    signature_header: str
    #: How the HMAC bytes are written in the header.
    signature_encoding: Literal["hex", "base64"] = "hex"
    #: Text before the signature to strip, e.g. ``"sha256="``.
    signature_prefix: str = ""
    #: Whether this endpoint receives production (true) or sandbox (false) events.
    livemode: bool = True
    #: Events the mapping does not cover: ``forward`` routes them as
    #: ``centralpay.<event>`` (``centralpay.onboarding_enrollment_created``);
    #: ``ignore`` answers 200 and drops them.
    unmapped: Literal["forward", "ignore"] = "forward"
    #: This deployment's event names for names of the mapping table, e.g.
    #: ``{ "TRANSACTION_SUCCESS" = "TRANSACTION_SUCCEEDED" }``.
    aliases: dict[str, str] = msgspec.field(default_factory=dict)


class CentralPaySource(Source[CentralPayConfig]):
    type_name = "centralpay"
    config_type = CentralPayConfig

    def __init__(self, name: str, config: CentralPayConfig) -> None:
        super().__init__(name, config)
        if not config.secrets:
            raise ValueError("secrets: at least one merchant secret key")
        if not config.signature_header.strip():
            raise ValueError("signature_header: name the header CentralPay signs in")
        unknown = sorted(set(config.aliases.values()) - set(MAPPING.events))
        if unknown:
            raise ValueError(f"aliases: {', '.join(unknown)} not in the mapping table")
        self._keys = [s.reveal().encode() for s in config.secrets]

    def _encode(self, digest: bytes) -> bytes:
        if self.config.signature_encoding == "hex":
            return binascii.hexlify(digest)
        return base64.b64encode(digest)

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        header_name = self.config.signature_header
        header = headers.get(header_name)
        if not header:
            raise SignatureError(f"missing header(s): {header_name}")
        expected = [self._encode(hmac.digest(k, body, hashlib.sha256)) for k in self._keys]
        hex_encoded = self.config.signature_encoding == "hex"
        for candidate in re.split(r"[,\s]+", header.strip()):
            value = candidate.removeprefix(self.config.signature_prefix)
            # aiohttp hands undecodable header bytes over as surrogates: keep them
            raw = (value.lower() if hex_encoded else value).encode("utf-8", "surrogateescape")
            if any(hmac.compare_digest(raw, good) for good in expected):
                return
        raise SignatureError(f"{header_name}: no valid signature")

    def parse(self, body: bytes) -> list[Event]:
        payload = decode_payload(body, "a CentralPay event")
        name = _first(payload, EVENT_KEYS)
        if not isinstance(name, str) or not name:
            raise EventInvalid("$.event", "missing: the event name (TRANSACTION_SUCCEEDED...)")
        obj = _first(payload, OBJECT_KEYS)
        if not isinstance(obj, dict):
            raise EventInvalid("$.data", "missing: the object the event is about")
        date = _first(payload, DATE_KEYS)
        occurred_at = catalog.timestamp(date) if date is not None else None
        if date is not None and occurred_at is None:
            raise EventInvalid(f"$.{_key(payload, DATE_KEYS)}", "not a date")
        received = occurred_at or catalog.timestamp(datetime.now(UTC).isoformat())
        event_id = _first(payload, ID_KEYS)
        if isinstance(event_id, int) and not isinstance(event_id, bool):
            event_id = str(event_id)
        if not isinstance(event_id, str) or not event_id:
            # No id: what CentralPay retries is the same notification, so hash what it says.
            basis = msgspec.json.encode([name, occurred_at, obj], order="sorted")
            event_id = "h_" + hashlib.sha256(basis).hexdigest()[:40]

        mapped_name = self.config.aliases.get(name, name)
        route = MAPPING.route(mapped_name, obj)
        if route is None:
            if self.config.unmapped == "ignore":
                return []
            canonical, fields = catalog.provider_type(PROVIDER, name), {}
        else:
            canonical = route.canonical or ""
            fields = MAPPING.fields(route, obj, {"event": mapped_name, "occurred_at": received})
        event: dict[str, Any] = {
            "id": catalog.canonical_id(PROVIDER, event_id),
            "type": canonical,
            "occurred_at": received,
            "source": {
                "provider": PROVIDER,
                "event_type": name,
                "event_id": event_id,
                "livemode": self.config.livemode,
                "payload": payload,
            },
            "refs": fields.get("refs", {}),
            "data": fields.get("data", {}),
        }
        if fields.get("customer"):
            event["customer"] = fields["customer"]
        return [decode_event(msgspec.json.encode(event))]


def _key(payload: Mapping[str, Any], keys: Sequence[str]) -> str:
    return next((k for k in keys if payload.get(k) is not None), keys[0])


def _first(payload: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return payload.get(_key(payload, keys))


@hookimpl
def tocsin_register_sources() -> Sequence[type[Source[Any]]]:
    return [CentralPaySource]


__all__ = ["MAPPING", "CentralPayConfig", "CentralPaySource"]
