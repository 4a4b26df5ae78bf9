"""The ``tocsin`` command."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from .adminapi.cli import COMMANDS as ADMINAPI_COMMANDS
from .cli_admin import COMMANDS as ADMIN_COMMANDS
from .cli_common import CliError, listen_socket, setup_logging
from .cli_common import fail as _fail
from .cli_common import load as _load
from .cli_local import COMMANDS as LOCAL_COMMANDS
from .cli_options import conf_argument, conf_option, log_format_option, log_traffic_option
from .cli_scenarios import COMMANDS as SCENARIO_COMMANDS
from .conf import CONF_ENV_VAR, Conf, default_conf_path, load_conf
from .errors import ConfError, PluginError, TocsinError
from .plugins import load_registry
from .privacy.cli import COMMANDS as PRIVACY_COMMANDS
from .redis_server import RedisServer
from .reload.command import reload_command
from .signing import generate_secret
from .supervisor import (
    SPREADS,
    ChildSpec,
    Supervisor,
    bind_to_parent,
    child_logging,
    inherited_socket,
    layout,
    reuseport_sockets,
    usable_cores,
)
from .suppression.cli import COMMANDS as SUPPRESSION_COMMANDS
from .watch.status import status as status_command

log = logging.getLogger("tocsin")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tocsin")
def main() -> None:
    """Tocsin: payment events in; customer notifications, staff alerts and signed webhooks out."""


def _processes(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise click.BadParameter(f"{value!r}: a number of processes (1 or more) or 'auto'")
    return count


@main.command()
@conf_option
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["intake", "router", "worker"]),
    help="Run only these parts (repeatable; default: all three).",
)
@click.option("--host", default=None, help="Override intake.host.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Override intake.port (0: any free port).",
)
@click.option(
    "--processes",
    metavar="N|auto",
    callback=_processes,
    default=None,
    help="Gateway processes, all on the one port (default: gateway.processes, 'auto': one "
    "per usable core). 1: a single process, no supervisor.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning"]),
    help="How much to log (to stderr).",
)
@log_format_option
@log_traffic_option
@click.option(
    "--spread",
    type=click.Choice(SPREADS),
    default="all",
    show_default=True,
    help="With several processes: all (each runs every role) or split (one runs the "
    "intake, the others route and deliver). Measured: docs/deployment.md.",
)
# What the supervisor tells its children: not for users.
@click.option(
    "--supervisor",
    "parent",
    type=int,
    default=None,
    hidden=True,
    help="Pid of the supervisor this gateway dies with.",
)
@click.option(
    "--listen-fd", type=int, default=None, hidden=True, help="Inherited listening socket."
)
@click.option("--redis-url", default=None, hidden=True, help="The supervisor's embedded Redis.")
def serve(
    conf_path: Path | None,
    roles: tuple[str, ...],
    host: str | None,
    port: int | None,
    processes: int | str | None,
    log_level: str,
    log_format: str | None,
    log_traffic: bool | None,
    spread: str,
    parent: int | None,
    listen_fd: int | None,
    redis_url: str | None,
) -> None:
    """Run the gateway: HTTP intake, router and channel workers.

    By default one gateway process per usable core, under one parent that owns the
    embedded Redis and the port, restarts a process that dies and, on SIGTERM or
    Ctrl-C, lets them all drain before stopping Redis (docs/deployment.md).
    """
    from .service import ROLES, Gateway  # noqa: PLC0415 - keeps `tocsin check` light

    setup_logging(log_level, log_format or "human", log_traffic is not False)
    # SIGHUP reloads the conf (gateway/reload): until the handler is in place, one must
    # not end the process as it would by default.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if parent is not None:
        bind_to_parent(parent)
        child_logging()
    conf, _registry, plan = _load(conf_path)
    log_format, log_traffic = _conf_logging(conf, log_level, log_format, log_traffic, parent)
    roles = roles or ROLES
    wanted = conf.gateway.processes if processes is None else processes
    count = 1 if parent is not None else (usable_cores() if wanted == "auto" else int(wanted))
    # The port first: one line if it is taken, before Redis and the workers start.
    sock = None
    if listen_fd is not None:
        sock = inherited_socket(listen_fd)
    elif "intake" in roles:
        sock = listen_socket(host or conf.intake.host, conf.intake.port if port is None else port)
    spread_roles = layout(count, roles, spread)
    sockets: list[socket.socket] = []
    if count > 1 and sock is not None:
        # One per child with the intake: a socket no child accepts on would still get
        # its share of the connections from the kernel, and leave them hanging.
        listeners = sum("intake" in child_roles for child_roles in spread_roles)
        sockets = _shared_port(sock, host or conf.intake.host, listeners)
    if parent is None:  # the top process: its gateway processes share the directory
        _metrics_directory(conf.data_dir / "metrics")
    embedded: RedisServer | None = None
    url = redis_url or conf.redis.url
    if not url:
        embedded = RedisServer(conf.data_dir / "redis", server=conf.redis.embedded_server)
        log.info(
            "no redis.url in %s: starting the embedded Redis (%s), AOF on, data in %s",
            conf.path,
            embedded.executable or "redis-server not found",
            embedded.data_dir,
        )
        try:
            url = embedded.start()
        except TocsinError as exc:
            _fail([f"embedded Redis: {exc}"])
        log.info(
            "embedded Redis ready at %s (Redis %s, pid %s)", url, embedded.version, embedded.pid
        )
    code = 0
    try:
        if count == 1:
            _run(Gateway(plan, url, roles, host=host, port=port, sock=sock).run)
        else:
            free = iter(sockets)
            specs = [
                ChildSpec(slot, child_roles, next(free) if "intake" in child_roles else None)
                for slot, child_roles in enumerate(spread_roles)
            ]
            child_argv = [
                *("--conf", str(conf.path), "--log-level", log_level),
                *("--log-format", log_format),
                "--log-traffic" if log_traffic else "--no-log-traffic",
                *(("--host", host) if host else ()),
                *(("--redis-url", url) if embedded is not None else ()),
            ]
            code = _supervise(specs, child_argv, float(conf.worker.shutdown_grace))
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded Redis stopped; data kept in %s", embedded.data_dir)
    if code:
        sys.exit(code)


def _metrics_directory(path: Path) -> None:
    """Empty the metrics directory and name it to the processes to come (multiprocess
    metrics: docs/operations.md)."""
    from .metrics import prepare_directory  # noqa: PLC0415

    try:
        prepare_directory(path)
    except OSError as exc:
        raise CliError(f"metrics directory {path}: {exc.strerror or exc}") from None


def _conf_logging(
    conf: Conf, level: str, fmt: str | None, traffic: bool | None, parent: int | None
) -> tuple[str, bool]:
    """Logging as the conf asks where the command line said nothing; what children get.
    (The conf is read after the first lines are logged: it can only change them now.)"""
    fmt = fmt or conf.gateway.log_format
    traffic = conf.gateway.log_traffic if traffic is None else traffic
    if (fmt, traffic) != ("human", True):
        setup_logging(level, fmt, traffic)
        if parent is not None:
            child_logging()
    return fmt, traffic


def _shared_port(probe: socket.socket, host: str, count: int) -> list[socket.socket]:
    """``count`` SO_REUSEPORT sockets on the port ``probe`` (bound alone) proved free."""
    port = probe.getsockname()[1]
    probe.close()
    try:
        return reuseport_sockets(host, port, count)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _supervise(specs: list[ChildSpec], child_argv: list[str], drain: float) -> int:
    """Run the children until SIGTERM/SIGINT; the supervisor's exit code."""

    def command(spec: ChildSpec) -> list[str]:
        argv = [sys.executable, "-m", "gateway.cli", "serve", *child_argv]
        argv += ["--processes", "1", "--supervisor", str(os.getpid())]
        for role in spec.roles:
            argv += ["--role", role]
        if spec.sock is not None:
            argv += ["--listen-fd", str(spec.sock.fileno())]
        return argv

    # The children's own shutdown grace, plus their start-up and Redis's goodbyes.
    supervisor = Supervisor(specs, command, grace=drain + 15.0)
    log.info("supervisor (pid %d): %d gateway processes", os.getpid(), len(specs))

    async def runner() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, supervisor.forward, signal.SIGHUP)
        return await supervisor.run(stopping)

    return asyncio.run(runner())


def _run(main_coro: Any) -> None:
    # What is loaded by now (modules, plugins, the plan) lives as long as the process:
    # take it out of the cyclic collector's scans, and collect the young generation less
    # often (each event allocates many short-lived containers). -15 % CPU per delivery
    # under load in `python -m bench`.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)

    async def runner() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await main_coro(stopping)

    try:
        try:
            import uvloop  # noqa: PLC0415 - optional speed-up
        except ImportError:
            asyncio.run(runner())
        else:
            uvloop.run(runner())
    except TocsinError as exc:  # found at start-up (the data's key layout...): no traceback
        raise CliError(str(exc)) from None


@main.command()
@conf_argument
@click.option(
    "--samples",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of sample events (*.json) to render templates with (default: examples/ "
    "next to the conf).",
)
def check(conf_arg: Path | None, samples: Path | None) -> None:
    """Validate a conf: structure, plugins, channels, templates, rules. Lists every error.

    Every template used by a rule is also rendered against the sample events the rule
    routes (see docs/templates.md).
    """
    from .reload import check_conf  # noqa: PLC0415 - what a reload checks too

    path = conf_arg or default_conf_path()
    checked = check_conf(path, samples)
    if not checked.ok:
        _fail([*checked.problems, f"{len(checked.problems)} problem(s) in {path}"])
    conf, registry, plan = checked.conf, checked.registry, checked.plan
    assert conf is not None and registry is not None and plan is not None
    assert checked.report is not None
    templates = sum(1 for _ in plan.templates.all_files())
    click.echo(
        f"{conf.path}: ok ({len(plan.channels)} channels, {len(plan.rules)} rules, "
        f"{len(plan.sources)} sources, {templates} templates, {len(registry.plugins)} plugins)"
    )
    for line in checked.report.summary():
        click.echo(line)


@main.command()
@click.argument("template")
@conf_argument
@click.option(
    "--event",
    "event_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A canonical event (JSON), e.g. conf/examples/payment_succeeded.json.",
)
@click.option("--locale", default=None, help="Render in this locale (default: the customer's).")
@click.option("--channel", default=None, help="Only this channel (default: every one that can).")
def render(
    template: str,
    conf_arg: Path | None,
    event_path: Path,
    locale: str | None,
    channel: str | None,
) -> None:
    """Print exactly what would be sent for TEMPLATE and an event, without sending it.

    The recipient is the event's customer; every channel with a preview that can use
    the template shows its parts (subject, text, HTML, SMS...). Exit 1 if any fails.
    """
    from .render import RenderError, render_template  # noqa: PLC0415

    _conf, _registry, plan = _load(conf_arg)
    try:
        result = render_template(plan, template, event_path, locale=locale, channel=channel)
    except RenderError as exc:
        _fail(exc.lines, 1)
    click.echo(result.text, nl=False)
    if result.problems:
        _fail(result.problems, 1)


@main.command()
@conf_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(conf_path: Path | None, as_json: bool) -> None:
    """List loaded plugins: name, version, where from, and what each registers."""
    blocked: list[str] = []
    modules: list[str] = []
    path = conf_path or default_conf_path()
    named = conf_path is not None or bool(os.environ.get(CONF_ENV_VAR))
    if named and not path.exists():
        _fail([f"{path}: no such conf (plugins lists without a conf: drop --conf)"])
    if path.exists():
        try:
            conf = load_conf(path)
            blocked, modules = conf.plugins.block, conf.plugins.modules
        except ConfError as exc:
            click.echo(f"(conf not applied: {exc.problems[0]})", err=True)
    try:
        registry = load_registry(blocked=blocked, modules=modules)
    except PluginError as exc:
        _fail([f"plugins: {exc}"])
    if as_json:
        click.echo(msgspec.json.encode(registry.plugins).decode())
        return
    for info in registry.plugins:
        click.echo(f"{info.name} {info.version}  ({info.origin})")
        for kind, names in sorted(info.registers.items()):
            click.echo(f"    {kind}: {', '.join(sorted(names))}")
    if blocked:
        click.echo(f"blocked by conf: {', '.join(blocked)}")


@main.command()
def secret() -> None:
    """Print a new random signing secret (whsec_...)."""
    click.echo(generate_secret())


for _command in (
    *LOCAL_COMMANDS,
    *ADMIN_COMMANDS,
    *SCENARIO_COMMANDS,
    *PRIVACY_COMMANDS,
    *ADMINAPI_COMMANDS,
    status_command,
    reload_command,
    *SUPPRESSION_COMMANDS,
    *ADMINAPI_COMMANDS,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
