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


# -- the stand-in refuses what the real system refuses -----------------------------------------


async def test_the_stand_in_refuses_like_erpnext(erpnext):
    async with aiohttp.ClientSession() as http:

        async def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)

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
    assert erpnext.entries == []
