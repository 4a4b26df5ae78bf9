"""``tocsin scenarios | simulate``: scenario instances on a live deployment, and a dry run
of a conf against recorded events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .cli_common import CliError, conf_only, duration_param, echo_json, load, stamp, with_redis
from .cli_options import conf_option, json_option
from .conf import Conf
from .errors import TocsinError
from .keys import Layout


def _engine(conf: Conf, redis: Redis, keys: Layout) -> Any:
    from .scenarios import ScenarioEngine  # noqa: PLC0415 - only for these commands

    return ScenarioEngine(redis, keys, [], timezone=conf.gateway.timezone, clock=time.time)


@click.group()
def scenarios() -> None:
    """Running and finished scenario instances (reminder sequences...). Times are UTC."""


@scenarios.command("list")
@click.option("--key", default=None, help="Only the instances for this business key.")
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(min=1), help="At most this many."
)
@json_option
@conf_option
def scenarios_list(key: str | None, limit: int, as_json: bool, conf_path: Path | None) -> None:
    """Instances, most recently changed first, with their steps' progress."""
    conf = conf_only(conf_path)
    found = with_redis(conf, lambda r, k: _engine(conf, r, k).list(key=key, limit=limit))
    if as_json:
        for instance in found:
            echo_json(instance)
        return
    if not found:
        click.echo("no scenario instances" + (f" for key {key!r}" if key else ""))
        return
    for i in found:
        counts = {s: sum(1 for st in i.steps if st.status == s) for s in ("done", "pending")}
        nxt = min((st.due for st in i.steps if st.status == "pending" and st.due), default=None)
        click.echo(
            f"{i.scenario:28} {i.key:36} {i.status:9} {counts['done']} done, "
            f"{counts['pending']} pending" + (f", next {stamp(nxt)}" if nxt else "")
        )


def _print_instance(i: Any) -> None:
    click.echo(f"scenario  {i.scenario}")
    click.echo(f"key       {i.key}")
    click.echo(f"status    {i.status}" + (f": {i.reason}" if i.reason else ""))
    click.echo(f"started   {stamp(i.started)} by {i.trigger_type} {i.trigger_event}")
    click.echo("events    " + "; ".join(i.events))
    click.echo("steps")
    width = max((len(st.name) for st in i.steps), default=0)
    for st in i.steps:
        when = stamp(st.fired or st.due)
        extra = f" ({st.deliveries} deliveries)" if st.status == "done" else ""
        note = f"  {st.note}" if st.note else ""
        click.echo(f"  {st.name:{width}}  {st.status:9} {when}{extra}{note}")


@scenarios.command("show")
@click.argument("key")
@json_option
@conf_option
def scenarios_show(key: str, as_json: bool, conf_path: Path | None) -> None:
    """Every instance for KEY: steps done, pending (with due times), cancelled, and why."""
    conf = conf_only(conf_path)
    found = with_redis(conf, lambda r, k: _engine(conf, r, k).list(key=key))
    if not found:
        raise click.ClickException(
            f"no scenario instance for key {key!r} (`tocsin scenarios list` shows the keys)"
        )
    for n, instance in enumerate(found):
        if as_json:
            echo_json(instance)
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
    conf = conf_only(conf_path)
    from .adminapi import ops  # noqa: PLC0415 - only this command needs them
    from .adminapi.cli import with_admin  # noqa: PLC0415

    result = with_admin(conf, lambda ctx: ops.cancel_instances(ctx, key, name))
    cancelled, active = result["cancelled"], result["active"]
    if not cancelled:
        if name is not None and name not in conf.scenarios and name not in active:
            known = ", ".join(sorted(conf.scenarios)) or "none"
            raise CliError(f"no scenario {name!r} in {conf.path} (scenarios: {known})")
        if active:
            raise click.ClickException(
                f"no active {name!r} instance for key {key!r}; active: {', '.join(active)}"
            )
        raise click.ClickException(f"no active scenario instance for key {key!r}")
    for scenario in cancelled:
        click.echo(f"{scenario} {key}: cancelled")


@click.command()
@click.argument("events_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--until",
    default="120d",
    show_default=True,
    callback=duration_param,
    help="How far past the last event (30s, 5m, 2h, 7d).",
)
@click.option("--redis-url", default=None, help="A scratch Redis (default: a temporary one).")
@click.option(
    "--suppressions",
    "suppressions_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A suppression list: `tocsin suppress list --json` output, or ADDRESS REASON lines.",
)
@click.option(
    "--live-suppressions",
    is_flag=True,
    help="Use the deployment's suppression list (read from the conf's Redis, not changed).",
)
@conf_option
def simulate(
    events_file: Path,
    until: float,
    redis_url: str | None,
    suppressions_file: Path | None,
    live_suppressions: bool,
    conf_path: Path | None,
) -> None:
    """Replay EVENTS_FILE (JSON lines or a JSON array of canonical events) against the
    conf with a virtual clock and print every notification that would be sent: when (in
    the conf's time zone, after sending windows), channel, to whom, template, and why.
    Messages a suppression list (--suppressions, --live-suppressions) rules out are
    listed as SKIPPED with the entry's reason."""
    import tempfile  # noqa: PLC0415

    from . import simulate as sim  # noqa: PLC0415
    from .event import EventInvalid  # noqa: PLC0415
    from .redis_client import connect  # noqa: PLC0415
    from .redis_server import RedisServer, free_port  # noqa: PLC0415

    conf_obj, _registry, plan = load(conf_path)
    try:
        events = sim.read_events(events_file.read_bytes())
    except (EventInvalid, ValueError, msgspec.DecodeError) as exc:
        raise CliError(f"{events_file}: {exc}") from None
    listed = []
    if suppressions_file is not None:
        try:
            listed = sim.read_suppressions(suppressions_file.read_bytes(), str(suppressions_file))
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if live_suppressions:
        from .suppression import list_entries  # noqa: PLC0415

        listed += with_redis(conf_obj, list_entries)

    async def run(url: str) -> list[Any]:
        redis = connect(url)
        try:
            return await sim.simulate(plan, redis, events, horizon=until, suppressions=listed)
        finally:
            await redis.aclose()

    with tempfile.TemporaryDirectory(prefix="tocsin-simulate-") as scratch:
        server = None
        try:
            if redis_url is None:
                server = RedisServer(Path(scratch), port=free_port(), appendfsync="no")
                redis_url = server.start()
            notifications = asyncio.run(run(redis_url))
        except (OSError, RedisError, TocsinError) as exc:
            raise CliError(f"scratch Redis {redis_url or '(temporary)'}: {exc}") from None
        finally:
            if server is not None:
                server.stop()
    for line in sim.format_notifications(plan, notifications):
        click.echo(line)
    skipped = sum(1 for n in notifications if n.skipped)
    click.echo(
        f"{len(notifications)} notification(s) from {len(events)} event(s)"
        + (f", {skipped} skipped (suppressed)" if skipped else "")
    )


COMMANDS = (scenarios, simulate)
