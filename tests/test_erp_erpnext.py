"""The erp channel against the ERPNext stand-in (tests/erp_standins/): real sockets, real conf."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from gateway import TransientError

from .erp_helpers import (
    delivery_of,
    erpnext_table,
    overdue_event,
    paid_event,
    payment_event,
    refused,
)
from .erp_standins import (
    ErpNextStandin,
)

FRAPPE = {"Authorization": f"token {ErpNextStandin.API_KEY}:{ErpNextStandin.API_SECRET}"}


def with_options(url: str, options: str) -> str:
    """``erpnext_table`` with other ``mode_of_payment`` / ``paid_to`` lines."""
    return erpnext_table(url).replace('mode_of_payment = "Wire Transfer"', options)


def rows(entry: dict[str, Any]) -> list[tuple[str | None, float]]:
    return [(r.get("payment_term"), r["allocated_amount"]) for r in entry["references"]]


# -- ERPNext ----------------------------------------------------------------------------------


async def test_erpnext_partial_payments_then_the_rest(erpnext, make_channel):
    erpnext.add_invoice("ACC-SINV-2025-00012", "120.00")
    channel = await make_channel(erpnext_table(erpnext.url))
    invoice = erpnext.invoices["ACC-SINV-2025-00012"]

    await channel.send(delivery_of(payment_event("ACC-SINV-2025-00012", 5000, "tx_a")))
    assert invoice.status == "Partly Paid" and invoice.outstanding == Decimal("70.00")
    # A second partial payment: the row must carry the invoice's outstanding amount, not
    # the payment's, or ERPNext says the invoice "has already been partly paid".
    await channel.send(delivery_of(payment_event("ACC-SINV-2025-00012", 3000, "tx_b")))
    await channel.send(delivery_of(payment_event("ACC-SINV-2025-00012", 4000, "tx_c")))
    assert invoice.status == "Paid" and invoice.outstanding == 0

    first, second, third = erpnext.entries
    assert (first["reference_no"], first["paid_amount"], first["docstatus"]) == ("tx_a", 50.0, 1)
    assert rows(first) == [(None, 50.0)] and rows(third) == [(None, 40.0)]
    assert second["references"][0]["outstanding_amount"] == 70.0
    # The mode of payment's account for the company, not the company's default bank.
    assert (first["mode_of_payment"], first["paid_to"]) == ("Wire Transfer", "Bank - AC")
    assert first["custom_remarks"] == 1 and first["remarks"].startswith("test tx_a (payment.")
    assert not any(key.startswith("__") for key in first), "an unsaved doc's keys stay home"


async def test_erpnext_mode_of_payment_chooses_the_account(erpnext, make_channel):
    erpnext.add_invoice("SINV-CARD", "30.00")
    card = await make_channel(with_options(erpnext.url, 'mode_of_payment = "Credit Card"'))
    await card.send(delivery_of(payment_event("SINV-CARD", 1000, "tx_card")))
    [entry] = erpnext.entries
    assert (entry["mode_of_payment"], entry["paid_to"]) == ("Credit Card", "Card Clearing - AC")

    # paid_to wins over the mode of payment's account.
    both = 'mode_of_payment = "Credit Card"\npaid_to = "Cash - AC"'
    cash = await make_channel(with_options(erpnext.url, both))
    await cash.send(delivery_of(payment_event("SINV-CARD", 1000, "tx_cash")))
    assert erpnext.entries[-1]["paid_to"] == "Cash - AC"

    cheque = await make_channel(with_options(erpnext.url, 'mode_of_payment = "Cheque"'))
    error = await refused(cheque, delivery_of(payment_event("SINV-CARD", 1000, "tx_cheque")))
    assert "Please set default Cash or Bank account in Mode of Payment Cheque" in error.reason
    assert len(erpnext.entries) == 2


async def test_erpnext_payment_terms_are_allocated_in_order(erpnext, make_channel):
    erpnext.add_invoice(
        "SINV-TERMS", "120.00", payment_terms=[("Deposit 30%", "36.00"), ("Balance", "84.00")]
    )
    channel = await make_channel(erpnext_table(erpnext.url))

    await channel.send(delivery_of(payment_event("SINV-TERMS", 5000, "tx_1")))
    await channel.send(delivery_of(payment_event("SINV-TERMS", 7000, "tx_2")))

    first, second = erpnext.entries
    assert rows(first) == [("Deposit 30%", 36.0), ("Balance", 14.0)]
    assert rows(second) == [("Balance", 70.0)]
    invoice = erpnext.invoices["SINV-TERMS"]
    assert invoice.status == "Paid" and [t.paid for t in invoice.payment_schedule] == [36, 84]


async def test_erpnext_invoice_in_a_foreign_currency(erpnext, make_channel):
    # Booked in a USD receivable: everything in USD, into a USD bank account.
    erpnext.add_invoice("SINV-USD", "200.00", "USD", conversion_rate="0.92")
    usd = await make_channel(with_options(erpnext.url, 'mode_of_payment = "Wire Transfer USD"'))
    await usd.send(delivery_of(payment_event("SINV-USD", 20000, "tx_usd", "USD")))
    entry = erpnext.entries[-1]
    assert (entry["paid_to"], entry["paid_amount"], entry["received_amount"]) == (
        "Bank USD - AC",
        200.0,
        200.0,
    )
    assert erpnext.invoices["SINV-USD"].status == "Paid"

    # Booked in the company's EUR receivable: paid_amount in EUR (times conversion_rate),
    # received_amount in USD, and payment terms converted too.
    erpnext.add_invoice(
        "SINV-USD-EUR",
        "100.00",
        "USD",
        conversion_rate="0.9",
        party_account_currency="EUR",
        payment_terms=[("Deposit", "30.00"), ("Balance", "70.00")],
    )
    invoice = erpnext.invoices["SINV-USD-EUR"]
    assert invoice.outstanding == Decimal("90.00")
    await usd.send(delivery_of(payment_event("SINV-USD-EUR", 4000, "tx_usd_1", "USD")))
    entry = erpnext.entries[-1]
    assert (entry["paid_amount"], entry["received_amount"]) == (36.0, 40.0)
    assert (entry["paid_from_account_currency"], entry["paid_to_account_currency"]) == (
        "EUR",
        "USD",
    )
    assert rows(entry) == [("Deposit", 27.0), ("Balance", 9.0)]
    await usd.send(delivery_of(payment_event("SINV-USD-EUR", 6000, "tx_usd_2", "USD")))
    assert rows(erpnext.entries[-1]) == [("Balance", 54.0)]
    assert invoice.status == "Paid"


async def test_erpnext_currency_mismatches_name_both_currencies(erpnext, make_channel):
    erpnext.add_invoice("SINV-USD", "50.00", "USD")
    eur_bank = await make_channel(erpnext_table(erpnext.url))  # Wire Transfer: Bank - AC, EUR

    error = await refused(eur_bank, delivery_of(payment_event("SINV-USD", 5000, "tx_1", "USD")))
    assert error.reason == (
        "currency mismatch: the payment is in USD, the bank account Bank - AC in EUR: set "
        "paid_to (or the mode of payment's account) to a USD account"
    )
    error = await refused(eur_bank, delivery_of(payment_event("SINV-USD", 5000, "tx_2")))
    assert error.reason == "currency mismatch: the payment is in EUR, invoice SINV-USD in USD"
    assert erpnext.entries == []


async def test_erpnext_refusals(erpnext, make_channel):
    erpnext.add_invoice("SINV-DRAFT", "10.00", docstatus=0)
    erpnext.add_invoice("SINV-CANCELLED", "10.00", docstatus=2)
    erpnext.add_invoice("SINV-PAID", "10.00", outstanding="0")
    erpnext.add_invoice("SINV-GBP", "10.00", "GBP")
    erpnext.add_invoice("SINV-SMALL", "10.00")
    channel = await make_channel(erpnext_table(erpnext.url))

    for ref, amount, expected in [
        ("SINV-DRAFT", 1000, "invoice SINV-DRAFT is a draft (docstatus 0, status Draft)"),
        ("SINV-CANCELLED", 1000, "invoice SINV-CANCELLED is cancelled"),
        ("SINV-PAID", 1000, "invoice SINV-PAID is already paid (docstatus 1, status Paid)"),
        ("SINV-GBP", 1000, "currency mismatch: the payment is in EUR, invoice SINV-GBP in GBP"),
        ("SINV-SMALL", 1001, "exceeds what is left to pay on invoice SINV-SMALL (10.00 EUR)"),
        ("SINV-NONE", 1000, "invoice SINV-NONE not found in erpnext"),
    ]:
        error = await refused(channel, delivery_of(payment_event(ref, amount, f"tx_{ref}")))
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


async def test_erpnext_bad_secret_and_flag_invoice_as_an_accounts_user(erpnext, make_channel):
    erpnext.add_invoice("ACC-SINV-2025-00014", "42.00")
    wrong = await make_channel(erpnext_table(erpnext.url, secret="wrong"))
    error = await refused(wrong, delivery_of(paid_event("ACC-SINV-2025-00014", 4200)))
    assert "HTTP 401" in error.reason and "AuthenticationError" in error.reason

    templates = {"overdue/erp.j2": "En retard : {{ refs.invoice_ref }} & <relance>"}
    channel = await make_channel(
        erpnext_table(erpnext.url, action="flag_invoice"), templates=templates
    )
    event = overdue_event("ACC-SINV-2025-00014")
    delivery = delivery_of(event, rule="overdue", template="overdue")
    await channel.send(delivery)
    await channel.send(delivery)  # found again through get_docinfo: added once
    [comment] = erpnext.comments
    # Frappe keeps comments as HTML: the text is escaped, the marker is left as it is.
    text = f"En retard : ACC-SINV-2025-00014 &amp; &lt;relance&gt;\n[tocsin {delivery.id}]"
    assert (comment["content"], comment["comment_type"]) == (text, "Comment")
    assert comment["reference_name"] == "ACC-SINV-2025-00014"
    assert all("/api/resource/Comment" not in call for call in erpnext.calls)


async def test_erpnext_preview_lists_the_calls_and_sends_nothing(erpnext, make_channel):
    channel = await make_channel(erpnext_table(erpnext.url))
    parts = channel.preview(delivery_of(payment_event("SINV-1", 1250, "tx_1")))
    assert (
        "mode_of_payment=Wire%20Transfer&company=<the invoice's company>"
        in parts["3. find the mode of payment's account"]
    )
    assert '"custom_remarks":1' in parts["5. insert and submit it"]
    assert erpnext.calls == []


# -- the stand-in refuses what the real system refuses -----------------------------------------


async def test_the_stand_in_refuses_like_erpnext(erpnext):
    async with aiohttp.ClientSession() as http:

        async def call(verb: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(verb, erpnext.url + path, json=body, headers=FRAPPE) as r:
                return r.status, await r.json(content_type=None)

        method = f"/api/method/{ErpNextStandin.GET_PAYMENT_ENTRY}"
        # A paid invoice: get_payment_entry makes a "Pay" entry, which cannot be inserted.
        erpnext.add_invoice("SINV-1", "10.00", outstanding="0")
        status, answer = await call("POST", method, {"dt": "Sales Invoice", "dn": "SINV-1"})
        assert status == 200 and answer["message"]["payment_type"] == "Pay"
        status, answer = await call("POST", "/api/resource/Payment Entry", answer["message"])
        assert status == 417 and "Paid Amount is mandatory" in answer["_server_messages"]

        # Terms: each row is capped by its term; remarks are rebuilt without custom_remarks.
        erpnext.add_invoice("SINV-2", "100.00", payment_terms=[("A", "40.00"), ("B", "60.00")])
        status, answer = await call("POST", method, {"dt": "Sales Invoice", "dn": "SINV-2"})
        entry = answer["message"]
        assert [r["allocated_amount"] for r in entry["references"]] == [40.0, 60.0]
        entry.update(reference_no="x", reference_date="2025-02-01", remarks="mine", docstatus=1)
        entry["references"] = [{**entry["references"][0], "allocated_amount": 50.0}]
        status, answer = await call("POST", "/api/resource/Payment Entry", entry)
        assert status == 417 and "greater than outstanding amount:40" in answer["_server_messages"]
        entry["references"] = [{**entry["references"][0], "allocated_amount": 40.0}]
        entry["paid_amount"] = entry["received_amount"] = 40.0
        status, answer = await call("POST", "/api/resource/Payment Entry", entry)
        assert status == 200 and answer["data"]["remarks"].startswith("Amount EUR 40.0 received")

        # Comments: an Accounts User has no Comment permission; add_comment is POST only and
        # takes five arguments.
        note = {"reference_doctype": "Sales Invoice", "reference_name": "SINV-2", "content": "x"}
        status, answer = await call("POST", "/api/resource/Comment", note)
        assert status == 403 and answer["exc_type"] == "PermissionError"
        status, answer = await call("GET", "/api/resource/Comment")
        assert status == 403
        add = f"/api/method/{ErpNextStandin.ADD_COMMENT}"
        status, answer = await call("POST", add, note)
        assert status == 500 and answer["exc_type"] == "TypeError"
        status, answer = await call("GET", add + "?reference_doctype=Sales%20Invoice")
        assert status == 403
        status, answer = await call("POST", "/api/resource/Nope", {})
        assert status == 404 and answer["exc_type"] == "DoesNotExistError"
    assert erpnext.comments == []
    assert [e["name"] for e in erpnext.entries] == [erpnext.entries[0]["name"]]
