"""Tocsin's core. What plugins may use is exported here, and only here.

A channel plugin needs: ``hookimpl``, ``Channel`` (+ ``ChannelContext``), ``Delivery``,
``TransientError`` / ``PermanentError``, and for conf fields ``Duration`` / ``Secret``.
"""

from . import catalog  # the event catalog and the mapping helpers source plugins use
from .address import check_address
from .channel import Channel, ChannelContext
from .conditions import MISSING, Condition
from .conf import Action, Secret
from .delivery import Attempt, Delivery, Recipient, template_context
from .durations import Duration
from .errors import (
    ConfError,
    DeliveryError,
    EndpointGone,
    PermanentError,
    PluginError,
    TransientError,
)
from .event import Customer, Event, EventInvalid, EventSource, decode_event, encode_event
from .http import parse_retry_after, raise_for_outcome
from .markers import hookimpl, hookspec
from .outbound import GuardedResolver, OutboundPolicy, OutboundRefused, noncanonical_ipv4
from .outbound import delivery_error as outbound_error
from .receipts import Receipt, ReceiptRequest, ReceiptStatus, Reply
from .signing import SignatureError, Signer, Verifier
from .source import Source, decode_payload, parse_networks
from .templating import TemplateFailure, Templates

__all__ = [
    "MISSING",
    "Action",
    "Attempt",
    "Channel",
    "ChannelContext",
    "Condition",
    "ConfError",
    "Customer",
    "Delivery",
    "DeliveryError",
    "Duration",
    "EndpointGone",
    "Event",
    "EventInvalid",
    "EventSource",
    "GuardedResolver",
    "OutboundPolicy",
    "OutboundRefused",
    "PermanentError",
    "PluginError",
    "Receipt",
    "ReceiptRequest",
    "ReceiptStatus",
    "Recipient",
    "Reply",
    "Secret",
    "SignatureError",
    "Signer",
    "Source",
    "TemplateFailure",
    "Templates",
    "TransientError",
    "Verifier",
    "catalog",
    "check_address",
    "decode_event",
    "decode_payload",
    "encode_event",
    "hookimpl",
    "hookspec",
    "noncanonical_ipv4",
    "outbound_error",
    "parse_networks",
    "parse_retry_after",
    "raise_for_outcome",
    "template_context",
]
