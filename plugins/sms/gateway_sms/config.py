"""The ``[channels.NAME]`` table of an ``sms`` channel, and its provider sub-tables.

```toml
[channels.customer_sms]
type = "sms"
provider = "twilio"           # outbox (default) | twilio | vonage
sender = "MaBoutique"         # alphanumeric (1-11, one letter at least) or E.164
default_region = "FR"         # how to read national numbers such as 06 12 34 56 78
max_segments = 3              # more fails the delivery, never truncates
transliterate = true          # ê -> e, ç -> c... when that keeps the SMS in GSM-7
timeout = "10s"

[channels.customer_sms.twilio]
account_sid = "AC..."
auth_token = "${TWILIO_AUTH_TOKEN}"
```

Each provider's options live in their own sub-table, so switching provider is one line
and no field means two things. Sub-tables for providers other than the one chosen are
refused rather than ignored. Quiet hours are not configured here: sending windows are the
core's (a rule's ``window``, or ``window`` in the core-owned ``[channels.NAME.delivery]``),
applied before a delivery reaches the channel, so nothing here depends on the clock.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

import msgspec

from gateway import Duration, Secret

ProviderName = Literal["outbox", "twilio", "vonage"]
#: Vonage's signature methods: ``md5hash`` (MD5 of the parameters and the secret, the
#: dashboard's default) or an HMAC keyed with the secret.
VonageSignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]

_TWILIO_ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
_TWILIO_SERVICE_SID: Final = re.compile(r"MG[0-9a-fA-F]{32}")


class OutboxOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The JSON-lines file, relative to ``[gateway] data_dir`` (an absolute path stays).
    path: str = "outbox/sms.jsonl"


class TwilioOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``AC`` + 32 hex digits: the account in the URL and the Basic-auth user.
    account_sid: str
    #: The account's auth token (Basic-auth password).
    auth_token: Secret
    #: ``MG`` + 32 hex digits: send through a Messaging Service (``sender`` becomes optional).
    messaging_service_sid: str | None = None
    #: Twilio POSTs status changes here; ``?delivery=<delivery id>`` is appended so each
    #: receipt names the Tocsin delivery it is about.
    status_callback: str | None = None
    base_url: str = "https://api.twilio.com"

    def problems(self) -> list[str]:
        found = []
        if not _TWILIO_ACCOUNT_SID.fullmatch(self.account_sid):
            found.append("twilio.account_sid: expected AC followed by 32 hexadecimal digits")
        if self.messaging_service_sid is not None and not _TWILIO_SERVICE_SID.fullmatch(
            self.messaging_service_sid
        ):
            found.append(
                "twilio.messaging_service_sid: expected MG followed by 32 hexadecimal digits"
            )
        return found


class VonageOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: The account's API key (sent as ``api_key``).
    api_key: str
    #: The account's API secret (sent as ``api_secret``).
    api_secret: Secret
    #: Delivery-receipt URL for these messages (``callback``), overriding the dashboard's.
    callback: str | None = None
    #: The account's signature secret (dashboard, API settings): when set, delivery
    #: receipts must carry a valid ``sig`` (ask Vonage support to sign webhooks) and
    #: unsigned or forged ones are refused. Unset, receipts are taken unsigned.
    signature_secret: Secret | None = None
    #: The signature method chosen in the dashboard for that secret.
    signature_method: VonageSignatureMethod = "md5hash"
    base_url: str = "https://rest.nexmo.com"

    def problems(self) -> list[str]:
        found = []
        if not self.api_key.strip():
            found.append("vonage.api_key: must not be empty")
        if self.signature_secret is not None and not self.signature_secret.reveal().strip():
            found.append("vonage.signature_secret: must not be empty (or leave it unset)")
        return found


class SmsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    provider: ProviderName = "outbox"
    #: Alphanumeric sender ID (1-11 of A-Z a-z 0-9 space, one letter at least) or an
    #: E.164 number. Required, except with a Twilio ``messaging_service_sid``.
    sender: str | None = None
    #: ISO 3166 region (``FR``, ``BE``...) used to read numbers written without ``+``;
    #: unset, such numbers fail their delivery.
    default_region: str | None = None
    #: A message needing more segments fails for good (never truncated).
    max_segments: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    #: Replace characters GSM-7 lacks (ê, â, ç, œ, curly quotes, no-break spaces...) by
    #: their nearest GSM-7 spelling when that keeps the whole message in GSM-7.
    transliterate: bool = False
    #: Refuse fixed lines, toll-free, premium-rate and shared-cost numbers up front.
    refuse_landlines: bool = True
    #: Whole HTTP request to the provider.
    timeout: Duration = Duration(10)
    outbox: OutboxOptions | None = None
    twilio: TwilioOptions | None = None
    vonage: VonageOptions | None = None
