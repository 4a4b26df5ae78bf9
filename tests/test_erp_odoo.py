"""The erp channel against the Odoo stand-in (tests/erp_standins/): real sockets, real conf."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from gateway import TransientError

from .conftest import make_event
from .erp_helpers import (
    delivery_of,
    odoo_table,
    paid_event,
    payment_event,
    refused,
)
from .erp_standins import (
    OdooStandin,
)

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
    # Odoo Accounting, a journal with an outstanding-receipts account: the payment's entry
    # awaits the bank statement, the residual is zero.
    odoo.in_payment = True
    odoo.add_invoice("INV/2025/00017", "80.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    await channel.send(delivery_of(payment_event("INV/2025/00017", 8000, "tx_1")))
    assert odoo.invoice("INV/2025/00017").payment_state == "in_payment"
    error = await refused(channel, delivery_of(payment_event("INV/2025/00017", 100, "tx_2")))
    assert "already paid (state posted, payment_state in_payment)" in error.reason


async def test_odoo_partial_then_full_on_a_journal_without_outstanding_account(
    odoo, odoo_api, make_channel
):
    """Odoo 18/19 with Accounting, a payment method without outstanding account: each
    payment stays in_process without a journal entry, amount_residual does not move until
    bank reconciliation, and the invoice reads in_payment after the first partial one."""
    odoo.in_payment = True
    odoo.add_invoice("INV/2025/00021", "120.00", outstanding_account=False)
    channel = await make_channel(odoo_table(odoo.url, odoo_api))
    invoice = odoo.invoice("INV/2025/00021")

    await channel.send(delivery_of(payment_event("INV/2025/00021", 5000, "tx_a")))
    assert invoice.payment_state == "in_payment" and invoice.amount_residual == Decimal("120")

    error = await refused(channel, delivery_of(payment_event("INV/2025/00021", 8000, "tx_x")))
    assert "exceeds what is left to pay on invoice INV/2025/00021 (70.00 EUR)" in error.reason
    assert error.details["invoice_residual"] == 7000

    outcome = await channel.send(delivery_of(payment_event("INV/2025/00021", 7000, "tx_b")))
    assert "booked 70.00 EUR on invoice INV/2025/00021" in outcome
    assert "120.00 EUR in payments without a journal entry yet, left to pay 0" in outcome
    assert [(p.memo, p.amount, p.state, p.entry_id) for p in odoo.payments] == [
        ("tx_a", Decimal("50.00"), "in_process", None),
        ("tx_b", Decimal("70.00"), "in_process", None),
    ]
    assert invoice.amount_residual == Decimal("120"), "Odoo's residual still has not moved"

    error = await refused(channel, delivery_of(payment_event("INV/2025/00021", 100, "tx_c")))
    assert "invoice INV/2025/00021 is already paid (state posted, payment_state in_payment; " in (
        error.reason
    )
    again = await channel.send(delivery_of(payment_event("INV/2025/00021", 7000, "tx_b")))
    assert "already has reference 'tx_b': nothing to do" in again
    assert len(odoo.payments) == 2


async def test_odoo_entry_less_payments_are_looked_up_only_when_in_payment(
    odoo, odoo_api, make_channel
):
    """A fresh invoice costs no extra call; one reading in_payment with a residual does."""
    odoo.in_payment = True
    odoo.add_invoice("INV/2025/00023", "90.00", outstanding_account=False)
    channel = await make_channel(odoo_table(odoo.url, odoo_api))

    await channel.send(delivery_of(payment_event("INV/2025/00023", 3000, "tx_a")))
    assert odoo.calls == [
        "account.move.search_read",
        "account.payment.search_read",
        "account.payment.register.create",
        "account.payment.register.action_create_payments",
        "account.move.read",
        "account.payment.search_read",  # read back: in_payment, 90.00 left in the residual
    ]
    odoo.calls.clear()
    await channel.send(delivery_of(payment_event("INV/2025/00023", 6000, "tx_b")))
    assert odoo.calls[:2] == ["account.move.search_read", "account.payment.search_read"]
    assert odoo.calls.count("account.payment.search_read") == 3


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


async def test_odoo_a_wrong_field_fails_for_good_although_json2_answers_500(
    odoo, odoo_api, make_channel
):
    """On Odoo 18 ``account.payment`` has no ``ref``: a conf mistake, not an outage. JSON-2
    answers it with HTTP 500 (a ValueError is no UserError), JSON-RPC inside a 200."""
    odoo.add_invoice("INV/2025/00019", "80.00")
    table = odoo_table(odoo.url, odoo_api).replace("journal_id = 7", 'reference_field = "ref"')
    channel = await make_channel(table)

    error = await refused(channel, delivery_of(payment_event("INV/2025/00019", 8000, "tx_1")))
    assert "builtins.ValueError: Invalid field account.payment.ref" in error.reason
    if odoo_api == "json2":
        assert "HTTP 500" in error.reason and error.status == 500
    assert odoo.payments == []


async def test_odoo_a_500_that_is_not_odoos_is_retried(odoo, odoo_api, make_channel):
    """A proxy's HTML 500 page says nothing about the request: transient, as any 5xx."""
    odoo.add_invoice("INV/2025/00022", "80.00")
    channel = await make_channel(odoo_table(odoo.url, odoo_api))
    delivery = delivery_of(payment_event("INV/2025/00022", 8000, "tx_1"))

    odoo.faults.proxy_500 = 1
    with pytest.raises(TransientError, match="HTTP 500"):
        await channel.send(delivery)
    await channel.send(delivery)
    assert [p.memo for p in odoo.payments] == ["tx_1"]


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
        "2. if it reads in payment with something left: its payments without a journal entry "
        "(not in amount_residual)",
        "3. look for this payment (found: nothing to do)",
        "4. register the payment",
        "5. confirm it",
        "6. read the invoice back",
    ]
    assert parts[list(parts)[3]].startswith(
        'POST /json/2/account.payment/search_read {"domain":[["invoice_ids","in",["<invoice id>"]],'
        '["move_id","=",false],["state","in",["in_process","paid"]]'
    )
    assert parts["4. register the payment"].startswith(
        "POST /json/2/account.payment.register/create "
        '{"vals_list":[{"payment_date":"2025-02-01","amount":120.00,"communication":"pr_77"'
    )
    assert OdooStandin.API_KEY not in json.dumps(parts)


# -- the stand-in refuses what the real system refuses -----------------------------------------


async def test_the_stand_in_refuses_like_odoo(odoo):
    odoo.add_invoice("INV/DRAFT", "10.00", state="draft")
    paid = odoo.add_invoice("INV/PAID", "10.00", residual="0")
    key = {"Authorization": f"bearer {OdooStandin.API_KEY}"}
    context = {"active_model": "account.move", "active_ids": [paid.id]}
    async with aiohttp.ClientSession() as http:

        async def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        status, answer = await post(f"{odoo.url}/json/2/res.partner/search_read", {}, key)
        assert (status, answer["name"]) == (404, "werkzeug.exceptions.NotFound")
        assert answer["message"] == "the model 'res.partner' does not exist"
        status, answer = await post(f"{odoo.url}/json/2/account.move/unlink", {"ids": [1]}, key)
        assert status == 404 and "does not exist" in answer["message"]
        status, answer = await post(
            f"{odoo.url}/json/2/account.move/search_read", {"domain": [["nope", "=", 1]]}, key
        )
        assert (status, answer["name"]) == (500, "builtins.ValueError")
        status, answer = await post(
            f"{odoo.url}/json/2/account.move/search_read", {"domain": [], "nope": 1}, key
        )
        assert (status, answer["name"]) == (422, "werkzeug.exceptions.UnprocessableEntity")
        wizard = f"{odoo.url}/json/2/account.payment.register/create"
        status, answer = await post(wizard, {"vals_list": [{}], "context": context}, key)
        assert (status, answer["name"]) == (422, "odoo.exceptions.UserError")
        assert "nothing left to pay" in answer["message"]
        bad_type = {"vals_list": [{"journal_id": "7"}], "context": context}
        paid.amount_residual = Decimal("4.00")  # what default_get looks at, not payment_state
        status, answer = await post(wizard, bad_type, key)
        assert status == 500
        assert "Wrong value for account.payment.register.journal_id" in answer["message"]
        status, answer = await post(wizard, {"vals_list": [{}], "context": context}, key)
        assert status == 200, "paid or in_payment, a residual still takes a payment"
        context["active_ids"] = [odoo.invoice("INV/DRAFT").id]
        status, answer = await post(wizard, {"vals_list": [{}], "context": context}, key)
        assert status == 200, "Odoo 18 registers payments on drafts too"
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
    assert odoo.payments == []


async def test_the_stand_in_keeps_entry_less_payments_out_of_the_residual(odoo):
    """What Odoo 18 does on a journal without outstanding account, through the wizard."""
    odoo.in_payment = True
    invoice = odoo.add_invoice("INV/X", "100.00", outstanding_account=False)
    key = {"Authorization": f"bearer {OdooStandin.API_KEY}"}
    context = {"active_model": "account.move", "active_ids": [invoice.id]}
    async with aiohttp.ClientSession() as http:

        async def call(method: str, body: dict[str, Any]) -> Any:
            url = f"{odoo.url}/json/2/account.payment.register/{method}"
            async with http.post(url, json={**body, "context": context}, headers=key) as answer:
                assert answer.status == 200, await answer.text()
                return await answer.json()

        for amount in (40, 80):  # the second goes over: Odoo does not mind
            [wizard] = await call("create", {"vals_list": [{"amount": amount}]})
            await call("action_create_payments", {"ids": [wizard]})
            assert invoice.payment_state == "in_payment"
            assert invoice.amount_residual == Decimal("100.00")
        [wizard] = await call("create", {"vals_list": [{}]})
        await call("action_create_payments", {"ids": [wizard]})
    assert [p.amount for p in odoo.payments] == [40, 80, Decimal("100.00")], (
        "the default amount is the residual, in-process payments not subtracted"
    )
    assert {p.state for p in odoo.payments} == {"in_process"}
