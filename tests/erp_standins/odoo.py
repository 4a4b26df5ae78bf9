"""The Odoo stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring).

It speaks Odoo 18/19 accounting as read in odoo/odoo (18.0 and master), each claim cited
where it is made:

- errors: JSON-RPC answers HTTP 200 with ``error.data`` = ``serialize_exception(exc)``;
  JSON-2 answers that same body with ``exc.http_status`` for a ``UserError`` (and its
  subclasses), the code of a werkzeug ``HTTPException``, and **500 for anything else** --
  a ``ValueError`` for a wrong field name, a ``TypeError``, a ``ConcurrencyError``
  (odoo/http.py or odoo/http/dispatcher.py ``Json2Dispatcher.handle_error``,
  ``serialize_exception``; odoo/exceptions.py for the statuses);
- ``account.payment.register`` refuses only what ``default_get`` refuses: an invoice with
  nothing left on its receivable line (``amount_residual`` zero). It does **not** look at
  ``payment_state``, nor (18+) at the invoice's state: a draft takes a payment too
  (addons/account/wizard/account_payment_register.py ``default_get``,
  ``_compute_is_register_payment_on_draft``);
- a payment whose payment method has no outstanding account gets **no journal entry**: it
  stays ``in_process``, is linked to the invoice (``matched_payment_ids``/``invoice_ids``),
  and ``amount_residual`` does not move until bank reconciliation; the invoice's
  ``payment_state`` then says "in payment" before anything else
  (addons/account/models/account_payment.py ``action_post``, ``_generate_journal_entry``;
  addons/account/models/account_move.py ``_compute_payment_state``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from .common import Faults, _iso_date, _number
from .odoo_models import (
    NOTHING_LEFT,
    ODOO_FIELDS,
    RECORD_METHODS,
    SIGNATURES,
    WIZARD_FIELDS,
    OdooFault,
    OdooInvoice,
    OdooMessage,
    OdooPayment,
    _check_domain,
    _matches,
    _missing,
    _user_error,
    _value_error,
)


@dataclass
class OdooFaults(Faults):
    """The shared faults, plus ``proxy_500``: a reverse proxy's HTML 500 page (not Odoo's)."""

    proxy_500: int = 0


class OdooStandin:
    """Odoo 18/19 accounting: ``account.move``, ``account.payment``, the register wizard.

    ``in_payment``: Odoo *Accounting* is installed (account_accountant overrides
    ``_get_invoice_in_payment_state`` to answer ``in_payment``); without it, Community's
    ``account`` answers ``paid`` (addons/account/models/account_move.py) and forces an
    outstanding account on every payment, so each one gets a journal entry
    (addons/account/models/account_payment.py ``create``, 18.0).
    """

    DATABASE = "acme"
    LOGIN = "tocsin@acme.example"
    API_KEY = "odoo-key-4c1d9a"
    UID = 7
    JOURNALS: ClassVar[dict[int, str]] = {7: "Bank", 8: "Cash"}

    def __init__(self, *, in_payment: bool = False) -> None:
        self.in_payment = in_payment
        self.url = ""
        self.invoices: dict[int, OdooInvoice] = {}
        self.payments: list[OdooPayment] = []
        self.messages: list[OdooMessage] = []
        self.wizards: dict[int, dict[str, Any]] = {}
        self.faults = OdooFaults()
        self.calls: list[str] = []
        self._ids = itertools.count(101)

    def add_invoice(
        self,
        name: str,
        total: str,
        currency: str = "EUR",
        *,
        state: str = "posted",
        residual: str | None = None,
        payment_state: str | None = None,
        outstanding_account: bool = True,
    ) -> OdooInvoice:
        amount_total = Decimal(total)
        left = Decimal(residual) if residual is not None else amount_total
        if payment_state is None:
            payment_state = "not_paid" if left == amount_total else "partial" if left else "paid"
        invoice = OdooInvoice(
            next(self._ids), name, currency, amount_total, left, state, payment_state
        )
        invoice.outstanding_account = outstanding_account
        self.invoices[invoice.id] = invoice
        return invoice

    def invoice(self, name: str) -> OdooInvoice:
        return next(i for i in self.invoices.values() if i.name == name)

    def payments_for(self, name: str) -> list[OdooPayment]:
        invoice = self.invoice(name)
        return [p for p in self.payments if p.invoice_id == invoice.id]

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
        if self.faults.take("proxy_500"):
            return web.Response(status=500, text="<html><h1>500 Internal Server Error</h1>")
        response: web.StreamResponse = await handler(request)
        return response

    # -- the two APIs ------------------------------------------------------------------------

    async def _jsonrpc(self, request: web.Request) -> web.Response:
        payload = await request.json()
        rpc_id = payload.get("id") if isinstance(payload, dict) else None
        try:
            if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0":
                raise OdooFault("werkzeug.exceptions.BadRequest", "Invalid JSON-RPC request", 400)
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
                raise OdooFault("odoo.exceptions.AccessDenied", "Access Denied")
            if model not in ODOO_FIELDS:
                # odoo/service/model.py execute_cr
                raise _user_error(f"Object {model} doesn't exist")
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
            result = await self._execute(model, name, ids, keywords, context, json2=False)
        except OdooFault as fault:
            return self._rpc_error(rpc_id, fault)
        if result is _LOSE_ANSWER:
            return web.Response(status=503, text="proxy: upstream went away")
        return self._rpc_result(rpc_id, result)

    @staticmethod
    def _rpc_result(rpc_id: Any, result: Any) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})

    @staticmethod
    def _serialized(fault: OdooFault) -> dict[str, Any]:
        # odoo/http.py serialize_exception: name, message, arguments, context, debug.
        return {
            "name": fault.name,
            "message": fault.message,
            "arguments": [fault.message],
            "context": {},
            "debug": f"Traceback (most recent call last):\n{fault.name}: {fault.message}",
        }

    def _rpc_error(self, rpc_id: Any, fault: OdooFault) -> web.Response:
        # JsonRPCDispatcher.handle_error: always HTTP 200, the exception in error.data.
        error = {"code": 200, "message": "Odoo Server Error", "data": self._serialized(fault)}
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
            if model not in ODOO_FIELDS:
                # addons/rpc/controllers/json2.py web_json_2_rpc
                raise OdooFault(
                    "werkzeug.exceptions.NotFound", f"the model {model!r} does not exist", 404
                )
            ids = body.pop("ids", None)
            context = body.pop("context", {}) or {}
            if ids and name in ("search_read", "search_count", "create"):
                raise OdooFault(
                    "werkzeug.exceptions.UnprocessableEntity",
                    f"cannot call {model}.{name} with ids",
                    422,
                )
            result = await self._execute(model, name, ids or [], body, context, json2=True)
        except OdooFault as fault:
            answer = self._serialized(fault)
            if fault.name.startswith("werkzeug."):
                answer["arguments"] = [fault.message, fault.status]
            return web.json_response(answer, status=fault.status)
        if result is _LOSE_ANSWER:
            return web.Response(status=503, text="proxy: upstream went away")
        return web.json_response(result)

    # -- the models --------------------------------------------------------------------------

    async def _execute(
        self,
        model: str,
        method: str,
        ids: Any,
        params: dict[str, Any],
        context: dict[str, Any],
        *,
        json2: bool,
    ) -> Any:
        self.calls.append(f"{model}.{method}")
        if method.startswith("_"):
            raise OdooFault(
                "odoo.exceptions.AccessError",
                f"Private methods (such as {model}.{method}) cannot be called remotely.",
            )
        tables: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "account.move": lambda: [i.record() for i in self.invoices.values()],
            "account.payment": lambda: [p.record() for p in self.payments],
            "mail.message": lambda: [m.record() for m in self.messages],
            "account.payment.register": lambda: [],
        }
        known = {
            "account.move": {"search_read", "search_count", "read", "message_post"},
            "account.payment": {"search_read", "search_count"},
            "mail.message": {"search_read", "search_count"},
            "account.payment.register": {"create", "action_create_payments"},
        }
        if method not in known[model]:
            message = f"The method '{model}.{method}' does not exist"
            if json2:  # json2.py: get_public_method's AttributeError becomes a NotFound
                raise OdooFault("werkzeug.exceptions.NotFound", message, 404)
            raise OdooFault("builtins.AttributeError", message)
        allowed = set(SIGNATURES[method]) | (
            {"body", "message_type", "subtype_xmlid"} if method == "message_post" else set()
        )
        unexpected = set(params) - allowed
        if unexpected:
            message = f"{method}() got an unexpected keyword argument {sorted(unexpected)[0]!r}"
            if json2:  # json2.py: signature.bind's TypeError becomes an UnprocessableEntity
                raise OdooFault("werkzeug.exceptions.UnprocessableEntity", message, 422)
            raise OdooFault("builtins.TypeError", message)
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
            if any(i not in rows for i in ids):
                raise _missing()
            return [self._fields(model, rows[i], params.get("fields")) for i in ids]
        if method == "message_post":
            return self._message_post(ids, params)
        if method == "create":
            return self._create_wizard(params.get("vals_list"), context)
        return self._create_payments(ids)

    @staticmethod
    def _fields(model: str, row: dict[str, Any], fields: Any) -> dict[str, Any]:
        if not fields:
            return row
        unknown = [f for f in fields if f not in ODOO_FIELDS[model]]
        if unknown:
            raise _value_error(f"Invalid field {unknown[0]!r} on model {model!r}")
        return {"id": row["id"], **{f: row[f] for f in fields}}

    def _context_invoices(self, context: dict[str, Any]) -> list[OdooInvoice]:
        if context.get("active_model") != "account.move":
            raise _user_error(
                "The register payment wizard should only be called on account.move or "
                "account.move.line records."
            )
        active = context.get("active_ids")
        if not isinstance(active, list) or not active:
            raise _user_error(
                "You can't open the register payment wizard without at least one "
                "receivable/payable line."
            )
        if any(i not in self.invoices for i in active):
            raise _missing()
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
                raise _value_error(
                    f"Invalid field {sorted(unknown)[0]!r} on model 'account.payment.register'"
                )
            invoices = self._context_invoices(context)
            # default_get keeps the lines with a residual and refuses when none is left;
            # it reads neither payment_state nor (18+) the invoice's state.
            if all(invoice.amount_residual == 0 for invoice in invoices):
                raise _user_error(NOTHING_LEFT)
            # 18: the default amount is what is left on the lines (payments without a
            # journal entry are not subtracted); an explicit amount is taken as given.
            amount = _number(vals.get("amount", invoices[0].amount_residual))
            if amount is None:
                raise _value_error(f"could not convert {vals.get('amount')!r} to float")
            when = vals.get("payment_date", date.today().isoformat())
            if _iso_date(when) is None:
                raise _value_error(f"time data {when!r} does not match format '%Y-%m-%d'")
            journal = vals.get("journal_id", 7)
            if isinstance(journal, bool) or not isinstance(journal, int):
                raise _value_error(
                    f"Wrong value for account.payment.register.journal_id: {journal!r}"
                )
            if journal not in self.JOURNALS:
                raise _missing()
            handling = vals.get("payment_difference_handling", "open")
            if handling not in ("open", "reconcile"):
                raise _value_error(
                    "Wrong value for account.payment.register.payment_difference_handling: "
                    f"{handling!r}"
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

    def _create_payments(self, ids: Any) -> Any:
        if not isinstance(ids, list) or len(ids) != 1:
            raise _value_error(f"Expected singleton: account.payment.register({ids!r})")
        if ids[0] not in self.wizards:
            raise _missing()
        if self.faults.take("concurrency"):
            # Odoo retries serialization failures itself, then gives up with this: not a
            # UserError, so JSON-2 answers 500 (odoo/exceptions.py ConcurrencyError).
            raise OdooFault(
                "odoo.exceptions.ConcurrencyError",
                "could not serialize access due to concurrent update",
            )
        wizard = self.wizards.pop(ids[0])
        invoice = self.invoices[wizard["invoices"][0]]
        if wizard["amount"] < 0:
            raise OdooFault(
                "odoo.exceptions.ValidationError",
                "The operation cannot be completed: The payment amount cannot be negative.",
            )
        # _create_payments re-checks nothing: the wizard's lines were checked at create.
        # Community forces an outstanding account on each payment (account_payment.py
        # create); with Accounting, a method without one gives a payment without entry.
        has_entry = invoice.outstanding_account or not self.in_payment
        sequence = len(self.payments) + 1
        payment = OdooPayment(
            id=next(self._ids),
            name=f"PBNK1/2025/{sequence:05d}" if has_entry else f"PAY/2025/{sequence:05d}",
            memo=wizard["communication"],
            amount=wizard["amount"],
            currency=invoice.currency,
            date=wizard["date"],
            journal_id=wizard["journal_id"],
            invoice_id=invoice.id,
            entry_id=next(self._ids) if has_entry else None,
        )
        self.payments.append(payment)
        # _reconcile_payments only reconciles posted lines; an entry on the outstanding
        # account stays unmatched (in_process) until the bank statement arrives.
        if has_entry and invoice.state == "posted":
            payment.reconciled = True
            invoice.amount_residual = max(Decimal(0), invoice.amount_residual - payment.amount)
        self._compute_payment_state(invoice)
        if self.faults.take("lose_answer"):
            return _LOSE_ANSWER
        return {
            "name": "Payments",
            "type": "ir.actions.act_window",
            "res_model": "account.payment",
            "context": {"create": False},
            "view_mode": "form",
            "res_id": payment.id,
        }

    def _compute_payment_state(self, invoice: OdooInvoice) -> None:
        """account_move.py ``_compute_payment_state`` (18), in its order of tests; then
        account_payment.py ``_compute_state``: an entry-less ``in_process`` payment whose
        invoices all read ``paid`` becomes ``paid``."""
        if invoice.payment_state == "reversed":
            return  # the stand-in does not model reversals: kept as set
        linked = [p for p in self.payments if p.invoice_id == invoice.id]
        reconciled = [p for p in linked if p.reconciled]
        posted = invoice.state == "posted"
        entryless = {p.state for p in linked if p.entry_id is None}
        in_payment = "in_payment" if self.in_payment else "paid"
        if invoice.amount_residual == 0:
            # Entries on an outstanding account are not matched with a bank line yet.
            invoice.payment_state = in_payment if reconciled else "paid"
        elif posted and "in_process" in entryless:
            invoice.payment_state = in_payment
        elif reconciled:
            invoice.payment_state = "partial"
        elif posted and "paid" in entryless:
            invoice.payment_state = in_payment
        else:
            invoice.payment_state = "not_paid"
        settled = invoice.payment_state == "paid"
        for payment in linked:
            if settled and payment.entry_id is None and payment.state == "in_process":
                payment.state = "paid"

    def _message_post(self, ids: Any, params: dict[str, Any]) -> int:
        if not isinstance(ids, list) or len(ids) != 1:
            raise _value_error(f"Expected singleton: account.move({ids!r})")
        if ids[0] not in self.invoices:
            raise _missing()
        body = params.get("body")
        if not isinstance(body, str):
            raise OdooFault("builtins.TypeError", "message_post body must be a string")
        message = OdooMessage(
            next(self._ids), "account.move", ids[0], body, params.get("subtype_xmlid", "")
        )
        self.messages.append(message)
        return message.id


_LOSE_ANSWER: Any = object()
