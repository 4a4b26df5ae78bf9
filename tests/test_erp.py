"""The erp channel against stand-ins of Odoo, Dolibarr, ERPNext and an in-house API.

Real sockets throughout: the stand-ins (tests/erp_standins.py) are aiohttp servers on
127.0.0.1 that keep invoices and payments and refuse what the real ERPs refuse; channels
are built from a real conf by the real plan; the end-to-end tests post events at a real
gateway's intake and watch the stand-in's books.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis
import trustme
from click.testing import CliRunner, Result
from gateway_erp import ErpChannel, ErpConfig, exponent, from_minor, parse_erp_amount, to_minor

from gateway import ChannelContext, OutboundPolicy, PermanentError, Templates, TransientError
from gateway.cli import main
from gateway.conf import convert
from gateway.delivery import Delivery, delivery_id

from .conftest import Receiver, load_plan, make_event, write_conf
from .erp_standins import (
    DolibarrStandin,
    ErpNextStandin,
    InHouseStandin,
    OdooStandin,
    serve,
)

#: Channel-level tests never reach Redis: the plan only needs a syntactically valid URL.
NO_REDIS = "redis://127.0.0.1:1/0"
ROOT = Path(__file__).resolve().parent.parent


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
async def odoo() -> AsyncIterator[OdooStandin]:
    standin = OdooStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture
async def dolibarr() -> AsyncIterator[DolibarrStandin]:
    standin = DolibarrStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture
async def erpnext() -> AsyncIterator[ErpNextStandin]:
    standin = ErpNextStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture
async def inhouse() -> AsyncIterator[InHouseStandin]:
    standin = InHouseStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture(params=["jsonrpc", "json2"])
def odoo_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # The conf reads the key from the environment, as production confs do.
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    return str(request.param)


def odoo_table(
    url: str, api: str, *, action: str = "register_payment", name: str = "erp", extra: str = ""
) -> str:
    login = 'login = "tocsin@acme.example"' if api == "jsonrpc" else ""
    return f"""
    [channels.{name}]
    type = "erp"
    connector = "odoo"
    action = "{action}"
    url = "{url}"
    timeout = "5s"
    {extra}
    [channels.{name}.odoo]
    api = "{api}"
    database = "acme"
    {login}
    api_key = "${{TEST_ODOO_API_KEY}}"
    journal_id = 7
    """


def dolibarr_table(url: str, *, action: str = "register_payment", key: str = "") -> str:
    return f"""
    [channels.erp]
    type = "erp"
    connector = "dolibarr"
    action = "{action}"
    url = "{url}"
    timeout = "5s"
    [channels.erp.dolibarr]
    api_key = "{key or DolibarrStandin.API_KEY}"
    bank_account_id = 1
    payment_mode_id = 2
    """


def erpnext_table(url: str, *, action: str = "register_payment", secret: str = "") -> str:
    return f"""
    [channels.erp]
    type = "erp"
    connector = "erpnext"
    action = "{action}"
    url = "{url}"
    timeout = "5s"
    [channels.erp.erpnext]
    api_key = "{ErpNextStandin.API_KEY}"
    api_secret = "{secret or ErpNextStandin.API_SECRET}"
    mode_of_payment = "Wire Transfer"
    """


@pytest.fixture
async def make_channel(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_channel(toml)``: the ``erp`` channel of a real conf, started."""
    opened: list[ErpChannel] = []

    async def make(
        table: str, *, name: str = "erp", templates: dict[str, str] | None = None
    ) -> ErpChannel:
        folder = tmp_path / f"conf{len(opened)}"
        conf = write_conf(folder, redis_url=NO_REDIS, rules="", extra=table, templates=templates)
        channel = load_plan(conf).channels[name]
        assert isinstance(channel, ErpChannel)
        await channel.start()
        opened.append(channel)
        return channel

    yield make
    for channel in opened:
        await channel.close()


def paid_event(
    invoice: str, amount: int, currency: str = "EUR", pr: str = "pr_77"
) -> dict[str, Any]:
    """A ``payment_request.paid``: the issue's own example."""
    return make_event(
        type="payment_request.paid",
        refs={"invoice_ref": invoice, "payment_request_id": pr},
        data={
            "amount": amount,
            "currency": currency,
            "paid_amount": amount,
            "paid_at": "2025-01-31T23:30:00Z",  # already February 1st in Paris
        },
    )


def payment_event(
    invoice: str, amount: int, payment_id: str, currency: str = "EUR"
) -> dict[str, Any]:
    return make_event(
        refs={"invoice_ref": invoice},
        data={"payment_id": payment_id, "amount": amount, "currency": currency},
    )


def overdue_event(invoice: str) -> dict[str, Any]:
    return make_event(
        type="payment_request.overdue",
        refs={"invoice_ref": invoice, "payment_request_id": "pr_78"},
        data={
            "amount": 9990,
            "currency": "EUR",
            "remaining_amount": 9990,
            "due_at": "2025-01-15T00:00:00Z",
        },
    )


def delivery_of(
    event: dict[str, Any], *, rule: str = "book", template: str | None = None, channel: str = "erp"
) -> Delivery:
    return Delivery(
        id=delivery_id(event["id"], rule, 0, ""),
        event_id=event["id"],
        event_type=event["type"],
        rule=rule,
        channel=channel,
        event=msgspec.Raw(json.dumps(event).encode()),
        template=template,
    )


async def refused(channel: ErpChannel, delivery: Delivery) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        await channel.send(delivery)
    error = caught.value
    assert error.notify == "erp.sync_failed", "every refusal must reach accounting"
    return error


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


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


# -- Odoo -------------------------------------------------------------------------------------


async def test_odoo_full_payment_closes_the_invoice(odoo, odoo_api, make_channel):
    odoo.add_invoice("INV/2025/00012", "120.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    await channel.send(delivery_of(paid_event("INV/2025/00012", 12000)))

    invoice = odoo.invoice("INV/2025/00012")
    assert invoice.payment_state == "paid" and invoice.amount_residual == 0
    [payment] = odoo.payments
    assert payment.memo == "pr_77", "the provider's id is the payment's reference"
    assert payment.amount == Decimal("120.00") and payment.journal_id == 7
    assert payment.date == "2025-02-01", "the payment date is the day in the ERP's time zone"
    flow = [
        "account.move.search_read",
        "account.payment.search_read",
        "account.payment.register.create",
        "account.payment.register.action_create_payments",
        "account.move.read",
    ]
    assert odoo.calls == flow


async def test_odoo_partial_payment_leaves_the_rest_open(odoo, odoo_api, make_channel):
    odoo.add_invoice("INV/2025/00013", "120.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    await channel.send(delivery_of(payment_event("INV/2025/00013", 5000, "tx_a")))

    invoice = odoo.invoice("INV/2025/00013")
    assert invoice.payment_state == "partial" and invoice.amount_residual == Decimal("70.00")
    await channel.send(delivery_of(payment_event("INV/2025/00013", 7000, "tx_b")))
    assert invoice.payment_state == "paid"
    assert [(p.memo, p.amount) for p in odoo.payments] == [
        ("tx_a", Decimal("50.00")),
        ("tx_b", Decimal("70.00")),
    ]


async def test_odoo_refusals_are_permanent_with_a_reason_for_accounting(
    odoo, odoo_api, make_channel
):
    odoo.add_invoice("INV/PAID", "50.00", residual="0")
    odoo.add_invoice("INV/DRAFT", "50.00", state="draft")
    odoo.add_invoice("INV/CANCEL", "50.00", state="cancel")
    odoo.add_invoice("INV/USD", "50.00", "USD")
    odoo.add_invoice("INV/SMALL", "20.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    error = await refused(channel, delivery_of(payment_event("INV/PAID", 5000, "tx_1")))
    assert "invoice INV/PAID is already paid" in error.reason
    assert error.details["invoice_ref"] == "INV/PAID" and error.details["amount"] == 5000
    assert error.details["payment_reference"] == "tx_1" and error.details["connector"] == "odoo"

    error = await refused(channel, delivery_of(payment_event("INV/NOPE", 5000, "tx_2")))
    assert error.reason.startswith("invoice INV/NOPE not found in odoo")

    error = await refused(channel, delivery_of(payment_event("INV/DRAFT", 5000, "tx_3")))
    assert "invoice INV/DRAFT is a draft" in error.reason

    error = await refused(channel, delivery_of(payment_event("INV/CANCEL", 5000, "tx_4")))
    assert "invoice INV/CANCEL is cancelled" in error.reason

    error = await refused(channel, delivery_of(payment_event("INV/USD", 5000, "tx_5")))
    assert error.reason == "currency mismatch: the payment is in EUR, invoice INV/USD in USD"
    assert error.details["invoice_currency"] == "USD"

    error = await refused(channel, delivery_of(payment_event("INV/SMALL", 5000, "tx_6")))
    assert "exceeds what is left to pay on invoice INV/SMALL (20.00 EUR)" in error.reason

    assert odoo.payments == [], "no refusal books anything"


async def test_odoo_the_same_delivery_twice_books_once(odoo, odoo_api, make_channel):
    odoo.add_invoice("INV/2025/00014", "80.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))
    delivery = delivery_of(paid_event("INV/2025/00014", 8000))

    await channel.send(delivery)
    await channel.send(delivery)  # a redelivery: the invoice is paid by now, and that is fine

    assert len(odoo.payments_for("INV/2025/00014")) == 1
    assert odoo.calls[-2:] == ["account.move.search_read", "account.payment.search_read"]


async def test_odoo_an_answer_lost_after_booking_is_not_booked_again(odoo, odoo_api, make_channel):
    """A crash between the ERP's commit and our acknowledgement: the retry finds the payment."""
    odoo.add_invoice("INV/2025/00015", "80.00")
    odoo.faults.lose_answer = 1
    channel = await make_channel(odoo_table(odoo.url, odoo_api))
    delivery = delivery_of(paid_event("INV/2025/00015", 8000))

    with pytest.raises(TransientError, match="HTTP 503"):
        await channel.send(delivery)
    assert len(odoo.payments) == 1, "the ERP committed before the answer was lost"
    await channel.send(delivery)

    assert len(odoo.payments) == 1
    assert odoo.invoice("INV/2025/00015").payment_state == "paid"


async def test_odoo_concurrency_errors_and_503_are_transient(odoo, odoo_api, make_channel):
    odoo.add_invoice("INV/2025/00016", "80.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))
    delivery = delivery_of(paid_event("INV/2025/00016", 8000))

    odoo.faults.http_503 = 1
    with pytest.raises(TransientError, match="HTTP 503"):
        await channel.send(delivery)
    odoo.faults.concurrency = 1
    with pytest.raises(TransientError, match="could not serialize access"):
        await channel.send(delivery)
    assert odoo.payments == []
    await channel.send(delivery)
    assert len(odoo.payments) == 1 and odoo.invoice("INV/2025/00016").payment_state == "paid"


async def test_odoo_in_payment_counts_as_paid(odoo, odoo_api, make_channel):
    odoo.in_payment = True  # a journal with an outstanding-receipts account
    odoo.add_invoice("INV/2025/00017", "80.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    await channel.send(delivery_of(payment_event("INV/2025/00017", 8000, "tx_1")))
    assert odoo.invoice("INV/2025/00017").payment_state == "in_payment"
    error = await refused(channel, delivery_of(payment_event("INV/2025/00017", 100, "tx_2")))
    assert "already paid (state posted, payment_state in_payment)" in error.reason


async def test_odoo_a_wrong_key_is_refused_for_good(odoo, odoo_api, make_channel, monkeypatch):
    monkeypatch.setenv("TEST_ODOO_API_KEY", "not-the-key")
    odoo.add_invoice("INV/2025/00018", "80.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    error = await refused(channel, delivery_of(payment_event("INV/2025/00018", 8000, "tx_1")))
    if odoo_api == "jsonrpc":
        assert "login 'tocsin@acme.example' on database 'acme' was refused" in error.reason
    else:
        assert "HTTP 401" in error.reason and "Invalid apikey" in error.reason
    assert "not-the-key" not in error.reason and odoo.payments == []


async def test_odoo_ref_field_is_for_odoo_17_and_the_stand_in_is_18(
    odoo, make_channel, monkeypatch
):
    """On Odoo 18 ``account.payment`` has no ``ref``: the ERP says so, for good."""
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    odoo.add_invoice("INV/2025/00019", "80.00")
    table = odoo_table(odoo.url, "json2").replace("journal_id = 7", 'reference_field = "ref"')
    channel = await make_channel(table)

    error = await refused(channel, delivery_of(payment_event("INV/2025/00019", 8000, "tx_1")))
    assert "HTTP 422" in error.reason and "Invalid field account.payment.ref" in error.reason


async def test_odoo_flag_invoice_posts_one_note(odoo, odoo_api, make_channel):
    odoo.add_invoice("INV/2025/00020", "80.00", residual="0")  # any state takes a note
    note = "Dispute lost on {{ refs.invoice_ref }}: {{ data.amount | money(data.currency) }}"
    channel = await make_channel(
        odoo_table(odoo.url, odoo_api, action="flag_invoice", extra=f"note = {json.dumps(note)}")
    )
    event = make_event(
        type="dispute.lost",
        refs={"invoice_ref": "INV/2025/00020"},
        data={"dispute_id": "dp_1", "amount": 8000, "currency": "EUR"},
        customer={"locale": "en"},
    )
    delivery = delivery_of(event, rule="disputes")

    await channel.send(delivery)
    await channel.send(delivery)

    [message] = odoo.messages
    assert message.body.startswith("Dispute lost on INV/2025/00020: €80.00")
    assert message.body.endswith(f"[tocsin {delivery.id}]") and message.subtype == "mail.mt_note"


async def test_odoo_preview_lists_the_calls_and_sends_nothing(odoo, make_channel, monkeypatch):
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    channel = await make_channel(odoo_table(odoo.url, "json2"))

    parts = channel.preview(delivery_of(paid_event("INV/2025/00012", 12000)))

    assert odoo.calls == []
    assert parts["payment"] == (
        "120.00 EUR on invoice INV/2025/00012, reference pr_77, dated 2025-02-01"
    )
    assert list(parts)[2:] == [
        "1. find the invoice",
        "2. look for this payment (found: nothing to do)",
        "3. register the payment",
        "4. confirm it",
        "5. read the invoice back",
    ]
    assert parts["3. register the payment"].startswith(
        "POST /json/2/account.payment.register/create "
        '{"vals_list":[{"payment_date":"2025-02-01","amount":120.00,"communication":"pr_77"'
    )
    assert OdooStandin.API_KEY not in json.dumps(parts)


# -- Dolibarr ---------------------------------------------------------------------------------


async def test_dolibarr_full_payment_uses_the_invoice_payments_endpoint(dolibarr, make_channel):
    dolibarr.add_invoice("FA2501-0042", "120.00")
    channel = await make_channel(dolibarr_table(dolibarr.url))

    await channel.send(delivery_of(paid_event("FA2501-0042", 12000)))

    invoice = dolibarr.invoice("FA2501-0042")
    assert invoice.status == 2 and invoice.remain == 0
    [payment] = dolibarr.payments
    assert (payment.num, payment.amount, payment.paymentid, payment.accountid) == (
        "pr_77",
        Decimal("120.00"),
        2,
        1,
    )
    assert f"POST /api/index.php/invoices/{invoice.id}/payments" in dolibarr.calls


async def test_dolibarr_partial_payment_uses_payments_distributed(dolibarr, make_channel):
    dolibarr.add_invoice("FA2501-0043", "120.00")
    channel = await make_channel(dolibarr_table(dolibarr.url))

    await channel.send(delivery_of(payment_event("FA2501-0043", 5000, "tx_a")))

    invoice = dolibarr.invoice("FA2501-0043")
    assert invoice.status == 1 and invoice.remain == Decimal("70.00")
    assert "POST /api/index.php/invoices/paymentsdistributed" in dolibarr.calls
    await channel.send(delivery_of(payment_event("FA2501-0043", 7000, "tx_b")))
    assert invoice.status == 2 and [p.num for p in dolibarr.payments] == ["tx_a", "tx_b"]


async def test_dolibarr_refusals(dolibarr, make_channel):
    dolibarr.add_invoice("FA-PAID", "50.00", status=2, paid="50.00")
    dolibarr.add_invoice("FA-DRAFT", "50.00", status=0)
    dolibarr.add_invoice("FA-GONE", "50.00", status=3)
    dolibarr.add_invoice("FA-USD", "50.00", "USD")
    channel = await make_channel(dolibarr_table(dolibarr.url))

    error = await refused(channel, delivery_of(payment_event("FA-PAID", 5000, "tx_1")))
    assert "invoice FA-PAID is already paid (status 2 (paid), paye 1)" in error.reason
    error = await refused(channel, delivery_of(payment_event("FA-NONE", 5000, "tx_2")))
    assert error.reason.startswith("invoice FA-NONE not found in dolibarr")
    error = await refused(channel, delivery_of(payment_event("FA-DRAFT", 5000, "tx_3")))
    assert "is a draft" in error.reason
    error = await refused(channel, delivery_of(payment_event("FA-GONE", 5000, "tx_4")))
    assert "is cancelled (status 3 (abandoned)" in error.reason
    error = await refused(channel, delivery_of(payment_event("FA-USD", 5000, "tx_5")))
    assert "currency mismatch" in error.reason
    # Dolibarr keeps 50 characters of num_payment: a longer reference could never be found.
    error = await refused(channel, delivery_of(payment_event("FA-PAID", 5000, "x" * 51)))
    assert "longer than the 50 characters dolibarr keeps" in error.reason
    assert dolibarr.payments == []


async def test_dolibarr_replay_and_a_503_book_once(dolibarr, make_channel):
    dolibarr.add_invoice("FA2501-0044", "99.90")
    channel = await make_channel(dolibarr_table(dolibarr.url))
    delivery = delivery_of(payment_event("FA2501-0044", 9990, "tx_9"))

    dolibarr.faults.http_503 = 1
    with pytest.raises(TransientError, match="HTTP 503"):
        await channel.send(delivery)
    dolibarr.faults.lose_answer = 1
    with pytest.raises(TransientError):
        await channel.send(delivery)
    await channel.send(delivery)
    await channel.send(delivery)

    [payment] = dolibarr.payments
    assert payment.amount == Decimal("99.90") and dolibarr.invoice("FA2501-0044").status == 2


async def test_dolibarr_bad_key_and_newer_empty_lists(make_channel):
    standin = DolibarrStandin(empty_list_is_404=False)  # newer Dolibarr: [] instead of 404
    async with serve(standin.app()) as url:
        channel = await make_channel(dolibarr_table(url))
        error = await refused(channel, delivery_of(payment_event("FA-NONE", 100, "tx_1")))
        assert "not found" in error.reason
        wrong = await make_channel(dolibarr_table(url, key="wrong-key"))
        error = await refused(wrong, delivery_of(payment_event("FA-NONE", 100, "tx_1")))
        assert "HTTP 401" in error.reason and "Access denied" in error.reason


async def test_dolibarr_flag_invoice_appends_to_the_private_note(dolibarr, make_channel):
    invoice = dolibarr.add_invoice("FA2501-0045", "99.90")
    invoice.note_private = "Client prévenu par téléphone."
    channel = await make_channel(dolibarr_table(dolibarr.url, action="flag_invoice"))
    event = overdue_event("FA2501-0045")
    delivery = delivery_of(event, rule="overdue")

    await channel.send(delivery)
    await channel.send(delivery)

    assert invoice.note_private == (
        "Client prévenu par téléphone.\n\n"
        f"Tocsin: payment_request.overdue (test, event {event['id']})\n[tocsin {delivery.id}]"
    )


# -- ERPNext ----------------------------------------------------------------------------------


async def test_erpnext_full_and_partial_payments(erpnext, make_channel):
    erpnext.add_invoice("ACC-SINV-2025-00012", "120.00")
    channel = await make_channel(erpnext_table(erpnext.url))

    await channel.send(delivery_of(payment_event("ACC-SINV-2025-00012", 5000, "tx_a")))
    invoice = erpnext.invoices["ACC-SINV-2025-00012"]
    assert invoice.status == "Partly Paid" and invoice.outstanding == Decimal("70.00")
    await channel.send(delivery_of(payment_event("ACC-SINV-2025-00012", 7000, "tx_b")))
    assert invoice.status == "Paid"

    first, second = erpnext.entries
    assert (first["reference_no"], first["paid_amount"], first["docstatus"]) == ("tx_a", 50.0, 1)
    assert first["references"][0]["allocated_amount"] == 50.0
    assert first["mode_of_payment"] == "Wire Transfer" and second["reference_no"] == "tx_b"
    assert not any(key.startswith("__") for key in first), "an unsaved doc's keys stay home"


async def test_erpnext_refusals(erpnext, make_channel):
    erpnext.add_invoice("SINV-DRAFT", "10.00", docstatus=0)
    erpnext.add_invoice("SINV-CANCELLED", "10.00", docstatus=2)
    erpnext.add_invoice("SINV-PAID", "10.00", outstanding="0")
    erpnext.add_invoice("SINV-GBP", "10.00", "GBP")
    channel = await make_channel(erpnext_table(erpnext.url))

    for ref, expected in [
        ("SINV-DRAFT", "invoice SINV-DRAFT is a draft (docstatus 0, status Draft)"),
        ("SINV-CANCELLED", "invoice SINV-CANCELLED is cancelled"),
        ("SINV-PAID", "invoice SINV-PAID is already paid (docstatus 1, status Paid)"),
        ("SINV-GBP", "currency mismatch: the payment is in EUR, invoice SINV-GBP in GBP"),
        ("SINV-NONE", "invoice SINV-NONE not found in erpnext"),
    ]:
        error = await refused(channel, delivery_of(payment_event(ref, 1000, f"tx_{ref}")))
        assert expected in error.reason
    assert erpnext.entries == []


async def test_erpnext_timestamp_mismatch_is_retried_then_books_once(erpnext, make_channel):
    erpnext.add_invoice("ACC-SINV-2025-00013", "42.00")
    channel = await make_channel(erpnext_table(erpnext.url))
    delivery = delivery_of(paid_event("ACC-SINV-2025-00013", 4200))

    erpnext.faults.concurrency = 1
    with pytest.raises(TransientError, match="TimestampMismatchError"):
        await channel.send(delivery)
    erpnext.faults.lose_answer = 1
    with pytest.raises(TransientError):
        await channel.send(delivery)
    await channel.send(delivery)

    [entry] = erpnext.entries
    assert entry["reference_no"] == "pr_77" and entry["reference_date"] == "2025-02-01"
    assert erpnext.invoices["ACC-SINV-2025-00013"].status == "Paid"


async def test_erpnext_bad_secret_and_flag_invoice(erpnext, make_channel):
    erpnext.add_invoice("ACC-SINV-2025-00014", "42.00")
    wrong = await make_channel(erpnext_table(erpnext.url, secret="wrong"))
    error = await refused(wrong, delivery_of(paid_event("ACC-SINV-2025-00014", 4200)))
    assert "HTTP 401" in error.reason and "AuthenticationError" in error.reason

    templates = {"overdue/erp.j2": "En retard : {{ refs.invoice_ref }}"}
    channel = await make_channel(
        erpnext_table(erpnext.url, action="flag_invoice"), templates=templates
    )
    event = overdue_event("ACC-SINV-2025-00014")
    delivery = delivery_of(event, rule="overdue", template="overdue")
    await channel.send(delivery)
    await channel.send(delivery)
    [comment] = erpnext.comments
    assert comment["content"] == f"En retard : ACC-SINV-2025-00014\n[tocsin {delivery.id}]"
    assert comment["reference_name"] == "ACC-SINV-2025-00014"


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
    out = result.output
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


# -- the stand-ins refuse what the real systems refuse ----------------------------------------


async def test_the_stand_ins_refuse_like_the_real_systems(odoo, dolibarr, erpnext):
    odoo.add_invoice("INV/DRAFT", "10.00", state="draft")
    paid = odoo.add_invoice("INV/PAID", "10.00", residual="0")
    key = {"Authorization": f"bearer {OdooStandin.API_KEY}"}
    context = {"active_model": "account.move", "active_ids": [paid.id]}
    async with aiohttp.ClientSession() as http:

        async def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        status, answer = await post(f"{odoo.url}/json/2/res.partner/search_read", {}, key)
        assert answer["message"] == "Object res.partner doesn't exist"
        status, answer = await post(f"{odoo.url}/json/2/account.move/unlink", {"ids": [1]}, key)
        assert status == 404 and "does not exist" in answer["message"]
        wizard = f"{odoo.url}/json/2/account.payment.register/create"
        status, answer = await post(wizard, {"vals_list": [{}], "context": context}, key)
        assert status == 422 and "nothing left to pay" in answer["message"]
        context["active_ids"] = [odoo.invoice("INV/DRAFT").id]
        status, answer = await post(wizard, {"vals_list": [{}], "context": context}, key)
        assert "only register payment for posted journal entries" in answer["message"]
        odoo.invoice("INV/DRAFT").state = "posted"
        bad_type = {"vals_list": [{"journal_id": "7"}], "context": context}
        status, answer = await post(wizard, bad_type, key)
        assert "Wrong value for account.payment.register.journal_id" in answer["message"]
        status, answer = await post(
            f"{odoo.url}/jsonrpc",
            {
                "jsonrpc": "2.0",
                "method": "call",
                "params": {
                    "service": "object",
                    "method": "execute_kw",
                    "args": ["acme", 7, "wrong", "account.move", "search_read", [[]], {}],
                },
            },
            {},
        )
        assert status == 200 and answer["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"

        invoice = dolibarr.add_invoice("FA-1", "10.00", status=0)
        doli = {"DOLAPIKEY": DolibarrStandin.API_KEY}
        pay = f"{dolibarr.url}/api/index.php/invoices/{invoice.id}/payments"
        body = {"datepaye": 1738281600, "paymentid": 2, "accountid": 1, "closepaidinvoices": "yes"}
        status, answer = await post(pay, body, doli)
        assert status == 400 and "draft" in answer["error"]["message"]
        status, answer = await post(pay, {**body, "datepaye": "2025-01-31"}, doli)
        assert "Expecting integer value" in answer["error"]["message"]
        status, answer = await post(pay, body, {})
        assert status == 401

        erpnext.add_invoice("SINV-1", "10.00", outstanding="0")
        frappe = {"Authorization": f"token {ErpNextStandin.API_KEY}:{ErpNextStandin.API_SECRET}"}
        status, answer = await post(
            f"{erpnext.url}/api/method/{ErpNextStandin.GET_PAYMENT_ENTRY}",
            {"dt": "Sales Invoice", "dn": "SINV-1"},
            frappe,
        )
        assert status == 417 and "unbilled" in answer["_server_messages"]
        status, answer = await post(f"{erpnext.url}/api/resource/Nope", {}, frappe)
        assert status == 404 and answer["exc_type"] == "DoesNotExistError"
    assert odoo.payments == dolibarr.payments == erpnext.entries == []
