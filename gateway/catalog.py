"""The canonical event catalog: every event type Tocsin knows and the fields it guarantees.

One data table (``CATALOG``) drives three things:

- the intake's check: a known type missing a required field, or carrying a catalog
  field of the wrong type, is refused with a 400 naming the field's path;
- ``docs/events.md`` (``tocsin events catalog --markdown``), so the page cannot drift;
- source plugins' mapping tables (``ProviderMapping``), checked against it by the tests:
  every route must produce every field its canonical type requires.

Types outside the catalog (``stripe.customer.created``, a merchant's own
``order.shipped``) are accepted and routed unless ``[intake] unknown_types = "reject"``.
Dates that scenarios schedule against (card expiry, ``due_at``, ``link_expires_at``,
the next debit date...) are marked ``schedule=True``.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from .address import check_address
from .event import EVENT_ID_PATTERN, Event, EventInvalid

# -- the table ---------------------------------------------------------------------------


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

UnknownTypes = Literal["accept", "reject"]


# -- checking events at intake -----------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Final = _Missing()


@functools.cache
def _parts(path: str) -> tuple[str, tuple[str, ...]]:
    head, _, rest = path.partition(".")
    return head, tuple(rest.split(".")) if rest else ()


def _resolve(event: Event, path: str) -> Any:
    """The value at a dotted path of the event, or ``_MISSING``."""
    head, rest = _parts(path)  # split once per path, not once per event
    value: Any = getattr(event, head, _MISSING)
    for part in rest:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif value is not None and hasattr(value, "__struct_fields__"):
            value = getattr(value, part, _MISSING)
        else:
            return _MISSING
        if value is None:
            return _MISSING
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


_CURRENCY = re.compile(r"^[A-Z]{3}$")
_KIND_CHECKS: Final[dict[Kind, tuple[Callable[[Any], bool], str]]] = {
    Kind.STRING: (lambda v: isinstance(v, str), "a string"),
    Kind.INTEGER: (_is_int, "an integer"),
    Kind.AMOUNT: (_is_int, "an integer amount in minor units (1250 = 12.50)"),
    Kind.CURRENCY: (
        lambda v: isinstance(v, str) and _CURRENCY.match(v) is not None,
        "an ISO-4217 code such as EUR",
    ),
    Kind.DATETIME: (_is_datetime, "an RFC 3339 date-time with an offset (2026-11-25T10:15:00Z)"),
    Kind.BOOLEAN: (lambda v: isinstance(v, bool), "true or false"),
    Kind.LIST: (lambda v: isinstance(v, list), "a list"),
    Kind.OBJECT: (lambda v: isinstance(v, dict), "an object"),
}


def check_event(event: Event, unknown_types: UnknownTypes = "accept") -> None:
    """Raise ``EventInvalid`` naming every field that breaks its type's contract."""
    problems: list[tuple[str, str]] = []
    email = event.customer.email if event.customer is not None else None
    if email is not None:
        try:
            check_address(email)
        except ValueError as exc:  # the email channel would refuse it, later and unseen
            problems.append(("$.customer.email", f"not an email address: {exc}"))
    spec = TYPES.get(event.type)
    if spec is None:
        if unknown_types == "reject":
            hint = suggest_type(event.type)
            problems.append(
                (
                    "$.type",
                    f"unknown event type {event.type!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + ": this gateway only takes the catalog's types "
                    '([intake] unknown_types = "reject"; see docs/events.md)',
                )
            )
    else:
        for f in spec.fields:
            value = _resolve(event, f.path)
            if value is _MISSING:
                if f.required:
                    problems.append((f"$.{f.path}", f"required for {event.type} events"))
                continue
            test, expected = _KIND_CHECKS[f.kind]
            if not test(value):
                problems.append((f"$.{f.path}", f"must be {expected} for {event.type} events"))
    if problems:
        raise EventInvalid.of(problems)


def suggest_type(event_type: str) -> str | None:
    """The catalog type an unknown one most likely meant (``payment.succeded``), if any."""
    close = difflib.get_close_matches(event_type, TYPES, n=1, cutoff=0.8)
    return close[0] if close else None


# -- docs/events.md ------------------------------------------------------------------------

_FAMILIES: Final = (
    ("payment", "Payments"),
    ("refund", "Refunds"),
    ("dispute", "Disputes"),
    ("transfer", "Transfers received"),
    ("mandate", "SEPA mandates and direct debits"),
    ("direct_debit", None),
    ("installment", "Installments"),
    ("subscription", "Subscriptions"),
    ("payment_request", "Payment requests"),
    ("card", "Cards and payment methods"),
    ("payment_method", None),
    ("payout", "Payouts"),
    ("endpoint", "Tocsin's own events"),
    ("erp", None),
    ("watch", None),
)


def _family(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def catalog_markdown() -> str:
    """``docs/events.md``, generated from ``CATALOG``."""
    out = [
        "# Event catalog",
        "",
        "<!-- Generated from gateway/catalog.py by `tocsin events catalog --markdown`:",
        "     edit the table there, then regenerate this file. A test fails when they differ. -->",
        "",
        "Every source maps its provider's events to these types, and rules and templates can",
        "rely on the fields each one guarantees. The intake checks them: an event of a",
        "catalog type that lacks a **required** field, or carries a listed field of the",
        'wrong type, is answered `400 {"error": "invalid_event", "path": "$.data.amount"}`.',
        "Optional fields are checked only when present.",
        "",
        "Types outside the catalog (a provider event no source maps yet, such as",
        "`stripe.customer.created`, or your own `order.shipped`) are accepted and routed",
        "like the others, so a new provider event never bounces. To refuse them:",
        "",
        "```toml",
        "[intake]",
        'unknown_types = "reject"   # default "accept"',
        "```",
        "",
        "The envelope (`id`, `type`, `occurred_at`, `source`, `customer`, `refs`, `data`) is",
        "described in the [README](../README.md#the-canonical-event). Money is always an",
        "integer amount in minor units plus an ISO-4217 currency (`1250` + `EUR` is",
        "12.50 €); any `amount` / `*_amount` key must be an integer and any `currency` /",
        "`*_currency` an upper-case code, in every type.",
        "",
        "**Generated** types are never pushed by a provider: Tocsin's scheduler derives them",
        "from the dates other events carry (see",
        "[Dates to schedule against](#dates-to-schedule-against)).",
        "",
        "| type | origin | what happened | required fields |",
        "|---|---|---|---|",
    ]
    for spec in CATALOG:
        required = ", ".join(f"`{f.path}`" for f in spec.required)
        mark = "generated" if spec.generated else "provider"
        anchor = spec.type.replace(".", "")  # GitHub drops the dots from heading ids
        out.append(f"| [`{spec.type}`](#{anchor}) | {mark} | {spec.summary} | {required} |")
    seen_titles: set[str] = set()
    for family, title in _FAMILIES:
        specs = [s for s in CATALOG if _family(s.type) == family]
        if title is not None and title not in seen_titles:
            seen_titles.add(title)
            out += ["", f"## {title}"]
        for spec in specs:
            out += ["", f"### {spec.type}", ""]
            summary = spec.summary
            if spec.generated:
                summary += " *Generated by Tocsin, not pushed by providers.*"
            out += [summary, "", "| field | type | | notes |", "|---|---|---|---|"]
            for f in spec.fields:
                need = "required" if f.required else "optional"
                notes = f.description
                if f.schedule:
                    notes = f"{notes} — *schedulable date*" if notes else "*schedulable date*"
                out.append(f"| `{f.path}` | {f.kind.value} | {need} | {notes} |")
    out += [
        "",
        "## Dates to schedule against",
        "",
        'Scenarios place reminder steps relative to these dates (`at = "data.due_at - 3d"`);',
        "the generated types are derived from them.",
        "",
        "| date | carried by | derives |",
        "|---|---|---|",
    ]
    derived = {
        "data.card.exp_month": "card.expiring",
        "data.card.exp_year": "card.expiring",
        "data.due_at": "payment_request.due_soon",
        "data.debit_at": "direct_debit.upcoming",
        "data.renews_at": "subscription.renewal_upcoming",
        "data.next_due_at": "direct_debit.upcoming",
    }
    by_path: dict[str, list[str]] = {}
    for spec in CATALOG:
        for f in spec.fields:
            if f.schedule:
                by_path.setdefault(f.path, []).append(spec.type)
    for path, types in by_path.items():
        carried = ", ".join(f"`{t}`" for t in types)
        out.append(f"| `{path}` | {carried} | {derived.get(path, '')} |")
    out += [
        "",
        "## Internal events",
        "",
        "Tocsin emits a few events itself (`source.provider` is `tocsin`) that rules can route",
        "like any other: `endpoint.disabled` when a channel's endpoint is switched off after",
        "failing too long, `watch.breached` and `watch.recovered` for `[watch]` checks",
        "(docs/operations.md), and what plugins ask for with `PermanentError(notify=...)` such as",
        "`erp.sync_failed`. They do not go through the intake and are not in the catalog.",
        "",
    ]
    return "\n".join(out)


def catalog_json() -> list[dict[str, Any]]:
    return [
        {
            "type": spec.type,
            "summary": spec.summary,
            "generated": spec.generated,
            "fields": [
                {
                    "path": f.path,
                    "kind": f.kind.value,
                    "required": f.required,
                    "schedule": f.schedule,
                    "description": f.description,
                }
                for f in spec.fields
            ],
        }
        for spec in CATALOG
    ]


# -- mapping a provider's events onto the catalog -----------------------------------------
#
# Source plugins describe their mapping as data: a ``ProviderMapping`` of ``Route`` rows
# (provider event -> canonical type) reading fields through ``FieldMap`` groups of
# ``Take`` (canonical path <- provider path, with an optional conversion).


@dataclass(frozen=True)
class Const:
    """A fixed value, for a ``Take`` that reads nothing from the payload."""

    value: Any


Getter = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
"""A computed source: ``getter(provider_object, envelope)``."""


@dataclass(frozen=True)
class Take:
    """One canonical field, read from the provider's object.

    ``source`` is a dotted path in the object (``"evidence_details.due_by"``, list
    indexes as numbers: ``"items.data.0.price.unit_amount"``), several paths (the first
    present wins), a ``Const``, or a getter ``(object, envelope) -> value``.
    ``convert`` turns the provider's value into the canonical one; a conversion that
    returns ``None`` leaves the field out.
    """

    target: str
    source: str | tuple[str, ...] | Const | Getter
    convert: Callable[[Any], Any] | None = None
    note: str = ""


@dataclass(frozen=True)
class FieldMap:
    """The fields read from one kind of provider object (a charge, an invoice...)."""

    name: str
    takes: tuple[Take, ...]


@dataclass(frozen=True)
class Route:
    """A provider event type, optionally narrowed by a field of its object, to a type.

    ``when = ("status", "warning_*")`` matches when the object's ``status`` matches the
    glob. Rows are tried in order; the first match wins. ``canonical=None`` marks an
    event deliberately left unmapped (it is handled like an unknown one).
    """

    event: str
    canonical: str | None
    fields: FieldMap | None = None
    when: tuple[str, str] | None = None
    extra: tuple[Take, ...] = ()
    note: str = ""


def dig(obj: Any, path: str) -> Any:
    """The value at a dotted path (numbers index lists), or ``None``."""
    for part in path.split("."):
        if isinstance(obj, Mapping):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit():
            index = int(part)
            obj = obj[index] if index < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj


def _put(out: dict[str, Any], target: str, value: Any) -> None:
    parts = target.split(".")
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _source_text(take: Take) -> str:
    src = take.source
    if isinstance(src, str):
        text = f"`{src}`"
    elif isinstance(src, tuple):
        text = " or ".join(f"`{s}`" for s in src)
    elif isinstance(src, Const):
        text = f"`{src.value!r}`".replace("'", '"')
    else:
        text = "computed"
    if take.convert is not None:
        text += f" → {take.convert.__name__}"
    if take.note:
        text += f" ({take.note})"
    return text


class ProviderMapping:
    """A provider's routing table: which canonical type and fields each event gives."""

    def __init__(self, provider: str, routes: Sequence[Route]) -> None:
        self.provider = provider
        self.routes = tuple(routes)
        self._by_event: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_event.setdefault(route.event, []).append(route)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(self._by_event)

    def route(self, event: str, obj: Mapping[str, Any]) -> Route | None:
        """The first row for this event whose condition holds (``None``: unmapped)."""
        for route in self._by_event.get(event, ()):
            if route.when is not None:
                path, pattern = route.when
                value = dig(obj, path)
                if not isinstance(value, str) or not fnmatch.fnmatchcase(value, pattern):
                    continue
            return route if route.canonical is not None else None
        return None

    def fields(self, route: Route, obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> Any:
        """``{"data": ..., "refs": ..., "customer": ...}`` read from the object."""
        out: dict[str, Any] = {}
        takes = (*(route.fields.takes if route.fields else ()), *route.extra)
        for take in takes:
            value = self._read(take, obj, envelope)
            if value is not None and take.convert is not None:
                value = take.convert(value)
            if value is not None:
                _put(out, take.target, value)
        return out

    @staticmethod
    def _read(take: Take, obj: Mapping[str, Any], envelope: Mapping[str, Any]) -> Any:
        src = take.source
        if isinstance(src, str):
            return dig(obj, src)
        if isinstance(src, tuple):
            for path in src:
                value = dig(obj, path)
                if value is not None:
                    return value
            return None
        if isinstance(src, Const):
            return src.value
        return src(obj, envelope)

    def problems(self) -> list[str]:
        """Routes to unknown types, or whose fields cannot cover a required field."""
        found = []
        for route in self.routes:
            if route.canonical is None:
                continue
            spec = TYPES.get(route.canonical)
            if spec is None:
                found.append(f"{route.event}: {route.canonical!r} is not in the catalog")
                continue
            takes = (*(route.fields.takes if route.fields else ()), *route.extra)
            targets = {t.target for t in takes}
            prefixes = {t.target.rsplit(".", i)[0] for t in takes for i in range(3)}
            for f in spec.required:
                if f.path not in targets and f.path not in prefixes:
                    found.append(f"{route.event} -> {route.canonical}: nothing maps {f.path}")
        return found

    def markdown(self) -> str:
        """The routing table and each field map, for ``docs/sources.md``."""
        out = ["| provider event | when | canonical type |", "|---|---|---|"]
        for route in self.routes:
            when = f"`{route.when[0]}` matches `{route.when[1]}`" if route.when else ""
            target = f"`{route.canonical}`" if route.canonical else "*not mapped*"
            fields = f" ({route.fields.name} fields)" if route.fields else ""
            note = f" — {route.note}" if route.note else ""
            out.append(f"| `{route.event}` | {when} | {target}{fields}{note} |")
        maps: list[FieldMap] = []
        for route in self.routes:
            if route.fields is not None and route.fields not in maps:
                maps.append(route.fields)
        for fmap in maps:
            out += ["", f"**{fmap.name} fields**", "", "| canonical | from |", "|---|---|"]
            out += [f"| `{t.target}` | {_source_text(t)} |" for t in fmap.takes]
        extras = [(r, t) for r in self.routes for t in r.extra]
        if extras:
            out += ["", "**Per-event additions**", "", "| provider event | canonical | from |"]
            out.append("|---|---|---|")
            out += [f"| `{r.event}` | `{t.target}` | {_source_text(t)} |" for r, t in extras]
        return "\n".join(out)


# -- conversions shared by source plugins ---------------------------------------------------


def upper(value: Any) -> str | None:
    """``eur`` -> ``EUR`` (Stripe sends currencies in lower case)."""
    return value.upper() if isinstance(value, str) else None


def timestamp(value: Any) -> str | None:
    """Unix seconds or an ISO 8601 string -> RFC 3339 in UTC (``2026-11-25T10:15:00Z``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def integer(value: Any) -> int | None:
    """An integer, or an integer-valued string (``"1250"``); anything else is left out."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def id_of(value: Any) -> str | None:
    """An id, or the ``id`` of an expanded object (``"cus_1"`` or ``{"id": "cus_1", ...}``)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def e164(value: Any) -> str | None:
    """A phone number already in E.164 form; anything else is left out, not guessed."""
    if not isinstance(value, str):
        return None
    compact = re.sub(r"[\s.\-()]", "", value)
    return compact if _E164.match(compact) else None


def iban_masked(value: Any) -> str | None:
    """``FR7630006000011234567890189`` -> ``FR76 •••• •••• 0189``; never the whole number."""
    if not isinstance(value, str):
        return None
    compact = re.sub(r"\s", "", value).upper()
    if len(compact) < 8:
        return None
    return f"{compact[:4]} •••• •••• {compact[-4:]}"


def string_map(value: Any) -> dict[str, str] | None:
    """A provider's ``metadata``: its string values, for ``refs``."""
    if not isinstance(value, Mapping):
        return None
    return {str(k): v for k, v in value.items() if isinstance(v, str) and v} or None


def canonical_id(provider: str, event_id: str) -> str:
    """A dedupe key from the provider's own event id: ``stripe:evt_123``.

    Ids that would not fit the canonical pattern (too long, other characters) are
    hashed, deterministically, so a provider's retry still gets the same key.
    """
    candidate = f"{provider}:{event_id}"
    if re.match(EVENT_ID_PATTERN, candidate):
        return candidate
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return f"{provider}:h_{digest}"


def provider_type(provider: str, event: str) -> str:
    """The type an unmapped provider event is routed as: ``stripe.customer.created``."""
    parts = [re.sub(r"[^a-z0-9_]", "_", p.lower()) for p in event.split(".") if p]
    parts = [p if p[:1].isalpha() else f"x{p}" for p in parts if p]
    return ".".join([provider, *parts]) if parts else f"{provider}.unknown"


def required_paths(event_type: str) -> list[str]:
    spec = TYPES.get(event_type)
    return [f.path for f in spec.required] if spec else []


def schedule_paths() -> Iterable[tuple[str, str]]:
    """``(type, path)`` of every date scenarios may schedule against."""
    for spec in CATALOG:
        for f in spec.fields:
            if f.schedule:
                yield spec.type, f.path


__all__ = [
    "CATALOG",
    "TYPES",
    "Const",
    "EventSpec",
    "FieldMap",
    "FieldSpec",
    "Kind",
    "ProviderMapping",
    "Route",
    "Take",
    "canonical_id",
    "catalog_markdown",
    "check_event",
    "dig",
    "e164",
    "iban_masked",
    "id_of",
    "integer",
    "lower",
    "provider_type",
    "string",
    "string_map",
    "suggest_type",
    "timestamp",
    "upper",
]
