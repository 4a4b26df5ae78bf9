"""The ``[channels.NAME]`` table of an ``erp`` channel, and its sub-tables.

```toml
[channels.odoo_payments]
type = "erp"
connector = "odoo"                 # odoo | dolibarr | erpnext | rest
action = "register_payment"        # register_payment | flag_invoice | call
url = "https://erp.example.com"

[channels.odoo_payments.odoo]
api = "json2"
api_key = "${ODOO_API_KEY}"
journal_id = 7
```

A rule action names only a channel, so the *kind* of ERP action is the channel's: one
channel per (ERP, action) pair. Each connector's options live in a sub-table named after
it; a sub-table for another connector is refused rather than ignored, so switching
connector is never half done. ``[channels.NAME.fields]`` says where in the event the
invoice reference, the payment's own id, the amount and the date are read.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from gateway import Duration, Secret

ConnectorName = Literal["odoo", "dolibarr", "erpnext", "rest"]
ActionName = Literal["register_payment", "flag_invoice", "call"]

#: What ``flag_invoice`` writes when the action names no template (``note`` overrides it).
DEFAULT_NOTE = "Tocsin: {{ type }} ({{ source.provider }}, event {{ id }})"


class OdooOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``jsonrpc``: ``/jsonrpc`` execute_kw (Odoo <= 18); ``json2``: ``/json/2`` (Odoo >= 19).
    api: Literal["jsonrpc", "json2"] = "jsonrpc"
    #: The database. Required for ``jsonrpc``; sent as ``X-Odoo-Database`` for ``json2``.
    database: str = ""
    #: ``jsonrpc``: the user the API key belongs to (``authenticate`` finds its uid)...
    login: str = ""
    #: ...or its uid directly, which saves the ``authenticate`` call.
    uid: int | None = None
    api_key: Secret
    #: The bank journal payments are booked in; unset: the wizard's default journal.
    journal_id: int | None = None
    payment_method_line_id: int | None = None
    #: The ``account.payment`` field holding the wizard's memo: ``memo`` (Odoo >= 18)
    #: or ``ref`` (Odoo <= 17). Payments are looked up by it before booking.
    reference_field: Literal["memo", "ref"] = "memo"

    def problems(self) -> list[str]:
        found = []
        if self.api == "jsonrpc":
            if not self.database:
                found.append("odoo.database: required with api = 'jsonrpc'")
            if not self.login and self.uid is None:
                found.append("odoo: api = 'jsonrpc' needs login (or uid)")
        elif self.login or self.uid is not None:
            found.append("odoo: login and uid are for api = 'jsonrpc'; json2 uses the key alone")
        return found


class DolibarrOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Sent as ``DOLAPIKEY``.
    api_key: Secret
    #: ``accountid``: the bank account the money lands on (``GET /bankaccounts``).
    bank_account_id: int
    #: ``paymentid``: the payment mode (``GET /setup/dictionary/payment_types``), e.g. VIR.
    payment_mode_id: int
    #: The company's currency: an invoice without ``multicurrency_code`` is in it.
    company_currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "EUR"


class ErpNextOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: ``Authorization: token <api_key>:<api_secret>``.
    api_key: str
    api_secret: Secret
    #: The Payment Entry's ``mode_of_payment`` (e.g. "Wire Transfer"); its account for the
    #: invoice's company is ``paid_to`` unless ``paid_to`` is set. Empty: none.
    mode_of_payment: str = ""
    #: The Payment Entry's ``paid_to`` account; empty: the mode of payment's account, else
    #: the company's default bank account.
    paid_to: str = ""
    #: The Sales Invoice field the event's invoice reference is compared with.
    invoice_field: str = "name"


class RestOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: Sent with every call, e.g. ``{ Authorization = "Bearer ${INHOUSE_TOKEN}" }``.
    headers: dict[str, Secret] = msgspec.field(default_factory=dict)


class CallOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    #: A template, appended to ``url``: ``/invoices/{{ erp.invoice_ref | urlencode }}/paid``.
    path: str
    #: A template rendering the JSON body; empty: the action's ``erp.j2``, else no body.
    body: str = ""


class EventFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where each value is read in the event: the first path that holds one wins."""

    invoice_ref: list[str] = msgspec.field(default_factory=lambda: ["refs.invoice_ref"])
    #: The provider's id for this money movement: it becomes the ERP payment's reference,
    #: which is how a redelivery finds the payment it already booked.
    reference: list[str] = msgspec.field(
        default_factory=lambda: ["data.payment_id", "data.transfer_id", "refs.payment_request_id"]
    )
    #: Integer minor units (1250 = 12.50). A payment request's ``payment_amount`` is the
    #: one payment its event reports (booked under ``payment_id``), ``paid_amount`` all
    #: that came in so far, ``amount`` what was asked: booking the total again on a
    #: second partial payment would pay the invoice twice.
    amount: list[str] = msgspec.field(
        default_factory=lambda: ["data.payment_amount", "data.paid_amount", "data.amount"]
    )
    currency: list[str] = msgspec.field(default_factory=lambda: ["data.currency"])
    #: An RFC 3339 date-time (or a date); its date in ``timezone`` is the payment date.
    paid_at: list[str] = msgspec.field(default_factory=lambda: ["data.paid_at", "occurred_at"])

    def problems(self) -> list[str]:
        found = []
        for name in ("invoice_ref", "reference", "amount", "currency", "paid_at"):
            paths: list[str] = getattr(self, name)
            if not paths:
                found.append(f"fields.{name}: give at least one path")
            for path in paths:
                if not path or any(not part for part in path.split(".")):
                    found.append(f"fields.{name}: {path!r} is not a dotted path such as data.x")
        return found


class ErpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    connector: ConnectorName
    action: ActionName = "register_payment"
    #: The ERP's root URL (Dolibarr: where ``/api/index.php`` lives).
    url: str
    #: Each HTTP request; a send makes up to six.
    timeout: Duration = Duration(10)
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 8
    #: PEM file of the CAs to trust instead of the system's (an ERP behind a private CA);
    #: a relative path is under ``[gateway] data_dir``. Certificates are always verified.
    ca_file: str = ""
    #: The ERP's calendar: a payment at 23:30 UTC is booked on the next day in Paris.
    timezone: str = "Europe/Paris"
    #: Put before the provider's id in the ERP payment's reference (``CP-`` + ``tx_123``).
    reference_prefix: str = ""
    #: ``flag_invoice``: the note's template when the action names none.
    note: str | None = None
    fields: EventFields = msgspec.field(default_factory=EventFields)
    odoo: OdooOptions | None = None
    dolibarr: DolibarrOptions | None = None
    erpnext: ErpNextOptions | None = None
    rest: RestOptions | None = None
    #: ``action = "call"``: the request to make.
    call: CallOptions | None = None

    def problems(self, name: str = "NAME") -> list[str]:
        """Checks that involve several fields (``name``: the channel's, for messages)."""
        found = []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.append("url must be an http:// or https:// URL with a host")
        elif parts.query or parts.fragment:
            found.append("url: the ERP's root URL takes no query or fragment")
        options = {
            "odoo": self.odoo,
            "dolibarr": self.dolibarr,
            "erpnext": self.erpnext,
            "rest": self.rest,
        }
        for other, value in options.items():
            if other != self.connector and value is not None:
                found.append(f"{other}: this channel's connector is {self.connector!r}; remove it")
        chosen = options[self.connector]
        if chosen is None and self.connector != "rest":
            found.append(f"[channels.{name}.{self.connector}] is required with this connector")
        if isinstance(chosen, OdooOptions):
            found.extend(chosen.problems())
        if self.connector == "rest" and self.action != "call":
            found.append("action: the rest connector only makes calls; use action = 'call'")
        if self.action == "call" and self.call is None:
            found.append(
                f"[channels.{name}.call] (method, path, body) is required with action 'call'"
            )
        if self.action != "call" and self.call is not None:
            found.append("call: only for action = 'call'; remove it")
        if self.action != "flag_invoice" and self.note is not None:
            found.append("note: only for action = 'flag_invoice'; remove it")
        if (
            self.action == "call"
            and isinstance(chosen, OdooOptions)
            and chosen.api == "jsonrpc"
            and self.call is not None
        ):
            found.append("call: with odoo, calls authenticate with the API key: use api = 'json2'")
        if self.call is not None and not self.call.path.startswith("/"):
            found.append("call.path must start with /")
        found.extend(self.fields.problems())
        return found
