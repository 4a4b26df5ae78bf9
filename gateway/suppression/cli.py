"""``tocsin suppress add | remove | list | check``: the suppression list from a shell."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path

import click

from ..cli_common import CliError, conf_only, duration_param, echo_json, stamp, table, with_redis
from ..cli_options import conf_option, json_option
from . import operations
from .store import REASONS, Entry, skip_reason

region_option = click.option(
    "--region",
    default=None,
    help="Read a national phone number in this region (FR, BE...); default: +E.164 only.",
)


def _author() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _until(for_: float | None, until: str | None) -> float | None:
    if for_ is not None and until is not None:
        raise click.UsageError("--for and --until: one or the other")
    if for_ is not None:
        return datetime.now(UTC).timestamp() + for_
    if until is None:
        return None
    try:
        when = datetime.fromisoformat(until)
    except ValueError:
        raise click.BadParameter(f"{until!r} is not an ISO date", param_hint="--until") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _for_param(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else duration_param(ctx, param, value)


def _describe(entry: Entry) -> str:
    until = f", until {stamp(entry.until)}" if entry.until is not None else ""
    note = f" ({entry.note})" if entry.note else ""
    return f"{entry.address}: {entry.reason} by {entry.author} since {stamp(entry.at)}{until}{note}"


@click.group()
def suppress() -> None:
    """Addresses that get no reminder or marketing message (and, after a hard bounce or an
    invalid number, none at all): see docs/operations.md, "Suppression list"."""


@suppress.command("add")
@click.argument("address")
@click.option(
    "--reason", type=click.Choice(REASONS), default="manual", show_default=True, help="Why."
)
@click.option("--for", "for_", default=None, callback=_for_param, help="Expire after: 30d.")
@click.option("--until", default=None, help="Expire at this ISO date (UTC unless it says).")
@click.option("--note", default=None, help="Why, for whoever reads the list later.")
@click.option("--author", default=None, help="Who asks (default: cli:<your user name>).")
@region_option
@conf_option
def suppress_add(
    address: str,
    reason: str,
    for_: float | None,
    until: str | None,
    note: str | None,
    author: str | None,
    region: str | None,
    conf_path: Path | None,
) -> None:
    """List ADDRESS (an email or a +E.164 phone number), replacing its entry if any."""
    expires = _until(for_, until)
    conf = conf_only(conf_path)
    try:
        entry = with_redis(
            conf,
            lambda r, k: operations.add(
                r, k, address, reason, author or _author(), until=expires, note=note, region=region
            ),
        )
    except ValueError as exc:
        raise CliError(f"{address}: {exc}") from None
    click.echo(f"listed {_describe(entry)}")


@suppress.command("remove")
@click.argument("address")
@region_option
@conf_option
def suppress_remove(address: str, region: str | None, conf_path: Path | None) -> None:
    """Take ADDRESS off the list."""
    conf = conf_only(conf_path)
    try:
        entry = with_redis(conf, lambda r, k: operations.remove(r, k, address, region=region))
    except ValueError as exc:
        raise CliError(f"{address}: {exc}") from None
    if entry is None:
        raise click.ClickException(f"{address} is not on the suppression list")
    click.echo(f"removed {_describe(entry)}")


@suppress.command("list")
@click.option("--reason", type=click.Choice(REASONS), default=None, help="Only this reason.")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="At most this many.")
@json_option
@conf_option
def suppress_list(
    reason: str | None, limit: int | None, as_json: bool, conf_path: Path | None
) -> None:
    """Active entries, newest first (times UTC)."""
    conf = conf_only(conf_path)
    found = with_redis(conf, lambda r, k: operations.list_entries(r, k, reason=reason, limit=limit))
    if as_json:
        for entry in found:
            echo_json(entry)
        return
    if not found:
        click.echo("the suppression list is empty" + (f" for {reason}" if reason else ""))
        return
    table(
        ("address", "reason", "since", "until", "author", "note"),
        ((e.address, e.reason, stamp(e.at), stamp(e.until), e.author, e.note or "") for e in found),
    )


@suppress.command("check")
@click.argument("address")
@click.option(
    "--category",
    type=click.Choice(("transactional", "reminder", "marketing")),
    default=None,
    help="Also say whether a message of this category would be sent.",
)
@region_option
@conf_option
def suppress_check(
    address: str, category: str | None, region: str | None, conf_path: Path | None
) -> None:
    """Whether ADDRESS is listed (exit 1 if it is)."""
    conf = conf_only(conf_path)
    try:
        entry = with_redis(conf, lambda r, k: operations.check(r, k, address, region=region))
    except ValueError as exc:
        raise CliError(f"{address}: {exc}") from None
    if entry is None:
        click.echo(f"{address} is not on the suppression list")
        return
    click.echo(f"listed {_describe(entry)}")
    if category is not None:
        why = skip_reason(entry, category)
        click.echo(f"a {category} message would be " + ("skipped" if why else "sent"))
    raise SystemExit(1)


COMMANDS = (suppress,)
