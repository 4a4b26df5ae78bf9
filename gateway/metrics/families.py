"""Every metric Tocsin exports, under ``tocsin_``, with the label sets conf makes known.

Labels are bounded: sources, channels and scenarios come from conf, event types from
the catalog (anything else is ``other``), outcomes and reasons from fixed lists. No id
(event, delivery, customer) is ever a label.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from ..catalog import TYPES
from ..errors import DeliveryError
from ..suppression.store import REASONS as SUPPRESSION_REASONS
from .snapshot import Snapshot

#: A type outside the catalog, on every metric that has a ``type`` label.
OTHER = "other"
#: ``tocsin_events_received_total`` outcomes.
EVENT_OUTCOMES = ("accepted", "duplicate")
#: ``tocsin_intake_refused_total`` reasons: the ``error`` code of the intake's answer.
REFUSAL_REASONS = (
    "bad_signature",
    "forbidden",
    "internal",
    "invalid_event",
    "method_not_allowed",
    "request_timeout",
    "too_large",
    "unavailable",
    "unknown_source",
    "unsupported_media_type",
    OTHER,
)
#: ``tocsin_intake_connections_refused_total`` reasons (refused before any request).
CONNECTION_REASONS = ("max_connections", "header_timeout")
#: ``tocsin_deliveries_total`` final statuses (as the delivery history names them).
FINAL_STATUSES = ("delivered", "dead", "cancelled", "suppressed")
#: ``tocsin_attempts_total`` outcome classes: the receiver's status class (HTTP, SMTP),
#: or no answer (timeout, connect), or ``error`` (a failure with no status: a template,
#: an invalid address, a plugin bug).
ATTEMPT_CLASSES = ("2xx", "3xx", "4xx", "5xx", "timeout", "connect", "error")
#: How long counts wait in a process before they are exported.
FLUSH_EVERY = 1.0
#: ``tocsin_queue_jobs`` states.
QUEUE_STATES = ("ready", "in_flight", "retrying", "deferred")
#: ``tocsin_history_archived_total`` kinds: what the archiver moves out of Redis.
ARCHIVE_KINDS = ("events", "deliveries", "dead_letters")
#: Send durations: from a fast webhook to an SMTP server taking minutes.
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def attempt_class(exc: BaseException | None) -> str:
    """The outcome class of one send: ``None`` is a success."""
    if exc is None:
        return "2xx"
    status = exc.status if isinstance(exc, DeliveryError) else None
    if status is not None and 200 <= status < 600:
        return f"{status // 100}xx"
    # Channels turn socket errors into a TransientError (``outbound_error``), raised from
    # None: the cause is still in ``__context__``.
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 10:
        if isinstance(cause, TimeoutError):
            return "timeout"
        if isinstance(cause, OSError):  # refused, reset, unreachable, DNS
            return "connect"
        cause = getattr(cause, "os_error", None) or cause.__cause__ or cause.__context__
        seen += 1
    return "error"


@dataclass(frozen=True)
class Known:
    """What conf names: every label set built from it is exported from the start, at 0."""

    sources: tuple[str, ...]
    channels: tuple[str, ...]
    scenarios: tuple[str, ...] = ()
    #: ``[watch.NAME]`` tables (gateway/watch).
    watches: tuple[str, ...] = ()
    #: Event types with their own series; others count as ``other``.
    types: frozenset[str] = field(default_factory=lambda: frozenset(TYPES))
    #: ``[history] hot_window`` in seconds; None with ``archive = "off"`` (nothing is
    #: archived, so nothing lags: ``tocsin_history_archive_lag_seconds`` stays 0).
    hot_window: float | None = None


class Metrics:
    """The gateway's metrics; one per process. ``registry`` is this process's own."""

    def __init__(self, known: Known) -> None:
        self.known = known
        # ``*_created`` samples: one more per series, and absent in multiprocess mode
        # (tocsin serve); a single process exports the same names without them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "tocsin_events_received",
            "Events received at the intake, by source, catalog type and outcome.",
            ["source", "type", "outcome"],
            registry=r,
        )
        self.refused = Counter(
            "tocsin_intake_refused",
            "Intake requests refused, by source and reason (the answer's error code).",
            ["source", "reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "tocsin_intake_connections_refused",
            "Intake connections closed before a request: over a connection cap, or "
            "headers too slow.",
            ["reason"],
            registry=r,
        )
        self.deliveries = Counter(
            "tocsin_deliveries",
            "Deliveries that reached a final status, by channel.",
            ["channel", "status"],
            registry=r,
        )
        self.attempts = Counter(
            "tocsin_attempts",
            "Send attempts, by channel and outcome class.",
            ["channel", "outcome"],
            registry=r,
        )
        self.suppressed_total = Counter(
            "tocsin_suppressed",
            "Messages not sent because their address is on the suppression list, by the "
            "entry's reason.",
            ["reason"],
            registry=r,
        )
        self.archived_total = Counter(
            "tocsin_history_archived",
            "History records moved from Redis to the archive, by kind.",
            ["kind"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "tocsin_send_duration_seconds",
            "How long a channel's send took, success or not.",
            ["channel"],
            buckets=SEND_BUCKETS,
            registry=r,
        )
        # Gauges read from the shared snapshot: every process sets the same values, and
        # in multiprocess mode the most recent write is exported (no double count).
        snap: dict[str, Any] = {"registry": r, "multiprocess_mode": "mostrecent"}
        self.queue = Gauge(
            "tocsin_queue_jobs",
            "Delivery jobs per channel: ready (unread), in_flight (read, not settled), "
            "retrying (next attempt due later), deferred (waiting for a sending window).",
            ["channel", "state"],
            **snap,
        )
        self.dead = Gauge(
            "tocsin_dead_letters",
            "Dead letters kept (for replay), per channel.",
            ["channel"],
            **snap,
        )
        self.oldest = Gauge(
            "tocsin_queue_oldest_due_age_seconds",
            "Age of the oldest job that is due and not yet sent, counted from when it "
            "became due (0: none).",
            ["channel"],
            **snap,
        )
        self.disabled = Gauge(
            "tocsin_endpoint_disabled",
            "1 while a channel's endpoint is disabled (tocsin endpoints enable NAME).",
            ["channel"],
            **snap,
        )
        self.failing = Gauge(
            "tocsin_endpoint_failing",
            "1 while a channel's endpoint has been failing without a success.",
            ["channel"],
            **snap,
        )
        self.scenarios_live = Gauge(
            "tocsin_scenario_instances_live",
            "Scenario instances with a step still to come.",
            ["scenario"],
            **snap,
        )
        self.steps_due = Gauge(
            "tocsin_scenario_steps_due",
            "Scenario steps due and not yet carried out.",
            ["scenario"],
            **snap,
        )
        self.watch_breached = Gauge(
            "tocsin_watch_breached",
            "1 while a [watch.NAME] is breached (docs/operations.md, Watch).",
            ["watch"],
            **snap,
        )
        self.archive_lag = Gauge(
            "tocsin_history_archive_lag_seconds",
            "How far beyond [history] hot_window the oldest event or delivery record "
            "still in Redis is (0: none, or archive off).",
            **snap,
        )
        self.snapshot_at = Gauge(
            "tocsin_queue_snapshot_timestamp_seconds",
            "When the queue snapshot the gauges above come from was taken.",
            **snap,
        )
        self.redis_up = Gauge(
            "tocsin_redis_up", "1 if Redis answered the last metrics refresh.", **snap
        )
        # Per process (a ``pid`` label under tocsin serve): each reloads on its own, and
        # two processes running different confs must show apart.
        own: dict[str, Any] = {"registry": r, "multiprocess_mode": "liveall"}
        self.reload_ok = Gauge(
            "tocsin_conf_reload_success",
            "1 if the last conf (re)load succeeded.",
            **own,
        )
        self.reload_at = Gauge(
            "tocsin_conf_last_reload_success_timestamp_seconds",
            "When the conf was last loaded successfully.",
            **own,
        )
        self.conf_hash = Gauge(
            "tocsin_conf_hash",
            "Hash of the loaded conf files (52 bits of SHA-256): differs between two "
            "processes running different confs.",
            **own,
        )
        self._counts: defaultdict[tuple[Any, tuple[str, ...]], int] = defaultdict(int)
        #: Per channel: sends per bucket (the last one +Inf), then their total seconds.
        self._hist: dict[str, list[float]] = {}
        self._zero()

    def _zero(self) -> None:
        k = self.known
        for source in k.sources:
            for type_ in (*sorted(k.types), OTHER):
                for outcome in EVENT_OUTCOMES:
                    self.events.labels(source, type_, outcome)
            for reason in REFUSAL_REASONS:
                self.refused.labels(source, reason)
        for reason in REFUSAL_REASONS:
            self.refused.labels(OTHER, reason)  # a path naming no configured source
        for reason in CONNECTION_REASONS:
            self.connections_refused.labels(reason)
        for reason in SUPPRESSION_REASONS:
            self.suppressed_total.labels(reason)
        for kind in ARCHIVE_KINDS:
            self.archived_total.labels(kind)
        for channel in k.channels:
            for status in FINAL_STATUSES:
                self.deliveries.labels(channel, status)
            for outcome in ATTEMPT_CLASSES:
                self.attempts.labels(channel, outcome)
            self.send_seconds.labels(channel)
        self.apply(Snapshot.empty(k.channels, k.scenarios))
        self.watch_breached_set(k.watches, ())

    # -- counting: in plain dicts, written out by ``flush`` -------------------------------
    #
    # A prometheus-client increment costs 1-2 us in multiprocess mode (a lock and an mmap
    # write), and a delivery makes four: ~10 % of its CPU. A dict increment costs ~0.1 us;
    # ``flush`` (every FLUSH_EVERY, before this process renders a scrape, and at exit)
    # writes the sums.

    def received(self, source: str, types: Iterable[tuple[str, bool]]) -> None:
        """Events accepted by one request: ``(type, duplicate)`` each."""
        for type_, duplicate in types:
            t = type_ if type_ in self.known.types else OTHER
            self._counts[self.events, (source, t, EVENT_OUTCOMES[duplicate])] += 1

    def refuse(self, source: str, reason: str) -> None:
        source = source if source in self.known.sources else OTHER
        reason = reason if reason in REFUSAL_REASONS else OTHER
        self._counts[self.refused, (source, reason)] += 1

    def connections(self, reason: str, count: int) -> None:
        if count > 0:
            self._counts[self.connections_refused, (reason,)] += count

    def attempt(self, channel: str, exc: BaseException | None, seconds: float) -> None:
        self._counts[self.attempts, (channel, attempt_class(exc))] += 1
        hist = self._hist.get(channel)
        if hist is None:
            hist = self._hist[channel] = [0.0] * (len(SEND_BUCKETS) + 2)
        hist[bisect_left(SEND_BUCKETS, seconds)] += 1  # the first bucket with le >= seconds
        hist[-1] += seconds

    def settled(self, channel: str, status: str, count: int = 1) -> None:
        """Deliveries reached a final status (``FINAL_STATUSES``)."""
        self._counts[self.deliveries, (channel, status)] += count

    def suppressed(self, reason: str) -> None:
        """A message skipped for its address's suppression entry (``reason``)."""
        self._counts[self.suppressed_total, (reason,)] += 1

    def archived(self, kind: str, count: int) -> None:
        """Records of ``kind`` (``ARCHIVE_KINDS``) the archive has committed and Redis
        dropped."""
        if count > 0:
            self._counts[self.archived_total, (kind,)] += count

    def flush(self) -> None:
        """Write what was counted since the last flush into the exported metrics."""
        counts, self._counts = self._counts, defaultdict(int)
        for (metric, labels), n in counts.items():
            metric.labels(*labels).inc(n)
        hists, self._hist = self._hist, {}
        for channel, hist in hists.items():
            # What Histogram.observe does, once per bucket instead of once per send.
            child: Any = self.send_seconds.labels(channel)
            child._sum.inc(hist[-1])
            for i, sends in enumerate(hist[:-1]):
                if sends:
                    child._buckets[i].inc(sends)

    async def flushing(self, stopping: asyncio.Event) -> None:
        """Flush every ``FLUSH_EVERY`` until ``stopping``, then once more."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_EVERY):
                    await stopping.wait()
            self.flush()

    # -- the shared snapshot ----------------------------------------------------------

    def apply(self, snapshot: Snapshot) -> None:
        """Set the queue gauges from a snapshot; channels it lacks show 0."""
        for name in {*self.known.channels, *snapshot.channels}:
            if name not in self.known.channels:
                continue  # another gateway's conf: not a label set this conf knows
            q = snapshot.channels.get(name)
            values = (q.ready, q.in_flight, q.retrying, q.deferred) if q else (0, 0, 0, 0)
            for state, value in zip(QUEUE_STATES, values, strict=True):
                self.queue.labels(name, state).set(value)
            self.dead.labels(name).set(q.dead if q else 0)
            oldest = q.oldest_due if q and q.oldest_due is not None else None
            self.oldest.labels(name).set(max(0.0, snapshot.at - oldest) if oldest else 0.0)
            self.disabled.labels(name).set(1 if q and q.disabled else 0)
            self.failing.labels(name).set(1 if q and q.failing else 0)
        for name in self.known.scenarios:
            s = snapshot.scenarios.get(name)
            self.scenarios_live.labels(name).set(s.live if s else 0)
            self.steps_due.labels(name).set(s.due if s else 0)
        oldest, window = snapshot.oldest_history, self.known.hot_window
        lag = snapshot.at - window - oldest if oldest is not None and window is not None else 0.0
        self.archive_lag.set(max(0.0, lag))
        self.snapshot_at.set(snapshot.at)

    def rezero(self) -> None:
        """After a reload changed ``known``: the new label sets exported at 0."""
        self._zero()

    def watch_breached_set(self, watches: Iterable[str], breached: Iterable[str]) -> None:
        """The watches conf names: 1 for those breached, 0 for the others."""
        now = set(breached)
        for name in watches:
            self.watch_breached.labels(name).set(1 if name in now else 0)

    def conf_loaded(self, digest: float, ok: bool = True) -> None:
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.conf_hash.set(digest)
            self.reload_at.set(time.time())
