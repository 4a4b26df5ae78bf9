"""What a log line written while a delivery is being sent knows about it.

The worker marks the task sending a delivery with ``sending(delivery)``; every log line
written from that task (the worker's own, a channel plugin's, aiohttp's) then carries the
delivery's ids as fields, and has that delivery's customer masked by name, email and
phone. The context costs one small object per job; the customer is read only if a line
is actually logged.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol

import msgspec

from .mask import NOTHING_KNOWN, Known, known_values


class _Person(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...


class Job(Protocol):
    """What of a ``gateway.delivery.Delivery`` logs use (no import: no cycle)."""

    @property
    def id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def recipient(self) -> _Person | None: ...
    @property
    def event(self) -> msgspec.Raw: ...


class _Customer(msgspec.Struct):
    name: str | None = None
    email: str | None = None
    phone: str | None = None


class _Head(msgspec.Struct):
    customer: _Customer | None = None


# Reads the customer alone; the rest of the event is skipped, not decoded.
_head = msgspec.json.Decoder(_Head)


class Scope:
    __slots__ = ("_known", "job")

    def __init__(self, job: Job) -> None:
        self.job = job
        self._known: Known | None = None

    def fields(self) -> dict[str, str | int]:
        job = self.job
        return {
            "event_id": job.event_id,
            "delivery_id": job.id,
            "channel": job.channel,
            "attempt": job.attempt,
        }

    def known(self) -> Known:
        if self._known is None:
            people: list[_Person] = []
            if self.job.recipient is not None:
                people.append(self.job.recipient)
            try:
                customer = _head.decode(self.job.event).customer
            except (msgspec.DecodeError, TypeError):
                customer = None
            if customer is not None:
                people.append(customer)
            self._known = known_values(
                (p.name for p in people), (p.email for p in people), (p.phone for p in people)
            )
        return self._known


_current: ContextVar[Scope | None] = ContextVar("tocsin_log_scope", default=None)


def sending(job: Job) -> None:
    """Mark the current task as sending ``job`` (a task of its own: no reset needed)."""
    _current.set(Scope(job))


def current_known() -> Known:
    scope = _current.get()
    return NOTHING_KNOWN if scope is None else scope.known()


def current_scope() -> Scope | None:
    return _current.get()
