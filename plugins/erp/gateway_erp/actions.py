"""The three actions, written once over any connector.

``register_payment`` is idempotent by construction: the provider's id for the money is
the ERP payment's reference, and the payment is looked up by it *before* anything is
checked or booked. A redelivery after a crash -- the ERP booked, the answer or the
acknowledgement got lost -- finds its own payment and does nothing, even though the
invoice is paid by then. Only then are the invoice's state, currency and balance checked;
each refusal is permanent and says why.
"""

from __future__ import annotations

import logging

from gateway import PermanentError

from .booking import Booking
from .connector import Invoice, InvoiceConnector, InvoiceState, http_failure
from .money import format_amount
from .transport import Transport

log = logging.getLogger("tocsin.erp")


def _refuse(reason: str, invoice: Invoice) -> PermanentError:
    return PermanentError(reason, details=invoice.details())


def check_payable(invoice: Invoice, booking: Booking) -> None:
    """Raise ``PermanentError`` when this payment must not be booked on this invoice."""
    number, status = invoice.number, invoice.status
    if invoice.state is InvoiceState.DRAFT:
        raise _refuse(
            f"invoice {number} is a draft ({status}): it must be validated before a payment "
            "can be registered",
            invoice,
        )
    if invoice.state is InvoiceState.CANCELLED:
        raise _refuse(f"invoice {number} is cancelled ({status})", invoice)
    if invoice.state is InvoiceState.NOT_PAYABLE:
        raise _refuse(
            f"invoice {number} cannot take a payment ({status}): a credit note or reversed",
            invoice,
        )
    if invoice.state is InvoiceState.PAID:
        raise _refuse(
            f"invoice {number} is already paid ({status}); the payment "
            f"{booking.reference} of {format_amount(booking.amount, booking.currency)} "
            "was not booked",
            invoice,
        )
    if invoice.currency != booking.currency:
        raise _refuse(
            f"currency mismatch: the payment is in {booking.currency}, invoice {number} "
            f"in {invoice.currency}",
            invoice,
        )
    if invoice.unsupported is not None:
        raise _refuse(invoice.unsupported, invoice)
    if booking.amount > invoice.residual:
        raise _refuse(
            f"the payment ({format_amount(booking.amount, booking.currency)}) exceeds what is "
            f"left to pay on invoice {number} ({format_amount(invoice.residual, invoice.currency)})"
            ": not booked",
            invoice,
        )


async def find(connector: InvoiceConnector, ref: str) -> Invoice:
    invoice = await connector.find_invoice(ref)
    if invoice is None:
        raise PermanentError(f"invoice {ref} not found in {connector.describe()}")
    return invoice


async def register_payment(connector: InvoiceConnector, booking: Booking) -> str:
    """Book the payment once; what was done, for the log."""
    if len(booking.reference) > connector.max_reference:
        raise PermanentError(
            f"payment reference {booking.reference!r} is longer than the "
            f"{connector.max_reference} characters {connector.name} keeps: it could not be "
            "found again, so it is not booked"
        )
    invoice = await find(connector, booking.invoice_ref)
    existing = await connector.find_payment(invoice, booking.reference)
    if existing is not None:
        return f"{existing} already has reference {booking.reference!r}: nothing to do"
    check_payable(invoice, booking)
    full = booking.amount == invoice.residual
    payment = await connector.pay(invoice, booking, full=full)
    after = await connector.reload(invoice)
    if after.residual >= invoice.residual:
        log.warning(
            "%s: booked %s on invoice %s, but what is left to pay did not go down (%s)",
            connector.name,
            payment,
            invoice.number,
            after.residual,
        )
    amount = format_amount(booking.amount, booking.currency)
    return (
        f"booked {amount} on invoice {invoice.number} ({payment}, reference "
        f"{booking.reference}); now {after.status}, left to pay {after.residual}"
    )


async def flag_invoice(connector: InvoiceConnector, ref: str, text: str, marker: str) -> str:
    """Add the note once (``marker``, the delivery id, finds it again on a redelivery)."""
    invoice = await find(connector, ref)
    if await connector.has_note(invoice, marker):
        return f"invoice {invoice.number} already has note {marker}: nothing to do"
    await connector.add_note(invoice, text)
    return f"note added to invoice {invoice.number}"


async def call(
    transport: Transport,
    headers: dict[str, str],
    method: str,
    path: str,
    body: bytes | None,
    idempotency_key: str,
) -> str:
    """One request; 2xx is done, the rest mapped like any HTTP channel's answers."""
    answer = await transport.request(
        method, path, data=body, headers={**headers, "Idempotency-Key": idempotency_key}
    )
    if not answer.ok:
        raise http_failure(answer)
    return f"{method} {path.split('?', 1)[0]}: HTTP {answer.status}"
