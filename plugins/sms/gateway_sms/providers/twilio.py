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

Status callbacks (https://www.twilio.com/docs/messaging/guides/track-outbound-message-status,
https://www.twilio.com/docs/usage/webhooks/webhooks-security): Twilio POSTs a form
(``MessageSid``, ``MessageStatus``, ``ErrorCode``, ``To``, ``From``, ``AccountSid``...) to
``StatusCallback`` at each status change, signed in ``X-Twilio-Signature``: base64 of the
HMAC-SHA1, keyed with the auth token, of the full URL followed by every POST parameter's
name and value, in parameter-name order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from gateway import (
    OutboundPolicy,
    PermanentError,
    Receipt,
    ReceiptRequest,
    ReceiptStatus,
    Reply,
    SignatureError,
    TransientError,
)

from ..config import TwilioOptions
from .base import (
    Accepted,
    HttpProvider,
    OutgoingSms,
    check_base_url,
    decode_json,
    delivery_reference,
    excerpt,
    form_pairs,
    header,
    media_type,
    refuse_redirect,
    retry_after,
)

log = logging.getLogger("tocsin.sms")

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
#: Codes that prove the recipient cannot or will not get messages: the address goes to
#: the suppression list with this reason (21610: the number replied STOP to this sender,
#: and Twilio refuses it until it replies START).
SUPPRESS_CODES: Final = {
    21211: "invalid_number",
    21610: "stop_reply",
    21614: "invalid_number",
}
#: Codes that mean "later": 20429 too many requests, 21611 sender's queue full.
TRANSIENT_CODES: Final = {
    20429: "too many requests",
    21611: "the sender's queue of outgoing messages is full",
}


SIGNATURE_HEADER: Final = "X-Twilio-Signature"
#: Present when a Webhooks Rule signs with its own shared key instead of the auth token.
SIGNATURE_SETTINGS_HEADER: Final = "X-Twilio-Webhooks-Signature-Settings"
#: The query parameter of ``StatusCallback`` naming the Tocsin delivery.
DELIVERY_PARAMETER: Final = "delivery"

#: ``MessageStatus`` values that end the story; the others (``queued``, ``accepted``,
#: ``scheduled``, ``sending``, ``sent``...) are steps on the way.
DELIVERED_STATUSES: Final = frozenset({"delivered", "read"})
FAILED_STATUSES: Final = frozenset({"undelivered", "failed"})

#: ``ErrorCode`` values of a status callback that list the recipient (``SUPPRESS_CODES``,
#: and 30005: the number does not exist).
RECEIPT_SUPPRESS: Final = {"21610": "stop_reply", "30005": "invalid_number"}

#: Replies opting out and back in: Twilio's default keywords, matched against the whole
#: body, whatever the case (support.twilio.com, "Twilio support for opt-out keywords");
#: with Advanced Opt-Out, Twilio says which in ``OptOutType`` instead.
STOP_WORDS: Final = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS: Final = frozenset({"START", "UNSTOP"})

#: ``ErrorCode`` values of undelivered and failed messages (https://www.twilio.com/docs/api/errors).
DELIVERY_ERRORS: Final = {
    "30001": "queue overflow",
    "30002": "account suspended",
    "30003": "unreachable destination handset",
    "30004": "message blocked",
    "30005": "unknown destination handset",
    "30006": "landline or unreachable carrier",
    "30007": "message filtered by the carrier",
    "30008": "unknown error",
    "30009": "missing inbound segment",
    "30010": "message price exceeds max price",
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

    def parse_receipt(self, request: ReceiptRequest) -> list[Receipt | Reply]:
        """A status callback, or an incoming message: signature checked against the auth
        token, then read."""
        params: list[tuple[str, str]] = []
        if request.method == "POST" and (
            media_type(request.headers) == "application/x-www-form-urlencoded"
        ):
            params = form_pairs(request)
        verify_signature(self.options.auth_token.reveal(), request, params)
        fields = {**request.query, **dict(params)}  # a GET callback has them in the query
        sid = fields.get("MessageSid") or fields.get("SmsSid")
        state = fields.get("MessageStatus") or fields.get("SmsStatus")
        if sid and "Body" in fields and "From" in fields and state in (None, "received"):
            return [incoming(sid, fields)]
        if not sid or not state:
            raise ValueError("not a Twilio message status callback: no MessageSid or MessageStatus")
        delivery_id = delivery_reference(request.query.get(DELIVERY_PARAMETER))
        if delivery_id is None:
            # Genuine, but about a message sent without our StatusCallback: nothing to record,
            # and refusing it would only make Twilio call again.
            log.info("twilio: receipt for %s names no Tocsin delivery: ignored", sid)
            return []
        status: ReceiptStatus = "pending"
        if state in DELIVERED_STATUSES:
            status = "delivered"
        elif state in FAILED_STATUSES:
            status = "failed"
        detail = f"twilio {sid}: {state}"
        code = fields.get("ErrorCode", "")
        if code and code != "0":
            meaning = DELIVERY_ERRORS.get(code)
            detail += f" (error {code}: {meaning})" if meaning else f" (error {code})"
        suppress = RECEIPT_SUPPRESS.get(code) if status == "failed" else None
        return [
            Receipt(
                delivery_id=delivery_id,
                status=status,
                detail=detail,
                provider_id=sid,
                suppress=suppress,
                address=fields.get("To") if suppress else None,
            )
        ]


def incoming(sid: str, fields: Mapping[str, str]) -> Reply:
    """A message the recipient sent to the account's number (the number's or Messaging
    Service's incoming-message webhook pointed at ``/v1/receipts/NAME``): ``From``,
    ``Body``, and ``OptOutType`` (``STOP``/``START``/``HELP``) under Advanced Opt-Out."""
    body = fields.get("Body", "")
    said = (fields.get("OptOutType") or body).strip().upper()
    opt: Literal["stop", "start"] | None = None
    if said in STOP_WORDS:
        opt = "stop"
    elif said in START_WORDS:
        opt = "start"
    return Reply(sender=fields["From"], text=body, opt=opt, provider_id=sid)


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` carrying ``params`` (POST fields)."""
    signed = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signed_urls(url: str) -> list[str]:
    """The URL as called, and its spellings with and without the port.

    Twilio's own validators accept both, since Twilio signs some URLs with the default
    port written out and others without it.
    """
    parts = urlsplit(url)
    urls = [url]
    try:
        port = parts.port
    except ValueError:  # not a number: no other spelling to try
        return urls
    host = parts.netloc.rpartition(":")[0]
    if port is not None and host:
        urls.append(urlunsplit(parts._replace(netloc=host)))
    elif parts.scheme in ("http", "https"):
        default = "443" if parts.scheme == "https" else "80"
        urls.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
    return urls


def verify_signature(
    auth_token: str, request: ReceiptRequest, params: list[tuple[str, str]]
) -> None:
    """``SignatureError`` unless ``X-Twilio-Signature`` is the auth token's for this call."""
    given = header(request.headers, SIGNATURE_HEADER)
    if not given:
        raise SignatureError(f"no {SIGNATURE_HEADER} header: not a request from Twilio")
    if header(request.headers, SIGNATURE_SETTINGS_HEADER):
        raise SignatureError(
            "signed with a Webhooks Rule shared key, not the auth token: remove the rule "
            "for this URL in Twilio"
        )
    given_bytes = given.strip().encode("utf-8", "replace")
    matches = [
        hmac.compare_digest(signature(auth_token, url, params).encode("ascii"), given_bytes)
        for url in signed_urls(request.url)
    ]
    if not any(matches):
        raise SignatureError(
            f"{SIGNATURE_HEADER} does not match (wrong auth_token, or the URL Twilio called "
            "is not the one the gateway sees: set [intake] public_url behind a proxy)"
        )


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
    return PermanentError(
        f"twilio: HTTP {status}, {meaning} ({said})",
        status=status,
        suppress=SUPPRESS_CODES.get(code or 0),
    )


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit(parts._replace(query=query))
