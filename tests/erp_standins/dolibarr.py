"""The Dolibarr stand-in: a real aiohttp server on 127.0.0.1 (see the package docstring).

Each behaviour below is a claim about Dolibarr, checked against its source:

- payments: Dolibarr/dolibarr htdocs/compta/facture/class/api_invoices.class.php
  (``addPayment``, ``addPaymentDistributed``, ``getPayments``, ``_fetch``) and
  htdocs/compta/paiement/class/paiement.class.php (``Paiement::create``, ``getWay``);
- parameter checks: the Restler copy Dolibarr ships,
  htdocs/includes/restler/framework/Luracast/Restler/Data/Validator.php (``validate``:
  a ``string`` parameter is trimmed by the ``'string' => 'trim'`` pre-filter first, so a
  JSON number becomes a numeric string and passes; an ``int`` takes numbers and numeric
  strings; ``{@min 1}``, ``{@choice yes,no}``);
- the version: htdocs/api/class/api_status.class.php (``GET /status``).

The MultiCurrency module is off unless ``multicurrency=True`` is given (to the stand-in or
to ``add_invoice``, which then turns it on: it is one switch for the whole instance).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

from aiohttp import web

from .common import Faults, _number

CENT = Decimal("0.01")
COMPANY_CURRENCY = "EUR"


def _doli_error(status: int, message: str) -> web.Response:
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    text = f"{reasons.get(status, 'Error')}: {message}"
    return web.json_response({"error": {"code": status, "message": text}}, status=status)


def _mt(value: Decimal) -> Decimal:
    """Dolibarr's ``price2num(x, 'MT')``: rounded to the currency's total precision."""
    return value.quantize(CENT, ROUND_HALF_UP)


@dataclass
class DolibarrInvoice:
    id: int
    ref: str
    #: ``total_ttc``: in the company currency (EUR), whatever the invoice's currency.
    total_ttc: Decimal
    #: ``multicurrency_code``: empty when the MultiCurrency module was off at creation.
    currency: str = ""
    status: int = 1  # 0 draft, 1 unpaid, 2 paid, 3 abandoned
    type: int = 0  # 0 standard, 2 credit note
    #: What payments put on it, in the company currency (``getSommePaiement()``)...
    paid: Decimal = Decimal(0)
    #: ...and in the invoice currency (``getSommePaiement(1)``).
    paid_mc: Decimal = Decimal(0)
    #: ``multicurrency_tx``: invoice currency per company currency unit.
    rate: Decimal = Decimal(1)
    #: ``multicurrency_total_ttc``.
    mc_total_ttc: Decimal = Decimal(0)
    note_private: str = ""

    @property
    def remain(self) -> Decimal:
        """``remaintopay`` as the API computes it: in the company currency."""
        return _mt(self.total_ttc - self.paid)

    @property
    def remain_mc(self) -> Decimal:
        """What is left in the invoice currency: Dolibarr computes it, the API never says it."""
        return _mt(self.mc_total_ttc - self.paid_mc)

    def record(self) -> dict[str, Any]:
        # Dolibarr writes most numbers as strings.
        return {
            "id": str(self.id),
            "ref": self.ref,
            "statut": str(self.status),
            "status": str(self.status),
            "paye": "1" if self.status == 2 else "0",
            "type": str(self.type),
            "total_ttc": f"{self.total_ttc:.8f}",
            "totalpaid": f"{self.paid:.8f}",
            "totalcreditnotes": 0,
            "totaldeposits": 0,
            "remaintopay": f"{self.remain}",
            "multicurrency_code": self.currency,
            "multicurrency_tx": f"{self.rate:.8f}",
            "multicurrency_total_ttc": f"{self.mc_total_ttc:.8f}",
            "note_private": self.note_private,
        }


@dataclass
class DolibarrPayment:
    id: int
    ref: str
    invoice_id: int
    #: ``llx_paiement_facture.amount``: company currency.
    amount: Decimal
    num: str
    datepaye: int
    paymentid: int
    accountid: int
    comment: str
    #: ``llx_paiement_facture.multicurrency_amount``: invoice currency.
    multicurrency_amount: Decimal = field(default=Decimal(0))


def _restler_string(body: dict[str, Any], name: str, *, required: bool) -> str | web.Response:
    """Validator::validate for ``string``: ``trim`` first (numbers become strings), then
    ``is_string``; a required one may not be missing, null or empty."""
    value = body.get(name)
    if isinstance(value, bool):
        value = "1" if value else ""  # PHP's trim(true) / trim(false)
    elif isinstance(value, int | float):
        value = str(value)
    if value is None or (required and value == ""):
        if required:
            return _doli_error(400, f"`{name}` is required.")
        return ""
    if not isinstance(value, str):
        return _doli_error(
            400, f"Invalid value specified for `{name}`. Expecting alpha numeric value"
        )
    return value.strip()


def _restler_int(body: dict[str, Any], name: str) -> int | web.Response:
    """Validator::validate for a required ``int {@min 1}``: numbers and numeric strings."""
    value = body.get(name)
    if value is None:
        return _doli_error(400, f"`{name}` is required.")
    number = None if isinstance(value, bool) else _number(value)
    if number is None or number != number.to_integral_value():
        return _doli_error(400, f"Invalid value specified for `{name}`. Expecting integer value")
    if number < 1:
        return _doli_error(
            400, f"Invalid value specified for `{name}`. Minimum required value is 1."
        )
    return int(number)


class DolibarrStandin:
    API_KEY = "doli-key-77ab"
    PAYMENT_MODES: ClassVar[dict[int, str]] = {2: "VIR", 6: "CB"}
    BANK_ACCOUNTS: ClassVar[dict[int, str]] = {1: "Banque Populaire"}

    def __init__(
        self,
        *,
        empty_list_is_404: bool = True,
        multicurrency: bool = False,
        version: str = "21.0.1",
    ) -> None:
        #: Older Dolibarr answers 404 "No invoice found" to an empty list; newer ones [].
        self.empty_list_is_404 = empty_list_is_404
        #: The MultiCurrency module (``isModEnabled('multicurrency')``).
        self.multicurrency = multicurrency
        #: What ``GET /status`` says (``DOL_VERSION``).
        self.version = version
        self.url = ""
        self.invoices: dict[int, DolibarrInvoice] = {}
        self.payments: list[DolibarrPayment] = []
        self.faults = Faults()
        self.calls: list[str] = []
        self.bodies: list[Any] = []
        self._ids = itertools.count(40)

    def add_invoice(
        self,
        ref: str,
        total: str,
        currency: str = "",
        *,
        multicurrency: bool | None = None,
        rate: str = "1",
        status: int = 1,
        paid: str = "0",
    ) -> DolibarrInvoice:
        """An invoice of ``total`` in ``currency`` (empty: the company's, EUR).

        A currency other than EUR needs the MultiCurrency module: ``multicurrency=True``
        (or the stand-in's) turns it on; ``rate`` is ``multicurrency_tx``, so the company
        total is ``total / rate``. ``paid`` is in the invoice currency.
        """
        if multicurrency is not None:
            self.multicurrency = self.multicurrency or multicurrency
        foreign = currency not in ("", COMPANY_CURRENCY)
        if foreign and not self.multicurrency:
            raise ValueError("an invoice in another currency needs multicurrency=True")
        tx = Decimal(rate)
        mc_total = Decimal(total)
        code = currency or (COMPANY_CURRENCY if self.multicurrency else "")
        invoice = DolibarrInvoice(
            next(self._ids),
            ref,
            _mt(mc_total / tx),
            code,
            status,
            paid=_mt(Decimal(paid) / tx),
            paid_mc=Decimal(paid),
            rate=tx,
            mc_total_ttc=mc_total,
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
        app.router.add_get(f"{base}/status", self._status)
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
        if request.method in ("POST", "PUT"):
            self.bodies.append(await request.json())
        response: web.StreamResponse = await handler(request)
        return response

    def _find(self, request: web.Request) -> DolibarrInvoice | None:
        return self.invoices.get(int(request.match_info["id"]))

    async def _status(self, request: web.Request) -> web.Response:
        # api_status.class.php: Status::index().
        return web.json_response(
            {"success": {"code": 200, "dolibarr_version": self.version, "access_locked": "0"}}
        )

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
        body = self.bodies[-1]
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
        # getListOfPayments() with its defaults: amounts in the company currency only.
        rows = [
            {
                "amount": f"{p.amount:.8f}",
                "type": self.PAYMENT_MODES[p.paymentid],
                "date": date.fromtimestamp(p.datepaye).isoformat() + " 12:00:00",
                "num": p.num,
                "ref": p.ref,
                "ref_ext": "",
                "fk_bank_line": str(p.id + 1000),
            }
            for p in self.payments
            if p.invoice_id == invoice.id
        ]
        return web.json_response(rows)

    def _common(self, body: Any) -> dict[str, Any] | web.Response:
        """The fields both payment endpoints take, checked as Restler checks them (in the
        order of the PHP signature), then as the method body does."""
        if not isinstance(body, dict):
            return _doli_error(400, "the body must be an object")
        checked = dict(body)
        datepaye = _restler_string(body, "datepaye", required=True)
        if isinstance(datepaye, web.Response):
            return datepaye
        paymentid = _restler_int(body, "paymentid")
        if isinstance(paymentid, web.Response):
            return paymentid
        close = _restler_string(body, "closepaidinvoices", required=True)
        if isinstance(close, web.Response):
            return close
        if close not in ("yes", "no"):
            return _doli_error(
                400,
                "Invalid value specified for `closepaidinvoices`. Expected one of (yes,no).",
            )
        accountid = _restler_int(body, "accountid")
        if isinstance(accountid, web.Response):
            return accountid
        for name in ("num_payment", "comment", "chqemetteur", "chqbank"):
            value = _restler_string(body, name, required=False)
            if isinstance(value, web.Response):
                return value
            checked[name] = value
        # is_numeric($datepaye) ? $datepaye : dol_stringtotime($datepaye). The stand-in
        # takes the epoch form only (the one the plugin sends).
        if not re.fullmatch(r"-?\d+", datepaye):
            return _doli_error(400, f"stand-in: datepaye {datepaye!r} is not an epoch")
        # llx_paiement.num_paiement is a varchar(50): MySQL strict mode refuses longer.
        if len(checked["num_payment"]) > 50:
            return _doli_error(400, "Payment error : Data too long for column 'num_paiement'")
        # Not checked against the source: an unknown mode or account is refused here.
        if paymentid not in self.PAYMENT_MODES:
            return _doli_error(400, "Payment ID or Payment Code is mandatory")
        if accountid not in self.BANK_ACCOUNTS:
            return _doli_error(400, "Account ID is mandatory")
        checked.update(
            datepaye=int(datepaye),
            paymentid=paymentid,
            closepaidinvoices=close,
            accountid=accountid,
        )
        return checked

    def _create(
        self,
        body: dict[str, Any],
        amounts: dict[int, Decimal | None],
        mc_amounts: dict[int, Decimal | None],
    ) -> web.Response:
        """Paiement::create: ``getWay()`` is 'customer' (the invoice-currency amounts rule,
        the company ones are derived at the invoice's rate) as soon as the module is on and
        one multicurrency amount is not empty; else 'dolibarr' (the other way round)."""
        customer = self.multicurrency and any(v for v in mc_amounts.values())
        given = mc_amounts if customer else amounts
        booked: dict[int, tuple[Decimal, Decimal]] = {}
        for invoice_id, value in given.items():
            if not value:
                continue
            rate = self.invoices[invoice_id].rate
            # Multicurrency::getAmountConversionFromInvoiceRate: / tx one way, * tx the other.
            converted = _mt(value / rate) if customer else _mt(value * rate)
            booked[invoice_id] = (converted, _mt(value)) if customer else (_mt(value), converted)
        if not booked:
            return _doli_error(400, "Payment error : TotalAmountEmpty")
        payment_id = next(self._ids)
        for invoice_id, (amount, mc_amount) in booked.items():
            invoice = self.invoices[invoice_id]
            self.payments.append(
                DolibarrPayment(
                    payment_id,
                    f"PAY2501-{payment_id:04d}",
                    invoice_id,
                    amount,
                    body["num_payment"],
                    body["datepaye"],
                    body["paymentid"],
                    body["accountid"],
                    body["comment"],
                    mc_amount,
                )
            )
            invoice.paid += amount
            invoice.paid_mc += mc_amount
            # closepaidinvoices: the company-currency remainder must be exactly zero.
            if body["closepaidinvoices"] == "yes" and invoice.remain == 0:
                invoice.status = 2
        if self.faults.take("lose_answer"):
            return web.Response(status=503, text="proxy: upstream went away")
        return web.json_response(payment_id)

    async def _add_payment(self, request: web.Request) -> web.Response:
        body = self._common(self.bodies[-1])
        if isinstance(body, web.Response):
            return body
        invoice = self._find(request)
        if invoice is None:
            return _doli_error(404, "Invoice not found")
        # addPayment() has no amount and checks no state: it pays the company remainder and,
        # as multicurrency amount, multicurrency_total_ttc -- the WHOLE invoice, even after a
        # partial payment. With the module on, that one wins (Dolibarr issue #32295).
        return self._create(
            body, {invoice.id: invoice.remain}, {invoice.id: _mt(invoice.mc_total_ttc)}
        )

    async def _distributed(self, request: web.Request) -> web.Response:
        raw = self.bodies[-1]
        array = raw.get("arrayofamounts") if isinstance(raw, dict) else None
        if array is None:
            return _doli_error(400, "`arrayofamounts` is required.")
        if not isinstance(array, dict):
            return _doli_error(400, "Invalid value specified for `arrayofamounts`")
        body = self._common(raw)
        if isinstance(body, web.Response):
            return body
        amounts: dict[int, Decimal | None] = {}
        mc_amounts: dict[int, Decimal | None] = {}
        for key, value in array.items():
            invoice = self.invoices.get(int(key)) if str(key).isdigit() else None
            if invoice is None:
                return _doli_error(404, f"Invoice ID {key} not found")
            entry = value if isinstance(value, dict) else {}
            amount, mc_amount = entry.get("amount", ""), entry.get("multicurrency_amount", "")
            given, mc_given = _number(amount), _number(mc_amount)
            wants = amount == "remain" or (given is not None and given > 0)
            mc_wants = mc_amount == "remain" or (mc_given is not None and mc_given > 0)
            if wants and mc_wants:
                return _doli_error(
                    400,
                    f"Payment in both currency {key} ( amount: {amount}, multicurrency_amount: "
                    f"{mc_amount})",
                )
            # No state check: only the remainder, in the currency the amount is given in.
            remain = invoice.remain_mc if mc_wants else invoice.remain
            if mc_wants:
                pay = remain if mc_amount == "remain" else _mt(mc_given or Decimal(0))
            else:
                pay = remain if amount == "remain" else _mt(given or Decimal(0))
            if pay > remain and not body.get("accepthigherpayment"):
                return _doli_error(
                    400,
                    f"Payment amount on invoice ID {key} ({pay}) is higher than remain to "
                    f"pay ({remain})",
                )
            amounts[invoice.id] = None if mc_wants else pay
            mc_amounts[invoice.id] = pay if mc_wants else None
        return self._create(body, amounts, mc_amounts)
