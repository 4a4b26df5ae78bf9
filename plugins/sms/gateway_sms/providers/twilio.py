"""Twilio Programmable Messaging: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

Wire format (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource):

- HTTP Basic auth, user ``AccountSid``, password the auth token;
- body ``application/x-www-form-urlencoded``: ``To`` (E.164), ``From`` (number, short code or
  alphanumeric sender ID) and/or ``MessagingServiceSid``, ``Body``, optional ``StatusCallback``;
- success: ``201 Created``, JSON with ``sid`` (``SM...``), ``status`` (``queued``, or
  ``accepted`` through a Messaging Service), ``num_segments``...;
- failure: JSON ``{"code": 21211, "message": "...", "more_info": "...", "status": 400}``,
  the HTTP status repeated in ``status``.

Twilio takes no idempotency key on this call: a send retried after a timeout may reach
the phone twice. The delivery id travels in the status callback URL instead, so the
receipts Twilio posts there name the Tocsin delivery.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlencode, urlsplit, urlunsplit

from gateway import OutboundPolicy, PermanentError, TransientError

from ..config import TwilioOptions
from .base import (
    Accepted,
    HttpProvider,
    OutgoingSms,
    check_base_url,
    decode_json,
    excerpt,
    refuse_redirect,
    retry_after,
)

API_VERSION: Final = "2010-04-01"

#: Twilio error codes answered when creating a message, and what they mean for us.
#: https://www.twilio.com/docs/api/errors
PERMANENT_CODES: Final = {
    20003: "authentication failed: check account_sid and auth_token",
    20404: "resource not found: check account_sid (and base_url)",
    21211: "invalid recipient number ('To')",
    21212: "invalid sender ('From'): not a valid phone number, short code or sender ID",
    21408: "no permission to send to this region (enable it in Twilio's geo permissions)",
    21602: "message body is required",
    21603: "a 'From' number or MessagingServiceSid is required",
    21604: "a 'To' number is required",
    21606: "sender ('From') is not a message-capable number of this account",
    21610: "recipient unsubscribed (replied STOP): Twilio will not send to this number",
    21612: "Twilio cannot route a message from this sender to this recipient",
    21614: "recipient ('To') is not a mobile number",
    21617: "message body exceeds 1600 characters",
    21659: "sender ('From') is not a Twilio number of this account",
    21660: "sender ('From') does not belong to this account",
}
#: Codes that mean "later": 20429 too many requests, 21611 sender's queue full.
TRANSIENT_CODES: Final = {
    20429: "too many requests",
    21611: "the sender's queue of outgoing messages is full",
}


class Twilio(HttpProvider):
    name = "twilio"

    def __init__(self, options: TwilioOptions, timeout: float, outbound: OutboundPolicy) -> None:
        super().__init__(timeout, outbound)
        self.options = options
        base = check_base_url(options.base_url, "twilio.base_url")
        self.url = f"{base}/{API_VERSION}/Accounts/{options.account_sid}/Messages.json"
        if options.status_callback is not None:
            check_base_url(options.status_callback.split("?", 1)[0], "twilio.status_callback")
        credentials = f"{options.account_sid}:{options.auth_token.reveal()}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")

    def target(self) -> str:
        return f"twilio ({self.url})"

    def form(self, sms: OutgoingSms) -> dict[str, str]:
        form = {"To": sms.to, "Body": sms.text}
        if sms.sender is not None:
            form["From"] = sms.sender
        if self.options.messaging_service_sid is not None:
            form["MessagingServiceSid"] = self.options.messaging_service_sid
        if self.options.status_callback is not None:
            form["StatusCallback"] = _with_query(
                self.options.status_callback, {"delivery": sms.delivery_id}
            )
        return form

    async def send(self, sms: OutgoingSms) -> Accepted:
        status, headers, body = await self.post_form(
            self.url, self.form(sms), authorization=self._authorization
        )
        answer = decode_json(body)
        if 200 <= status < 300:
            # Accepted, whatever else the body says: raising now would send it again.
            if isinstance(answer, dict) and isinstance(answer.get("sid"), str):
                state = answer.get("status")
                sid = answer["sid"]
                return Accepted(self.name, (sid,), state if isinstance(state, str) else None)
            return Accepted(self.name, ())
        raise error_for(status, headers, answer, body)


def error_for(
    status: int, headers: Mapping[str, str], answer: object, body: bytes
) -> PermanentError | TransientError:
    """The exception a Twilio error answer stands for."""
    if 300 <= status < 400:
        return refuse_redirect("twilio", status, headers)
    fields = answer if isinstance(answer, dict) else {}
    raw_code, message = fields.get("code"), fields.get("message")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    said = f"{code}: {message}" if code is not None else excerpt(body) or "no error body"
    if status == 429 or status >= 500 or code in TRANSIENT_CODES:
        meaning = TRANSIENT_CODES.get(code or 0) or (
            "too many requests" if status == 429 else "provider unavailable"
        )
        return TransientError(
            f"twilio: HTTP {status}, {meaning} ({said})",
            status=status,
            retry_after=retry_after(headers),
        )
    meaning = PERMANENT_CODES.get(code or 0) or (
        "authentication failed" if status == 401 else "refused"
    )
    return PermanentError(f"twilio: HTTP {status}, {meaning} ({said})", status=status)


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit(parts._replace(query=query))
