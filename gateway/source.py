"""What an event-source plugin implements: authenticate raw bytes, then map to canonical events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from .event import Event, EventInvalid

ConfigT = TypeVar("ConfigT", bound=msgspec.Struct)


class Source(ABC, Generic[ConfigT]):
    """One configured source, mounted at ``POST /v1/sources/NAME``.

    ``verify`` sees the raw body before anything parses it and raises
    ``gateway.SignatureError`` when the request is not authentic. ``parse`` maps the
    provider's payload to canonical events (raise ``gateway.EventInvalid`` naming the
    field); each event's ``id`` is its dedupe key, so derive it from the provider's own
    event id (``"stripe:evt_123"``) to absorb provider retries.
    """

    type_name: ClassVar[str]
    config_type: ClassVar[type[msgspec.Struct]]

    def __init__(self, name: str, config: ConfigT) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes) -> None: ...

    @abstractmethod
    def parse(self, body: bytes) -> list[Event]: ...


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
