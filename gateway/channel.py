"""What a channel plugin implements. The core awaits these methods; it knows no channel by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

import msgspec

from .address import normalise_address
from .delivery import Delivery
from .outbound import OutboundPolicy
from .receipts import Receipt, ReceiptRequest, Reply

if TYPE_CHECKING:
    from .conf import Action
    from .templating import Templates

ConfigT = TypeVar("ConfigT", bound=msgspec.Struct)


@dataclass(frozen=True)
class ChannelContext:
    """What the core lends a channel instance."""

    templates: Templates
    #: A folder the channel may write to (outboxes, caches); created on demand.
    data_dir: Path
    default_locale: str
    #: The SSRF guard: HTTP channels make their sessions with ``outbound.client_session()``
    #: and map errors with ``gateway.outbound_error``.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)


class Channel(ABC, Generic[ConfigT]):
    """One configured channel (``[channels.NAME] type = "..."``).

    Subclasses set ``type_name`` and ``config_type`` (a ``msgspec.Struct`` with
    ``forbid_unknown_fields=True``; the core decodes ``[channels.NAME]`` into it and
    reports every mistake as ``file: channels.NAME.field: reason``).

    ``send`` returns when the delivery is done; it raises ``gateway.TransientError`` to
    be retried later or ``gateway.PermanentError`` to fail for good. It must finish
    within ``send_timeout`` seconds.
    """

    type_name: ClassVar[str]
    config_type: ClassVar[type[msgspec.Struct]]
    #: Whether an action on this channel needs recipients (``to = [...]``).
    needs_recipients: ClassVar[bool] = False
    #: Whether an action on this channel needs a ``template``.
    needs_template: ClassVar[bool] = False
    #: The ``Recipient`` field this channel addresses (``"email"``, ``"phone"``): members
    #: of an audience without one are not sent to on this channel.
    recipient_field: ClassVar[str | None] = None
    #: Whether its deliveries are calls to an ERP (closing an invoice...): the admin API's
    #: event timeline lists them apart, as ``erp_calls``.
    erp_call: ClassVar[bool] = False

    def __init__(self, name: str, config: ConfigT, context: ChannelContext) -> None:
        self.name = name
        self.config = config
        self.context = context

    @property
    def send_timeout(self) -> float:
        """Upper bound on one ``send``; the core's reclaim timeout must exceed it."""
        return 30.0

    def suppression_address(self, delivery: Delivery) -> str | None:
        """The address the suppression list keys this delivery by, normalised as this
        channel sends; ``None``: nothing to check (a webhook, no recipient, an address
        the channel will refuse anyway). By default the recipient's ``recipient_field``:
        an email lower-cased, a phone number as E.164. Override it to normalise as your
        sends do (the sms channel reads national numbers with its ``default_region``)."""
        field, recipient = self.recipient_field, delivery.recipient
        if field is None or recipient is None:
            return None
        raw = getattr(recipient, field, None) or recipient.address
        if not raw:
            return None
        if field == "email":
            return str(raw).strip().lower()  # the address's own checks are the channel's
        try:
            return normalise_address(str(raw))
        except ValueError:
            return None

    def check_action(self, action: Action) -> list[str]:
        """Conf problems with one rule action using this channel (template parts missing...)."""
        return []

    async def start(self) -> None:
        """Open connections, sessions, files. Called once before the first ``send``."""

    @abstractmethod
    async def send(self, delivery: Delivery) -> str | None:
        """Deliver, or raise ``TransientError`` / ``PermanentError``.

        May return a short note for the delivery's history: the provider's message id,
        "already booked, nothing done"...
        """

    def parse_receipt(self, request: ReceiptRequest) -> Sequence[Receipt | Reply]:
        """Read a provider's status callback to ``/v1/receipts/NAME``.

        Verify it first (raise ``gateway.SignatureError`` if it is not genuine), then
        return the receipts it carries, or the recipient's reply it brings (an SMS
        ``STOP``: fed to the suppression list); ``ValueError`` for a call that cannot be read.
        Channels without receipts leave this as is (the route answers 404).
        """
        raise NotImplementedError(f"channel type {self.type_name!r} takes no receipts")

    def preview(self, delivery: Delivery) -> dict[str, str]:
        """What ``send`` would send, as labelled text parts, without sending it.

        ``tocsin render`` prints these (e.g. ``subject``, ``text``, ``html``, ``sms``
        with its encoding and segment count). Raises ``PermanentError`` when the
        delivery could not be sent (a template failing, an invalid number...).
        """
        raise NotImplementedError(f"channel type {self.type_name!r} has no preview")

    async def close(self) -> None:
        """Release what ``start`` opened."""
