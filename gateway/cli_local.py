"""``tocsin emit | receive``: try a gateway from a terminal (post events, watch webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec

from .cli_common import CliError, conf_only, listen_socket
from .cli_options import conf_option
from .conf import default_conf_path
from .signing import Signer, Verifier


def _secret_from(conf_path: Path | None, secret: str | None) -> str:
    if secret:
        return secret
    path = conf_path or default_conf_path()
    if not path.exists():
        raise CliError(f"{path}: no such conf; pass --secret (or $TOCSIN_INTAKE_SECRET) or --conf")
    conf = conf_only(path)
    if not conf.intake.secrets:
        raise CliError(f"{path}: intake.secrets is empty; pass --secret")
    return conf.intake.secrets[0].reveal()


def _events_from(source: str) -> list[dict[str, Any]]:
    if source == "-":
        if sys.stdin.isatty():
            click.echo(
                "reading events from stdin (JSON, a JSON array or JSON lines); "
                "end with Ctrl-D, or pass a file",
                err=True,
            )
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"{source}: cannot read: {exc}") from None
    text = text.strip()
    name = "stdin" if source == "-" else source
    try:
        if text.startswith("["):
            items = msgspec.json.decode(text)
        elif "\n{" in text:
            items = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        items.append(msgspec.json.decode(line))
                    except msgspec.DecodeError as exc:
                        raise CliError(f"{name}: line {n}: not JSON: {exc}") from None
        else:
            items = [msgspec.json.decode(text)] if text else []
    except msgspec.DecodeError as exc:
        raise CliError(f"{name}: not JSON: {exc}") from None
    if not items:
        raise CliError(f"{name}: no events in it")
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise CliError(f"{name}: event {n} is not a JSON object")
    return items  # type: ignore[no-any-return]


@click.command()
@click.argument(
    "source", default="-", type=click.Path(exists=True, dir_okay=False, allow_dash=True)
)
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

    A missing ``id`` or ``occurred_at`` is filled in. One line per event on stdout (its
    id and the gateway's answer), a summary on stderr; exit 1 if any was not accepted.
    """
    import aiohttp  # noqa: PLC0415

    key = _secret_from(conf_path, secret)
    if url is None:
        conf = conf_only(conf_path or default_conf_path())
        url = f"http://{conf.intake.host}:{conf.intake.port}/v1/events"
    try:
        signer = Signer([key])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--secret") from None
    events = _events_from(source)
    tally: Counter[str] = Counter()

    async def post_all() -> None:
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
                except (aiohttp.ClientError, ValueError) as exc:
                    click.echo(f"{event['id']}: cannot reach {url}: {exc}", err=True)
                    tally["unreachable"] += 1
                    continue
                click.echo(f"{event['id']}: HTTP {resp.status} {text}")
                if resp.status == 202:
                    tally["accepted"] += 1
                elif resp.status == 200:
                    tally["duplicate"] += 1
                else:
                    tally["refused"] += 1

    asyncio.run(post_all())
    sent = len(events) - tally["unreachable"]
    summary = (
        f"sent {sent} of {len(events)}: {tally['accepted']} accepted, "
        f"{tally['duplicate']} duplicate(s), {tally['refused']} refused"
    )
    if tally["unreachable"]:
        summary += f", {tally['unreachable']} could not reach {url} (is `tocsin serve` running?)"
    click.echo(summary, err=True)
    sys.exit(1 if tally["refused"] or tally["unreachable"] else 0)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8099,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (the conf's webhook channel URL points at it).",
)
@click.option(
    "--path",
    "url_path",
    default="/webhook",
    show_default=True,
    help="URL path webhooks are posted to; any other path answers 404.",
)
@click.option(
    "--secret",
    default=None,
    envvar="TOCSIN_RECEIVE_SECRET",
    help="Verify signatures with this secret, the channel's (default: print unverified).",
)
def receive(host: str, port: int, url_path: str, secret: str | None) -> None:
    """Run a local webhook receiver that verifies and prints what arrives."""
    from aiohttp import web  # noqa: PLC0415

    from .receiver import receiver_app  # noqa: PLC0415

    if not url_path.startswith("/"):
        raise click.BadParameter(f"{url_path!r}: a path starts with /", param_hint="--path")
    try:
        verifier = Verifier([secret]) if secret else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--secret") from None
    sock = listen_socket(host, port)
    bound = sock.getsockname()[1]
    click.echo(
        f"listening on http://{host}:{bound}{url_path} "
        f"({'verifying signatures' if verifier else 'NOT verifying: pass --secret'})"
    )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(receiver_app(verifier, url_path), sock=sock, print=None)


COMMANDS = (emit, receive)
