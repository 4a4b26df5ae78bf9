"""The archive's contract: the rows it keeps, the searches it answers, the calls every
store makes (``ArchiveStore``), and the row encoding both stores share (SQLite:
gateway.archive.store; PostgreSQL: gateway.archive.postgres)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from ..history import DeliveryRecord, encode_record

#: zlib level: 6 (the default) compresses a 1 KB event to ~55 % of level 9's CPU for
#: all but a few bytes of level 9's size.
LEVEL = 6


def pack(data: bytes) -> bytes:
    return zlib.compress(data, LEVEL)


def unpack(data: bytes) -> bytes:
    return zlib.decompress(data)


@dataclass(frozen=True)
class ArchivedEvent:
    event_id: str
    shard: int
    #: Its entry id in its shard's events stream while it was there.
    entry: str
    #: When the intake accepted it, epoch ms.
    accepted: int
    type: str
    customer_id: str | None
    invoice_ref: str | None
    raw: bytes


@dataclass(frozen=True)
class ArchivedDelivery:
    """A delivery record as archived: the columns searched, and its JSON as Redis held it
    (stored as is: decoding and encoding it again would only cost the archiver CPU)."""

    id: str
    event_id: str
    #: Last update, epoch ms.
    updated: int
    status: str
    channel: str
    raw: bytes
    #: The recipient's keyed hash (``DeliveryRecord.to_hash``): a column of its own, with
    #: an index, so a search by address is one probe (docs/data-protection.md).
    to_hash: str | None = None

    @classmethod
    def of(cls, record: DeliveryRecord) -> ArchivedDelivery:
        updated = int(record.updated * 1000)
        raw = encode_record(record)
        return cls(
            record.id, record.event_id, updated, record.status, record.channel, raw, record.to_hash
        )


@dataclass(frozen=True)
class ArchivedDeadLetter:
    shard: int
    entry: str
    #: Epoch ms it was dead-lettered.
    at: int
    kind: str
    channel: str | None
    delivery_id: str | None
    event_id: str | None
    reason: str
    status: int | None
    payload: bytes
    #: Epoch ms it was replayed from the archive, if it was.
    replayed: int | None = None


@dataclass(frozen=True)
class DeliveryQuery:
    event_id: str | None = None
    customer_id: str | None = None
    invoice_ref: str | None = None
    channel: str | None = None
    status: str | None = None
    #: Epoch seconds, on the last update.
    since: float | None = None
    until: float | None = None
    limit: int = 50
    #: The recipient's keyed hash, answered from its column's index. Rows archived before
    #: that column existed have it empty until the backfill reaches them
    #: (``ArchiveStore.backfill_to_hash``): ``tiers.archived_deliveries`` also compares
    #: their decoded records meanwhile.
    to_hash: str | None = None
    #: Only rows the backfill has not reached (no ``to_hash`` yet, delivery id past its
    #: cursor, ``ArchiveStore.to_hash_pending``): what that comparison reads.
    backfill_after: str | None = None


#: ``meta`` keys of the ``to_hash`` backfill: its cursor (the last delivery id it filled,
#: present while it runs) and its flag once done.
BACKFILL_CURSOR = "to_hash_cursor"
BACKFILL_DONE = "to_hash_backfilled"


class _Hashed(msgspec.Struct):
    to_hash: str | None = None


_hashed = msgspec.json.Decoder(_Hashed)


def stored_hash(packed: bytes) -> str | None:
    """The ``to_hash`` of a packed record as archived (``None`` for one that cannot be
    read: the backfill leaves it as it is, never stops on it)."""
    try:
        return _hashed.decode(unpack(packed)).to_hash
    except (msgspec.DecodeError, zlib.error):
        return None


def dead_letter_filters(
    channel: str | None, since: float | None, mark: str
) -> tuple[list[str], list[Any]]:
    """The WHERE terms (ANDed) and arguments of a dead-letter listing: not yet replayed,
    of ``channel``, from ``since`` (epoch s) on; ``mark`` as in ``delivery_filters``."""
    where, args = ["replayed IS NULL"], list[Any]()
    if channel is not None:
        where.append(f"channel = {mark}")
        args.append(channel)
    if since is not None:
        where.append(f"at >= {mark}")
        args.append(int(since * 1000))
    return where, args


def delivery_filters(query: DeliveryQuery, mark: str) -> tuple[list[str], list[Any]]:
    """The WHERE terms (ANDed) and their arguments a ``DeliveryQuery`` asks of an archive's
    deliveries table, ``mark`` being the driver's placeholder (``?``, ``%s``). Each of
    event id, customer, invoice ref, recipient hash has its own index; channel and status
    filter what those (or the time index) yield."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("event_id", query.event_id),
        ("customer_id", query.customer_id),
        ("invoice_ref", query.invoice_ref),
        ("channel", query.channel),
        ("status", query.status),
        ("to_hash", query.to_hash),
    ):
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)
    if query.since is not None:
        where.append(f"updated >= {mark}")
        args.append(int(query.since * 1000))
    if query.until is not None:
        where.append(f"updated < {mark}")
        args.append(int(query.until * 1000))
    if query.backfill_after is not None:
        where += ["to_hash IS NULL", f"delivery_id > {mark}"]
        args.append(query.backfill_after)
    return where, args


@dataclass(frozen=True)
class EventQuery:
    """Archived events, newest first: by customer or invoice ref (each has an index),
    type glob, acceptance time (epoch s), and strictly before ``before`` (accepted ms,
    entry id): where the previous page ended."""

    customer_id: str | None = None
    invoice_ref: str | None = None
    type_glob: str | None = None
    since: float | None = None
    until: float | None = None
    before: tuple[int, str] | None = None
    limit: int = 50


class ArchiveStore(Protocol):
    """What the archiver writes and the admin commands read. A server-backed store
    (PostgreSQL) implements the same calls; every write is idempotent (keyed by event
    entry, delivery id, dead-letter entry), so a pass redone after a crash duplicates
    nothing."""

    async def put_events(self, rows: Sequence[ArchivedEvent]) -> None: ...
    async def put_deliveries(self, rows: Sequence[ArchivedDelivery]) -> None: ...
    async def put_dead_letters(self, rows: Sequence[ArchivedDeadLetter]) -> None: ...
    async def get_event(self, event_id: str) -> ArchivedEvent | None: ...
    async def list_events(
        self, *, type_glob: str | None, since: float | None, limit: int
    ) -> list[ArchivedEvent]: ...
    async def find_events(self, query: EventQuery) -> list[ArchivedEvent]: ...
    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None: ...
    async def get_deliveries(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryRecord]: ...
    async def find_deliveries(self, query: DeliveryQuery) -> list[DeliveryRecord]: ...
    async def dead_letters(
        self, *, channel: str | None, since: float | None, limit: int | None
    ) -> list[ArchivedDeadLetter]: ...
    async def claim_dead_letter(self, shard: int, entry: str, now_ms: int) -> bool: ...
    async def unclaim_dead_letter(self, shard: int, entry: str) -> None: ...
    async def delete_customer(self, customer_id: str) -> int: ...
    async def drop_before(self, before_ms: int, limit: int) -> int: ...
    async def erase_customer(
        self, customer_id: str, event_ids: Sequence[str], needles: Sequence[str]
    ) -> dict[str, int]: ...
    async def drop_kind_before(
        self, kind: str, before_ms: int, limit: int, *, dry_run: bool = False
    ) -> int: ...
    async def customer_events(self, customer_id: str) -> list[ArchivedEvent]: ...
    async def to_hash_pending(self) -> str | None:
        """While rows archived before the ``to_hash`` column are not all filled: the
        delivery id the backfill has reached (``""``: none yet); ``None`` once done."""
        ...

    async def backfill_to_hash(self, limit: int) -> int:
        """Fills the column of at most ``limit`` such rows; how many were read (fewer
        than ``limit``: done). One call per archiver pass (gateway.archive.migrate)."""
        ...

    async def close(self) -> None: ...


def job_customer(job: bytes) -> str | None:
    """A dead job's customer, from the event it carries (erasure finds it by that)."""
    try:
        event: Any = msgspec.json.decode(job).get("event")
    except (msgspec.DecodeError, AttributeError):
        return None
    if not isinstance(event, dict):
        return None
    customer = event.get("customer")
    found = customer.get("id") if isinstance(customer, dict) else None
    return found if isinstance(found, str) else None


def event_from_row(row: Sequence[Any]) -> ArchivedEvent:
    """An ``events`` row as read by both backends (their columns are in this order)."""
    event_id, shard, entry, accepted, type_, customer, invoice, body = row
    return ArchivedEvent(event_id, shard, entry, accepted, type_, customer, invoice, unpack(body))


def dead_letter_from_row(row: Sequence[Any]) -> ArchivedDeadLetter:
    """A ``dead_letters`` row as read by both backends."""
    shard, entry, at, kind, channel, delivery_id, event_id, reason, status, payload, replayed = row
    return ArchivedDeadLetter(
        shard,
        entry,
        at,
        kind,
        channel,
        delivery_id,
        event_id,
        reason,
        status,
        unpack(payload),
        replayed,
    )
