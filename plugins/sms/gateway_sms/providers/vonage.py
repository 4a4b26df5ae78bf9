"""Vonage (ex-Nexmo) SMS API: ``POST https://rest.nexmo.com/sms/json``.

Wire format (https://developer.vonage.com/en/api/sms, errors:
https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms):

- body ``application/x-www-form-urlencoded`` (JSON is accepted too) with ``api_key``,
  ``api_secret``, ``from`` (alphanumeric sender ID or number), ``to`` (E.164 digits without
  ``+``), ``text``, ``type`` (``text`` for GSM-7, ``unicode`` for anything else),
  ``client-ref`` (our delivery id, echoed in delivery receipts) and ``callback``;
- the answer is **HTTP 200 whatever happened**: JSON ``{"message-count": "2", "messages":
  [{"to": ..., "message-id": ..., "status": "0", ...}, ...]}`` with one entry per segment.
  ``status`` ``"0"`` is success; anything else is an error code with ``error-text``.
  Credentials are checked the same way: a wrong secret is ``status "4"`` in a 200.

Delivery receipts (https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts):
Vonage calls ``callback`` (or the dashboard's URL) once per segment, as a GET query, a
POST form or a POST JSON object (the dashboard chooses), with ``messageId``, ``status``,
``err-code``, ``client-ref``, ``msisdn``, ``to``, ``api-key``, ``message-timestamp``...
Signed webhooks (https://developer.vonage.com/en/getting-started/concepts/signing-messages)
add ``timestamp``, ``nonce`` and ``sig``: over every other parameter, sorted by name, the
string ``&name=value&name=value`` (``&`` and ``=`` in values replaced by ``_``), then
either the MD5 of that string followed by the signature secret (``md5hash``), or its
HMAC keyed with the secret (``md5``, ``sha1``, ``sha256``, ``sha512``), in hexadecimal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Final, Literal

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

from ..config import VonageOptions, VonageSignatureMethod
from .base import (
    Accepted,
    HttpProvider,
    OutgoingSms,
    check_base_url,
    decode_json,
    delivery_reference,
    excerpt,
    form_pairs,
    media_type,
    refuse_redirect,
    retry_after,
)

log = logging.getLogger("tocsin.sms")

#: Vonage status codes: (worth retrying, what it means).
STATUS_CODES: Final[dict[str, tuple[bool, str]]] = {
    "1": (True, "throttled: sending faster than the account's limit"),
    "2": (False, "missing parameters"),
    "3": (False, "invalid parameters (recipient number, sender or text)"),
    "4": (False, "invalid credentials: check api_key and api_secret"),
    "5": (True, "internal error at Vonage"),
    "6": (False, "invalid message: Vonage cannot route it (unrecognised number prefix)"),
    "7": (False, "recipient number barred"),
    "8": (False, "Vonage account barred (suspended)"),
    # Out of credit: topping up fixes it, and the retry schedule gives a day to do so.
    "9": (True, "insufficient credit on the Vonage account"),
    "10": (True, "too many connections to Vonage"),
    "11": (False, "account not enabled for the HTTP SMS API"),
    "12": (False, "message too long"),
    "14": (False, "invalid signature"),
    "15": (False, "invalid sender address: this sender ID is not allowed"),
    "22": (False, "invalid network code"),
    "23": (False, "invalid callback URL"),
    "29": (False, "destination not whitelisted (the Vonage account is in demo mode)"),
    "32": (False, "signature and API secret both given"),
    "33": (False, "recipient number de-activated"),
}
#: Send statuses that list the recipient on the suppression list.
SUPPRESS_STATUSES: Final = {"33": "invalid_number"}


#: Delivery-receipt ``status`` values and what they mean for the delivery.
RECEIPT_STATUSES: Final[dict[str, ReceiptStatus]] = {
    "delivered": "delivered",
    "failed": "failed",
    "rejected": "failed",
    "expired": "failed",
    "accepted": "pending",
    "buffered": "pending",
    "unknown": "pending",
}

#: ``err-code`` values of a failed receipt that list the recipient.
RECEIPT_SUPPRESS: Final = {"3": "invalid_number", "9": "stop_reply"}
#: Replies opting out and back in (the whole text, any case): Vonage passes them on
#: (https://developer.vonage.com/messaging/sms/guides/inbound-sms: ``msisdn``, ``text``,
#: ``keyword``); ARRET is the French-language opt-out word carriers also honour.
STOP_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "ARRET", "ARRÊT"}
)
START_WORDS: Final = frozenset({"START", "UNSTOP"})

#: Delivery-receipt ``err-code`` values.
RECEIPT_ERRORS: Final = {
    "1": "unknown",
    "2": "absent subscriber, temporary",
    "3": "absent subscriber, permanent",
    "4": "call barred by user",
    "5": "portability error",
    "6": "anti-spam rejection",
    "7": "handset busy",
    "8": "network error",
    # Vonage, "Messaging Opted-out Numbers": err-code 9 is the recipient having asked not
    # to get messages from this sender (it replied STOP); the SMS API accepted the send.
    "9": "illegal number: the recipient opted out (STOP) of this sender",
    "10": "invalid message",
    "11": "unroutable",
    "12": "destination unreachable",
    "13": "subscriber age restriction",
    "14": "number blocked by carrier",
    "15": "pre-paid, insufficient funds",
    "99": "general error",
}


class Vonage(HttpProvider):
    name = "vonage"

    def __init__(self, options: VonageOptions, timeout: float, outbound: OutboundPolicy) -> None:
        super().__init__(timeout, outbound)
        self.options = options
        self.url = check_base_url(options.base_url, "vonage.base_url") + "/sms/json"
        if options.callback is not None:
            check_base_url(options.callback.split("?", 1)[0], "vonage.callback")

    def target(self) -> str:
        return f"vonage ({self.url})"

    def form(self, sms: OutgoingSms) -> dict[str, str]:
        if sms.sender is None:
            raise PermanentError("vonage: a sender is required")
        form = {
            "api_key": self.options.api_key,
            "api_secret": self.options.api_secret.reveal(),
            "from": sms.sender.removeprefix("+"),
            "to": sms.to.removeprefix("+"),
            "text": sms.text,
            "type": "text" if sms.encoding == "GSM-7" else "unicode",
            "client-ref": sms.delivery_id,
        }
        if self.options.callback is not None:
            form["callback"] = self.options.callback
        return form

    async def send(self, sms: OutgoingSms) -> Accepted:
        status, headers, body = await self.post_form(self.url, self.form(sms))
        if status != 200:
            raise http_error(status, headers, body)
        return accepted_or_error(decode_json(body), body)

    def parse_receipt(self, request: ReceiptRequest) -> list[Receipt | Reply]:
        """A delivery receipt (one per segment): signature checked when configured, then read."""
        params = receipt_params(request)
        secret = self.options.signature_secret
        if secret is not None:
            verify_signature(secret.reveal(), self.options.signature_method, params)
        message_id, state = params.get("messageId"), params.get("status")
        if message_id and state is None and "msisdn" in params and "text" in params:
            return [inbound(message_id, params)]
        if not message_id or not state:
            raise ValueError("not a Vonage delivery receipt: no messageId or status")
        account = params.get("api-key")
        if account is not None and account != self.options.api_key:
            raise ValueError(f"receipt for Vonage account {account!r}, not this channel's api_key")
        delivery_id = delivery_reference(params.get("client-ref"))
        if delivery_id is None:
            # A message this channel did not send (another application on the account).
            log.info("vonage: receipt for %s names no Tocsin delivery: ignored", message_id)
            return []
        detail = f"vonage {message_id}: {state}"
        code = params.get("err-code", "")
        if code and code != "0":
            meaning = RECEIPT_ERRORS.get(code)
            detail += f" (err-code {code}: {meaning})" if meaning else f" (err-code {code})"
        status = RECEIPT_STATUSES.get(state, "pending")
        suppress = RECEIPT_SUPPRESS.get(code) if status == "failed" else None
        msisdn = params.get("msisdn")
        return [
            Receipt(
                delivery_id=delivery_id,
                status=status,
                detail=detail,
                provider_id=message_id,
                suppress=suppress,
                address=f"+{msisdn.lstrip('+')}" if suppress and msisdn else None,
            )
        ]


def inbound(message_id: str, params: Mapping[str, str]) -> Reply:
    """An inbound SMS (the account's inbound webhook pointed at ``/v1/receipts/NAME``)."""
    text = params.get("text", "")
    said = text.strip().upper()
    opt: Literal["stop", "start"] | None = None
    if said in STOP_WORDS:
        opt = "stop"
    elif said in START_WORDS:
        opt = "start"
    sender = "+" + params["msisdn"].lstrip("+")
    return Reply(sender=sender, text=text, opt=opt, provider_id=message_id)


def receipt_params(request: ReceiptRequest) -> dict[str, str]:
    """A receipt's parameters: the query of a GET, the form or JSON object of a POST."""
    if request.method == "GET":
        return dict(request.query)
    kind = media_type(request.headers)
    if kind == "application/x-www-form-urlencoded":
        return dict(form_pairs(request))
    if kind == "application/json":
        try:
            data = json.loads(request.body)
        except ValueError:
            raise ValueError("body is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("JSON body is not an object")
        params = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
            params[name] = str(value)
        return params
    raise ValueError(
        f"unexpected {request.method} body {kind or 'without Content-Type'}: Vonage sends "
        "a query (GET), a form or JSON (POST)"
    )


def signature(secret: str, method: VonageSignatureMethod, params: Mapping[str, str]) -> str:
    """``sig`` for ``params`` (without ``sig``), lower-case hexadecimal."""
    signed = "".join(
        f"&{name}={value.replace('&', '_').replace('=', '_')}"
        for name, value in sorted(params.items())
    )
    if method == "md5hash":
        return hashlib.md5((signed + secret).encode()).hexdigest()
    return hmac.new(secret.encode(), signed.encode(), method).hexdigest()


def verify_signature(secret: str, method: VonageSignatureMethod, params: dict[str, str]) -> None:
    """``SignatureError`` unless ``sig`` is the secret's for the other parameters.

    ``sig`` is removed from ``params``.
    """
    given = params.pop("sig", "")
    if not given:
        raise SignatureError("no 'sig' parameter, and vonage.signature_secret is set")
    expected = signature(secret, method, params)
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace")):
        raise SignatureError(
            f"'sig' does not match (wrong signature_secret, or the dashboard signs with another "
            f"method than {method!r})"
        )


def http_error(
    status: int, headers: Mapping[str, str], body: bytes
) -> PermanentError | TransientError:
    """An answer other than 200: Vonage's edge refusing before the SMS API answered."""
    if 300 <= status < 400:
        return refuse_redirect("vonage", status, headers)
    said = excerpt(body) or "no body"
    if status in (408, 425, 429) or status >= 500:
        return TransientError(
            f"vonage: HTTP {status} ({said})", status=status, retry_after=retry_after(headers)
        )
    meaning = "authentication failed" if status in (401, 403) else "refused"
    return PermanentError(f"vonage: HTTP {status}, {meaning} ({said})", status=status)


def accepted_or_error(answer: object, body: bytes) -> Accepted:
    """Read a 200 answer: every segment accepted, or the error its status codes name."""
    messages = answer.get("messages") if isinstance(answer, dict) else None
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        # 200 without the documented body: whether it was sent is unknown. Failing for good
        # (a replay is one command away) beats a retry that may send it twice.
        raise PermanentError(
            f"vonage: HTTP 200 without a readable 'messages' list ({excerpt(body)}); the "
            "message may have been sent, so it is not retried"
        )
    accepted = [m for m in messages if str(m.get("status")) == "0"]
    refused = [m for m in messages if str(m.get("status")) != "0"]
    if not refused:
        ids = tuple(str(m["message-id"]) for m in accepted if m.get("message-id") is not None)
        return Accepted("vonage", ids, "accepted")
    first = refused[0]
    code = str(first.get("status"))
    text = first.get("error-text") or ""
    retryable, meaning = STATUS_CODES.get(code, (False, "unknown status"))
    said = f"status {code}: {text}" if text else f"status {code}"
    if accepted:
        # Some segments went out: retrying would send them again. Operators decide.
        raise PermanentError(
            f"vonage: {len(accepted)} of {len(messages)} segments accepted, then {meaning} "
            f"({said}); not retried, so that the accepted part is not sent twice"
        )
    if retryable:
        # Throttling clears within a second; other causes take the normal schedule.
        delay = 1.0 if code == "1" else None
        raise TransientError(f"vonage: {meaning} ({said})", retry_after=delay)
    raise PermanentError(f"vonage: {meaning} ({said})", suppress=SUPPRESS_STATUSES.get(code))
