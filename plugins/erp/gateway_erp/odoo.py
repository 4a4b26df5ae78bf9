"""Odoo: the ``account.payment.register`` wizard, over JSON-RPC (<= 18) or JSON-2 (>= 19).

Registering a payment is what the "Register Payment" button does:

1. ``account.move`` ``search_read``: the customer invoice (``move_type = out_invoice``)
   whose ``name`` is the reference, in any state (so a draft or cancelled one is named);
   on Odoo 18+, when it reads "in payment" (or "paid") with something left in
   ``amount_residual``, its payments without a journal entry (below);
2. ``account.payment`` ``search_read``: an inbound payment whose memo is the provider's
   id -- if one exists the payment was booked before (a redelivery): nothing to do;
3. ``account.payment.register`` ``create`` in the invoice's context (``active_model``,
   ``active_ids``) with amount, date, journal and the reference as memo (communication),
   then ``action_create_payments``;
4. ``account.move`` ``read``: ``payment_state`` and ``amount_residual`` afterwards.

What is still due is not ``payment_state`` alone. On Odoo 18+, a payment method without
an outstanding account books a payment with no journal entry: it stays ``in_process``,
``amount_residual`` does not move until bank reconciliation, and the invoice reads
``in_payment`` (``paid`` on Community) at once (addons/account/models/account_move.py
``_compute_payment_state``; account_payment.py ``action_post``). The wizard still takes
more payments on it (account_payment_register.py ``default_get`` refuses only a zero
residual). So still due = ``amount_residual`` minus those entry-less payments.

JSON-RPC answers errors inside an HTTP 200 (``error.data.name`` is the Python exception);
JSON-2 answers Odoo's own error body with the ``UserError``'s status, a werkzeug error's
code, or **500 for any other exception** -- a wrong field name is a ``ValueError``
(odoo/http.py ``Json2Dispatcher.handle_error``). Both are classified by that name:
serialization failures and lock errors (Odoo already retried them) are transient, the
rest is not; a 5xx without Odoo's error body (a proxy's page) is transient.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from gateway import DeliveryError, PermanentError, TransientError

from .booking import Booking
from .config import OdooOptions
from .connector import Invoice, InvoiceConnector, InvoiceState, Step, http_failure
from .money import parse_erp_amount
from .transport import Answer, Transport, excerpt

INVOICE_FIELDS = [
    "id",
    "name",
    "state",
    "payment_state",
    "amount_residual",
    "amount_total",
    "currency_id",
]
PENDING_FIELDS = ["id", "name", "memo", "amount", "currency_id", "state"]
#: Payment states in which an invoice may have entry-less payments not in its residual.
PENDING_PAYMENT_STATES = ("in_payment", "paid")
#: Payments in these states do not count as booked (Odoo <= 17 says cancel, 18 canceled).
DEAD_PAYMENT_STATES = ["cancel", "canceled", "rejected"]
#: Exceptions (or messages) of a transaction that lost a race: worth another try.
CONCURRENCY_MARKERS = (
    "SerializationFailure",
    "TransactionRollbackError",
    "LockNotAvailable",
    "DeadlockDetected",
    "ConcurrencyError",
    "LockError",
    "could not serialize access",
    "could not obtain lock",
)

#: Statuses a gateway or proxy answers in front of Odoo: worth another try whatever the body.
GATEWAY_STATUSES = (502, 503, 504)

_show = msgspec.json.Encoder(decimal_format="number")


def odoo_error(what: str, name: str, message: str, answer: Answer | None) -> DeliveryError:
    """``name`` is the exception's qualified class name from Odoo's error body, or ``""``
    when the answer is not Odoo's (a proxy's HTML page)."""
    said = f"{name}: {excerpt(message)}" if name else excerpt(message)
    status = answer.status if answer is not None else None
    if any(marker in name or marker in message for marker in CONCURRENCY_MARKERS):
        return TransientError(f"{what}: {said} (a concurrent update; retried)", status=status)
    if answer is not None and not answer.ok:
        if not name or answer.status < 500 or answer.status in GATEWAY_STATUSES:
            return http_failure(answer, said)
        # JSON-2 answers 500 for every exception that is not a UserError (a ValueError
        # for a field that does not exist, a TypeError...): a conf or data mistake that
        # another try will not fix.
        return PermanentError(f"{answer.what}: HTTP {answer.status}: {said}", status=status)
    return PermanentError(f"{what}: {said}")


class OdooRpc(ABC):
    """``execute(model, method, ids, **params)`` over one of Odoo's two APIs."""

    label: ClassVar[str]

    def __init__(self, transport: Transport, options: OdooOptions) -> None:
        self.transport = transport
        self.options = options

    @abstractmethod
    async def execute(
        self,
        model: str,
        method: str,
        ids: list[int] | None = None,
        positional: Sequence[str] = (),
        **params: Any,
    ) -> Any:
        """Call ``model.method``. ``positional`` names the params JSON-RPC passes by position."""

    @abstractmethod
    def show(
        self,
        model: str,
        method: str,
        ids: list[Any] | None = None,
        positional: Sequence[str] = (),
        **params: Any,
    ) -> str:
        """The request ``execute`` would send, as text (the key masked)."""


class JsonRpc(OdooRpc):
    """``POST /jsonrpc``: ``object.execute_kw(db, uid, key, model, method, args, kwargs)``."""

    label = "JSON-RPC"

    def __init__(self, transport: Transport, options: OdooOptions) -> None:
        super().__init__(transport, options)
        self._uid = options.uid
        self._ids = itertools.count(1)

    async def _call(self, service: str, method: str, args: list[Any], what: str) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": next(self._ids),
        }
        answer = await self.transport.request("POST", "/jsonrpc", json=body)
        if not answer.ok:
            raise http_failure(answer)
        payload = answer.json()
        if not isinstance(payload, dict):
            raise PermanentError(f"{what}: not a JSON-RPC answer: {excerpt(answer.body)!r}")
        error = payload.get("error")
        if error is not None:
            data = error.get("data") if isinstance(error, dict) else None
            data = data if isinstance(data, dict) else {}
            name = str(data.get("name") or "")
            message = str(data.get("message") or (error.get("message") if error else "") or "")
            raise odoo_error(what, name, message, answer)
        return payload.get("result")

    async def uid(self) -> int:
        if self._uid is None:
            opts = self.options
            what = "odoo common.authenticate"
            args = [opts.database, opts.login, opts.api_key.reveal(), {}]
            result = await self._call("common", "authenticate", args, what)
            if isinstance(result, bool) or not isinstance(result, int) or result <= 0:
                raise PermanentError(
                    f"{what}: login {opts.login!r} on database {opts.database!r} was refused "
                    "(check the login and the API key)"
                )
            self._uid = result
        return self._uid

    def _args(
        self, ids: list[Any] | None, positional: Sequence[str], params: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = [] if ids is None else [ids]
        args.extend(params.pop(name) for name in positional)
        return args, params

    async def execute(
        self,
        model: str,
        method: str,
        ids: list[int] | None = None,
        positional: Sequence[str] = (),
        **params: Any,
    ) -> Any:
        args, kwargs = self._args(ids, positional, dict(params))
        uid = await self.uid()
        call = [self.options.database, uid, self.options.api_key.reveal(), model, method]
        what = f"odoo {model}.{method}"
        return await self._call("object", "execute_kw", [*call, args, kwargs], what)

    def show(
        self,
        model: str,
        method: str,
        ids: list[Any] | None = None,
        positional: Sequence[str] = (),
        **params: Any,
    ) -> str:
        args, kwargs = self._args(ids, positional, dict(params))
        uid = self.options.uid if self.options.uid is not None else "<uid>"
        return (
            f"POST /jsonrpc object.execute_kw({self.options.database!r}, {uid}, <api key>, "
            f"{model!r}, {method!r}, {_show.encode(args).decode()}, "
            f"{_show.encode(kwargs).decode()})"
        )


class Json2(OdooRpc):
    """``POST /json/2/<model>/<method>`` with ``Authorization: bearer <key>``, named params."""

    label = "JSON-2"

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"bearer {self.options.api_key.reveal()}"}
        if self.options.database:
            headers["X-Odoo-Database"] = self.options.database
        return headers

    @staticmethod
    def _body(ids: list[Any] | None, params: dict[str, Any]) -> dict[str, Any]:
        return params if ids is None else {"ids": ids, **params}

    async def execute(
        self,
        model: str,
        method: str,
        ids: list[int] | None = None,
        positional: Sequence[str] = (),
        **params: Any,
    ) -> Any:
        path = f"/json/2/{model}/{method}"
        body = self._body(ids, params)
        answer = await self.transport.request("POST", path, json=body, headers=self.headers())
        if answer.ok:
            return answer.json()
        payload = answer.json_or_none()
        # Odoo's serialize_exception: {name, message, arguments, context, debug}.
        odoo_body = isinstance(payload, dict) and "name" in payload and "message" in payload
        payload = payload if odoo_body else {}
        name = str(payload.get("name") or "")
        message = str(payload.get("message") or excerpt(answer.body))
        raise odoo_error(f"odoo {model}.{method}", name, message, answer)

    def show(
        self,
        model: str,
        method: str,
        ids: list[Any] | None = None,
        positional: Sequence[str] = (),
        **params: Any,
    ) -> str:
        body = _show.encode(self._body(ids, params)).decode()
        return f"POST /json/2/{model}/{method} {body}"


def _many2one_name(value: Any) -> str:
    # Odoo reads a many2one as [id, display_name]; a currency's display name is its code.
    if isinstance(value, list) and len(value) == 2:
        return str(value[1])
    return "?"


class Odoo(InvoiceConnector):
    name = "odoo"

    def __init__(self, transport: Transport, options: OdooOptions) -> None:
        super().__init__(transport)
        self.options = options
        self.rpc: OdooRpc = (
            JsonRpc(transport, options) if options.api == "jsonrpc" else Json2(transport, options)
        )

    def describe(self) -> str:
        return f"odoo ({self.rpc.label}) at {self.transport.base_url}"

    def auth_headers(self) -> dict[str, str]:
        if isinstance(self.rpc, Json2):
            return self.rpc.headers()
        raise PermanentError("odoo: calls need api = 'json2'")

    # -- the ERP's calls ---------------------------------------------------------------------

    @staticmethod
    def _invoice_domain(ref: str) -> list[list[Any]]:
        return [["move_type", "=", "out_invoice"], ["name", "=", ref]]

    def _payment_domain(self, reference: str) -> list[list[Any]]:
        return [
            [self.options.reference_field, "=", reference],
            ["payment_type", "=", "inbound"],
            ["state", "not in", DEAD_PAYMENT_STATES],
        ]

    @staticmethod
    def _context(invoice_id: Any) -> dict[str, Any]:
        return {"active_model": "account.move", "active_ids": [invoice_id]}

    def _wizard_values(self, booking: Booking) -> dict[str, Any]:
        values: dict[str, Any] = {
            "payment_date": booking.paid_on.isoformat(),
            "amount": booking.amount,
            "communication": booking.reference,
            # A partial payment leaves the invoice open ("partial"), never written off.
            "payment_difference_handling": "open",
        }
        if self.options.journal_id is not None:
            values["journal_id"] = self.options.journal_id
        if self.options.payment_method_line_id is not None:
            values["payment_method_line_id"] = self.options.payment_method_line_id
        return values

    def _pending_domain(self, invoice_id: Any) -> list[list[Any]]:
        return [
            ["invoice_ids", "in", [invoice_id]],
            ["move_id", "=", False],
            ["state", "in", ["in_process", "paid"]],
            ["payment_type", "=", "inbound"],
        ]

    @staticmethod
    def _needs_pending(row: dict[str, Any], residual: Decimal) -> bool:
        """Whether the invoice may have payments not in its residual: Odoo 18's
        ``_compute_payment_state`` says "in payment" (``paid`` on Community) before anything
        else when one is ``in_process`` without an entry. Odoo <= 17 reads so only at a
        zero residual, so it never makes this call (its payments have no ``invoice_ids``)."""
        return (
            row.get("state") == "posted"
            and row.get("payment_state") in PENDING_PAYMENT_STATES
            and residual > 0
        )

    async def _pending(self, invoice_id: Any) -> list[dict[str, Any]]:
        rows = await self.rpc.execute(
            "account.payment",
            "search_read",
            positional=["domain"],
            domain=self._pending_domain(invoice_id),
            fields=PENDING_FIELDS,
        )
        if not isinstance(rows, list):
            raise PermanentError(f"odoo account.payment.search_read: not a list: {rows!r:.100}")
        return [row for row in rows if isinstance(row, dict)]

    async def _invoice(self, row: Any) -> Invoice:
        if not isinstance(row, dict) or "id" not in row:
            raise PermanentError(f"odoo account.move: unexpected record {excerpt(repr(row))}")
        currency = _many2one_name(row.get("currency_id"))
        residual = parse_erp_amount(row.get("amount_residual"), currency)
        if residual is None:
            raise PermanentError(f"odoo: invoice {row.get('name')!r} has no amount_residual")
        total = parse_erp_amount(row.get("amount_total"), currency)
        state, payment_state = row.get("state"), row.get("payment_state")
        status = f"state {state}, payment_state {payment_state}"
        pending, unsupported = Decimal(0), None
        if self._needs_pending(row, residual):
            for payment in await self._pending(row["id"]):
                paid_in = _many2one_name(payment.get("currency_id"))
                amount = parse_erp_amount(payment.get("amount"), paid_in)
                if paid_in != currency or amount is None:
                    unsupported = (
                        f"invoice {row.get('name')} has a payment without a journal entry in "
                        f"{paid_in} ({payment.get('name')}): what is still due cannot be told"
                    )
                    continue
                # An entry-less payment already "paid" may have been matched with a bank
                # line since (then it is in the residual): Odoo itself counts it only
                # while nothing is reconciled, and so does this.
                if payment.get("state") == "in_process" or residual == total:
                    pending += amount
            if pending:
                status += f"; {pending} {currency} in payments without a journal entry yet"
        due = max(Decimal(0), residual - pending)
        if state == "draft":
            normalised = InvoiceState.DRAFT
        elif state == "cancel":
            normalised = InvoiceState.CANCELLED
        elif payment_state == "reversed":
            normalised = InvoiceState.NOT_PAYABLE
        elif due <= 0:
            normalised = InvoiceState.PAID
        else:
            normalised = InvoiceState.OPEN
        return Invoice(
            id=row["id"],
            number=str(row.get("name")),
            state=normalised,
            status=status,
            currency=currency,
            residual=due,
            unsupported=unsupported,
        )

    async def find_invoice(self, ref: str) -> Invoice | None:
        rows = await self.rpc.execute(
            "account.move",
            "search_read",
            positional=["domain"],
            domain=self._invoice_domain(ref),
            fields=INVOICE_FIELDS,
            limit=2,
        )
        if not isinstance(rows, list):
            raise PermanentError(f"odoo account.move.search_read: not a list: {rows!r:.100}")
        if len(rows) > 1:
            raise PermanentError(f"odoo: several customer invoices are named {ref!r}")
        return await self._invoice(rows[0]) if rows else None

    async def find_payment(self, invoice: Invoice, reference: str) -> str | None:
        rows = await self.rpc.execute(
            "account.payment",
            "search_read",
            positional=["domain"],
            domain=self._payment_domain(reference),
            fields=["id", "name", "state"],
            limit=1,
        )
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            return f"{rows[0].get('name')} (id {rows[0].get('id')}, {rows[0].get('state')})"
        return None

    async def pay(self, invoice: Invoice, booking: Booking, *, full: bool) -> str:
        context = self._context(invoice.id)
        created = await self.rpc.execute(
            "account.payment.register",
            "create",
            positional=["vals_list"],
            vals_list=[self._wizard_values(booking)],
            context=context,
        )
        wizard = created[0] if isinstance(created, list) and created else created
        if isinstance(wizard, bool) or not isinstance(wizard, int):
            raise PermanentError(f"odoo account.payment.register.create: got {created!r:.100}")
        action = await self.rpc.execute(
            "account.payment.register", "action_create_payments", [wizard], context=context
        )
        if isinstance(action, dict) and action.get("res_model") == "account.payment":
            return f"account.payment {action.get('res_id')}"
        return f"account.payment from wizard {wizard}"

    async def reload(self, invoice: Invoice) -> Invoice:
        rows = await self.rpc.execute(
            "account.move", "read", [int(invoice.id)], fields=INVOICE_FIELDS
        )
        if not isinstance(rows, list) or not rows:
            raise PermanentError(f"odoo: invoice {invoice.number} vanished after the payment")
        return await self._invoice(rows[0])

    def _note_domain(self, invoice_id: Any, marker: str) -> list[list[Any]]:
        return [
            ["model", "=", "account.move"],
            ["res_id", "=", invoice_id],
            ["body", "ilike", marker],
        ]

    async def has_note(self, invoice: Invoice, marker: str) -> bool:
        rows = await self.rpc.execute(
            "mail.message",
            "search_read",
            positional=["domain"],
            domain=self._note_domain(invoice.id, marker),
            fields=["id"],
            limit=1,
        )
        return isinstance(rows, list) and bool(rows)

    async def add_note(self, invoice: Invoice, text: str) -> None:
        await self.rpc.execute(
            "account.move",
            "message_post",
            [int(invoice.id)],
            body=text,
            message_type="comment",
            subtype_xmlid="mail.mt_note",
        )

    # -- preview -----------------------------------------------------------------------------

    def describe_payment(self, booking: Booking) -> list[Step]:
        show = self.rpc.show
        context = self._context("<invoice id>")
        return [
            Step(
                "find the invoice",
                show(
                    "account.move",
                    "search_read",
                    positional=["domain"],
                    domain=self._invoice_domain(booking.invoice_ref),
                    fields=INVOICE_FIELDS,
                    limit=2,
                ),
            ),
            Step(
                "if it reads in payment with something left: its payments without a "
                "journal entry (not in amount_residual)",
                show(
                    "account.payment",
                    "search_read",
                    positional=["domain"],
                    domain=self._pending_domain("<invoice id>"),
                    fields=PENDING_FIELDS,
                ),
            ),
            Step(
                "look for this payment (found: nothing to do)",
                show(
                    "account.payment",
                    "search_read",
                    positional=["domain"],
                    domain=self._payment_domain(booking.reference),
                    fields=["id", "name", "state"],
                    limit=1,
                ),
            ),
            Step(
                "register the payment",
                show(
                    "account.payment.register",
                    "create",
                    positional=["vals_list"],
                    vals_list=[self._wizard_values(booking)],
                    context=context,
                ),
            ),
            Step(
                "confirm it",
                show(
                    "account.payment.register",
                    "action_create_payments",
                    ["<wizard id>"],
                    context=context,
                ),
            ),
            Step(
                "read the invoice back",
                show("account.move", "read", ["<invoice id>"], fields=INVOICE_FIELDS),
            ),
        ]

    def describe_note(self, ref: str, text: str, marker: str) -> list[Step]:
        show = self.rpc.show
        return [
            Step(
                "find the invoice",
                show(
                    "account.move",
                    "search_read",
                    positional=["domain"],
                    domain=self._invoice_domain(ref),
                    fields=INVOICE_FIELDS,
                    limit=2,
                ),
            ),
            Step(
                "look for this note (found: nothing to do)",
                show(
                    "mail.message",
                    "search_read",
                    positional=["domain"],
                    domain=self._note_domain("<invoice id>", marker),
                    fields=["id"],
                    limit=1,
                ),
            ),
            Step(
                "post the note",
                show(
                    "account.move",
                    "message_post",
                    ["<invoice id>"],
                    body=text,
                    message_type="comment",
                    subtype_xmlid="mail.mt_note",
                ),
            ),
        ]
