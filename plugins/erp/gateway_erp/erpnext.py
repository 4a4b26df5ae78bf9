"""ERPNext (Frappe): REST resources and whitelisted methods, ``Authorization: token k:s``.

Registering a payment:

1. ``GET /api/resource/Sales Invoice?filters=[["name","=",ref]]&fields=[...]``
   (docstatus 0 draft, 1 submitted, 2 cancelled; ``outstanding_amount`` in the currency of
   the receivable account, ``party_account_currency``; ``currency`` and ``conversion_rate``);
2. ``GET /api/resource/Payment Entry?filters=[["reference_no","=",id],...]``: a payment
   entry (not cancelled) with the provider's id means it was booked before: nothing to do;
3. the bank account: ``paid_to`` from the conf, else the mode of payment's account for the
   invoice's company (``erpnext...sales_invoice.get_bank_cash_account``), else none (ERPNext
   takes the company's default bank account);
4. ``POST /api/method/erpnext...get_payment_entry`` with the amount in the receivable's
   currency and that account builds the Payment Entry (one reference row per payment term
   when the invoice's terms template allocates by term); the payment is allocated across the
   rows in order, ``reference_no``/``reference_date``/``custom_remarks``/``remarks`` are set,
   and it is inserted already submitted (``docstatus: 1``) with ``POST /api/resource/Payment
   Entry``: one call, so there is never a draft left behind;
5. ``GET /api/resource/Sales Invoice/<name>``: ``status`` Paid or Partly Paid.

Notes use the whitelisted ``frappe.desk.form.utils.add_comment`` and are found again in
``frappe.desk.form.load.get_docinfo``: both check the user's permission on the invoice,
whereas ``/api/resource/Comment`` needs a Comment permission only System and Website
Managers have (frappe/frappe frappe/core/doctype/comment/comment.json).

Frappe answers errors with a status (417 for validation) and ``exc_type``; a
``TimestampMismatchError`` (someone saved the document meanwhile), a deadlock or a lock
timeout is transient.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import msgspec

from gateway import DeliveryError, PermanentError, TransientError

from .booking import Booking
from .config import ErpNextOptions
from .connector import Invoice, InvoiceConnector, InvoiceState, Step, http_failure
from .money import format_amount, parse_erp_amount
from .transport import Answer, Transport, excerpt

INVOICE_FIELDS = [
    "name",
    "docstatus",
    "status",
    "outstanding_amount",
    "grand_total",
    "currency",
    "conversion_rate",
    "party_account_currency",
    "company",
    "is_return",
]
GET_PAYMENT_ENTRY = "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry"
#: The account of a mode of payment for a company (its "Mode of Payment Account" row).
MODE_OF_PAYMENT_ACCOUNT = (
    "erpnext.accounts.doctype.sales_invoice.sales_invoice.get_bank_cash_account"
)
ADD_COMMENT = "frappe.desk.form.utils.add_comment"
GET_DOCINFO = "frappe.desk.form.load.get_docinfo"
#: Who the comment says wrote it (its ``owner`` is the API user anyway).
COMMENT_BY = "Tocsin"
#: Frappe exceptions of a transaction that lost a race: worth another try.
TRANSIENT_EXCEPTIONS = frozenset(
    {
        "TimestampMismatchError",
        "QueryDeadlockError",
        "QueryTimeoutError",
        "DocumentLockedError",
        "LockWaitTimeoutError",
    }
)
#: Keys of an unsaved document that an insert must not carry.
_LOCAL_KEYS = ("name", "__islocal", "__unsaved", "__onload", "creation", "modified")
_TAGS = re.compile(r"<[^>]+>")
_show = msgspec.json.Encoder(decimal_format="number")


def resource(doctype: str, name: str | None = None) -> str:
    path = "/api/resource/" + quote(doctype, safe="")
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _server_messages(payload: dict[str, Any]) -> str:
    """Frappe's ``_server_messages``: a JSON list of JSON objects with a ``message``."""
    try:
        items = json.loads(payload.get("_server_messages") or "[]")
        texts = [json.loads(item).get("message", "") for item in items]
    except (TypeError, ValueError, AttributeError):
        return ""
    return " ".join(_TAGS.sub("", str(text)) for text in texts if text)


def frappe_error(answer: Answer) -> DeliveryError:
    payload = answer.json_or_none()
    payload = payload if isinstance(payload, dict) else {}
    exc_type = str(payload.get("exc_type") or "")
    message = (
        _server_messages(payload)
        or str(payload.get("exception") or payload.get("message") or "")
        or excerpt(answer.body)
    )
    said = f"{exc_type}: {excerpt(message)}" if exc_type else excerpt(message)
    if exc_type in TRANSIENT_EXCEPTIONS:
        return TransientError(
            f"{answer.what}: {said} (a concurrent update; retried)", status=answer.status
        )
    return http_failure(answer, said)


def _data(answer: Answer, key: str = "data") -> Any:
    """``data`` of a resource answer, ``message`` (or ``docinfo``) of a method's."""
    if not answer.ok:
        raise frappe_error(answer)
    payload = answer.json()
    if not isinstance(payload, dict) or key not in payload:
        raise PermanentError(f"{answer.what}: no {key} in {excerpt(answer.body)}")
    return payload[key]


def _rate(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        return None
    return rate if rate.is_finite() and rate > 0 else None


@dataclass(frozen=True)
class SalesInvoice(Invoice):
    """An ERPNext invoice: ``residual`` is in the invoice's currency, ``outstanding`` in
    the receivable account's (``party_account_currency``), which is the invoice's or the
    company's (then ``outstanding = residual * conversion_rate``)."""

    company: str = ""
    party_currency: str = ""
    conversion_rate: Decimal = Decimal(1)
    outstanding: Decimal = Decimal(0)


class ErpNext(InvoiceConnector):
    name = "erpnext"

    def __init__(self, transport: Transport, options: ErpNextOptions) -> None:
        super().__init__(transport)
        self.options = options

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.options.api_key}:{self.options.api_secret.reveal()}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> Answer:
        return await self.transport.request(method, path, headers=self.auth_headers(), **kwargs)

    async def _list(
        self, doctype: str, filters: list[list[Any]], fields: list[str], limit: int
    ) -> list[Any]:
        answer = await self._request(
            "GET",
            resource(doctype),
            params={
                "filters": json.dumps(filters),
                "fields": json.dumps(fields),
                "limit_page_length": str(limit),
            },
        )
        rows = _data(answer)
        if not isinstance(rows, list):
            raise PermanentError(f"{answer.what}: data is not a list")
        return rows

    def _invoice(self, row: Any) -> SalesInvoice:
        if not isinstance(row, dict) or not row.get("name"):
            raise PermanentError(f"erpnext: unexpected Sales Invoice {excerpt(repr(row))}")
        name = str(row["name"])
        currency = str(row.get("currency") or "?")
        party_currency = str(row.get("party_account_currency") or currency)
        outstanding = parse_erp_amount(row.get("outstanding_amount"), party_currency)
        if outstanding is None:
            raise PermanentError(f"erpnext: Sales Invoice {name} has no outstanding_amount")
        rate = _rate(row.get("conversion_rate")) or Decimal(1)
        unsupported = None
        residual = outstanding
        if party_currency != currency:
            # Booked in the company's currency: outstanding_amount is in it (ERPNext
            # get_payment_entry / get_reference_as_per_payment_terms convert with the
            # invoice's conversion_rate).
            residual = parse_erp_amount(outstanding / rate, currency) or outstanding
            if _rate(row.get("conversion_rate")) is None:
                unsupported = (
                    f"invoice {name} is in {currency}, its receivable account in "
                    f"{party_currency}, and it has no conversion_rate"
                )
        docstatus, status = row.get("docstatus"), row.get("status")
        if docstatus == 0:
            state = InvoiceState.DRAFT
        elif docstatus == 2:
            state = InvoiceState.CANCELLED
        elif row.get("is_return"):
            state = InvoiceState.NOT_PAYABLE
        elif status == "Paid" or outstanding <= 0:
            state = InvoiceState.PAID
        else:
            state = InvoiceState.OPEN
        return SalesInvoice(
            id=name,
            number=name,
            state=state,
            status=f"docstatus {docstatus}, status {status}",
            currency=currency,
            residual=residual,
            unsupported=unsupported,
            company=str(row.get("company") or ""),
            party_currency=party_currency,
            conversion_rate=rate,
            outstanding=outstanding,
        )

    def _invoice_filters(self, ref: str) -> list[list[Any]]:
        return [[self.options.invoice_field, "=", ref]]

    @staticmethod
    def _payment_filters(reference: str) -> list[list[Any]]:
        return [
            ["reference_no", "=", reference],
            ["payment_type", "=", "Receive"],
            ["docstatus", "!=", 2],
        ]

    async def find_invoice(self, ref: str) -> Invoice | None:
        rows = await self._list("Sales Invoice", self._invoice_filters(ref), INVOICE_FIELDS, 2)
        if len(rows) > 1:
            raise PermanentError(f"erpnext: several Sales Invoices match {ref!r}")
        return self._invoice(rows[0]) if rows else None

    async def find_payment(self, invoice: Invoice, reference: str) -> str | None:
        rows = await self._list(
            "Payment Entry", self._payment_filters(reference), ["name", "docstatus"], 1
        )
        if rows and isinstance(rows[0], dict):
            return f"Payment Entry {rows[0].get('name')} (docstatus {rows[0].get('docstatus')})"
        return None

    # -- the payment entry -------------------------------------------------------------------

    @staticmethod
    def _sales_invoice(invoice: Invoice) -> SalesInvoice:
        if not isinstance(invoice, SalesInvoice):
            raise PermanentError(f"erpnext: {invoice.number} was not read by this connector")
        return invoice

    async def _bank_account(self, invoice: SalesInvoice) -> str | None:
        """The account the money goes to. ``mode_of_payment`` on a Payment Entry chooses no
        account (get_payment_entry only follows the *invoice's* mode of payment), so the
        mode's account for the invoice's company is looked up and passed on."""
        if self.options.paid_to:
            return self.options.paid_to
        if not self.options.mode_of_payment:
            return None
        answer = await self._request(
            "GET",
            f"/api/method/{MODE_OF_PAYMENT_ACCOUNT}",
            params={"mode_of_payment": self.options.mode_of_payment, "company": invoice.company},
        )
        found = _data(answer, "message")
        account = found.get("account") if isinstance(found, dict) else None
        if not account:
            raise PermanentError(
                f"erpnext: mode of payment {self.options.mode_of_payment!r} has no account "
                f"for company {invoice.company!r}"
            )
        return str(account)

    @staticmethod
    def _party_amount(invoice: SalesInvoice, booking: Booking, *, full: bool) -> Decimal:
        """The payment in the receivable account's currency (``paid_amount``)."""
        if invoice.party_currency == booking.currency:
            return booking.amount
        if full:
            return invoice.outstanding
        converted = parse_erp_amount(
            booking.amount * invoice.conversion_rate, invoice.party_currency
        )
        return min(converted or invoice.outstanding, invoice.outstanding)

    @staticmethod
    def _entry_request(name: str, party_amount: Decimal, account: str | None) -> dict[str, Any]:
        request: dict[str, Any] = {"dt": "Sales Invoice", "dn": name, "party_amount": party_amount}
        if account:
            # get_payment_entry's bank_account is an Account: paid_to, and the currency
            # received_amount is computed in (journal_entry.get_default_bank_cash_account).
            request["bank_account"] = account
        return request

    @staticmethod
    def _allocate(rows: Any, invoice: SalesInvoice, amount: Decimal) -> list[dict[str, Any]]:
        """Spread ``amount`` over get_payment_entry's rows for this invoice, in order: one
        per payment term (each capped by what is left of its term), or a single row."""
        ours = [
            row
            for row in rows or []
            if isinstance(row, dict) and row.get("reference_name") == invoice.id
        ]
        if not ours:
            raise PermanentError(
                f"erpnext: get_payment_entry returned no reference to {invoice.id}"
            )
        currency, left, kept = invoice.party_currency, amount, []
        for row in ours:
            if left <= 0:
                break
            room = invoice.outstanding
            if row.get("payment_term"):
                term = row.get("payment_term_outstanding") or row.get("allocated_amount")
                room = min(room, parse_erp_amount(term, currency) or Decimal(0))
            take = min(left, room)
            if take <= 0:
                continue
            # outstanding_amount: the invoice's, not party_amount, which get_payment_entry
            # puts there (validate_allocated_amount_with_latest_data compares the two).
            kept.append(
                {**row, "allocated_amount": take, "outstanding_amount": invoice.outstanding}
            )
            left -= take
        if left > 0:
            raise PermanentError(
                f"erpnext: the payment terms of invoice {invoice.number} leave "
                f"{format_amount(left, currency)} of the payment unallocated: not booked",
                details=invoice.details(),
            )
        return kept

    def _complete(
        self,
        entry: dict[str, Any],
        invoice: SalesInvoice,
        booking: Booking,
        party_amount: Decimal,
        account: str | None,
    ) -> None:
        """Set on the Payment Entry what the event knows, and submit it on insert."""
        for key in _LOCAL_KEYS:
            entry.pop(key, None)
        paid_to = entry.get("paid_to")
        if account and paid_to != account:
            raise PermanentError(
                f"erpnext: get_payment_entry chose account {paid_to!r}, not {account!r} (the "
                "invoice's own mode of payment wins): not booked",
                details=invoice.details(),
            )
        bank_currency = entry.get("paid_to_account_currency")
        if bank_currency != booking.currency:
            # received_amount is in paid_to's currency: the money arrives in the payment's.
            raise PermanentError(
                f"currency mismatch: the payment is in {booking.currency}, the bank account "
                f"{paid_to} in {bank_currency}: set paid_to (or the mode of payment's account) "
                f"to a {booking.currency} account",
                details=invoice.details(),
            )
        entry.update(
            {
                "doctype": "Payment Entry",
                "posting_date": booking.paid_on.isoformat(),
                "reference_no": booking.reference,
                "reference_date": booking.paid_on.isoformat(),
                # paid_amount: the receivable's currency; received_amount: the bank's.
                "paid_amount": party_amount,
                "received_amount": booking.amount,
                # Without it, set_remarks overwrites remarks on validate.
                "custom_remarks": 1,
                "remarks": booking.memo,
                "docstatus": 1,
            }
        )
        if self.options.mode_of_payment:
            entry["mode_of_payment"] = self.options.mode_of_payment
        entry["references"] = self._allocate(entry.get("references"), invoice, party_amount)

    async def pay(self, invoice: Invoice, booking: Booking, *, full: bool) -> str:
        sales_invoice = self._sales_invoice(invoice)
        account = await self._bank_account(sales_invoice)
        party_amount = self._party_amount(sales_invoice, booking, full=full)
        request = self._entry_request(sales_invoice.number, party_amount, account)
        answer = await self._request("POST", f"/api/method/{GET_PAYMENT_ENTRY}", json=request)
        entry = _data(answer, "message")
        if not isinstance(entry, dict):
            raise PermanentError(f"{answer.what}: no Payment Entry in {excerpt(answer.body)}")
        self._complete(entry, sales_invoice, booking, party_amount, account)
        saved = _data(await self._request("POST", resource("Payment Entry"), json=entry))
        return f"Payment Entry {saved.get('name') if isinstance(saved, dict) else '?'}"

    async def reload(self, invoice: Invoice) -> Invoice:
        answer = await self._request("GET", resource("Sales Invoice", str(invoice.id)))
        return self._invoice(_data(answer))

    # -- notes -------------------------------------------------------------------------------

    async def has_note(self, invoice: Invoice, marker: str) -> bool:
        answer = await self._request(
            "GET",
            f"/api/method/{GET_DOCINFO}",
            params={"doctype": "Sales Invoice", "name": str(invoice.id)},
        )
        docinfo = _data(answer, "docinfo")
        comments = docinfo.get("comments") if isinstance(docinfo, dict) else None
        if not isinstance(comments, list):
            raise PermanentError(f"{answer.what}: no comments in docinfo")
        # docinfo passes each comment through Markdown, which leaves the marker (letters,
        # digits, one underscore, brackets not followed by a link) as it is.
        return any(isinstance(c, dict) and marker in str(c.get("content") or "") for c in comments)

    @staticmethod
    def _comment(name: str, text: str) -> dict[str, str]:
        # All five arguments are required by add_comment's signature.
        return {
            "reference_doctype": "Sales Invoice",
            "reference_name": name,
            "content": text,
            "comment_email": "",
            "comment_by": COMMENT_BY,
        }

    async def add_note(self, invoice: Invoice, text: str) -> None:
        body = self._comment(str(invoice.id), text)
        _data(await self._request("POST", f"/api/method/{ADD_COMMENT}", json=body), "message")

    # -- preview -----------------------------------------------------------------------------

    @staticmethod
    def _get(doctype: str, filters: list[list[Any]], fields: list[str]) -> str:
        return f"GET {resource(doctype)}?filters={json.dumps(filters)}&fields={json.dumps(fields)}"

    def describe_payment(self, booking: Booking) -> list[Step]:
        steps = [
            Step(
                "find the invoice",
                self._get(
                    "Sales Invoice", self._invoice_filters(booking.invoice_ref), INVOICE_FIELDS
                ),
            ),
            Step(
                "look for this payment (found: nothing to do)",
                self._get(
                    "Payment Entry", self._payment_filters(booking.reference), ["name", "docstatus"]
                ),
            ),
        ]
        account = self.options.paid_to or None
        if not account and self.options.mode_of_payment:
            mode = quote(self.options.mode_of_payment)
            steps.append(
                Step(
                    "find the mode of payment's account",
                    f"GET /api/method/{MODE_OF_PAYMENT_ACCOUNT}?mode_of_payment={mode}"
                    "&company=<the invoice's company>",
                )
            )
            account = "<that account>"
        amount = f"{booking.amount} (in the invoice's receivable currency)"
        request = {**self._entry_request("<invoice>", booking.amount, account)}
        request["party_amount"] = amount
        entry: dict[str, Any] = {
            "posting_date": booking.paid_on.isoformat(),
            "reference_no": booking.reference,
            "reference_date": booking.paid_on.isoformat(),
            "paid_amount": amount,
            "received_amount": booking.amount,
            "custom_remarks": 1,
            "remarks": booking.memo,
            "docstatus": 1,
        }
        if self.options.mode_of_payment:
            entry["mode_of_payment"] = self.options.mode_of_payment
        entry["references"] = "allocated in order across the rows (one per payment term)"
        steps += [
            Step(
                "build the payment entry",
                f"POST /api/method/{GET_PAYMENT_ENTRY} " + _show.encode(request).decode(),
            ),
            Step(
                "insert and submit it",
                f"POST {resource('Payment Entry')} (the entry built, with) "
                + _show.encode(entry).decode(),
            ),
            Step("read the invoice back", f"GET {resource('Sales Invoice')}/<invoice>"),
        ]
        return steps

    def describe_note(self, ref: str, text: str, marker: str) -> list[Step]:
        return [
            Step(
                "find the invoice",
                self._get("Sales Invoice", self._invoice_filters(ref), INVOICE_FIELDS),
            ),
            Step(
                "look for this note (found: nothing to do)",
                f"GET /api/method/{GET_DOCINFO}?doctype=Sales%20Invoice&name=<invoice>: "
                f"a comment holds {marker!r}",
            ),
            Step(
                "add the comment",
                f"POST /api/method/{ADD_COMMENT} "
                + _show.encode(self._comment("<invoice>", text)).decode(),
            ),
        ]
