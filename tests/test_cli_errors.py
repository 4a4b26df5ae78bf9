"""The ``tocsin`` command as a newcomer meets it in the first hour: every mistake is a
message saying what to do (never a traceback), and the commands share their habits."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import click
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.redis_server import free_port
from gateway.signing import Signer, generate_secret
from gateway.windows import DAYS

from .conftest import HOOK_SECRET, INTAKE_SECRET, Receiver, make_event, write_conf
from .procs import TOCSIN_SCRIPT, run_tocsin, running, tocsin_env, wait_http

EXAMPLES = Path(__file__).resolve().parent.parent / "conf" / "examples"


def command_paths(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    for name, command in group.commands.items():
        yield " ".join((*prefix, name))
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


#: Each command with a typical mistake: (arguments, exit code, what the message says).
#: CONF is a valid conf, PORT a port in use.
BAD_ARGUMENTS: dict[str, tuple[list[str], int, str]] = {
    "serve": (["serve", "--conf", "CONF", "--port", "PORT"], 2, "Address already in use"),
    "check": (["check", "--conf", "nope.toml"], 2, "nope.toml: file not found"),
    "render": (
        ["render", "t", "--conf", "nope.toml", "--event", "e.json"],
        2,
        "nope.toml: file not found",
    ),
    "plugins": (["plugins", "--conf", "nope.toml"], 2, "nope.toml: no such conf"),
    "emit": (["emit", "nope.json"], 2, "'nope.json' does not exist"),
    "receive": (["receive", "--port", "PORT"], 2, "Address already in use"),
    "secret": (["secret", "extra"], 2, "unexpected extra argument"),
    "deliveries": (["deliveries", "--conf", "CONF", "--limit", "0"], 2, "not in the range x>=1"),
    "deliveries show": (["deliveries", "show", "msg_nope", "--conf", "CONF"], 1, "no delivery"),
    "dlq": (["dlq", "bogus"], 2, "No such command 'bogus'"),
    "dlq list": (["dlq", "list", "--conf", "CONF", "--since", "soon"], 2, "'soon': use a duration"),
    "dlq replay": (["dlq", "replay", "--conf", "CONF"], 2, "name dead letters"),
    "events": (["events", "bogus"], 2, "No such command 'bogus'"),
    "events replay": (["events", "replay", "evt_nope", "--conf", "CONF"], 1, "no routed event"),
    "events list": (["events", "list", "--limit", "0", "--conf", "CONF"], 2, "--limit"),
    "events show": (["events", "show", "evt_nope", "--conf", "CONF"], 1, "no event evt_nope"),
    "events catalog": (["events", "catalog", "--bogus"], 2, "No such option '--bogus'"),
    "endpoints": (["endpoints", "--conf", "nope.toml"], 2, "nope.toml: file not found"),
    "endpoints enable": (
        ["endpoints", "enable", "nope", "--conf", "CONF"],
        2,
        "no channel 'nope' in",
    ),
    "reload": (["reload", "--conf", "nope.toml"], 2, "nope.toml: file not found"),
    "forget": (["forget", "--conf", "CONF"], 2, "Missing option '--customer'"),
    "retention": (["retention", "--conf", "nope.toml"], 2, "nope.toml: file not found"),
    "status": (["status", "--interval", "0", "--conf", "CONF"], 2, "not in the range x>=0.5"),
    "scenarios": (["scenarios", "bogus"], 2, "No such command 'bogus'"),
    "scenarios list": (
        ["scenarios", "list", "--conf", "CONF", "--limit", "-1"],
        2,
        "not in the range x>=1",
    ),
    "scenarios show": (["scenarios", "show", "k", "--conf", "CONF"], 1, "no scenario instance"),
    "scenarios cancel": (
        ["scenarios", "cancel", "k", "--scenario", "nope", "--conf", "CONF"],
        2,
        "no scenario 'nope' in",
    ),
    "deliveries retry": (["deliveries", "retry", "msg_nope", "--conf", "CONF"], 1, "no delivery"),
    "endpoints disable": (
        ["endpoints", "disable", "nope", "--conf", "CONF"],
        2,
        "no channel 'nope' in",
    ),
    "replays": (["replays", "bogus"], 2, "No such command 'bogus'"),
    "replays start": (["replays", "start", "--conf", "CONF"], 2, "at least one filter"),
    "replays list": (["replays", "list", "--conf", "nope.toml"], 2, "nope.toml: file not found"),
    "replays show": (["replays", "show", "job_x", "--conf", "CONF"], 1, "no replay job job_x"),
    "replays cancel": (["replays", "cancel", "job_x", "--conf", "CONF"], 1, "no replay job job_x"),
    "simulate": (
        ["simulate", str(EXAMPLES / "payment_succeeded.json"), "--until", "soon"],
        2,
        "'soon' is not a duration",
    ),
    "suppress": (["suppress", "bogus"], 2, "No such command 'bogus'"),
    "suppress add": (
        ["suppress", "add", "0612345678", "--conf", "CONF"],
        2,
        "international format",
    ),
    "suppress remove": (
        ["suppress", "remove", "+33612345678", "--conf", "CONF"],
        1,
        "is not on the suppression list",
    ),
    "suppress list": (
        ["suppress", "list", "--reason", "bored", "--conf", "CONF"],
        2,
        "'bored' is not one of",
    ),
    "suppress check": (["suppress", "check", "bob@", "--conf", "CONF"], 2, "not an email address"),
}


def test_every_command_has_a_bad_argument_case():
    assert set(command_paths()) == set(BAD_ARGUMENTS)


@pytest.mark.parametrize("command", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_is_a_message_and_exit_code_never_a_traceback(
    command, tmp_path, redis_url, taken_port
):
    args, code, message = BAD_ARGUMENTS[command]
    conf = write_conf(tmp_path, redis_url=redis_url)
    values = {"CONF": str(conf), "PORT": str(taken_port)}
    result = run_tocsin(*(values.get(a, a) for a in args), env=tocsin_env(), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    assert message in result.stderr, output


async def test_serve_on_a_port_in_use_says_so_before_starting_anything(tmp_path, taken_port):
    conf = write_conf(tmp_path, redis_url="")  # the embedded Redis would start first
    started = time.monotonic()
    result = await asyncio.to_thread(
        run_tocsin, "serve", "--conf", str(conf), "--port", str(taken_port),
        env=tocsin_env(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{taken_port}: Address already in use; "
        "stop what uses it, or pass --port N"
    ]
    assert not (tmp_path / "var" / "redis").exists(), "the embedded Redis was started"
    assert time.monotonic() - started < 10


async def test_receive_on_a_port_in_use_does_not_claim_to_listen(tmp_path, taken_port):
    result = await asyncio.to_thread(
        run_tocsin, "receive", "--port", str(taken_port), env=tocsin_env(), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "listening" not in result.stdout
    assert "Address already in use" in result.stderr


def test_every_option_says_what_it_does():
    missing = []
    for path in command_paths():
        command: click.Command = main
        for name in path.split():
            assert isinstance(command, click.Group)
            command = command.commands[name]
        missing += [
            f"{path} {p.opts[0]}"
            for p in command.params
            if isinstance(p, click.Option) and not p.help
        ]
    assert missing == []


def test_check_and_render_take_conf_as_an_option_too(tmp_path, redis_url):
    conf = write_conf(tmp_path, redis_url=redis_url)
    runner = CliRunner()
    positional = runner.invoke(main, ["check", str(conf)])
    option = runner.invoke(main, ["check", "--conf", str(conf)])
    assert positional.exit_code == option.exit_code == 0, option.output
    assert positional.output == option.output
    both = runner.invoke(main, ["check", str(conf), "--conf", str(tmp_path / "other.toml")])
    assert both.exit_code == 2 and "two confs given" in both.output
    event = tmp_path / "event.json"
    event.write_text(json.dumps(make_event()))
    rendered = runner.invoke(main, ["render", "nope", "--conf", str(conf), "--event", str(event)])
    assert "no template 'nope'" in rendered.output  # the conf was read: it has no such template


def test_shell_completion_script_is_generated(tmp_path):
    env = {**tocsin_env(), "_TOCSIN_COMPLETE": "bash_source"}
    result = run_tocsin(env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert "_tocsin_completion" in result.stdout and "complete -o nosort" in result.stdout


# -- emit ----------------------------------------------------------------------------------


def _emit(url: str, stdin: bytes | int, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [TOCSIN_SCRIPT, "emit", "--url", url, "--secret", INTAKE_SECRET],
        input=stdin if isinstance(stdin, bytes) else None,
        stdin=stdin if isinstance(stdin, int) else None,
        capture_output=True,
        env=tocsin_env(),
        cwd=cwd,
        timeout=30,
        check=False,
    )


async def test_emit_prints_a_summary_of_what_the_gateway_answered(
    tmp_path, redis_url, start_gateway
):
    gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url))
    event = make_event()
    invalid = make_event(data={"amount": "twelve", "currency": "EUR"})
    lines = b"\n".join(json.dumps(e).encode() for e in (event, event, invalid))
    result = await asyncio.to_thread(_emit, f"{gw.url}/v1/events", lines, tmp_path)
    assert result.returncode == 1, result.stderr
    answers = result.stdout.decode().splitlines()
    assert [a.split(":")[0] for a in answers] == [event["id"], event["id"], invalid["id"]]
    assert result.stderr.decode().splitlines() == [
        "sent 3 of 3: 1 accepted, 1 duplicate(s), 1 refused"
    ]
    assert "reading events from stdin" not in result.stderr.decode()  # not a terminal


async def test_emit_reading_a_terminal_says_so(tmp_path, redis_url, start_gateway):
    gw = await start_gateway(write_conf(tmp_path, redis_url=redis_url))
    primary, secondary = os.openpty()
    try:
        # What a user types: one event, then Ctrl-D.
        os.write(primary, json.dumps(make_event()).encode() + b"\n\x04")
        result = await asyncio.to_thread(_emit, f"{gw.url}/v1/events", secondary, tmp_path)
    finally:
        os.close(primary)
        os.close(secondary)
    stderr = result.stderr.decode().splitlines()
    assert result.returncode == 0, stderr
    assert stderr[0].startswith("reading events from stdin")
    assert stderr[-1] == "sent 1 of 1: 1 accepted, 0 duplicate(s), 0 refused"


async def test_emit_to_no_gateway_says_it_could_not_reach_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1/events"
    result = await asyncio.to_thread(_emit, url, json.dumps(make_event()).encode(), tmp_path)
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert result.stderr.decode().splitlines()[-1] == (
        f"sent 0 of 1: 0 accepted, 0 duplicate(s), 0 refused, 1 could not reach {url} "
        "(is `tocsin serve` running?)"
    )


# -- receive -------------------------------------------------------------------------------


async def test_receive_answers_errors_like_the_gateway_and_names_untyped_webhooks(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    async with running(
        ["receive", "--port", str(port), "--secret", HOOK_SECRET], tmp_path, "rx"
    ) as rx:
        await wait_http(url, rx)
        body = json.dumps({"hello": "world"}).encode()
        async with aiohttp.ClientSession() as session:
            forged = Signer([generate_secret()]).headers("msg_forged", body)
            async with session.post(url, data=body, headers=forged) as resp:
                assert resp.status == 401
                answer = await resp.json()
                assert answer["error"] == "bad_signature" and answer["message"]
            async with session.get(url) as resp:
                assert resp.status == 405
                assert (await resp.json())["error"] == "method_not_allowed"
            async with session.post(url.replace("/webhook", "/elsewhere"), data=body) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"] == "not_found"
            signed = Signer([HOOK_SECRET]).headers("msg_untyped", body)
            async with session.post(url, data=body, headers=signed) as resp:
                assert resp.status == 204
        out = await rx.wait_output("msg_untyped")
    [line] = [x for x in out.splitlines() if "msg_untyped" in x]
    assert line.endswith(' verified msg_untyped (no "type" field)')


# -- endpoints -----------------------------------------------------------------------------


def _closed_now() -> str:
    """A window closed all of today (Europe/Paris, the window's default zone)."""
    today = datetime.now(ZoneInfo("Europe/Paris")).weekday()
    days = [d for i, d in enumerate(DAYS) if i != today]
    return f"""
    [windows.not-today]
    days = {json.dumps(days)}
    start = "00:00"
    end = "24:00"
    holidays = ""
    """


async def test_endpoints_counts_retrying_and_deferred_jobs(
    tmp_path, redis_url, receiver: Receiver, start_gateway, redis_client
):
    # ``hook`` points at a closed port: its job waits an hour for its retry. ``later``
    # works, but its window is closed today: its job waits for the window.
    extra = (
        _closed_now()
        + f"""
    [channels.hook.delivery]
    retry_schedule = ["1h", "1h"]
    [channels.later]
    type = "json_hook"
    url = "{receiver.url}"
    secret = "{HOOK_SECRET}"
    [channels.later.delivery]
    window = "not-today"
    """
    )
    rules = """
    [rules.both]
    events = ["payment.*"]
    [[rules.both.actions]]
    channel = "hook"
    [[rules.both.actions]]
    channel = "later"
    """
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=f"http://127.0.0.1:{free_port()}/", rules=rules,
        extra=extra,
    )  # fmt: skip
    gw = await start_gateway(conf)
    assert (await gw.post(make_event()))[0] == 202
    deadline = time.monotonic() + 10
    while redis_client.zcard("tocsin:retries") < 2:
        assert time.monotonic() < deadline, "both jobs should be parked"
        await asyncio.sleep(0.05)
    result = await asyncio.to_thread(CliRunner().invoke, main, ["endpoints", "--conf", str(conf)])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["CHANNEL", "QUEUED", "IN", "FLIGHT", "RETRYING", "DEFERRED", "HEALTH"]
    table = {row.split()[0]: row.split()[1:] for row in rows}
    assert table["hook"][:4] == ["0", "0", "1", "0"]
    assert table["hook"][4:6] == ["failing", "since"] and table["hook"][-1] == "UTC"
    assert table["later"] == ["0", "0", "0", "1", "ok"]
    as_json = await asyncio.to_thread(
        CliRunner().invoke, main, ["endpoints", "--conf", str(conf), "--json"]
    )
    states = {s["channel"]: s for s in map(json.loads, as_json.output.splitlines())}
    assert (states["later"]["retrying"], states["later"]["deferred"]) == (0, 1)
