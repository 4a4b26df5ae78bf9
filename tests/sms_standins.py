"""Stand-ins for the SMS providers' HTTP APIs, on real sockets (127.0.0.1).

Each one implements its provider's documented request and answer shapes, and refuses
what the real API refuses, with the real error shapes and codes:

- ``TwilioStandIn``: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, HTTP Basic
  auth, form fields ``To``/``From``/``MessagingServiceSid``/``Body``/``StatusCallback``;
  ``201`` with the Message resource, or ``{"code", "message", "more_info", "status"}``.
  Twilio's documented test numbers behave as with test credentials (+15005550001 invalid,
  +15005550004 blocked...).
- ``VonageStandIn``: ``POST /sms/json``, ``api_key``/``api_secret`` in the body (form or
  JSON), always ``200`` with ``{"message-count", "messages": [...]}``, one entry per
  segment, ``status`` ``"0"`` or an error code with ``error-text``.

Both record what they accepted (``accepted``), everything they were sent (``requests``),
and answer ``fail_next`` failures first, to play 429s, 500s or throttling.

After accepting a message, each can call back with a delivery receipt as the provider
does (``receipt(...)`` builds the call, ``send_receipt(...)`` makes it):

- Twilio: a form POST to the message's ``StatusCallback`` (``MessageSid``,
  ``MessageStatus``, ``ErrorCode``...), signed in ``X-Twilio-Signature``;
- Vonage: a GET query, POST form or POST JSON (``dlr_method``) to the message's
  ``callback`` or the account's ``dlr_url``, one per segment (``messageId``, ``status``,
  ``err-code``, ``client-ref``...), signed with ``sig`` when ``signature_secret`` is set.

The signing code here is written from the providers' documentation, independently of
``gateway_sms``; the tests check it against the providers' own libraries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web

from gateway.redis_server import free_port

_E164 = re.compile(r"\+[1-9]\d{1,14}")
_ALPHANUMERIC = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")

#: The GSM-7 repertoire, written out independently of gateway_sms (stand-ins must not
#: reuse the code they check): basic table, then the extension table (2 septets each).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = set("\f^{}\\[~]|€")


def naive_segments(text: str, unicode: bool) -> int:
    """How many parts a provider bills: the plain formula, enough for a stand-in."""
    if unicode:
        units = len(text.encode("utf-16-le")) // 2
        return 1 if units <= 70 else math.ceil(units / 67)
    units = sum(2 if ch in _GSM_EXTENSION else 1 for ch in text)
    return 1 if units <= 160 else math.ceil(units / 153)


def is_gsm(text: str) -> bool:
    return all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text)


@dataclass
class Failure:
    """An answer to give instead of processing the next request."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StandIn:
    port: int = field(default_factory=free_port)
    #: Messages accepted, as the provider received them (plus the ids it gave).
    accepted: list[dict[str, Any]] = field(default_factory=list)
    #: Every request: method, path, content type, headers and body bytes.
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: list[Failure] = field(default_factory=list)
    #: When set, requests wait for this event before being answered (to play a timeout).
    hold: asyncio.Event | None = None
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> StandIn:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def record(self, request: web.Request) -> bytes:
        if self.hold is not None:
            await self.hold.wait()
        body = await request.read()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "content_type": request.content_type,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return body

    def accept(self, message: dict[str, Any]) -> None:
        self.accepted.append(message)
        self._arrived.set()

    def injected(self) -> web.Response | None:
        if not self.fail_next:
            return None
        failure = self.fail_next.pop(0)
        return web.json_response(failure.body, status=failure.status, headers=failure.headers)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} messages, got {len(self.accepted)}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.accepted


@dataclass
class ReceiptCall:
    """A status callback as a provider makes it: tests may alter it before it is sent."""

    method: str
    #: The URL the provider calls (and signs, for Twilio).
    url: str
    #: Query (GET), form fields or JSON members (POST), as the provider sends them.
    params: dict[str, str]
    #: How ``params`` travel: ``query``, ``form`` or ``json``.
    encoding: Literal["query", "form", "json"]
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, via: str | None = None) -> tuple[int, Any]:
        """Make the call; ``via`` (``http://127.0.0.1:PORT``) stands for a proxy that the
        public URL's host points to. Returns the status and the JSON (or text) answer."""
        url = self.url
        if via is not None:
            proxy = urlsplit(via)
            url = urlunsplit(urlsplit(url)._replace(scheme=proxy.scheme, netloc=proxy.netloc))
        kwargs: dict[str, Any] = {"headers": dict(self.headers)}
        if self.encoding == "query":
            parts = urlsplit(url)
            query = "&".join(q for q in (parts.query, urlencode(self.params)) if q)
            url = urlunsplit(parts._replace(query=query))
        elif self.encoding == "form":
            kwargs["data"] = urlencode(self.params).encode()
            kwargs["headers"].setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            kwargs["data"] = json.dumps(self.params).encode()
            kwargs["headers"].setdefault("Content-Type", "application/json")
        async with (
            aiohttp.ClientSession() as session,
            session.request(self.method, url, **kwargs) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


# --- Twilio -------------------------------------------------------------------------------

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-test-auth-token-0123456789"
TWILIO_SERVICE = "MG" + "fedcba9876543210" * 2

#: Twilio's magic test numbers (https://www.twilio.com/docs/iam/test-credentials).
TWILIO_MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number: +15005550002, is not currently reachable."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
TWILIO_MAGIC_FROM = {
    "+15005550001": (21212, "The 'From' number +15005550001 is not a valid phone number."),
    "+15005550007": (
        21606,
        "The 'From' phone number provided is not a valid, "
        "message-capable Twilio phone number for this destination.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's ``X-Twilio-Signature``: base64(HMAC-SHA1(auth token, URL + each POST
    parameter's name and value, by name)), per Twilio's webhook-security documentation."""
    data = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def twilio_error(code: int, message: str, status: int = 400) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


@dataclass
class TwilioStandIn(StandIn):
    account_sid: str = TWILIO_SID
    auth_token: str = TWILIO_TOKEN
    #: Phone numbers this account owns (valid ``From`` numbers).
    owned_numbers: set[str] = field(default_factory=lambda: {"+15005550006", "+33757000001"})
    services: set[str] = field(default_factory=lambda: {TWILIO_SERVICE})
    #: Numbers Twilio's own lookup rejects with 21211, on top of the format check.
    invalid_numbers: set[str] = field(default_factory=set)
    unsubscribed: set[str] = field(default_factory=set)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self.create_message)

    def authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(f"{user}:{password}", f"{self.account_sid}:{self.auth_token}")

    async def create_message(self, request: web.Request) -> web.Response:
        await self.record(request)
        if not self.authenticated(request):
            response = twilio_error(20003, "Authenticate", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        if request.match_info["sid"] != self.account_sid:
            return twilio_error(20404, f"The requested resource {request.path} was not found", 404)
        if (injected := self.injected()) is not None:
            return injected
        # Twilio reads form parameters only: a JSON body leaves them all missing.
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: str(v) for k, v in (await request.post()).items()}
        to, sender = form.get("To"), form.get("From")
        service, body = form.get("MessagingServiceSid"), form.get("Body")
        if not to:
            return twilio_error(21604, "A 'To' phone number is required.")
        if not _E164.fullmatch(to) or to in self.invalid_numbers:
            return twilio_error(21211, f"The 'To' number {to} is not a valid phone number.")
        if to in TWILIO_MAGIC_TO:
            return twilio_error(*TWILIO_MAGIC_TO[to])
        if to in self.unsubscribed:
            return twilio_error(21610, "Attempt to send to unsubscribed recipient")
        if not sender and not service:
            return twilio_error(21603, "A 'From' phone number is required.")
        if service and service not in self.services:
            return twilio_error(21701, f"The Messaging Service Sid {service} is invalid.")
        if sender:
            if sender in TWILIO_MAGIC_FROM:
                return twilio_error(*TWILIO_MAGIC_FROM[sender])
            if sender.startswith("+"):
                if sender not in self.owned_numbers:
                    return twilio_error(
                        21606,
                        f"The From phone number {sender} is not a valid, SMS-capable inbound "
                        "phone number or short code for your account.",
                    )
            elif not _ALPHANUMERIC.fullmatch(sender):
                return twilio_error(
                    21212,
                    f"The 'From' number {sender} is not a valid phone number, shortcode, or "
                    "alphanumeric sender ID.",
                )
        if not body:
            return twilio_error(21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(
                21617, "The concatenated message body exceeds the 1600 character limit."
            )
        sid = "SM" + secrets.token_hex(16)
        status = "accepted" if service else "queued"
        segments = naive_segments(body, unicode=not is_gsm(body))
        self.accept({**form, "sid": sid})
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        resource = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return web.json_response(resource, status=201)

    def receipt(
        self,
        message: dict[str, Any],
        status: str,
        *,
        error_code: int | None = None,
        auth_token: str | None = None,
    ) -> ReceiptCall:
        """The status callback Twilio makes for an accepted ``message`` reaching ``status``
        (``sent``, ``delivered``, ``undelivered``...), signed with the account's auth token
        (or ``auth_token``, to forge one)."""
        url = message.get("StatusCallback")
        if not url:
            raise AssertionError("the message was sent without a StatusCallback")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": message.get("From") or "",
            "MessageSid": message["sid"],
            "MessageStatus": status,
            "SmsSid": message["sid"],
            "SmsStatus": status,
            "To": message["To"],
        }
        if message.get("MessagingServiceSid"):
            params["MessagingServiceSid"] = message["MessagingServiceSid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if status == "delivered":
            params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime())
        token = self.auth_token if auth_token is None else auth_token
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "X-Twilio-Signature": twilio_signature(token, url, params),
        }
        return ReceiptCall("POST", url, params, "form", headers)

    async def send_receipt(
        self,
        message: dict[str, Any],
        status: str,
        *,
        error_code: int | None = None,
        via: str | None = None,
    ) -> tuple[int, Any]:
        return await self.receipt(message, status, error_code=error_code).send(via)

    def inbound(
        self, url: str, sender: str, body: str, *, to: str = "+33757000001", advanced: bool = False
    ) -> ReceiptCall:
        """A message ``sender`` sends to one of the account's numbers, as Twilio posts it
        to the number's incoming-message webhook (``url``), signed like status callbacks
        (https://www.twilio.com/docs/messaging/guides/webhook-request). Twilio's own
        opt-out handling applies first: after a whole-body STOP word the number is
        refused with 21610 until it sends START (support.twilio.com, "Twilio support for
        opt-out keywords"); ``advanced`` adds ``OptOutType`` as Advanced Opt-Out does."""
        said = body.strip().upper()
        opt = None
        if said in {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}:
            self.unsubscribed.add(sender)
            opt = "STOP"
        elif said in {"START", "UNSTOP", "YES"}:
            self.unsubscribed.discard(sender)
            opt = "START"
        sid = "SM" + secrets.token_hex(16)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": sender,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        if advanced and opt is not None:
            params["OptOutType"] = opt
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "X-Twilio-Signature": twilio_signature(self.auth_token, url, params),
        }
        return ReceiptCall("POST", url, params, "form", headers)


def delivery_of(message: dict[str, Any]) -> str:
    """The Tocsin delivery id in a Twilio message's ``StatusCallback``."""
    [delivery] = parse_qs(urlsplit(message["StatusCallback"]).query)["delivery"]
    return delivery


# --- Vonage -------------------------------------------------------------------------------

VONAGE_KEY = "abcd1234"
VONAGE_SECRET = "vonage-secret-0123456789"


VonageSignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]


def vonage_signature(secret: str, method: VonageSignatureMethod, params: dict[str, str]) -> str:
    """Vonage's ``sig``, per its "Signing messages" guide: ``&name=value`` for each
    parameter by name, ``&`` and ``=`` in values replaced by ``_``; then MD5 of that and
    the secret (``md5hash``), or its HMAC keyed with the secret; in hexadecimal."""
    data = "".join("&" + name + "=" + re.sub("[&=]", "_", params[name]) for name in sorted(params))
    if method == "md5hash":
        return hashlib.md5((data + secret).encode()).hexdigest()
    return hmac.new(secret.encode(), data.encode(), getattr(hashlib, method)).hexdigest()


def vonage_answer(*messages: dict[str, Any]) -> web.Response:
    """Vonage answers 200 whatever happened; the status codes are in the body."""
    return web.json_response({"message-count": str(len(messages)), "messages": list(messages)})


def vonage_error(status: str, text: str) -> web.Response:
    return vonage_answer({"status": status, "error-text": text})


@dataclass
class VonageStandIn(StandIn):
    api_key: str = VONAGE_KEY
    api_secret: str = VONAGE_SECRET
    #: Numbers Vonage cannot route (status 6), barred ones (status 7).
    unroutable: set[str] = field(default_factory=set)
    barred: set[str] = field(default_factory=set)
    #: When set, the only sender IDs the account may use (others: status 15).
    allowed_senders: set[str] | None = None
    balance: float = 10.0
    #: The account's default delivery-receipt URL (dashboard), for messages without
    #: ``callback``, and how receipts are sent there (dashboard: GET, POST, POST-JSON).
    dlr_url: str | None = None
    dlr_method: Literal["GET", "POST", "POST-JSON"] = "POST-JSON"
    #: Set when Vonage support has turned on signed webhooks for the account.
    signature_secret: str | None = None
    signature_method: VonageSignatureMethod = "md5hash"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/sms/json", self.send_sms)

    async def params(self, request: web.Request) -> dict[str, str]:
        if request.content_type == "application/x-www-form-urlencoded":
            return {k: str(v) for k, v in (await request.post()).items()}
        if request.content_type == "application/json":
            try:
                data = json.loads(await request.read())
            except ValueError:
                return {}
            return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return {}  # any other body: no parameter is read

    async def send_sms(self, request: web.Request) -> web.Response:
        await self.record(request)
        p = await self.params(request)
        for required in ("api_key", "api_secret"):
            if not p.get(required):
                return vonage_error("2", f"Missing {required}")
        if not (
            secrets.compare_digest(p["api_key"], self.api_key)
            and secrets.compare_digest(p["api_secret"], self.api_secret)
        ):
            return vonage_error("4", "Bad Credentials")
        if (injected := self.injected()) is not None:
            return injected
        for required in ("from", "to"):
            if not p.get(required):
                return vonage_error("2", f"Missing {required} param")
        kind = p.get("type", "text")
        if kind not in ("text", "unicode", "binary"):
            return vonage_error("3", "Invalid type param")
        if kind != "binary" and not p.get("text"):
            return vonage_error("2", "Missing text param")
        to, sender, text = p["to"], p["from"], p.get("text", "")
        if not re.fullmatch(r"\d{7,15}", to):
            return vonage_error("3", "Invalid to param: digits only, E.164 without '+'")
        if len(p.get("client-ref", "")) > 100:
            return vonage_error("3", "Invalid client-ref param: at most 100 characters")
        if not (_ALPHANUMERIC.fullmatch(sender) or re.fullmatch(r"\d{1,15}", sender)) or (
            self.allowed_senders is not None and sender not in self.allowed_senders
        ):
            return vonage_error("15", "Illegal Sender Address - rejected")
        if to in self.unroutable:
            return vonage_error("6", "Unroutable message - rejected")
        if to in self.barred:
            return vonage_error("7", "Number barred")
        parts = naive_segments(text, unicode=kind == "unicode")
        messages = []
        for _ in range(parts):
            self.balance -= 0.0333
            message = {
                "to": to,
                "message-id": secrets.token_hex(8).upper(),
                "status": "0",
                "remaining-balance": f"{self.balance:.8f}",
                "message-price": "0.03330000",
                "network": "20801",
            }
            if "client-ref" in p:
                message["client-ref"] = p["client-ref"]
            messages.append(message)
        self.accept(
            {
                **{k: v for k, v in p.items() if k != "api_secret"},
                "message-ids": [m["message-id"] for m in messages],
                # What a phone would show: 'text' with non-GSM characters is garbled.
                "garbled": kind == "text" and not is_gsm(text),
            }
        )
        return vonage_answer(*messages)

    def receipts(
        self,
        message: dict[str, Any],
        status: str,
        *,
        err_code: int = 0,
        secret: str | None = None,
    ) -> list[ReceiptCall]:
        """The delivery receipts Vonage sends for an accepted ``message``: one per segment,
        each signed when the account signs webhooks (``secret`` forges a signature)."""
        url = message.get("callback") or self.dlr_url
        if not url:
            raise AssertionError("no callback for this message and no dlr_url for the account")
        now = time.gmtime()
        calls = []
        for message_id in message["message-ids"]:
            params = {
                "msisdn": message["to"],
                "to": message["from"],
                "network-code": "20801",
                "messageId": message_id,
                "price": "0.03330000",
                "status": status,
                "scts": time.strftime("%y%m%d%H%M", now),
                "err-code": str(err_code),
                "api-key": self.api_key,
                "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", now),
            }
            if "client-ref" in message:
                params["client-ref"] = message["client-ref"]
            signing = self.signature_secret if secret is None else secret
            if signing is not None:
                params["timestamp"] = str(int(time.time()))
                params["nonce"] = str(uuid.uuid4())
                params["sig"] = vonage_signature(signing, self.signature_method, params)
            if self.dlr_method == "GET":
                calls.append(ReceiptCall("GET", url, params, "query"))
            else:
                encoding: Literal["form", "json"] = (
                    "json" if self.dlr_method == "POST-JSON" else "form"
                )
                calls.append(ReceiptCall("POST", url, params, encoding))
        return calls

    async def send_receipts(
        self, message: dict[str, Any], status: str, *, err_code: int = 0, via: str | None = None
    ) -> list[tuple[int, Any]]:
        return [await call.send(via) for call in self.receipts(message, status, err_code=err_code)]

    def inbound(self, url: str, msisdn: str, text: str, *, to: str = "33757000001") -> ReceiptCall:
        """An SMS ``msisdn`` (digits, no ``+``) sends to the account's virtual number, as
        Vonage delivers it to the inbound webhook, the dashboard's method
        (https://developer.vonage.com/messaging/sms/guides/inbound-sms: ``msisdn``, ``to``,
        ``messageId``, ``text``, ``type``, ``keyword``, ``message-timestamp``), signed
        when the account signs webhooks."""
        now = time.gmtime()
        params = {
            "msisdn": msisdn,
            "to": to,
            "messageId": secrets.token_hex(8).upper(),
            "text": text,
            "type": "text",
            "keyword": text.split(maxsplit=1)[0].upper() if text.split() else "",
            "message-timestamp": time.strftime("%Y-%m-%d %H:%M:%S", now),
            "api-key": self.api_key,
        }
        if self.signature_secret is not None:
            params["timestamp"] = str(int(time.time()))
            params["nonce"] = str(uuid.uuid4())
            params["sig"] = vonage_signature(self.signature_secret, self.signature_method, params)
        if self.dlr_method == "GET":
            return ReceiptCall("GET", url, params, "query")
        return ReceiptCall(
            "POST", url, params, "json" if self.dlr_method == "POST-JSON" else "form"
        )


# -- fixtures: the stand-ins, started on a free port, closed after the test --


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioStandIn]:
    standin = TwilioStandIn()
    await standin.start()
    yield standin
    await standin.close()


@pytest.fixture
async def vonage() -> AsyncIterator[VonageStandIn]:
    standin = VonageStandIn()
    await standin.start()
    yield standin
    await standin.close()
