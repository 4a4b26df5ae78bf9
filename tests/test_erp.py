"""The erp channel against stand-ins of Odoo, Dolibarr, ERPNext and an in-house API.

Real sockets throughout: the stand-ins (tests/erp_standins/) are aiohttp servers on
127.0.0.1 that keep invoices and payments and refuse what the real ERPs refuse; channels
are built from a real conf by the real plan; the end-to-end tests post events at a real
gateway's intake and watch the stand-in's books.
"""

from __future__ import annotations

import json
import re
import ssl
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import trustme
from click.testing import CliRunner
from gateway_erp import ErpChannel, ErpConfig, exponent, from_minor, parse_erp_amount, to_minor
from redis.asyncio import Redis as AsyncRedis

from gateway import ChannelContext, OutboundPolicy, Templates, TransientError
from gateway.adminapi import context_for
from gateway.adminapi.search import delivery_item
from gateway.cli import main
from gateway.conf import convert
from gateway.history import DeliveryRecord

from .conftest import Receiver, load_plan, write_conf
from .erp_helpers import (
    NO_REDIS,
    ROOT,
    cli,
    delivery_of,
    erpnext_table,
    eventually,
    odoo_table,
    paid_event,
    payment_event,
    refused,
)
from .erp_standins import (
    ErpNextStandin,
    InHouseStandin,
    OdooStandin,
    serve,
)

# -- money ------------------------------------------------------------------------------------


def test_minor_units_convert_with_the_currency_exponent():
    assert from_minor(12050, "EUR") == Decimal("120.50")
    assert str(from_minor(1250, "EUR")) == "12.50"
    assert from_minor(1250, "JPY") == Decimal("1250")
    assert str(from_minor(1250, "KWD")) == "1.250"
    assert (exponent("EUR"), exponent("JPY"), exponent("TND"), exponent("CLF")) == (2, 0, 3, 4)
    assert to_minor(Decimal("120.50"), "EUR") == 12050
    # ERP answers: Odoo's floats and Dolibarr's strings read back exactly.
    assert parse_erp_amount(19.99, "EUR") == Decimal("19.99")
    assert parse_erp_amount(0.1 + 0.2, "EUR") == Decimal("0.30")
    assert parse_erp_amount("120.00000000", "EUR") == Decimal("120.00")
    assert parse_erp_amount(True, "EUR") is None and parse_erp_amount("n/a", "EUR") is None


# -- call -------------------------------------------------------------------------------------


def call_table(url: str, body: str | None = None, method: str = "POST") -> str:
    body_line = f"body = {json.dumps(body)}" if body is not None else ""
    return f"""
    [channels.erp]
    type = "erp"
    connector = "rest"
    action = "call"
    url = "{url}/erp"
    timeout = "5s"
    [channels.erp.rest]
    headers = {{ Authorization = "Bearer {InHouseStandin.TOKEN}" }}
    [channels.erp.call]
    method = "{method}"
    path = "/v1/invoices/{{{{ erp.invoice_ref | urlencode }}}}/payments"
    {body_line}
    """


BODY = '{"amount": {{ erp.amount }}, "currency": {{ erp.currency | json }}, "ref": {{ erp.reference | json }}}'


async def test_call_maps_an_event_to_a_custom_request(inhouse, make_channel):
    channel = await make_channel(call_table(inhouse.url, BODY))
    delivery = delivery_of(payment_event("FA 2025/7", 12050, "tx_77"))

    await channel.send(delivery)
    await channel.send(delivery)  # the same Idempotency-Key: the system drops it

    [request] = inhouse.requests
    assert request["method"] == "POST"
    assert request["path"] == "/erp/v1/invoices/FA%202025/7/payments"
    assert request["body"] == {"amount": 120.50, "currency": "EUR", "ref": "tx_77"}
    assert request["key"] == delivery.id and request["content_type"] == "application/json"

    parts = channel.preview(delivery)
    assert parts["request"] == (
        f"POST {inhouse.url}/erp/v1/invoices/FA%202025/7/payments (Idempotency-Key: {delivery.id})"
    )
    assert json.loads(parts["json"]) == request["body"]


async def test_call_outcomes_and_body_templates(inhouse, make_channel):
    templates = {"inhouse/erp.j2": '{"invoice": {{ refs.invoice_ref | json }}, "paid": true}'}
    channel = await make_channel(call_table(inhouse.url), templates=templates)
    event = payment_event("FA-9", 100, "tx_1")

    inhouse.faults.http_503 = 1
    with pytest.raises(TransientError, match="HTTP 503"):
        await channel.send(delivery_of(event, template="inhouse"))
    await channel.send(delivery_of(event, template="inhouse"))
    assert inhouse.requests[-1]["body"] == {"invoice": "FA-9", "paid": True}

    inhouse.status_once = 422
    error = await refused(channel, delivery_of(payment_event("FA-10", 100, "tx_2")))
    assert "HTTP 422" in error.reason and error.details["invoice_ref"] == "FA-10"

    broken = await make_channel(call_table(inhouse.url, body="{not json"))
    error = await refused(broken, delivery_of(event))
    assert "channels.erp.call.body did not render valid JSON" in error.reason


async def test_call_refuses_a_path_it_cannot_send_as_is(inhouse, make_channel):
    """Values not run through urlencode could split the request line: refused, not sent."""
    table = call_table(inhouse.url).replace(
        "/v1/invoices/{{ erp.invoice_ref | urlencode }}/payments", "/{{ refs.invoice_ref }}"
    )
    channel = await make_channel(table)
    for ref in ("FA 1", "FA-1\r\nX-Evil: 1"):
        error = await refused(channel, delivery_of(payment_event(ref, 100, "tx_1")))
        assert "channels.erp.call.path rendered" in error.reason
    assert inhouse.requests == []


# -- transport: TLS and the SSRF guard --------------------------------------------------------


async def test_tls_is_verified_and_a_private_ca_can_be_trusted(tmp_path, make_channel):
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "erp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    standin = ErpNextStandin()
    standin.add_invoice("ACC-SINV-2025-00015", "10.00")
    async with serve(standin.app(), ssl_context=server) as url:
        untrusted = await make_channel(erpnext_table(url))
        with pytest.raises(TransientError, match="certificate"):
            await untrusted.send(delivery_of(payment_event("ACC-SINV-2025-00015", 1000, "tx_1")))
        assert standin.calls == []

        trusting = await make_channel(
            erpnext_table(url).replace('timeout = "5s"', f'timeout = "5s"\nca_file = "{ca_file}"')
        )
        await trusting.send(delivery_of(payment_event("ACC-SINV-2025-00015", 1000, "tx_1")))
        assert standin.invoices["ACC-SINV-2025-00015"].status == "Paid"


async def test_the_ssrf_guard_applies_without_an_allow_list(tmp_path, erpnext):
    context = ChannelContext(
        templates=Templates(tmp_path, "fr", {}),
        data_dir=tmp_path,
        default_locale="fr",
        outbound=OutboundPolicy(),  # no [outbound] allow: loopback is refused
    )

    def channel_for(url: str) -> ErpChannel:
        options = {
            "connector": "erpnext",
            "url": url,
            "erpnext": {"api_key": "k", "api_secret": "s"},
        }
        return ErpChannel("erp", convert(options, ErpConfig), context)

    # An IP literal is refused once, as a conf error...
    with pytest.raises(
        ValueError, match=r"url: refused to connect to 127\.0\.0\.1: 127\.0\.0\.1 is a loopback"
    ):
        channel_for(erpnext.url)
    # ...a name each time it resolves: the delivery fails for good.
    channel = channel_for(erpnext.url.replace("127.0.0.1", "localhost"))
    await channel.start()
    try:
        error = await refused(channel, delivery_of(payment_event("X", 100, "tx_1")))
    finally:
        await channel.close()
    assert "refused to connect to localhost" in error.reason and "loopback" in error.reason
    assert erpnext.calls == []


# -- conf checks ------------------------------------------------------------------------------


def test_tocsin_check_reports_erp_conf_mistakes(tmp_path):
    extra = """
    [channels.erp]
    type = "erp"
    connector = "dolibarr"
    action = "call"
    url = "ftp://erp.example.com"
    timezone = "Mars/Olympus"
    [channels.erp.odoo]
    api_key = "k"
    [channels.erp.call]
    path = "no-slash/{{ oops"

    [channels.erp2]
    type = "erp"
    connector = "rest"
    url = "https://erp.example.com"
    ca_file = "no-such-ca.pem"

    [channels.erp3]
    type = "erp"
    connector = "odoo"
    url = "https://erp.example.com"
    [channels.erp3.odoo]
    api_key = "k"
    uid = "7"

    [rules.book]
    events = ["payment_request.paid"]
    [[rules.book.actions]]
    channel = "erp4"
    to = ["customer"]

    [channels.erp4]
    type = "erp"
    connector = "erpnext"
    url = "https://erp.example.com"
    [channels.erp4.erpnext]
    api_key = "k"
    api_secret = ""
    """
    conf = write_conf(tmp_path, redis_url=NO_REDIS, rules="", extra=extra)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2, result.output
    out = re.sub(r"\.toml:\d+: ", ".toml: ", result.output)  # line numbers: test_conf.py
    assert f"{conf}: channels.erp: url must be an http:// or https:// URL with a host" in out
    for problem in (
        "odoo: this channel's connector is 'dolibarr'; remove it",
        "[channels.erp.dolibarr] is required with this connector",
        "call.path must start with /",
        "timezone: 'Mars/Olympus' is not a zone such as Europe/Paris",
        "call.path: line 1: unexpected end of template",
    ):
        assert problem in out
    assert f"{conf}: channels.erp2: action: the rest connector only makes calls" in out
    assert "ca_file: cannot read CA certificates from" in out and "no-such-ca.pem" in out
    assert f"{conf}: channels.erp3.odoo.uid: Expected `int | null`, got `str`" in out
    assert f"{conf}: channels.erp4.erpnext.api_secret: a secret is a non-empty string" in out


def test_tocsin_check_reports_erp_action_mistakes(tmp_path):
    extra = """
    [channels.erp]
    type = "erp"
    connector = "erpnext"
    url = "https://erp.example.com"
    [channels.erp.erpnext]
    api_key = "k"
    api_secret = "s"
    [rules.book]
    events = ["payment_request.paid"]
    [[rules.book.actions]]
    channel = "erp"
    to = ["customer"]
    [[rules.book.actions]]
    channel = "erp"
    template = "receipt"
    """
    conf = write_conf(
        tmp_path, redis_url=NO_REDIS, rules="", extra=extra, templates={"receipt/sms.j2": "x"}
    )
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code == 2, result.output
    assert "rules.book.actions[0]: to: an erp action acts in the ERP and sends to no one" in (
        result.output
    )
    assert "rules.book.actions[1]: template: register_payment renders no template" in (
        result.output
    )


def example_conf(folder: Path) -> Path:
    """A conf that includes conf/examples/erp.toml, with the default templates and what
    the example takes from conf/tocsin.toml (staff_email, the accounting audience)."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "tocsin.toml"
    conf.write_text(
        f"""
include = ["{ROOT / "conf/examples/erp.toml"}"]
[gateway]
templates = "{ROOT / "conf/templates"}"
[intake]
secrets = ["whsec_dGVzdC1pbnRha2Utc2VjcmV0LTAxMjM0NTY3ODk="]
[redis]
url = "{NO_REDIS}"
[channels.staff_email]
type = "email"
from_address = "tocsin@example.com"
[audiences.accounting]
members = [{{ name = "Service comptabilité", email = "compta@example.com", locale = "fr" }}]
"""
    )
    return conf


def test_the_conf_example_passes_tocsin_check(tmp_path):
    result = CliRunner().invoke(main, ["check", str(example_conf(tmp_path))])
    assert result.exit_code == 0, result.output


def test_the_docs_conf_examples_pass_tocsin_check(tmp_path, monkeypatch):
    text = (ROOT / "docs/erp.md").read_text()
    blocks = [b for b in text.split("```toml\n")[1:] if 'type = "erp"' in b.split("```")[0]]
    assert len(blocks) >= 6
    for name in ("ODOO", "DOLIBARR", "ERPNEXT", "INHOUSE"):
        for suffix in ("API_KEY", "API_SECRET", "TOKEN"):
            monkeypatch.setenv(f"{name}_{suffix}", "from-the-environment")
    for i, block in enumerate(blocks):
        conf = write_conf(
            tmp_path / f"block{i}", redis_url=NO_REDIS, rules="", extra=block.split("```")[0]
        )
        result = CliRunner().invoke(main, ["check", str(conf)])
        assert result.exit_code == 0, f"docs/erp.md toml block {i}:\n{result.output}"


# -- end to end: intake -> router -> worker -> ERP --------------------------------------------


def gateway_odoo(url: str) -> str:
    return (
        odoo_table(url, "json2", name="odoo_payments")
        + """
    [channels.odoo_payments.delivery]
    retry_schedule = ["0s", "0s", "0s", "0s"]
    jitter = 0
    """
    )


BOOK_RULE = """
[rules.book-payments]
events = ["payment_request.paid"]
when = ['refs.invoice_ref exists']
[[rules.book-payments.actions]]
channel = "odoo_payments"
"""


def records(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(client.get(key) or b"{}") for key in client.scan_iter("tocsin:delivery:*")]


async def test_a_paid_payment_request_closes_the_invoice_end_to_end(
    tmp_path, redis_url, odoo, start_gateway, redis_client, monkeypatch
):
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    odoo.add_invoice("INV/2025/00031", "450.00")
    odoo.faults.http_503 = 1  # the first attempt meets a 503; the core retries
    conf = write_conf(tmp_path, redis_url=redis_url, rules=BOOK_RULE, extra=gateway_odoo(odoo.url))
    gw = await start_gateway(conf)

    event = paid_event("INV/2025/00031", 45000)
    assert (await gw.post(event))[0] == 202

    invoice = odoo.invoice("INV/2025/00031")
    await eventually(lambda: invoice.payment_state == "paid", what="the invoice paid in Odoo")
    [record] = await eventually(
        lambda: [r for r in records(redis_client) if r.get("status") == "delivered"],
        what="the delivery recorded",
    )
    assert [a["outcome"] for a in record["attempts"]] == ["retry", "delivered"]
    assert [p.memo for p in odoo.payments] == ["pr_77"]


async def test_a_crash_after_booking_and_a_forced_replay_never_book_twice(
    tmp_path, redis_url, odoo, start_gateway, redis_client, monkeypatch
):
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    odoo.add_invoice("INV/2025/00032", "450.00")
    odoo.faults.lose_answer = 1  # booked, then the answer is lost: the core retries
    conf = write_conf(tmp_path, redis_url=redis_url, rules=BOOK_RULE, extra=gateway_odoo(odoo.url))
    gw = await start_gateway(conf)
    event = paid_event("INV/2025/00032", 45000)
    assert (await gw.post(event))[0] == 202

    await eventually(
        lambda: [r for r in records(redis_client) if r.get("status") == "delivered"],
        what="the retried delivery",
    )
    forced = await cli("events", "replay", event["id"], "--force", "--conf", str(conf))
    assert forced.exit_code == 0, forced.output
    await eventually(
        lambda: odoo.calls.count("account.payment.search_read") >= 3, what="the forced resend"
    )
    await eventually(
        lambda: all(r.get("status") == "delivered" for r in records(redis_client)),
        what="the resend settled",
    )
    assert len(odoo.payments) == 1, "a retry and a forced replay found the payment booked"
    assert odoo.invoice("INV/2025/00032").payment_state == "paid"


async def test_a_refusal_reaches_accounting_as_erp_sync_failed(
    tmp_path, redis_url, erpnext, receiver: Receiver, start_gateway, redis_client
):
    erpnext.add_invoice("ACC-SINV-2025-00033", "450.00", "USD")
    rules = """
    [rules.book-payments]
    events = ["payment_request.paid"]
    [[rules.book-payments.actions]]
    channel = "erp"

    [rules.tell-accounting]
    events = ["erp.sync_failed"]
    [[rules.tell-accounting.actions]]
    channel = "hook"
    """
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=rules,
        extra=erpnext_table(erpnext.url),
    )
    gw = await start_gateway(conf)
    event = paid_event("ACC-SINV-2025-00033", 45000)
    assert (await gw.post(event))[0] == 202

    [notice] = await receiver.wait_for(1, timeout=20)
    body = notice.json()
    assert body["type"] == "erp.sync_failed" and body["source"]["provider"] == "tocsin"
    data = body["data"]
    assert data["reason"] == (
        "currency mismatch: the payment is in EUR, invoice ACC-SINV-2025-00033 in USD"
    )
    assert (data["invoice_ref"], data["amount"], data["currency"]) == (
        "ACC-SINV-2025-00033",
        45000,
        "EUR",
    )
    assert data["connector"] == "erpnext" and data["invoice_currency"] == "USD"
    assert data["event_id"] == event["id"] and body["refs"]["invoice_ref"] == "ACC-SINV-2025-00033"
    assert erpnext.entries == []

    # The example conf's accounting email renders this very notice.
    notice_file = tmp_path / "notice.json"
    notice_file.write_bytes(notice.body)
    shown = await cli(
        "render",
        "erp_sync_failed",
        "--event",
        str(notice_file),
        "--channel",
        "staff_email",
        "--locale",
        "fr",
        str(example_conf(tmp_path / "example")),
    )
    assert shown.exit_code == 0, shown.output
    assert "[Tocsin] ERP non mis à jour : facture ACC-SINV-2025-00033" in shown.output
    assert "Motif : currency mismatch: the payment is in EUR" in shown.output
    assert "Montant : 450,00" in shown.output
    assert f"tocsin dlq replay {data['delivery_id']}" in shown.output


async def test_the_admin_timeline_lists_erp_deliveries_as_erp_calls(tmp_path: Path) -> None:
    """The ERP channel declares its deliveries ERP calls (``erp_call``); the core reads
    that, not a channel type name, so a third party's ERP channel is listed too."""
    conf = write_conf(
        tmp_path, redis_url="redis://127.0.0.1:9/0", extra=call_table("http://127.0.0.1:9")
    )
    client = AsyncRedis()  # never connects: only the context is built
    try:
        ctx = context_for(load_plan(conf), client, None)
    finally:
        await client.aclose()
    assert ctx.erp_channels == {"erp"}
    record = DeliveryRecord(
        id="msg_1", event_id="evt_1", event_type="payment.succeeded", rule="r",
        channel="erp", status="delivered", updated=0.0,
    )  # fmt: skip
    assert delivery_item(ctx, record)["erp"] is True
    assert delivery_item(ctx, msgspec.structs.replace(record, channel="hook"))["erp"] is False
