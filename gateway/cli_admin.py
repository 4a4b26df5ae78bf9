"""``tocsin deliveries | dlq | events | endpoints``: what ops run on a live deployment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import msgspec
from redis.asyncio import Redis

from . import admin, admin_events
from .adminapi import ops
from .adminapi.cli import deliveries_retry, with_admin
from .adminapi.search import NO_KEY
from .archive import ArchiveStore
from .cli_common import (
    conf_only,
    echo_json,
    known_channel,
    load,
    stamp,
    table,
    when_param,
    with_redis,
    with_tiers,
)
from .cli_options import conf_option, json_option
from .history import SENDS, STATUSES, DeliveryRecord
from .keys import Layout
from .privacy.recipients import recipient_hash
from .receipts import receipts_of

# -- tocsin deliveries -------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--event", "event_id", default=None, help="Only this event's deliveries.")
@click.option("--channel", default=None, help="Only this channel's.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option(
    "--to",
    "to",
    default=None,
    help="Only those sent to this full address (matched by [privacy] key's hash; "
    "scans the time window: narrow it with --since).",
)
@click.option(
    "--since", default=None, callback=when_param, help="Updated since: 2h, 3d or an ISO date."
)
@click.option(
    "--until", default=None, callback=when_param, help="Updated before: 2h, 3d or an ISO date."
)
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="At most this many, newest first.",
)
@json_option
@conf_option
@click.pass_context
def deliveries(
    ctx: click.Context,
    event_id: str | None,
    channel: str | None,
    status: str | None,
    to: str | None,
    since: float | None,
    until: float | None,
    limit: int,
    as_json: bool,
    conf_path: Path | None,
) -> None:
    """List deliveries (newest first) with their status and attempt count (times UTC)."""
    if ctx.invoked_subcommand is not None:
        return
    conf = conf_only(conf_path)
    known_channel(conf, channel)
    to_hash = None
    if to is not None:
        if conf.privacy.key is None:
            raise click.BadParameter(NO_KEY, param_hint="--to")
        if not to.strip():
            raise click.BadParameter("an email address or a phone number", param_hint="--to")
        to_hash = recipient_hash(conf.privacy.key.reveal().encode(), to)
    records = with_tiers(
        conf,
        lambda r, k, a: admin.find_deliveries(
            r,
            k,
            event_id=event_id,
            channel=channel,
            status=status,
            since=since,
            until=until,
            limit=limit,
            archive=a,
            to_hash=to_hash,
        ),
    )
    if as_json:
        for record in records:
            echo_json(record)
        return
    if not records:
        click.echo("no deliveries match")
        return
    table(
        ("UPDATED", "STATUS", "ATT", "CHANNEL", "ID / EVENT"),
        (
            (
                stamp(r.updated),
                r.status,
                str(sum(1 for a in r.attempts if a.outcome in SENDS)),
                r.channel,
                f"{r.id}  {r.event_id} ({r.event_type})",
            )
            for r in records
        ),
        right=(2,),
    )


@deliveries.command("show")
@click.argument("delivery_id")
@json_option
@conf_option
def deliveries_show(delivery_id: str, as_json: bool, conf_path: Path | None) -> None:
    """One delivery and every attempt: time, outcome, status code, error, latency."""
    conf = conf_only(conf_path)
    record = with_tiers(conf, lambda r, k, a: admin.show_delivery(r, k, delivery_id, a))
    if record is None:
        raise click.ClickException(
            f"no delivery {delivery_id} (unknown, or past the retention; `tocsin deliveries` "
            "lists them)"
        )
    receipts = with_redis(conf, lambda r, k: receipts_of(r, k, delivery_id))
    if as_json:
        echo_json({**msgspec.to_builtins(record), "receipts": receipts})
        return
    _print_record(record)
    if receipts:
        click.echo("receipts")
        for item in receipts:
            detail = f"  {item.detail}" if item.detail else ""
            click.echo(f"     {stamp(item.at)}  {item.status}{detail}")


def _print_record(r: DeliveryRecord) -> None:
    click.echo(f"delivery  {r.id}")
    click.echo(f"event     {r.event_id} ({r.event_type})")
    click.echo(f"rule      {r.rule}")
    click.echo(f"channel   {r.channel}" + (f" -> {r.to}" if r.to else ""))
    status = r.status + (f", next attempt {stamp(r.next_at)}" if r.next_at else "")
    click.echo(f"status    {status} (updated {stamp(r.updated)})")
    click.echo("attempts")
    for a in r.attempts:
        if a.outcome == "replayed":
            click.echo(f"  -  {stamp(a.at)}  replayed by an operator")
            continue
        if a.outcome in ("deferred", "cancelled", "suppressed"):
            click.echo(f"  -  {stamp(a.at)}  {a.error or a.note}")
            continue
        code = f"  [{a.status}]" if a.status is not None else ""
        error = f"  {a.error}" if a.error else (f"  {a.note}" if a.note else "")
        click.echo(f"  {a.n:>2} {stamp(a.at)}  {a.outcome:9} {a.ms:>8.1f} ms{code}{error}")


# -- tocsin dlq ------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead letters: deliveries that failed for good, and events that could not be routed."""


@dlq.command("list")
@click.option("--channel", default=None, help="Only this channel's.")
@click.option(
    "--since", default=None, callback=when_param, help="Dead since: 2h, 3d or an ISO date."
)
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(min=1), help="At most this many."
)
@json_option
@conf_option
def dlq_list(
    channel: str | None, since: float | None, limit: int, as_json: bool, conf_path: Path | None
) -> None:
    """Dead letters, oldest first (times UTC)."""
    conf = conf_only(conf_path)
    known_channel(conf, channel)
    letters = with_tiers(
        conf,
        lambda r, k, a: admin.dead_letters(
            r, k, channel=channel, since=since, limit=limit, archive=a
        ),
    )
    if as_json:
        for letter in letters:
            echo_json(
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
            f"{letter.entry_id}  {stamp(letter.at)}  {letter.channel or '-':16}  {what}{event}"
        )
        click.echo(f"    {letter.reason}")


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--channel", default=None, help="Every dead letter of this channel.")
@click.option(
    "--since",
    default=None,
    callback=when_param,
    help="Every dead letter since: 2h, 3d or an ISO date.",
)
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@conf_option
def dlq_replay(
    ids: tuple[str, ...],
    channel: str | None,
    since: float | None,
    everything: bool,
    conf_path: Path | None,
) -> None:
    """Queue dead letters again (by entry or delivery id, or by --channel/--since/--all).

    A replayed webhook keeps its webhook-id; it gets the channel's whole retry schedule.
    """
    if not (ids or channel or since or everything):
        raise click.UsageError("name dead letters (IDS), or use --channel, --since or --all")
    conf = conf_only(conf_path)
    known_channel(conf, channel)
    retention = float(conf.history.retention)

    async def replay(
        redis: Redis, keys: Layout, archive: ArchiveStore | None
    ) -> tuple[int, int, list[str]]:
        letters = await admin.dead_letters(
            redis, keys, channel=channel, since=since, ids=ids, archive=archive
        )
        missing = sorted(set(ids) - {x for lt in letters for x in (lt.entry_id, lt.delivery_id)})
        moved = 0
        progress: Any = click.progressbar(
            letters, label="replaying", show_pos=True, file=sys.stderr
        )
        with progress as bar:
            for letter in bar:
                moved += await admin.replay_dead_letter(
                    redis, keys, letter, retention=retention, archive=archive
                )
        return moved, len(letters), missing

    moved, found, missing = with_tiers(conf, replay)
    click.echo(f"replayed {moved} of {found} dead letter(s)")
    if found - moved:
        click.echo(f"{found - moved} were replayed by someone else meanwhile")
    if missing:
        raise click.ClickException(f"no dead letter {', '.join(missing)}")


# -- tocsin events -----------------------------------------------------------------------


@click.group()
def events() -> None:
    """Events Tocsin has routed (kept for the history retention)."""


@events.command("list")
@click.option("--type", "type_glob", default=None, help="Only types matching: payment.*")
@click.option(
    "--since", default=None, callback=when_param, help="Accepted since: 2h, 3d or an ISO date."
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most this many."
)
@json_option
@conf_option
def events_list(
    type_glob: str | None, since: float | None, limit: int, as_json: bool, conf_path: Path | None
) -> None:
    """Accepted events, newest first: routed, waiting, or waiting for their source's
    confirmation. Unknown types are listed too: nothing accepted is dropped."""
    conf = conf_only(conf_path)
    found = with_tiers(
        conf,
        lambda r, k, a: admin_events.list_events(
            r, k, type_glob=type_glob, since=since, limit=limit, archive=a
        ),
    )
    if as_json:
        for item in found:
            echo_json(item.as_dict())
        return
    if not found:
        click.echo("no events match")
        return
    table(
        ("ACCEPTED", "STATE", "TYPE", "FROM", "ID"),
        ((stamp(e.accepted), _state(e), e.type, _origin(e), e.id) for e in found),
    )


@events.command("show")
@click.argument("event_id")
@json_option
@conf_option
def events_show(event_id: str, as_json: bool, conf_path: Path | None) -> None:
    """One accepted event, whole, and the deliveries it has led to."""
    conf = conf_only(conf_path)
    found = with_tiers(conf, lambda r, k, a: admin_events.show_event(r, k, event_id, a))
    if found is None:
        raise click.ClickException(
            f"no event {event_id} (never accepted, or older than history.retention; "
            "`tocsin events list` lists them)"
        )
    records = with_tiers(
        conf, lambda r, k, a: admin.find_deliveries(r, k, event_id=event_id, archive=a)
    )
    if as_json:
        echo_json({**found.as_dict(), "deliveries": [msgspec.to_builtins(r) for r in records]})
        return
    click.echo(f"event     {found.id} ({found.type})")
    click.echo(f"from      {_origin(found)}")
    click.echo(f"accepted  {stamp(found.accepted)}  ({_state(found)})")
    click.echo(msgspec.json.format(found.raw, indent=2).decode())
    click.echo("deliveries" if records else "deliveries: none yet")
    for r in records:
        note = next((a.note for a in reversed(r.attempts) if a.note), "")
        click.echo(f"  {r.id}  {r.channel}  {r.status}" + (f"  {note}" if note else ""))


def _state(event: admin_events.StoredEvent) -> str:
    if event.confirm_by is not None:
        return f"{event.state}: confirmation by {event.confirm_by}"
    return event.state


def _origin(event: admin_events.StoredEvent) -> str:
    return event.provider + (f" {event.provider_type}" if event.provider_type else "")


@events.command("replay")
@click.argument("event_id")
@click.option("--force", is_flag=True, help="Also resend deliveries already delivered.")
@conf_option
def events_replay(event_id: str, force: bool, conf_path: Path | None) -> None:
    """Route an event again with the current rules (routed events are kept for the retention).

    Deliveries already delivered are skipped unless --force; they keep their ids, so
    receivers see the same webhook-id and can dedupe.
    """
    conf, _registry, plan = load(conf_path)
    try:
        result = with_admin(conf, lambda ctx: ops.replay_event(ctx, event_id, force=force), plan)
    except click.ClickException:
        raise click.ClickException(
            f"no routed event {event_id} "
            "(never accepted, not routed yet, or older than history.retention)"
        ) from None
    for d in result["queued"]:
        click.echo(f"queued   {d['id']}  rule {d['rule']} -> {d['channel']}")
    for d in result["skipped"]:
        click.echo(f"skipped  {d['id']}  rule {d['rule']} -> {d['channel']}: {d['reason']}")
    click.echo(f"{len(result['queued'])} queued, {len(result['skipped'])} skipped")


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
            echo_json(item)
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
    """Each channel's endpoint: jobs waiting (queued, in flight, retrying, deferred by a
    sending window) and health: failing since, disabled (times UTC)."""
    if ctx.invoked_subcommand is not None:
        return
    conf = conf_only(conf_path)
    states = with_redis(conf, lambda r, k: admin.endpoint_states(r, k, conf.channels))
    if as_json:
        for state in states:
            echo_json(state.__dict__)
        return
    rows = []
    for s in states:
        if s.disabled_at is not None:
            health = f"DISABLED since {stamp(s.disabled_at)}: {s.disabled_reason}"
        elif s.failing_since is not None:
            health = f"failing since {stamp(s.failing_since)}"
        else:
            health = "ok"
        counts = (s.queued, s.in_flight, s.retrying, s.deferred)
        rows.append((s.channel, *(str(n) for n in counts), health))
    header = ("CHANNEL", "QUEUED", "IN FLIGHT", "RETRYING", "DEFERRED", "HEALTH")
    table(header, rows, right=(1, 2, 3, 4))


@endpoints.command("enable")
@click.argument("channel")
@conf_option
def endpoints_enable(channel: str, conf_path: Path | None) -> None:
    """Enable a disabled endpoint: its waiting jobs are sent, its failure clock restarts."""
    conf = conf_only(conf_path)
    known_channel(conf, channel)
    result = with_admin(conf, lambda ctx: ops.enable_endpoint(ctx, channel))
    was = result["was_disabled"]
    click.echo(f"{channel}: enabled" if was else f"{channel}: was not disabled (clock reset)")


@endpoints.command("disable")
@click.argument("channel")
@click.option("--reason", default="", help="Why, for whoever enables it again.")
@conf_option
def endpoints_disable(channel: str, reason: str, conf_path: Path | None) -> None:
    """Hold a channel's jobs: workers stop sending on it until `endpoints enable`."""
    conf = conf_only(conf_path)
    known_channel(conf, channel)
    result = with_admin(conf, lambda ctx: ops.disable_endpoint(ctx, channel, reason))
    click.echo(f"{channel}: " + ("was already disabled" if result["was_disabled"] else "disabled"))


deliveries.add_command(deliveries_retry)
COMMANDS = (deliveries, dlq, events, endpoints)
