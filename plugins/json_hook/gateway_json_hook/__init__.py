"""json_hook: POST signed JSON (Standard Webhooks) to a merchant's system.

The body is the canonical event, or an action's ``json.j2`` template rendered and
checked to be valid JSON. ``webhook-id`` is the delivery id, stable across retries and
replays, so receivers can dedupe on it.

Two HTTP clients: ``client = "native"`` (the default), a lean keep-alive HTTP/1.1 client
for the one endpoint (``transport.py``), and ``client = "aiohttp"``, the general client
every other HTTP channel uses, kept as a fallback. Both go through the SSRF guard, never
follow redirects and map answers with ``raise_for_outcome``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

from gateway import (
    Action,
    Channel,
    ChannelContext,
    Delivery,
    Duration,
    PermanentError,
    Secret,
    Signer,
    TransientError,
    hookimpl,
    outbound_error,
    raise_for_outcome,
    template_context,
)

from .transport import EXCERPT_BYTES, JsonHookTransport

TEMPLATE_PART = "json"


class JsonHookConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str
    secret: Secret
    #: Also sign with these while receivers move to the new secret (key rotation).
    previous_secrets: list[Secret] = msgspec.field(default_factory=list)
    timeout: Duration = Duration(15)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    max_connections: int = 64
    #: "native": json_hook's own HTTP/1.1 client; "aiohttp": the general one (fallback).
    client: Literal["native", "aiohttp"] = "native"


class JsonHook(Channel[JsonHookConfig]):
    type_name = "json_hook"
    config_type = JsonHookConfig

    def __init__(self, name: str, config: JsonHookConfig, context: ChannelContext) -> None:
        super().__init__(name, config, context)
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not echoed: webhook URLs often carry a token.
            raise ValueError("url must be an http:// or https:// URL with a host")
        refusal = context.outbound.url_refusal(config.url)
        if refusal is not None:
            raise ValueError(f"url: {refusal}")
        if any(k.lower().startswith("webhook-") for k in config.headers):
            raise ValueError("headers: webhook-* headers are set by the signature")
        self._signer = Signer([s.reveal() for s in (config.secret, *config.previous_secrets)])
        self._session: aiohttp.ClientSession | None = None
        self._transport: JsonHookTransport | None = None
        if config.client == "native":
            # Built (and its headers checked) here, so a bad conf fails at check time.
            self._transport = self._new_transport()

    def _new_transport(self) -> JsonHookTransport:
        return JsonHookTransport(
            self.config.url,
            self.context.outbound,
            max_connections=self.config.max_connections,
            timeout=float(self.config.timeout),
            headers=[*self.config.headers.items(), ("Content-Type", "application/json")],
        )

    @property
    def send_timeout(self) -> float:
        return float(self.config.timeout) + 1.0

    def check_action(self, action: Action) -> list[str]:
        if action.template and not self.context.templates.has_part(action.template, TEMPLATE_PART):
            return [f"template: {action.template!r} has no {TEMPLATE_PART}.j2"]
        return []

    async def start(self) -> None:
        if self._transport is not None:
            if self._transport.closed:  # started again after a close
                self._transport = self._new_transport()
            return
        self._session = self.context.outbound.client_session(
            literal_hosts_checked=True,  # the one URL, checked in __init__
            connector_limit=self.config.max_connections,
            timeout=aiohttp.ClientTimeout(total=float(self.config.timeout)),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def body(self, delivery: Delivery) -> bytes:
        if delivery.template is None:
            return delivery.event_bytes()
        event = delivery.decode_event()
        text = self.context.templates.render(
            delivery.template, TEMPLATE_PART, delivery.locale, template_context(delivery, event)
        )
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise PermanentError(
                f"template {delivery.template}/{TEMPLATE_PART}.j2 did not render valid JSON: {exc}"
            ) from None
        return text.encode()

    def preview(self, delivery: Delivery) -> dict[str, str]:
        return {"url": self.config.url, "json": self.body(delivery).decode()}

    async def send(self, delivery: Delivery) -> None:
        if self._transport is not None:
            body = self.body(delivery)
            await self._transport.send(self._signer.headers(delivery.id, body).items(), body)
            return
        if self._session is None:
            raise TransientError("channel not started")
        body = self.body(delivery)
        headers = {**self.config.headers, "Content-Type": "application/json"}
        headers.update(self._signer.headers(delivery.id, body))
        try:
            async with self._session.post(
                self.config.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                excerpt = b""
                if not 200 <= response.status < 300:
                    excerpt = await response.content.read(EXCERPT_BYTES)
                else:
                    await response.read()
                raise_for_outcome(
                    response.status, response.headers, excerpt.decode("utf-8", "replace")
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise outbound_error(exc) from None


@hookimpl
def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
    return [JsonHook]
