"""The catalog's table: every canonical event type and the fields it guarantees.

Edit ``CATALOG`` here, then regenerate docs/events.md (``python docs/generate.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Kind(StrEnum):
    """What a field holds, as JSON."""

    STRING = "string"
    INTEGER = "integer"
    AMOUNT = "amount"  # integer minor units: 1250 is 12.50 in a 2-decimal currency
    CURRENCY = "currency"  # ISO-4217, upper case
    DATETIME = "date-time"  # RFC 3339 with an offset: 2026-11-25T10:15:00Z
    BOOLEAN = "boolean"
    LIST = "list"
    OBJECT = "object"


@dataclass(frozen=True)
class FieldSpec:
    #: Dotted path in the canonical event: ``data.amount``, ``refs.payment_request_id``.
    path: str
    kind: Kind
    required: bool
    description: str = ""
    #: A date scenarios schedule steps against (``at = "data.due_at - 3d"``).
    schedule: bool = False


@dataclass(frozen=True)
class EventSpec:
    type: str
    summary: str
    fields: tuple[FieldSpec, ...]
    #: No provider pushes it: Tocsin's scheduler derives it from dates other events carry.
    generated: bool = False

    @property
    def required(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.required)


def req(path: str, kind: Kind, description: str = "", *, schedule: bool = False) -> FieldSpec:
    return FieldSpec(path, kind, True, description, schedule)


def opt(path: str, kind: Kind, description: str = "", *, schedule: bool = False) -> FieldSpec:
    return FieldSpec(path, kind, False, description, schedule)


STR, INT, AMT, CUR, DATE, BOOL, LIST, OBJ = (
    Kind.STRING,
    Kind.INTEGER,
    Kind.AMOUNT,
    Kind.CURRENCY,
    Kind.DATETIME,
    Kind.BOOLEAN,
    Kind.LIST,
    Kind.OBJECT,
)

# Field groups shared by several types.
_MONEY = (req("data.amount", AMT), req("data.currency", CUR))
_MONEY_OPT = (opt("data.amount", AMT), opt("data.currency", CUR))
_PAYMENT_ID = opt("data.payment_id", STR, "the provider's payment (transaction, intent) id")
_CARD = (
    opt("data.card", OBJ, "the card used, when the method is a card"),
    opt("data.card.brand", STR, "visa, mastercard, cb, amex..."),
    opt("data.card.last4", STR, "last 4 digits, as a string"),
    opt("data.card.exp_month", INT, "card expiry month, 1-12", schedule=True),
    opt("data.card.exp_year", INT, "card expiry year, 4 digits", schedule=True),
)
_INVOICE_REF = opt("refs.invoice_ref", STR, "the merchant's invoice number")
_REFUND = (req("data.refund_id", STR), *_MONEY, opt("data.payment_id", STR, "the refunded payment"))
_DISPUTE = (
    req("data.dispute_id", STR),
    *_MONEY,
    opt("data.payment_id", STR, "the disputed payment"),
)
_PR_ID = req("refs.payment_request_id", STR, "the payment request (invoice, payment link)")
_DUE_AT = opt("data.due_at", DATE, "payment deadline", schedule=True)
_LINK = (
    opt("data.link_expires_at", DATE, "when the payment link stops working", schedule=True),
    opt("data.link_url", STR, "where the customer pays"),
)
_PAID = req("data.paid_amount", AMT, "paid so far")
#: The one payment that made the request (partially) paid, when the source can tell it.
_THIS_PAYMENT = (
    opt("data.payment_id", STR, "the payment this event reports (its transaction id)"),
    opt("data.payment_amount", AMT, "what that payment brought (paid_amount is the total)"),
)
_REMAINING = req("data.remaining_amount", AMT, "still due")
_PLAN_REFS = (
    opt("refs.installment_id", STR, "the installment plan"),
    opt("refs.subscription_id", STR, "the subscription, when collections belong to one"),
    opt("data.installment_no", INT, "which installment, from 1"),
    opt("data.installments_count", INT, "how many installments in the plan"),
)
_SUB_ID = req("refs.subscription_id", STR)

CATALOG: Final[tuple[EventSpec, ...]] = (
    # -- payments --
    EventSpec(
        "payment.succeeded",
        "A payment was authorised or collected.",
        (
            *_MONEY,
            _PAYMENT_ID,
            opt("data.method", STR, "card, sepa_debit, transfer..."),
            *_CARD,
            opt("data.captured", BOOL, "false while an authorisation awaits capture"),
            _INVOICE_REF,
        ),
    ),
    EventSpec(
        "payment.authorized",
        "A card payment was authorised; no money moves until it is captured (CentralPay "
        "TRANSACTION_SUCCESS: capture within 7 days). Do not tell the customer it is paid.",
        (*_MONEY, _PAYMENT_ID, opt("data.method", STR), *_CARD, _INVOICE_REF),
    ),
    EventSpec(
        "payment.captured",
        "An authorised card payment was sent to clearing.",
        (*_MONEY, _PAYMENT_ID),
    ),
    EventSpec(
        "payment.failed",
        "A payment was declined or could not be collected.",
        (
            *_MONEY,
            _PAYMENT_ID,
            opt("data.method", STR),
            opt("data.failure_code", STR, "the provider's decline code"),
            opt("data.failure_message", STR),
            opt("data.decline_type", STR, "soft (retry may work) or hard"),
            *_CARD,
            _INVOICE_REF,
        ),
    ),
    EventSpec(
        "payment.canceled",
        "A payment was canceled before completion.",
        (*_MONEY, _PAYMENT_ID, opt("data.reason", STR)),
    ),
    EventSpec(
        "payment.expired",
        "A payment (or its authorisation) expired uncompleted.",
        (*_MONEY, _PAYMENT_ID),
    ),
    EventSpec(
        "payment.blocked",
        "A payment was refused by a fraud rule or blacklist.",
        (*_MONEY, _PAYMENT_ID, opt("data.reason", STR, "the rule or list that matched")),
    ),
    EventSpec(
        "payment.action_required",
        "The customer must act (3-D Secure, SCA) for the payment to go on.",
        (*_MONEY, _PAYMENT_ID, opt("data.action_url", STR)),
    ),
    EventSpec(
        "payment.returned",
        "A SEPA payment came back after settlement (R-transaction).",
        (
            *_MONEY,
            req("data.r_code", STR, "the SEPA reason code: AM04, MD06, AC04..."),
            _PAYMENT_ID,
            opt("data.r_type", STR, "reject, return, refund or reversal"),
            opt("data.will_retry", BOOL),
            opt("refs.mandate_id", STR),
        ),
    ),
    # -- refunds --
    EventSpec("refund.created", "A refund was issued.", (*_REFUND, opt("data.reason", STR))),
    EventSpec("refund.succeeded", "A refund reached the customer.", _REFUND),
    EventSpec(
        "refund.failed",
        "A refund could not be paid out.",
        (*_REFUND, opt("data.failure_reason", STR)),
    ),
    # -- disputes --
    EventSpec(
        "dispute.inquiry_opened",
        "The card issuer asks for information (retrieval request), before any chargeback.",
        (
            *_DISPUTE,
            req("data.respond_by", DATE, "answer before this date", schedule=True),
            opt("data.reason", STR),
        ),
    ),
    EventSpec(
        "dispute.opened",
        "A chargeback: the funds were withdrawn; evidence is due.",
        (
            *_DISPUTE,
            req("data.respond_by", DATE, "submit evidence before this date", schedule=True),
            opt("data.reason", STR),
            opt("data.fee_amount", AMT, "the non-refundable dispute fee"),
        ),
    ),
    EventSpec("dispute.won", "The dispute was decided for the merchant.", _DISPUTE),
    EventSpec("dispute.lost", "The dispute was decided for the cardholder.", _DISPUTE),
    # -- transfers (SEPA credit transfers received) --
    EventSpec(
        "transfer.received",
        "A bank transfer arrived on the merchant's (virtual) IBAN.",
        (
            req("data.transfer_id", STR),
            *_MONEY,
            req("data.debtor_name", STR, "who paid"),
            req("data.debtor_iban_masked", STR, "FR76 •••• •••• 0189 (never the whole IBAN)"),
            opt("data.remittance_info", STR, "the payer's remittance text"),
            _INVOICE_REF,
            opt("refs.payment_request_id", STR, "the payment request the transfer was matched to"),
        ),
    ),
    EventSpec(
        "transfer.returned",
        "A received transfer was sent back.",
        (req("data.transfer_id", STR), *_MONEY, opt("data.reason", STR)),
    ),
    # -- SEPA mandates and direct debits --
    EventSpec(
        "mandate.activated",
        "A SEPA direct-debit mandate can be used.",
        (
            req("refs.mandate_id", STR),
            opt("data.rum", STR, "the unique mandate reference"),
            opt("data.scheme", STR, "core or b2b"),
            opt("data.iban_masked", STR),
            opt("data.signed_at", DATE),
        ),
    ),
    EventSpec(
        "mandate.revoked",
        "A mandate was canceled, failed or expired: no more debits.",
        (req("refs.mandate_id", STR), opt("data.reason", STR)),
    ),
    EventSpec(
        "direct_debit.upcoming",
        "A direct debit is about to be collected (pre-notification).",
        (
            *_MONEY,
            req("data.debit_at", DATE, "the debit date", schedule=True),
            opt("refs.mandate_id", STR),
            opt("data.rum", STR),
            opt("data.creditor_id", STR, "the SEPA creditor identifier (ICS)"),
            opt("refs.subscription_id", STR),
            opt("refs.installment_id", STR),
        ),
        generated=True,
    ),
    # -- installments --
    EventSpec(
        "installment.paid",
        "One collection of an installment plan or subscription succeeded.",
        (
            *_MONEY,
            *_PLAN_REFS,
            opt("data.next_due_at", DATE, "the next collection", schedule=True),
            _PAYMENT_ID,
        ),
    ),
    EventSpec(
        "installment.failed",
        "One collection of an installment plan or subscription failed.",
        (
            *_MONEY,
            req("data.attempt", INT, "1 for the first try"),
            req("data.final_attempt", BOOL, "true when no retry will follow"),
            opt("data.next_retry_at", DATE, "the next try, unless final", schedule=True),
            opt("data.failure_code", STR),
            opt("data.failure_message", STR),
            *_PLAN_REFS,
        ),
    ),
    # -- subscriptions --
    EventSpec(
        "subscription.created",
        "A subscription started.",
        (
            _SUB_ID,
            *_MONEY_OPT,
            opt("data.interval", STR, "day, week, month or year"),
            opt("data.status", STR),
            opt("data.renews_at", DATE, "the next debit date", schedule=True),
        ),
    ),
    EventSpec(
        "subscription.past_due",
        "A subscription's latest payment failed; it stays open while retries run.",
        (_SUB_ID, *_MONEY_OPT, opt("data.invoice_id", STR)),
    ),
    EventSpec(
        "subscription.canceled",
        "A subscription ended.",
        (_SUB_ID, opt("data.reason", STR, "customer, dunning or merchant")),
    ),
    EventSpec(
        "subscription.renewal_upcoming",
        "A subscription renews soon.",
        (
            _SUB_ID,
            req("data.renews_at", DATE, "the renewal (debit) date", schedule=True),
            *_MONEY_OPT,
            opt("data.cancel_url", STR),
        ),
        generated=True,
    ),
    # -- payment requests --
    EventSpec(
        "payment_request.created",
        "A payment request (invoice, payment link) was issued.",
        (
            _PR_ID,
            *_MONEY,
            _DUE_AT,
            *_LINK,
            opt("data.paid_amount", AMT),
            opt("data.remaining_amount", AMT),
            _INVOICE_REF,
        ),
    ),
    EventSpec(
        "payment_request.partially_paid",
        "Part of a payment request was paid.",
        (_PR_ID, *_MONEY, _PAID, *_THIS_PAYMENT, _REMAINING, _DUE_AT, *_LINK, _INVOICE_REF),
    ),
    EventSpec(
        "payment_request.paid",
        "A payment request was paid in full.",
        (_PR_ID, *_MONEY, _PAID, *_THIS_PAYMENT, opt("data.paid_at", DATE), _INVOICE_REF),
    ),
    EventSpec(
        "payment_request.overdue",
        "A payment request's deadline passed with an amount still due.",
        (
            _PR_ID,
            *_MONEY,
            _REMAINING,
            req("data.due_at", DATE, "the missed deadline", schedule=True),
            opt("data.paid_amount", AMT),
            *_LINK,
            _INVOICE_REF,
        ),
    ),
    EventSpec(
        "payment_request.expired",
        "A payment request's link expired unpaid.",
        (_PR_ID, *_MONEY_OPT, opt("data.link_expires_at", DATE), _INVOICE_REF),
    ),
    EventSpec(
        "payment_request.canceled",
        "A payment request was canceled (voided).",
        (_PR_ID, *_MONEY_OPT, opt("data.reason", STR), _INVOICE_REF),
    ),
    EventSpec(
        "payment_request.due_soon",
        "A payment request's deadline is near and an amount is still due.",
        (
            _PR_ID,
            req("data.due_at", DATE, "the deadline", schedule=True),
            req("data.remaining_amount", AMT),
            req("data.currency", CUR),
            opt("data.amount", AMT),
            opt("data.link_url", STR),
            _INVOICE_REF,
        ),
        generated=True,
    ),
    # -- cards and payment methods --
    EventSpec(
        "card.expiring",
        "A saved card expires soon.",
        (
            req("data.card", OBJ),
            req("data.card.last4", STR),
            req("data.card.exp_month", INT, "expiry month, 1-12", schedule=True),
            req("data.card.exp_year", INT, "expiry year, 4 digits", schedule=True),
            opt("data.card.brand", STR),
            opt("data.payment_method_id", STR),
            opt("data.subscription_ids", LIST, "recurring payments that use the card"),
            opt("data.update_url", STR, "where the customer replaces the card"),
        ),
        generated=True,
    ),
    EventSpec(
        "payment_method.updated",
        "A customer's saved card or account was added or changed.",
        (
            req("data.payment_method_id", STR),
            opt("data.type", STR, "card, sepa_debit..."),
            *_CARD,
            opt("data.change", STR, "what the provider said: attached, updated..."),
        ),
    ),
    # -- payouts --
    EventSpec(
        "payout.paid",
        "A payout reached the merchant's bank account.",
        (req("data.payout_id", STR), *_MONEY, opt("data.arrival_at", DATE)),
    ),
    EventSpec(
        "payout.failed",
        "A payout could not be made.",
        (
            req("data.payout_id", STR),
            *_MONEY,
            opt("data.failure_code", STR),
            opt("data.failure_message", STR),
        ),
    ),
    # -- Tocsin's own (source.provider "tocsin"): rules route them to staff --
    EventSpec(
        "endpoint.disabled",
        "Tocsin disabled a channel (HTTP 410, or failing for its disable_after); its "
        "messages wait until `tocsin endpoints enable NAME`.",
        (
            req("data.channel", STR, "the `[channels.NAME]`"),
            req("data.reason", STR),
            req("data.disabled_at", DATE),
            opt("data.failing_since", DATE, "first failure without a success since"),
            opt("data.enable_with", STR, "the command that enables it again"),
        ),
    ),
    EventSpec(
        "watch.breached",
        "A `[watch.NAME]` check failed: a source went quiet, a queue is late, dead letters "
        "grow, an endpoint is disabled. Once per breach; `watch.recovered` ends it.",
        (
            req("data.watch", STR, "the `[watch.NAME]`"),
            req("data.kind", STR, "activity, queue_age, dead_letters or endpoint_disabled"),
            req("data.detail", STR, "what was found, in words"),
            req("data.breached_at", DATE),
            opt("data.provider", STR, "an activity watch's provider"),
            opt("data.channel", STR, "the channel a watch is about, if one"),
            opt("data.description", STR, "the watch's description"),
        ),
    ),
    EventSpec(
        "watch.recovered",
        "A breached `[watch.NAME]` check passes again.",
        (
            req("data.watch", STR, "the `[watch.NAME]`"),
            req("data.kind", STR),
            req("data.detail", STR, "what the breach was"),
            req("data.breached_at", DATE),
            req("data.recovered_at", DATE),
            req("data.breached_for_seconds", INT, "how long it lasted"),
            opt("data.provider", STR),
            opt("data.channel", STR),
            opt("data.description", STR),
        ),
    ),
    EventSpec(
        "erp.sync_failed",
        "A delivery the ERP plugin asked staff to hear about ended in the dead letters "
        "(refused, or retries ran out).",
        (
            req("data.reason", STR),
            req("data.delivery_id", STR, "for `tocsin dlq replay`"),
            req("data.channel", STR),
            req("data.rule", STR),
            req("data.event_id", STR, "the event whose delivery failed"),
            req("data.event_type", STR),
            opt("data.invoice_ref", STR),
            opt("data.amount", AMT),
            opt("data.currency", CUR),
        ),
    ),
)

#: The catalog by type name.
TYPES: Final[dict[str, EventSpec]] = {spec.type: spec for spec in CATALOG}


def required_paths(event_type: str) -> list[str]:
    spec = TYPES.get(event_type)
    return [f.path for f in spec.required] if spec else []


def schedule_paths() -> Iterable[tuple[str, str]]:
    """``(type, path)`` of every date scenarios may schedule against."""
    for spec in CATALOG:
        for f in spec.fields:
            if f.schedule:
                yield spec.type, f.path
