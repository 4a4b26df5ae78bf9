"""The CLI side of the admin operations: ``tocsin deliveries retry``, ``tocsin replays``,
and the context the refactored ``endpoints``/``scenarios``/``events`` commands act with.
Every write goes through the same function the API calls, audited as ``cli:<user>``."""

from __future__ import annotations

import getpass
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from redis.asyncio import Redis

from ..archive import ArchiveStore
from ..cli_common import (
    CliError,
    conf_only,
    echo_json,
    known_channel,
    load,
    stamp,
    when_param,
    with_tiers,
)
from ..cli_options import conf_option, json_option
from ..conf import Conf
from ..history import STATUSES
from ..keys import Layout
from ..plan import Plan
from ..privacy.outboxes import outbox_roots
from . import bulk, ops
from .common import AdminContext, BadRequest, Conflict, NotFound

T = TypeVar("T")


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def with_admin(
    conf: Conf, action: Callable[[AdminContext], Awaitable[T]], plan: Plan | None = None
) -> T:
    """Run an admin operation on the deployment ``conf`` names (both history tiers);
    its refusals become the command's errors."""

    async def run(redis: Redis, layout: Layout, archive: ArchiveStore | None) -> T:
        channels = {name: table.type for name, table in conf.channels.items()}
        ctx = AdminContext(
            redis,
            layout,
            archive,
            float(conf.history.retention),
            actor(),
            rules=plan.rules if plan is not None else [],
            channels=channels,
            scenarios=tuple(plan.scenarios) if plan is not None else (),
            timezone=conf.gateway.timezone,
            privacy_key=conf.privacy.key.reveal().encode() if conf.privacy.key else None,
            outbox_roots=tuple(outbox_roots(conf)),
        )
        return await action(ctx)

    try:
        return with_tiers(conf, run)
    except BadRequest as exc:
        raise click.UsageError(f"{exc.where}: {exc.reason}") from None
    except (NotFound, Conflict) as exc:
        raise click.ClickException(str(exc)) from None


@click.command("retry")
@click.argument("delivery_id")
@conf_option
def deliveries_retry(delivery_id: str, conf_path: Path | None) -> None:
    """Send now a delivery waiting for its next attempt (its retry schedule goes on
    from there if it fails again)."""
    conf = conf_only(conf_path)
    result = with_admin(conf, lambda ctx: ops.retry_now(ctx, delivery_id))
    click.echo(f"{delivery_id}: queued on {result['channel']}, sent at once")


# -- tocsin replays ------------------------------------------------------------------------


@click.group()
def replays() -> None:
    """Bulk replay by filter: count first (--dry-run), then a background job that a
    running gateway (one serving the admin API) carries out, resumable and cancellable."""


@replays.command("start")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option("--channel", default=None, help="Only this channel's deliveries.")
@click.option("--customer", "customer_id", default=None, help="Only this customer's.")
@click.option("--invoice", "invoice_ref", default=None, help="Only this invoice ref's.")
@click.option("--event", "event_id", default=None, help="Only this event's.")
@click.option("--since", default=None, callback=when_param, help="Updated since: 2h, 3d, ISO.")
@click.option("--until", default=None, callback=when_param, help="Updated before: 2h, 3d, ISO.")
@click.option("--rate", default=100.0, show_default=True, help="Deliveries queued per second.")
@click.option("--dry-run", is_flag=True, help="Only count, and show a sample.")
@json_option
@conf_option
def replays_start(
    status: str | None,
    channel: str | None,
    customer_id: str | None,
    invoice_ref: str | None,
    event_id: str | None,
    since: float | None,
    until: float | None,
    rate: float,
    dry_run: bool,
    as_json: bool,
    conf_path: Path | None,
) -> None:
    """Replay every delivery matching the filters (dead ones from the dead letters,
    delivered ones re-planned from their event; ones waiting for a retry are skipped)."""
    conf, _registry, plan = load(conf_path)
    known_channel(conf, channel)
    flt = bulk.ReplayFilter(
        event_id=event_id,
        customer_id=customer_id,
        invoice_ref=invoice_ref,
        channel=channel,
        status=status,
        since=since,
        until=until,
    )
    if flt.is_empty():
        raise click.UsageError("a bulk replay needs at least one filter (--status, --channel...)")
    if dry_run:
        found = with_admin(conf, lambda ctx: bulk.dry_run(ctx, flt), plan)
        if as_json:
            echo_json(found)
            return
        more = " (over the limit: narrow the filter)" if found["over_limit"] else ""
        click.echo(f"{found['count']} deliveries would be replayed{more}: {found['by_status']}")
        for item in found["sample"]:
            click.echo(f"  {item['id']}  {item['channel']}  {item['status']}  {item['event_id']}")
        return
    if not conf.admin.tokens:
        raise CliError(
            "a replay job runs in a gateway serving the admin API: set [admin] tokens "
            "(docs/operations.md, Admin API)"
        )
    job = with_admin(conf, lambda ctx: bulk.start_job(ctx, flt, rate=rate), plan)
    if as_json:
        echo_json(job)
        return
    click.echo(f"{job['id']}: started; `tocsin replays show {job['id']}` follows it")


def _print_job(job: dict[str, Any]) -> None:
    done = f"{job['position']}/{job['total']}"
    click.echo(
        f"{job['id']}  {job['state']:9} {done:>13}  queued {job['queued']}, "
        f"skipped {job['skipped']}  by {job['actor']} {stamp(job['created'])}"
    )


@replays.command("list")
@json_option
@conf_option
def replays_list(as_json: bool, conf_path: Path | None) -> None:
    """Replay jobs, newest first."""
    conf = conf_only(conf_path)
    jobs = with_admin(conf, bulk.list_jobs)
    for job in jobs:
        if as_json:
            echo_json(job)
        else:
            _print_job(job)
    if not jobs and not as_json:
        click.echo("no replay jobs")


@replays.command("show")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Until it ends, printing progress.")
@json_option
@conf_option
def replays_show(job_id: str, wait: bool, as_json: bool, conf_path: Path | None) -> None:
    """One job's state and progress."""
    conf = conf_only(conf_path)
    while True:
        job = with_admin(conf, lambda ctx: bulk.job_status(ctx, job_id))
        if as_json:
            echo_json(job)
        else:
            _print_job(job)
        if not wait or job["state"] not in ("planning", "running"):
            return
        time.sleep(1)


@replays.command("cancel")
@click.argument("job_id")
@conf_option
def replays_cancel(job_id: str, conf_path: Path | None) -> None:
    """Stop a job: what it queued stays queued, nothing more is."""
    conf = conf_only(conf_path)
    job = with_admin(conf, lambda ctx: bulk.cancel_job(ctx, job_id))
    click.echo(f"{job_id}: cancelled after {job['position']} of {job['total']}")


COMMANDS = (replays,)
