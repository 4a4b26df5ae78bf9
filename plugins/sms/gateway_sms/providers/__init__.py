"""Provider adapters: one module per provider, all behind ``Provider``.

- ``outbox``: the embedded default, one JSON line per message in a local file;
- ``twilio``: Twilio's REST API (``Messages.json``);
- ``vonage``: Vonage's SMS API (``/sms/json``).
"""

from __future__ import annotations

from pathlib import Path

from gateway import OutboundPolicy

from ..config import OutboxOptions, SmsConfig
from .base import Accepted, HttpProvider, OutgoingSms, Provider
from .outbox import Outbox
from .twilio import Twilio
from .vonage import Vonage


def build_provider(
    config: SmsConfig, channel: str, data_dir: Path, outbound: OutboundPolicy
) -> Provider:
    """The adapter ``config.provider`` names; ``ValueError`` for a conf problem. Opens nothing."""
    if config.provider == "twilio":
        if config.twilio is None:
            raise ValueError(
                "provider 'twilio' needs a [channels.NAME.twilio] table (account_sid, auth_token)"
            )
        return Twilio(config.twilio, float(config.timeout), outbound)
    if config.provider == "vonage":
        if config.vonage is None:
            raise ValueError(
                "provider 'vonage' needs a [channels.NAME.vonage] table (api_key, api_secret)"
            )
        return Vonage(config.vonage, float(config.timeout), outbound)
    options = config.outbox or OutboxOptions()
    if not options.path.strip():
        raise ValueError("outbox.path: must not be empty")
    return Outbox(data_dir / options.path, channel)


__all__ = [
    "Accepted",
    "HttpProvider",
    "Outbox",
    "OutgoingSms",
    "Provider",
    "Twilio",
    "Vonage",
    "build_provider",
]
