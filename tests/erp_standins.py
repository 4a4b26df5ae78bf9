"""Stand-ins for the ERPs the erp plugin talks to: real aiohttp servers on 127.0.0.1.

Each implements the call shapes of /work/shared/reference/payment-domain.md section 5
(and the erp plugin's docs) -- Odoo's ``/jsonrpc`` execute_kw and ``/json/2``, Dolibarr's
REST API, ERPNext's resources and ``get_payment_entry`` -- keeps state (invoices with
currency, total, what is left to pay and state; payments with their references; notes),
and refuses what the real systems refuse: a bad key, an unknown model, method or field,
paying a draft or a paid invoice, a value of the wrong type. Where the real system
coerces (Odoo and Frappe read ``"12.5"`` as a number), so do they.

``faults`` injects failures, each used once: an HTTP 503 (``http_503``), the ERP's own
concurrency error (``concurrency``), or a payment booked whose answer is then lost
(``lose_answer``: the ERP commits, the client sees a 503 -- a crash between the two).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from aiohttp import web

from gateway.redis_server import free_port

CURRENCY_IDS = {"EUR": 1, "USD": 2, "JPY": 3, "GBP": 4}


@dataclass
class Faults:
    http_503: int = 0
    concurrency: int = 0
    lose_answer: int = 0

    def take(self, name: str) -> bool:
        left = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Run ``app`` on a free port of 127.0.0.1; yields its root URL."""
    port = free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _number(value: Any) -> Decimal | None:
    """A float field as Odoo/Frappe read it: numbers and numeric strings, never bools."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _iso_date(value: Any) -> date | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _money(value: Decimal) -> float:
    return float(value)


# -- Odoo ------------------------------------------------------------------------------------


class OdooFault(Exception):
    """An Odoo exception: ``name`` is its qualified class name, ``status`` the JSON-2 code."""

    def __init__(self, name: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status


def _user_error(message: str) -> OdooFault:
    return OdooFault("odoo.exceptions.UserError", message, 422)


@dataclass
class OdooInvoice:
    id: int
    name: str
    currency: str
    amount_total: Decimal
    amount_residual: Decimal
    state: str = "posted"  # draft | posted | cancel
    payment_state: str = "not_paid"  # not_paid | partial | in_payment | paid | reversed
    move_type: str = "out_invoice"

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "payment_state": self.payment_state,
            "amount_residual": _money(self.amount_residual),
            "amount_total": _money(self.amount_total),
            "currency_id": [CURRENCY_IDS[self.currency], self.currency],
            "move_type": self.move_type,
        }


@dataclass
class OdooPayment:
    id: int
    name: str
    memo: str
    amount: Decimal
    date: str
    journal_id: int
    move_id: int
    state: str = "paid"
    payment_type: str = "inbound"

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "memo": self.memo,
            "amount": _money(self.amount),
            "date": self.date,
            "journal_id": [self.journal_id, "Bank"],
            "state": self.state,
            "payment_type": self.payment_type,
        }


@dataclass
class OdooMessage:
    id: int
    model: str
    res_id: int
    body: str
    subtype: str

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "res_id": self.res_id, "body": self.body}


WIZARD_FIELDS = {
    "payment_date",
    "amount",
    "journal_id",
    "payment_method_line_id",
    "communication",
    "group_payment",
    "payment_difference_handling",
    "writeoff_account_id",
}
#: Methods called on records: JSON-RPC passes their ids first, JSON-2 as ``ids``.
RECORD_METHODS = {"read", "action_create_payments", "message_post"}
#: Positional parameters of each method, as JSON-RPC may pass them.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "search_read": ("domain", "fields", "offset", "limit", "order"),
    "search_count": ("domain", "limit"),
    "read": ("fields", "load"),
    "create": ("vals_list",),
    "action_create_payments": (),
    "message_post": (),
}


def _compare(actual: Any, op: str, value: Any) -> bool:
    if op == "=":
        return bool(actual == value)
    if op == "!=":
        return bool(actual != value)
    if op == "in":
        return actual in value
    if op == "not in":
        return actual not in value
    if op in ("ilike", "like"):
        pattern = str(value).strip("%")
        text = str(actual)
        return pattern.lower() in text.lower() if op == "ilike" else pattern in text
    raise OdooFault("builtins.ValueError", f"Invalid leaf operator {op!r}")


#: Each model's fields (what a domain or ``fields`` may name): Odoo 18's names.
ODOO_FIELDS = {
    "account.move": {
        "id",
        "name",
        "state",
        "payment_state",
        "amount_residual",
        "amount_total",
        "currency_id",
        "move_type",
    },
    "account.payment": {
        "id",
        "name",
        "memo",
        "amount",
        "date",
        "journal_id",
        "state",
        "payment_type",
    },
    "mail.message": {"id", "model", "res_id", "body"},
    "account.payment.register": set(),
}


def _check_domain(model: str, domain: Any) -> None:
    if not isinstance(domain, list):
        raise OdooFault("builtins.ValueError", f"Invalid domain: {domain!r}")
    for leaf in domain:
        if not isinstance(leaf, list | tuple) or len(leaf) != 3:
            # Only implicit AND: the plugin never sends "|" or "!" (a stand-in limit).
            raise OdooFault("builtins.ValueError", f"Invalid leaf {leaf!r}")
        if leaf[0] not in ODOO_FIELDS[model]:
            raise OdooFault(
                "builtins.ValueError", f"Invalid field {model}.{leaf[0]} in leaf {leaf!r}"
            )
        if leaf[1] not in ("=", "!=", "in", "not in", "ilike", "like"):
            raise OdooFault("builtins.ValueError", f"Invalid leaf operator {leaf[1]!r}")


def _matches(record: dict[str, Any], domain: list[Any]) -> bool:
    for name, op, value in domain:
        actual = record[name]
        if isinstance(actual, list) and len(actual) == 2:  # many2one compares its id
            actual = actual[0]
        if not _compare(actual, op, value):
            return False
    return True


class OdooStandin:
    """Odoo 18/19 accounting: ``account.move``, ``account.payment``, the register wizard."""

    DATABASE = "acme"
    LOGIN = "tocsin@acme.example"
    API_KEY = "odoo-key-4c1d9a"
    UID = 7
    JOURNALS: ClassVar[dict[int, str]] = {7: "Bank", 8: "Cash"}

    def __init__(self, *, in_payment: bool = False) -> None:
        #: Like a journal with an outstanding-receipts account: paid invoices are "in_payment".
        self.in_payment = in_payment
        self.url = ""
        self.invoices: dict[int, OdooInvoice] = {}
        self.payments: list[OdooPayment] = []
        self.messages: list[OdooMessage] = []
        self.wizards: dict[int, dict[str, Any]] = {}
        self.faults = Faults()
        self.calls: list[str] = []
        self._ids = itertools.count(101)

    def add_invoice(
        self,
        name: str,
        amount: str,
        currency: str = "EUR",
        *,
        state: str = "posted",
        residual: str | None = None,
        payment_state: str | None = None,
    ) -> OdooInvoice:
        total = Decimal(amount)
        left = Decimal(residual) if residual is not None else total
        if payment_state is None:
            payment_state = "not_paid" if left == total else "partial" if left else "paid"
        invoice = OdooInvoice(next(self._ids), name, currency, total, left, state, payment_state)
        self.invoices[invoice.id] = invoice
        return invoice

    def invoice(self, name: str) -> OdooInvoice:
        return next(i for i in self.invoices.values() if i.name == name)

    def payments_for(self, name: str) -> list[OdooPayment]:
        invoice = self.invoice(name)
        return [p for p in self.payments if p.move_id == invoice.id]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults])
        app.router.add_post("/jsonrpc", self._jsonrpc)
        app.router.add_post("/json/2/{model}/{method}", self._json2)
        return app

    @web.middleware
    async def _faults(
        self, request: web.Request, handler: Callable[..., Any]
    ) -> web.StreamResponse:
        if self.faults.take("http_503"):
            return web.Response(status=503, text="<html>503 Service Unavailable</html>")
        response: web.StreamResponse = await handler(request)
        return response

    # -- the two APIs ------------------------------------------------------------------------

    async def _jsonrpc(self, request: web.Request) -> web.Response:
        payload = await request.json()
        rpc_id = payload.get("id") if isinstance(payload, dict) else None
        try:
            if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0":
                raise OdooFault("werkzeug.exceptions.BadRequest", "Invalid JSON-RPC request")
            params = payload.get("params") or {}
            service, method, args = params.get("service"), params.get("method"), params.get("args")
            if not isinstance(args, list):
                raise OdooFault("builtins.TypeError", "args must be a list")
            if service == "common" and method == "authenticate":
                db, login, key = args[0], args[1], args[2]
                ok = db == self.DATABASE and login == self.LOGIN and key == self.API_KEY
                return self._rpc_result(rpc_id, self.UID if ok else False)
            if service != "object" or method != "execute_kw":
                raise OdooFault("builtins.NameError", f"{service}.{method} is not a service method")
            db, uid, key, model, name = args[:5]
            positional = args[5] if len(args) > 5 else []
            keywords = dict(args[6]) if len(args) > 6 and args[6] else {}
            if db != self.DATABASE:
                raise OdooFault("psycopg2.OperationalError", f'database "{db}" does not exist')
            if uid != self.UID or key != self.API_KEY:
                raise OdooFault("odoo.exceptions.AccessDenied", "Access Denied", 401)
            ids = None
            if name in RECORD_METHODS:
                if not positional:
                    raise OdooFault("builtins.TypeError", f"{name}() missing the record ids")
                ids, positional = positional[0], positional[1:]
            signature = SIGNATURES.get(name, ())
            if len(positional) > len(signature):
                raise OdooFault("builtins.TypeError", f"{name}() takes too many arguments")
            keywords.update(zip(signature, positional, strict=False))
            context = keywords.pop("context", {}) or {}
            result = await self._execute(model, name, ids, keywords, context)
        except OdooFault as fault:
            return self._rpc_error(rpc_id, fault)
        if result is _LOSE_ANSWER:
            return web.Response(status=503, text="proxy: upstream went away")
        return self._rpc_result(rpc_id, result)

    @staticmethod
    def _rpc_result(rpc_id: Any, result: Any) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})

    @staticmethod
    def _rpc_error(rpc_id: Any, fault: OdooFault) -> web.Response:
        error = {
            "code": 200,
            "message": "Odoo Server Error",
            "data": {
                "name": fault.name,
                "debug": f"Traceback (most recent call last):\n{fault.name}: {fault.message}",
                "message": fault.message,
                "arguments": [fault.message],
                "context": {},
            },
        }
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "error": error})

    async def _json2(self, request: web.Request) -> web.Response:
        model, name = request.match_info["model"], request.match_info["method"]
        try:
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or key != self.API_KEY:
                raise OdooFault("werkzeug.exceptions.Unauthorized", "Invalid apikey", 401)
            database = request.headers.get("X-Odoo-Database", self.DATABASE)
            if database != self.DATABASE:
                raise OdooFault("werkzeug.exceptions.NotFound", "Database not found", 404)
            body = await request.json()
            if not isinstance(body, dict):
                raise OdooFault("werkzeug.exceptions.BadRequest", "the body must be an object", 400)
            ids = body.pop("ids", None)
            context = body.pop("context", {}) or {}
            if name in RECORD_METHODS and ids is None:
                raise OdooFault("builtins.TypeError", f"{name}() needs ids", 422)
            result = await self._execute(model, name, ids, body, context)
        except OdooFault as fault:
            return web.json_response(
                {
                    "name": fault.name,
                    "message": fault.message,
                    "arguments": [fault.message, fault.status],
                    "context": {},
                    "debug": f"{fault.name}: {fault.message}",
                },
                status=fault.status,
            )
        if result is _LOSE_ANSWER:
            return web.Response(status=503, text="proxy: upstream went away")
        return web.json_response(result)

    # -- the models --------------------------------------------------------------------------

    async def _execute(
        self, model: str, method: str, ids: Any, params: dict[str, Any], context: dict[str, Any]
    ) -> Any:
        self.calls.append(f"{model}.{method}")
        if method.startswith("_"):
            raise OdooFault(
                "odoo.exceptions.AccessError",
                f"Private methods (such as {model}.{method}) cannot be called remotely.",
                403,
            )
        tables: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "account.move": lambda: [i.record() for i in self.invoices.values()],
            "account.payment": lambda: [p.record() for p in self.payments],
            "mail.message": lambda: [m.record() for m in self.messages],
            "account.payment.register": lambda: [],
        }
        if model not in tables:
            raise _user_error(f"Object {model} doesn't exist")
        known = {
            "account.move": {"search_read", "search_count", "read", "message_post"},
            "account.payment": {"search_read", "search_count"},
            "mail.message": {"search_read", "search_count"},
            "account.payment.register": {"create", "action_create_payments"},
        }
        if method not in known[model]:
            raise OdooFault(
                "builtins.AttributeError", f"The method '{model}.{method}' does not exist", 404
            )
        allowed = set(SIGNATURES[method]) | (
            {"body", "message_type", "subtype_xmlid"} if method == "message_post" else set()
        )
        unexpected = set(params) - allowed
        if unexpected:
            raise OdooFault(
                "builtins.TypeError",
                f"{method}() got an unexpected keyword argument {sorted(unexpected)[0]!r}",
            )
        if method in ("search_read", "search_count"):
            domain = params.get("domain", [])
            _check_domain(model, domain)
            rows = [r for r in tables[model]() if _matches(r, domain)]
            if method == "search_count":
                return len(rows)
            limit = params.get("limit")
            rows = rows[: int(limit)] if limit else rows
            return [self._fields(model, row, params.get("fields")) for row in rows]
        if method == "read":
            rows = {r["id"]: r for r in tables[model]()}
            missing = [i for i in ids if i not in rows]
            if missing:
                raise OdooFault(
                    "odoo.exceptions.MissingError",
                    "Record does not exist or has been deleted.",
                    404,
                )
            return [self._fields(model, rows[i], params.get("fields")) for i in ids]
        if method == "message_post":
            return self._message_post(ids, params)
        if method == "create":
            return self._create_wizard(params.get("vals_list"), context)
        return self._create_payments(ids, context)

    @staticmethod
    def _fields(model: str, row: dict[str, Any], fields: Any) -> dict[str, Any]:
        if not fields:
            return row
        unknown = [f for f in fields if f not in ODOO_FIELDS[model]]
        if unknown:
            raise OdooFault(
                "builtins.ValueError", f"Invalid field {unknown[0]!r} on model {model!r}"
            )
        return {"id": row["id"], **{f: row[f] for f in fields}}

    def _context_invoices(self, context: dict[str, Any]) -> list[OdooInvoice]:
        if context.get("active_model") != "account.move":
            raise _user_error(
                "The register payment wizard should only be called on account.move or "
                "account.move.line records."
            )
        active = context.get("active_ids")
        if not isinstance(active, list) or not active:
            raise _user_error("The register payment wizard needs active_ids.")
        if any(i not in self.invoices for i in active):
            raise OdooFault(
                "odoo.exceptions.MissingError", "Record does not exist or has been deleted.", 404
            )
        return [self.invoices[i] for i in active]

    def _create_wizard(self, vals_list: Any, context: dict[str, Any]) -> Any:
        single = isinstance(vals_list, dict)
        records = [vals_list] if single else vals_list
        if not isinstance(records, list) or not all(isinstance(v, dict) for v in records):
            raise OdooFault("builtins.TypeError", "create() takes a dict or a list of dicts")
        created = []
        for vals in records:
            unknown = set(vals) - WIZARD_FIELDS
            if unknown:
                raise OdooFault(
                    "builtins.ValueError",
                    f"Invalid field {sorted(unknown)[0]!r} on model 'account.payment.register'",
                )
            invoices = self._context_invoices(context)
            for invoice in invoices:
                if invoice.state != "posted":
                    raise _user_error("You can only register payment for posted journal entries.")
                if invoice.payment_state in ("paid", "in_payment", "reversed") or (
                    invoice.amount_residual <= 0
                ):
                    raise _user_error(
                        "You can't register a payment because there is nothing left to pay on "
                        "the selected journal items."
                    )
            amount = _number(vals.get("amount", invoices[0].amount_residual))
            if amount is None or amount <= 0:
                raise OdooFault(
                    "builtins.ValueError", f"Wrong value for amount: {vals.get('amount')!r}"
                )
            when = vals.get("payment_date", date.today().isoformat())
            if _iso_date(when) is None:
                raise OdooFault(
                    "builtins.ValueError",
                    f"time data {when!r} does not match format '%Y-%m-%d'",
                )
            journal = vals.get("journal_id", 7)
            if isinstance(journal, bool) or not isinstance(journal, int):
                raise OdooFault(
                    "builtins.ValueError",
                    f"Wrong value for account.payment.register.journal_id: {journal!r}",
                )
            if journal not in self.JOURNALS:
                raise OdooFault(
                    "odoo.exceptions.MissingError",
                    "Record does not exist or has been deleted.",
                    404,
                )
            if vals.get("payment_difference_handling", "open") not in ("open", "reconcile"):
                raise OdooFault(
                    "builtins.ValueError",
                    "Wrong value for payment_difference_handling: "
                    f"{vals.get('payment_difference_handling')!r}",
                )
            wizard_id = next(self._ids)
            self.wizards[wizard_id] = {
                "invoices": [i.id for i in invoices],
                "amount": amount,
                "date": when,
                "journal_id": journal,
                "communication": str(vals.get("communication") or invoices[0].name),
            }
            created.append(wizard_id)
        return created[0] if single else created

    def _create_payments(self, ids: Any, context: dict[str, Any]) -> Any:
        if not isinstance(ids, list) or any(i not in self.wizards for i in ids):
            raise OdooFault(
                "odoo.exceptions.MissingError", "Record does not exist or has been deleted.", 404
            )
        if self.faults.take("concurrency"):
            # Odoo retries serialization failures itself, then gives up with this.
            raise OdooFault(
                "odoo.exceptions.ConcurrencyError",
                "could not serialize access due to concurrent update",
                409,
            )
        payment = None
        for wizard_id in ids:
            wizard = self.wizards.pop(wizard_id)
            invoice = self.invoices[wizard["invoices"][0]]
            if invoice.state != "posted" or invoice.amount_residual <= 0:
                raise _user_error(
                    "You can't register a payment because there is nothing left to pay on the "
                    "selected journal items."
                )
            payment = OdooPayment(
                id=next(self._ids),
                name=f"PBNK1/2025/{len(self.payments) + 1:05d}",
                memo=wizard["communication"],
                amount=wizard["amount"],
                date=wizard["date"],
                journal_id=wizard["journal_id"],
                move_id=invoice.id,
            )
            self.payments.append(payment)
            invoice.amount_residual = max(Decimal(0), invoice.amount_residual - payment.amount)
            if invoice.amount_residual > 0:
                invoice.payment_state = "partial"
            else:
                invoice.payment_state = "in_payment" if self.in_payment else "paid"
        if self.faults.take("lose_answer"):
            return _LOSE_ANSWER
        assert payment is not None
        return {
            "name": "Payments",
            "type": "ir.actions.act_window",
            "res_model": "account.payment",
            "context": {"create": False},
            "view_mode": "form",
            "res_id": payment.id,
        }

    def _message_post(self, ids: Any, params: dict[str, Any]) -> int:
        if not isinstance(ids, list) or len(ids) != 1 or ids[0] not in self.invoices:
            raise OdooFault(
                "odoo.exceptions.MissingError", "Record does not exist or has been deleted.", 404
            )
        body = params.get("body")
        if not isinstance(body, str):
            raise OdooFault("builtins.TypeError", "message_post body must be a string")
        message = OdooMessage(
            next(self._ids), "account.move", ids[0], body, params.get("subtype_xmlid", "")
        )
        self.messages.append(message)
        return message.id


_LOSE_ANSWER: Any = object()


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


# -- an in-house REST system -----------------------------------------------------------------


@dataclass
class InHouseStandin:
    """What ops point a ``call`` at: records each request, dedupes on Idempotency-Key."""

    TOKEN = "inhouse-token-9f"
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    #: Answer this status to the next request (then 201 again).
    status_once: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        if self.faults.take("http_503"):
            return web.Response(status=503, headers={"Retry-After": "1"})
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.status_once is not None:
            status, self.status_once = self.status_once, None
            return web.json_response({"error": "refused"}, status=status)
        raw = await request.read()
        body = json.loads(raw) if raw else None
        key = request.headers.get("Idempotency-Key")
        if key is not None and any(r["key"] == key for r in self.requests):
            return web.json_response({"duplicate": True}, status=200)
        self.requests.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "key": key,
                "content_type": request.headers.get("Content-Type"),
                "body": body,
            }
        )
        return web.json_response({"ok": True}, status=201)
