"""Dolibarr: the REST API module (``/api/index.php``), key in the ``DOLAPIKEY`` header.

Registering a payment:

1. ``GET /invoices?sqlfilters=(t.ref:=:'FA2501-0042')``, then ``GET /invoices/{id}``
   (status 0 draft, 1 unpaid, 2 paid, 3 abandoned; ``remaintopay``);
2. ``GET /invoices/{id}/payments``: a payment whose ``num`` is the provider's id means
   it was booked before (a redelivery): nothing to do;
3. the whole remaining balance: ``POST /invoices/{id}/payments`` (that endpoint always
   pays what remains: it has no amount); less than that:
   ``POST /invoices/paymentsdistributed`` with the amount for this invoice. Both with
   ``closepaidinvoices = "yes"``, the bank account, the payment mode and the reference as
   ``num_payment``;
4. ``GET /invoices/{id}`` again.

Dolibarr writes numbers as strings (``"120.00000000"``, ``"1"``); they are read as such.
Its ``num_payment`` column holds 50 characters, so longer references are refused.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway import DeliveryError, PermanentError

from .booking import Booking
from .config import DolibarrOptions
from .connector import Invoice, InvoiceConnector, InvoiceState, Step, http_failure
from .money import parse_erp_amount
from .transport import Answer, Transport, excerpt

API = "/api/index.php"
STATUS_LABELS = {0: "draft", 1: "unpaid", 2: "paid", 3: "abandoned"}
CREDIT_NOTE = 2
_show = msgspec.json.Encoder(decimal_format="number")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _said(answer: Answer) -> str:
    payload = answer.json_or_none()
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message") or "")
    return excerpt(answer.body)


def _failure(answer: Answer) -> DeliveryError:
    return http_failure(answer, _said(answer))


class Dolibarr(InvoiceConnector):
    name = "dolibarr"
    #: ``llx_paiement.num_paiement`` is a varchar(50).
    max_reference = 50

    def __init__(self, transport: Transport, options: DolibarrOptions) -> None:
        super().__init__(transport)
        self.options = options

    def auth_headers(self) -> dict[str, str]:
        return {"DOLAPIKEY": self.options.api_key.reveal()}

    async def _request(self, method: str, path: str, **kwargs: Any) -> Answer:
        return await self.transport.request(
            method, API + path, headers=self.auth_headers(), **kwargs
        )

    @staticmethod
    def _filter(ref: str) -> str:
        if any(c in ref for c in "'()\\"):
            raise PermanentError(
                f"dolibarr: invoice reference {ref!r} holds a quote, a parenthesis or a "
                "backslash, which a sqlfilters expression cannot carry"
            )
        return f"(t.ref:=:'{ref}')"

    def _invoice(self, row: Any) -> Invoice:
        if not isinstance(row, dict) or _int(row.get("id")) is None:
            raise PermanentError(f"dolibarr: unexpected invoice {excerpt(repr(row))}")
        status = _int(row.get("status", row.get("statut")))
        paid_flag = _int(row.get("paye"))
        currency = str(row.get("multicurrency_code") or self.options.company_currency)
        residual = parse_erp_amount(row.get("remaintopay"), currency)
        if residual is None:
            total = parse_erp_amount(row.get("total_ttc"), currency)
            paid = parse_erp_amount(row.get("totalpaid") or 0, currency)
            if total is None or paid is None:
                raise PermanentError(f"dolibarr: invoice {row.get('ref')!r} has no amounts")
            residual = total - paid
        if status == 0:
            state = InvoiceState.DRAFT
        elif status == 3:
            state = InvoiceState.CANCELLED
        elif _int(row.get("type")) == CREDIT_NOTE:
            state = InvoiceState.NOT_PAYABLE
        elif status == 2 or paid_flag == 1 or residual <= 0:
            state = InvoiceState.PAID
        else:
            state = InvoiceState.OPEN
        unsupported = None
        if currency != self.options.company_currency:
            unsupported = (
                f"dolibarr: invoice {row.get('ref')} is in {currency}, not the company "
                f"currency {self.options.company_currency}: multicurrency payments are not "
                "supported by this connector"
            )
        return Invoice(
            id=int(row["id"]),
            number=str(row.get("ref")),
            state=state,
            status=f"status {status} ({STATUS_LABELS.get(status or 0, '?')}), paye {paid_flag}",
            currency=currency,
            residual=residual,
            unsupported=unsupported,
        )

    async def _row(self, invoice_id: int | str) -> dict[str, Any]:
        answer = await self._request("GET", f"/invoices/{int(invoice_id)}")
        if not answer.ok:
            raise _failure(answer)
        row = answer.json()
        if not isinstance(row, dict):
            raise PermanentError(f"dolibarr: unexpected invoice {excerpt(answer.body)}")
        return row

    async def find_invoice(self, ref: str) -> Invoice | None:
        answer = await self._request(
            "GET", "/invoices", params={"sqlfilters": self._filter(ref), "limit": "2"}
        )
        if answer.status == 404:  # Dolibarr's way of saying "none" (older versions)
            return None
        if not answer.ok:
            raise _failure(answer)
        rows = answer.json()
        if not isinstance(rows, list):
            raise PermanentError(f"dolibarr GET /invoices: not a list: {excerpt(answer.body)}")
        if len(rows) > 1:
            raise PermanentError(f"dolibarr: several invoices have the ref {ref!r}")
        if not rows:
            return None
        first = rows[0]
        invoice_id = _int(first.get("id")) if isinstance(first, dict) else None
        if invoice_id is None:
            raise PermanentError(f"dolibarr GET /invoices: no id in {excerpt(repr(first))}")
        return self._invoice(await self._row(invoice_id))

    async def find_payment(self, invoice: Invoice, reference: str) -> str | None:
        answer = await self._request("GET", f"/invoices/{int(invoice.id)}/payments")
        if answer.status == 404:
            return None
        if not answer.ok:
            raise _failure(answer)
        rows = answer.json()
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("num") == reference:
                return f"payment {row.get('ref')} of {row.get('amount')}"
        return None

    def _payment_body(self, booking: Booking) -> dict[str, Any]:
        return {
            "datepaye": booking.paid_ts,
            "paymentid": self.options.payment_mode_id,
            "closepaidinvoices": "yes",
            "accountid": self.options.bank_account_id,
            "num_payment": booking.reference,
            "comment": booking.memo,
            "chqemetteur": "",
            "chqbank": "",
        }

    def _distributed_body(self, invoice_id: Any, booking: Booking) -> dict[str, Any]:
        amounts = {str(invoice_id): {"amount": str(booking.amount), "multicurrency_amount": ""}}
        return {"arrayofamounts": amounts, **self._payment_body(booking)}

    async def pay(self, invoice: Invoice, booking: Booking, *, full: bool) -> str:
        if full:
            answer = await self._request(
                "POST", f"/invoices/{int(invoice.id)}/payments", json=self._payment_body(booking)
            )
        else:
            answer = await self._request(
                "POST",
                "/invoices/paymentsdistributed",
                json=self._distributed_body(invoice.id, booking),
            )
        if not answer.ok:
            raise _failure(answer)
        return f"payment {excerpt(answer.body, 40)}"

    async def reload(self, invoice: Invoice) -> Invoice:
        return self._invoice(await self._row(invoice.id))

    async def has_note(self, invoice: Invoice, marker: str) -> bool:
        row = await self._row(invoice.id)
        return marker in str(row.get("note_private") or "")

    async def add_note(self, invoice: Invoice, text: str) -> None:
        row = await self._row(invoice.id)
        existing = str(row.get("note_private") or "")
        note = f"{existing}\n\n{text}" if existing else text
        answer = await self._request(
            "PUT", f"/invoices/{int(invoice.id)}", json={"note_private": note}
        )
        if not answer.ok:
            raise _failure(answer)

    # -- preview -----------------------------------------------------------------------------

    def _find_text(self, ref: str) -> str:
        query = f"sqlfilters={self._filter(ref)}&limit=2"
        return f"GET {API}/invoices?{query}, then GET {API}/invoices/<id>"

    def describe_payment(self, booking: Booking) -> list[Step]:
        full = _show.encode(self._payment_body(booking)).decode()
        partial = _show.encode(self._distributed_body("<id>", booking)).decode()
        return [
            Step("find the invoice", self._find_text(booking.invoice_ref)),
            Step(
                "look for this payment (found: nothing to do)",
                f"GET {API}/invoices/<id>/payments: num == {booking.reference!r}",
            ),
            Step(
                "register the payment",
                f"{booking.amount} is the remaining balance: POST {API}/invoices/<id>/payments "
                f"{full}\nless than the remaining balance: POST {API}/invoices/"
                f"paymentsdistributed {partial}",
            ),
            Step("read the invoice back", f"GET {API}/invoices/<id>"),
        ]

    def describe_note(self, ref: str, text: str, marker: str) -> list[Step]:
        body = _show.encode({"note_private": "<the note so far>\n\n" + text}).decode()
        return [
            Step("find the invoice", self._find_text(ref)),
            Step(
                "look for this note (found: nothing to do)",
                f"GET {API}/invoices/<id>: note_private holds {marker!r}",
            ),
            Step("append the note", f"PUT {API}/invoices/<id> {body}"),
        ]
