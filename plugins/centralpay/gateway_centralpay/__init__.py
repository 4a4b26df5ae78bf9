"""centralpay: CentralPay notifications in, canonical events out.

Conf (see ``config.py`` for the ways a deployment trusts a notification)::

    [sources.centralpay]                      # served at POST /v1/sources/centralpay
    type = "centralpay"
    verify = "fetch"                          # or "hmac" / "none" (with allow_from)
    [sources.centralpay.api]
    login = "${CENTRALPAY_API_LOGIN}"
    secret = "${CENTRALPAY_API_SECRET}"

A notification is ``{"type": NAME, "object": {...}}`` (``mapping.py`` says where that
comes from). CentralPay sends no event id, so the dedupe key is built from the object:
its own id, what the event means, and for a payment request how many payments it holds
(two payments on one request are two events; CentralPay's retry of one is the same).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from gateway import (
    Event,
    EventInvalid,
    PermanentError,
    SignatureError,
    Source,
    catalog,
    decode_event,
    decode_payload,
    hookimpl,
    parse_networks,
)

from .config import LIVE_API, SANDBOX_API, CentralPayApi, CentralPayConfig, problems
from .fetch import basic_auth, fetch_object, object_id, resource
from .mapping import MAPPING, PROVIDER

#: Keys holding money in CentralPay objects: minor units, sometimes written as floats.
_AMOUNT_KEY = re.compile(r"^(amount|fee|.*Amount)$")


class CentralPaySource(Source[CentralPayConfig]):
    type_name = "centralpay"
    config_type = CentralPayConfig

    def __init__(self, name: str, config: CentralPayConfig) -> None:
        super().__init__(name, config)
        found = problems(config)
        unknown = sorted(set(config.aliases.values()) - set(MAPPING.events))
        if unknown:
            found.append(f"aliases: {', '.join(unknown)} not in the mapping table")
        if found:
            raise ValueError("; ".join(found))
        self.allowed_networks = parse_networks(config.allow_from, "allow_from")
        self.confirms = config.verify == "fetch"
        self._keys = [s.reveal().encode() for s in config.secrets]
        self._api: CentralPayApi | None = config.api
        if config.api is not None:
            self.confirm_timeout = float(config.api.timeout)

    # -- authenticity ----------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if self.config.verify != "hmac":
            return  # fetch: CentralPay's answer decides; none: allow_from did
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

    def _encode(self, digest: bytes) -> bytes:
        if self.config.signature_encoding == "hex":
            return binascii.hexlify(digest)
        return base64.b64encode(digest)

    # -- mapping ---------------------------------------------------------------------------

    def parse(self, body: bytes) -> list[Event]:
        payload = decode_payload(body, "a CentralPay notification")
        name = payload.get("type")
        if not isinstance(name, str) or not name:
            raise EventInvalid("$.type", "missing: the event name (TRANSACTION_SUCCEEDED...)")
        obj = payload.get("object")
        if not isinstance(obj, dict):
            raise EventInvalid("$.object", "missing: the object the event is about")
        event = self._build(name, obj, payload, "$.object")
        if self.confirms:
            # Not what rules see: a placeholder until CentralPay confirms the object.
            event.id = catalog.canonical_id(PROVIDER, f"posted:{event.id.partition(':')[2]}")
        return [event]

    def _build(self, name: str, obj: dict[str, Any], payload: dict[str, Any], where: str) -> Event:
        _whole_amounts(obj, where)
        mapped_name = self.config.aliases.get(name, name)
        received = catalog.timestamp(datetime.now(UTC).isoformat())
        route = MAPPING.route(mapped_name, obj)
        if route is None:
            canonical, fields = catalog.provider_type(PROVIDER, name), {}
        else:
            canonical = route.canonical or ""
            fields = MAPPING.fields(route, obj, {"event": mapped_name, "occurred_at": received})
        stable = _stable_id(mapped_name, canonical if route else None, obj)
        event: dict[str, Any] = {
            "id": catalog.canonical_id(PROVIDER, stable),
            "type": canonical,
            "occurred_at": received,
            "source": {
                "provider": PROVIDER,
                "event_type": name,
                "event_id": stable,
                "livemode": self.config.livemode,
                "payload": payload,
            },
            "refs": fields.get("refs", {}),
            "data": fields.get("data", {}),
        }
        if fields.get("customer"):
            event["customer"] = fields["customer"]
        return decode_event(msgspec.json.encode(event))

    # -- verify = "fetch" ------------------------------------------------------------------

    async def confirm(self, event: Event, http: aiohttp.ClientSession) -> list[Event]:
        assert self._api is not None, "confirm is only called when verify = 'fetch'"
        payload = event.source.payload or {}
        name = str(payload.get("type", ""))
        posted = payload.get("object") if isinstance(payload.get("object"), dict) else {}
        mapped_name = self.config.aliases.get(name, name)
        ident = object_id(mapped_name, posted or {})
        if ident is None:
            kind = resource(mapped_name)
            field = kind[1] if kind else "an id"
            raise PermanentError(f"cannot confirm {name}: the notification carries no {field}")
        root = self._api.url or (LIVE_API if self.config.livemode else SANDBOX_API)
        auth = basic_auth(self._api.login.reveal(), self._api.secret.reveal())
        fetched = await fetch_object(http, root, auth, mapped_name, ident)
        confirmed = {"type": name, "object": fetched}
        return [self._build(name, fetched, confirmed, "$.object")]


def _stable_id(name: str, canonical: str | None, obj: Mapping[str, Any]) -> str:
    """The dedupe key of a notification: ``<object id>:<meaning>[:<payments>]``.

    The meaning is the canonical type when mapped, so two names that mean the same thing
    for one object (TRANSACTION_SUCCEEDED and TRANSACTION_CAPTURED: paid) give one event.
    A payment request counts its payments: each new payment is a new event; an
    installment names its attempt (its transaction), each retry being one. An object
    with no id field at all (an unknown kind) falls back to a hash of the object itself,
    which a retry of the same notification reproduces.
    """
    ident = object_id(name, obj)
    meaning = canonical.replace(".", "_") if canonical else name
    if ident is None:
        for key in sorted(obj):
            if key.endswith("Id") and isinstance(obj[key], str) and obj[key]:
                ident = obj[key]
                break
    if ident is None:
        digest = hashlib.sha256(msgspec.json.encode(obj, order="sorted")).hexdigest()[:32]
        return f"{meaning}:h_{digest}"
    stable = f"{ident}:{meaning}"
    if name.startswith("PAYMENTREQUEST_"):
        stable += f":{_payments(obj)}"
    elif name.startswith("INSTALLMENT_"):
        # One installment is tried several times, days apart (within the dedupe window):
        # each attempt is its own event, or the final failure would be dropped.
        attempt = obj.get("transactionId") or obj.get("attempt")
        if isinstance(attempt, str | int) and not isinstance(attempt, bool):
            stable += f":{attempt}"
    return stable


def _payments(obj: Mapping[str, Any]) -> int:
    count = 0
    for breakdown in obj.get("breakdowns") or ():
        if isinstance(breakdown, Mapping):
            payments = breakdown.get("payments") or ()
            count += sum(1 for p in payments if isinstance(p, Mapping) and p.get("uuid"))
    return count


def _whole_amounts(value: Any, path: str) -> None:
    """CentralPay writes minor units, sometimes as floats (jss-backend types ``totalAmount``
    ``Float``): ``1250.0`` is 1250, ``12.5`` cannot be minor units and is refused."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if isinstance(item, float) and _AMOUNT_KEY.match(key):
                if not item.is_integer():
                    raise EventInvalid(
                        here, f"{item!r} is not a whole number of minor units (cents)"
                    )
                value[key] = int(item)
            else:
                _whole_amounts(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _whole_amounts(item, f"{path}[{i}]")


@hookimpl
def tocsin_register_sources() -> Sequence[type[Source[Any]]]:
    return [CentralPaySource]


__all__ = ["MAPPING", "CentralPayConfig", "CentralPaySource"]
