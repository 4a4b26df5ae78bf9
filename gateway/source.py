"""What an event-source plugin implements: authenticate raw bytes, then map to canonical events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Generic, TypeVar

import msgspec

from .event import Event

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
