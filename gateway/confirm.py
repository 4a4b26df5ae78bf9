"""Confirmation: events a source cannot authenticate are checked with the provider first.

Some providers sign nothing (CentralPay publishes no signature scheme). Their notifications
are accepted and stored like any event, marked ``source.confirm_by``; the router sends such
an event to this confirmation alone, never to a rule or a scenario. The confirmation runs
as a delivery job on an internal channel named ``source.NAME``, so it inherits everything
deliveries have: retries on the default schedule while the provider's API is down, a
takeover if a worker dies, history, and dead letters (``tocsin dlq replay``) when the
provider denies the object. What the provider confirms is enqueued as new events, with the
intake's dedupe, and only those reach the rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from .catalog import UnknownTypes, check_event
from .channel import Channel, ChannelContext
from .delivery import Delivery
from .errors import PermanentError
from .event import Event, EventInvalid, decode_event, encode_event
from .source import Source

#: Internal channels are named ``source.NAME``: conf names cannot hold a dot, so none clashes.
PREFIX = "source."
#: The rule name a confirmation job carries in history and dead letters.
RULE = "confirm"

#: ``Enqueuer.enqueue``: event id, encoded event, ordering key (the customer id), invoice ref.
Enqueue = Callable[[str, bytes, str | None, str | None], Awaitable[str | None]]


def channel_name(source: str) -> str:
    return PREFIX + source


class _NoConfig(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ConfirmChannel(Channel[_NoConfig]):
    """Runs one source's ``confirm`` and accepts what it returns."""

    type_name = "confirm"
    config_type = _NoConfig

    def __init__(
        self, source: Source[Any], context: ChannelContext, unknown_types: UnknownTypes
    ) -> None:
        super().__init__(channel_name(source.name), _NoConfig(), context)
        self.source = source
        self.unknown_types = unknown_types
        self._enqueue: Enqueue | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def send_timeout(self) -> float:
        return self.source.confirm_timeout + 1.0

    def attach(self, enqueue: Enqueue) -> None:
        """Where confirmed events go: the intake's enqueue (dedupe + XADD), on the
        worker's Redis. Set by the gateway before the first ``send``."""
        self._enqueue = enqueue

    async def start(self) -> None:
        self._http = self.context.outbound.client_session(
            timeout=aiohttp.ClientTimeout(total=self.source.confirm_timeout)
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def send(self, delivery: Delivery) -> str | None:
        if self._enqueue is None or self._http is None:
            raise RuntimeError("confirmation channel used before start/attach")
        try:
            posted = decode_event(bytes(delivery.event))
        except EventInvalid as exc:
            raise PermanentError(f"stored event unreadable: {exc}") from None
        confirmed = await self.source.confirm(posted, self._http)
        accepted = []
        for event in confirmed:
            self._check(posted, event)
            order = event.customer.id if event.customer is not None else None
            invoice = event.refs.get("invoice_ref")  # for the search indexes
            entry = await self._enqueue(event.id, encode_event(event), order, invoice)
            accepted.append(event.id if entry is not None else f"{event.id} (duplicate)")
        if not accepted:
            return "confirmed: nothing to route"
        return "confirmed as " + ", ".join(accepted)

    def _check(self, posted: Event, event: Event) -> None:
        """What the source returns goes through the intake's own checks."""
        if event.id == posted.id:
            raise PermanentError(
                f"source {self.source.name!r} confirmed {posted.id} under the same id: "
                "the dedupe would drop it (a bug in the source plugin)"
            )
        event.source.confirm_by = None
        try:
            check_event(event, self.unknown_types)
        except EventInvalid as exc:
            raise PermanentError(f"confirmed event invalid at {exc.path}: {exc.reason}") from None
