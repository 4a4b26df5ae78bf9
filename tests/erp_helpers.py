"""Fixtures and helpers shared by the ERP tests: stand-ins served, conf tables, events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from gateway_erp import ErpChannel

from gateway import PermanentError
from gateway.cli import main
from gateway.delivery import Delivery, delivery_id

from .conftest import load_plan, make_event, write_conf
from .erp_standins import (
    DolibarrStandin,
    ErpNextStandin,
    InHouseStandin,
    OdooStandin,
    serve,
)

#: Channel-level tests never reach Redis: the plan only needs a syntactically valid URL.
NO_REDIS = "redis://127.0.0.1:1/0"
ROOT = Path(__file__).resolve().parent.parent


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
async def odoo() -> AsyncIterator[OdooStandin]:
    standin = OdooStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture
async def dolibarr() -> AsyncIterator[DolibarrStandin]:
    standin = DolibarrStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture
async def erpnext() -> AsyncIterator[ErpNextStandin]:
    standin = ErpNextStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture
async def inhouse() -> AsyncIterator[InHouseStandin]:
    standin = InHouseStandin()
    async with serve(standin.app()) as url:
        standin.url = url
        yield standin


@pytest.fixture(params=["jsonrpc", "json2"])
def odoo_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # The conf reads the key from the environment, as production confs do.
    monkeypatch.setenv("TEST_ODOO_API_KEY", OdooStandin.API_KEY)
    return str(request.param)


def odoo_table(
    url: str, api: str, *, action: str = "register_payment", name: str = "erp", extra: str = ""
) -> str:
    login = 'login = "tocsin@acme.example"' if api == "jsonrpc" else ""
    return f"""
    [channels.{name}]
    type = "erp"
    connector = "odoo"
    action = "{action}"
    url = "{url}"
    timeout = "5s"
    {extra}
    [channels.{name}.odoo]
    api = "{api}"
    database = "acme"
    {login}
    api_key = "${{TEST_ODOO_API_KEY}}"
    journal_id = 7
    """


def dolibarr_table(url: str, *, action: str = "register_payment", key: str = "") -> str:
    return f"""
    [channels.erp]
    type = "erp"
    connector = "dolibarr"
    action = "{action}"
    url = "{url}"
    timeout = "5s"
    [channels.erp.dolibarr]
    api_key = "{key or DolibarrStandin.API_KEY}"
    bank_account_id = 1
    payment_mode_id = 2
    """


def erpnext_table(url: str, *, action: str = "register_payment", secret: str = "") -> str:
    return f"""
    [channels.erp]
    type = "erp"
    connector = "erpnext"
    action = "{action}"
    url = "{url}"
    timeout = "5s"
    [channels.erp.erpnext]
    api_key = "{ErpNextStandin.API_KEY}"
    api_secret = "{secret or ErpNextStandin.API_SECRET}"
    mode_of_payment = "Wire Transfer"
    """


@pytest.fixture
async def make_channel(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_channel(toml)``: the ``erp`` channel of a real conf, started."""
    opened: list[ErpChannel] = []

    async def make(
        table: str, *, name: str = "erp", templates: dict[str, str] | None = None
    ) -> ErpChannel:
        folder = tmp_path / f"conf{len(opened)}"
        conf = write_conf(folder, redis_url=NO_REDIS, rules="", extra=table, templates=templates)
        channel = load_plan(conf).channels[name]
        assert isinstance(channel, ErpChannel)
        await channel.start()
        opened.append(channel)
        return channel

    yield make
    for channel in opened:
        await channel.close()


def paid_event(
    invoice: str, amount: int, currency: str = "EUR", pr: str = "pr_77"
) -> dict[str, Any]:
    """A ``payment_request.paid``: the issue's own example."""
    return make_event(
        type="payment_request.paid",
        refs={"invoice_ref": invoice, "payment_request_id": pr},
        data={
            "amount": amount,
            "currency": currency,
            "paid_amount": amount,
            "paid_at": "2025-01-31T23:30:00Z",  # already February 1st in Paris
        },
    )


def payment_event(
    invoice: str, amount: int, payment_id: str, currency: str = "EUR"
) -> dict[str, Any]:
    return make_event(
        refs={"invoice_ref": invoice},
        data={"payment_id": payment_id, "amount": amount, "currency": currency},
    )


def overdue_event(invoice: str) -> dict[str, Any]:
    return make_event(
        type="payment_request.overdue",
        refs={"invoice_ref": invoice, "payment_request_id": "pr_78"},
        data={
            "amount": 9990,
            "currency": "EUR",
            "remaining_amount": 9990,
            "due_at": "2025-01-15T00:00:00Z",
        },
    )


def delivery_of(
    event: dict[str, Any], *, rule: str = "book", template: str | None = None, channel: str = "erp"
) -> Delivery:
    return Delivery(
        id=delivery_id(event["id"], rule, 0, ""),
        event_id=event["id"],
        event_type=event["type"],
        rule=rule,
        channel=channel,
        event=msgspec.Raw(json.dumps(event).encode()),
        template=template,
    )


async def refused(channel: ErpChannel, delivery: Delivery) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        await channel.send(delivery)
    error = caught.value
    assert error.notify == "erp.sync_failed", "every refusal must reach accounting"
    return error


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))
