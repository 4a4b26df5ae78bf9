"""Stripe events -> the canonical catalog: one table, read by the source and by the docs.

Field names are those of Stripe's API objects (https://docs.stripe.com/api), as they
appear under an event's ``data.object``. Rows for one event are tried in order; the
first whose ``when`` holds wins. ``docs/sources.md`` shows this table, generated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import catalog

Take = catalog.Take
Route = catalog.Route
FieldMap = catalog.FieldMap
Const = catalog.Const
upper, timestamp, id_of, e164 = catalog.upper, catalog.timestamp, catalog.id_of, catalog.e164

PROVIDER = "stripe"


def final_attempt(obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> bool:
    """Stripe schedules no further attempt: ``next_payment_attempt`` is null."""
    return obj.get("next_payment_attempt") is None


_MONEY = (Take("data.amount", "amount"), Take("data.currency", "currency", upper))
_CARD = (
    Take("data.card.brand", "payment_method_details.card.brand"),
    Take("data.card.last4", "payment_method_details.card.last4"),
    Take("data.card.exp_month", "payment_method_details.card.exp_month"),
    Take("data.card.exp_year", "payment_method_details.card.exp_year"),
)

PAYMENT_INTENT = FieldMap(
    "PaymentIntent",
    (
        Take("data.payment_id", "id"),
        *_MONEY,
        Take("data.method", "payment_method_types.0"),
        Take("data.failure_code", ("last_payment_error.decline_code", "last_payment_error.code")),
        Take("data.failure_message", "last_payment_error.message"),
        Take("data.reason", "cancellation_reason"),
        Take("data.action_url", "next_action.redirect_to_url.url"),
        Take("customer.id", "customer", id_of),
        Take("customer.email", "receipt_email"),
    ),
)

CHARGE = FieldMap(
    "Charge",
    (
        Take("data.payment_id", ("payment_intent", "id"), id_of),
        Take("data.charge_id", "id"),
        *_MONEY,
        Take("data.captured_amount", "amount_captured"),
        Take("data.captured", "captured"),
        Take("data.method", "payment_method_details.type"),
        *_CARD,
        Take("data.failure_code", "failure_code"),
        Take("data.failure_message", "failure_message"),
        Take("data.reason", "outcome.reason"),
        Take("customer.id", "customer", id_of),
        Take("customer.email", ("billing_details.email", "receipt_email")),
        Take("customer.name", "billing_details.name"),
        Take("customer.phone", "billing_details.phone", e164),
    ),
)

REFUND = FieldMap(
    "Refund",
    (
        Take("data.refund_id", "id"),
        *_MONEY,
        Take("data.payment_id", ("payment_intent", "charge"), id_of),
        Take("data.reason", "reason"),
        Take("data.failure_reason", "failure_reason"),
        Take("data.status", "status"),
    ),
)

DISPUTE = FieldMap(
    "Dispute",
    (
        Take("data.dispute_id", "id"),
        *_MONEY,
        Take("data.payment_id", ("payment_intent", "charge"), id_of),
        Take("data.reason", "reason"),
        Take("data.respond_by", "evidence_details.due_by", timestamp),
        Take("data.status", "status"),
    ),
)

INVOICE = FieldMap(
    "Invoice",
    (
        Take("refs.payment_request_id", "id"),
        Take("refs.invoice_ref", "number"),
        Take(
            "refs.subscription_id",
            ("subscription", "parent.subscription_details.subscription"),
            id_of,
        ),
        Take("data.invoice_id", "id"),
        Take("data.amount", "amount_due"),
        Take("data.currency", "currency", upper),
        Take("data.paid_amount", "amount_paid"),
        Take("data.remaining_amount", "amount_remaining"),
        Take("data.due_at", "due_date", timestamp),
        Take("data.link_url", "hosted_invoice_url"),
        Take("data.paid_at", "status_transitions.paid_at", timestamp),
        Take("data.attempt", "attempt_count"),
        Take("data.next_retry_at", "next_payment_attempt", timestamp),
        Take(
            "data.payment_id", ("payment_intent", "payments.data.0.payment.payment_intent"), id_of
        ),
        Take("customer.id", "customer", id_of),
        Take("customer.email", "customer_email"),
        Take("customer.name", "customer_name"),
        Take("customer.phone", "customer_phone", e164),
    ),
)

SUBSCRIPTION = FieldMap(
    "Subscription",
    (
        Take("refs.subscription_id", "id"),
        Take("data.status", "status"),
        Take("data.amount", ("items.data.0.price.unit_amount", "plan.amount")),
        Take("data.currency", ("currency", "items.data.0.price.currency"), upper),
        Take("data.interval", ("items.data.0.price.recurring.interval", "plan.interval")),
        Take(
            "data.renews_at",
            ("current_period_end", "items.data.0.current_period_end"),
            timestamp,
        ),
        Take("data.invoice_id", "latest_invoice", id_of),
        Take("data.reason", "cancellation_details.reason"),
        Take("customer.id", "customer", id_of),
    ),
)

PAYMENT_METHOD = FieldMap(
    "PaymentMethod",
    (
        Take("data.payment_method_id", "id"),
        Take("data.type", "type"),
        Take("data.card.brand", "card.brand"),
        Take("data.card.last4", "card.last4"),
        Take("data.card.exp_month", "card.exp_month"),
        Take("data.card.exp_year", "card.exp_year"),
        Take("data.iban_last4", "sepa_debit.last4"),
        Take("customer.id", "customer", id_of),
        Take("customer.email", "billing_details.email"),
        Take("customer.name", "billing_details.name"),
        Take("customer.phone", "billing_details.phone", e164),
    ),
)

PAYOUT = FieldMap(
    "Payout",
    (
        Take("data.payout_id", "id"),
        *_MONEY,
        Take("data.arrival_at", "arrival_date", timestamp),
        Take("data.method", "method"),
        Take("data.failure_code", "failure_code"),
        Take("data.failure_message", "failure_message"),
    ),
)

MANDATE = FieldMap(
    "Mandate",
    (
        Take("refs.mandate_id", "id"),
        Take("data.rum", "payment_method_details.sepa_debit.reference"),
        Take("data.type", "type"),
        Take("data.status", "status"),
        Take("data.payment_method_id", "payment_method", id_of),
        Take("data.signed_at", "customer_acceptance.accepted_at", timestamp),
    ),
)

_SUBSCRIPTION_INVOICE = ("billing_reason", "subscription*")

ROUTES = (
    # -- payment intents --
    Route("payment_intent.succeeded", "payment.succeeded", PAYMENT_INTENT),
    Route("payment_intent.payment_failed", "payment.failed", PAYMENT_INTENT),
    Route("payment_intent.canceled", "payment.canceled", PAYMENT_INTENT),
    Route("payment_intent.requires_action", "payment.action_required", PAYMENT_INTENT),
    Route("payment_intent.created", None, note="nothing happened yet"),
    Route("payment_intent.processing", None, note="the outcome follows"),
    Route("payment_intent.amount_capturable_updated", None),
    Route("payment_intent.partially_funded", None),
    # -- charges: subscribe to these or to payment_intent.*, not both (same payments) --
    Route("charge.succeeded", "payment.succeeded", CHARGE),
    Route("charge.failed", "payment.blocked", CHARGE, when=("outcome.type", "blocked")),
    Route("charge.failed", "payment.failed", CHARGE),
    Route("charge.captured", "payment.captured", CHARGE),
    Route("charge.expired", "payment.expired", CHARGE),
    Route("charge.pending", None, note="the outcome follows"),
    Route("charge.updated", None),
    Route("charge.refunded", None, note="refund.created carries the refund itself"),
    # -- refunds --
    Route("charge.refund.updated", "refund.succeeded", REFUND, when=("status", "succeeded")),
    Route("charge.refund.updated", "refund.failed", REFUND, when=("status", "failed")),
    Route("charge.refund.updated", None, note="other statuses"),
    Route("refund.created", "refund.created", REFUND),
    Route("refund.updated", "refund.succeeded", REFUND, when=("status", "succeeded")),
    Route("refund.updated", "refund.failed", REFUND, when=("status", "failed")),
    Route("refund.updated", None, note="other statuses"),
    Route("refund.failed", "refund.failed", REFUND),
    # -- disputes --
    Route(
        "charge.dispute.created",
        "dispute.inquiry_opened",
        DISPUTE,
        when=("status", "warning_*"),
        note="an inquiry: no funds withdrawn yet",
    ),
    Route("charge.dispute.created", "dispute.opened", DISPUTE),
    Route("charge.dispute.closed", "dispute.won", DISPUTE, when=("status", "won")),
    Route("charge.dispute.closed", "dispute.lost", DISPUTE, when=("status", "lost")),
    Route(
        "charge.dispute.closed",
        "dispute.won",
        DISPUTE,
        when=("status", "warning_closed"),
        note="an inquiry closed without a chargeback",
    ),
    Route("charge.dispute.updated", None),
    Route("charge.dispute.funds_withdrawn", None, note="dispute.opened says it"),
    Route("charge.dispute.funds_reinstated", None, note="dispute.won says it"),
    # -- invoices: one-off invoices are payment requests; subscription ones, installments --
    Route(
        "invoice.finalized",
        None,
        when=_SUBSCRIPTION_INVOICE,
        note="subscription cycles: see invoice.paid / payment_failed",
    ),
    Route(
        "invoice.finalized",
        "payment_request.created",
        INVOICE,
        note="subscribe to finalized or sent, not both",
    ),
    Route("invoice.sent", "payment_request.created", INVOICE),
    Route("invoice.paid", "installment.paid", INVOICE, when=_SUBSCRIPTION_INVOICE),
    Route("invoice.paid", "payment_request.paid", INVOICE),
    Route(
        "invoice.payment_failed",
        "installment.failed",
        INVOICE,
        when=_SUBSCRIPTION_INVOICE,
        extra=(Take("data.final_attempt", final_attempt, note="no next_payment_attempt"),),
    ),
    Route("invoice.payment_failed", "payment.failed", INVOICE),
    Route("invoice.overdue", "payment_request.overdue", INVOICE),
    Route("invoice.voided", "payment_request.canceled", INVOICE),
    Route("invoice.created", None),
    Route("invoice.updated", None),
    Route("invoice.upcoming", None, note="Tocsin generates its own reminders"),
    Route("invoice.marked_uncollectible", None),
    # -- subscriptions --
    Route("customer.subscription.created", "subscription.created", SUBSCRIPTION),
    Route(
        "customer.subscription.updated",
        "subscription.past_due",
        SUBSCRIPTION,
        when=("status", "past_due"),
    ),
    Route("customer.subscription.updated", None, note="other statuses"),
    Route("customer.subscription.deleted", "subscription.canceled", SUBSCRIPTION),
    Route("customer.subscription.paused", None),
    Route("customer.subscription.resumed", None),
    Route("customer.subscription.trial_will_end", None),
    # -- payment methods --
    Route(
        "payment_method.attached",
        "payment_method.updated",
        PAYMENT_METHOD,
        extra=(Take("data.change", Const("attached")),),
    ),
    Route(
        "payment_method.updated",
        "payment_method.updated",
        PAYMENT_METHOD,
        extra=(Take("data.change", Const("updated")),),
    ),
    Route(
        "payment_method.automatically_updated",
        "payment_method.updated",
        PAYMENT_METHOD,
        extra=(Take("data.change", Const("automatically_updated")),),
        note="the card network sent new card details",
    ),
    Route("payment_method.detached", None),
    # -- SEPA mandates --
    Route("mandate.updated", "mandate.activated", MANDATE, when=("status", "active")),
    Route("mandate.updated", "mandate.revoked", MANDATE, when=("status", "inactive")),
    Route("mandate.updated", None, note="other statuses"),
    # -- payouts --
    Route("payout.paid", "payout.paid", PAYOUT),
    Route("payout.failed", "payout.failed", PAYOUT),
    Route("payout.created", None),
    Route("payout.updated", None),
    Route("payout.canceled", None),
)

MAPPING = catalog.ProviderMapping(PROVIDER, ROUTES)
