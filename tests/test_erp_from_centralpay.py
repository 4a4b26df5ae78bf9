"""End to end, per ERP: CentralPay notifies, Tocsin confirms with CentralPay's API, the
ERP books the money once.

A payment request of 450.00 split in two shares is paid in two payments. Each
``PAYMENTREQUEST_TRANSACTION_SUCCEEDED`` notification is confirmed by fetching the request
from the CentralPay stand-in; the confirmed event (``payment_request.partially_paid``, then
``payment_request.paid``) reaches the ``erp`` channel, which books exactly that payment
(``data.payment_amount``, under the payment's own id) on the invoice in the ERP stand-in.
CentralPay retrying the last notification books nothing more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from .centralpay_standin import CentralPayApiStandin, payment_request
from .conftest import write_conf
from .erp_helpers import dolibarr_table, erpnext_table, odoo_table
from .erp_standins import DolibarrStandin, OdooStandin, serve

PR = "pr-7c1d2e3f"
BOOK = """
[rules.book]
events = ["payment_request.paid", "payment_request.partially_paid"]
[[rules.book.actions]]
channel = "erp"

[channels.erp.delivery]
retry_schedule = ["0s", "0s"]
jitter = 0
"""


def centralpay(api: CentralPayApiStandin) -> str:
    return f"""
    [sources.centralpay]
    type = "centralpay"
    verify = "fetch"
    [sources.centralpay.api]
    url = "{api.url}"
    login = "{api.LOGIN}"
    secret = "{api.SECRET}"
    timeout = "2s"
    """


@pytest.fixture
async def api() -> Any:
    standin = CentralPayApiStandin()
    async with serve(standin.app()) as root:
        standin.url = root + "/v2/rest"
        yield standin


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def pay_in_two(
    gw: Any, api: CentralPayApiStandin, invoice: str, booked: Callable[[], int], currency: str
) -> None:
    """The two payments, each notified once, the last one notified again (a retry)."""
    name = "PAYMENTREQUEST_TRANSACTION_SUCCEEDED"
    shares = (20000, 25000)
    for paid, expected in (((0,), 1), ((0, 1), 2)):
        state = payment_request(PR, invoice, 45000, shares=shares, paid_shares=paid)
        state["currency"] = currency
        api.put("paymentRequest", state)
        body = json.dumps({"type": name, "object": state}).encode()
        status, answer = await gw.post(
            body, path="/v1/sources/centralpay", headers={"Content-Type": "application/json"}
        )
        assert status == 202, answer
        await until(lambda n=expected: booked() >= n, f"payment {expected} booked")
    status, answer = await gw.post(
        body, path="/v1/sources/centralpay", headers={"Content-Type": "application/json"}
    )
    assert (status, answer["duplicate"]) == (200, True)
    await asyncio.sleep(0.5)


async def test_odoo_books_a_partial_then_the_full_payment_once(
    tmp_path, redis_url, api, odoo, start_gateway, monkeypatch
):
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    # Odoo 18+ without an outstanding account: the residual does not move until the bank
    # reconciles, so "still due" comes from the payments booked, not from the residual.
    odoo.add_invoice("INV/2026/00042", "450.00", outstanding_account=False)
    extra = centralpay(api) + odoo_table(odoo.url, "json2")
    conf = write_conf(tmp_path, redis_url=redis_url, rules=BOOK, extra=extra)
    gw = await start_gateway(conf)

    await pay_in_two(gw, api, "INV/2026/00042", lambda: len(odoo.payments), "EUR")

    assert [(p.amount, p.memo) for p in odoo.payments] == [
        (Decimal("200.00"), f"{PR}-tx0"),
        (Decimal("250.00"), f"{PR}-tx1"),
    ]


async def test_dolibarr_books_each_payment_in_the_invoice_currency_with_multicurrency(
    tmp_path, redis_url, api, start_gateway
):
    dolibarr = DolibarrStandin(multicurrency=True)
    async with serve(dolibarr.app()) as url:
        dolibarr.url = url
        # The invoice is in USD at 1.0837 USD per EUR; the payment request too.
        dolibarr.add_invoice("FA2611-0042", "450.00", "USD", multicurrency=True, rate="1.0837")
        extra = centralpay(api) + dolibarr_table(url)
        conf = write_conf(tmp_path, redis_url=redis_url, rules=BOOK, extra=extra)
        gw = await start_gateway(conf)

        await pay_in_two(gw, api, "FA2611-0042", lambda: len(dolibarr.payments), "USD")

        booked = [(p.multicurrency_amount, p.num) for p in dolibarr.payments]
        assert booked == [
            (Decimal("200.00"), f"{PR}-tx0"),
            (Decimal("250.00"), f"{PR}-tx1"),
        ], "each payment booked as itself, never the invoice's whole total"
        assert dolibarr.invoice("FA2611-0042").status == 2  # paid
        await gw.stop()


async def test_erpnext_books_a_partial_then_the_full_payment_once(
    tmp_path, redis_url, api, erpnext, start_gateway
):
    erpnext.add_invoice("ACC-SINV-2026-00042", "450.00")
    extra = centralpay(api) + erpnext_table(erpnext.url)
    conf = write_conf(tmp_path, redis_url=redis_url, rules=BOOK, extra=extra)
    gw = await start_gateway(conf)

    await pay_in_two(gw, api, "ACC-SINV-2026-00042", lambda: len(erpnext.entries), "EUR")

    assert [(e["paid_amount"], e["reference_no"]) for e in erpnext.entries] == [
        (200.0, f"{PR}-tx0"),
        (250.0, f"{PR}-tx1"),
    ]
    assert erpnext.invoices["ACC-SINV-2026-00042"].status == "Paid"
