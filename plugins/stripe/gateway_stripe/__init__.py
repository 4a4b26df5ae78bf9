"""stripe: Stripe webhooks in, canonical events out.

Conf::

    [sources.stripe]                    # served at POST /v1/sources/stripe
    type = "stripe"
    secrets = ["${STRIPE_WEBHOOK_SECRET}"]  # the endpoint's whsec_...; two during a rotation

Authenticity: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``, each ``v1`` an
HMAC-SHA256 of ``<t>.<raw body>`` keyed with the endpoint secret (the whole
``whsec_...`` string, as Stripe's libraries use it). ``t`` must be within
``tolerance`` of now, either way. The event id (``evt_...``) is the dedupe key:
Stripe retries for up to 3 days, and the intake remembers ids for 7.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from gateway import (
    Duration,
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

HEADER = "Stripe-Signature"


class StripeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The endpoint's signing secrets (``whsec_...``); several while rolling one.
    secrets: list[Secret]
    #: How far the signature's ``t=`` may be from now, either way.
    tolerance: Duration = Duration(300)
    #: Refuse events of the other mode: ``true`` takes live events only, ``false`` test
    #: events only; unset takes both.
    livemode: bool | None = None
    #: Events the mapping does not cover: ``forward`` routes them as
    #: ``stripe.<type>`` (``stripe.customer.created``); ``ignore`` answers 200 and drops them.
    unmapped: Literal["forward", "ignore"] = "forward"
    #: Copy the object's ``metadata`` (string values) into the event's ``refs``.
    metadata_refs: bool = True


class StripeSource(Source[StripeConfig]):
    type_name = "stripe"
    config_type = StripeConfig

    def __init__(self, name: str, config: StripeConfig) -> None:
        super().__init__(name, config)
        if not config.secrets:
            raise ValueError("secrets: at least one endpoint signing secret (whsec_...)")
        self._keys = [s.reveal().encode() for s in config.secrets]

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        header = headers.get(HEADER)
        if not header:
            raise SignatureError(f"missing header(s): {HEADER}")
        stamp: int | None = None
        signatures: list[bytes] = []
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key == "t":
                try:
                    stamp = int(value)
                except ValueError:
                    raise SignatureError(f"{HEADER}: t= is not an integer") from None
            elif key == "v1":
                # aiohttp hands undecodable header bytes over as surrogates: keep them
                signatures.append(value.encode("utf-8", "surrogateescape"))
        if stamp is None:
            raise SignatureError(f"{HEADER}: no t= timestamp")
        if not signatures:
            raise SignatureError(f"{HEADER}: no v1 signature")
        now = time.time()
        tolerance = float(self.config.tolerance)
        if stamp < now - tolerance:
            raise SignatureError(f"{HEADER}: timestamp is too old")
        if stamp > now + tolerance:
            raise SignatureError(f"{HEADER}: timestamp is too far in the future")
        signed = f"{stamp}.".encode() + body
        expected = [
            hmac.new(key, signed, hashlib.sha256).hexdigest().encode() for key in self._keys
        ]
        for candidate in signatures:
            if any(hmac.compare_digest(candidate, good) for good in expected):
                return
        raise SignatureError(f"{HEADER}: no valid v1 signature")

    def parse(self, body: bytes) -> list[Event]:
        payload = decode_payload(body, "a Stripe event")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise EventInvalid("$.id", "missing: the Stripe event id (evt_...)")
        if not isinstance(event_type, str) or not event_type:
            raise EventInvalid("$.type", "missing: the Stripe event type")
        created = payload.get("created")
        if not isinstance(created, int) or isinstance(created, bool):
            raise EventInvalid("$.created", "missing: the event's Unix time")
        obj = catalog.dig(payload, "data.object")
        if not isinstance(obj, dict):
            raise EventInvalid("$.data.object", "missing: the object the event is about")
        livemode = payload.get("livemode", True) is not False
        wanted = self.config.livemode
        if wanted is not None and livemode != wanted:
            mode = "live" if livemode else "test"
            raise EventInvalid("$.livemode", f"a {mode}-mode event; this source takes the other")

        route = MAPPING.route(event_type, obj)
        if route is None:
            if self.config.unmapped == "ignore":
                return []
            canonical, fields = catalog.provider_type(PROVIDER, event_type), {}
        else:
            canonical = route.canonical or ""
            fields = MAPPING.fields(route, obj, payload)
        refs: dict[str, Any] = fields.get("refs", {})
        if self.config.metadata_refs:
            for key, value in (catalog.string_map(obj.get("metadata")) or {}).items():
                refs.setdefault(key, value)
        event: dict[str, Any] = {
            "id": catalog.canonical_id(PROVIDER, event_id),
            "type": canonical,
            "occurred_at": catalog.timestamp(created),
            "source": {
                "provider": PROVIDER,
                "event_type": event_type,
                "event_id": event_id,
                "livemode": livemode,
                "payload": payload,
            },
            "refs": refs,
            "data": fields.get("data", {}),
        }
        if fields.get("customer"):
            event["customer"] = fields["customer"]
        return [decode_event(msgspec.json.encode(event))]


@hookimpl
def tocsin_register_sources() -> Sequence[type[Source[Any]]]:
    return [StripeSource]


__all__ = ["MAPPING", "StripeConfig", "StripeSource"]
