"""The Dolibarr stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from .common import Faults, _number

# -- Dolibarr --------------------------------------------------------------------------------


def _doli_error(status: int, message: str) -> web.Response:
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    text = f"{reasons.get(status, 'Error')}: {message}"
    return web.json_response({"error": {"code": status, "message": text}}, status=status)


@dataclass
class DolibarrInvoice:
    id: int
    ref: str
    total_ttc: Decimal
    currency: str = ""  # multicurrency_code; empty: the company's
    status: int = 1  # 0 draft, 1 unpaid, 2 paid, 3 abandoned
    type: int = 0  # 0 standard, 2 credit note
    paid: Decimal = Decimal(0)
    note_private: str = ""

    @property
    def remain(self) -> Decimal:
        return self.total_ttc - self.paid

    def record(self) -> dict[str, Any]:
        # Dolibarr writes most numbers as strings.
        return {
            "id": self.id,
            "ref": self.ref,
            "statut": str(self.status),
            "status": str(self.status),
            "paye": "1" if self.status == 2 else "0",
            "type": str(self.type),
            "total_ttc": f"{self.total_ttc:.8f}",
            "totalpaid": f"{self.paid:.8f}",
            "remaintopay": f"{self.remain:.2f}",
            "multicurrency_code": self.currency,
            "note_private": self.note_private,
        }


@dataclass
class DolibarrPayment:
    id: int
    ref: str
    invoice_id: int
    amount: Decimal
    num: str
    datepaye: int
    paymentid: int
    accountid: int
    comment: str


class DolibarrStandin:
    API_KEY = "doli-key-77ab"
    PAYMENT_MODES: ClassVar[dict[int, str]] = {2: "VIR", 6: "CB"}
    BANK_ACCOUNTS: ClassVar[dict[int, str]] = {1: "Banque Populaire"}

    def __init__(self, *, empty_list_is_404: bool = True) -> None:
        #: Older Dolibarr answers 404 "No invoice found" to an empty list; newer ones [].
        self.empty_list_is_404 = empty_list_is_404
        self.url = ""
        self.invoices: dict[int, DolibarrInvoice] = {}
        self.payments: list[DolibarrPayment] = []
        self.faults = Faults()
        self.calls: list[str] = []
        self._ids = itertools.count(40)

    def add_invoice(
        self, ref: str, amount: str, currency: str = "", *, status: int = 1, paid: str = "0"
    ) -> DolibarrInvoice:
        invoice = DolibarrInvoice(
            next(self._ids), ref, Decimal(amount), currency, status, paid=Decimal(paid)
        )
        self.invoices[invoice.id] = invoice
        return invoice

    def invoice(self, ref: str) -> DolibarrInvoice:
        return next(i for i in self.invoices.values() if i.ref == ref)

    def payments_for(self, ref: str) -> list[DolibarrPayment]:
        invoice = self.invoice(ref)
        return [p for p in self.payments if p.invoice_id == invoice.id]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        base = "/api/index.php"
        app.router.add_get(f"{base}/invoices", self._list)
        app.router.add_get(f"{base}/invoices/{{id:\\d+}}", self._get)
        app.router.add_put(f"{base}/invoices/{{id:\\d+}}", self._put)
        app.router.add_get(f"{base}/invoices/{{id:\\d+}}/payments", self._get_payments)
        app.router.add_post(f"{base}/invoices/{{id:\\d+}}/payments", self._add_payment)
        app.router.add_post(f"{base}/invoices/paymentsdistributed", self._distributed)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        if self.faults.take("http_503"):
            return web.Response(status=503, text="<html>503 Service Unavailable</html>")
        key = request.headers.get("DOLAPIKEY")
        if key is None:
            return _doli_error(
                401,
                "Failed to login to API. No parameter 'HTTP_DOLAPIKEY' on HTTP header "
                "(and no parameter DOLAPIKEY in URL).",
            )
        if key != self.API_KEY:
            return _doli_error(401, "Access denied")
        response: web.StreamResponse = await handler(request)
        return response

    def _find(self, request: web.Request) -> DolibarrInvoice | None:
        return self.invoices.get(int(request.match_info["id"]))

    async def _list(self, request: web.Request) -> web.Response:
        sqlfilters = request.query.get("sqlfilters", "")
        rows = list(self.invoices.values())
        if sqlfilters:
            found = re.fullmatch(r"\(t\.ref:=:'([^']*)'\)", sqlfilters)
            if found is None:
                return _doli_error(
                    400, f"Error when validating parameter sqlfilters -> {sqlfilters}"
                )
            rows = [i for i in rows if i.ref == found.group(1)]
        limit = request.query.get("limit")
        if limit is not None:
            if not limit.isdigit():
                return _doli_error(400, "Invalid value specified for `limit`")
            rows = rows[: int(limit)]
        if not rows and self.empty_list_is_404:
            return _doli_error(404, "No invoice found")
        return web.json_response([i.record() for i in rows])

    async def _get(self, request: web.Request) -> web.Response:
        invoice = self._find(request)
        if invoice is None:
            return _doli_error(404, "Invoice not found")
        return web.json_response(invoice.record())

    async def _put(self, request: web.Request) -> web.Response:
        invoice = self._find(request)
        if invoice is None:
            return _doli_error(404, "Invoice not found")
        body = await request.json()
        if not isinstance(body, dict):
            return _doli_error(400, "the body must be an object")
        for key, value in body.items():
            if key != "note_private":
                continue  # the stand-in keeps only what the plugin writes
            if not isinstance(value, str):
                return _doli_error(400, "note_private must be a string")
            invoice.note_private = value
        return web.json_response(invoice.record())

    async def _get_payments(self, request: web.Request) -> web.Response:
        invoice = self._find(request)
        if invoice is None:
            return _doli_error(404, "Invoice not found")
        rows = [
            {
                "amount": f"{p.amount:.8f}",
                "type": self.PAYMENT_MODES[p.paymentid],
                "date": date.fromtimestamp(p.datepaye).isoformat() + " 12:00:00",
                "num": p.num,
                "ref": p.ref,
                "fk_bank_line": str(p.id + 1000),
            }
            for p in self.payments
            if p.invoice_id == invoice.id
        ]
        return web.json_response(rows)

    def _common(self, body: Any) -> dict[str, Any] | web.Response:
        """The fields both payment endpoints take, checked like Restler checks them."""
        if not isinstance(body, dict):
            return _doli_error(400, "the body must be an object")
        for name in ("datepaye", "paymentid", "accountid"):
            value = body.get(name)
            if value is None:
                return _doli_error(400, f"Parameter `{name}` is required")
            if isinstance(value, bool) or not isinstance(value, int):
                return _doli_error(
                    400, f"Invalid value specified for `{name}`. Expecting integer value"
                )
        if body["paymentid"] not in self.PAYMENT_MODES:
            return _doli_error(400, "Payment ID or Payment Code is mandatory")
        if body["accountid"] not in self.BANK_ACCOUNTS:
            return _doli_error(400, "Account ID is mandatory")
        if body.get("closepaidinvoices", "no") not in ("yes", "no"):
            return _doli_error(
                400, "Invalid value specified for `closepaidinvoices`. Expecting one of (yes, no)"
            )
        for name in ("num_payment", "comment", "chqemetteur", "chqbank"):
            if not isinstance(body.get(name, ""), str):
                return _doli_error(400, f"Invalid value specified for `{name}`. Expecting string")
        if len(body.get("num_payment", "")) > 50:
            return _doli_error(400, "num_payment: value too long (50 characters at most)")
        return body

    @staticmethod
    def _payable(invoice: DolibarrInvoice) -> web.Response | None:
        if invoice.status == 0:
            return _doli_error(400, "Invoice is a draft: validate it before adding a payment")
        if invoice.status in (2, 3) or invoice.remain <= 0:
            return _doli_error(400, "Remain to pay is null: the invoice is closed")
        return None

    def _book(self, body: dict[str, Any], amounts: dict[int, Decimal]) -> web.Response:
        payment_id = next(self._ids)
        for invoice_id, amount in amounts.items():
            invoice = self.invoices[invoice_id]
            self.payments.append(
                DolibarrPayment(
                    payment_id,
                    f"PAY2501-{payment_id:04d}",
                    invoice_id,
                    amount,
                    body.get("num_payment", ""),
                    body["datepaye"],
                    body["paymentid"],
                    body["accountid"],
                    body.get("comment", ""),
                )
            )
            invoice.paid += amount
            if body.get("closepaidinvoices") == "yes" and invoice.remain <= 0:
                invoice.status = 2
        if self.faults.take("lose_answer"):
            return web.Response(status=503, text="proxy: upstream went away")
        return web.json_response(payment_id)

    async def _add_payment(self, request: web.Request) -> web.Response:
        invoice = self._find(request)
        if invoice is None:
            return _doli_error(404, "Invoice not found")
        body = self._common(await request.json())
        if isinstance(body, web.Response):
            return body
        refused = self._payable(invoice)
        if refused is not None:
            return refused
        # This endpoint pays what remains: it has no amount field.
        return self._book(body, {invoice.id: invoice.remain})

    async def _distributed(self, request: web.Request) -> web.Response:
        body = self._common(await request.json())
        if isinstance(body, web.Response):
            return body
        array = body.get("arrayofamounts")
        if not isinstance(array, dict) or not array:
            return _doli_error(400, "arrayofamounts is mandatory")
        amounts: dict[int, Decimal] = {}
        for key, value in array.items():
            invoice = self.invoices.get(int(key)) if str(key).isdigit() else None
            if invoice is None:
                return _doli_error(404, f"Invoice ID {key} not found")
            refused = self._payable(invoice)
            if refused is not None:
                return refused
            amount = _number(value.get("amount")) if isinstance(value, dict) else None
            if amount is None or amount <= 0:
                return _doli_error(400, f"Payment amount on invoice ID {key} is not a number")
            if amount > invoice.remain:
                return _doli_error(
                    400,
                    f"Payment amount on invoice ID {key} ({amount}) is higher than remain to "
                    f"pay ({invoice.remain})",
                )
            amounts[invoice.id] = amount
        return self._book(body, amounts)
