"""The default pack (issue #6): the ten scenarios shipped in conf/, end to end through
simulate (virtual clock, real Redis), against the shipped conf/tocsin.toml itself.

Each test replays a short event story and checks the exact notifications: when (Paris
time, after the courtesy window), which step or rule, which channel, to whom; then the
cancellation paths, and what the rendered messages say (remaining amounts after a
partial payment, the B2B-only late-payment wording).
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner

from gateway.catalog import check_event
from gateway.cli import main
from gateway.event import Event, decode_event, encode_event
from gateway.filters import format_money
from gateway.plan import Plan
from gateway.render import read_events
from gateway.simulate import Notification, simulate

from .conftest import load_plan

CONF = Path(__file__).resolve().parents[1] / "conf" / "tocsin.toml"
EXAMPLES = CONF.parent / "examples"
PARIS = ZoneInfo("Europe/Paris")


B2B = {
    "id": "cus_b2b",
    "name": "Atelier Dupont SARL",
    "email": "compta@atelier-dupont.example.com",
    "phone": "+33612345678",
    "locale": "fr",
    "kind": "b2b",
}
B2C = {
    "id": "cus_b2c",
    "name": "Emma Brown",
    "email": "emma.brown@example.com",
    "phone": "+33612345682",
    "locale": "en",
    "kind": "b2c",
}
FR_B2C = {
    **B2C,
    "id": "cus_fr",
    "name": "Marie Martin",
    "email": "marie@example.com",
    "locale": "fr",
}
ACCOUNTING = "compta@example.com"
ONCALL_EMAIL, ONCALL_PHONE = "astreinte@example.com", "+33612345675"
SALES = ("claire.martin@example.com", "james.wilson@example.com")
TREASURY = "tresorerie@example.com"


def paris(text: str) -> datetime:
    """``"2026-11-30 10:00"`` in Paris, as an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=PARIS)


def ev(
    type_: str,
    at: str,
    *,
    customer: dict[str, Any] | None = None,
    refs: dict[str, str] | None = None,
    **data: Any,
) -> tuple[Event, bytes]:
    """A canonical event at ``at`` (Paris time), checked against the catalog."""
    moment = paris(at).astimezone(UTC)
    body: dict[str, Any] = {
        "id": f"evt_{type_.replace('.', '_')}_{int(moment.timestamp())}_{len(data)}",
        "type": type_,
        "occurred_at": moment.isoformat().replace("+00:00", "Z"),
        "source": {"provider": "test", "livemode": False},
        "data": data,
    }
    if customer is not None:
        body["customer"] = customer
    if refs:
        body["refs"] = refs
    event = decode_event(json.dumps(body).encode())
    check_event(event, "reject")  # the catalog is the contract every event here honours
    return event, encode_event(event)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(CONF)


@pytest.fixture
def run(plan: Plan, redis_url: str):
    async def go(events: list[tuple[Event, bytes]], days: float = 60) -> list[Notification]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await simulate(plan, client, events, horizon=days * 86400)
        finally:
            await client.aclose()

    return go


def who(n: Notification) -> str:
    r = n.delivery.recipient
    if r is None:
        return "-"
    if n.delivery.channel.endswith("_sms"):
        return r.phone or "?"
    return r.email or r.address or "?"


def local(moment: float) -> str:
    return datetime.fromtimestamp(moment, PARIS).strftime("%Y-%m-%d %H:%M %a")


def timeline(sent: list[Notification]) -> list[tuple[str, str, str, str]]:
    """(Paris time it leaves, step or rule, channel, recipient), the merchant's own
    back-office webhooks (merchant-sync, large-b2b-payment) left out."""
    rows = [
        (local(n.at), n.delivery.rule.removeprefix("scenario:"), n.delivery.channel, who(n))
        for n in sent
        if n.delivery.channel != "merchant_webhook"
    ]
    return sorted(rows)


def steps(sent: list[Notification], prefix: str = "") -> list[str]:
    """Step or rule names in the order they leave (those starting with ``prefix``)."""
    return [name for _, name, _, _ in timeline(sent) if name.startswith(prefix)]


def only(sent: list[Notification], name: str, channel: str | None = None) -> Notification:
    found = [
        n
        for n in sent
        if n.delivery.rule.removeprefix("scenario:") == name
        and (channel is None or n.delivery.channel == channel)
    ]
    assert len(found) == 1, [n.delivery.rule for n in sent]
    return found[0]


def text(plan: Plan, n: Notification, locale: str | None = None) -> str:
    """What the channel would send, through its own preview (email: subject + text)."""
    delivery = n.delivery if locale is None else msgspec.structs.replace(n.delivery, locale=locale)
    parts = plan.channels[delivery.channel].preview(delivery)
    if "sms" in parts:
        return parts["sms"]
    if "json" in parts:
        return parts["json"]
    return parts["subject"] + "\n" + parts["text"] + "\n" + parts.get("html", "")


def money(amount: int, locale: str) -> str:
    return format_money(amount, "EUR", locale)


# -- 1. payment receipt ----------------------------------------------------------------------


async def test_1_receipt_goes_out_at_once_even_on_saturday_night(plan, run):
    paid = ev(
        "payment.succeeded",
        "2026-12-05 21:30",
        customer=B2B,
        refs={"invoice_ref": "FA-1"},
        amount=125000,
        currency="EUR",
        card={"brand": "visa", "last4": "4242"},
    )
    sent = await run([paid])
    assert timeline(sent) == [
        ("2026-12-05 21:30 Sat", "payment-receipt", "customer_email", B2B["email"])
    ]
    body = text(plan, only(sent, "payment-receipt"))
    # Subject and body keep CLDR's no-break spaces in the amount.
    assert body.startswith("Paiement reçu : 1\u202f250,00\xa0€ — facture FA-1\n")
    assert f"Montant : {money(125000, 'fr')}" in body
    assert "carte •••• 4242" in body
    no_email = {k: v for k, v in B2B.items() if k != "email"}
    unaddressed = ev(
        "payment.succeeded", "2026-12-05 21:30", customer=no_email, amount=5, currency="EUR"
    )
    assert timeline(await run([unaddressed])) == []


# -- 2. failed payment on a payment request ------------------------------------------------


def failed(at: str, pr: str = "pr_1") -> tuple[Event, bytes]:
    return ev(
        "payment.failed",
        at,
        customer=FR_B2C,
        refs={"payment_request_id": pr, "invoice_ref": "FA-2"},
        amount=8900,
        currency="EUR",
        link_url="https://pay.example.com/r/pr_1",
    )


def pr_event(kind: str, at: str, pr: str = "pr_1", customer=None, **data: Any):
    defaults: dict[str, Any] = {"amount": 250000, "currency": "EUR"}
    if kind == "paid":
        defaults["paid_amount"] = 250000
    return ev(
        f"payment_request.{kind}",
        at,
        customer=customer,
        refs={"payment_request_id": pr, "invoice_ref": "FA-2"},
        **{**defaults, **data},
    )


async def test_2_failed_payment_email_at_once_sms_next_day_in_the_window_email_after_72h(run):
    sent = await run([failed("2026-12-05 19:30")])  # Saturday evening
    email, phone = FR_B2C["email"], FR_B2C["phone"]
    assert timeline(sent) == [
        ("2026-12-05 19:30 Sat", "payment-failed/failed-email", "customer_email", email),
        # +24 h is Sunday 19:30: the courtesy window holds it until Monday 08:00.
        ("2026-12-07 08:00 Mon", "payment-failed/retry-sms", "customer_sms", phone),
        ("2026-12-08 19:30 Tue", "payment-failed/last-email", "customer_email", email),
    ]
    sms = only(sent, "payment-failed/retry-sms")
    assert sms.deferred and local(sms.queued) == "2026-12-06 19:30 Sun"


@pytest.mark.parametrize(
    ("kind", "at", "left"),
    [
        ("paid", "2026-11-30 22:00", ["failed-email"]),  # before the SMS
        ("canceled", "2026-12-02 12:00", ["failed-email", "retry-sms"]),  # before the last email
        ("expired", "2026-12-02 12:00", ["failed-email", "retry-sms"]),
    ],
)
async def test_2_failed_payment_sequence_stops_when_the_request_is_settled(run, kind, at, left):
    sent = await run([failed("2026-11-30 10:00"), pr_event(kind, at)])
    assert steps(sent, "payment-failed/") == [f"payment-failed/{s}" for s in left]


async def test_2_paid_arriving_before_the_failure_keeps_the_sequence_from_starting(run):
    # Providers do not guarantee order: "paid" came first, the older failure second.
    sent = await run([pr_event("paid", "2026-11-30 10:00"), failed("2026-11-30 09:59")])
    assert steps(sent) == []


async def test_2_a_reminder_held_by_the_window_is_dropped_when_paid_before_it_opens(run):
    # The SMS step fires Sunday 19:30 and waits for Monday 08:00; paid Sunday 22:00.
    sent = await run([failed("2026-12-05 19:30"), pr_event("paid", "2026-12-06 22:00")])
    assert steps(sent) == ["payment-failed/failed-email"]


# -- 3. instalment dunning ---------------------------------------------------------------------

PLAN_REFS = {"installment_id": "ins_12", "subscription_id": "sub_7"}


def inst_failed(at: str, attempt: int, final: bool, **extra: Any):
    return ev(
        "installment.failed",
        at,
        customer=B2C,
        refs=PLAN_REFS,
        amount=4900,
        currency="EUR",
        attempt=attempt,
        final_attempt=final,
        installment_no=2,
        installments_count=4,
        **extra,
    )


async def test_3_dunning_restarts_on_each_failure_and_escalates_on_the_final_attempt(plan, run):
    first = inst_failed("2026-11-30 07:00", 1, False, next_retry_at="2026-12-03T06:00:00Z")
    last = inst_failed("2026-12-03 07:00", 2, True)
    sent = await run([first, last])
    email, phone = B2C["email"], B2C["phone"]
    assert timeline(sent) == [
        ("2026-11-30 07:00 Mon", "installment-dunning/failed-email", "customer_email", email),
        # +2 d is Wednesday 07:00, before the window opens.
        ("2026-12-02 08:00 Wed", "installment-dunning/reminder-sms", "customer_sms", phone),
        # The second failure restarts the sequence (the first one's +5 d email is dropped)
        # and, being final, tells accounting and the ERP at once.
        ("2026-12-03 07:00 Thu", "installment-dunning/failed-email", "customer_email", email),
        ("2026-12-03 07:00 Thu", "installment-dunning/final-attempt-staff", "erp_webhook", "-"),
        (
            "2026-12-03 07:00 Thu",
            "installment-dunning/final-attempt-staff",
            "staff_email",
            ACCOUNTING,
        ),
        ("2026-12-05 08:00 Sat", "installment-dunning/reminder-sms", "customer_sms", phone),
        ("2026-12-08 08:00 Tue", "installment-dunning/reminder-email", "customer_email", email),
    ]
    first_email = next(n for n in sent if n.delivery.rule.endswith("/failed-email"))
    assert "We will try again on December 3, 2026" in text(plan, first_email)
    erp = json.loads(
        text(plan, only(sent, "installment-dunning/final-attempt-staff", "erp_webhook"))
    )
    assert erp["action"] == "flag_customer" and erp["installment_id"] == "ins_12"
    assert erp["customer_id"] == "cus_b2c" and erp["amount_minor"] == 4900


@pytest.mark.parametrize(
    "cancel",
    [
        ("installment.paid", {"amount": 4900, "currency": "EUR"}, PLAN_REFS),
        ("payment_method.updated", {"payment_method_id": "pm_new", "type": "card"}, None),
        ("subscription.canceled", {"reason": "customer"}, {"subscription_id": "sub_7"}),
    ],
    ids=lambda c: c[0],
)
async def test_3_dunning_stops_on_payment_new_payment_method_or_cancellation(run, cancel):
    type_, data, refs = cancel
    stop = ev(type_, "2026-12-01 15:00", customer=B2C, refs=refs, **data)
    sent = await run([inst_failed("2026-11-30 07:00", 1, False), stop])
    assert steps(sent) == ["installment-dunning/failed-email"]


async def test_3_a_sepa_return_not_presented_again_escalates_at_once(run):
    returned = ev(
        "payment.returned",
        "2026-11-27 10:10",
        customer=B2B,
        refs={"mandate_id": "mdt_5", "subscription_id": "sub_9"},
        amount=12000,
        currency="EUR",
        r_code="AM04",
        will_retry=False,
    )
    sent = await run([returned])
    email, phone = B2B["email"], B2B["phone"]
    assert timeline(sent) == [
        ("2026-11-27 10:10 Fri", "installment-dunning/failed-email", "customer_email", email),
        ("2026-11-27 10:10 Fri", "installment-dunning/returned-for-good-staff", "erp_webhook", "-"),
        (
            "2026-11-27 10:10 Fri",
            "installment-dunning/returned-for-good-staff",
            "staff_email",
            ACCOUNTING,
        ),
        ("2026-11-30 08:00 Mon", "installment-dunning/reminder-sms", "customer_sms", phone),  # Sun
        ("2026-12-02 10:10 Wed", "installment-dunning/reminder-email", "customer_email", email),
    ]


async def test_3_a_routine_payment_a_month_earlier_does_not_block_the_next_dunning(run):
    paid = ev(
        "installment.paid",
        "2026-10-30 07:00",
        customer=B2C,
        refs=PLAN_REFS,
        amount=4900,
        currency="EUR",
    )
    sent = await run([paid, inst_failed("2026-11-30 07:00", 1, False)])
    assert "installment-dunning/failed-email" in steps(sent)


# -- 4. card expiring ----------------------------------------------------------------------------


def expiring(at: str) -> tuple[Event, bytes]:
    return ev(
        "card.expiring",
        at,
        customer=FR_B2C,
        card={"brand": "visa", "last4": "4444", "exp_month": 12, "exp_year": 2026},
        update_url="https://pay.example.com/account/card",
    )


async def test_4_card_expiring_email_d30_d15_and_sms_d7(plan, run):
    sent = await run([expiring("2026-12-01 09:00")])
    email, phone = FR_B2C["email"], FR_B2C["phone"]
    assert timeline(sent) == [
        ("2026-12-01 09:00 Tue", "card-expiring/email-30d", "customer_email", email),
        ("2026-12-16 09:00 Wed", "card-expiring/email-15d", "customer_email", email),
        ("2026-12-24 09:00 Thu", "card-expiring/sms-7d", "customer_sms", phone),
    ]
    assert "expire fin décembre 2026" in text(plan, only(sent, "card-expiring/sms-7d"))
    assert "Your card •••• 4444 expires at the end of December 2026" in text(
        plan, only(sent, "card-expiring/email-30d"), "en"
    )


async def test_4_card_expiring_stops_when_a_new_card_is_registered(run):
    updated = ev(
        "payment_method.updated", "2026-12-07 12:00", customer=FR_B2C, payment_method_id="pm_9"
    )
    sent = await run([expiring("2026-12-01 09:00"), updated])
    assert steps(sent) == ["card-expiring/email-30d"]


# -- 5. payment request reminders ----------------------------------------------------------------

DUE = "2026-12-18T00:00:00+01:00"  # Friday 18 December, midnight in Paris


def created(customer: dict[str, Any], at: str = "2026-11-30 10:00", **data: Any):
    fields = {"due_at": DUE, "link_url": "https://pay.example.com/r/pr_1", **data}
    return pr_event("created", at, customer=customer, **fields)


async def test_5_reminders_around_the_due_date_with_the_courtesy_window(run):
    sent = await run([created(B2B)])
    email, phone = B2B["email"], B2B["phone"]
    name = "payment-request-reminders/"
    assert timeline(sent) == [
        ("2026-11-30 10:00 Mon", name + "link-email", "customer_email", email),
        # due - 3 d is Tuesday 00:00: held until 08:00.
        ("2026-12-15 08:00 Tue", name + "due-soon-email", "customer_email", email),
        ("2026-12-19 08:00 Sat", name + "overdue-email", "customer_email", email),
        # due + 7 d is Christmas Day, a public holiday: Saturday 26 December.
        ("2026-12-26 08:00 Sat", name + "second-reminder-email", "customer_email", email),
        ("2026-12-26 08:00 Sat", name + "second-reminder-sms", "customer_sms", phone),
        # Staff are not held by the window; the customer's last reminder is.
        ("2027-01-02 00:00 Sat", name + "formal-notice-staff", "staff_email", ACCOUNTING),
        ("2027-01-02 08:00 Sat", name + "final-reminder", "customer_email", email),
    ]


@pytest.mark.parametrize(
    ("kind", "at", "left"),
    [
        ("paid", "2026-12-20 11:00", ["link-email", "due-soon-email", "overdue-email"]),
        ("canceled", "2026-12-01 09:00", ["link-email"]),
        (
            "expired",
            "2026-12-27 00:00",
            [
                "link-email",
                "due-soon-email",
                "overdue-email",
                "second-reminder-email",
                "second-reminder-sms",
            ],
        ),
    ],
)
async def test_5_reminders_stop_when_paid_canceled_or_expired(run, kind, at, left):
    sent = await run([created(B2B), pr_event(kind, at)])
    name = "payment-request-reminders/"
    assert steps(sent, name) == [name + s for s in left]
    if kind == "expired":  # and scenario 6's rule tells the owners and the ERP
        assert steps(sent, "payment-request-expired") == ["payment-request-expired"] * 3


async def test_5_a_partial_payment_carries_the_remaining_amount_into_later_reminders(plan, run):
    partial = pr_event(
        "partially_paid",
        "2026-12-16 14:00",
        amount=250000,
        paid_amount=150000,
        remaining_amount=100000,
    )
    sent = await run([created(B2B), partial])
    assert len(steps(sent)) == 7  # nothing stops: 1 000,00 € is still due
    before = text(plan, only(sent, "payment-request-reminders/due-soon-email"))
    assert f"Montant restant à régler : {money(250000, 'fr')}" in before
    for step in ("overdue-email", "second-reminder-email", "final-reminder"):
        later = text(plan, only(sent, f"payment-request-reminders/{step}"))
        assert f"Montant restant à régler : {money(100000, 'fr')}" in later, step
        assert f"Déjà réglé : {money(150000, 'fr')}" in later, step
        assert money(250000, "fr") not in later, step
    sms = text(plan, only(sent, "payment-request-reminders/second-reminder-sms"))
    assert sms.startswith("Rappel : il reste 1 000,00 € à régler sur la facture FA-2")
    english = text(plan, only(sent, "payment-request-reminders/overdue-email"), "en")
    assert "Amount still to pay: €1,000.00" in english


PENALTY_FR = re.compile(r"indemnité forfaitaire pour frais de recouvrement de 40\s€")


async def test_5_late_payment_penalties_are_stated_to_business_customers_only(plan, run):
    b2b = only(await run([created(B2B)]), "payment-request-reminders/final-reminder")
    fr, en = text(plan, b2b), text(plan, b2b, "en")
    assert PENALTY_FR.search(fr) and "L441-10" in fr and "D441-5" in fr
    assert "indemnité forfaitaire pour frais de recouvrement de 40&nbsp;€" in fr  # the HTML
    assert "a fixed indemnity of €40 for recovery costs" in en and "L441-10" in en
    for consumer in (FR_B2C, B2C):
        b2c = only(await run([created(consumer)]), "payment-request-reminders/final-reminder")
        for body in (text(plan, b2c, "fr"), text(plan, b2c, "en")):
            assert not PENALTY_FR.search(body) and "€40" not in body
            assert "L441-10" not in body and "indemni" not in body
    unknown = {k: v for k, v in B2B.items() if k != "kind"}  # kind not given: no penalty either
    body = text(
        plan, only(await run([created(unknown)]), "payment-request-reminders/final-reminder")
    )
    assert "L441-10" not in body


async def test_5_steps_already_past_when_the_request_arrives_are_skipped(run):
    late = created(FR_B2C, at="2026-12-21 10:00")  # due 18 December: D-3 and D+1 are past
    name = "payment-request-reminders/"
    assert steps(await run([late])) == [
        name + "link-email",
        name + "second-reminder-email",
        name + "second-reminder-sms",
        name + "formal-notice-staff",
        name + "final-reminder",
    ]


async def test_5_paid_before_created_arrives_starts_no_reminders(run):
    sent = await run([pr_event("paid", "2026-11-30 10:00"), created(B2B, at="2026-11-30 10:00")])
    assert steps(sent) == []


# -- 6. payment request expiring -----------------------------------------------------------------

LINK_EXPIRES = "2026-12-15T23:59:00+01:00"


async def test_6_owners_warned_48h_before_the_link_expires_then_told_and_erp_flagged(plan, run):
    request = pr_event("created", "2026-11-30 10:00", customer=B2B, link_expires_at=LINK_EXPIRES)
    gone = pr_event("expired", "2026-12-15 23:59", amount=250000, link_expires_at=LINK_EXPIRES)
    sent = await run([request, gone])
    assert timeline(sent) == [
        (
            "2026-11-30 10:00 Mon",
            "payment-request-reminders/link-email",
            "customer_email",
            B2B["email"],
        ),
        ("2026-12-13 23:59 Sun", "payment-request-expiring/owner-warning", "staff_email", SALES[0]),
        ("2026-12-13 23:59 Sun", "payment-request-expiring/owner-warning", "staff_email", SALES[1]),
        ("2026-12-15 23:59 Tue", "payment-request-expired", "erp_webhook", "-"),
        ("2026-12-15 23:59 Tue", "payment-request-expired", "staff_email", SALES[0]),
        ("2026-12-15 23:59 Tue", "payment-request-expired", "staff_email", SALES[1]),
    ]
    erp = json.loads(text(plan, only(sent, "payment-request-expired", "erp_webhook")))
    assert erp == {
        "kind": "payment_request_expired",
        "action": "mark_invoice_overdue",
        "event_id": gone[0].id,
        "occurred_at": "2026-12-15T22:59:00Z",
        "payment_request_id": "pr_1",
        "invoice_ref": "FA-2",
        "customer_id": None,
        "amount_minor": 250000,
        "currency": "EUR",
    }
    # Each owner reads it in their own language.
    warnings = {who(n): n for n in sent if n.delivery.rule.endswith("owner-warning")}
    assert "expire le 15/12/2026 23:59" in text(plan, warnings[SALES[0]])
    assert "expires on 12/15/26, 11:59\u202fPM" in text(plan, warnings[SALES[1]])


async def test_6_no_warning_once_the_request_is_paid(run):
    request = pr_event("created", "2026-11-30 10:00", customer=B2B, link_expires_at=LINK_EXPIRES)
    sent = await run([request, pr_event("paid", "2026-12-11 09:00")])
    assert steps(sent) == ["payment-request-reminders/link-email"]


# -- 7. SEPA transfer received -------------------------------------------------------------------


def transfer(refs: dict[str, str] | None, customer=B2B, **extra: Any):
    return ev(
        "transfer.received",
        "2026-12-06 11:00",  # a Sunday: staff alerts and thanks are not held
        customer=customer,
        refs=refs,
        transfer_id="sct_1",
        amount=250000,
        currency="EUR",
        debtor_name="ATELIER DUPONT SARL",
        debtor_iban_masked="FR76 •••• •••• 0189",
        **extra,
    )


STAFF_ALERT = [
    ("2026-12-06 11:00 Sun", "transfer-received-staff", "staff_email", address)
    for address in (*SALES, TREASURY)
]


async def test_7_matched_transfer_alerts_treasury_and_sales_and_thanks_the_customer(plan, run):
    sent = await run([transfer({"invoice_ref": "FA-7", "payment_request_id": "pr_7"})])
    assert timeline(sent) == sorted(
        [
            *STAFF_ALERT,
            ("2026-12-06 11:00 Sun", "transfer-received-thanks", "customer_email", B2B["email"]),
        ]
    )
    thanks = text(plan, only(sent, "transfer-received-thanks"))
    assert (
        f"Nous avons bien reçu votre virement de {money(250000, 'fr')} pour la facture FA-7."
        in thanks
    )


async def test_7_unmatched_transfer_goes_to_accounting_to_reconcile(plan, run):
    sent = await run([transfer(None, customer=None)])
    assert timeline(sent) == sorted(
        [*STAFF_ALERT, ("2026-12-06 11:00 Sun", "transfer-unmatched", "staff_email", ACCOUNTING)]
    )
    assert "n'a pu être rapproché d'aucune facture" in text(plan, only(sent, "transfer-unmatched"))


@pytest.mark.parametrize(
    ("status", "says"),
    [("partial", "ne couvre qu'une partie de la facture FA-7"), ("overpaid", "le trop-perçu")],
)
async def test_7_partial_or_overpaid_transfer_also_goes_to_accounting(plan, run, status, says):
    sent = await run([transfer({"invoice_ref": "FA-7"}, match_status=status)])
    assert timeline(sent) == sorted(
        [
            *STAFF_ALERT,
            ("2026-12-06 11:00 Sun", "transfer-amount-mismatch", "staff_email", ACCOUNTING),
            ("2026-12-06 11:00 Sun", "transfer-received-thanks", "customer_email", B2B["email"]),
        ]
    )
    assert says in text(plan, only(sent, "transfer-amount-mismatch"))


# -- 8. disputes ---------------------------------------------------------------------------------


def dispute(kind: str, at: str, respond_by: str = "2026-12-14T17:00:00Z"):
    data: dict[str, Any] = {"dispute_id": "dsp_1", "amount": 12990, "currency": "EUR"}
    if kind in ("opened", "inquiry_opened"):
        data["respond_by"] = respond_by
    return ev(f"dispute.{kind}", at, customer=FR_B2C, **data)


def alert(at: str, step: str, sms: bool) -> list[tuple[str, str, str, str]]:
    rows = [(at, f"dispute/{step}", "staff_email", a) for a in (ACCOUNTING, ONCALL_EMAIL)]
    return rows + ([(at, f"dispute/{step}", "staff_sms", ONCALL_PHONE)] if sms else [])


async def test_8_dispute_alerts_staff_at_once_and_reminds_3d_and_1d_before_the_deadline(plan, run):
    sent = await run([dispute("opened", "2026-11-30 09:45")])
    assert timeline(sent) == sorted(
        alert("2026-11-30 09:45 Mon", "alert", sms=True)
        + alert("2026-12-11 18:00 Fri", "reminder-3d", sms=False)
        # Sunday evening: staff are told whatever the day.
        + alert("2026-12-13 18:00 Sun", "reminder-1d", sms=True)
    )
    sms = text(plan, only(sent, "dispute/alert", "staff_sms"))
    assert (
        sms
        == "Litige dsp_1 : paiement contesté de 129,90 €, réponse avant le 14/12/2026 18:00. Détails par e-mail."
    )


@pytest.mark.parametrize(
    ("outcome", "at", "left"), [("won", "2026-12-10 12:00", 3), ("lost", "2026-12-12 12:00", 5)]
)
async def test_8_dispute_reminders_stop_when_won_or_lost(run, outcome, at, left):
    sent = await run([dispute("opened", "2026-11-30 09:45"), dispute(outcome, at)])
    assert len(timeline(sent)) == left
    assert "dispute/reminder-1d" not in steps(sent)


async def test_8_an_inquiry_turning_into_a_chargeback_restarts_with_the_new_deadline(run):
    inquiry = dispute("inquiry_opened", "2026-11-30 09:45")
    chargeback = dispute("opened", "2026-12-04 10:00", respond_by="2026-12-21T17:00:00Z")
    sent = await run([inquiry, chargeback])
    assert timeline(sent) == sorted(
        alert("2026-11-30 09:45 Mon", "alert", sms=True)
        + alert("2026-12-04 10:00 Fri", "alert", sms=True)
        + alert("2026-12-18 18:00 Fri", "reminder-3d", sms=False)
        + alert("2026-12-20 18:00 Sun", "reminder-1d", sms=True)
    )


# -- 9. refunds ----------------------------------------------------------------------------------


async def test_9_refund_tells_the_customer_and_accounting_and_a_failure_tells_staff(plan, run):
    common = {"refund_id": "rf_1", "amount": 2990, "currency": "EUR", "payment_id": "tx_1"}
    issued = ev(
        "refund.created",
        "2026-12-06 15:00",
        customer=FR_B2C,
        refs={"invoice_ref": "FA-9"},
        **common,
    )
    bounced = ev(
        "refund.failed",
        "2026-12-09 10:00",
        customer=FR_B2C,
        failure_reason="closed_account",
        **common,
    )
    sent = await run([issued, bounced])
    assert timeline(sent) == [
        ("2026-12-06 15:00 Sun", "refund-credit-note", "staff_email", ACCOUNTING),
        ("2026-12-06 15:00 Sun", "refund-customer", "customer_email", FR_B2C["email"]),
        ("2026-12-09 10:00 Wed", "refund-failed", "staff_email", ONCALL_EMAIL),
        ("2026-12-09 10:00 Wed", "refund-failed", "staff_email", ACCOUNTING),
    ]
    assert "sous 5 à 10 jours ouvrés" in text(plan, only(sent, "refund-customer"))
    assert "avoir à établir" in text(plan, only(sent, "refund-credit-note"))


# -- 10. SEPA pre-notification -------------------------------------------------------------------


def upcoming(at: str, debit_at: str = "2026-12-05T00:00:00+01:00"):
    return ev(
        "direct_debit.upcoming",
        at,
        customer=B2B,
        refs={"mandate_id": "mdt_5", "subscription_id": "sub_9"},
        amount=12000,
        currency="EUR",
        debit_at=debit_at,
        rum="ACME-2026-000045",
        creditor_id="FR12ZZZ123456",
    )


def revoked(at: str):
    return ev(
        "mandate.revoked",
        at,
        customer=B2B,
        refs={"mandate_id": "mdt_5"},
        reason="revoked_by_debtor",
    )


async def test_10_prenotification_14_days_before_the_debit_with_rum_and_ics(plan, run):
    sent = await run([upcoming("2026-11-13 08:00")])
    assert timeline(sent) == [
        (
            "2026-11-21 00:00 Sat",
            "sepa-prenotification/prenotification",
            "customer_email",
            B2B["email"],
        )
    ]
    body = text(plan, sent[0])
    assert "Date de prélèvement : samedi 5 décembre 2026" in body
    assert f"Montant : {money(12000, 'fr')}" in body
    assert "Référence unique du mandat (RUM) : ACME-2026-000045" in body
    assert "Identifiant créancier SEPA (ICS) : FR12ZZZ123456" in body


async def test_10_a_late_prenotification_goes_out_at_once(run):
    sent = await run([upcoming("2026-11-24 10:00")])  # 11 days before the debit
    assert timeline(sent) == [
        (
            "2026-11-24 10:00 Tue",
            "sepa-prenotification/prenotification",
            "customer_email",
            B2B["email"],
        )
    ]


async def test_10_a_revoked_mandate_tells_customer_and_staff_and_cancels_the_prenotification(run):
    sent = await run([upcoming("2026-11-13 08:00"), revoked("2026-11-18 16:00")])
    assert timeline(sent) == [
        ("2026-11-18 16:00 Wed", "mandate-revoked-customer", "customer_email", B2B["email"]),
        ("2026-11-18 16:00 Wed", "mandate-revoked-staff", "staff_email", ACCOUNTING),
    ]
    # Revoked first, upcoming second (out of order): still no pre-notification.
    reverse = await run([revoked("2026-11-18 16:00"), upcoming("2026-11-18 15:55")])
    assert "sepa-prenotification/prenotification" not in steps(reverse)


# -- the shipped conf as a whole -----------------------------------------------------------------


def test_tocsin_check_passes_and_every_template_is_rendered_by_a_sample():
    result = CliRunner().invoke(main, ["check", str(CONF)])
    assert result.exit_code == 0, result.output
    assert "ok (6 channels" in result.output
    assert "note:" not in result.output  # every templated action is reached by a sample
    assert re.search(r"examples: \d+ sample event\(s\), \d+ template render\(s\)\n", result.output)


def samples() -> list[tuple[Event, bytes]]:
    """conf/examples/*.json: one event or an array per file, as `tocsin check` reads them."""
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        events, problems = read_events(path)
        assert not problems, problems
        out += [(event, raw) for _, event, raw in events]
    assert len(out) >= 17
    return out


def test_sample_events_are_catalog_valid():
    for event, _ in samples():
        check_event(event, "reject")


async def test_every_sms_is_gsm7_in_at_most_two_segments_in_both_languages(plan, run):
    sms = [n for n in await run(samples(), days=120) if n.delivery.channel.endswith("_sms")]
    templates = {n.delivery.template for n in sms}
    assert templates == {
        "payment_failed",
        "installment_failed",
        "card_expiring",
        "payment_request_reminder",
        "dispute_opened",
        "dispute_reminder",
    }
    for n in sms:
        for locale in ("fr", "en"):
            delivery = msgspec.structs.replace(n.delivery, locale=locale)
            parts = plan.channels[delivery.channel].preview(delivery)
            assert parts["encoding"] == "GSM-7", (delivery.template, locale, parts)
            assert int(parts["segments"]) <= 2, (delivery.template, locale, parts)
            assert parts["transliterated"] == "no", (delivery.template, locale, parts)


def test_customer_facing_reminders_wait_for_the_courtesy_window_and_transactional_do_not(plan):
    windows = {}
    for scenario in plan.scenarios:
        for step in scenario.steps:
            for action in step.actions:
                windows[f"{scenario.name}/{step.name}:{action.channel}"] = action.window
    for rule in plan.rules:
        for action in rule.actions:
            windows[f"{rule.name}:{action.channel}"] = action.window
    held = {k for k, w in windows.items() if w == "courtesy"}
    assert held == {
        "payment-failed/retry-sms:customer_sms",
        "payment-failed/last-email:customer_email",
        "installment-dunning/reminder-sms:customer_sms",
        "installment-dunning/reminder-email:customer_email",
        "card-expiring/email-30d:customer_email",
        "card-expiring/email-15d:customer_email",
        "card-expiring/sms-7d:customer_sms",
        "payment-request-reminders/due-soon-email:customer_email",
        "payment-request-reminders/overdue-email:customer_email",
        "payment-request-reminders/second-reminder-sms:customer_sms",
        "payment-request-reminders/second-reminder-email:customer_email",
        "payment-request-reminders/final-reminder:customer_email",
    }
    assert all(w is None for k, w in windows.items() if k not in held)


# -- what the customer reads: the payment's reference and who sent it ----------------------


def render_receipt(
    conf: Path, event: Path, locale: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """The receipt's text and HTML parts as ``tocsin render`` prints them."""
    monkeypatch.chdir(conf.parent.parent)
    result = CliRunner().invoke(
        main,
        [
            "render",
            "payment_receipt",
            "--event",
            str(event),
            "--channel",
            "customer_email",
            "--locale",
            locale,
            str(conf),
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout.split("--- text ---\n", 1)[1].split("--- html ---\n", 1)[0]
    html = result.stdout.split("--- html ---\n", 1)[1]
    return text, html


@pytest.mark.parametrize(
    ("locale", "name", "legal", "support"),
    [
        ("fr", "ACME Outillage (démo)", "au capital de 10 000 € — RCS Paris", "Une question ?"),
        ("en", "ACME Tools (demo)", "share capital €10,000 — Paris Trade", "Questions?"),
    ],
)
def test_receipt_shows_the_invoice_not_the_event_id_and_says_who_sent_it(
    monkeypatch, locale, name, legal, support
):
    text, html = render_receipt(CONF, EXAMPLES / "payment_succeeded.json", locale, monkeypatch)
    for part in (text, html):
        assert "evt_demo_0001" not in part
        assert "FA-2026-0042" in part
        assert name in part
        assert legal in part
        assert "support@example.com" in part and "+33 1 23 45 67 89" in part
        assert "12 rue de l'Exemple" in part
    assert f"{support} support@example.com · " in text
    # The French legal line is not borrowed by the English email, nor the reverse.
    other = "share capital" if locale == "fr" else "au capital de"
    assert other not in text and other not in html
    # The logo header falls back to the name (the demo has no logo URL), then the footer.
    assert '<span class="brand-name"' in html and html.count(name) == 2
    assert "12 rue de l'Exemple<br>75011 Paris<br>France" in html


def test_receipt_without_an_invoice_shows_the_providers_payment_reference(tmp_path, monkeypatch):
    body = json.loads((EXAMPLES / "payment_succeeded.json").read_text())
    del body["refs"]["invoice_ref"]
    body["data"]["payment_id"] = "tx_9f2c"
    event = tmp_path / "event.json"
    event.write_text(json.dumps(body))
    text, html = render_receipt(CONF, event, "fr", monkeypatch)
    assert "Référence : tx_9f2c\n" in text
    assert "<th" in html and ">Référence</th>" in html and ">tx_9f2c</td>" in html
    assert "evt_demo_0001" not in text + html
    assert "Facture" not in text


@pytest.mark.parametrize(
    ("refs", "data", "shown"),
    [
        ({"invoice_ref": "FA-1", "payment_request_id": "pr_1"}, {"payment_id": "tx_1"}, "FA-1"),
        ({"order_ref": "CMD-7"}, {"payment_id": "tx_1"}, "CMD-7"),
        ({"payment_request_id": "pr_1"}, {"payment_id": "tx_1"}, "tx_1"),
        ({"payment_request_id": "pr_1"}, {}, "pr_1"),
        ({}, {"refund_id": "re_1", "payment_id": "tx_1"}, "re_1"),
        ({}, {"transfer_id": "sct_31"}, "sct_31"),
        ({}, {}, ""),
    ],
)
def test_customer_reference_prefers_the_merchants_then_the_providers_never_the_event_id(
    plan, refs, data, shown
):
    template = plan.templates.from_string(
        '{% from "_layout/reference.j2" import customer_reference %}'
        "[{{ customer_reference(event) | trim }}]"
    )
    event = {"id": "evt_1", "refs": refs, "data": data}
    assert template.render(event=event) == f"[{shown}]"


def test_an_empty_brand_renders_the_receipt_cleanly(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    shutil.copytree(CONF.parent, conf_dir)
    conf = conf_dir / "tocsin.toml"
    source = conf.read_text()
    start = source.index("[brand]")
    end = source.index("# -- customers and staff")
    conf.write_text(source[:start] + source[end:])
    text, html = render_receipt(conf, EXAMPLES / "payment_succeeded.json", "fr", monkeypatch)
    assert text.rstrip("\n").endswith("Ce message vous est envoyé automatiquement.")
    assert "brand-" not in html and "<img" not in html and "None" not in text + html
    assert "Une question" not in html and "mailto:" not in html
    assert "FA-2026-0042" in html
    check = CliRunner().invoke(main, ["check", str(conf)])
    assert check.exit_code == 0, check.output


def test_brand_values_are_escaped_in_html_and_plain_in_text(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    shutil.copytree(CONF.parent, conf_dir)
    conf = conf_dir / "tocsin.toml"
    source = conf.read_text().replace(
        'name = "ACME Outillage (démo)"',
        'name = "Dupont & Fils <b>"\nlogo_url = "https://cdn.example.com/logo.png?a=1&b=2"',
    )
    conf.write_text(source)
    text, html = render_receipt(conf, EXAMPLES / "payment_succeeded.json", "fr", monkeypatch)
    assert "Dupont & Fils <b>" in text
    # (The HTML is re-serialized when its styles are inlined: "<" stays bare in attributes.)
    assert "<strong>Dupont &amp; Fils &lt;b&gt;</strong>" in html
    assert (
        '<img src="https://cdn.example.com/logo.png?a=1&amp;b=2" alt="Dupont &amp; Fils <b>"'
        in html
    )
    assert html.count("<b>") == 1  # inside alt="" only: never markup
