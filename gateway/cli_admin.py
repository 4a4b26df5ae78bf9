"""``tocsin deliveries | dlq | events | endpoints``: what ops run on a live deployment."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import admin
from .cli_options import conf_option, json_option
from .conf import Conf, default_conf_path, load_conf
from .durations import Duration
from .errors import ConfError, TocsinError
from .history import SENDS, STATUSES, DeliveryRecord
from .keys import Keys
from .receipts import receipts_of

T = TypeVar("T")


def _conf(conf_path: Path | None) -> Conf:
    try:
        return load_conf(conf_path or default_conf_path())
    except ConfError as exc:
        raise click.ClickException("\n".join(exc.problems)) from None


def _with_redis(conf: Conf, action: Callable[[Redis, Keys], Awaitable[T]]) -> T:
    async def run() -> T:
        async with admin.open_redis(conf) as redis:
            return await action(redis, Keys(conf.redis.prefix))

    try:
        return asyncio.run(run())
    except (RedisError, OSError, TocsinError) as exc:
        raise click.ClickException(f"Redis: {exc}") from None


def parse_when(text: str | None) -> float | None:
    """``2h`` (that long ago) or an ISO date/time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        return time.time() - float(Duration.parse(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a duration ago (2h, 3d) or an ISO date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _stamp(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _echo_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


# -- tocsin deliveries -------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--event", "event_id", default=None, help="Only this event's deliveries.")
@click.option("--channel", default=None, help="Only this channel's.")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--since", default=None, help="Updated since: 2h, 3d or an ISO date.")
@click.option("--until", default=None, help="Updated before: 2h, 3d or an ISO date.")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
@json_option
@conf_option
@click.pass_context
def deliveries(
    ctx: click.Context,
    event_id: str | None,
    channel: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
    conf_path: Path | None,
) -> None:
    """List deliveries (newest first) with their status and attempt count."""
    if ctx.invoked_subcommand is not None:
        return
    conf = _conf(conf_path)
    records = _with_redis(
        conf,
        lambda r, k: admin.find_deliveries(
            r,
            k,
            event_id=event_id,
            channel=channel,
            status=status,
            since=parse_when(since),
            until=parse_when(until),
            limit=limit,
        ),
    )
    if as_json:
        for record in records:
            _echo_json(record)
        return
    if not records:
        click.echo("no deliveries match")
        return
    click.echo(f"{'UPDATED (UTC)':19}  {'STATUS':9}  {'ATT':>3}  {'CHANNEL':16}  ID / EVENT")
    for r in records:
        tries = sum(1 for a in r.attempts if a.outcome in SENDS)
        click.echo(
            f"{_stamp(r.updated):19}  {r.status:9}  {tries:>3}  {r.channel:16}  "
            f"{r.id}  {r.event_id} ({r.event_type})"
        )


@deliveries.command("show")
@click.argument("delivery_id")
@json_option
@conf_option
def deliveries_show(delivery_id: str, as_json: bool, conf_path: Path | None) -> None:
    """One delivery and every attempt: time, outcome, status code, error, latency."""
    conf = _conf(conf_path)
    record = _with_redis(conf, lambda r, k: admin.show_delivery(r, k, delivery_id))
    if record is None:
        raise click.ClickException(f"no delivery {delivery_id} (unknown, or past the retention)")
    receipts = _with_redis(conf, lambda r, k: receipts_of(r, k, delivery_id))
    if as_json:
        _echo_json({**msgspec.to_builtins(record), "receipts": receipts})
        return
    _print_record(record)
    if receipts:
        click.echo("receipts")
        for item in receipts:
            detail = f"  {item.detail}" if item.detail else ""
            click.echo(f"     {_stamp(item.at)}  {item.status}{detail}")


def _print_record(r: DeliveryRecord) -> None:
    click.echo(f"delivery  {r.id}")
    click.echo(f"event     {r.event_id} ({r.event_type})")
    click.echo(f"rule      {r.rule}")
    click.echo(f"channel   {r.channel}" + (f" -> {r.to}" if r.to else ""))
    status = r.status + (f", next attempt {_stamp(r.next_at)} UTC" if r.next_at else "")
    click.echo(f"status    {status} (updated {_stamp(r.updated)} UTC)")
    click.echo("attempts")
    for a in r.attempts:
        if a.outcome == "replayed":
            click.echo(f"  -  {_stamp(a.at)}  replayed by an operator")
            continue
        if a.outcome in ("deferred", "cancelled"):
            click.echo(f"  -  {_stamp(a.at)}  {a.error or a.note}")
            continue
        code = f"  [{a.status}]" if a.status is not None else ""
        error = f"  {a.error}" if a.error else (f"  {a.note}" if a.note else "")
        click.echo(f"  {a.n:>2} {_stamp(a.at)}  {a.outcome:9} {a.ms:>8.1f} ms{code}{error}")


# -- tocsin dlq ------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead letters: deliveries that failed for good, and events that could not be routed."""


@dlq.command("list")
@click.option("--channel", default=None)
@click.option("--since", default=None, help="Dead since: 2h, 3d or an ISO date.")
@click.option("--limit", default=100, show_default=True)
@json_option
@conf_option
def dlq_list(
    channel: str | None, since: str | None, limit: int, as_json: bool, conf_path: Path | None
) -> None:
    """Dead letters, oldest first."""
    conf = _conf(conf_path)
    letters = _with_redis(
        conf,
        lambda r, k: admin.dead_letters(
            r, k, channel=channel, since=parse_when(since), limit=limit
        ),
    )
    if as_json:
        for letter in letters:
            _echo_json(
                {
                    "entry_id": letter.entry_id,
                    "kind": letter.kind,
                    "channel": letter.channel,
                    "delivery_id": letter.delivery_id,
                    "event_id": letter.delivery.event_id if letter.delivery else None,
                    "reason": letter.reason,
                    "status": letter.status,
                    "at": letter.at,
                }
            )
        return
    if not letters:
        click.echo("no dead letters")
        return
    for letter in letters:
        what = letter.delivery_id or f"{letter.kind} (undecodable)"
        event = f" event {letter.delivery.event_id}" if letter.delivery else ""
        click.echo(
            f"{letter.entry_id}  {_stamp(letter.at)}  {letter.channel or '-':16}  {what}{event}"
        )
        click.echo(f"    {letter.reason}")


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--channel", default=None, help="Every dead letter of this channel.")
@click.option("--since", default=None, help="Every dead letter since: 2h, 3d or an ISO date.")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@conf_option
def dlq_replay(
    ids: tuple[str, ...],
    channel: str | None,
    since: str | None,
    everything: bool,
    conf_path: Path | None,
) -> None:
    """Queue dead letters again (by entry or delivery id, or by --channel/--since/--all).

    A replayed webhook keeps its webhook-id; it gets the channel's whole retry schedule.
    """
    if not (ids or channel or since or everything):
        raise click.UsageError("name dead letters (IDS), or use --channel, --since or --all")
    conf = _conf(conf_path)
    retention = float(conf.history.retention)

    async def replay(redis: Redis, keys: Keys) -> tuple[int, int, list[str]]:
        letters = await admin.dead_letters(
            redis, keys, channel=channel, since=parse_when(since), ids=ids
        )
        missing = sorted(set(ids) - {x for lt in letters for x in (lt.entry_id, lt.delivery_id)})
        moved = 0
        progress: Any = click.progressbar(
            letters, label="replaying", show_pos=True, file=sys.stderr
        )
        with progress as bar:
            for letter in bar:
                moved += await admin.replay_dead_letter(redis, keys, letter, retention=retention)
        return moved, len(letters), missing

    moved, found, missing = _with_redis(conf, replay)
    click.echo(f"replayed {moved} of {found} dead letter(s)")
    if found - moved:
        click.echo(f"{found - moved} were replayed by someone else meanwhile")
    if missing:
        raise click.ClickException(f"no dead letter {', '.join(missing)}")


# -- tocsin events -----------------------------------------------------------------------


@click.group()
def events() -> None:
    """Events Tocsin has routed (kept for the history retention)."""


@events.command("replay")
@click.argument("event_id")
@click.option("--force", is_flag=True, help="Also resend deliveries already delivered.")
@conf_option
def events_replay(event_id: str, force: bool, conf_path: Path | None) -> None:
    """Route an event again with the current rules (routed events are kept for the retention).

    Deliveries already delivered are skipped unless --force; they keep their ids, so
    receivers see the same webhook-id and can dedupe.
    """
    from .cli import _load  # noqa: PLC0415 - the plan needs the full plugin machinery

    conf, _registry, plan = _load(conf_path)
    result = _with_redis(
        conf, lambda r, k: admin.replay_event(r, k, plan.rules, event_id, force=force)
    )
    if result is None:
        raise click.ClickException(
            f"no routed event {event_id} "
            "(never accepted, not routed yet, or older than history.retention)"
        )
    for delivery in result.queued:
        click.echo(f"queued   {delivery.id}  rule {delivery.rule} -> {delivery.channel}")
    for delivery, why in result.skipped:
        click.echo(f"skipped  {delivery.id}  rule {delivery.rule} -> {delivery.channel}: {why}")
    click.echo(f"{len(result.queued)} queued, {len(result.skipped)} skipped")


@events.command("catalog")
@click.option("--markdown", is_flag=True, help="Print docs/events.md, generated from the catalog.")
@json_option
def events_catalog(markdown: bool, as_json: bool) -> None:
    """The canonical event types and the fields each guarantees (needs no conf or Redis)."""
    from .catalog import CATALOG, catalog_json, catalog_markdown  # noqa: PLC0415

    if markdown:
        click.echo(catalog_markdown(), nl=False)
        return
    if as_json:
        for item in catalog_json():
            _echo_json(item)
        return
    for spec in CATALOG:
        required = ", ".join(f.path for f in spec.required)
        click.echo(f"{spec.type:32} {'(generated) ' if spec.generated else ''}{required}")


# -- tocsin endpoints --------------------------------------------------------------------


@click.group(invoke_without_command=True)
@json_option
@conf_option
@click.pass_context
def endpoints(ctx: click.Context, as_json: bool, conf_path: Path | None) -> None:
    """Each channel's endpoint: failing since, disabled, jobs waiting."""
    if ctx.invoked_subcommand is not None:
        return
    conf = _conf(conf_path)
    states = _with_redis(conf, lambda r, k: admin.endpoint_states(r, k, conf.channels))
    if as_json:
        for state in states:
            _echo_json(state.__dict__)
        return
    for s in states:
        if s.disabled_at is not None:
            health = f"DISABLED since {_stamp(s.disabled_at)} UTC: {s.disabled_reason}"
        elif s.failing_since is not None:
            health = f"failing since {_stamp(s.failing_since)} UTC"
        else:
            health = "ok"
        click.echo(f"{s.channel:20} {s.queued:>7} queued {s.in_flight:>5} in flight  {health}")


@endpoints.command("enable")
@click.argument("channel")
@conf_option
def endpoints_enable(channel: str, conf_path: Path | None) -> None:
    """Enable a disabled endpoint: its waiting jobs are sent, its failure clock restarts."""
    conf = _conf(conf_path)
    if channel not in conf.channels:
        raise click.ClickException(f"no channel {channel!r} in {conf.path}")
    was = _with_redis(conf, lambda r, k: admin.enable_endpoint(r, k, channel))
    click.echo(f"{channel}: enabled" if was else f"{channel}: was not disabled (clock reset)")


# -- tocsin scenarios / simulate -------------------------------------------------------


def _engine(conf: Conf, redis: Redis, keys: Keys) -> Any:
    from .scenarios import ScenarioEngine  # noqa: PLC0415 - only for these commands

    return ScenarioEngine(redis, keys, [], timezone=conf.gateway.timezone, clock=time.time)


@click.group()
def scenarios() -> None:
    """Running and finished scenario instances (reminder sequences...)."""


@scenarios.command("list")
@click.option("--key", default=None, help="Only the instances for this business key.")
@click.option("--limit", default=100, show_default=True)
@json_option
@conf_option
def scenarios_list(key: str | None, limit: int, as_json: bool, conf_path: Path | None) -> None:
    """Instances, most recently changed first, with their steps' progress."""
    conf = _conf(conf_path)
    found = _with_redis(conf, lambda r, k: _engine(conf, r, k).list(key=key, limit=limit))
    if as_json:
        for instance in found:
            _echo_json(instance)
        return
    if not found:
        click.echo("no scenario instances")
        return
    for i in found:
        counts = {s: sum(1 for st in i.steps if st.status == s) for s in ("done", "pending")}
        nxt = min((st.due for st in i.steps if st.status == "pending" and st.due), default=None)
        click.echo(
            f"{i.scenario:28} {i.key:36} {i.status:9} {counts['done']} done, "
            f"{counts['pending']} pending" + (f", next {_stamp(nxt)} UTC" if nxt else "")
        )


def _print_instance(i: Any) -> None:
    click.echo(f"scenario  {i.scenario}")
    click.echo(f"key       {i.key}")
    click.echo(f"status    {i.status}" + (f": {i.reason}" if i.reason else ""))
    click.echo(f"started   {_stamp(i.started)} UTC by {i.trigger_type} {i.trigger_event}")
    click.echo("events    " + "; ".join(i.events))
    click.echo("steps")
    for st in i.steps:
        when = _stamp(st.fired or st.due)
        extra = f" ({st.deliveries} deliveries)" if st.status == "done" else ""
        note = f"  {st.note}" if st.note else ""
        click.echo(f"  {st.name:24} {st.status:9} {when}{extra}{note}")


@scenarios.command("show")
@click.argument("key")
@json_option
@conf_option
def scenarios_show(key: str, as_json: bool, conf_path: Path | None) -> None:
    """Every instance for KEY: steps done, pending (with due times), cancelled, and why."""
    conf = _conf(conf_path)
    found = _with_redis(conf, lambda r, k: _engine(conf, r, k).list(key=key))
    if not found:
        raise click.ClickException(f"no scenario instance for key {key!r}")
    for n, instance in enumerate(found):
        if as_json:
            _echo_json(instance)
            continue
        if n:
            click.echo()
        _print_instance(instance)


@scenarios.command("cancel")
@click.argument("key")
@click.option("--scenario", "name", default=None, help="Only this scenario's instance.")
@conf_option
def scenarios_cancel(key: str, name: str | None, conf_path: Path | None) -> None:
    """Cancel the active instances for KEY: their pending steps will not fire."""
    conf = _conf(conf_path)

    async def cancel(redis: Redis, keys: Keys) -> list[str]:
        engine = _engine(conf, redis, keys)
        done = []
        for instance in await engine.list(key=key):
            if instance.status == "active" and name in (None, instance.scenario):
                await engine.cancel(instance.scenario, key, "cancelled by an operator")
                done.append(instance.scenario)
        return done

    cancelled = _with_redis(conf, cancel)
    if not cancelled:
        raise click.ClickException(f"no active scenario instance for key {key!r}")
    for scenario in cancelled:
        click.echo(f"{scenario} {key}: cancelled")


@click.command()
@click.argument("events_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--until", default="120d", show_default=True, help="How far past the last event.")
@click.option("--redis-url", default=None, help="A scratch Redis (default: a temporary one).")
@conf_option
def simulate(events_file: Path, until: str, redis_url: str | None, conf_path: Path | None) -> None:
    """Replay EVENTS_FILE (JSON lines or a JSON array of canonical events) against the
    conf with a virtual clock and print every notification that would be sent: when (in
    the conf's time zone, after sending windows), channel, to whom, template, and why."""
    import tempfile  # noqa: PLC0415

    from . import simulate as sim  # noqa: PLC0415
    from .cli import _load  # noqa: PLC0415
    from .event import EventInvalid  # noqa: PLC0415
    from .redis_client import connect  # noqa: PLC0415
    from .redis_server import RedisServer, free_port  # noqa: PLC0415

    _conf_obj, _registry, plan = _load(conf_path)
    try:
        events = sim.read_events(events_file.read_bytes())
    except (EventInvalid, ValueError, msgspec.DecodeError) as exc:
        raise click.ClickException(f"{events_file}: {exc}") from None
    horizon = float(Duration.parse(until))

    async def run(url: str) -> list[Any]:
        redis = connect(url)
        try:
            return await sim.simulate(plan, redis, events, horizon=horizon)
        finally:
            await redis.aclose()

    with tempfile.TemporaryDirectory(prefix="tocsin-simulate-") as scratch:
        server = None
        if redis_url is None:
            server = RedisServer(Path(scratch), port=free_port(), appendfsync="no")
            redis_url = server.start()
        try:
            notifications = asyncio.run(run(redis_url))
        finally:
            if server is not None:
                server.stop()
    for line in sim.format_notifications(plan, notifications):
        click.echo(line)
    click.echo(f"{len(notifications)} notification(s) from {len(events)} event(s)")


COMMANDS = (deliveries, dlq, events, endpoints, scenarios, simulate)
