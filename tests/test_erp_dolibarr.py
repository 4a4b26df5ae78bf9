"""The erp channel against the Dolibarr stand-in (tests/erp_standins/): real sockets, real conf."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway import TransientError

from .erp_helpers import (
    delivery_of,
    dolibarr_table,
    overdue_event,
    paid_event,
    payment_event,
    refused,
)
from .erp_standins import (
    DolibarrStandin,
    serve,
)

# -- Dolibarr ---------------------------------------------------------------------------------

DISTRIBUTED = "POST /api/index.php/invoices/paymentsdistributed"


def usd_event(ref: str, minor: int, payment_id: str) -> dict[str, Any]:
    event = payment_event(ref, minor, payment_id)
    event["data"]["currency"] = "USD"
    return event


async def test_dolibarr_books_the_explicit_amount_through_payments_distributed(
    dolibarr, make_channel
):
    invoice = dolibarr.add_invoice("FA2501-0042", "120.00")
    channel = await make_channel(dolibarr_table(dolibarr.url))
    event = paid_event("FA2501-0042", 12000)

    await channel.send(delivery_of(event))

    assert invoice.status == 2 and invoice.remain == 0
    [payment] = dolibarr.payments
    assert (payment.num, payment.amount, payment.paymentid, payment.accountid) == (
        "pr_77",
        Decimal("120.00"),
        2,
        1,
    )
    # Never the endpoint that books multicurrency_total_ttc (Dolibarr issue #32295).
    assert DISTRIBUTED in dolibarr.calls
    assert f"POST /api/index.php/invoices/{invoice.id}/payments" not in dolibarr.calls
    # datepaye is declared a string: the epoch goes as one, and is the payment's date.
    body = dolibarr.bodies[-1]
    assert body["arrayofamounts"] == {
        str(invoice.id): {"amount": "120.00", "multicurrency_amount": ""}
    }
    assert isinstance(body["datepaye"], str)
    paid_on = datetime.fromtimestamp(payment.datepaye, ZoneInfo("Europe/Paris"))
    # paid_at 2025-01-31T23:30Z is February 1st in the ERP's time zone; noon of that day.
    assert (paid_on.date().isoformat(), paid_on.hour) == ("2025-02-01", 12)


@pytest.mark.parametrize("multicurrency", [False, True], ids=["module off", "MultiCurrency on"])
async def test_dolibarr_partial_then_full_payment_books_each_amount(multicurrency, make_channel):
    # With MultiCurrency on, POST /invoices/{id}/payments would have booked 120.00 twice.
    standin = DolibarrStandin(multicurrency=multicurrency)
    async with serve(standin.app()) as url:
        standin.url = url
        invoice = standin.add_invoice("FA2501-0043", "120.00")
        channel = await make_channel(dolibarr_table(url))

        await channel.send(delivery_of(payment_event("FA2501-0043", 5000, "tx_a")))
        assert invoice.status == 1 and invoice.remain == Decimal("70.00")
        await channel.send(delivery_of(payment_event("FA2501-0043", 7000, "tx_b")))

    assert [(p.num, p.amount) for p in standin.payments] == [
        ("tx_a", Decimal("50.00")),
        ("tx_b", Decimal("70.00")),
    ]
    assert invoice.status == 2 and invoice.paid == Decimal("120.00")
    assert standin.calls.count(DISTRIBUTED) == 2


async def test_dolibarr_multicurrency_invoice_books_the_payment_in_both_currencies(make_channel):
    # Company in EUR; the invoice in USD at multicurrency_tx 1.0837: 100.00 USD = 92.28 EUR.
    standin = DolibarrStandin(multicurrency=True)
    async with serve(standin.app()) as url:
        standin.url = url
        invoice = standin.add_invoice("FA-US-1", "100.00", "USD", rate="1.0837")
        channel = await make_channel(dolibarr_table(url))

        await channel.send(delivery_of(usd_event("FA-US-1", 3333, "tx_u1")))
        assert invoice.status == 1 and invoice.remain_mc == Decimal("66.67")
        # One cent over what is left in USD: the connector's estimate lets it through,
        # Dolibarr refuses it, nothing is booked.
        error = await refused(channel, delivery_of(usd_event("FA-US-1", 6668, "tx_u2")))
        assert "is higher than remain to pay (66.67)" in error.reason
        # Exactly what is left settles it, despite the EUR rounding of the first payment.
        await channel.send(delivery_of(usd_event("FA-US-1", 6667, "tx_u3")))

    first, last = standin.payments
    assert (first.multicurrency_amount, first.amount) == (Decimal("33.33"), Decimal("30.76"))
    assert (last.multicurrency_amount, last.amount) == (Decimal("66.67"), Decimal("61.52"))
    assert invoice.paid_mc == invoice.mc_total_ttc and invoice.status == 2
    assert standin.bodies[-1]["arrayofamounts"] == {
        str(invoice.id): {"amount": "", "multicurrency_amount": "66.67"}
    }


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("12.0.5", "predates 13.0; this connector needs Dolibarr 13 or later"),
        ("20.0.0", "cannot read any payment date"),
        ("20.0.1", "upgrade to 20.0.2 or later"),
    ],
)
async def test_dolibarr_versions_with_another_payment_api_are_refused(version, says, make_channel):
    standin = DolibarrStandin(version=version)
    async with serve(standin.app()) as url:
        standin.add_invoice("FA-OLD", "10.00")
        channel = await make_channel(dolibarr_table(url))
        error = await refused(channel, delivery_of(payment_event("FA-OLD", 1000, "tx_o")))
    assert f"dolibarr {version}: " in error.reason and says in error.reason
    assert standin.payments == [] and DISTRIBUTED not in standin.calls


async def test_dolibarr_reads_the_version_once(make_channel):
    standin = DolibarrStandin(version="20.0.2")
    async with serve(standin.app()) as url:
        standin.add_invoice("FA-V1", "10.00")
        standin.add_invoice("FA-V2", "10.00")
        channel = await make_channel(dolibarr_table(url))
        await channel.send(delivery_of(payment_event("FA-V1", 1000, "tx_v1")))
        await channel.send(delivery_of(payment_event("FA-V2", 1000, "tx_v2")))
    assert standin.calls.count("GET /api/index.php/status") == 1
    assert len(standin.payments) == 2


async def test_dolibarr_refusals(dolibarr, make_channel):
    dolibarr.add_invoice("FA-PAID", "50.00", status=2, paid="50.00")
    dolibarr.add_invoice("FA-DRAFT", "50.00", status=0)
    dolibarr.add_invoice("FA-GONE", "50.00", status=3)
    dolibarr.add_invoice("FA-USD", "50.00", "USD", multicurrency=True, rate="1.1")
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
    assert "currency mismatch: the payment is in EUR, invoice FA-USD in USD" in error.reason
    error = await refused(channel, delivery_of(usd_event("FA-USD", 5001, "tx_6")))
    assert "exceeds what is left to pay on invoice FA-USD (50.00 USD)" in error.reason
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


# -- the stand-in refuses what the real system refuses -----------------------------------------


async def test_the_stand_in_answers_like_dolibarr():
    standin = DolibarrStandin(multicurrency=True)
    async with serve(standin.app()) as url, aiohttp.ClientSession() as http:

        async def post(path: str, body: Any, key: str = DolibarrStandin.API_KEY) -> tuple[int, Any]:
            headers = {"DOLAPIKEY": key} if key else {}
            async with http.post(f"{url}/api/index.php{path}", json=body, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        def said(answer: Any) -> str:
            return str(answer["error"]["message"]) if isinstance(answer, dict) else ""

        invoice = standin.add_invoice("FA-1", "120.00", paid="50.00")
        common = {"paymentid": 2, "accountid": 1, "closepaidinvoices": "yes"}
        distributed = "/invoices/paymentsdistributed"

        def amounts(amount: str, mc_amount: str = "") -> dict[str, Any]:
            return {str(invoice.id): {"amount": amount, "multicurrency_amount": mc_amount}}

        # Restler: `datepaye` is a string; a number is trimmed into one, an object is not.
        body = {**common, "arrayofamounts": amounts("10.00"), "datepaye": {"d": 1}}
        status, answer = await post(distributed, body)
        assert status == 400 and said(answer) == (
            "Bad Request: Invalid value specified for `datepaye`. Expecting alpha numeric value"
        )
        status, answer = await post(distributed, {**body, "datepaye": None})
        assert said(answer) == "Bad Request: `datepaye` is required."
        status, answer = await post(distributed, {**body, "datepaye": 1738324800})
        assert status == 200 and standin.payments[-1].amount == Decimal("10.00")
        status, answer = await post(distributed, {**body, "datepaye": "1738324800"})
        assert status == 200 and standin.payments[-1].datepaye == 1738324800
        # `paymentid` is an int {@min 1}: numeric strings pass, words and 0 do not.
        dated = {**body, "datepaye": "1738324800"}
        status, answer = await post(distributed, {**dated, "paymentid": "abc"})
        assert said(answer).endswith("`paymentid`. Expecting integer value")
        status, answer = await post(distributed, {**dated, "paymentid": 0})
        assert said(answer).endswith("`paymentid`. Minimum required value is 1.")
        status, answer = await post(distributed, {**dated, "closepaidinvoices": "maybe"})
        assert said(answer).endswith("Expected one of (yes,no).")
        # Both currencies at once, or more than is left (in the currency given): refused.
        status, answer = await post(distributed, {**dated, "arrayofamounts": amounts("5", "5")})
        assert status == 400 and "Payment in both currency" in said(answer)
        status, answer = await post(distributed, {**dated, "arrayofamounts": amounts("50.01")})
        assert said(answer).endswith("(50.01) is higher than remain to pay (50.00)")
        assert invoice.remain == Decimal("50.00")

        # POST /invoices/{id}/payments with MultiCurrency on books multicurrency_total_ttc,
        # the whole invoice, although 70.00 of it is paid (Dolibarr issue #32295).
        status, answer = await post(f"/invoices/{invoice.id}/payments", dated)
        assert status == 200 and standin.payments[-1].amount == Decimal("120.00")
        assert invoice.paid == Decimal("190.00")

        # MultiCurrency off: a multicurrency amount alone books nothing.
        standin.multicurrency = False
        other = standin.add_invoice("FA-2", "10.00")
        body = {
            **dated,
            "arrayofamounts": {str(other.id): {"amount": "", "multicurrency_amount": "5"}},
        }
        status, answer = await post(distributed, body)
        assert status == 400 and said(answer) == "Bad Request: Payment error : TotalAmountEmpty"

        status, answer = await post(distributed, dated, key="")
        assert status == 401
        status, answer = await post("/invoices/status", {}, key="wrong")
        assert status == 401 and said(answer) == "Unauthorized: Access denied"
    assert other.paid == 0
