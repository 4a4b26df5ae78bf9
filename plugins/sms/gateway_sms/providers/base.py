"""What every provider adapter takes and returns, and the HTTP plumbing they share."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from gateway import (
    OutboundPolicy,
    PermanentError,
    Receipt,
    ReceiptRequest,
    Reply,
    TransientError,
    outbound_error,
    parse_retry_after,
)

from ..encoding import Encoding

#: Of an answer's body, this much is read (providers answer small JSON documents).
MAX_ANSWER_BYTES = 64 * 1024
#: Of an unexpected answer, this much is kept in the delivery's history.
EXCERPT_CHARS = 300
#: What a delivery id echoed by a provider may look like (Tocsin's are ``msg_`` + hex;
#: Vonage's ``client-ref`` takes at most 100 characters).
_DELIVERY_REFERENCE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


@dataclass(frozen=True)
class OutgoingSms:
    """One message, ready for a provider: number normalised, text rendered and measured."""

    #: ``gateway.Delivery.id``: stable across retries, passed on where the API takes a
    #: reference (Vonage ``client-ref``, Twilio status callback URL) so receipts match it.
    delivery_id: str
    #: Recipient, E.164.
    to: str
    #: Alphanumeric sender ID or E.164 number; ``None`` only with a Twilio Messaging Service.
    sender: str | None
    text: str
    encoding: Encoding
    segments: int


@dataclass(frozen=True)
class Accepted:
    """A provider took the message. Its ids are what delivery receipts will refer to."""

    provider: str
    #: The provider's message ids: one (Twilio ``sid``), or one per segment (Vonage).
    message_ids: tuple[str, ...]
    #: The provider's own status on acceptance (``queued``, ``accepted``...), if it gives one.
    status: str | None = None


class Provider(ABC):
    """One way of sending: an HTTP API, or the embedded outbox."""

    name: ClassVar[str]

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing to open by default
        """Open what sending needs (an HTTP session). Called once, before the first send."""

    @abstractmethod
    async def send(self, sms: OutgoingSms) -> Accepted:
        """Hand the message over, or raise ``TransientError`` / ``PermanentError``."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release what ``start`` opened."""

    def parse_receipt(self, request: ReceiptRequest) -> list[Receipt | Reply]:
        """Verify and read a status callback (see ``gateway.Channel.parse_receipt``).

        ``gateway.SignatureError`` when it is not genuine, ``ValueError`` when it cannot be
        read; providers without receipts (the outbox) leave this as is.
        """
        raise NotImplementedError(f"provider {self.name!r} sends no receipts")

    def target(self) -> str:
        """Where messages go, for previews and logs (never with a secret)."""
        return self.name


def check_base_url(url: str, field: str) -> str:
    """A conf's ``base_url``: ``http(s)://host[:port][/prefix]``, without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field}: must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{field}: no query, fragment or credentials in the URL")
    return url.rstrip("/")


class HttpProvider(Provider):
    """A provider reached over HTTP: one ``aiohttp`` session per channel, no redirects.

    The session comes from the core's SSRF guard (``[outbound]``): a ``base_url`` on a
    private or loopback address is refused unless the conf allows that network.
    """

    def __init__(self, timeout: float, outbound: OutboundPolicy, max_connections: int = 32) -> None:
        self.timeout = timeout
        self.outbound = outbound
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = self.outbound.client_session(
            connector_limit=self.max_connections,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise TransientError(f"{self.name}: channel not started")
        return self._session

    async def post_form(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        authorization: str | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """POST ``application/x-www-form-urlencoded``; status, headers and (capped) body.

        Connection failures and timeouts become ``TransientError``: the message may or may
        not have reached the provider, and a retry is the at-least-once answer.
        """
        headers = {"Accept": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            async with self.session.post(
                url, data=dict(form), headers=headers, allow_redirects=False
            ) as response:
                body = bytearray()  # read() may return a part: read to EOF, capped
                while len(body) < MAX_ANSWER_BYTES:
                    chunk = await response.content.read(MAX_ANSWER_BYTES - len(body))
                    if not chunk:
                        break
                    body += chunk
                return response.status, response.headers, bytes(body)
        except TimeoutError:
            raise TransientError(
                f"{self.name}: no answer within {self.timeout:g}s (the message may or may "
                "not have been accepted)"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Refused by the SSRF guard: for good. Connection refused, reset...: retried.
            error = outbound_error(exc)
            if isinstance(error, PermanentError):
                raise PermanentError(f"{self.name}: {error.reason}") from None
            raise TransientError(f"{self.name}: {error.reason}") from None


def decode_json(body: bytes) -> Any:
    """The answer as JSON, or ``None`` when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def retry_after(headers: Mapping[str, str]) -> float | None:
    return parse_retry_after(headers.get("Retry-After"))


def refuse_redirect(provider: str, status: int, headers: Mapping[str, str]) -> PermanentError:
    location = headers.get("Location", "")
    where = f" to {location}" if location else ""
    return PermanentError(
        f"{provider}: HTTP {status} redirect{where} not followed (check base_url)", status=status
    )


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, whatever its case (``headers`` may be a plain dict)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, item in headers.items():
        if key.lower() == wanted:
            return item
    return None


def media_type(headers: Mapping[str, str]) -> str:
    """``Content-Type`` without its parameters, lower case (``""`` when absent)."""
    return (header(headers, "Content-Type") or "").split(";", 1)[0].strip().lower()


def form_pairs(request: ReceiptRequest) -> list[tuple[str, str]]:
    """The form fields of a ``application/x-www-form-urlencoded`` body, repeats kept.

    ``ValueError`` for a body that is not UTF-8 (providers send UTF-8, percent-encoded).
    """
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("form body is not UTF-8") from None
    return parse_qsl(text, keep_blank_values=True)


def delivery_reference(value: str | None) -> str | None:
    """The delivery id a receipt echoes, or ``None`` when it names none Tocsin could have set.

    Receipts about messages another application sent through the same provider account
    (no reference, or one of theirs) are not ours to record.
    """
    if value is None or not _DELIVERY_REFERENCE.fullmatch(value):
        return None
    return value
