"""Dolibarr: the REST API module (``/api/index.php``), key in the ``DOLAPIKEY`` header.

Registering a payment:

1. ``GET /invoices?sqlfilters=(t.ref:=:'FA2501-0042')``, then ``GET /invoices/{id}``
   (status 0 draft, 1 unpaid, 2 paid, 3 abandoned; ``remaintopay``);
2. ``GET /invoices/{id}/payments``: a payment whose ``num`` is the provider's id means
   it was booked before (a redelivery): nothing to do;
3. once per process, ``GET /status``: versions whose payment API differs are refused;
4. ``POST /invoices/paymentsdistributed`` with this payment's amount, always.
   ``POST /invoices/{id}/payments`` is never used: it has no amount and, with the
   MultiCurrency module on, books ``multicurrency_total_ttc`` -- the whole invoice, even
   after a partial payment (Dolibarr/dolibarr htdocs/compta/facture/class/
   api_invoices.class.php ``addPayment``; issue #32295);
5. ``GET /invoices/{id}`` again.

Dolibarr writes numbers as strings (``"120.00000000"``, ``"1"``); they are read as such.
Its ``num_payment`` column holds 50 characters, so longer references are refused.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal
from typing import Any

import msgspec

from gateway import DeliveryError, PermanentError

from .booking import Booking
from .config import DolibarrOptions
from .connector import Invoice, InvoiceConnector, InvoiceState, Step, http_failure
from .money import exponent, parse_erp_amount
from .transport import Answer, Transport, excerpt

API = "/api/index.php"
STATUS_LABELS = {0: "draft", 1: "unpaid", 2: "paid", 3: "abandoned"}
CREDIT_NOTE = 2
_show = msgspec.json.Encoder(decimal_format="number")
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def refused_version(version: str) -> str | None:
    """Why this Dolibarr version cannot take the payments this connector sends, or None.

    - up to 12, ``POST /invoices/paymentsdistributed`` and ``/invoices/{id}/payments`` name
      their fields ``paiementid`` and ``num_paiement`` (Dolibarr/dolibarr
      htdocs/compta/facture/class/api_invoices.class.php of that time; Dolibarr issue
      #14381 on 12.0); ``arrayofamounts`` entries took ``multicurrency_amount`` with
      PR #14790 (September 2020, so 13.0);
    - 20.0.0 and 20.0.1 read ``datepaye`` with ``dol_stringtotime()`` after a
      ``{@type timestamp}`` check: no value passes both (issues #31015, #32111).
    """
    found = _VERSION.match(version.strip())
    if found is None:
        return f"dolibarr: GET /status gave version {version!r}, which is not x.y.z"
    major, minor, patch = (int(part or 0) for part in found.groups())
    if major <= 12:
        return (
            f"dolibarr {version}: its payment API (paiementid, num_paiement) predates "
            "13.0; this connector needs Dolibarr 13 or later"
        )
    if (major, minor) == (20, 0) and patch <= 1:
        return (
            f"dolibarr {version}: its payment API cannot read any payment date (issues "
            "31015, 32111); upgrade to 20.0.2 or later"
        )
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _said(answer: Answer) -> str:
    payload = answer.json_or_none()
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message") or "")
    return excerpt(answer.body)


def _failure(answer: Answer) -> DeliveryError:
    return http_failure(answer, _said(answer))


class Dolibarr(InvoiceConnector):
    name = "dolibarr"
    #: ``llx_paiement.num_paiement`` is a varchar(50).
    max_reference = 50

    def __init__(self, transport: Transport, options: DolibarrOptions) -> None:
        super().__init__(transport)
        self.options = options
        #: Set once GET /status gave a version this connector can book payments on.
        self._version_ok = False

    def auth_headers(self) -> dict[str, str]:
        return {"DOLAPIKEY": self.options.api_key.reveal()}

    async def _request(self, method: str, path: str, **kwargs: Any) -> Answer:
        return await self.transport.request(
            method, API + path, headers=self.auth_headers(), **kwargs
        )

    @staticmethod
    def _filter(ref: str) -> str:
        if any(c in ref for c in "'()\\"):
            raise PermanentError(
                f"dolibarr: invoice reference {ref!r} holds a quote, a parenthesis or a "
                "backslash, which a sqlfilters expression cannot carry"
            )
        return f"(t.ref:=:'{ref}')"

    def _invoice(self, row: Any) -> Invoice:
        if not isinstance(row, dict) or _int(row.get("id")) is None:
            raise PermanentError(f"dolibarr: unexpected invoice {excerpt(repr(row))}")
        status = _int(row.get("status", row.get("statut")))
        paid_flag = _int(row.get("paye"))
        company = self.options.company_currency
        currency = str(row.get("multicurrency_code") or company)
        # remaintopay, total_ttc and totalpaid are in the company currency, whatever the
        # invoice's (api_invoices.class.php _fetch).
        total = parse_erp_amount(row.get("total_ttc"), company)
        residual = parse_erp_amount(row.get("remaintopay"), company)
        if residual is None:
            paid = parse_erp_amount(row.get("totalpaid") or 0, company)
            if total is None or paid is None:
                raise PermanentError(f"dolibarr: invoice {row.get('ref')!r} has no amounts")
            residual = total - paid
        if currency != company:
            residual = self._foreign_residual(row, currency, total, residual)
        if status == 0:
            state = InvoiceState.DRAFT
        elif status == 3:
            state = InvoiceState.CANCELLED
        elif _int(row.get("type")) == CREDIT_NOTE:
            state = InvoiceState.NOT_PAYABLE
        elif status == 2 or paid_flag == 1 or residual <= 0:
            state = InvoiceState.PAID
        else:
            state = InvoiceState.OPEN
        return Invoice(
            id=int(row["id"]),
            number=str(row.get("ref")),
            state=state,
            status=f"status {status} ({STATUS_LABELS.get(status or 0, '?')}), paye {paid_flag}",
            currency=currency,
            residual=residual,
        )

    @staticmethod
    def _foreign_residual(
        row: dict[str, Any], currency: str, total: Decimal | None, residual: Decimal
    ) -> Decimal:
        """What is left in the invoice's own currency (MultiCurrency), which the API never
        states: ``multicurrency_total_ttc`` while nothing is paid, else the company balance
        converted at the invoice's ratio, rounded up with one company cent to spare.

        The estimate errs high on purpose: Dolibarr itself refuses an amount over the exact
        remainder (addPaymentDistributed: "is higher than remain to pay"), and the spare
        cent absorbs the rounding of the company amounts of earlier payments, so a payment
        that settles the invoice is not refused here for a rounding cent (with many earlier
        payments it still could be: it then reaches accounting, nothing is booked).
        """
        mc_total = parse_erp_amount(row.get("multicurrency_total_ttc"), currency)
        if mc_total is None or total is None or total <= 0:
            raise PermanentError(
                f"dolibarr: invoice {row.get('ref')!r} in {currency} has no "
                "multicurrency_total_ttc or total_ttc"
            )
        if residual <= 0:
            return Decimal(0).quantize(Decimal(1).scaleb(-exponent(currency)))
        if residual >= total:
            return mc_total
        ratio = mc_total / total
        quantum = Decimal(1).scaleb(-exponent(currency))
        estimate = ((residual + Decimal("0.01")) * ratio).quantize(quantum, ROUND_CEILING)
        return min(estimate, mc_total)

    async def _row(self, invoice_id: int | str) -> dict[str, Any]:
        answer = await self._request("GET", f"/invoices/{int(invoice_id)}")
        if not answer.ok:
            raise _failure(answer)
        row = answer.json()
        if not isinstance(row, dict):
            raise PermanentError(f"dolibarr: unexpected invoice {excerpt(answer.body)}")
        return row

    async def find_invoice(self, ref: str) -> Invoice | None:
        answer = await self._request(
            "GET", "/invoices", params={"sqlfilters": self._filter(ref), "limit": "2"}
        )
        if answer.status == 404:  # Dolibarr's way of saying "none" (older versions)
            return None
        if not answer.ok:
            raise _failure(answer)
        rows = answer.json()
        if not isinstance(rows, list):
            raise PermanentError(f"dolibarr GET /invoices: not a list: {excerpt(answer.body)}")
        if len(rows) > 1:
            raise PermanentError(f"dolibarr: several invoices have the ref {ref!r}")
        if not rows:
            return None
        first = rows[0]
        invoice_id = _int(first.get("id")) if isinstance(first, dict) else None
        if invoice_id is None:
            raise PermanentError(f"dolibarr GET /invoices: no id in {excerpt(repr(first))}")
        return self._invoice(await self._row(invoice_id))

    async def find_payment(self, invoice: Invoice, reference: str) -> str | None:
        answer = await self._request("GET", f"/invoices/{int(invoice.id)}/payments")
        if answer.status == 404:
            return None
        if not answer.ok:
            raise _failure(answer)
        rows = answer.json()
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("num") == reference:
                return f"payment {row.get('ref')} of {row.get('amount')}"
        return None

    def _payment_body(self, booking: Booking) -> dict[str, Any]:
        return {
            # Declared `string` (api_invoices.class.php); is_numeric() then takes it as an
            # epoch. A JSON number would pass too (Restler trims it into a string first):
            # the string is the declared type, so no version's validator can refuse it.
            "datepaye": str(booking.paid_ts),
            "paymentid": self.options.payment_mode_id,
            "closepaidinvoices": "yes",
            "accountid": self.options.bank_account_id,
            "num_payment": booking.reference,
            "comment": booking.memo,
            "chqemetteur": "",
            "chqbank": "",
        }

    def _amounts(self, invoice_currency: str, booking: Booking) -> dict[str, str]:
        """The payment in the currency Dolibarr should read it in.

        The event's money is in the invoice's currency. An invoice in the company currency
        takes ``amount`` (Dolibarr derives the multicurrency amount at rate 1); one in
        another currency takes ``multicurrency_amount``, and Dolibarr derives the company
        amount at the invoice's rate (Paiement::create, the 'customer' way). Giving both
        is refused ("Payment in both currency").
        """
        money = str(booking.amount)
        if invoice_currency == self.options.company_currency:
            return {"amount": money, "multicurrency_amount": ""}
        return {"amount": "", "multicurrency_amount": money}

    def _distributed_body(
        self, invoice_id: Any, invoice_currency: str, booking: Booking
    ) -> dict[str, Any]:
        amounts = {str(invoice_id): self._amounts(invoice_currency, booking)}
        return {"arrayofamounts": amounts, **self._payment_body(booking)}

    async def _check_version(self) -> None:
        """Once per process: refuse a Dolibarr whose payment API differs from the one
        spoken here. ``tocsin check`` makes no network call, so this happens at the
        first payment; a refusal is permanent and names the version."""
        if self._version_ok:
            return
        answer = await self._request("GET", "/status")
        if not answer.ok:
            raise _failure(answer)
        payload = answer.json_or_none()
        success = payload.get("success") if isinstance(payload, dict) else None
        version = success.get("dolibarr_version") if isinstance(success, dict) else None
        if not isinstance(version, str):
            raise PermanentError(
                f"dolibarr GET /status: no dolibarr_version in {excerpt(answer.body)}"
            )
        reason = refused_version(version)
        if reason is not None:
            raise PermanentError(reason)
        self._version_ok = True

    async def pay(self, invoice: Invoice, booking: Booking, *, full: bool) -> str:
        # `full` does not matter: the amount is always explicit (see the module docstring).
        await self._check_version()
        answer = await self._request(
            "POST",
            "/invoices/paymentsdistributed",
            json=self._distributed_body(invoice.id, invoice.currency, booking),
        )
        if not answer.ok:
            raise _failure(answer)
        return f"payment {excerpt(answer.body, 40)}"

    async def reload(self, invoice: Invoice) -> Invoice:
        return self._invoice(await self._row(invoice.id))

    async def has_note(self, invoice: Invoice, marker: str) -> bool:
        row = await self._row(invoice.id)
        return marker in str(row.get("note_private") or "")

    async def add_note(self, invoice: Invoice, text: str) -> None:
        row = await self._row(invoice.id)
        existing = str(row.get("note_private") or "")
        note = f"{existing}\n\n{text}" if existing else text
        answer = await self._request(
            "PUT", f"/invoices/{int(invoice.id)}", json={"note_private": note}
        )
        if not answer.ok:
            raise _failure(answer)

    # -- preview -----------------------------------------------------------------------------

    def _find_text(self, ref: str) -> str:
        query = f"sqlfilters={self._filter(ref)}&limit=2"
        return f"GET {API}/invoices?{query}, then GET {API}/invoices/<id>"

    def describe_payment(self, booking: Booking) -> list[Step]:
        company = self.options.company_currency
        body = _show.encode(self._distributed_body("<id>", company, booking)).decode()
        other = {"amount": "", "multicurrency_amount": str(booking.amount)}
        foreign = _show.encode(other).decode()
        return [
            Step("find the invoice", self._find_text(booking.invoice_ref)),
            Step(
                "look for this payment (found: nothing to do)",
                f"GET {API}/invoices/<id>/payments: num == {booking.reference!r}",
            ),
            Step(
                "check the version (once per process)",
                f"GET {API}/status: dolibarr_version 13 or later, not 20.0.0-20.0.1",
            ),
            Step(
                "register the payment",
                f"POST {API}/invoices/paymentsdistributed {body}\n(an invoice in another "
                f'currency than {company}: "<id>": {foreign})',
            ),
            Step("read the invoice back", f"GET {API}/invoices/<id>"),
        ]

    def describe_note(self, ref: str, text: str, marker: str) -> list[Step]:
        body = _show.encode({"note_private": "<the note so far>\n\n" + text}).decode()
        return [
            Step("find the invoice", self._find_text(ref)),
            Step(
                "look for this note (found: nothing to do)",
                f"GET {API}/invoices/<id>: note_private holds {marker!r}",
            ),
            Step("append the note", f"PUT {API}/invoices/<id> {body}"),
        ]
