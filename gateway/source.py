"""What an event-source plugin implements: authenticate raw bytes, then map to canonical events."""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from .event import Event, EventInvalid

if TYPE_CHECKING:
    import aiohttp

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ConfigT = TypeVar("ConfigT", bound=msgspec.Struct)


class Source(ABC, Generic[ConfigT]):
    """One configured source, mounted at ``POST /v1/sources/NAME``.

    ``verify`` sees the raw body before anything parses it and raises
    ``gateway.SignatureError`` when the request is not authentic. ``parse`` maps the
    provider's payload to canonical events (raise ``gateway.EventInvalid`` naming the
    field); each event's ``id`` is its dedupe key, so derive it from the provider's own
    event id (``"stripe:evt_123"``) to absorb provider retries.

    A provider that signs nothing can still be trusted by asking it: a source whose
    ``confirms`` is true gets each parsed event back in ``confirm`` once Redis holds it
    (so the notification is never lost while the provider's API is down), and what
    ``confirm`` returns, built from the provider's answer, is what rules see.
    """

    type_name: ClassVar[str]
    config_type: ClassVar[type[msgspec.Struct]]
    #: Requests from other addresses are refused (403) before ``verify``; empty: any.
    allowed_networks: Sequence[Network] = ()
    #: Whether parsed events wait for ``confirm`` before any rule sees them.
    confirms: bool = False
    #: Upper bound on one ``confirm`` call (it runs as a delivery job, retried on its own).
    confirm_timeout: float = 30.0

    def __init__(self, name: str, config: ConfigT) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes) -> None: ...

    @abstractmethod
    def parse(self, body: bytes) -> list[Event]: ...

    async def confirm(self, event: Event, http: aiohttp.ClientSession) -> list[Event]:
        """The events the provider confirms for one parsed event, built from what it
        answers rather than from the posted body. Their ids must differ from ``event.id``.

        Raise ``gateway.TransientError`` to be asked again later (network, 5xx, 429) and
        ``gateway.PermanentError`` when the provider denies it (404: an unknown or forged
        object): the notification is then dead-lettered with the reason.
        """
        raise NotImplementedError(f"source type {self.type_name!r} does not confirm events")


def parse_networks(values: Sequence[str], where: str) -> tuple[Network, ...]:
    """CIDRs or addresses from conf (``allow_from``); ``ValueError`` names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{where}: {value!r} is not an address or CIDR ({exc})") from None
    return tuple(networks)


_object_decoder = msgspec.json.Decoder()


def decode_payload(body: bytes, what: str) -> dict[str, Any]:
    """A provider's JSON object, or ``EventInvalid`` at ``$``: malformed, nested too deep
    (msgspec raises ``RecursionError`` past ~1000 levels), or not an object."""
    try:
        payload = _object_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise EventInvalid("$", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise EventInvalid("$", "JSON nested too deeply") from None
    if not isinstance(payload, dict):
        raise EventInvalid("$", f"{what} is a JSON object")
    return payload
