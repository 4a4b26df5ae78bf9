"""Sending windows (quiet hours) and staff audiences."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.windows import DAYS, SendingWindow, WindowConf

from .conftest import Receiver, make_event, write_conf

PARIS = ZoneInfo("Europe/Paris")
courtesy = SendingWindow("courtesy", WindowConf())


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("moment", "opens"),
    [
        (paris(2026, 11, 28, 19, 59), None),  # Saturday evening: still open
        (paris(2026, 11, 28, 20, 0), paris(2026, 11, 30, 8, 0)),  # closes at 20:00 sharp
        (paris(2026, 11, 29, 12, 0), paris(2026, 11, 30, 8, 0)),  # Sunday
        (paris(2026, 11, 30, 7, 59), paris(2026, 11, 30, 8, 0)),  # too early
        (paris(2026, 11, 10, 21, 0), paris(2026, 11, 12, 8, 0)),  # 11 Nov: Armistice
        (paris(2026, 12, 31, 21, 0), paris(2027, 1, 2, 8, 0)),  # New Year's Day
        (paris(2026, 4, 4, 20, 30), paris(2026, 4, 7, 8, 0)),  # Sunday then Easter Monday
        (paris(2026, 7, 14, 10, 0), paris(2026, 7, 15, 8, 0)),  # Bastille Day
    ],
)
def test_courtesy_window_follows_french_rules(moment: datetime, opens: datetime | None):
    assert courtesy.next_open(moment) == opens


def test_window_opening_is_in_local_time_across_daylight_saving():
    # 29 March 2026: clocks go forward; Monday 08:00 in Paris is 06:00 UTC, not 07:00.
    opens = courtesy.next_open(datetime(2026, 3, 29, 12, 0, tzinfo=UTC))
    assert opens is not None and opens.astimezone(UTC) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)


def test_window_conf_mistakes_are_reported_with_their_field(tmp_path, redis_url):
    extra = """
    [windows.office]
    days = ["monday"]
    start = "18:00"
    end = "09:00"
    timezone = "Europe/Pariss"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, extra=extra)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    lines = conf.read_text().splitlines()
    at = {line.split(" =")[0]: i for i, line in enumerate(lines, 1) if " = " in line}
    # every mistake of the window in one run, each on its own line
    assert f"{conf}:{at['days']}: windows.office.days: use mon, tue" in result.output
    assert f"{conf}:{at['end']}: windows.office.end: 09:00 must come after start 18:00" in (
        result.output
    )
    assert f"{conf}:{at['timezone']}: windows.office.timezone: unknown time zone" in result.output


def test_every_mistake_of_a_window_at_once(tmp_path, redis_url):
    extra = """
    [windows.night]
    start = "25:00"
    days = ["funday"]
    timezone = "Mars/Olympus"
    holidays = "XX"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, extra=extra)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    problems = [line for line in result.output.splitlines() if "windows.night" in line]
    assert sorted(p.split(": ", 1)[1].split(":")[0] for p in problems) == [
        "windows.night.days",
        "windows.night.holidays",
        "windows.night.start",
        "windows.night.timezone",
    ], result.output
    assert "'25:00' is not a time of day: HH:MM, 00:00 to 24:00" in result.output


def _line_of(conf: Path, key: str) -> int:
    lines = conf.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(key))


def _closed_today() -> str:
    """A window open every day but today (Paris time), from midnight: closed right now."""
    today = datetime.now(PARIS).weekday()
    days = [d for i, d in enumerate(DAYS) if i != today]
    return f"""
    [windows.not-today]
    days = {json.dumps(days)}
    start = "00:00"
    end = "24:00"
    holidays = ""
    """


async def test_message_outside_its_window_is_deferred_not_dropped(
    tmp_path, redis_url, receiver: Receiver, start_gateway, redis_client
):
    rules = """
    [rules.reminder]
    events = ["payment.failed"]
    window = "not-today"
    [[rules.reminder.actions]]
    channel = "hook"

    [rules.receipt]
    events = ["payment.failed"]
    window = "none"
    [[rules.receipt.actions]]
    channel = "hook"
    """
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=receiver.url, rules=rules, extra=_closed_today()
    )
    gw = await start_gateway(conf)
    assert (await gw.post(make_event(type="payment.failed")))[0] == 202

    await receiver.wait_for(1)  # the transactional one, at once
    deadline = time.monotonic() + 10
    while not redis_client.zcard("tocsin:retries"):
        assert time.monotonic() < deadline, "the reminder was neither sent nor deferred"
        await asyncio.sleep(0.05)
    [(member, score)] = redis_client.zrange("tocsin:retries", 0, -1, withscores=True)
    job = json.loads(member.split(b"\n", 1)[1])
    assert job["rule"] == "reminder" and job.get("attempt", 1) == 1  # a deferral is not an attempt
    tomorrow = (datetime.now(PARIS) + timedelta(days=1)).date()
    expected = datetime.combine(tomorrow, datetime.min.time(), PARIS).timestamp()
    assert score == expected * 1000
    record = json.loads(redis_client.get(f"tocsin:delivery:{job['id']}"))
    assert record["status"] == "deferred"
    assert "outside sending window 'not-today'" in record["attempts"][0]["error"]
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1


async def test_channel_window_applies_unless_the_rule_opts_out(
    tmp_path, redis_url, receiver: Receiver, start_gateway, redis_client
):
    extra = _closed_today() + '\n[channels.hook.delivery]\nwindow = "not-today"\n'
    rules = """
    [rules.urgent]
    events = ["dispute.opened"]
    window = "none"
    [[rules.urgent.actions]]
    channel = "hook"
    [rules.routine]
    events = ["payment.succeeded"]
    [[rules.routine.actions]]
    channel = "hook"
    """
    conf = write_conf(
        tmp_path, redis_url=redis_url, hook_url=receiver.url, rules=rules, extra=extra
    )
    gw = await start_gateway(conf)
    routine = make_event()
    urgent = make_event(
        type="dispute.opened",
        data={
            "dispute_id": "dp_1",
            "amount": 1250,
            "currency": "EUR",
            "respond_by": "2026-12-10T23:59:00Z",
        },
    )
    assert (await gw.post(routine))[0] == 202
    assert (await gw.post(urgent))[0] == 202
    [got] = await receiver.wait_for(1)
    assert got.json()["id"] == urgent["id"]
    deadline = time.monotonic() + 10
    while not redis_client.zcard("tocsin:retries"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def test_unknown_window_is_a_conf_error(tmp_path, redis_url):
    rules = """
    [rules.r]
    events = ["payment.failed"]
    window = "nightly"
    [[rules.r.actions]]
    channel = "hook"
    """
    conf = write_conf(tmp_path, redis_url=redis_url, rules=rules)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    line = _line_of(conf, "window =")
    assert f"{conf}:{line}: rules.r.window: no window 'nightly' (windows: courtesy)" in (
        result.output
    )


# -- audiences -------------------------------------------------------------------------

AUDIENCE = """
[audiences.sales]
description = "Told when a large payment lands"
members = [
  { name = "Alice", email = "alice@example.com", locale = "fr" },
  { name = "Bob", phone = "+33612345678", locale = "en" },
]
"""


async def test_audience_members_each_get_a_delivery(
    tmp_path, redis_url, receiver: Receiver, start_gateway
):
    rules = """
    [rules.tell-sales]
    events = ["payment.succeeded"]
    [[rules.tell-sales.actions]]
    channel = "hook"
    template = "staff"
    to = ["audience:sales", "customer"]
    """
    templates = {
        "staff/json.j2": '{"to": {{ (recipient.email or recipient.phone) | json }}, '
        '"kind": {{ recipient.kind | json }}, "locale": {{ locale | json }}}'
    }
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=rules,
        extra=AUDIENCE,
        templates=templates,
    )
    gw = await start_gateway(conf)
    assert (await gw.post(make_event()))[0] == 202
    got = await receiver.wait_for(3)
    bodies = sorted((r.json()["to"], r.json()["kind"], r.json()["locale"]) for r in got)
    assert bodies == [
        ("+33612345678", "audience", "en"),
        ("alice@example.com", "audience", "fr"),
        ("client@example.com", "customer", "fr"),
    ]
    assert len({r.msg_id for r in got}) == 3


def test_unknown_audience_is_a_conf_error(tmp_path, redis_url):
    rules = """
    [rules.r]
    events = ["payment.failed"]
    [[rules.r.actions]]
    channel = "hook"
    to = ["audience:accounting"]
    """
    conf = write_conf(tmp_path, redis_url=redis_url, rules=rules, extra=AUDIENCE)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2
    assert (
        f"{conf}:{_line_of(conf, 'to =')}: rules.r.actions[0].to[0]: "
        "no audience 'accounting' (audiences: sales)" in result.output
    )
