"""The ``tocsin`` command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import msgspec

from .cli_options import conf_option
from .conf import Conf, default_conf_path, load_conf, read_conf
from .conf_lines import with_lines
from .errors import ConfError, PluginError, TocsinError
from .plan import Plan, check_plan
from .plugins import Registry, load_registry
from .redis_server import RedisServer
from .signing import Signer, Verifier, generate_secret

log = logging.getLogger("tocsin")


def _fail(lines: list[str], code: int = 2) -> NoReturn:
    for line in lines:
        click.echo(line, err=True)
    sys.exit(code)


def _load(
    conf_path: Path | None, also: Callable[[Plan], list[str]] | None = None
) -> tuple[Conf, Registry, Plan]:
    """Conf, plugins and plan, or every problem printed and exit 2.

    ``also`` checks more on the plan as far as it was built (``tocsin check`` renders
    sample events); its problems are listed with the others.
    """
    path = conf_path or default_conf_path()
    conf, problems = read_conf(path)
    if conf is None:
        _fail([*problems, f"{len(problems)} problem(s) in {path}"])
    try:
        registry = load_registry(blocked=conf.plugins.block, modules=conf.plugins.modules)
    except PluginError as exc:
        _fail([*problems, f"plugins: {exc}"])
    plan, plan_problems = check_plan(conf, registry)
    problems = with_lines([*problems, *plan_problems])
    if also is not None:
        problems = [*problems, *also(plan)]
    if problems:
        _fail([*problems, f"{len(problems)} problem(s) in {path}"])
    return conf, registry, plan


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tocsin")
def main() -> None:
    """Tocsin: payment events in; customer notifications, staff alerts and signed webhooks out."""


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
@click.option("--port", type=int, default=None, help="Override intake.port (0: any free port).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def serve(
    conf_path: Path | None,
    roles: tuple[str, ...],
    host: str | None,
    port: int | None,
    log_level: str,
) -> None:
    """Run the gateway: HTTP intake, router and channel workers."""
    from .service import ROLES, Gateway  # noqa: PLC0415 - keeps `tocsin check` light

    _setup_logging(log_level)
    conf, _registry, plan = _load(conf_path)
    embedded: RedisServer | None = None
    url = conf.redis.url
    if not url:
        embedded = RedisServer(conf.data_dir / "redis")
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
        log.info("embedded Redis ready at %s", url)
    gateway = Gateway(plan, url, roles or ROLES, host=host, port=port)
    try:
        _run(gateway.run)
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded Redis stopped; data kept in %s", embedded.data_dir)


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
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.run(runner())
    except ImportError:
        asyncio.run(runner())


@main.command()
@click.argument("conf_arg", required=False, type=click.Path(path_type=Path))
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
    from .render import SampleReport, render_samples  # noqa: PLC0415

    reports: list[SampleReport] = []

    def render(plan: Plan) -> list[str]:
        # A folder named (on the command line, or in conf other than the default) must
        # exist: a typo would otherwise pass as "no sample events", with exit 0.
        named = samples
        if named is None and plan.conf.gateway.samples != "examples":
            named = plan.conf.samples_dir
        if named is not None and not named.is_dir():
            reports.append(SampleReport(folder=named))
            if samples is not None:
                return [f"--samples: no folder {samples}"]
            return with_lines([f"{plan.conf.path}: gateway.samples: no folder {named}"])
        reports.append(render_samples(plan, samples))
        return reports[-1].problems

    conf, registry, plan = _load(conf_arg, also=render)
    templates = sum(1 for _ in plan.templates.all_files())
    click.echo(
        f"{conf.path}: ok ({len(plan.channels)} channels, {len(plan.rules)} rules, "
        f"{len(plan.sources)} sources, {templates} templates, {len(registry.plugins)} plugins)"
    )
    for line in reports[0].summary():
        click.echo(line)


@main.command()
@click.argument("template")
@click.argument("conf_arg", required=False, type=click.Path(path_type=Path))
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


def _secret_from(conf_path: Path | None, secret: str | None) -> str:
    if secret:
        return secret
    path = conf_path or default_conf_path()
    try:
        conf = load_conf(path)
    except ConfError as exc:
        _fail([*exc.problems, "pass --secret, or fix the conf"])
    if not conf.intake.secrets:
        _fail([f"{path}: intake.secrets is empty; pass --secret"])
    return conf.intake.secrets[0].reveal()


def _events_from(source: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    text = text.strip()
    try:
        if text.startswith("["):
            items = msgspec.json.decode(text)
        elif "\n{" in text:
            items = [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]
        else:
            items = [msgspec.json.decode(text)]
    except msgspec.DecodeError as exc:
        _fail([f"{source}: not JSON: {exc}"])
    return items  # type: ignore[no-any-return]


@main.command()
@click.argument("source", default="-")
@conf_option
@click.option("--url", default=None, help="Intake URL (default: from the conf's intake.host/port).")
@click.option("--secret", default=None, envvar="TOCSIN_INTAKE_SECRET", help="Signing secret.")
@click.option(
    "--new-id", is_flag=True, help="Give each event a fresh id (post the same file twice)."
)
def emit(
    source: str, conf_path: Path | None, url: str | None, secret: str | None, new_id: bool
) -> None:
    """Sign and post events (a JSON file, JSON lines, or - for stdin) to a running gateway.

    A missing ``id`` or ``occurred_at`` is filled in.
    """
    import aiohttp  # noqa: PLC0415

    key = _secret_from(conf_path, secret)
    if url is None:
        path = conf_path or default_conf_path()
        conf = load_conf(path)
        url = f"http://{conf.intake.host}:{conf.intake.port}/v1/events"
    signer = Signer([key])
    events = _events_from(source)

    async def post_all() -> int:
        failures = 0
        async with aiohttp.ClientSession() as session:
            for event in events:
                if new_id or "id" not in event:
                    event["id"] = f"evt_{uuid.uuid4().hex}"
                event.setdefault("occurred_at", datetime.now(UTC).isoformat())
                body = msgspec.json.encode(event)
                headers = {"Content-Type": "application/json", **signer.headers(event["id"], body)}
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        text = await resp.text()
                except aiohttp.ClientError as exc:
                    click.echo(f"{event['id']}: cannot reach {url}: {exc}", err=True)
                    failures += 1
                    continue
                click.echo(f"{event['id']}: HTTP {resp.status} {text}")
                failures += resp.status >= 300
        return failures

    sys.exit(1 if asyncio.run(post_all()) else 0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8099, show_default=True, type=int)
@click.option("--path", "url_path", default="/webhook", show_default=True)
@click.option(
    "--secret",
    default=None,
    envvar="TOCSIN_RECEIVE_SECRET",
    help="Verify signatures with this secret (default: print unverified).",
)
def receive(host: str, port: int, url_path: str, secret: str | None) -> None:
    """Run a local webhook receiver that verifies and prints what arrives."""
    from aiohttp import web  # noqa: PLC0415

    from .receiver import receiver_app  # noqa: PLC0415

    verifier = Verifier([secret]) if secret else None
    click.echo(
        f"listening on http://{host}:{port}{url_path} "
        f"({'verifying signatures' if verifier else 'NOT verifying: pass --secret'})"
    )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(receiver_app(verifier, url_path), host=host, port=port, print=None)


@main.command()
def secret() -> None:
    """Print a new random signing secret (whsec_...)."""
    click.echo(generate_secret())


def _add_admin_commands() -> None:
    from .cli_admin import COMMANDS  # noqa: PLC0415 - after `main` exists

    for command in COMMANDS:
        main.add_command(command)


_add_admin_commands()


if __name__ == "__main__":
    main()
