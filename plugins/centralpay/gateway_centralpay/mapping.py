"""CentralPay events -> the canonical catalog: one table, read by the source and by the docs.

A notification is ``{"type": "TRANSACTION_SUCCEEDED", "object": {the object}}``: a real
Laravel integration reads ``$request->type`` and ``$request->object``
(``handleCentralPayCreditsWebhook``, found through the code search; quoted in
../shared/reference/real-systems.md). Names are ``OBJECT_STATUS``; payment requests write
their object without an underscore (``PAYMENTREQUEST_TRANSACTION_SUCCEEDED``, the name that
handler checks). The TRANSACTION names and the dispute statuses are CentralPay's documented
ones (doc-api.centralpay.net event services, dispute object); the payment-request object's
fields (``paymentRequestId``, ``merchantPaymentRequestId``, ``totalAmount``, ``deadline``,
``paymentRequestStatus``, ``paymentStatus``, ``breakdowns[].endpoint`` / ``email`` /
``amount`` / ``paid`` / ``payments[].uuid``) are those informatique-jss/jss-backend reads
from CentralPay's API (CentralPayPaymentRequest, CentralPayBreakdown, CentralPayPayment).
The other objects' event names follow the same pattern and are checked against a
deployment's sandbox; a deployment whose names differ maps them in conf (``aliases``).
``docs/sources.md`` shows this table, generated, and says which row rests on what.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from gateway import catalog

Take = catalog.Take
Route = catalog.Route
FieldMap = catalog.FieldMap
Const = catalog.Const
upper, lower, timestamp, integer = (
    catalog.upper,
    catalog.lower,
    catalog.timestamp,
    catalog.integer,
)
string, e164, iban_masked = catalog.string, catalog.e164, catalog.iban_masked

PROVIDER = "centralpay"

#: CentralPay's documented answer delays, used when a dispute carries no deadline.
RETRIEVAL_DAYS = 7
CHARGEBACK_DAYS = 21


def respond_by(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> str | None:
    """The dispute's deadline, else the notice date plus CentralPay's documented delay."""
    for key in ("responseDeadline", "dueDate"):
        if obj.get(key):
            return timestamp(obj[key])
    noticed = envelope.get("occurred_at")
    if not isinstance(noticed, str):
        return None
    days = RETRIEVAL_DAYS if "RETRIEVAL" in str(envelope.get("event")) else CHARGEBACK_DAYS
    return timestamp((datetime.fromisoformat(noticed) + timedelta(days=days)).isoformat())


def _amount(obj: Mapping[str, Any], key: str) -> int | None:
    return integer(obj.get(key))


def _breakdowns(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = obj.get("breakdowns")
    return [b for b in found if isinstance(b, Mapping)] if isinstance(found, list) else []


def paid_amount(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> int | None:
    """``paidAmount``, else total minus remaining, else all of it once PAID, else the
    breakdowns marked ``paid`` (each payer's share), else 0."""
    paid, total = _amount(obj, "paidAmount"), _amount(obj, "totalAmount")
    if paid is not None:
        return paid
    remaining = _amount(obj, "remainingAmount")
    if total is not None and remaining is not None:
        return total - remaining
    if total is None:
        return None
    if str(obj.get("paymentStatus", "")).upper() == "PAID":
        return total
    shares = [integer(b.get("amount")) for b in _breakdowns(obj) if b.get("paid") is True]
    return sum(s for s in shares if s is not None)


def _newest_paid(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The share paid last: breakdowns carry ``paid`` and ``lastPaymentAttempt``
    (jss-backend's CentralPayBreakdown); a payment pays a whole share."""
    paid = [(str(b.get("lastPaymentAttempt") or ""), i, b) for i, b in enumerate(_breakdowns(obj))]
    paid = [entry for entry in paid if entry[2].get("paid") is True]
    return max(paid, key=lambda entry: entry[:2])[2] if paid else None


def this_payment_id(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> str | None:
    share = _newest_paid(obj)
    payments = share.get("payments") if share else None
    if isinstance(payments, list) and payments and isinstance(payments[-1], Mapping):
        uuid = payments[-1].get("uuid")
        return str(uuid) if uuid else None
    return None


def this_payment_amount(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> int | None:
    share = _newest_paid(obj)
    return integer(share.get("amount")) if share else None


def payment_link(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> str | None:
    """Where the customer pays: the first breakdown's ``endpoint`` (what jss-backend's
    CentralPayDelegateServiceImpl and a real Laravel service hand to the payer)."""
    for breakdown in _breakdowns(obj):
        if isinstance(breakdown.get("endpoint"), str) and breakdown["endpoint"]:
            return str(breakdown["endpoint"])
    return None


def payer_name(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> str | None:
    for breakdown in _breakdowns(obj):
        parts = [breakdown.get("firstName"), breakdown.get("lastName")]
        name = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
        if name:
            return name
    return None


def remaining_amount(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> int | None:
    """``remainingAmount``, else total minus what was paid."""
    remaining = _amount(obj, "remainingAmount")
    if remaining is not None:
        return remaining
    total, paid = _amount(obj, "totalAmount"), paid_amount(obj, envelope)
    return total - paid if total is not None and paid is not None else None


def final_attempt(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> bool | None:
    """``finalAttempt``, else whether ``attempt`` reached ``maxAttempts`` (3 re-attempts)."""
    if isinstance(obj.get("finalAttempt"), bool):
        return bool(obj["finalAttempt"])
    attempt, most = integer(obj.get("attempt")), integer(obj.get("maxAttempts"))
    if attempt is None or most is None:
        return None
    return attempt >= most


_MONEY = (Take("data.amount", "amount", integer), Take("data.currency", "currency", upper))
_CUSTOMER = (
    Take("customer.id", "customerId"),
    Take("customer.email", "email"),
    Take("customer.phone", "phone", e164),
)
_CARD = (
    Take("data.card.brand", "card.brand", lower),
    Take("data.card.last4", "card.last4", string),
    Take("data.card.exp_month", "card.expirationMonth", integer),
    Take("data.card.exp_year", "card.expirationYear", integer),
)

TRANSACTION = FieldMap(
    "Transaction",
    (
        Take("data.payment_id", "transactionId"),
        *_MONEY,
        Take("data.method", Const("card")),
        *_CARD,
        Take("data.status", "transactionStatus"),
        Take("data.failure_code", "bankCode", string),
        Take("data.reason", ("fraudReason", "failureReason")),
        Take("refs.order_ref", "merchantTransactionId"),
        Take("refs.payment_request_id", "paymentRequestId"),
        Take("refs.installment_id", "installmentPaymentId"),
        Take("refs.subscription_id", "subscriptionId"),
        *_CUSTOMER,
    ),
)

DISPUTED_TRANSACTION = FieldMap(
    "Transaction (disputed)",
    (
        Take("data.dispute_id", ("disputeId", "transactionId")),
        Take("data.payment_id", "transactionId"),
        *_MONEY,
        Take("data.reason", "disputeReason"),
        Take("data.respond_by", respond_by, note="else notice date + 21 days"),
        *_CUSTOMER,
    ),
)

REFUND = FieldMap(
    "Refund",
    (
        Take("data.refund_id", "refundId"),
        *_MONEY,
        Take("data.payment_id", "transactionId"),
        Take("data.reason", "description"),
        Take("data.failure_reason", "failureReason"),
        Take("data.status", "refundStatus"),
        *_CUSTOMER,
    ),
)

DISPUTE = FieldMap(
    "Dispute",
    (
        Take("data.dispute_id", "disputeId"),
        *_MONEY,
        Take("data.payment_id", "transactionId"),
        Take("data.reason", ("reason", "reasonCode")),
        Take(
            "data.respond_by",
            respond_by,
            note=f"responseDeadline, else notice date + {RETRIEVAL_DAYS} days (retrieval) "
            f"or {CHARGEBACK_DAYS} days (chargeback)",
        ),
        Take("data.fee_amount", "fee", integer),
        Take("data.status", "disputeStatus"),
    ),
)

SCT_TRANSACTION = FieldMap(
    "SCT transaction",
    (
        Take("data.transfer_id", "sctTransactionId"),
        *_MONEY,
        Take("data.debtor_name", "debtorName"),
        Take("data.debtor_iban_masked", "debtorIban", iban_masked),
        Take("data.remittance_info", "remittanceInformation"),
        Take("data.sepa_reference", "sepaReference"),
        Take("data.virtual_iban_masked", "creditorIban", iban_masked),
        Take("data.reason", "returnReason"),
        Take("refs.payment_request_id", "paymentRequestId"),
        Take("refs.invoice_ref", "merchantReference"),
        Take("customer.id", "customerId"),
    ),
)

SDD_TRANSACTION = FieldMap(
    "SDD transaction",
    (
        Take("data.payment_id", "sddTransactionId"),
        *_MONEY,
        Take("data.method", Const("sepa_debit")),
        Take("data.r_code", ("rCode", "returnReasonCode")),
        Take("data.failure_code", ("rCode", "returnReasonCode")),
        Take("data.reason", "description"),
        Take("refs.mandate_id", "mandateId"),
        Take("refs.payment_request_id", "paymentRequestId"),
        Take("refs.installment_id", "installmentPaymentId"),
        Take("refs.subscription_id", "subscriptionId"),
        *_CUSTOMER,
    ),
)

MANDATE = FieldMap(
    "Mandate",
    (
        Take("refs.mandate_id", "mandateId"),
        Take("data.rum", "uniqueMandateReference"),
        Take("data.scheme", "scheme", lower),
        Take("data.iban_masked", "iban", iban_masked),
        Take("data.signed_at", "signatureDate", timestamp),
        Take("data.reason", ("revocationReason", "reason")),
        *_CUSTOMER,
    ),
)

SUBSCRIPTION = FieldMap(
    "Subscription",
    (
        Take("refs.subscription_id", "subscriptionId"),
        Take("refs.subscription_ref", "merchantSubscriptionId"),
        *_MONEY,
        Take("data.interval", "intervalUnit", lower),
        Take("data.status", "status"),
        Take("data.renews_at", ("nextPaymentDate", "currentPeriodEnd"), timestamp),
        Take("data.reason", "cancellationReason"),
        *_CUSTOMER,
    ),
)

INSTALLMENT = FieldMap(
    "Installment payment",
    (
        Take("refs.installment_id", "installmentPaymentId"),
        *_MONEY,
        Take("data.installment_no", ("installmentNumber", "iteration"), integer),
        Take("data.installments_count", ("installmentCount", "iterationCount"), integer),
        Take("data.attempt", "attempt", integer),
        Take("data.final_attempt", final_attempt, note="finalAttempt, else attempt ≥ maxAttempts"),
        Take("data.next_retry_at", "nextAttemptDate", timestamp),
        Take("data.next_due_at", "nextInstallmentDate", timestamp),
        Take("data.failure_code", "bankCode", string),
        Take("data.payment_id", "transactionId"),
        Take("refs.subscription_id", "subscriptionId"),
        *_CUSTOMER,
    ),
)

PAYMENT_REQUEST = FieldMap(
    "Payment request",
    (
        Take("refs.payment_request_id", "paymentRequestId"),
        Take("refs.invoice_ref", "merchantPaymentRequestId"),
        Take("data.amount", "totalAmount", integer),
        Take("data.currency", "currency", upper),
        Take("data.paid_amount", paid_amount, note="paidAmount, else total - remaining"),
        Take("data.remaining_amount", remaining_amount, note="remainingAmount, else total - paid"),
        Take("data.payment_id", this_payment_id, note="the newest paid share's payment uuid"),
        Take("data.payment_amount", this_payment_amount, note="the newest paid share's amount"),
        Take("data.due_at", "deadline", timestamp),
        Take("data.link_expires_at", "linkExpirationDate", timestamp),
        Take("data.link_url", payment_link, note="breakdowns[].endpoint"),
        Take("data.paid_at", "paymentDate", timestamp),
        Take("data.status", "paymentRequestStatus"),
        Take("data.payment_status", "paymentStatus"),
        Take("data.reason", ("cancellationReason", "closeComment")),
        Take("customer.id", ("customerId", "breakdowns.0.customerId")),
        Take("customer.email", ("email", "breakdowns.0.email")),
        Take("customer.phone", ("phone", "breakdowns.0.phone"), e164),
        Take("customer.name", payer_name, note="breakdowns[0] firstName lastName"),
    ),
)

PAYOUT = FieldMap(
    "Payout",
    (
        Take("data.payout_id", "payoutId"),
        *_MONEY,
        Take("data.arrival_at", ("executionDate", "arrivalDate"), timestamp),
        Take("data.failure_code", "failureCode"),
        Take("data.failure_message", "failureReason"),
    ),
)

CARD = FieldMap(
    "Card",
    (
        Take("data.payment_method_id", "cardId"),
        Take("data.type", Const("card")),
        Take("data.card.brand", "brand", lower),
        Take("data.card.last4", "last4", string),
        Take("data.card.exp_month", "expirationMonth", integer),
        Take("data.card.exp_year", "expirationYear", integer),
        *_CUSTOMER,
    ),
)


def _r_type(kind: str) -> tuple[Take, ...]:
    return (Take("data.r_type", Const(kind)),)


ROUTES = (
    # -- card transactions (documented names) --
    Route("TRANSACTION_SUCCEEDED", "payment.succeeded", TRANSACTION),
    Route(
        "TRANSACTION_SUCCESS",
        "payment.authorized",
        TRANSACTION,
        note="SUCCESS is an authorisation: capture follows within 7 days",
    ),
    Route("TRANSACTION_CAPTURED", "payment.succeeded", TRANSACTION, note="captured: paid"),
    Route("TRANSACTION_FAILED", "payment.failed", TRANSACTION),
    Route("TRANSACTION_CANCELED", "payment.canceled", TRANSACTION),
    Route("TRANSACTION_EXPIRED", "payment.expired", TRANSACTION),
    Route("TRANSACTION_FRAUDULENT", "payment.blocked", TRANSACTION),
    Route(
        "TRANSACTION_DISPUTED",
        "dispute.opened",
        DISPUTED_TRANSACTION,
        note="or DISPUTE_CHARGEBACK_NOTICED: subscribe to one",
    ),
    Route("TRANSACTION_UPDATED", None, note="status changes come as their own events"),
    # -- refunds --
    Route("REFUND_CREATED", "refund.created", REFUND),
    Route("REFUND_SUCCEEDED", "refund.succeeded", REFUND),
    Route("REFUND_FAILED", "refund.failed", REFUND),
    # -- disputes (documented statuses) --
    Route("DISPUTE_RETRIEVAL_NOTICED", "dispute.inquiry_opened", DISPUTE),
    Route(
        "DISPUTE_RETRIEVAL_CLOSE",
        "dispute.won",
        DISPUTE,
        note="the information request closed without a chargeback",
    ),
    Route("DISPUTE_CHARGEBACK_NOTICED", "dispute.opened", DISPUTE),
    Route("DISPUTE_CHARGEBACK_WON", "dispute.won", DISPUTE),
    Route("DISPUTE_CHARGEBACK_LOST", "dispute.lost", DISPUTE),
    Route("DISPUTE_TRANSACTION_REFUNDED", None, note="funds returned after a won dispute"),
    # -- SEPA credit transfers received --
    Route("SCT_TRANSACTION_RECEIVED", "transfer.received", SCT_TRANSACTION),
    Route("SCT_TRANSACTION_RETURNED", "transfer.returned", SCT_TRANSACTION),
    # -- SEPA direct debits --
    Route("SDD_TRANSACTION_SUCCEEDED", "payment.succeeded", SDD_TRANSACTION),
    Route("SDD_TRANSACTION_FAILED", "payment.failed", SDD_TRANSACTION),
    Route("SDD_TRANSACTION_CANCELED", "payment.canceled", SDD_TRANSACTION),
    Route("SDD_TRANSACTION_REJECTED", "payment.returned", SDD_TRANSACTION, extra=_r_type("reject")),
    Route("SDD_TRANSACTION_RETURNED", "payment.returned", SDD_TRANSACTION, extra=_r_type("return")),
    Route("SDD_TRANSACTION_REFUNDED", "payment.returned", SDD_TRANSACTION, extra=_r_type("refund")),
    # -- mandates --
    Route("MANDATE_ACTIVE", "mandate.activated", MANDATE),
    Route("MANDATE_REVOKED", "mandate.revoked", MANDATE),
    Route(
        "MANDATE_CANCELED",
        "mandate.revoked",
        MANDATE,
        extra=(Take("data.reason", Const("canceled")),),
    ),
    Route(
        "MANDATE_EXPIRED",
        "mandate.revoked",
        MANDATE,
        extra=(Take("data.reason", Const("expired")),),
        note="no debit for 36 months",
    ),
    # -- subscriptions --
    Route("SUBSCRIPTION_CREATED", "subscription.created", SUBSCRIPTION),
    Route("SUBSCRIPTION_UNPAID", "subscription.past_due", SUBSCRIPTION),
    Route("SUBSCRIPTION_CANCELED", "subscription.canceled", SUBSCRIPTION),
    # -- installment payments --
    Route("INSTALLMENT_SUCCEEDED", "installment.paid", INSTALLMENT),
    Route("INSTALLMENT_FAILED", "installment.failed", INSTALLMENT),
    # -- payment requests: PAYMENTREQUEST_ (no underscore), as a real handler spells it --
    Route(
        "PAYMENTREQUEST_TRANSACTION_SUCCEEDED",
        "payment_request.paid",
        PAYMENT_REQUEST,
        when=("paymentStatus", "PAID"),
        note="a payment on the request; the request is paid in full",
    ),
    Route(
        "PAYMENTREQUEST_TRANSACTION_SUCCEEDED",
        "payment_request.partially_paid",
        PAYMENT_REQUEST,
        note="a payment on the request; some is still due",
    ),
    Route("PAYMENTREQUEST_CREATED", "payment_request.created", PAYMENT_REQUEST),
    Route(
        "PAYMENTREQUEST_PENDING",
        "payment_request.created",
        PAYMENT_REQUEST,
        note="payment status PENDING; or PAYMENTREQUEST_CREATED: subscribe to one",
    ),
    Route("PAYMENTREQUEST_PARTIAL", "payment_request.partially_paid", PAYMENT_REQUEST),
    Route("PAYMENTREQUEST_PAID", "payment_request.paid", PAYMENT_REQUEST),
    Route(
        "PAYMENTREQUEST_UNPAID",
        "payment_request.overdue",
        PAYMENT_REQUEST,
        note="the deadline passed unpaid",
    ),
    Route("PAYMENTREQUEST_CANCELED", "payment_request.canceled", PAYMENT_REQUEST),
    Route(
        "PAYMENTREQUEST_CLOSED",
        "payment_request.expired",
        PAYMENT_REQUEST,
        note="closed at link expiry",
    ),
    Route("PAYMENTREQUEST_EXPIRED", "payment_request.expired", PAYMENT_REQUEST),
    # -- payouts --
    Route("PAYOUT_SUCCEEDED", "payout.paid", PAYOUT),
    Route("PAYOUT_FAILED", "payout.failed", PAYOUT),
    # -- cards --
    Route(
        "CARD_CREATED",
        "payment_method.updated",
        CARD,
        extra=(Take("data.change", Const("created")),),
    ),
    Route(
        "CARD_UPDATED",
        "payment_method.updated",
        CARD,
        extra=(Take("data.change", Const("updated")),),
    ),
)

MAPPING = catalog.ProviderMapping(PROVIDER, ROUTES)
