"""HTTP to an ERP: one pooled session behind the SSRF guard, JSON in and out.

Every connector goes through ``Transport.request``: the session comes from the core's
outbound policy (so an ERP on a private network must be allow-listed in ``[outbound]``),
certificates are verified (against ``ca_file`` when set), redirects are never followed,
answers are read up to a bound, and network failures become ``TransientError`` (or
``PermanentError`` when the guard refuses the address).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from multidict import CIMultiDictProxy
from yarl import URL

from gateway import OutboundPolicy, PermanentError, TransientError, outbound_error

#: Bigger answers are refused: a search for one invoice is a few hundred bytes.
MAX_ANSWER = 4 * 1024 * 1024
#: Of an answer, this much goes into a reason.
EXCERPT_CHARS = 300
USER_AGENT = "tocsin-erp/0.1"

# Decimals leave as JSON numbers (12.50), never as strings or floats.
_encoder = msgspec.json.Encoder(decimal_format="number")
NOBODY: Any = object()


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    #: ``GET /invoices`` etc.: what was asked, for reasons.
    what: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or ``PermanentError``: an ERP answering HTML is misconfigured."""
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            raise PermanentError(
                f"{self.what}: HTTP {self.status} answer is not JSON: {excerpt(self.body)!r}",
                status=self.status,
            ) from None

    def json_or_none(self) -> Any:
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None


class Transport:
    """One ERP's HTTP client. ``__init__`` opens nothing; ``start`` makes the session."""

    def __init__(
        self,
        base_url: str,
        *,
        outbound: OutboundPolicy,
        timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = URL(self.base_url).origin()
        self.outbound = outbound
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        # True: aiohttp's default, verifying against the system's CAs; a context: verifying
        # against other CAs. Never False: certificates are always checked.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    async def start(self) -> None:
        # Every request goes to base_url's origin (``url`` refuses others), whose literal
        # host the channel checked at start-up: no per-request hook needed.
        self._session = self.outbound.client_session(
            literal_hosts_checked=True,
            connector_limit=self.max_connections,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> URL:
        """``base_url + path``; ``path`` is already percent-encoded."""
        url = URL(self.base_url + path, encoded=True)
        if url.origin() != self.origin:
            raise PermanentError(f"{path!r} leaves {self.origin}: refused")
        return url

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = NOBODY,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request; any answer is returned (callers map statuses), or raise on
        network failures."""
        if self._session is None:
            raise TransientError("channel not started")
        what = f"{method} {path.split('?', 1)[0]}"
        sent = dict(headers or {})
        if json is not NOBODY:
            data = _encoder.encode(json)
        if data is not None:
            sent["Content-Type"] = "application/json"
        sent.setdefault("Accept", "application/json")
        url = self.url(path)
        if params:
            url = url.update_query(params)
        try:
            async with self._session.request(
                method, url, data=data, headers=sent, allow_redirects=False, ssl=self._ssl
            ) as response:
                body = await _read(response, what)
                return Answer(response.status, response.headers, body, what)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            error = outbound_error(exc)
            error.reason = f"{what}: {error.reason}"
            error.args = (error.reason,)
            raise error from None


async def _read(response: aiohttp.ClientResponse, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise PermanentError(f"{what}: answer larger than {MAX_ANSWER} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
