"""Deciding breaches: pure functions of what the watcher remembers and the queue snapshot.

A verdict is a detail line (breached), ``""`` (fine) or ``None`` (cannot tell now: the
window is closed, the watcher has not watched for a whole period yet, or no snapshot):
``None`` leaves the watch as it was, so a closed window neither alerts nor recovers.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import msgspec

from ..metrics.snapshot import Snapshot
from ..windows import NO_WINDOW, SendingWindow
from .conf import ActivityWatch, DeadLettersWatch, EndpointWatch, QueueAgeWatch, WatchRule

#: The series the status view shows: one bucket a minute, for the last hour.
MINUTE = 60.0
HOUR = 3600.0


class Memory(msgspec.Struct, omit_defaults=True):
    """What the evaluating process carries from one round to the next, kept in Redis so
    that another process taking over goes on from it."""

    #: When watching began (the watcher's clock): a period is only judged once it has
    #: been watched whole.
    started: float = 0.0
    #: Per shard's events stream: the last entry read.
    cursors: dict[str, str] = msgspec.field(default_factory=dict)
    #: Per provider: (round time, events seen that round), oldest first.
    arrivals: dict[str, list[tuple[float, int]]] = msgspec.field(default_factory=dict)
    #: Per channel: dead letters last counted in the snapshot, and (round time, added).
    dead_seen: dict[str, int] = msgspec.field(default_factory=dict)
    dead_added: dict[str, list[tuple[float, int]]] = msgspec.field(default_factory=dict)
    #: Minute start -> [events, dead letters], for the last hour.
    minutes: dict[str, list[int]] = msgspec.field(default_factory=dict)

    def count_events(self, now: float, counts: dict[str, int]) -> None:
        """Events seen this round, per provider."""
        total = 0
        for name, n in counts.items():
            if n:
                self.arrivals.setdefault(name, []).append((now, n))
                total += n
        self._minute(now, 0, total)

    def count_dead(self, snapshot: Snapshot, now: float) -> None:
        """Dead letters added since the last round, from the snapshot's counts (a drop,
        from a replay or a trim, adds nothing)."""
        total = 0
        for channel, queue in snapshot.channels.items():
            before = self.dead_seen.get(channel)
            self.dead_seen[channel] = queue.dead
            if before is not None and queue.dead > before:
                self.dead_added.setdefault(channel, []).append((now, queue.dead - before))
                total += queue.dead - before
        self._minute(now, 1, total)

    def _minute(self, now: float, index: int, n: int) -> None:
        key = str(int(now // MINUTE * MINUTE))
        bucket = self.minutes.setdefault(key, [0, 0])
        bucket[index] += n

    def trim(self, now: float, keep: float) -> None:
        """Forget what no watch can look at any more."""
        for series in (*self.arrivals.values(), *self.dead_added.values()):
            series[:] = [(t, n) for t, n in series if t > now - keep]
        self.arrivals = {k: v for k, v in self.arrivals.items() if v}
        self.dead_added = {k: v for k, v in self.dead_added.items() if v}
        self.minutes = {k: v for k, v in self.minutes.items() if float(k) > now - HOUR - MINUTE}


def _sum_since(series: list[tuple[float, int]], since: float) -> int:
    return sum(n for t, n in series if t > since)


def open_throughout(window: SendingWindow | None, start: float, end: float) -> bool:
    """Whether ``window`` is open from ``start`` to ``end`` (epoch s) without a break.
    A window is one stretch a day, so it is walked stretch by stretch."""
    if window is None:
        return True
    moment = start
    while True:
        at = datetime.fromtimestamp(moment, UTC)
        if window.next_open(at) is not None:
            return False
        day = at.astimezone(window.zone).date()
        if window.end is None:  # open until midnight: the next day must open at 00:00
            close = datetime.combine(day + timedelta(days=1), time(0), window.zone)
        else:
            close = datetime.combine(day, window.end, window.zone)
        if close.timestamp() >= end:
            return True
        moment = close.timestamp()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _span(seconds: float) -> str:
    """``3600`` -> ``1h``, ``959`` -> ``15m59s``."""
    left = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    if left or not parts:
        parts.append(f"{left}s")
    return "".join(parts)


def verdict(
    rule: WatchRule,
    memory: Memory,
    snapshot: Snapshot | None,
    windows: dict[str, SendingWindow],
    now: float,
) -> str | None:
    """``"detail"`` when breached, ``""`` when fine, ``None`` when it cannot be told now."""
    if isinstance(rule, ActivityWatch):
        window = None if rule.during in (None, NO_WINDOW) else windows.get(rule.during or "")
        since = now - rule.per
        if since < memory.started or not open_throughout(window, since, now):
            return None
        seen = _sum_since(memory.arrivals.get(rule.provider, []), since)
        if seen >= rule.at_least:
            return ""
        return (
            f"{_plural(seen, 'event')} from {rule.provider} in the last {_span(rule.per)} "
            f"(expected at least {rule.at_least})"
        )
    if snapshot is None:
        return None
    channels = [
        name for name in sorted(snapshot.channels) if rule.channel is None or name == rule.channel
    ]
    if isinstance(rule, QueueAgeWatch):
        late = []
        for name in channels:
            oldest = snapshot.channels[name].oldest_due
            age = snapshot.at - oldest if oldest is not None else 0.0
            if age > rule.max_age:
                late.append(f"{name} {_span(age)}")
        if not late:
            return ""
        return f"oldest due job waiting over {_span(rule.max_age)}: {', '.join(late)}"
    if isinstance(rule, DeadLettersWatch):
        # Counted since watching began when that is less than a period: a lower bound,
        # so a breach is certain and "fine" means fine so far.
        since = now - rule.per
        added = {n: _sum_since(memory.dead_added.get(n, []), since) for n in channels}
        total = sum(added.values())
        if total <= rule.more_than:
            return ""
        where = ", ".join(f"{n} {c}" for n, c in added.items() if c)
        return (
            f"{_plural(total, 'dead letter')} in the last {_span(rule.per)} "
            f"(more than {rule.more_than}): {where}"
        )
    assert isinstance(rule, EndpointWatch)
    disabled = [n for n in channels if snapshot.channels[n].disabled]
    return f"disabled: {', '.join(disabled)}" if disabled else ""


def longest_period(rules: dict[str, WatchRule]) -> float:
    periods = [
        float(r.per) for r in rules.values() if isinstance(r, ActivityWatch | DeadLettersWatch)
    ]
    return max([HOUR, *periods])
