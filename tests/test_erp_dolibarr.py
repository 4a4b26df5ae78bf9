"""The erp channel against the Dolibarr stand-in (tests/erp_standins/): real sockets, real conf."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

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


# -- the stand-in refuses what the real system refuses -----------------------------------------


async def test_the_stand_in_refuses_like_dolibarr(dolibarr):
    async with aiohttp.ClientSession() as http:

        async def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

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
    assert dolibarr.payments == []
