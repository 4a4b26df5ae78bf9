"""``tocsin reload``: ask every gateway process sharing the conf's Redis to reload."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec
from redis.asyncio import Redis

from ..cli_common import fail, with_redis
from ..cli_options import conf_option, json_option
from ..conf import default_conf_path, read_conf
from ..keys import Layout
from .bus import ProcessConf, publish_reload, read_processes


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _print(entries: list[ProcessConf], generation: int | None, as_json: bool) -> int:
    """Each process's line; how many did not apply the reload (or did not answer)."""
    bad = 0
    for e in entries:
        answered = generation is None or e.generation >= generation
        failed = not answered or not e.last_reload_ok
        bad += failed if generation is not None else 0
        if as_json:
            click.echo(msgspec.json.encode({**msgspec.to_builtins(e), "answered": answered}))
            continue
        state = "no answer" if not answered else ("ok" if e.last_reload_ok else "REFUSED")
        click.echo(
            f"{e.host} pid {e.pid} ({e.consumer}): conf {e.conf_hash} since "
            f"{_when(e.loaded_at)}; last reload: {state}"
        )
        for problem in e.problems if answered else []:
            click.echo(f"  {problem}")
        for setting in e.needs_restart:
            click.echo(f"  needs a restart: {setting}")
    return bad


@click.command("reload")
@conf_option
@click.option(
    "--wait",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds to wait for every process to report.",
)
@click.option("--status", is_flag=True, help="Only list the conf each process runs.")
@json_option
def reload_command(conf_path: Path | None, wait: float, status: bool, as_json: bool) -> None:
    """Reload the conf in every gateway process sharing this conf's Redis.

    Each process checks the conf on its own (as `tocsin check` does) and swaps it in
    only if it passes; a conf with problems leaves the old one running. Exit 1 if a
    process refused it or did not answer within --wait. Locally, SIGHUP to `tocsin
    serve` does the same for its own processes.
    """
    path = conf_path or default_conf_path()
    conf, problems = read_conf(path)
    if conf is None:
        fail([*problems, f"{len(problems)} problem(s) in {path}"])
    prefix = conf.redis.prefix

    async def action(redis: Redis, _layout: Layout) -> tuple[int | None, list[ProcessConf]]:
        if status:
            return None, await read_processes(redis, prefix)
        live = await read_processes(redis, prefix)
        generation, _heard = await publish_reload(redis, prefix)
        deadline = time.monotonic() + wait
        while True:
            entries = await read_processes(redis, prefix)
            waiting = {e.consumer for e in live} | {e.consumer for e in entries}
            answered = {e.consumer for e in entries if e.generation >= generation}
            if waiting <= answered or time.monotonic() > deadline:
                return generation, entries
            await asyncio.sleep(0.1)

    generation, entries = with_redis(conf, action)
    if not entries:
        fail([f"no gateway process reports to the Redis of {conf.path}: is one running?"])
    if _print(entries, generation, as_json):
        sys.exit(1)
