"""The ``sms`` channel: render ``sms.j2``, normalise the number, measure, hand to a provider."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway import (
    Action,
    Channel,
    ChannelContext,
    Delivery,
    PermanentError,
    Receipt,
    ReceiptRequest,
    Reply,
    template_context,
)

from .config import SmsConfig
from .encoding import SmsEncoding, analyse
from .numbers import InvalidNumber, Sender, mask, parse_sender, to_e164, valid_region
from .providers import Accepted, OutgoingSms, Provider, build_provider

log = logging.getLogger("tocsin.sms")

TEMPLATE_PART = "sms"


@dataclass(frozen=True)
class ComposedSms:
    """A delivery turned into a message: what would be sent, and what it costs."""

    sms: OutgoingSms
    measure: SmsEncoding


class SmsChannel(Channel[SmsConfig]):
    """Text messages through the provider the conf names (outbox, Twilio, Vonage)."""

    type_name = "sms"
    config_type = SmsConfig
    needs_recipients = True
    recipient_field = "phone"
    needs_template = True

    def __init__(self, name: str, config: SmsConfig, context: ChannelContext) -> None:
        super().__init__(name, config, context)
        problems: list[str] = []
        for other in ("outbox", "twilio", "vonage"):
            if other != config.provider and getattr(config, other) is not None:
                problems.append(f"{other}: options given, but provider is {config.provider!r}")
        if config.twilio is not None:
            problems.extend(config.twilio.problems())
        if config.vonage is not None:
            problems.extend(config.vonage.problems())

        self.sender: Sender | None = None
        if config.sender is not None:
            try:
                self.sender = parse_sender(config.sender)
            except ValueError as exc:
                problems.append(f"sender: {exc}")
        elif not (config.twilio is not None and config.twilio.messaging_service_sid):
            problems.append(
                "sender: required: an alphanumeric sender ID (1-11 characters, e.g. "
                "'MaBoutique') or an E.164 number"
                + (" (or a twilio.messaging_service_sid)" if config.provider == "twilio" else "")
            )

        self.region: str | None = None
        if config.default_region is not None:
            self.region = config.default_region.upper()
            if not valid_region(self.region):
                problems.append(
                    f"default_region: {config.default_region!r} is not a region code "
                    "phonenumbers knows (ISO 3166 alpha-2: FR, BE, CH, DE...)"
                )

        provider: Provider | None = None
        try:
            provider = build_provider(config, name, context.data_dir, context.outbound)
        except ValueError as exc:
            problems.append(str(exc))
        if problems or provider is None:
            raise ValueError("; ".join(problems))
        self.provider: Provider = provider

    @property
    def send_timeout(self) -> float:
        return float(self.config.timeout) + 5.0  # the outbox's fsync, or one HTTP request

    def check_action(self, action: Action) -> list[str]:
        if action.template and not self.context.templates.has_part(action.template, TEMPLATE_PART):
            return [f"template: {action.template!r} has no {TEMPLATE_PART}.j2"]
        return []

    async def start(self) -> None:
        await self.provider.start()

    async def close(self) -> None:
        await self.provider.close()

    def recipient_number(self, delivery: Delivery) -> str:
        """The recipient's number in E.164, or ``InvalidNumber``."""
        recipient = delivery.recipient
        raw = (recipient.phone or recipient.address) if recipient is not None else None
        if not raw:
            whose = (
                "the event's customer has no phone"
                if recipient is not None and recipient.kind == "customer"
                else "no phone number given"
            )
            raise InvalidNumber(f"no recipient phone number ({whose})")
        return to_e164(raw, self.region, refuse_landlines=self.config.refuse_landlines)

    def suppression_address(self, delivery: Delivery) -> str | None:
        """The number the suppression list is checked for, E.164 as sent (national
        numbers read with ``default_region``); ``None`` when it cannot be sent anyway."""
        try:
            return self.recipient_number(delivery)
        except InvalidNumber:
            return None

    def render(self, delivery: Delivery) -> str:
        if delivery.template is None:
            raise PermanentError("the sms channel needs a template (sms.j2)")
        event = delivery.decode_event()
        text = self.context.templates.render(
            delivery.template, TEMPLATE_PART, delivery.locale, template_context(delivery, event)
        ).strip()
        if not text:
            raise PermanentError(
                f"template {delivery.template}: {TEMPLATE_PART}.j2 rendered an empty message"
            )
        return text

    def compose(self, delivery: Delivery) -> ComposedSms:
        """What ``send`` sends; ``PermanentError`` when it cannot be sent at all."""
        to = self.recipient_number(delivery)
        measure = analyse(self.render(delivery), transliterate_text=self.config.transliterate)
        if measure.segments > self.config.max_segments:
            raise PermanentError(self._too_long(measure))
        sms = OutgoingSms(
            delivery_id=delivery.id,
            to=to,
            sender=self.sender.value if self.sender is not None else None,
            text=measure.text,
            encoding=measure.encoding,
            segments=measure.segments,
        )
        return ComposedSms(sms, measure)

    def _too_long(self, measure: SmsEncoding) -> str:
        reason = (
            f"message needs {measure.segments} segments ({measure.encoding}, {measure.units} "
            f"{'septets' if measure.encoding == 'GSM-7' else 'UTF-16 units'}) but "
            f"max_segments is {self.config.max_segments}: not sent (never truncated)"
        )
        if measure.non_gsm:
            shown = " ".join(repr(ch) for ch in measure.non_gsm[:10])
            reason += f"; UCS-2 because of {shown}"
            if not self.config.transliterate:
                reason += " (transliterate = true may keep it in GSM-7)"
        return reason

    def preview(self, delivery: Delivery) -> dict[str, str]:
        composed = self.compose(delivery)
        sms, measure = composed.sms, composed.measure
        parts = {
            "provider": self.provider.target(),
            "to": sms.to,
            "from": sms.sender or "(Messaging Service)",
            "sms": sms.text,
            "encoding": sms.encoding,
            "segments": str(sms.segments),
            "units": str(measure.units),
            "transliterated": "yes" if measure.transliterated else "no",
        }
        if measure.non_gsm:
            parts["ucs2_because_of"] = " ".join(measure.non_gsm)
        return parts

    async def send_sms(self, delivery: Delivery) -> Accepted:
        """Send, and return what the provider answered (its message ids, for receipts)."""
        composed = self.compose(delivery)
        accepted = await self.provider.send(composed.sms)
        log.info(
            "sms %s: delivery %s to %s accepted by %s as %s (%s)",
            self.name,
            delivery.id,
            mask(composed.sms.to),
            accepted.provider,
            ",".join(accepted.message_ids) or "?",
            composed.measure.describe(),
        )
        return accepted

    async def send(self, delivery: Delivery) -> str:
        accepted = await self.send_sms(delivery)
        ids = ",".join(accepted.message_ids) or "?"
        return f"{accepted.provider} {ids}" + (f" ({accepted.status})" if accepted.status else "")

    def parse_receipt(self, request: ReceiptRequest) -> list[Receipt | Reply]:
        """A provider's status callback to ``/v1/receipts/NAME``, read by its adapter.

        Twilio's are always signed (``X-Twilio-Signature``, the auth token); Vonage's when
        ``vonage.signature_secret`` is set. The outbox takes none (``NotImplementedError``).
        """
        receipts = self.provider.parse_receipt(request)
        for item in receipts:
            if isinstance(item, Reply):
                log.info("sms %s: reply from %s (%s)", self.name, mask(item.sender), item.opt)
                continue
            log.info(
                "sms %s: receipt for delivery %s: %s (%s)",
                self.name,
                item.delivery_id,
                item.status,
                item.detail,
            )
        return receipts
