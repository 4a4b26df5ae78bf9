"""The suppression list, end to end: real Redis, a real gateway (intake, router, worker
in this test's loop), the SMS providers' stand-ins and a real SMTP server (aiosmtpd).

A suppressed address still gets transactional messages unless it bounced or is invalid;
reminders are skipped, recorded as ``suppressed`` with the entry's reason and counted in
``tocsin_suppressed_total``. The list is fed by ``tocsin suppress``, by providers' refusals
at send time, by their receipts and by the recipients' SMS replies.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.conf import read_conf
from gateway.suppression import skip_reason
from gateway.suppression.store import Entry

from .conftest import RunningGateway, make_event, write_conf
from .sms_standins import TWILIO_SID, TWILIO_TOKEN, VONAGE_KEY, VONAGE_SECRET

PHONE = "+33612345678"
TEMPLATES = {
    "paid/sms.j2": "Paiement {{ refs.invoice_ref }} reçu. Merci !\n",
    "nudge/sms.j2": "Rappel : facture {{ refs.invoice_ref }}.\n",
    "paid/email.subject.j2": "Paiement reçu\n",
    "paid/email.txt.j2": "Paiement {{ refs.invoice_ref }} reçu.\n",
    "nudge/email.subject.j2": "Rappel\n",
    "nudge/email.txt.j2": "Facture {{ refs.invoice_ref }} à régler.\n",
}


def rules(channel: str) -> str:
    """A receipt (transactional, the default) and a reminder, both to the customer."""
    return f"""
    [rules.receipt]
    events = ["payment.*"]
    [[rules.receipt.actions]]
    channel = "{channel}"
    template = "paid"
    to = ["customer"]

    [rules.nudge]
    events = ["payment.*"]
    category = "reminder"
    [[rules.nudge.actions]]
    channel = "{channel}"
    template = "nudge"
    to = ["customer"]
    """


def twilio_conf(tmp_path: Path, redis_url: str, base_url: str) -> Path:
    channel = f"""
    [channels.sms]
    type = "sms"
    provider = "twilio"
    sender = "MaBoutique"
    default_region = "FR"
    timeout = "5s"
    [channels.sms.twilio]
    account_sid = "{TWILIO_SID}"
    auth_token = "{TWILIO_TOKEN}"
    base_url = "{base_url}"
    """
    return write_conf(
        tmp_path, redis_url=redis_url, rules=rules("sms"), extra=channel, templates=TEMPLATES
    )


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


async def pay(gw: RunningGateway, *, phone: str = PHONE, email: str | None = None) -> str:
    customer: dict[str, Any] = {"id": "cus_1", "phone": phone, "locale": "fr", "kind": "b2c"}
    if email is not None:
        customer["email"] = email
    event = make_event(customer=customer, refs={"invoice_ref": "FA-7"})
    status, body = await gw.post(event)
    assert status == 202, body
    return str(event["id"])


async def records(conf: Path, event_id: str, count: int, timeout: float = 10.0) -> dict[str, Any]:
    """The event's delivery records by rule, once ``count`` of them are settled."""
    deadline = time.monotonic() + timeout
    while True:
        result = await cli("deliveries", "--event", event_id, "--json", "--conf", str(conf))
        found = {r["rule"]: r for r in map(json.loads, result.output.splitlines())}
        settled = [r for r in found.values() if r["status"] not in ("pending", "retrying")]
        if len(settled) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} settled deliveries, got {found}")
        await asyncio.sleep(0.05)


async def listed(conf: Path) -> list[dict[str, Any]]:
    result = await cli("suppress", "list", "--json", "--conf", str(conf))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


async def wait_listed(conf: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := await listed(conf)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} entries, got {found}")
        await asyncio.sleep(0.05)
    return found


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        return await response.text()


# --- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "transactional", "reminder"),
    [
        ("unsubscribed", None, "unsubscribed"),
        ("stop_reply", None, "stop_reply"),
        ("complaint", None, "complaint"),
        ("manual", None, "manual"),
        ("hard_bounce", "hard_bounce", "hard_bounce"),
        ("invalid_number", "invalid_number", "invalid_number"),
    ],
)
def test_what_each_reason_lets_through(reason, transactional, reminder):
    entry = Entry(address=PHONE, reason=reason, author="t", at=0.0)
    assert skip_reason(entry, "transactional") == transactional
    assert skip_reason(entry, "reminder") == reminder
    assert skip_reason(entry, "marketing") == reminder
    assert skip_reason(None, "marketing") is None


def test_a_misspelt_category_is_a_conf_error_with_its_place(tmp_path, redis_url):
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        rules='[rules.r]\nevents = ["payment.*"]\ncategory = "promo"\n'
        '[[rules.r.actions]]\nchannel = "hook"\n',
    )
    _, problems = read_conf(conf)
    assert any("rules.r.category" in p and "promo" in p for p in problems), problems


# --- the CLI ------------------------------------------------------------------------------


async def test_cli_add_list_check_remove(tmp_path, redis_url):
    conf = write_conf(tmp_path, redis_url=redis_url)
    c = str(conf)
    added = await cli(
        "suppress", "add", " Client@Example.COM ", "--reason", "unsubscribed", "--conf", c
    )
    assert added.exit_code == 0, added.output
    assert added.output.startswith("listed client@example.com: unsubscribed by cli:")
    national = await cli(
        "suppress", "add", "06 12 34 56 78", "--region", "FR", "--note", "x", "--conf", c
    )
    assert national.exit_code == 0, national.output
    assert f"listed {PHONE}: manual" in national.output

    entries = await listed(conf)
    assert [(e["address"], e["reason"]) for e in entries] == [
        (PHONE, "manual"),
        ("client@example.com", "unsubscribed"),
    ]
    table = await cli("suppress", "list", "--reason", "unsubscribed", "--conf", c)
    assert "client@example.com" in table.output and PHONE not in table.output

    check = await cli(
        "suppress", "check", "CLIENT@example.com", "--category", "reminder", "--conf", c
    )
    assert check.exit_code == 1
    assert "a reminder message would be skipped" in check.output
    check = await cli("suppress", "check", PHONE, "--category", "transactional", "--conf", c)
    assert "a transactional message would be sent" in check.output

    removed = await cli("suppress", "remove", "client@example.com", "--conf", c)
    assert removed.exit_code == 0 and removed.output.startswith("removed client@example.com")
    again = await cli("suppress", "remove", "client@example.com", "--conf", c)
    assert again.exit_code == 1 and "is not on the suppression list" in again.output
    assert (await cli("suppress", "check", "client@example.com", "--conf", c)).exit_code == 0

    for bad, why in (
        ("0612345678", "international format"),
        ("+33 1", "is not a phone number: the string supplied is too short"),
        ("+33 1 23", "not a valid phone number"),
        ("bob@", "not an email address"),
    ):
        result = await cli("suppress", "add", bad, "--conf", c)
        assert result.exit_code == 2 and why in result.output, (bad, result.output)
    past = await cli("suppress", "add", PHONE, "--until", "2020-01-01", "--conf", c)
    assert past.exit_code == 2 and "already past" in past.output


# --- through a gateway ------------------------------------------------------------------


async def test_categories_reasons_expiry_and_the_metric(tmp_path, redis_url, start_gateway, twilio):
    conf = twilio_conf(tmp_path, redis_url, twilio.base_url)
    c = str(conf)
    gw = await start_gateway(conf)
    assert (
        await cli("suppress", "add", PHONE, "--reason", "unsubscribed", "--conf", c)
    ).exit_code == 0

    # Unsubscribed: the receipt goes, the reminder is skipped and recorded as such.
    first = await records(conf, await pay(gw), 2)
    assert first["receipt"]["status"] == "delivered"
    assert first["nudge"]["status"] == "suppressed"
    [skip] = first["nudge"]["attempts"]
    assert skip["outcome"] == "suppressed"
    assert "(unsubscribed, by cli:" in skip["note"] and "reminder message" in skip["note"]
    assert [m["To"] for m in twilio.accepted] == [PHONE]
    shown = await cli("deliveries", "show", first["nudge"]["id"], "--conf", c)
    assert "status    suppressed" in shown.output and "unsubscribed" in shown.output
    listed_ = await cli("deliveries", "--status", "suppressed", "--conf", c)
    assert first["nudge"]["id"] in listed_.output

    # An invalid number blocks even the receipt; it expires in a moment.
    added = await cli(
        "suppress", "add", PHONE, "--reason", "invalid_number", "--for", "1s", "--conf", c
    )
    assert added.exit_code == 0, added.output
    second = await records(conf, await pay(gw), 2)
    assert {r["status"] for r in second.values()} == {"suppressed"}
    assert "(invalid_number," in second["receipt"]["attempts"][0]["note"]
    assert len(twilio.requests) == 1

    await asyncio.sleep(1.1)  # past the expiry: both go
    third = await records(conf, await pay(gw), 2)
    assert {r["status"] for r in third.values()} == {"delivered"}
    await twilio.wait_for(3)
    assert await listed(conf) == []

    text = await scrape(gw.url)
    assert 'tocsin_suppressed_total{reason="unsubscribed"} 1.0' in text
    assert 'tocsin_suppressed_total{reason="invalid_number"} 2.0' in text
    assert 'tocsin_suppressed_total{reason="hard_bounce"} 0.0' in text
    assert 'tocsin_deliveries_total{channel="sms",status="suppressed"} 3.0' in text


async def test_twilio_stop_start_replies_and_an_invalid_number_feed_the_list(
    tmp_path, redis_url, start_gateway, twilio
):
    conf = twilio_conf(tmp_path, redis_url, twilio.base_url)
    gw = await start_gateway(conf)
    url = gw.url + "/v1/receipts/sms"

    assert await twilio.inbound(url, PHONE, "Stop").send() == (200, {"received": 1})
    [entry] = await listed(conf)
    assert (entry["address"], entry["reason"]) == (PHONE, "stop_reply")
    assert entry["author"].startswith("reply SM") and entry["note"] == "Stop"
    # Not a whole-body keyword: nothing changes. START opts back in.
    assert await twilio.inbound(url, PHONE, "stop the reminders please").send() == (
        200,
        {"received": 1},
    )
    assert [e["reason"] for e in await listed(conf)] == ["stop_reply"]
    assert await twilio.inbound(url, PHONE, "START", advanced=True).send() == (200, {"received": 1})
    assert await listed(conf) == []
    forged = twilio.inbound(url, PHONE, "STOP")
    forged.headers["X-Twilio-Signature"] = "AAAA"
    assert (await forged.send())[0] == 401
    assert await listed(conf) == []

    # Twilio refuses the number (21211): listed, and the next receipt is not even tried.
    invalid = "+33612345679"
    twilio.invalid_numbers.add(invalid)
    first = await records(conf, await pay(gw, phone=invalid), 2)
    assert {r["status"] for r in first.values()} == {"dead"}
    [entry] = await wait_listed(conf, 1)
    assert (entry["address"], entry["reason"]) == (invalid, "invalid_number")
    assert entry["author"] == "sms:sms 400" and "21211" in entry["note"]
    tried = len(twilio.requests)
    second = await records(conf, await pay(gw, phone=invalid), 2)
    assert {r["status"] for r in second.values()} == {"suppressed"}
    assert len(twilio.requests) == tried


async def test_vonage_stop_reply_and_opted_out_receipt_feed_the_list(
    tmp_path, redis_url, start_gateway, vonage
):
    channel = f"""
    [channels.sms]
    type = "sms"
    provider = "vonage"
    sender = "MaBoutique"
    default_region = "FR"
    timeout = "5s"
    [channels.sms.vonage]
    api_key = "{VONAGE_KEY}"
    api_secret = "{VONAGE_SECRET}"
    base_url = "{vonage.base_url}"
    """
    conf = write_conf(
        tmp_path, redis_url=redis_url, rules=rules("sms"), extra=channel, templates=TEMPLATES
    )
    gw = await start_gateway(conf)
    vonage.dlr_url = gw.url + "/v1/receipts/sms"

    assert await vonage.inbound(vonage.dlr_url, "33612345678", "STOP").send() == (
        200,
        {"received": 1},
    )
    [entry] = await listed(conf)
    assert (entry["address"], entry["reason"]) == (PHONE, "stop_reply")

    # Vonage accepts a send to a number that opted out, then reports err-code 9.
    other = "+33612345670"
    await records(conf, await pay(gw, phone=other), 2)
    message = (await vonage.wait_for(1))[0]
    answers = await vonage.send_receipts(message, "rejected", err_code=9)
    assert answers == [(200, {"received": 1})]
    found = {e["address"]: e for e in await listed(conf)}
    assert found[other]["reason"] == "stop_reply"
    assert found[other]["author"].startswith("receipt ") and "err-code 9" in found[other]["note"]


class Bouncer:
    """An SMTP server refusing two recipients: one that does not exist, one by policy."""

    def __init__(self) -> None:
        self.accepted: list[str] = []

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if address.lower().startswith("gone@"):
            return "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
        if address.startswith("blocked@"):
            return "550 5.7.1 Service unavailable; client host blocked using a DNSBL"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 queued"


@pytest.fixture
async def bouncer() -> AsyncIterator[tuple[Bouncer, int]]:
    handler = Bouncer()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTPServer(handler, hostname="mx.test"), "127.0.0.1", 0
    )
    yield handler, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_smtp_5_1_1_is_a_hard_bounce_that_blocks_even_receipts(
    tmp_path, redis_url, start_gateway, bouncer
):
    handler, port = bouncer
    channel = f"""
    [channels.mail]
    type = "email"
    from_address = "paiements@acme.example"
    backend = "smtp"
    host = "127.0.0.1"
    port = {port}
    security = "none"
    timeout = "5s"
    """
    rule = textwrap.dedent(rules("mail"))
    conf = write_conf(tmp_path, redis_url=redis_url, rules=rule, extra=channel, templates=TEMPLATES)
    gw = await start_gateway(conf)

    await records(conf, await pay(gw, email="Gone@example.com"), 2)
    [entry] = await wait_listed(conf, 1)
    assert (entry["address"], entry["reason"]) == ("gone@example.com", "hard_bounce")
    assert entry["author"] == "mail:email 550" and "5.1.1" in entry["note"]
    # A policy refusal (5.7.1) says nothing about the address: not listed.
    await records(conf, await pay(gw, email="blocked@example.com"), 2)
    assert [e["address"] for e in await listed(conf)] == ["gone@example.com"]

    again = await records(conf, await pay(gw, email="gone@example.com"), 2)
    assert {r["status"] for r in again.values()} == {"suppressed"}
    assert "(hard_bounce," in again["receipt"]["attempts"][0]["note"]
    assert handler.accepted == []


# --- tocsin simulate ----------------------------------------------------------------------


async def test_simulate_lists_suppressed_messages_as_skipped(tmp_path, redis_url):
    conf = twilio_conf(tmp_path, redis_url, "http://127.0.0.1:9")
    c = str(conf)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(
                make_event(
                    occurred_at=f"2026-03-0{n}T10:00:00+00:00",
                    customer={"id": f"cus_{n}", "phone": phone, "kind": "b2c"},
                    refs={"invoice_ref": f"FA-{n}"},
                )
            )
            for n, phone in ((1, PHONE), (2, "+33612345670"))
        )
    )
    given = tmp_path / "suppressed.txt"
    given.write_text(f"# exported by hand\n{PHONE} unsubscribed\n")
    result = await cli(
        "simulate", str(events), "--suppressions", str(given), "--redis-url", redis_url, "--conf", c
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    skipped = [line for line in lines if "SKIPPED" in line]
    assert len(skipped) == 1
    assert PHONE in skipped[0] and "<- nudge" in skipped[0]
    assert "SKIPPED: suppressed (unsubscribed; reminder)" in skipped[0]
    assert lines[-1] == "4 notification(s) from 2 event(s), 1 skipped (suppressed)"

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{PHONE} unsubscribed\n+33612345670 bored\n")
    refused = await cli("simulate", str(events), "--suppressions", str(bad), "--conf", c)
    assert refused.exit_code == 2
    assert f"{bad}: line 2: unknown reason 'bored'" in refused.output

    # The deployment's own list, read and left as it was.
    await cli("suppress", "add", "+33612345670", "--reason", "hard_bounce", "--conf", c)
    live = await cli(
        "simulate", str(events), "--live-suppressions", "--redis-url", redis_url, "--conf", c
    )
    assert live.exit_code == 0, live.output
    assert (
        live.output.splitlines()[-1] == "4 notification(s) from 2 event(s), 2 skipped (suppressed)"
    )
    assert [e["reason"] for e in await listed(conf)] == ["hard_bounce"]
