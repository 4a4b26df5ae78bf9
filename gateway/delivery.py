"""A delivery: one (rule, action, recipient) of one event, as a channel receives it.

Its ``id`` is derived from those four, so the same event routed again yields the same
id: json_hook sends it as ``webhook-id`` and receivers can dedupe on it forever.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .event import Event


class Recipient(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Whom a message is for. Channels take the field they need (email, phone, address)."""

    #: ``customer`` (the event's customer) or ``address`` (written in the rule).
    kind: str
    address: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None


class Attempt(msgspec.Struct, omit_defaults=True):
    """One try at sending a delivery, as its history shows it."""

    n: int
    #: Epoch seconds when the attempt started.
    at: float
    outcome: str  # delivered | retry | failed
    #: Milliseconds the channel took.
    ms: float
    #: The receiver's status code (HTTP, SMTP), when there was one.
    status: int | None = None
    error: str | None = None
    #: What the channel said about a success (a provider's message id...).
    note: str | None = None


class Delivery(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """The job on a channel's stream. ``event`` stays encoded until someone needs it."""

    id: str
    event_id: str
    event_type: str
    rule: str
    channel: str
    event: msgspec.Raw
    template: str | None = None
    locale: str | None = None
    recipient: Recipient | None = None
    attempt: int = 1
    #: The sending window this message must wait for, if any.
    window: str | None = None
    #: For a scenario step's message, its instance: not sent if that was cancelled since.
    scenario: str | None = None
    #: Its rule's or step's ``category``: whether a suppressed address still gets it.
    category: str = "transactional"
    #: Earlier attempts, newest last; travels with the job so settling needs no read.
    history: list[Attempt] = msgspec.field(default_factory=list)

    def decode_event(self) -> Event:
        return _event_decoder.decode(self.event)

    def event_bytes(self) -> bytes:
        """The canonical event as JSON, exactly as stored at intake."""
        return bytes(self.event)


_event_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Delivery)


def delivery_id(event_id: str, rule: str, action_index: int, recipient: str) -> str:
    digest = hashlib.blake2b(
        f"{event_id}\x1f{rule}\x1f{action_index}\x1f{recipient}".encode(), digest_size=12
    ).hexdigest()
    return f"msg_{digest}"


def encode_delivery(delivery: Delivery) -> bytes:
    return _encoder.encode(delivery)


def decode_delivery(data: bytes) -> Delivery:
    return _decoder.decode(data)


#: Where the event goes in a job's ``j`` field when it travels beside it, in ``e``.
_BESIDE = msgspec.Raw(b"null")


def encode_job(delivery: Delivery) -> bytes:
    """The job as a fan-out appends it: the delivery without its event, which the
    fan-out puts beside it (field ``e``) from the copy it stores once per event. Its
    event is neither copied into this JSON nor scanned through when the job is read,
    and each job costs Redis a ~300-byte argument instead of ~1.3 KB."""
    event, delivery.event = delivery.event, _BESIDE
    try:
        return _encoder.encode(delivery)
    finally:
        delivery.event = event


def decode_job(fields: dict[bytes, bytes]) -> Delivery:
    """A job as read from a channel's stream: ``j`` the whole delivery (retries, replays,
    scenario steps), or ``j`` and its event beside it in ``e`` (fan-outs)."""
    delivery = _decoder.decode(fields.get(b"j", b""))
    event = fields.get(b"e")
    if event is not None:
        delivery.event = msgspec.Raw(event)
    return delivery


def template_context(delivery: Delivery, event: Event) -> dict[str, Any]:
    """What a template sees: the event's fields at top level, plus recipient and delivery."""
    context = event.to_context()
    context["event"] = dict(context)
    # Every field present (None when unknown), so `recipient.email or recipient.phone`
    # works under StrictUndefined.
    context["recipient"] = (
        msgspec.structs.asdict(delivery.recipient) if delivery.recipient is not None else None
    )
    context["delivery"] = {"id": delivery.id, "rule": delivery.rule, "attempt": delivery.attempt}
    # Locale-aware filters (money, dates) read this: the rule's, else the recipient's,
    # else the customer's; None lets them fall back to the conf's default locale.
    recipient_locale = delivery.recipient.locale if delivery.recipient is not None else None
    customer_locale = event.customer.locale if event.customer is not None else None
    context["locale"] = delivery.locale or recipient_locale or customer_locale
    return context
