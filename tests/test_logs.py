"""Logs: the masker, the JSON lines, and a real ``tocsin serve`` that must not leak a
customer's personal data through any channel, whatever fails.

The end-to-end test runs the supervisor with two gateway children (their log format is
inherited), at DEBUG, against real servers on 127.0.0.1: a verifying webhook receiver, a
receiver that echoes the customer back in its refusal (a dead letter), aiosmtpd, the
Twilio stand-in and the in-house ERP stand-in. Each stand-in fails once in a way that
puts the customer's data in an error message, so the raw values do reach the logging
calls; the test checks that only their masks reach the output.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import redis
from aiohttp import web
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from gateway.logs import JsonFormatter, MaskingFilter, known_values, mask_text, sending
from gateway.redis_server import free_port

from .conftest import Receiver, make_event, write_conf
from .erp_standins import InHouseStandin
from .procs import post_event, serving
from .sms_standins import TWILIO_SID, TWILIO_TOKEN, Failure, TwilioStandIn

NAME = "Zéphyrine Quatremains"
EMAIL = "zephyrine.quatremains@example.org"
PHONE = "+33698765432"
IBAN = "FR7630006000011234567890189"
CUSTOMER = {"id": "cus_7", "name": NAME, "email": EMAIL, "phone": PHONE, "locale": "fr"}
#: What must never be printed, in any spelling a log line may carry.
RAW = [NAME, "Zéphyrine", "Quatremains", EMAIL, PHONE, PHONE[1:], "06 98 76 54 32", IBAN]
#: What must be printed instead: proof that the data did reach the logs.
MASKED = ["Z*** Q***", "z***@example.org", "+33******32", "FR*********************0189"]


# -- the masker ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to jeanne.dupont@example.org: 550", "to j***@example.org: 550"),
        ("sms +33612345678 refused", "sms +33******78 refused"),
        ("call +33 6 12 34 56 78 or 0033612345678", "call +33******78 or +33******78"),
        ("US (+1 415-555-0100)", "US (+1******00)"),
        ("iban FR7630006000011234567890189.", "iban FR*********************0189."),
        ("GB82 WEST 1234 5698 7654 32 ok", "GB****************5432 ok"),
    ],
)
def test_masker_finds_personal_data_by_its_shape(text: str, expected: str):
    assert mask_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "paid 1250 EUR (12.50 €), 100000 cents, -42.00",
        "at 2026-12-05T18:30:00+01:00 epoch 1764957000.123 took 1.5 ms",
        "event evt_33612345678 delivery msg_0033612345678ab cus_1 FA-2026-0042",
        "delivery 9f2c4e1a0b3d5e6f7a8b9c0d attempt 3 of +5, redis://127.0.0.1:6379/0",
        "order 0012345678, ref +1234, +33 12, phone-ish 0612345678 without a country",
        # Shaped like an IBAN, but the mod-97 check fails: an ordinary id.
        "account DE89370400440532013001 SKU AB12CDEF34567890",
    ],
)
def test_masker_leaves_amounts_ids_and_timestamps_alone(text: str):
    assert mask_text(text) == text


def test_known_customer_is_masked_in_any_spelling_and_case():
    known = known_values([NAME], [EMAIL], [PHONE])
    text = (
        f"partner QUATREMAINS not found for Zéphyrine; msisdn {PHONE[1:]}, "
        f"national 06 98 76 54 32; {EMAIL}"
    )
    masked = mask_text(text, known)
    assert masked == (
        "partner Q*** not found for Z***; msisdn +33******32, "
        "national +33******32; z***@example.org"
    )
    # Whole words only: a name's part inside another word is that word's business.
    assert mask_text("Quatremainsville", known) == "Quatremainsville"


# -- the records ----------------------------------------------------------------------------


def _capture(fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(fmt)
    logger = logging.getLogger(f"tocsin.test.{id(out)}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    return logger, out


def test_json_lines_carry_fields_and_mask_message_extra_and_traceback():
    logger, out = _capture(JsonFormatter())
    logger.info(
        "sent to %s",
        EMAIL,
        extra={"event_id": "evt_1", "channel": "mail", "attempt": 2, "customer_name": NAME},
    )
    try:
        raise ValueError(f"no such number {PHONE}")
    except ValueError:
        logger.exception("failed for %s", IBAN)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert set(first) == {
        *("time", "level", "logger", "message", "pid"),
        *("event_id", "channel", "attempt", "customer_name"),
    }
    assert first["message"] == "sent to z***@example.org"
    assert (first["level"], first["logger"], first["attempt"]) == ("INFO", logger.name, 2)
    assert first["customer_name"] == "Z*** Q***"
    # RFC 3339, UTC, milliseconds; and it is now.
    stamp = first["time"]
    assert len(stamp) == 24 and stamp.endswith("Z") and stamp[10] == "T"
    parsed = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(parsed - time.time()) < 60
    assert second["level"] == "ERROR" and second["message"] == "failed for FR" + "*" * 21 + "0189"
    assert "ValueError: no such number +33******32" in second["exception"]
    assert PHONE not in out.getvalue() and IBAN not in out.getvalue()


def test_human_lines_are_masked_too_and_a_bad_format_string_keeps_its_line():
    logger, out = _capture(logging.Formatter("%(levelname)s %(message)s"))
    logger.warning("refused %s", EMAIL)
    logger.warning("two args %s %s", PHONE)  # noqa: PLE1206 - a plugin's bug: the line must survive
    lines = out.getvalue().splitlines()
    assert lines[0] == "WARNING refused z***@example.org"
    assert lines[1].startswith("WARNING two args %s %s (log arguments did not format")
    assert PHONE not in out.getvalue()


async def test_a_task_sending_a_delivery_tags_and_masks_every_line_it_logs():
    from gateway import Delivery, Recipient  # noqa: PLC0415

    event = make_event(customer=CUSTOMER)
    delivery = Delivery(
        id="msg_1",
        event_id=event["id"],
        event_type=event["type"],
        rule="r",
        channel="erp",
        event=json.dumps(event).encode(),  # type: ignore[arg-type]
        recipient=Recipient(kind="customer", name=NAME),
        attempt=3,
    )
    logger, out = _capture(JsonFormatter())

    async def send() -> None:
        sending(delivery)
        # As a plugin would: its own words, the customer's surname in capitals.
        logger.info("partner %s has no open invoice", "QUATREMAINS")

    await asyncio.create_task(send())
    logger.info("outside any delivery: Quatremains")  # not known here: left as is
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["message"] == "partner Q*** has no open invoice"
    assert (inside["delivery_id"], inside["event_id"]) == ("msg_1", event["id"])
    assert (inside["channel"], inside["attempt"]) == ("erp", 3)
    assert outside["message"] == "outside any delivery: Quatremains"
    assert "delivery_id" not in outside


# -- a real gateway ---------------------------------------------------------------------------


class RefusingSmtp:
    """Answers the first message 451 naming its recipient, as busy servers do."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.refused = 0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if not self.refused:
            self.refused += 1
            return f"451 4.2.0 <{envelope.rcpt_tos[0]}> mailbox busy, call {PHONE}"
        assert isinstance(envelope.original_content, bytes)
        self.received.append(envelope.original_content)
        return "250 2.0.0 queued"


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[RefusingSmtp, int]]:
    handler = RefusingSmtp()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTPServer(handler, hostname="mx.test"), "127.0.0.1", 0
    )
    yield handler, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[list[Any], str]]:
    """A receiver that refuses every webhook with 422, quoting the customer it got."""
    got: list[Any] = []

    async def refuse(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        got.append(event)
        customer = event["customer"]
        quoted = {k: customer[k] for k in ("name", "email", "phone")} | {"iban": IBAN}
        return web.json_response({"error": "unknown payer", "payer": quoted}, status=422)

    app = web.Application()
    app.router.add_post("/hook", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield got, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


TEMPLATES = {
    "notice/email.subject.j2": "Paiement reçu, {{ customer.name }}",
    "notice/email.txt.j2": "Bonjour {{ customer.name }}, IBAN {{ data.iban }}.\n",
    "notice/sms.j2": "{{ customer.name }}: paiement de {{ data.amount }} reçu.\n",
}


def _conf(
    tmp_path: Path, redis_url: str, hook: str, echo: str, smtp_port: int, twilio: str, erp: str
) -> Path:
    rules = """
    [rules.everything]
    events = ["payment.succeeded"]
    [[rules.everything.actions]]
    channel = "hook"
    [[rules.everything.actions]]
    channel = "echo"
    [[rules.everything.actions]]
    channel = "mail"
    template = "notice"
    to = ["customer"]
    [[rules.everything.actions]]
    channel = "sms"
    template = "notice"
    to = ["customer"]
    [[rules.everything.actions]]
    channel = "erp"
    """
    soon = '\nretry_schedule = ["0s", "100ms"]\njitter = 0\nbreaker_failures = 0\n'
    extra = f"""
    [channels.hook.delivery]{soon}
    [channels.echo]
    type = "json_hook"
    url = "{echo}"
    secret = "whsec_dGVzdC1lY2hvLXNlY3JldC0wMTIzNDU2Nzg5YWI="
    [channels.mail]
    type = "email"
    backend = "smtp"
    host = "127.0.0.1"
    port = {smtp_port}
    security = "none"
    from_address = "paiements@acme.example"
    timeout = "5s"
    [channels.mail.delivery]{soon}
    [channels.sms]
    type = "sms"
    provider = "twilio"
    sender = "MaBoutique"
    default_region = "FR"
    timeout = "5s"
    [channels.sms.twilio]
    account_sid = "{TWILIO_SID}"
    auth_token = "{TWILIO_TOKEN}"
    base_url = "{twilio}"
    [channels.sms.delivery]{soon}
    [channels.erp]
    type = "erp"
    connector = "rest"
    action = "call"
    url = "{erp}/erp"
    timeout = "5s"
    [channels.erp.rest]
    headers = {{ Authorization = "Bearer {InHouseStandin.TOKEN}" }}
    [channels.erp.call]
    method = "POST"
    path = "/v1/payments"
    [channels.erp.delivery]{soon}
    """
    return write_conf(
        tmp_path, redis_url=redis_url, hook_url=hook, rules=rules, extra=extra, templates=TEMPLATES
    )


async def _until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def test_a_customer_through_every_channel_leaves_no_personal_data_in_the_logs(
    tmp_path,
    redis_url,
    redis_client: redis.Redis,
    receiver: Receiver,
    echo,
    smtp,
    twilio: TwilioStandIn,
    inhouse: InHouseStandin,
):
    import aiohttp  # noqa: PLC0415

    receiver.status = lambda n: 503 if n == 1 else 204
    echoed, echo_url = echo
    mail, smtp_port = smtp
    # Twilio busy once, quoting the number and the name, as providers' errors do.
    twilio.fail_next.append(
        Failure(429, {"code": 20429, "message": f"Too many requests to {PHONE} ({NAME})"})
    )
    inhouse.faults.http_503 = 1
    conf = _conf(
        tmp_path, redis_url, receiver.url, echo_url, smtp_port, twilio.base_url, inhouse.url
    )
    event = make_event(
        customer=CUSTOMER, data={"amount": 4200, "currency": "EUR", "iban": IBAN, "payer": NAME}
    )
    args = ("--processes", "2", "--log-level", "debug", "--log-format", "json")
    async with serving(conf, free_port(), tmp_path, "gw", *args) as gw:
        async with aiohttp.ClientSession() as session:
            assert (await post_event(session, gw.url, event))[0] == 202
        await receiver.wait_for(1, timeout=20)
        await twilio.wait_for(1, timeout=20)
        await _until(lambda: mail.received, "the email, after its 451")
        await _until(lambda: inhouse.requests, "the ERP call, after its 503")
        await _until(lambda: redis_client.xlen("tocsin:dead") == 1, "the echo's dead letter")
        # Its last delivery settled: every outcome line is written.
        await _until(lambda: gw.proc.stderr.count("delivered ") >= 4, "4 delivered lines")
        gw.proc.signal(signal.SIGTERM)
        assert await gw.proc.wait(30) == 0
    assert echoed and echoed[0]["customer"]["name"] == NAME  # the data did go out

    output = gw.proc.stdout + gw.proc.stderr
    lines = [json.loads(line) for line in gw.proc.stderr.splitlines()]
    decoded = "\n".join(str(value) for line in lines for value in line.values())
    for raw in RAW:
        # As is, JSON-escaped (once: a receiver's body; twice: that body in a JSON line),
        # URL-encoded (a provider's form body).
        escaped = json.dumps(raw)[1:-1]
        for spelling in {raw, escaped, json.dumps(escaped)[1:-1], quote(raw), quote_plus(raw)}:
            assert spelling not in output, f"{spelling!r} leaked into the logs"
        assert raw not in decoded, f"{raw!r} leaked into the logs (once the JSON is read)"
    # The supervisor and both children wrote JSON: the children inherited the format.
    assert len({line["pid"] for line in lines}) == 3
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    for masked in MASKED:
        assert masked in text, f"{masked!r}: the data never reached the logs, or unmasked"

    [accepted] = [line for line in lines if line["logger"] == "tocsin.events"]
    assert (accepted["level"], accepted["event_id"]) == ("INFO", event["id"])
    assert (accepted["event_type"], accepted["source"]) == ("payment.succeeded", "events")
    delivered = {line["channel"]: line for line in lines if line["message"].startswith("delivered")}
    assert set(delivered) == {"hook", "mail", "sms", "erp"}
    for channel, line in delivered.items():
        assert (line["level"], line["event_id"], line["attempt"]) == ("INFO", event["id"], 2), (
            channel
        )
    [dead] = [line for line in lines if "dead-lettered" in line["message"]]
    assert (dead["level"], dead["channel"], dead["attempt"]) == ("WARNING", "echo", 1)
    assert dead["delivery_id"] in dead["message"]


async def test_conf_asks_for_json_without_traffic_lines(tmp_path, redis_url, receiver: Receiver):
    """``[gateway] log_format``/``log_traffic`` from the conf, one process: JSON lines, and
    no line per event or delivery (the dead-letter WARNING would still show)."""
    import aiohttp  # noqa: PLC0415

    conf = write_conf(tmp_path, redis_url=redis_url, hook_url=receiver.url)
    text = conf.read_text().replace(
        'data_dir = "var"', 'data_dir = "var"\nlog_format = "json"\nlog_traffic = false'
    )
    conf.write_text(text)
    async with serving(conf, free_port(), tmp_path, "quiet", "--processes", "1") as gw:
        async with aiohttp.ClientSession() as session:
            assert (await post_event(session, gw.url, make_event()))[0] == 202
        await receiver.wait_for(1)
        gw.proc.signal(signal.SIGTERM)
        assert await gw.proc.wait(30) == 0
    lines = [json.loads(line) for line in gw.proc.stderr.splitlines()]
    messages = [line["message"] for line in lines]
    assert any("running roles" in m for m in messages)  # start-up lines still there
    assert not [m for m in messages if "accepted" in m or m.startswith("delivered")], messages
