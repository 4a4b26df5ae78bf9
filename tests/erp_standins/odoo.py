"""The Odoo stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from .common import CURRENCY_IDS, Faults, _iso_date, _money, _number
from .common import _compare as _compare_values

# -- Odoo ------------------------------------------------------------------------------------

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


def _compare(actual: Any, op: str, value: Any) -> bool:
    try:
        return _compare_values(actual, op, value)
    except ValueError as exc:
        raise OdooFault("builtins.ValueError", str(exc)) from None


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
