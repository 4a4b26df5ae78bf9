"""erp: book the money in the ERP when it arrives -- Odoo, Dolibarr, ERPNext, or any REST API.

Conf (see docs/erp.md for every connector and option)::

    [channels.odoo_payments]
    type = "erp"
    connector = "odoo"                # odoo | dolibarr | erpnext | rest
    action = "register_payment"       # register_payment | flag_invoice | call
    url = "https://erp.example.com"
    [channels.odoo_payments.odoo]
    api = "json2"
    api_key = "${ODOO_API_KEY}"

    [[rules.book-payments.actions]]
    channel = "odoo_payments"

``register_payment`` finds the invoice named by ``refs.invoice_ref``, and books the
amount (integer minor units, converted with Decimal) under the provider's payment id,
after looking that id up: a redelivery never books twice. A refusal (invoice not found,
draft, cancelled, already paid, another currency) fails the delivery for good and raises
the internal event ``erp.sync_failed``; network errors, 5xx and the ERP's lock or
concurrency errors are retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway import Channel, hookimpl

from .booking import Booking
from .channel import NOTIFY, ErpChannel
from .config import (
    CallOptions,
    DolibarrOptions,
    ErpConfig,
    ErpNextOptions,
    EventFields,
    OdooOptions,
    RestOptions,
)
from .connector import Invoice, InvoiceState
from .money import exponent, from_minor, parse_erp_amount, to_minor


@hookimpl
def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
    return [ErpChannel]


__all__ = [
    "NOTIFY",
    "Booking",
    "CallOptions",
    "DolibarrOptions",
    "ErpChannel",
    "ErpConfig",
    "ErpNextOptions",
    "EventFields",
    "Invoice",
    "InvoiceState",
    "OdooOptions",
    "RestOptions",
    "exponent",
    "from_minor",
    "parse_erp_amount",
    "to_minor",
]
