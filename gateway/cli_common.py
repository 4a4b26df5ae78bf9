"""What every ``tocsin`` command shares: loading the conf, reaching Redis, failing with a
message (never a traceback), telling times.

Exit codes, the same for every command: 2 when the command cannot do what it was asked
(a bad argument, a missing file, a conf with problems, a port in use, Redis unreachable),
1 when it ran and what it reports is a failure (a template that does not render, an event
the gateway refused, nothing found for the id or key given).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .archive import ArchiveStore, archive_errors
from .conf import Conf, default_conf_path, read_conf
from .conf_lines import with_lines
from .confirm import PREFIX as CONFIRM_PREFIX
from .durations import Duration
from .errors import PluginError, TocsinError
from .keys import Layout
from .plan import Plan, check_plan
from .plugins import Registry, load_registry

T = TypeVar("T")


class CliError(click.ClickException):
    """One line naming the problem and what to do; exit 2."""

    exit_code = 2


def fail(lines: list[str], code: int = 2) -> NoReturn:
    for line in lines:
        click.echo(line, err=True)
    sys.exit(code)


def load(
    conf_path: Path | None, also: Callable[[Plan], list[str]] | None = None
) -> tuple[Conf, Registry, Plan]:
    """Conf, plugins and plan, or every problem printed and exit 2.

    ``also`` checks more on the plan as far as it was built (``tocsin check`` renders
    sample events); its problems are listed with the others.
    """
    path = conf_path or default_conf_path()
    conf, problems = read_conf(path)
    if conf is None:
        fail([*problems, f"{len(problems)} problem(s) in {path}"])
    try:
        registry = load_registry(blocked=conf.plugins.block, modules=conf.plugins.modules)
    except PluginError as exc:
        fail([*problems, f"plugins: {exc}"])
    plan, plan_problems = check_plan(conf, registry)
    problems = with_lines([*problems, *plan_problems])
    if also is not None:
        problems = [*problems, *also(plan)]
    if problems:
        fail([*problems, f"{len(problems)} problem(s) in {path}"])
    return conf, registry, plan


def conf_only(conf_path: Path | None) -> Conf:
    """The conf alone (the admin commands need no plugins), or its problems and exit 2."""
    path = conf_path or default_conf_path()
    conf, problems = read_conf(path)
    if conf is None or problems:
        problems = with_lines(problems)
        fail([*problems, f"{len(problems)} problem(s) in {path}"])
    return conf


def known_channel(conf: Conf, channel: str | None) -> None:
    """A ``--channel`` that names no channel of the conf is a typo, not an empty result."""
    if channel is None or channel in conf.channels:
        return
    # A source's confirmation runs on an internal channel (gateway.confirm), no conf table.
    if channel.startswith(CONFIRM_PREFIX) and channel[len(CONFIRM_PREFIX) :] in conf.sources:
        return
    names = ", ".join(sorted(conf.channels)) or "none"
    raise CliError(f"no channel {channel!r} in {conf.path} (channels: {names})")


def with_redis(conf: Conf, action: Callable[[Redis, Layout], Awaitable[T]]) -> T:
    from . import admin  # noqa: PLC0415 - only the commands that read Redis need it

    async def run() -> T:
        async with admin.open_redis(conf) as redis:
            return await action(redis, conf.redis.layout())

    try:
        return asyncio.run(run())
    except (RedisError, OSError, TocsinError) as exc:
        where = conf.redis.url or f"the embedded Redis in {conf.data_dir / 'redis'}"
        raise CliError(f"Redis ({where}): {exc}; is it running?") from None


def with_tiers(
    conf: Conf, action: Callable[[Redis, Layout, ArchiveStore | None], Awaitable[T]]
) -> T:
    """``with_redis``, and the history archive beside it: what reads history sees both
    tiers (docs/delivery.md, "Two tiers")."""
    from . import admin  # noqa: PLC0415

    async def run(redis: Redis, keys: Layout) -> T:
        async with admin.open_archive(conf) as archive:
            return await action(redis, keys, archive)

    try:
        return with_redis(conf, run)
    except archive_errors() as exc:
        where = f"in {conf.data_dir / 'archive'}"
        if conf.history.archive == "postgresql":  # not the URL: it holds the password
            where = f"on PostgreSQL (schema {conf.history.archive_schema})"
        raise CliError(f"history archive {where}: {exc}") from None


# -- arguments ---------------------------------------------------------------------------


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
        raise click.BadParameter(
            f"{text!r}: use a duration ago (2h, 3d) or an ISO date (2026-11-25T10:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def when_param(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """Click callback: ``--since 2h`` checked while parsing, before Redis is touched."""
    return parse_when(value)


def duration_param(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        return float(Duration.parse(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind ``host:port`` now, so a port in use is one line before anything starts.

    Same options as aiohttp's TCPSite (SO_REUSEADDR, which still refuses a port another
    process listens on).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        hint = "stop what uses it, or pass --port N" if port else "pass --host"
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}") from None
    sock.setblocking(False)
    return sock


# -- output ------------------------------------------------------------------------------


def stamp(epoch: float | None, zone: tzinfo = UTC) -> str:
    """Every time a command prints: ``2026-12-05 18:30:00 UTC``, ``... 10:00:00 CET``."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def echo_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


def table(header: Iterable[str], rows: Iterable[Iterable[str]], right: Iterable[int] = ()) -> None:
    """Columns as wide as their widest cell (the last one left ragged)."""
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    flush_right = set(right)
    for line in lines:
        cells = [
            cell.rjust(w) if i in flush_right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        cells[-1] = line[-1]
        click.echo("  ".join(cells).rstrip())


def setup_logging(level: str, fmt: str = "human", traffic: bool = True) -> None:
    """stderr, ``human`` or ``json`` lines, personal data masked (gateway/logs)."""
    from .logs import setup  # noqa: PLC0415 - only the commands that log need it

    setup(level, fmt, traffic)
