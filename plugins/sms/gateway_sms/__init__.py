"""sms: text messages to customers and staff, through Twilio, Vonage or a local outbox.

Conf (see docs/sms.md for every option)::

    [channels.customer_sms]
    type = "sms"
    provider = "outbox"          # outbox (default, a JSON-lines file) | twilio | vonage
    sender = "MaBoutique"
    default_region = "FR"

    [[rules.receipt.actions]]
    channel = "customer_sms"
    template = "payment_receipt"  # renders templates/payment_receipt/<locale>/sms.j2
    to = ["customer"]             # customer.phone, or numbers written in the rule

Before anything is sent the number is normalised to E.164, the text is measured
(GSM-7 or UCS-2, segments) and refused when it needs more than ``max_segments``.
Twilio and Vonage delivery receipts come back to ``/v1/receipts/<channel>``, checked
against the provider's signature (``SmsChannel.parse_receipt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway import Channel, hookimpl

from .channel import ComposedSms, SmsChannel
from .config import OutboxOptions, SmsConfig, TwilioOptions, VonageOptions
from .encoding import SmsEncoding, analyse, transliterate
from .numbers import InvalidNumber, parse_sender, to_e164
from .providers import Accepted, OutgoingSms


@hookimpl
def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
    return [SmsChannel]


__all__ = [
    "Accepted",
    "ComposedSms",
    "InvalidNumber",
    "OutboxOptions",
    "OutgoingSms",
    "SmsChannel",
    "SmsConfig",
    "SmsEncoding",
    "TwilioOptions",
    "VonageOptions",
    "analyse",
    "parse_sender",
    "to_e164",
    "transliterate",
]
