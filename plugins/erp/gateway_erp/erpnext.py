"""ERPNext (Frappe): REST resources and whitelisted methods, ``Authorization: token k:s``.

Registering a payment:

1. ``GET /api/resource/Sales Invoice?filters=[["name","=",ref]]&fields=[...]``
   (docstatus 0 draft, 1 submitted, 2 cancelled; ``outstanding_amount``, ``currency``);
2. ``GET /api/resource/Payment Entry?filters=[["reference_no","=",id],...]``: a payment
   entry (not cancelled) with the provider's id means it was booked before: nothing to do;
3. ``POST /api/method/erpnext...get_payment_entry`` builds the Payment Entry from the
   invoice; its ``reference_no``/``reference_date``, mode of payment, amount and
   allocation are set, and it is inserted already submitted (``docstatus: 1``) with
   ``POST /api/resource/Payment Entry``: one call, so there is never a draft left behind;
4. ``GET /api/resource/Sales Invoice/<name>``: ``status`` Paid or Partly Paid.

Frappe answers errors with a status (417 for validation) and ``exc_type``; a
``TimestampMismatchError`` (someone saved the document meanwhile), a deadlock or a lock
timeout is transient.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import msgspec

from gateway import DeliveryError, PermanentError, TransientError

from .booking import Booking
from .config import ErpNextOptions
from .connector import Invoice, InvoiceConnector, InvoiceState, Step, http_failure
from .money import parse_erp_amount
from .transport import Answer, Transport, excerpt

INVOICE_FIELDS = [
    "name",
    "docstatus",
    "status",
    "outstanding_amount",
    "grand_total",
    "currency",
    "is_return",
]
GET_PAYMENT_ENTRY = "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry"
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


def _data(answer: Answer) -> Any:
    if not answer.ok:
        raise frappe_error(answer)
    payload = answer.json()
    if not isinstance(payload, dict) or "data" not in payload:
        raise PermanentError(f"{answer.what}: no data in {excerpt(answer.body)}")
    return payload["data"]


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

    def _invoice(self, row: Any) -> Invoice:
        if not isinstance(row, dict) or not row.get("name"):
            raise PermanentError(f"erpnext: unexpected Sales Invoice {excerpt(repr(row))}")
        currency = str(row.get("currency") or "?")
        residual = parse_erp_amount(row.get("outstanding_amount"), currency)
        if residual is None:
            raise PermanentError(f"erpnext: Sales Invoice {row['name']} has no outstanding_amount")
        docstatus, status = row.get("docstatus"), row.get("status")
        if docstatus == 0:
            state = InvoiceState.DRAFT
        elif docstatus == 2:
            state = InvoiceState.CANCELLED
        elif row.get("is_return"):
            state = InvoiceState.NOT_PAYABLE
        elif status == "Paid" or residual <= 0:
            state = InvoiceState.PAID
        else:
            state = InvoiceState.OPEN
        return Invoice(
            id=str(row["name"]),
            number=str(row["name"]),
            state=state,
            status=f"docstatus {docstatus}, status {status}",
            currency=currency,
            residual=residual,
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

    @staticmethod
    def _note_filters(name: str, marker: str) -> list[list[Any]]:
        return [
            ["reference_doctype", "=", "Sales Invoice"],
            ["reference_name", "=", name],
            ["content", "like", f"%{marker}%"],
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

    def _entry_request(self, invoice_name: str, booking: Booking) -> dict[str, Any]:
        return {"dt": "Sales Invoice", "dn": invoice_name, "party_amount": booking.amount}

    def _complete(self, entry: dict[str, Any], invoice_name: str, booking: Booking) -> None:
        """Set on the Payment Entry what the event knows, and submit it on insert."""
        for key in _LOCAL_KEYS:
            entry.pop(key, None)
        entry.update(
            {
                "doctype": "Payment Entry",
                "posting_date": booking.paid_on.isoformat(),
                "reference_no": booking.reference,
                "reference_date": booking.paid_on.isoformat(),
                "paid_amount": booking.amount,
                "received_amount": booking.amount,
                "remarks": booking.memo,
                "docstatus": 1,
            }
        )
        if self.options.mode_of_payment:
            entry["mode_of_payment"] = self.options.mode_of_payment
        if self.options.paid_to:
            entry["paid_to"] = self.options.paid_to
        references = [
            ref
            for ref in entry.get("references") or []
            if isinstance(ref, dict) and ref.get("reference_name") == invoice_name
        ]
        if not references:
            raise PermanentError(
                f"erpnext: get_payment_entry returned no reference to {invoice_name}"
            )
        references[0]["allocated_amount"] = booking.amount
        entry["references"] = [references[0]]

    async def pay(self, invoice: Invoice, booking: Booking, *, full: bool) -> str:
        name = str(invoice.id)
        answer = await self._request(
            "POST", f"/api/method/{GET_PAYMENT_ENTRY}", json=self._entry_request(name, booking)
        )
        if not answer.ok:
            raise frappe_error(answer)
        payload = answer.json()
        entry = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(entry, dict):
            raise PermanentError(f"{answer.what}: no Payment Entry in {excerpt(answer.body)}")
        self._complete(entry, name, booking)
        saved = _data(await self._request("POST", resource("Payment Entry"), json=entry))
        return f"Payment Entry {saved.get('name') if isinstance(saved, dict) else '?'}"

    async def reload(self, invoice: Invoice) -> Invoice:
        answer = await self._request("GET", resource("Sales Invoice", str(invoice.id)))
        return self._invoice(_data(answer))

    async def has_note(self, invoice: Invoice, marker: str) -> bool:
        rows = await self._list("Comment", self._note_filters(str(invoice.id), marker), ["name"], 1)
        return bool(rows)

    async def add_note(self, invoice: Invoice, text: str) -> None:
        body = {
            "comment_type": "Comment",
            "reference_doctype": "Sales Invoice",
            "reference_name": str(invoice.id),
            "content": text,
        }
        _data(await self._request("POST", resource("Comment"), json=body))

    # -- preview -----------------------------------------------------------------------------

    @staticmethod
    def _get(doctype: str, filters: list[list[Any]], fields: list[str]) -> str:
        return f"GET {resource(doctype)}?filters={json.dumps(filters)}&fields={json.dumps(fields)}"

    def describe_payment(self, booking: Booking) -> list[Step]:
        entry: dict[str, Any] = {"references": [{"reference_name": "<invoice>"}]}
        self._complete(entry, "<invoice>", booking)
        return [
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
            Step(
                "build the payment entry",
                f"POST /api/method/{GET_PAYMENT_ENTRY} "
                + _show.encode(self._entry_request("<invoice>", booking)).decode(),
            ),
            Step(
                "insert and submit it",
                f"POST {resource('Payment Entry')} (the entry step 3 returned, with) "
                + _show.encode({k: v for k, v in entry.items() if k != "doctype"}).decode(),
            ),
            Step("read the invoice back", f"GET {resource('Sales Invoice')}/<invoice>"),
        ]

    def describe_note(self, ref: str, text: str, marker: str) -> list[Step]:
        body = {
            "comment_type": "Comment",
            "reference_doctype": "Sales Invoice",
            "reference_name": "<invoice>",
            "content": text,
        }
        return [
            Step(
                "find the invoice",
                self._get("Sales Invoice", self._invoice_filters(ref), INVOICE_FIELDS),
            ),
            Step(
                "look for this note (found: nothing to do)",
                self._get("Comment", self._note_filters("<invoice>", marker), ["name"]),
            ),
            Step("add the comment", f"POST {resource('Comment')} {_show.encode(body).decode()}"),
        ]
