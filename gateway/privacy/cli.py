"""``tocsin forget`` and ``tocsin retention``: erasure and retention from the command line."""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from redis.asyncio import Redis

from ..archive import ArchiveStore
from ..cli_common import conf_only, echo_json, with_tiers
from ..cli_options import conf_option, json_option
from ..keys import Layout
from .forget import ForgetReport, forget_customer
from .outboxes import outbox_roots
from .retention import KINDS, Retention, Sweeper, Swept


@click.command()
@click.option("--customer", "customer_id", required=True, help="The customer id to erase.")
@click.option(
    "--value",
    "values",
    multiple=True,
    help="Another of the customer's values (email, phone, name) to erase wherever found.",
)
@click.option(
    "--actor",
    default=None,
    help="Who asks, for the audit entry (default: cli:<login>).",
)
@click.option(
    "--no-aof-rewrite",
    is_flag=True,
    help="Do not ask Redis to rewrite its AOF (erased values stay in its files until it does).",
)
@json_option
@conf_option
def forget(
    customer_id: str,
    values: tuple[str, ...],
    actor: str | None,
    no_aof_rewrite: bool,
    as_json: bool,
    conf_path: Path | None,
) -> None:
    """Erase one customer's personal data from every store (docs/data-protection.md).

    Amounts, references and timestamps stay; names, emails and phone numbers go. Running
    scenarios for the customer are cancelled. The erasure is audited.
    """
    conf = conf_only(conf_path)
    who = actor or f"cli:{getpass.getuser()}"
    roots = outbox_roots(conf)

    async def run(redis: Redis, layout: Layout, archive: ArchiveStore | None) -> ForgetReport:
        return await forget_customer(
            redis,
            layout,
            customer_id,
            archive=archive,
            outbox_roots=roots,
            actor=who,
            values=values,
            rewrite=not no_aof_rewrite,
        )

    report = with_tiers(conf, run)
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(f"customer {customer_id}: erased")
        for name, n in sorted(report.counts.items()):
            click.echo(f"  {name.replace('_', ' '):<28} {n}")
        if not report.counts:
            click.echo("  nothing held any of their personal data")
        if report.aof_rewritten:
            click.echo("  Redis rewrote its append-only file")
        for problem in report.problems:
            click.echo(f"warning: {problem}", err=True)
    if report.problems:
        raise SystemExit(1)


@click.command()
@click.option("--dry-run", is_flag=True, help="Only count what would go now.")
@json_option
@conf_option
def retention(dry_run: bool, as_json: bool, conf_path: Path | None) -> None:
    """Apply the retention once (a gateway does it in the background), or with
    --dry-run print what would go, per kind."""
    conf = conf_only(conf_path)
    policy = Retention.of(conf)

    async def run(redis: Redis, layout: Layout, archive: ArchiveStore | None) -> Swept:
        sweeper = Sweeper(redis, layout, policy, archive=archive, outbox_roots=outbox_roots(conf))
        if dry_run:
            return await sweeper.sweep(dry_run=True)
        total = Swept()
        while True:  # bounded passes, until one finds nothing
            swept = await sweeper.sweep()
            for name, n in swept.counts.items():
                total.add(name, n)
            if not swept.total:
                return total

    swept = with_tiers(conf, run)
    if as_json:
        echo_json({"dry_run": dry_run, "counts": swept.counts})
        return
    verb = "would go" if dry_run else "went"
    for kind in KINDS:
        kept = float(getattr(policy, kind))
        click.echo(f"{kind:<14} kept {kept / 86400:g}d")
    for name, n in sorted(swept.counts.items()):
        click.echo(f"  {name:<22} {n} {verb}")


COMMANDS = (forget, retention)
