"""What every connector provides, in the ERP's own calls; the flows live in ``actions``.

A connector knows how its ERP finds an invoice, finds a payment by reference, books a
payment, and adds a note; it reports each invoice in one normalised shape (``Invoice``)
so that the rules -- draft, cancelled, already paid, currency -- are written once.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from gateway import DeliveryError, PermanentError, raise_for_outcome

from .booking import Booking
from .money import to_minor
from .transport import Answer, Transport, excerpt


class InvoiceState(enum.Enum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    CANCELLED = "cancelled"
    #: A credit note or a reversed invoice: money is not registered against it.
    NOT_PAYABLE = "not payable"


@dataclass(frozen=True)
class Invoice:
    #: The ERP's key for it (Odoo/Dolibarr id, ERPNext name).
    id: int | str
    number: str
    state: InvoiceState
    #: The ERP's own words for the state, for reasons: ``posted, payment_state partial``.
    status: str
    currency: str
    #: What is left to pay, in major units.
    residual: Decimal
    #: Why this connector cannot book a payment on it although it is open (e.g. a
    #: Dolibarr invoice in a foreign currency), or ``None``.
    unsupported: str | None = None

    def details(self) -> dict[str, Any]:
        return {
            "invoice_id": self.id,
            "invoice_status": self.status,
            "invoice_currency": self.currency,
            # Minor units, like every amount in an event.
            "invoice_residual": to_minor(self.residual, self.currency),
        }


@dataclass(frozen=True)
class Step:
    """One call a send would make, for ``preview``."""

    label: str
    text: str


class Connector(ABC):
    """A connection to one ERP. ``call`` only needs its authentication headers."""

    name: ClassVar[str]

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request (for ``call``)."""

    def describe(self) -> str:
        return f"{self.name} at {self.transport.base_url}"


class InvoiceConnector(Connector):
    """A connector that can book payments and notes on invoices."""

    #: The longest payment reference the ERP stores whole.
    max_reference: ClassVar[int] = 140

    @abstractmethod
    async def find_invoice(self, ref: str) -> Invoice | None:
        """The customer invoice with this number, whatever its state; ``None`` if none."""

    @abstractmethod
    async def find_payment(self, invoice: Invoice, reference: str) -> str | None:
        """An existing (not cancelled) payment with this reference: its id, else ``None``."""

    @abstractmethod
    async def pay(self, invoice: Invoice, booking: Booking, *, full: bool) -> str:
        """Register the payment; returns the ERP's id for it."""

    @abstractmethod
    async def reload(self, invoice: Invoice) -> Invoice:
        """The invoice as it is now."""

    @abstractmethod
    async def has_note(self, invoice: Invoice, marker: str) -> bool:
        """Whether a note holding ``marker`` is already on the invoice."""

    @abstractmethod
    async def add_note(self, invoice: Invoice, text: str) -> None:
        """Add a note (chatter message, private note, comment) to the invoice."""

    @abstractmethod
    def describe_payment(self, booking: Booking) -> list[Step]:
        """The calls ``register_payment`` makes, for ``preview``."""

    @abstractmethod
    def describe_note(self, ref: str, text: str, marker: str) -> list[Step]:
        """The calls ``flag_invoice`` makes, for ``preview``."""


def http_failure(answer: Answer, said: str = "") -> DeliveryError:
    """The error for a non-2xx answer: 5xx, 408, 425 and 429 are transient, the rest
    permanent (``gateway.raise_for_outcome``), with what the ERP said."""
    detail = said or excerpt(answer.body)
    try:
        raise_for_outcome(answer.status, answer.headers, detail)
    except DeliveryError as exc:
        exc.reason = f"{answer.what}: {exc.reason}"
        exc.args = (exc.reason,)
        return exc
    return PermanentError(f"{answer.what}: unexpected HTTP {answer.status}", status=answer.status)
