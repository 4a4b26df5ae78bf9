"""The canonical event catalog: the intake enforces it, and docs/events.md is generated from it.

Validation is tested through the real intake (``POST /v1/events`` on a gateway with
the intake role), so "refused" means answered 400 and nothing stored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from click.testing import CliRunner
from redis.asyncio import Redis

from gateway.catalog import CATALOG, TYPES, Kind, catalog_markdown, check_event
from gateway.cli import main
from gateway.conf import Secret, load_conf
from gateway.default_plugins import StandardWebhooksConfig, StandardWebhooksSource
from gateway.errors import ConfError
from gateway.event import decode_event
from gateway.intake import Enqueuer, Intake
from gateway.keys import Keys
from gateway.redis_server import free_port

from .conftest import INTAKE_SECRET, RunningGateway, make_event, write_conf
from .test_intake import EVENTS, assert_error, assert_nothing_enqueued, send

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DOC = ROOT / "docs" / "events.md"
GENERATED = {
    "card.expiring",
    "payment_request.due_soon",
    "direct_debit.upcoming",
    "subscription.renewal_upcoming",
}
#: What issue #5 asks the catalog to hold, at least.
REQUIRED_TYPES = {
    *(f"payment.{s}" for s in ("succeeded", "captured", "failed", "canceled", "expired")),
    "payment.blocked",
    "payment.returned",
    *(f"refund.{s}" for s in ("created", "succeeded", "failed")),
    *(f"dispute.{s}" for s in ("inquiry_opened", "opened", "won", "lost")),
    "transfer.received",
    "transfer.returned",
    "mandate.activated",
    "mandate.revoked",
    "installment.paid",
    "installment.failed",
    *(f"subscription.{s}" for s in ("created", "past_due", "canceled")),
    *(
        f"payment_request.{s}"
        for s in ("created", "partially_paid", "paid", "overdue", "expired", "canceled")
    ),
    "payment_method.updated",
    "payout.paid",
    "payout.failed",
    *GENERATED,
}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


@pytest.fixture
async def intake(tmp_path: Path, redis_url: str, start_gateway) -> RunningGateway:
    return await start_gateway(write_conf(tmp_path, redis_url=redis_url), roles=("intake",))


# -- the table ---------------------------------------------------------------------------


def test_the_catalog_holds_every_type_the_issue_lists():
    assert REQUIRED_TYPES - set(TYPES) == set()
    assert len(TYPES) == len(CATALOG), "a type is listed twice"


def test_generated_types_are_marked_and_only_those():
    assert {s.type for s in CATALOG if s.generated} == GENERATED


def test_the_dates_scenarios_schedule_against_are_marked():
    schedulable = {(s.type, f.path) for s in CATALOG for f in s.fields if f.schedule}
    for pair in [
        ("card.expiring", "data.card.exp_month"),
        ("card.expiring", "data.card.exp_year"),
        ("payment.succeeded", "data.card.exp_month"),  # where card.expiring comes from
        ("payment_request.created", "data.due_at"),
        ("payment_request.created", "data.link_expires_at"),
        ("payment_request.due_soon", "data.due_at"),
        ("direct_debit.upcoming", "data.debit_at"),
        ("subscription.created", "data.renews_at"),
        ("installment.failed", "data.next_retry_at"),
        ("dispute.opened", "data.respond_by"),
    ]:
        assert pair in schedulable, pair
    for spec in CATALOG:
        for f in spec.fields:
            if f.schedule:
                assert f.kind in (Kind.DATETIME, Kind.INTEGER), (spec.type, f.path)


def test_money_fields_follow_the_money_convention():
    """An amount the catalog declares is also one the core's money check enforces."""
    for spec in CATALOG:
        for f in spec.fields:
            last = f.path.rsplit(".", 1)[-1]
            is_amount = last == "amount" or last.endswith("_amount")
            assert (f.kind is Kind.AMOUNT) == is_amount, (spec.type, f.path)
            is_currency = last == "currency" or last.endswith("_currency")
            assert (f.kind is Kind.CURRENCY) == is_currency, (spec.type, f.path)


def test_the_events_the_rest_of_the_suite_posts_are_valid():
    """The conftest's sample and the README's examples satisfy the catalog."""
    check_event(decode_event(encode(make_event())))
    demo = (ROOT / "conf" / "examples" / "payment_succeeded.json").read_bytes()
    check_event(decode_event(demo))


# -- enforced at intake ------------------------------------------------------------------


def _without(event: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = event
    for part in parents:
        node = node[part]
    del node[last]
    return event


def _valid(event_type: str) -> dict[str, Any]:
    """A minimal valid event of a catalog type: each required field with a sample value."""
    samples = {
        Kind.STRING: "x_1",
        Kind.INTEGER: 3,
        Kind.AMOUNT: 1250,
        Kind.CURRENCY: "EUR",
        Kind.DATETIME: "2026-12-24T10:00:00+01:00",
        Kind.BOOLEAN: False,
        Kind.LIST: [],
        Kind.OBJECT: {},
    }
    event = make_event(type=event_type, refs={}, data={})
    for f in TYPES[event_type].required:
        *parents, last = f.path.split(".")
        node = event
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(last, samples[f.kind])
    return event


@pytest.mark.parametrize("event_type", sorted(TYPES))
async def test_a_minimal_event_of_each_type_is_accepted(intake, redis_client, event_type):
    event = _valid(event_type)
    answer = await send(intake, encode(event))
    assert answer.status == 202, answer.text


REQUIRED_FIELDS = sorted((s.type, f.path) for s in CATALOG for f in s.required)


@pytest.mark.parametrize(("event_type", "path"), REQUIRED_FIELDS)
async def test_a_missing_required_field_is_400_naming_it(
    intake, redis_client: redis.Redis, event_type, path
):
    event = _without(_valid(event_type), path)
    error = assert_error(await send(intake, encode(event)), 400, "invalid_event")
    assert error["path"] == f"$.{path}"
    assert event_type in error["message"]
    assert_nothing_enqueued(redis_client)


@pytest.mark.parametrize(
    ("event_type", "path", "value", "says"),
    [
        ("payment_request.overdue", "data.due_at", "next Tuesday", "RFC 3339"),
        ("payment_request.overdue", "data.due_at", "2026-12-24T10:00:00", "offset"),
        ("installment.failed", "data.final_attempt", "no", "true or false"),
        ("installment.failed", "data.attempt", "2", "integer"),
        ("card.expiring", "data.card.exp_month", "03", "integer"),
        ("refund.created", "data.refund_id", 42, "string"),
        ("transfer.received", "data.debtor_iban_masked", None, "required"),
        ("payment.succeeded", "data.card", "visa", "object"),  # optional, but typed
        ("payment.succeeded", "data.card.exp_year", "2027", "integer"),
    ],
)
async def test_a_field_of_the_wrong_type_is_400_naming_it(
    intake, redis_client, event_type, path, value, says
):
    event = _valid(event_type)
    *parents, last = path.split(".")
    node = event
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    error = assert_error(await send(intake, encode(event)), 400, "invalid_event")
    assert error["path"] == f"$.{path}"
    assert says in error["message"]
    assert_nothing_enqueued(redis_client)


async def test_unknown_types_are_accepted_and_stored_by_default(intake, redis_client):
    event = make_event(type="order.shipped", data={"carrier": "colissimo"})
    answer = await send(intake, encode(event))
    assert answer.status == 202, answer.text
    assert redis_client.xlen(EVENTS) == 1


def test_conf_unknown_types_takes_accept_or_reject_only(tmp_path):
    ok = write_conf(tmp_path / "ok", redis_url="redis://x", intake_extra='unknown_types = "reject"')
    assert load_conf(ok).intake.unknown_types == "reject"
    bad = write_conf(tmp_path / "bad", redis_url="redis://x", intake_extra='unknown_types = "drop"')
    with pytest.raises(ConfError) as info:
        load_conf(bad)
    assert any("intake.unknown_types" in p for p in info.value.problems)


@pytest.fixture
async def rejecting_intake(redis_url: str) -> AsyncIterator[str]:
    """The real intake app, with ``unknown_types = "reject"``, on a real socket and Redis."""
    client = Redis.from_url(redis_url)
    enqueuer = Enqueuer(client, Keys("tocsin"), 3600)
    enqueuer.start()
    source = StandardWebhooksSource(
        "events", StandardWebhooksConfig(secrets=[Secret(INTAKE_SECRET)])
    )
    intake = Intake(enqueuer, {"events": source}, "events", 65536, unknown_types="reject")
    runner = web.AppRunner(intake.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()
    await enqueuer.stop()
    await client.aclose()


class _At:
    """Enough of a RunningGateway for ``send``: just a URL."""

    def __init__(self, url: str) -> None:
        self.url = url


async def test_unknown_types_are_refused_when_the_conf_says_reject(rejecting_intake, redis_client):
    at = _At(rejecting_intake)
    unknown = make_event(type="order.shipped")
    error = assert_error(await send(at, encode(unknown)), 400, "invalid_event")
    assert error["path"] == "$.type"
    assert "order.shipped" in error["message"]
    assert_nothing_enqueued(redis_client)
    known = make_event()
    assert (await send(at, encode(known))).status == 202


async def test_unknown_types_reject_through_the_conf(
    tmp_path, redis_url, redis_client, start_gateway
):
    conf = write_conf(tmp_path, redis_url=redis_url, intake_extra='unknown_types = "reject"')
    gw = await start_gateway(conf, roles=("intake",))
    error = assert_error(
        await send(gw, encode(make_event(type="order.shipped"))), 400, "invalid_event"
    )
    assert error["path"] == "$.type"


# -- docs/events.md ------------------------------------------------------------------------


def test_events_doc_is_what_the_catalog_generates():
    assert EVENTS_DOC.read_text() == catalog_markdown(), (
        "docs/events.md differs from gateway/catalog/table.py: run `python docs/generate.py` "
        "(or `tocsin events catalog --markdown > docs/events.md`)"
    )


def test_tocsin_events_catalog_prints_the_doc_and_the_table():
    runner = CliRunner()
    markdown = runner.invoke(main, ["events", "catalog", "--markdown"])
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout == EVENTS_DOC.read_text()
    plain = runner.invoke(main, ["events", "catalog"])
    assert plain.exit_code == 0
    line = next(x for x in plain.stdout.splitlines() if x.startswith("payment_request.overdue "))
    assert "data.due_at" in line and "refs.payment_request_id" in line
    assert "(generated)" in next(
        x for x in plain.stdout.splitlines() if x.startswith("card.expiring ")
    )
    as_json = runner.invoke(main, ["events", "catalog", "--json"])
    items = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert {i["type"] for i in items} == set(TYPES)


def test_every_type_has_a_section_in_the_doc():
    text = EVENTS_DOC.read_text()
    for spec in CATALOG:
        assert f"\n### {spec.type}\n" in text, spec.type
