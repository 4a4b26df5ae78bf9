"""Rule conditions with the built-in operators, and how the router turns rules into deliveries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.conditions import Compiled, Condition, compile_condition
from gateway.default_plugins import BUILTIN_CONDITIONS
from gateway.delivery import delivery_id
from gateway.event import Event
from gateway.router import plan_deliveries

from .conftest import load_plan, make_event, write_conf

OPERATORS: dict[str, Condition] = {c.operator: c for c in BUILTIN_CONDITIONS}

CONTEXT: dict[str, Any] = {
    "id": "evt_1",
    "type": "payment.succeeded",
    "occurred_at": "2024-05-01T10:00:00+00:00",
    "source": {"provider": "stripe", "livemode": True},
    "customer": {"id": "cus_1", "kind": "b2b", "email": "ap@acme.example", "locale": "fr"},
    "refs": {"invoice_ref": "FA-2024-0042"},
    "data": {
        "amount": 150000,
        "currency": "EUR",
        "fee": 0,
        "rate": 1.5,
        "paid": True,
        "refunded": False,
        "note": "",
        "label": "5",
        "country": "FR",
        "tags": ["vip", "annual"],
        "empty": [],
        "nothing": None,
        "card": {"brand": "visa", "last4": "4242"},
    },
}


def compile_(text: str) -> Compiled:
    return compile_condition(text, OPERATORS)


def holds(text: str, context: dict[str, Any] = CONTEXT) -> bool:
    return compile_(text)(context)


def test_every_builtin_operator_is_covered():
    assert set(OPERATORS) == {
        "==",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "in",
        "not in",
        "glob",
        "matches",
        "exists",
        "missing",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # equality
        ('customer.kind == "b2b"', True),
        ('customer.kind == "b2c"', False),
        ("data.amount == 150000", True),
        ("data.amount == 150000.0", True),
        ("data.amount == 1500", False),
        ('data.card == {"brand": "visa", "last4": "4242"}', True),
        ('data.tags == ["vip", "annual"]', True),
        ("data.nothing == null", True),
        ('customer.kind != "b2c"', True),
        ('customer.kind != "b2b"', False),
        ("data.paid == true", True),
        ("data.refunded == false", True),
        # ordering
        ("data.amount > 100000", True),
        ("data.amount > 150000", False),
        ("data.amount >= 150000", True),
        ("data.amount >= 150001", False),
        ("data.amount < 150001", True),
        ("data.amount < 150000", False),
        ("data.amount <= 150000", True),
        ("data.amount <= 149999", False),
        ("data.rate > 1", True),
        ("data.rate <= 1.5", True),
        ("data.amount >= -1", True),
        # no spaces needed around symbols
        ("data.amount>=100000", True),
        ('customer.kind=="b2b"', True),
        # membership
        ('data.country in ["FR", "BE", "LU"]', True),
        ('data.country in ["DE"]', False),
        ("data.country in []", False),
        ('data.country not in ["DE", "AT"]', True),
        ('data.country not in ["FR"]', False),
        ("data.amount in [1, 150000]", True),
        # patterns
        ('type glob "payment.*"', True),
        ('type glob "refund.*"', False),
        ('refs.invoice_ref glob "FA-2024-*"', True),
        ('refs.invoice_ref glob "fa-2024-*"', False),  # case matters
        ('data.country glob "F?"', True),
        ('refs.invoice_ref matches "^FA-\\\\d{4}-\\\\d+$"', True),
        ('refs.invoice_ref matches "0042"', True),  # a search, not a full match
        ('refs.invoice_ref matches "^0042"', False),
        ('customer.email matches "@acme\\\\.example$"', True),
        # presence
        ("data.card exists", True),
        ("data.nothing exists", True),
        ("data.fee exists", True),
        ("data.card.brand exists", True),
        ("data.card.cvc exists", False),
        ("data.card missing", False),
        ("data.card.cvc missing", True),
        ("data.amount.cents missing", True),  # below a number: nothing there
        ("customer.phone missing", True),
        # bare path: truthiness
        ("data.paid", True),
        ("data.amount", True),
        ("data.tags", True),
        ("customer", True),
        ("data.refunded", False),
        ("data.fee", False),
        ("data.note", False),
        ("data.empty", False),
        ("data.nothing", False),
        ("data.no_such_field", False),
    ],
)
def test_condition(text, expected):
    assert holds(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "data.paid == 1",
        "data.refunded == 0",
        "data.fee == false",
        "data.amount == true",
        "data.paid >= 1",
        "data.paid > 0",
        "data.refunded < 1",
        "data.refunded <= 0",
    ],
)
def test_booleans_are_not_numbers(text):
    assert holds(text) is False


def test_true_never_equals_one_either_way():
    assert holds("data.paid != 1") is True
    assert holds("data.x == 1", {"data": {"x": True}}) is False
    assert holds("data.x == true", {"data": {"x": 1}}) is False


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("data.x in [1]", True),
        ("data.x in [0]", False),
        ("data.x in [true]", 1),
        ("data.x in [false]", 0),
    ],
)
def test_in_agrees_with_equals_about_booleans(text, value):
    """``x in [a, b]`` means ``x == a or x == b``: true is no more 1 in a list than alone."""
    context = {"data": {"x": value}}
    [operand] = msgspec.json.decode(text.split(" in ")[1])
    assert holds(f"data.x == {json.dumps(operand)}", context) is False
    assert holds(text, context) is False
    assert holds(text.replace(" in ", " not in "), context) is True


@pytest.mark.parametrize(
    "text",
    [
        "data.label > 4",
        "data.label >= 5",
        "data.label < 6",
        "data.label <= 5",
        "data.label == 5",
        'data.amount == "150000"',
        'data.amount glob "15*"',
        'data.amount matches "^15"',
        'data.tags glob "vip"',
        'data.card matches "visa"',
        "data.card > 1",
        "data.tags < 1",
    ],
)
def test_mismatched_types_do_not_match_and_do_not_crash(text):
    assert holds(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "data.no_such == 1",
        "data.no_such != 1",
        "data.no_such > 0",
        "data.no_such >= 0",
        "data.no_such < 0",
        "data.no_such <= 0",
        "data.no_such in [1]",
        "data.no_such not in [1]",
        'data.no_such glob "*"',
        'data.no_such matches ""',
        "data.no_such exists",
        "data.no_such == null",
        "data.card.cvc != 1",
        'customer.phone != "+33600000000"',
    ],
)
def test_unresolved_path_makes_any_operator_false(text):
    assert holds(text) is False


def test_unresolved_path_is_missing():
    assert holds("data.no_such missing") is True
    assert holds("data.tags.0 missing") is True  # paths do not index into lists
    assert holds("customer.kind missing", {"data": {}}) is True


def test_condition_reads_the_event_as_routed():
    event = msgspec.json.decode(json.dumps(make_event()).encode(), type=Event)
    context = event.to_context()
    assert holds('customer.kind == "b2c"', context)
    assert holds('source.provider == "test"', context)
    assert holds("source.livemode == false", context)
    assert holds('refs.invoice_ref == "FA-1"', context)
    assert holds("data.amount < 100000", context)
    assert holds('occurred_at glob "20*"', context)


# -- compile errors: each names what is wrong --


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("data.amount ~ 1", "unknown operator"),
        ("data.amount => 1", "unknown operator"),
        ("data.country inside [1]", "unknown operator"),
        ("amount > 1", "unknown field 'amount'"),
        ("customer.foo == 1", "unknown field customer.foo"),
        ("source.vendor == 1", "unknown field source.vendor"),
        ("customer.kind == b2b", "quote strings"),
        ("data.amount >= 1 2", "not a JSON value"),
        ('data.amount >= "100"', "compares numbers"),
        ("data.amount >= true", "compares numbers"),
        ("data.amount < null", "compares numbers"),
        ('data.country in "FR"', "JSON list"),
        ("data.country in 1", "JSON list"),
        ('data.country not in {"FR": 1}', "JSON list"),
        ('data.label matches "("', "invalid regular expression"),
        ("data.label matches 5", "regular expression"),
        ("data.label glob 5", "quoted string"),
        ("data.amount ==", "needs a value"),
        ("data.amount exists 1", "takes no value"),
        ('data.amount missing "x"', "takes no value"),
        ("> 1", "field path"),
        ("", "field path"),
    ],
)
def test_compile_error_says_what_is_wrong(text, says):
    with pytest.raises(ValueError) as caught:
        compile_(text)
    assert says in str(caught.value)


def test_unknown_operator_lists_the_known_ones():
    with pytest.raises(ValueError) as caught:
        compile_("data.amount ~= 1")
    for operator in ("==", ">=", "not in", "matches", "missing"):
        assert operator in str(caught.value)


def test_unknown_root_field_lists_the_event_fields():
    with pytest.raises(ValueError) as caught:
        compile_("amount > 1")
    for name in ("id", "type", "customer", "data", "refs"):
        assert name in str(caught.value)


def test_unknown_customer_field_lists_the_customer_fields():
    with pytest.raises(ValueError) as caught:
        compile_("customer.foo == 1")
    for name in ("email", "phone", "locale", "kind"):
        assert name in str(caught.value)


def test_free_form_paths_under_data_and_refs_compile():
    for text in ("data.anything.at.all == 1", "refs.po-number exists", "data.x_y-z missing"):
        assert compile_(text).path[0] in ("data", "refs")


# -- the router: which deliveries an event yields --

RULES = """
[rules.payments]
events = ["payment.*"]
[[rules.payments.actions]]
channel = "hook"

[rules.big-payments]
events = ["payment.succeeded"]
when = ["data.amount >= 100000"]
[[rules.big-payments.actions]]
channel = "hook"
[[rules.big-payments.actions]]
channel = "hook"

[rules.b2b]
events = ["payment.succeeded", "invoice.*"]
when = ['customer.kind == "b2b"', "data.amount >= 100000"]
[[rules.b2b.actions]]
channel = "hook"

[rules.refunds]
events = ["refund.*"]
[[rules.refunds.actions]]
channel = "hook"

[rules.disabled]
enabled = false
events = ["payment.*"]
[[rules.disabled.actions]]
channel = "hook"
"""


def _event(*, drop: tuple[str, ...] = (), **overrides: Any) -> tuple[Event, bytes]:
    fields = make_event(**overrides)
    for name in drop:
        del fields[name]
    raw = json.dumps(fields).encode()
    return msgspec.json.decode(raw, type=Event), raw


def _routes(rules, **overrides: Any) -> list[tuple[str, int]]:
    event, raw = _event(**overrides)
    deliveries = plan_deliveries(rules, event, raw)
    by_rule: dict[str, int] = {}
    for d in deliveries:
        by_rule[d.rule] = by_rule.get(d.rule, 0) + 1
    return sorted(by_rule.items())


def test_plan_deliveries_follows_types_and_conditions(tmp_path: Path):
    rules = load_plan(write_conf(tmp_path, redis_url="redis://127.0.0.1:1/0", rules=RULES)).rules
    b2b = {"id": "cus_9", "kind": "b2b", "locale": "de"}
    b2c = {"id": "cus_8", "kind": "b2c"}
    big = {"amount": 250000, "currency": "EUR"}
    small = {"amount": 990, "currency": "EUR"}

    assert _routes(rules, customer=b2b, data=big) == [
        ("b2b", 1),
        ("big-payments", 2),
        ("payments", 1),
    ]
    assert _routes(rules, customer=b2c, data=big) == [("big-payments", 2), ("payments", 1)]
    assert _routes(rules, customer=b2b, data=small) == [("payments", 1)]
    assert _routes(rules, type="payment.failed", customer=b2b, data=big) == [("payments", 1)]
    assert _routes(rules, type="invoice.paid", customer=b2b, data=big) == [("b2b", 1)]
    assert _routes(rules, type="invoice.paid", customer=b2b, data=small) == []
    assert _routes(rules, type="refund.created", customer=b2c, data=small) == [("refunds", 1)]
    assert _routes(rules, type="payout.paid", data=big) == []
    # no customer at all: customer conditions do not hold, nothing crashes
    event, raw = _event(drop=("customer",), data=big)
    assert sorted({d.rule for d in plan_deliveries(rules, event, raw)}) == [
        "big-payments",
        "payments",
    ]


def test_delivery_ids_are_stable_and_distinct(tmp_path: Path):
    rules = load_plan(write_conf(tmp_path, redis_url="redis://127.0.0.1:1/0", rules=RULES)).rules
    event, raw = _event(
        customer={"id": "cus_9", "kind": "b2b", "locale": "de"},
        data={"amount": 250000, "currency": "EUR"},
    )
    first = plan_deliveries(rules, event, raw)
    second = plan_deliveries(rules, event, raw)
    assert [d.id for d in first] == [d.id for d in second]
    assert len({d.id for d in first}) == len(first) == 4
    for d in first:
        assert d.id.startswith("msg_")
        assert d.event_id == event.id
        assert d.event_type == "payment.succeeded"
        assert d.channel == "hook"
        assert d.event_bytes() == raw
        assert d.locale == "de"  # the customer's, as no action sets one
    big = [d for d in first if d.rule == "big-payments"]
    assert [d.id for d in big] == [
        delivery_id(event.id, "big-payments", 0, ""),
        delivery_id(event.id, "big-payments", 1, ""),
    ]
    # another event yields other ids
    other, other_raw = _event(
        customer={"id": "cus_9", "kind": "b2b"}, data={"amount": 250000, "currency": "EUR"}
    )
    assert not {d.id for d in plan_deliveries(rules, other, other_raw)} & {d.id for d in first}
