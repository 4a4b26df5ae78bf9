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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway import OutboundPolicy, PermanentError, TransientError

from ..config import VonageOptions
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
    raise PermanentError(f"vonage: {meaning} ({said})")
