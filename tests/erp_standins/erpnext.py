"""The ERPNext stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from .common import Faults, _compare, _iso_date, _money, _number

# -- ERPNext ---------------------------------------------------------------------------------


def _frappe_error(status: int, exc_type: str, message: str) -> web.Response:
    return web.json_response(
        {
            "exc_type": exc_type,
            "exception": f"frappe.exceptions.{exc_type}: {message}",
            "_server_messages": json.dumps([json.dumps({"message": message})]),
        },
        status=status,
    )


@dataclass
class SalesInvoice:
    name: str
    customer: str
    currency: str
    grand_total: Decimal
    outstanding: Decimal
    docstatus: int = 1
    is_return: int = 0

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
        return "Partly Paid" if self.outstanding < self.grand_total else "Unpaid"

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "doctype": "Sales Invoice",
            "customer": self.customer,
            "currency": self.currency,
            "grand_total": _money(self.grand_total),
            "outstanding_amount": _money(self.outstanding),
            "docstatus": self.docstatus,
            "status": self.status,
            "is_return": self.is_return,
        }


class ErpNextStandin:
    API_KEY = "a1b2c3d4e5"
    API_SECRET = "f6e7d8c9b0"
    GET_PAYMENT_ENTRY = "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry"
    MODES: ClassVar[set[str]] = {"Wire Transfer", "Credit Card"}

    def __init__(self) -> None:
        self.url = ""
        self.invoices: dict[str, SalesInvoice] = {}
        self.entries: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.faults = Faults()
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    def add_invoice(
        self,
        name: str,
        amount: str,
        currency: str = "EUR",
        *,
        docstatus: int = 1,
        outstanding: str | None = None,
    ) -> SalesInvoice:
        total = Decimal(amount)
        left = Decimal(outstanding) if outstanding is not None else total
        invoice = SalesInvoice(name, "CUST-0001", currency, total, left, docstatus)
        self.invoices[name] = invoice
        return invoice

    def entries_for(self, name: str) -> list[dict[str, Any]]:
        return [
            e for e in self.entries if any(r["reference_name"] == name for r in e["references"])
        ]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/api/resource/{doctype}", self._list)
        app.router.add_get("/api/resource/{doctype}/{name}", self._get)
        app.router.add_post("/api/resource/{doctype}", self._insert)
        app.router.add_post("/api/method/{method}", self._method)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path}")
        if self.faults.take("http_503"):
            return web.Response(status=503, text="<html>503 Service Unavailable</html>")
        if request.headers.get("Authorization") != f"token {self.API_KEY}:{self.API_SECRET}":
            return _frappe_error(401, "AuthenticationError", "Invalid Authentication")
        response: web.StreamResponse = await handler(request)
        return response

    FIELDS: ClassVar[dict[str, set[str]]] = {
        "Sales Invoice": {
            "name",
            "doctype",
            "customer",
            "currency",
            "grand_total",
            "outstanding_amount",
            "docstatus",
            "status",
            "is_return",
        },
        "Payment Entry": {
            "name",
            "docstatus",
            "payment_type",
            "party_type",
            "party",
            "paid_from",
            "paid_to",
            "paid_amount",
            "received_amount",
            "mode_of_payment",
            "reference_no",
            "reference_date",
            "posting_date",
            "remarks",
            "references",
        },
        "Comment": {"name", "comment_type", "reference_doctype", "reference_name", "content"},
    }

    def _table(self, doctype: str) -> list[dict[str, Any]] | None:
        if doctype == "Sales Invoice":
            return [i.record() for i in self.invoices.values()]
        if doctype == "Payment Entry":
            return self.entries
        if doctype == "Comment":
            return self.comments
        return None

    async def _list(self, request: web.Request) -> web.Response:
        doctype = request.match_info["doctype"]
        table = self._table(doctype)
        if table is None:
            return _frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        known = self.FIELDS[doctype]
        try:
            filters = json.loads(request.query.get("filters", "[]"))
            fields = json.loads(request.query.get("fields", '["name"]'))
            limit = int(request.query.get("limit_page_length", "20"))
        except ValueError:
            return _frappe_error(417, "ValidationError", "filters and fields must be JSON")
        unknown = [f for f in fields if f not in known]
        if unknown:
            return _frappe_error(417, "DataError", f"Field not permitted in query: {unknown[0]}")
        rows = []
        for row in table:
            keep = True
            for item in filters:
                if not isinstance(item, list) or len(item) != 3:
                    return _frappe_error(417, "ValidationError", f"Invalid filter {item!r}")
                name, op, value = item
                if name not in known:
                    return _frappe_error(417, "DataError", f"Field not permitted in query: {name}")
                if op not in ("=", "!=", "like"):
                    return _frappe_error(417, "ValidationError", f"Unsupported operator {op}")
                keep = keep and _compare(row.get(name), op, value)
            if keep:
                rows.append(row)
        data = [{f: row.get(f) for f in fields} for row in rows[:limit]]
        return web.json_response({"data": data})

    async def _get(self, request: web.Request) -> web.Response:
        doctype, name = request.match_info["doctype"], request.match_info["name"]
        table = self._table(doctype)
        if table is None:
            return _frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        for row in table:
            if row.get("name") == name:
                return web.json_response({"data": row})
        return _frappe_error(404, "DoesNotExistError", f"{doctype} {name} not found")

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if method != self.GET_PAYMENT_ENTRY:
            return _frappe_error(
                404, "DoesNotExistError", f"Failed to get method for command {method}"
            )
        body = await request.json()
        if not isinstance(body, dict) or body.get("dt") != "Sales Invoice":
            return _frappe_error(417, "ValidationError", "dt must be Sales Invoice")
        invoice = self.invoices.get(str(body.get("dn")))
        if invoice is None:
            return _frappe_error(
                404, "DoesNotExistError", f"Sales Invoice {body.get('dn')} not found"
            )
        if invoice.docstatus != 1:
            return _frappe_error(
                417, "ValidationError", f"Sales Invoice {invoice.name} must be submitted"
            )
        if invoice.outstanding <= 0:
            return _frappe_error(
                417, "ValidationError", "Can only make payment against unbilled Sales Invoice"
            )
        party_amount = body.get("party_amount")
        amount = invoice.outstanding if party_amount is None else _number(party_amount)
        if amount is None:
            return _frappe_error(417, "ValidationError", "party_amount must be a number")
        allocated = min(amount, invoice.outstanding)
        entry = {
            "doctype": "Payment Entry",
            "name": f"new-payment-entry-{next(self._ids)}",
            "__islocal": 1,
            "docstatus": 0,
            "payment_type": "Receive",
            "party_type": "Customer",
            "party": invoice.customer,
            "paid_from": "Debtors - AC",
            "paid_to": "Bank - AC",
            "paid_amount": _money(amount),
            "received_amount": _money(amount),
            "mode_of_payment": None,
            "reference_no": None,
            "reference_date": None,
            "references": [
                {
                    "reference_doctype": "Sales Invoice",
                    "reference_name": invoice.name,
                    "total_amount": _money(invoice.grand_total),
                    "outstanding_amount": _money(invoice.outstanding),
                    "allocated_amount": _money(allocated),
                }
            ],
        }
        return web.json_response({"message": entry})

    async def _insert(self, request: web.Request) -> web.Response:
        doctype = request.match_info["doctype"]
        body = await request.json()
        if not isinstance(body, dict):
            return _frappe_error(417, "ValidationError", "the document must be an object")
        if doctype == "Comment":
            return self._comment(body)
        if doctype != "Payment Entry":
            return _frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        if self.faults.take("concurrency"):
            return _frappe_error(
                417,
                "TimestampMismatchError",
                "Error: Document has been modified after you have opened it. Please refresh to "
                "get the latest document.",
            )
        if body.get("payment_type") != "Receive" or body.get("party_type") != "Customer":
            return _frappe_error(417, "ValidationError", "Only customer receipts here")
        paid = _number(body.get("paid_amount"))
        if paid is None or paid <= 0:
            return _frappe_error(417, "ValidationError", "Paid Amount is mandatory")
        docstatus = body.get("docstatus", 0)
        if docstatus not in (0, 1):
            return _frappe_error(417, "ValidationError", "docstatus must be 0 or 1 on insert")
        for name in ("posting_date", "reference_date"):
            if body.get(name) is not None and _iso_date(body[name]) is None:
                return _frappe_error(
                    417, "ValidationError", f"{name}: {body[name]!r} is not a date"
                )
        if docstatus == 1 and not (body.get("reference_no") and body.get("reference_date")):
            return _frappe_error(
                417,
                "ValidationError",
                "Reference No and Reference Date is mandatory for Bank transaction",
            )
        mode = body.get("mode_of_payment")
        if mode is not None and mode not in self.MODES:
            return _frappe_error(
                404, "LinkValidationError", f"Could not find Mode of Payment: {mode}"
            )
        references = body.get("references")
        if not isinstance(references, list) or not references:
            return _frappe_error(417, "ValidationError", "references are mandatory")
        total = Decimal(0)
        for i, ref in enumerate(references, 1):
            invoice = self.invoices.get(str(ref.get("reference_name")))
            allocated = _number(ref.get("allocated_amount"))
            if invoice is None or allocated is None:
                return _frappe_error(417, "ValidationError", f"Row #{i}: invalid reference")
            if invoice.docstatus != 1:
                return _frappe_error(
                    417, "ValidationError", f"Row #{i}: {invoice.name} must be submitted"
                )
            if allocated > invoice.outstanding:
                return _frappe_error(
                    417,
                    "ValidationError",
                    f"Row #{i}: Allocated Amount cannot be greater than outstanding amount.",
                )
            total += allocated
        if total > paid:
            return _frappe_error(
                417, "ValidationError", "Total Allocated Amount cannot be greater than Paid Amount"
            )
        name = f"ACC-PAY-2025-{next(self._ids):05d}"
        saved = {
            **{k: v for k, v in body.items() if not k.startswith("__")},
            "name": name,
            "docstatus": docstatus,
        }
        self.entries.append(saved)
        if docstatus == 1:
            for ref in references:
                self.invoices[str(ref["reference_name"])].outstanding -= Decimal(
                    str(_number(ref["allocated_amount"]))
                )
        if self.faults.take("lose_answer"):
            return web.Response(status=503, text="proxy: upstream went away")
        return web.json_response({"data": saved})

    def _comment(self, body: dict[str, Any]) -> web.Response:
        missing = [
            k for k in ("comment_type", "reference_doctype", "reference_name") if not body.get(k)
        ]
        if missing:
            return _frappe_error(417, "MandatoryError", f"Missing: {', '.join(missing)}")
        if (
            body["reference_doctype"] != "Sales Invoice"
            or body["reference_name"] not in self.invoices
        ):
            return _frappe_error(
                404, "LinkValidationError", "Could not find the referenced document"
            )
        if not isinstance(body.get("content"), str):
            return _frappe_error(417, "ValidationError", "content must be text")
        saved = {**body, "name": f"c{next(self._ids)}"}
        self.comments.append(saved)
        return web.json_response({"data": saved})
