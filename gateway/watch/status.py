"""``tocsin status``: the overview in a terminal, for an on-call person with a shell.

What it shows, and where from (nothing here walks history or loads Redis):
- the last hour: events (the watcher's per-minute counts, kept in Redis), deliveries
  settled (``ZCOUNT`` on each shard's history index) and dead letters (each shard's
  dead-letter stream from an hour ago: few, unless things are bad);
- queues and oldest due job per channel, failing and disabled endpoints, dead letters
  kept: the metrics leaseholder's snapshot (one is taken here if no gateway runs);
- scenario steps due from now to the end of the day (``ZCOUNT`` on the timers);
- watch breaches (``current_breaches``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import msgspec
from redis.asyncio import Redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..cli_common import conf_only, echo_json, with_redis
from ..cli_options import conf_option, json_option
from ..conf import Conf
from ..keys import Keys, Layout
from ..metrics.poller import snapshot_key
from ..metrics.snapshot import CHUNK, DEAD_LUA, Snapshot, decode_snapshot, take_snapshot
from .evaluate import HOUR
from .watcher import Breach, current_breaches, read_memory


class ChannelView(msgspec.Struct):
    name: str
    ready: int
    in_flight: int
    retrying: int
    deferred: int
    dead: int
    #: Seconds the oldest due, unsent job has waited (0: none).
    oldest_age: float
    failing: bool
    disabled: bool
    dead_last_hour: int = 0


class Overview(msgspec.Struct):
    at: float
    #: Events accepted in the last hour (``None``: no gateway has watched yet).
    events_last_hour: int | None
    deliveries_last_hour: int
    dead_last_hour: int
    #: Events per minute, oldest first (the last hour, as far as it was watched).
    events_per_minute: list[int]
    channels: list[ChannelView]
    steps_due_today: int
    breaches: list[Breach]
    #: When the queue figures were read (the snapshot's time).
    snapshot_at: float


async def _dead_since(redis: Redis, keys: Keys, since_ms: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    after = str(since_ms)
    while True:
        reply: Any = await redis.eval(DEAD_LUA, 1, keys.dead, after, CHUNK)
        n = int(reply[0])
        after = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        for i in range(2, len(reply), 2):
            name = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
            counts[name] = counts.get(name, 0) + int(reply[i + 1])
        if n < CHUNK:
            return counts


async def _snapshot(redis: Redis, layout: Layout, channels: list[str], now: float) -> Snapshot:
    data: Any = await redis.get(snapshot_key(layout.prefix))
    if data is not None:
        try:
            return decode_snapshot(data)
        except msgspec.DecodeError:
            pass
    return await take_snapshot(redis, layout, channels, {}, now)


async def overview(
    redis: Redis, layout: Layout, channels: list[str], zone: str, now: float | None = None
) -> Overview:
    """The overview the console and ``tocsin status`` show."""
    now = time.time() if now is None else now
    since_ms = int((now - HOUR) * 1000)
    snapshot = await _snapshot(redis, layout, channels, now)
    local = datetime.fromtimestamp(now, ZoneInfo(zone))
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), local.tzinfo)
    deliveries, steps = 0, 0
    dead: dict[str, int] = {}
    for keys in layout.shards:
        deliveries += int(await redis.zcount(keys.history, since_ms, int(now * 1000)))
        steps += int(await redis.zcount(keys.timers, "-inf", int(midnight.timestamp() * 1000)))
        for name, n in (await _dead_since(redis, keys, since_ms)).items():
            dead[name] = dead.get(name, 0) + n
    memory = await read_memory(redis, layout)
    minutes: list[int] = []
    if memory is not None:
        first = int((now - HOUR) // 60 * 60) + 60
        minutes = [memory.minutes.get(str(m), [0, 0])[0] for m in range(first, int(now) + 1, 60)]
    views = [
        ChannelView(
            name=name,
            ready=q.ready,
            in_flight=q.in_flight,
            retrying=q.retrying,
            deferred=q.deferred,
            dead=q.dead,
            oldest_age=max(0.0, snapshot.at - q.oldest_due) if q.oldest_due else 0.0,
            failing=q.failing,
            disabled=q.disabled,
            dead_last_hour=dead.get(name, 0),
        )
        for name, q in sorted(snapshot.channels.items())
    ]
    return Overview(
        at=now,
        events_last_hour=sum(minutes) if memory is not None else None,
        deliveries_last_hour=deliveries,
        dead_last_hour=sum(dead.values()),
        events_per_minute=minutes,
        channels=views,
        steps_due_today=steps,
        breaches=await current_breaches(redis, layout),
        snapshot_at=snapshot.at,
    )


_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if not top:
        return _BARS[0] * len(values)
    return "".join(_BARS[min(8, -(-v * 8 // top))] for v in values)


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render(view: Overview, zone: str) -> Group:
    """The overview as rich renderables."""
    tz = ZoneInfo(zone)
    at = datetime.fromtimestamp(view.at, tz).strftime("%Y-%m-%d %H:%M:%S %Z")
    events = "?" if view.events_last_hour is None else str(view.events_last_hour)
    head = Text.assemble(
        ("Tocsin ", "bold"),
        f"{at}   last hour: ",
        (events, "bold"),
        " events, ",
        (str(view.deliveries_last_hour), "bold"),
        " deliveries, ",
        (str(view.dead_last_hour), "bold red" if view.dead_last_hour else "bold"),
        " dead-lettered   scenario steps due today: ",
        (str(view.steps_due_today), "bold"),
    )
    parts: list[Any] = [head]
    if view.events_per_minute:
        parts.append(Text(f"events/min  {sparkline(view.events_per_minute)}"))
    queues = Table(title="Queues", title_justify="left", expand=False)
    for column in ("channel", "ready", "in flight", "retrying", "deferred", "oldest due"):
        queues.add_column(column, justify="left" if column == "channel" else "right")
    queues.add_column("dead (1h)", justify="right")
    queues.add_column("endpoint")
    for c in view.channels:
        health = (
            Text("disabled", "bold red")
            if c.disabled
            else (Text("failing", "yellow") if c.failing else Text("ok", "green"))
        )
        queues.add_row(
            c.name,
            str(c.ready),
            str(c.in_flight),
            str(c.retrying),
            str(c.deferred),
            _age(c.oldest_age),
            f"{c.dead} ({c.dead_last_hour})",
            health,
        )
    parts.append(queues)
    if view.breaches:
        breaches = Table(title="Watch breaches", title_justify="left", style="red")
        for column in ("watch", "kind", "since", "detail"):
            breaches.add_column(column)
        for b in view.breaches:
            since = datetime.fromtimestamp(b.since, tz).strftime("%m-%d %H:%M")
            breaches.add_row(b.watch, b.kind, since, b.detail)
        parts.append(breaches)
    else:
        parts.append(Text("No watch breached.", "green"))
    return Group(*parts)


def _channels(conf: Conf) -> list[str]:
    names = list(conf.channels)
    names += [f"source.{name}" for name in conf.sources]
    return names


@click.command()
@click.option("--once", is_flag=True, help="Print the overview once and exit (scripts, tests).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="Seconds between refreshes while watching.",
)
@json_option
@conf_option
def status(once: bool, interval: float, as_json: bool, conf_path: Path | None) -> None:
    """Overview: last hour's throughput and failures, queues, endpoints, watch breaches.

    Refreshes every --interval seconds until Ctrl-C; --once or --json print it once.
    """
    conf = conf_only(conf_path)
    channels, zone = _channels(conf), conf.gateway.timezone

    async def one(redis: Redis, layout: Layout) -> Overview:
        return await overview(redis, layout, channels, zone)

    if as_json:
        echo_json(with_redis(conf, one))
        return
    console = Console()
    if once:
        console.print(render(with_redis(conf, one), zone))
        return

    async def watching(redis: Redis, layout: Layout) -> None:
        with Live(render(await one(redis, layout), zone), console=console) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await one(redis, layout), zone))

    with contextlib.suppress(KeyboardInterrupt):
        with_redis(conf, watching)
