"""The ERPNext stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring).

What it claims, and where the real behaviour was read (frappe/erpnext and frappe/frappe on
GitHub; ERPNext version-15 era unless said otherwise):

- ``get_payment_entry`` (erpnext/accounts/doctype/payment_entry/payment_entry.py): the bank
  account is ``bank_account`` if given, else the *invoice's* mode of payment account, else
  the company's default bank account (get_bank_cash_account ->
  journal_entry.get_default_bank_cash_account); ``party_amount`` replaces the outstanding
  amount; ``paid_amount`` is in the receivable's currency, ``received_amount`` in the bank
  account's (set_paid_amount_and_received_amount); with a payment terms template that
  allocates by term there is one reference row per unpaid term
  (get_reference_as_per_payment_terms), converted by ``conversion_rate`` when the
  receivable is in the company's currency;
- inserting a Payment Entry runs PaymentEntry.validate (validate_mandatory,
  validate_reference_documents, validate_payment_against_negative_invoice,
  validate_transaction_reference, set_remarks, validate_duplicate_entry,
  validate_allocated_amount_with_latest_data) and, with ``docstatus: 1``, on_submit
  ("Difference Amount must be zero");
- ``Comment`` is readable and creatable by System Manager and Website Manager only
  (frappe/core/doctype/comment/comment.json); ``frappe.desk.form.utils.add_comment``
  (POST/PUT, five required arguments) and ``frappe.desk.form.load.get_docinfo`` check the
  user's permission on the referenced document instead; Comment.validate sanitises the
  content as HTML and fills an empty ``comment_email`` (frappe/core/doctype/comment/comment.py).

The API key belongs to an **Accounts User**: it reads Sales Invoices, creates and submits
Payment Entries, and has no Comment permission.
"""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from .common import Faults, _compare, _money, _number
from .erpnext_books import (
    ACCOUNTS,
    COMPANY,
    COMPANY_CURRENCY,
    DEFAULT_BANK,
    MODES,
    PaymentTerm,
    SalesInvoice,
    _cents,
    _frappe_error,
    _invalid,
    validate_entry,
)


class ErpNextStandin:
    API_KEY = "a1b2c3d4e5"
    API_SECRET = "f6e7d8c9b0"
    GET_PAYMENT_ENTRY = "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry"
    MODE_ACCOUNT = "erpnext.accounts.doctype.sales_invoice.sales_invoice.get_bank_cash_account"
    ADD_COMMENT = "frappe.desk.form.utils.add_comment"
    GET_DOCINFO = "frappe.desk.form.load.get_docinfo"
    ACCOUNTS: ClassVar[dict[str, tuple[str, str]]] = ACCOUNTS
    DEFAULT_BANK = DEFAULT_BANK
    MODES: ClassVar[dict[str, str | None]] = MODES
    COMMENT_ROLES = frozenset({"System Manager", "Website Manager"})

    def __init__(self) -> None:
        self.url = ""
        self.invoices: dict[str, SalesInvoice] = {}
        self.entries: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.roles = {"Accounts User"}
        self.faults = Faults()
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    def add_invoice(
        self,
        name: str,
        total: str,
        currency: str = "EUR",
        *,
        docstatus: int = 1,
        outstanding: str | None = None,
        payment_terms: list[tuple[str, str]] | None = None,
        conversion_rate: str | None = None,
        party_account_currency: str | None = None,
    ) -> SalesInvoice:
        """``payment_terms``: (term, amount in the invoice's currency), allocated by term.
        ``party_account_currency``: the receivable's, the invoice's by default or the
        company's (ERPNext allows no third one)."""
        party = party_account_currency or currency
        if party not in (currency, COMPANY_CURRENCY):
            raise ValueError(f"a receivable in {party} for an invoice in {currency}")
        invoice = SalesInvoice(
            name,
            "CUST-0001",
            currency,
            Decimal(total),
            Decimal(0),
            docstatus,
            conversion_rate=Decimal(conversion_rate or "1"),
            party_account_currency=party,
            payment_schedule=[PaymentTerm(t, Decimal(a)) for t, a in payment_terms or []],
        )
        if invoice.payment_schedule and sum(t.amount for t in invoice.payment_schedule) != (
            invoice.grand_total
        ):
            raise ValueError(
                "Total Payment Amount in Payment Schedule must be equal to Grand Total"
            )
        invoice.outstanding = Decimal(outstanding) if outstanding else invoice.party_total
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
        app.router.add_route("*", "/api/method/{method}", self._method)
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
        "Sales Invoice": set(SalesInvoice("", "", "", Decimal(0), Decimal(0)).record()),
        "Payment Entry": set(
            [
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
                "custom_remarks",
                "references",
            ]
        ),
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

    def _no_comment_permission(self, what: str) -> web.Response | None:
        if self.roles & self.COMMENT_ROLES:
            return None
        return _frappe_error(403, "PermissionError", f"No permission to {what} Comment")

    async def _list(self, request: web.Request) -> web.Response:
        doctype = request.match_info["doctype"]
        table = self._table(doctype)
        if table is None:
            return _frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        if doctype == "Comment" and (refused := self._no_comment_permission("read")):
            return refused
        known = self.FIELDS[doctype]
        try:
            filters = json.loads(request.query.get("filters", "[]"))
            fields = json.loads(request.query.get("fields", '["name"]'))
            limit = int(request.query.get("limit_page_length", "20"))
        except ValueError:
            return _invalid("filters and fields must be JSON")
        unknown = [f for f in fields if f not in known]
        if unknown:
            return _frappe_error(417, "DataError", f"Field not permitted in query: {unknown[0]}")
        rows = []
        for row in table:
            keep = True
            for item in filters:
                if not isinstance(item, list) or len(item) != 3:
                    return _invalid(f"Invalid filter {item!r}")
                name, op, value = item
                if name not in known:
                    return _frappe_error(417, "DataError", f"Field not permitted in query: {name}")
                if op not in ("=", "!=", "like"):
                    return _invalid(f"Unsupported operator {op}")
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
        if doctype == "Comment" and (refused := self._no_comment_permission("read")):
            return refused
        for row in table:
            if row.get("name") == name:
                return web.json_response({"data": row})
        return _frappe_error(404, "DoesNotExistError", f"{doctype} {name} not found")

    # -- whitelisted methods ---------------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method in ("POST", "PUT") and request.can_read_body:
            body = await request.json()
            if not isinstance(body, dict):
                return _invalid("arguments must be an object")
            args.update(body)
        handlers: dict[str, Callable[[dict[str, Any]], web.Response]] = {
            self.GET_PAYMENT_ENTRY: self._payment_entry,
            self.MODE_ACCOUNT: self._mode_account,
            self.GET_DOCINFO: self._docinfo,
            self.ADD_COMMENT: self._add_comment,
        }
        handler = handlers.get(method)
        if handler is None:
            return _frappe_error(
                404, "DoesNotExistError", f"Failed to get method for command {method}"
            )
        # add_comment is @frappe.whitelist(methods=["POST", "PUT"]); handler.py answers any
        # other method with throw_permission_error.
        if method == self.ADD_COMMENT and request.method not in ("POST", "PUT"):
            return _frappe_error(403, "PermissionError", "Not permitted")
        return handler(args)

    def _mode_account(self, args: dict[str, Any]) -> web.Response:
        # sales_invoice.get_bank_cash_account: the Mode of Payment Account row for the
        # company, else ValidationError.
        mode = args.get("mode_of_payment")
        account = self.MODES.get(str(mode)) if args.get("company") == COMPANY else None
        if not account:
            return _invalid(f"Please set default Cash or Bank account in Mode of Payment {mode}")
        return web.json_response({"message": {"account": account}})

    def _payment_entry(self, args: dict[str, Any]) -> web.Response:
        if args.get("dt") != "Sales Invoice":
            return _invalid("dt must be Sales Invoice")
        invoice = self.invoices.get(str(args.get("dn")))
        if invoice is None:
            return _frappe_error(
                404, "DoesNotExistError", f"Sales Invoice {args.get('dn')} not found"
            )
        party_amount = args.get("party_amount")
        amount = invoice.outstanding if party_amount in (None, "", 0) else _number(party_amount)
        if amount is None:
            return _invalid("party_amount must be a number")
        bank = args.get("bank_account") or self.DEFAULT_BANK
        if bank not in self.ACCOUNTS:
            # get_default_bank_cash_account reads the account's currency off None.
            return _frappe_error(
                500, "AttributeError", "'NoneType' object has no attribute 'account_currency'"
            )
        party_cur, bank_cur = invoice.party_account_currency, self.ACCOUNTS[bank][0]
        rate = invoice.conversion_rate
        # set_payment_type: Receive only while something is outstanding.
        receive = invoice.outstanding > 0
        paid = received = abs(amount)
        if party_cur != bank_cur:
            received = _cents(paid / rate if bank_cur != COMPANY_CURRENCY else paid * rate)
        source = Decimal(1) if party_cur == COMPANY_CURRENCY else rate
        if party_cur == bank_cur:
            target = source
        else:
            target = Decimal(1) if bank_cur == COMPANY_CURRENCY else rate
        base = {
            "reference_doctype": "Sales Invoice",
            "reference_name": invoice.name,
            "total_amount": _money(amount if party_amount else invoice.party_total),
            "outstanding_amount": _money(amount),
            "exchange_rate": float(1 if party_cur == COMPANY_CURRENCY else rate),
        }
        if invoice.payment_schedule:
            references = []
            for term in invoice.payment_schedule:
                left = _cents((term.amount - term.paid) * invoice.factor)
                if left:
                    references.append(
                        {
                            **base,
                            "payment_term": term.term,
                            "payment_term_outstanding": _money(left),
                            "allocated_amount": _money(left),
                        }
                    )
        else:
            references = [{**base, "allocated_amount": _money(amount)}]
        entry = {
            "doctype": "Payment Entry",
            "name": f"new-payment-entry-{next(self._ids)}",
            "__islocal": 1,
            "docstatus": 0,
            "payment_type": "Receive" if receive else "Pay",
            "company": invoice.company,
            "party_type": "Customer",
            "party": invoice.customer,
            "paid_from": invoice.debit_to,
            "paid_from_account_currency": party_cur,
            "paid_to": bank,
            "paid_to_account_currency": bank_cur,
            "paid_amount": _money(paid) if receive else 0.0,
            "received_amount": _money(received) if receive else 0.0,
            "source_exchange_rate": float(source),
            "target_exchange_rate": float(target),
            "mode_of_payment": None,
            "reference_no": None,
            "reference_date": None,
            "custom_remarks": 0,
            "remarks": None,
            "references": references if receive else [],
        }
        return web.json_response({"message": entry})

    # -- inserting (and submitting) a Payment Entry --------------------------------------------

    async def _insert(self, request: web.Request) -> web.Response:
        doctype = request.match_info["doctype"]
        body = await request.json()
        if not isinstance(body, dict):
            return _invalid("the document must be an object")
        if doctype == "Comment":
            return self._no_comment_permission("create") or self._comment(body)
        if doctype != "Payment Entry":
            return _frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        if self.faults.take("concurrency"):
            return _frappe_error(
                417,
                "TimestampMismatchError",
                "Error: Document has been modified after you have opened it. Please refresh to "
                "get the latest document.",
            )
        refused = validate_entry(body, self.invoices)
        if refused is not None:
            return refused
        docstatus = body.get("docstatus", 0)
        name = f"ACC-PAY-2025-{next(self._ids):05d}"
        saved = {
            **{k: v for k, v in body.items() if not k.startswith("__")},
            "name": name,
            "docstatus": docstatus,
        }
        if not body.get("custom_remarks"):
            # set_remarks rebuilds remarks on every validate unless custom_remarks is set.
            saved["remarks"] = (
                f"Amount {body.get('paid_from_account_currency')} {body.get('paid_amount')} "
                f"received from {body.get('party')}\nTransaction reference no "
                f"{body.get('reference_no')} dated {body.get('reference_date')}"
            )
        self.entries.append(saved)
        if docstatus == 1:
            for ref in body["references"]:
                invoice = self.invoices[str(ref["reference_name"])]
                allocated = Decimal(str(_number(ref["allocated_amount"])))
                invoice.outstanding -= allocated
                for term in invoice.payment_schedule:
                    if term.term == ref.get("payment_term"):
                        term.paid += _cents(allocated / invoice.factor)
        if self.faults.take("lose_answer"):
            return web.Response(status=503, text="proxy: upstream went away")
        return web.json_response({"data": saved})

    def _readable(self, doctype: Any, name: Any) -> web.Response | None:
        """frappe.get_doc + check_permission("read"): an Accounts User reads invoices."""
        if doctype != "Sales Invoice" or name not in self.invoices:
            return _frappe_error(404, "DoesNotExistError", f"{doctype} {name} not found")
        return None

    def _docinfo(self, args: dict[str, Any]) -> web.Response:
        doctype, name = args.get("doctype"), args.get("name")
        if refused := self._readable(doctype, name):
            return refused
        # load.add_comments: every Comment of the document, content through Markdown.
        comments = [
            {
                "name": c["name"],
                "creation": "2025-02-01 10:00:00",
                "content": f"<p>{c['content']}</p>\n",
                "owner": "tocsin@acme.example",
                "comment_type": c["comment_type"],
            }
            for c in self.comments
            if c["reference_doctype"] == doctype and c["reference_name"] == name
        ]
        return web.json_response(
            {"docinfo": {"comments": comments, "attachments": [], "communications": []}}
        )

    def _add_comment(self, args: dict[str, Any]) -> web.Response:
        required = ("reference_doctype", "reference_name", "content", "comment_email", "comment_by")
        missing = [k for k in required if k not in args]
        if missing:
            # A whitelisted function called without a required argument: a plain TypeError.
            return _frappe_error(
                500,
                "TypeError",
                f"add_comment() missing {len(missing)} required positional argument(s): "
                + ", ".join(repr(k) for k in missing),
            )
        if refused := self._readable(args["reference_doctype"], args["reference_name"]):
            return refused
        return self._comment({**args, "comment_type": "Comment"}, wrapped="message")

    def _comment(self, body: dict[str, Any], wrapped: str = "data") -> web.Response:
        if not isinstance(body.get("content"), str):
            return _invalid("content must be text")
        # Comment.validate: sanitize_html(content, always_sanitize=True) escapes text that
        # is not an allowed tag (allowed tags such as <p> are not modelled), and an empty
        # comment_email becomes the session user.
        content = html.escape(body["content"], quote=False)
        email = body.get("comment_email") or "tocsin@acme.example"
        saved = {**body, "content": content, "comment_email": email, "name": f"c{next(self._ids)}"}
        self.comments.append(saved)
        return web.json_response({wrapped: saved})
