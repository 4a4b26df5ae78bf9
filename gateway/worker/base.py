"""The worker's shared ground: its constants and the state its parts share.

Channel workers: read delivery jobs, await the channel's ``send``, settle each job.

Settling is one of: delivered (acknowledged, record written), retry later (moved to the
retries sorted set), or failed for good (moved to the dead letters). A job leaves its
stream only in the same transaction that records where it went, and each channel's jobs
are read only when its gate (concurrency, rate limit, circuit breaker) has room and its
endpoint is not disabled: a held-back job waits unread in its stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from ..channel import Channel
from ..keys import Keys, Layout
from ..metrics.families import Metrics
from ..policy import ChannelPolicy
from ..privacy.bodies import BodyKeeper
from ..privacy.recipients import RecordPrivacy
from ..suppression import SuppressionList
from ..windows import SendingWindow

log = logging.getLogger("tocsin.worker")
#: One line per final outcome of a delivery (``--no-log-traffic`` quiets all but WARNING).
outcomes = logging.getLogger("tocsin.deliveries")

#: While a channel is at its in-flight limit (its stream left out of the read), the other
#: streams are read without a server-side BLOCK, which no finished send could cut short;
#: the loop then waits for a send to finish, or this long before looking at them again.
HELD_POLL = 0.05
#: Otherwise, how long one read waits on the server for a new job.
READ_BLOCK = 0.5
#: On a Redis Cluster one read covers one shard (one slot): the shards are read one
#: after another without BLOCK, and a round that found nothing waits here, in the
#: gateway, before the next: first this long, doubling while nothing comes, up to
#: ``CLUSTER_IDLE_MAX``; a finished send cuts the wait short. (One blocked read per shard
#: would each want the channel's whole in-flight room: either the limit is broken, or a
#: backlog on one shard waits for a read parked on an idle one. And a short BLOCK is not
#: short: Redis checks a blocked read's timeout at its timer tick, 100 ms at the default
#: ``hz 10``: XREADGROUP BLOCK 10 returned after 100.8 ms on an idle redis-server 8.2.3.)
#: An idle worker reads each shard about 1 / ``CLUSTER_IDLE_MAX`` times a second.
CLUSTER_IDLE_FIRST = 0.001
CLUSTER_IDLE_MAX = 0.01
#: The longest the read and acknowledgement loops wait between tries while Redis is
#: unreachable: delivery resumes within this of Redis answering again. (``Backoff``'s own
#: cap, 5 s, left workers idle for up to 3 s after a 2 s Redis restart; a few refused
#: connections a second per loop cost a down Redis nothing.)
RECONNECT_CAP = 0.25
#: How often each worker looks for due retries.
PROMOTE_INTERVAL = 0.25
#: At low load, how long settled jobs wait for company before their XACK+XDEL is written
#: (one transaction, and one AOF fsync, for several jobs instead of one each).
ACK_LINGER = 0.005
#: ... unless this many are already waiting.
ACK_BATCH = 64
#: How often sends past their channel's send timeout are looked for.
WATCHDOG_INTERVAL = 0.25
#: How often each worker takes over jobs another consumer read but never settled.
RECLAIM_INTERVAL = 1.0
#: How often endpoint health (failing since, disabled) is read back from Redis.
HEALTH_INTERVAL = 2.0
#: How often expired history entries and dead letters are trimmed.
RETENTION_INTERVAL = 60.0
#: Error text kept per attempt in the history.
ERROR_CHARS = 500

#: ``source.provider`` of the events Tocsin emits itself (endpoint.disabled...).
INTERNAL_PROVIDER = "tocsin"

#: A finished send's outcome for the endpoint's health: failed, succeeded, or says
#: nothing about the endpoint (a template failed, a plugin bug).
EndpointOutcome = bool | None


class WorkerBase:
    """What the worker's parts share: set up by ``Worker.__init__`` (gateway/worker/loop.py),
    used by its settling (settling.py) and endpoint-health (health.py) halves."""

    redis: Redis
    layout: Layout
    channels: dict[str, Channel[Any]]
    policies: dict[str, ChannelPolicy]
    windows: dict[str, SendingWindow]
    metrics: Metrics | None
    #: How history records recipients (masked, keyed hash), and the bodies kept if any.
    privacy: RecordPrivacy
    bodies: BodyKeeper | None
    suppressions: SuppressionList
    clock: Callable[[], float]
    retention: int
    dedupe_window: int
    _event_keep: int
    #: Stream key -> channel name, and stream key -> its shard's keys.
    streams: dict[str, str]
    shard_of: dict[str, Keys]
    _inflight: set[asyncio.Task[EndpointOutcome]]
    _settling: set[tuple[str, bytes]]
    _acks: dict[str, list[tuple[bytes, str, bytes]]]
    _ack_wakeup: asyncio.Event
    _slot_free: asyncio.Event
    _failing: dict[str, bool | None]
    disabled: set[str]
