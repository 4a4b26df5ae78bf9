"""What every admin operation takes (``AdminContext``), and how bad input is refused.

The API, the CLI and the console call the same functions with a context: the
deployment's Redis, its layout, the archive, and what of the plan an operation needs.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from ..archive import ArchiveStore
from ..keys import Layout
from ..rules import CompiledRule
from ..scenario_model import CompiledScenario

#: Items per page: the default and the most a caller may ask for.
PAGE = 50
MAX_PAGE = 500


class BadRequest(ValueError):
    """Input an operation refuses: the API answers 400 with ``where`` and the reason,
    the CLI prints it."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class NotFound(LookupError):
    """What an operation was asked about does not exist (404)."""


class Conflict(RuntimeError):
    """The operation does not apply to the target's state (409), e.g. retrying now a
    delivery that waits for no retry."""


@dataclass
class AdminContext:
    redis: Redis
    layout: Layout
    archive: ArchiveStore | None
    #: ``[history] retention`` (s): how long a record written by an operation lives.
    retention: float
    #: Who acts, as the audit trail names them: an API token's name, ``cli:<user>``.
    actor: str = "anonymous"
    #: The conf's rules (replay re-plans an event with today's rules).
    rules: list[CompiledRule] = field(default_factory=list)
    #: Channel name -> its type (``json_hook``, ``erp``...).
    channels: dict[str, str] = field(default_factory=dict)
    #: Channels whose deliveries are ERP calls (``Channel.erp_call``).
    erp_channels: frozenset[str] = frozenset()
    scenarios: tuple[CompiledScenario, ...] = ()
    timezone: str = "UTC"
    #: ``[privacy] key``: history's recipient hash; ``None``: no search by address.
    privacy_key: bytes | None = None
    #: Local outbox folders erasure goes through (``privacy.outboxes.outbox_roots``).
    outbox_roots: tuple[Path, ...] = ()

    def acting(self, actor: str) -> AdminContext:
        """The same deployment, another actor (one per API request)."""
        return dataclasses.replace(self, actor=actor)


# -- cursors: opaque to callers, a position in a time order to us -----------------------


def encode_cursor(position: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_cursor(text: str, shape: tuple[type, ...]) -> tuple[Any, ...]:
    """A cursor an earlier page returned; anything else is a ``BadRequest``."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadRequest("cursor", "malformed: pass the next_cursor a page returned") from None
    if (
        not isinstance(value, list)
        or len(value) != len(shape)
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(value, shape, strict=True)
        )
    ):
        raise BadRequest("cursor", "malformed: not a cursor of this listing")
    return tuple(value)


def page_size(limit: int | None) -> int:
    if limit is None:
        return PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest("limit", f"must be between 1 and {MAX_PAGE}")
    return limit


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}
