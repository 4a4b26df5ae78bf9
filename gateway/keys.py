"""Every Redis key Tocsin uses, in one place, under one prefix.

Keys come in shards (``Layout``): each shard is a full set of queues, streams and
indexes whose keys share one Redis Cluster hash tag, so every Lua script and MULTI
touches one slot. On one Redis with one shard (the default) keys carry no tag, as they
always did: ``tocsin:events``. With several shards, or on a cluster, shard ``i``'s keys
are ``tocsin:{<tag>}:events``. An event goes to the shard of its ordering key (its
customer, else its id), so one customer's events are routed in order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

ROUTER_GROUP = "router"
WORKER_GROUP = "workers"
SCENARIO_GROUP = "scenarios"


#: Redis Cluster's hash slots.
CLUSTER_SLOTS = 16384


def _crc16(data: bytes) -> int:
    """CRC16/XMODEM, the checksum Redis Cluster maps keys to slots with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first non-empty ``{...}``, else all
    of it (Redis Cluster specification, "Hash tags")."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str) -> int:
    """The cluster slot of ``key`` (what ``CLUSTER KEYSLOT`` answers)."""
    return _crc16(hash_tag(key).encode()) % CLUSTER_SLOTS


def shard_tag(index: int, count: int) -> str:
    """Shard ``index``'s hash tag: the first ``<index>.<n>`` whose slot lies in the
    ``index``-th of ``count`` equal slot ranges. A cluster created with slots split
    evenly over its masters (``redis-cli --cluster create`` does) then spreads shards
    over masters evenly, instead of as chance puts them."""
    low, high = index * CLUSTER_SLOTS // count, (index + 1) * CLUSTER_SLOTS // count
    n = 0
    while not low <= key_slot(f"{index}.{n}") < high:
        n += 1
    return f"{index}.{n}"


@dataclass(frozen=True)
class Keys:
    """One shard's keys. ``tag`` empty: the untagged single-shard names."""

    prefix: str = "tocsin"
    tag: str = ""
    index: int = 0

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.tag}}}" if self.tag else self.prefix

    @property
    def events(self) -> str:
        """Stream of accepted canonical events: the router's queue, and, once routed,
        where they are kept for the retention (replay reads them there)."""
        return f"{self.base}:events"

    @property
    def routed_through(self) -> str:
        """An events stream entry id: every event at or below it has been routed."""
        return f"{self.base}:events:routed"

    def dedupe(self, event_id: str) -> str:
        """An event id's stream entry id: refuses duplicates within the dedupe window
        (the id says when it was accepted) and finds the event for replay."""
        return f"{self.base}:seen:{event_id}"

    def deliveries(self, channel: str) -> str:
        """Stream of delivery jobs for one configured channel."""
        return f"{self.base}:deliveries:{channel}"

    @property
    def retries(self) -> str:
        """Sorted set of deliveries waiting for their next attempt, scored by due time."""
        return f"{self.base}:retries"

    @property
    def dead(self) -> str:
        """Stream of dead-lettered deliveries, with the reason: kept for replay."""
        return f"{self.base}:dead"

    def record(self, delivery_id: str) -> str:
        """A delivery's status and attempts (JSON), expiring after the retention."""
        return f"{self.base}:delivery:{delivery_id}"

    def receipts(self, delivery_id: str) -> str:
        """List of a delivery's receipts from its provider (delivered to the handset...)."""
        return f"{self.base}:receipts:{delivery_id}"

    @property
    def history(self) -> str:
        """Sorted set of delivery ids by last update (ms): lists records by time."""
        return f"{self.base}:history"

    @property
    def archive_lock(self) -> str:
        """Which gateway process archives this shard's history (``gateway/archive``)."""
        return f"{self.base}:archive:lock"

    def endpoint(self, channel: str) -> str:
        """Hash of an endpoint's health: failing_since, disabled_at, disabled_reason."""
        return f"{self.base}:endpoint:{channel}"

    def scenario(self, name: str, key: str) -> str:
        """Hash of one scenario instance: ``rev`` (compare-and-set) and ``doc`` (JSON)."""
        return f"{self.base}:scenario:{name}:{key}"

    @property
    def scenarios(self) -> str:
        """Sorted set of ``name\x1fkey`` by last change (ms): lists instances."""
        return f"{self.base}:scenarios"

    def tombstone(self, name: str, key: str) -> str:
        """A cancel that came before its trigger: the scenario must not start for the key."""
        return f"{self.base}:tombstone:{name}:{key}"

    @property
    def timers(self) -> str:
        """Sorted set of scenario steps by due time (ms); due ones move to ``steps``."""
        return f"{self.base}:timers"

    @property
    def steps(self) -> str:
        """Stream of due scenario steps, read by group ``scenarios``."""
        return f"{self.base}:steps"

    # Search indexes of the hot window (Redis has no secondary indexes): written in the
    # steps that write events (intake) and jobs (fan-out), trimmed by the archiver.

    @property
    def search_index(self) -> str:
        """Prefix of the search indexes: ``ix:c:<customer>`` and ``ix:i:<invoice ref>``
        (sorted sets of events stream entry ids by acceptance ms), ``ix:d:<event id>``
        (set of the event's delivery ids)."""
        return f"{self.base}:ix:"

    def by_customer(self, customer_id: str) -> str:
        return f"{self.search_index}c:{customer_id}"

    def by_invoice(self, invoice_ref: str) -> str:
        return f"{self.search_index}i:{invoice_ref}"

    def event_deliveries(self, event_id: str) -> str:
        return f"{self.search_index}d:{event_id}"

    def replayed_by(self, job_id: str) -> str:
        """Set of the delivery ids a bulk replay job has queued in this shard: written in
        the step that queues each, so a job resumed after a crash sends none twice."""
        return f"{self.base}:adminjob:{job_id}:done"


def ordering_key(customer_id: str | None, event_id: str) -> str:
    """What keeps events in order: one customer's events go to one shard. An event with
    no customer is its own; an id with a ``{...}`` part is placed by that part, as
    Redis Cluster places keys (events of one object can share a shard that way)."""
    return customer_id or hash_tag(event_id)


@dataclass(frozen=True)
class Layout:
    """Where keys live: ``count`` shards, tagged when ``count > 1`` or on a cluster."""

    prefix: str = "tocsin"
    count: int = 1
    cluster: bool = False
    shards: tuple[Keys, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("a layout has at least one shard")
        tagged = self.cluster or self.count > 1
        shards = tuple(
            Keys(self.prefix, shard_tag(i, self.count) if tagged else "", i)
            for i in range(self.count)
        )
        object.__setattr__(self, "shards", shards)

    def shard(self, key: str) -> Keys:
        """The shard an ordering key (``ordering_key``) or a scenario key belongs to."""
        if self.count == 1:
            return self.shards[0]
        return self.shards[zlib.crc32(key.encode()) % self.count]

    def endpoint(self, channel: str) -> str:
        """An endpoint's health hash, in the shard its ``endpoint.disabled`` event goes to."""
        return self.shard(channel).endpoint(channel)

    @property
    def audit(self) -> str:
        """Stream of operators' writes (who, what, on what, when, outcome)."""
        return f"{self.prefix}:audit"

    @property
    def jobs(self) -> str:
        """Sorted set of bulk replay job ids by creation (ms)."""
        return f"{self.prefix}:adminjobs"

    def job(self, job_id: str) -> str:
        """Hash of one bulk replay job: filter, state, progress. A job's keys share a
        hash tag (its id): one transaction updates them on a cluster."""
        return f"{self.prefix}:adminjob:{{{job_id}}}"

    def job_todo(self, job_id: str) -> str:
        """List of what a job replays, fixed when it is planned (JSON items)."""
        return f"{self.prefix}:adminjob:{{{job_id}}}:todo"

    def job_lease(self, job_id: str) -> str:
        """Which gateway process runs a job (expires: another resumes it)."""
        return f"{self.prefix}:adminjob:{{{job_id}}}:lease"

    @property
    def marker(self) -> str:
        """The layout a data set was written with (``<count>``): a gateway started with
        another shard count refuses to run on it (its queues would be orphaned)."""
        return f"{self.prefix}:layout"


def as_layout(value: Keys | Layout) -> Layout:
    """A layout, from a layout or from one untagged shard's keys (its prefix)."""
    return value if isinstance(value, Layout) else Layout(value.prefix)
