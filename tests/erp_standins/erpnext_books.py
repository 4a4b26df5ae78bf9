"""The ERPNext stand-in's books: invoices, accounts, modes of payment, and the checks a
Payment Entry must pass on insert (evidence: see the docstring of ``erpnext.py``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aiohttp import web

from .common import _iso_date, _money, _number

COMPANY = "Acme SAS"
COMPANY_CURRENCY = "EUR"


def _frappe_error(status: int, exc_type: str, message: str) -> web.Response:
    """Frappe's error answer; the status is the exception's ``http_status_code`` (417 for
    ValidationError and its subclasses, 403 PermissionError, 404 DoesNotExistError),
    500 for an exception without one (frappe/frappe frappe/app.py handle_exception)."""
    return web.json_response(
        {
            "exc_type": exc_type,
            "exception": f"frappe.exceptions.{exc_type}: {message}",
            "_server_messages": json.dumps([json.dumps({"message": message})]),
        },
        status=status,
    )


def _invalid(message: str) -> web.Response:
    return _frappe_error(417, "ValidationError", message)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


@dataclass
class PaymentTerm:
    """A row of the invoice's payment schedule, in the invoice's currency."""

    term: str
    amount: Decimal
    paid: Decimal = Decimal(0)


@dataclass
class SalesInvoice:
    name: str
    customer: str
    currency: str
    grand_total: Decimal
    #: In the receivable account's currency, like ERPNext's ``outstanding_amount``.
    outstanding: Decimal
    docstatus: int = 1
    is_return: int = 0
    conversion_rate: Decimal = Decimal(1)
    party_account_currency: str = COMPANY_CURRENCY
    company: str = COMPANY
    payment_schedule: list[PaymentTerm] = field(default_factory=list)

    @property
    def debit_to(self) -> str:
        cur = self.party_account_currency
        return "Debtors - AC" if cur == COMPANY_CURRENCY else f"Debtors {cur} - AC"

    @property
    def factor(self) -> Decimal:
        """Invoice currency -> receivable currency."""
        return Decimal(1) if self.party_account_currency == self.currency else self.conversion_rate

    @property
    def party_total(self) -> Decimal:
        return _cents(self.grand_total * self.factor)

    @property
    def status(self) -> str:
        if self.docstatus == 0:
            return "Draft"
        if self.docstatus == 2:
            return "Cancelled"
        if self.is_return:
            return "Return"
        if self.outstanding <= 0:
            return "Paid"
        return "Partly Paid" if self.outstanding < self.party_total else "Unpaid"

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "doctype": "Sales Invoice",
            "customer": self.customer,
            "company": self.company,
            "currency": self.currency,
            "conversion_rate": float(self.conversion_rate),
            "party_account_currency": self.party_account_currency,
            "debit_to": self.debit_to,
            "grand_total": _money(self.grand_total),
            "outstanding_amount": _money(self.outstanding),
            "docstatus": self.docstatus,
            "status": self.status,
            "is_return": self.is_return,
            "payment_terms_template": "Terms" if self.payment_schedule else None,
        }


#: Account -> (currency, account type).
ACCOUNTS: dict[str, tuple[str, str]] = {
    "Debtors - AC": ("EUR", "Receivable"),
    "Debtors USD - AC": ("USD", "Receivable"),
    "Bank - AC": ("EUR", "Bank"),
    "Bank USD - AC": ("USD", "Bank"),
    "Card Clearing - AC": ("EUR", "Bank"),
    "Cash - AC": ("EUR", "Cash"),
}
DEFAULT_BANK = "Bank - AC"
#: Mode of Payment -> its Mode of Payment Account for COMPANY (None: no row).
MODES: dict[str, str | None] = {
    "Wire Transfer": "Bank - AC",
    "Wire Transfer USD": "Bank USD - AC",
    "Credit Card": "Card Clearing - AC",
    "Cheque": None,
}


def validate_entry(body: dict[str, Any], invoices: dict[str, SalesInvoice]) -> web.Response | None:
    """PaymentEntry.validate and on_submit, in their order; ``None`` when accepted."""
    docstatus = body.get("docstatus", 0)
    if docstatus not in (0, 1):
        return _invalid("docstatus must be 0 or 1 on insert")
    labels = {
        "paid_amount": "Paid Amount",
        "received_amount": "Received Amount",
        "source_exchange_rate": "Exchange Rate",
        "target_exchange_rate": "Exchange Rate",
    }
    numbers: dict[str, Decimal] = {}
    for key, label in labels.items():
        number = _number(body.get(key))
        if not number:
            return _invalid(f"{label} is mandatory")
        numbers[key] = number
    for name in ("posting_date", "reference_date"):
        if body.get(name) is not None and _iso_date(body[name]) is None:
            return _invalid(f"{name}: {body[name]!r} is not a date")
    paid_to = body.get("paid_to")
    if paid_to not in ACCOUNTS:
        return _frappe_error(
            417, "LinkValidationError", f"Could not find Account Paid To: {paid_to}"
        )
    mode = body.get("mode_of_payment")
    if mode is not None and mode not in MODES:
        return _frappe_error(417, "LinkValidationError", f"Could not find Mode of Payment: {mode}")
    references = body.get("references")
    if not isinstance(references, list):
        return _invalid("references must be a list")
    for i, ref in enumerate(references, 1):
        invoice = invoices.get(str(ref.get("reference_name")))
        if invoice is None or _number(ref.get("allocated_amount")) is None:
            return _invalid(f"Row #{i}: invalid reference")
        if invoice.docstatus != 1:
            return _invalid(f"Sales Invoice {invoice.name} must be submitted")
        if body.get("paid_from") != invoice.debit_to:
            return _invalid(
                f"Sales Invoice {invoice.name} is associated with {invoice.debit_to}, but "
                f"Party Account is {body.get('paid_from')}"
            )
    if body.get("payment_type") == "Pay" and body.get("party_type") == "Customer":
        return _frappe_error(
            417,
            "InvalidPaymentEntry",
            "Cannot Pay to Customer without any negative outstanding invoice",
        )
    if ACCOUNTS[paid_to][1] == "Bank" and not (
        body.get("reference_no") and body.get("reference_date")
    ):
        return _invalid("Reference No and Reference Date is mandatory for Bank transaction")
    return _validate_allocation(body, references, numbers, invoices)


def _validate_allocation(
    body: dict[str, Any],
    references: list[dict[str, Any]],
    numbers: dict[str, Decimal],
    invoices: dict[str, SalesInvoice],
) -> web.Response | None:
    seen: set[tuple[str, str]] = set()
    base_allocated = total = Decimal(0)
    for i, ref in enumerate(references, 1):
        invoice = invoices[str(ref["reference_name"])]
        term_name = ref.get("payment_term") or ""
        allocated = Decimal(str(_number(ref["allocated_amount"])))
        if (invoice.name, term_name) in seen:
            return _invalid(f"Row #{i}: Duplicate entry in References Sales Invoice {invoice.name}")
        seen.add((invoice.name, term_name))
        if invoice.payment_schedule and not term_name:
            return _invalid(
                f"{invoice.name} has Payment Term based allocation enabled. Select a Payment "
                f"Term for Row #{i} in Payment References section"
            )
        terms = [t for t in invoice.payment_schedule if t.term == term_name]
        term_left = _cents((terms[0].amount - terms[0].paid) * invoice.factor) if terms else None
        if (term_name and not term_left) or invoice.outstanding <= 0:
            return _invalid(f"Sales Invoice {invoice.name} has already been fully paid.")
        # The real check compares with "" (a row read back from the database); the
        # stand-in treats a JSON null the same way, erring strict.
        row_outstanding = _number(ref.get("outstanding_amount"))
        if (
            not term_name
            and invoice.outstanding < invoice.party_total
            and row_outstanding != invoice.outstanding
        ):
            return _invalid(
                f"Sales Invoice {invoice.name} has already been partly paid. Please use the "
                "'Get Outstanding Invoice' or the 'Get Outstanding Orders' button to get the "
                "latest outstanding amounts."
            )
        if term_left is not None and allocated > term_left:
            return _invalid(
                f"Row #{i}: Allocated amount:{allocated} is greater than outstanding "
                f"amount:{term_left} for Payment Term {term_name}"
            )
        if allocated > invoice.outstanding:
            return _invalid(
                f"Row #{i}: Allocated Amount cannot be greater than outstanding amount."
            )
        total += allocated
        base_allocated += _cents(allocated * Decimal(str(ref.get("exchange_rate") or 1)))
    if body.get("docstatus") != 1:
        return None
    # set_unallocated_amount / set_difference_amount; on_submit refuses a difference.
    paid, received = numbers["paid_amount"], numbers["received_amount"]
    base_received = _cents(received * numbers["target_exchange_rate"])
    difference = Decimal(0)
    if not (base_allocated < base_received and total < paid):
        difference = base_allocated - base_received
    if difference:
        return _invalid("Difference Amount must be zero")
    return None


# -- comments ---------------------------------------------------------------------------------
