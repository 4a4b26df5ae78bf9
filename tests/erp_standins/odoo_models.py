"""The Odoo stand-in's records, fields and faults (its server is in ``odoo``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .common import CURRENCY_IDS, _money
from .common import _compare as _compare_values

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
        "currency_id",
        "date",
        "journal_id",
        "state",
        "payment_type",
        "move_id",
        "invoice_ids",
    },
    "mail.message": {"id", "model", "res_id", "body"},
    "account.payment.register": set(),
}
#: Fields read as ``[id, display_name]`` (or ``False``) and compared on their id.
MANY2ONE = {"currency_id", "journal_id", "move_id"}
#: Fields read as a list of ids; a leaf matches when one of them does.
X2MANY = {"invoice_ids"}

#: ``http_status`` of odoo/exceptions.py (18+); any other exception class answers 500 on
#: JSON-2 (``Json2Dispatcher.handle_error``).
USER_ERROR_STATUS = {
    "odoo.exceptions.UserError": 422,
    "odoo.exceptions.ValidationError": 422,
    "odoo.exceptions.AccessDenied": 403,
    "odoo.exceptions.AccessError": 403,
    "odoo.exceptions.MissingError": 404,
    "odoo.exceptions.LockError": 409,
}
NOTHING_LEFT = (
    "There's nothing left to pay for the selected journal items, so no payment registration "
    "is necessary. You've got your finances under control like a boss!"
)


class OdooFault(Exception):
    """An Odoo exception: ``name`` is its qualified class name, as ``serialize_exception``
    writes it (``builtins.ValueError``, ``odoo.exceptions.UserError``)."""

    def __init__(self, name: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        # werkzeug HTTPExceptions carry their own code; the rest follows the class.
        self.status = status or USER_ERROR_STATUS.get(name, 500)


def _user_error(message: str) -> OdooFault:
    return OdooFault("odoo.exceptions.UserError", message)


def _value_error(message: str) -> OdooFault:
    return OdooFault("builtins.ValueError", message)


def _missing() -> OdooFault:
    return OdooFault("odoo.exceptions.MissingError", "Record does not exist or has been deleted.")


def _compare(actual: Any, op: str, value: Any) -> bool:
    try:
        return _compare_values(actual, op, value)
    except ValueError as exc:
        raise _value_error(str(exc)) from None


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
    #: Whether the payment method the wizard uses has an outstanding-receipts account
    #: (``payment_method_line_id.payment_account_id``). In Odoo that is the journal's
    #: payment method line, not the invoice's; tying it to the invoice lets a test mix both.
    outstanding_account: bool = True

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
    currency: str
    date: str
    journal_id: int
    invoice_id: int
    #: Its journal entry's id, or ``None``: no outstanding account, no entry (18+).
    entry_id: int | None
    state: str = "in_process"  # draft | in_process | paid | canceled | rejected
    payment_type: str = "inbound"
    #: Whether its entry was reconciled with the invoice (only a posted invoice's lines are).
    reconciled: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "memo": self.memo,
            "amount": _money(self.amount),
            "currency_id": [CURRENCY_IDS[self.currency], self.currency],
            "date": self.date,
            "journal_id": [self.journal_id, "Bank"],
            "state": self.state,
            "payment_type": self.payment_type,
            "move_id": [self.entry_id, self.name] if self.entry_id is not None else False,
            "invoice_ids": [self.invoice_id],
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
        raise _value_error(f"Invalid domain: {domain!r}")
    for leaf in domain:
        if not isinstance(leaf, list | tuple) or len(leaf) != 3:
            # Only implicit AND: the plugin never sends "|" or "!" (a stand-in limit).
            raise _value_error(f"Invalid leaf {leaf!r}")
        if leaf[0] not in ODOO_FIELDS[model]:
            raise _value_error(f"Invalid field {model}.{leaf[0]} in leaf {leaf!r}")
        if leaf[1] not in ("=", "!=", "in", "not in", "ilike", "like"):
            raise _value_error(f"Invalid leaf operator {leaf[1]!r}")


def _matches(record: dict[str, Any], domain: list[Any]) -> bool:
    for name, op, value in domain:
        actual = record[name]
        if name in X2MANY:
            wanted = set(value) if isinstance(value, list) else {value}
            hit = bool(wanted & set(actual))
            if not (hit if op in ("=", "in") else not hit):
                return False
            continue
        if name in MANY2ONE and actual is not False:
            actual = actual[0]
        if not _compare(actual, op, value):
            return False
    return True
