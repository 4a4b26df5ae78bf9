"""The overview page's data: ``tocsin status``'s overview (gateway.watch.status), plus
what a chart of the last hour needs, per minute.

Nothing here walks the history: the figures are the metrics leaseholder's queue
snapshot, the watcher's per-minute counts of events and dead letters, one ``ZCOUNT`` per
minute and shard on the history index (deliveries updated), and the endpoints' health
hashes. So the page costs the same with a million deliveries in history as with none
(``python -m bench.console`` measures it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ..keys import Layout
from ..watch.status import Overview, overview
from ..watch.watcher import read_memory

MINUTES = 60
#: The chart's drawing area (SVG user units).
WIDTH, HEIGHT = 600, 140


@dataclass
class Series:
    label: str
    css: str
    values: list[int]
    #: SVG polyline points, scaled to the chart.
    points: str = ""


@dataclass
class Chart:
    minutes: list[float]
    series: list[Series]
    top: int
    #: Tick labels along the time axis: (x, epoch seconds).
    ticks: list[tuple[float, float]]
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def totals(self) -> dict[str, int]:
        return {s.label: sum(s.values) for s in self.series}


@dataclass
class EndpointHealth:
    channel: str
    failing_since: float | None
    disabled_at: float | None
    disabled_reason: str | None


@dataclass
class OverviewPage:
    view: Overview
    chart: Chart
    endpoints: list[EndpointHealth]
    #: Whether a gateway's watcher has counted events yet (else the events line is empty).
    watched: bool


def _minute_starts(now: float) -> list[float]:
    last = int(now // 60 * 60)
    return [float(last - 60 * i) for i in range(MINUTES - 1, -1, -1)]


async def _deliveries_per_minute(redis: Redis, layout: Layout, starts: list[float]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for keys in layout.shards:
            for start in starts:
                # ZCOUNT's bounds are inclusive: the minute is [start, start + 60 s).
                pipe.zcount(keys.history, int(start * 1000), f"({int((start + 60) * 1000)}")
        replies: list[Any] = await pipe.execute()
    counts = [0] * len(starts)
    for i, n in enumerate(replies):
        counts[i % len(starts)] += int(n)
    return counts


def _scaled(values: list[int], top: int) -> str:
    step = WIDTH / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{HEIGHT - (v / top) * HEIGHT if top else HEIGHT:.1f}"
        for i, v in enumerate(values)
    )


def chart(starts: list[float], series: list[Series]) -> Chart:
    top = max((v for s in series for v in s.values), default=0)
    top = max(1, top)
    for s in series:
        s.points = _scaled(s.values, top)
    step = WIDTH / max(1, len(starts) - 1)
    ticks = [(i * step, starts[i]) for i in range(0, len(starts), 15)]
    return Chart(starts, series, top, ticks)


async def _endpoints(redis: Redis, layout: Layout, channels: list[str]) -> list[EndpointHealth]:
    """The channels failing or disabled now (one HMGET each, pipelined)."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in channels:
            pipe.hmget(layout.endpoint(name), ["failing_since", "disabled_at", "disabled_reason"])
        replies: list[Any] = await pipe.execute()
    out = []
    for name, (failing, disabled, reason) in zip(channels, replies, strict=True):
        if failing is None and disabled is None:
            continue
        out.append(
            EndpointHealth(
                name,
                float(failing) if failing is not None else None,
                float(disabled) if disabled is not None else None,
                reason.decode() if isinstance(reason, bytes) else reason,
            )
        )
    return out


async def overview_page(
    redis: Redis, layout: Layout, channels: list[str], zone: str, now: float | None = None
) -> OverviewPage:
    now = time.time() if now is None else now
    view = await overview(redis, layout, channels, zone, now)
    starts = _minute_starts(now)
    memory = await read_memory(redis, layout)
    minutes = memory.minutes if memory is not None else {}
    events = [minutes.get(str(int(m)), [0, 0])[0] for m in starts]
    dead = [minutes.get(str(int(m)), [0, 0])[1] for m in starts]
    deliveries = await _deliveries_per_minute(redis, layout, starts)
    series = [
        Series("events accepted", "events", events),
        Series("deliveries updated", "deliveries", deliveries),
        Series("dead-lettered", "dead", dead),
    ]
    return OverviewPage(
        view=view,
        chart=chart(starts, series),
        endpoints=await _endpoints(redis, layout, channels),
        watched=memory is not None,
    )
