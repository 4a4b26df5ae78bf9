"""The CentralPay source as CentralPay really notifies: ``{"type", "object"}``, the
``PAYMENTREQUEST_*`` names, pay links in ``breakdowns``, amounts as whole floats, and the
three ways a deployment trusts a notification (fetch from the API, an HMAC, an address).

Real parts: a gateway on a real Redis, the CentralPay API stand-in (tests/centralpay_standin.py)
and a webhook receiver, all on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis
from click.testing import CliRunner
from gateway_centralpay.fetch import basic_auth

from gateway.cli import main

from .centralpay_standin import CentralPayApiStandin, payment_request
from .conftest import Receiver, write_conf
from .erp_standins import serve

PATH = "/v1/sources/centralpay"
JSON = {"Content-Type": "application/json"}
PR = "5b4a3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"

PAID_RULE = """
[rules.paid]
events = ["payment_request.*", "payment.*", "centralpay.*"]
[[rules.paid.actions]]
channel = "hook"
"""


#: How long the confirmation keeps asking CentralPay: here, again at once.
RETRY_AT_ONCE = """
[sources.centralpay.delivery]
retry_schedule = ["0s", "0s", "0s"]
jitter = 0
"""


def fetch_source(api_url: str, delivery: str = "") -> str:
    return f"""
    [sources.centralpay]
    type = "centralpay"
    verify = "fetch"
    livemode = false
    [sources.centralpay.api]
    url = "{api_url}"
    login = "{CentralPayApiStandin.LOGIN}"
    secret = "{CentralPayApiStandin.SECRET}"
    timeout = "2s"
    {delivery}
    """


def notification(name: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": name, "object": obj}).encode()


async def post(gw: Any, body: bytes) -> tuple[int, Any]:
    return await gw.post(body, path=PATH, headers=JSON)


@pytest.fixture
async def api() -> Any:
    standin = CentralPayApiStandin()
    async with serve(standin.app()) as root:
        standin.url = root + "/v2/rest"
        yield standin


async def until(check: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def dead_letters(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange("tocsin:dead")]


# -- the notification's shape ------------------------------------------------------------


async def test_a_payment_on_a_request_is_fetched_and_becomes_paid_or_partially_paid(
    tmp_path, redis_url, api, receiver: Receiver, start_gateway
):
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=PAID_RULE,
        extra=fetch_source(api.url),
    )
    gw = await start_gateway(conf)
    # First payer pays their share. The posted body is tampered with: CentralPay's
    # answer, not the body, decides what rules see.
    partial = payment_request(PR, "FA-2026-0042", 45000, shares=(20000, 25000), paid_shares=(0,))
    api.put("paymentRequest", partial)
    tampered = {**partial, "totalAmount": 1.0, "paymentStatus": "PAID"}
    name = "PAYMENTREQUEST_TRANSACTION_SUCCEEDED"
    status, answer = await post(gw, notification(name, tampered))
    assert status == 202, answer
    [first] = await receiver.wait_for(1, timeout=15)
    body = first.json()
    assert body["type"] == "payment_request.partially_paid"
    assert body["refs"] == {"payment_request_id": PR, "invoice_ref": "FA-2026-0042"}
    assert (body["data"]["amount"], body["data"]["paid_amount"]) == (45000, 20000)
    assert body["data"]["remaining_amount"] == 25000
    assert body["data"]["link_url"] == f"https://payment.centralpay.net/pr/{PR}/0"
    assert body["customer"]["email"] == "compta@atelier-dupont.fr"
    assert body["customer"]["name"] == "Claire Dupont"
    assert api.calls == [f"GET /paymentRequest/{PR}"]

    # The second share: a new event; CentralPay's retry of it: nothing more.
    full = payment_request(PR, "FA-2026-0042", 45000, shares=(20000, 25000), paid_shares=(0, 1))
    api.put("paymentRequest", full)
    answers = [await post(gw, notification(name, full)) for _ in range(2)]
    assert [a[0] for a in answers] == [202, 200]
    received = await receiver.wait_for(2, timeout=15)
    assert received[1].json()["type"] == "payment_request.paid"
    assert received[1].json()["data"]["paid_amount"] == 45000
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 2, "the retried notification was sent again"


async def test_a_forged_notification_is_refused_and_recorded(
    tmp_path, redis_url, api, receiver: Receiver, start_gateway, redis_client
):
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=PAID_RULE,
        extra=fetch_source(api.url),
    )
    gw = await start_gateway(conf)
    forged = {"transactionId": "tx-never-made", "amount": 99900, "currency": "EUR"}
    failed = api.put(
        "transaction",
        {"transactionId": "tx-failed", "amount": 5000, "currency": "EUR"}
        | {"transactionStatus": "FAILURE"},
    )
    for body in (
        notification("TRANSACTION_SUCCEEDED", forged),  # CentralPay knows no such object
        notification("TRANSACTION_SUCCEEDED", failed),  # it exists, and did not succeed
    ):
        status, _ = await post(gw, body)
        assert status == 202  # accepted: nothing is lost before CentralPay has answered

    await until(lambda: len(dead_letters(redis_client)) >= 2)
    reasons = sorted(d[b"reason"].decode() for d in dead_letters(redis_client))
    assert reasons[0].startswith("CentralPay transaction tx-failed: notified as")
    assert "transactionStatus = 'FAILURE'" in reasons[0]
    assert reasons[1] == (
        "CentralPay transaction tx-never-made does not exist: the notification is refused as forged"
    )
    assert receiver.received == [], "a forged event reached a rule"


async def test_a_payment_read_back_after_capture_or_clearing_is_still_paid(
    tmp_path, redis_url, api, receiver: Receiver, start_gateway, redis_client
):
    """A transaction moves on from SUCCESS to CAPTURED, then CLEARED once debited
    (doc-api.centralpay.net/en/transactions-status); the API is read when the job runs."""
    for ident, status in (("tx-cap", "CAPTURED"), ("tx-clr", "CLEARED")):
        api.put(
            "transaction",
            {"transactionId": ident, "amount": 8000, "currency": "EUR"}
            | {"transactionStatus": status},
        )
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=PAID_RULE,
        extra=fetch_source(api.url),
    )
    gw = await start_gateway(conf)
    for name, ident in (("TRANSACTION_CAPTURED", "tx-cap"), ("TRANSACTION_SUCCEEDED", "tx-clr")):
        status, answer = await post(gw, notification(name, {"transactionId": ident}))
        assert status == 202, answer
    received = await receiver.wait_for(2, timeout=15)
    paid = sorted((r.json()["data"]["payment_id"], r.json()["type"]) for r in received)
    assert paid == [("tx-cap", "payment.succeeded"), ("tx-clr", "payment.succeeded")]
    assert dead_letters(redis_client) == []


async def test_the_api_down_is_retried_and_wrong_credentials_dead_letter(
    tmp_path, redis_url, api, receiver: Receiver, start_gateway, redis_client, monkeypatch
):
    api.put(
        "transaction",
        {"transactionId": "tx-1", "amount": 125000.0, "currency": "EUR"}
        | {"transactionStatus": "SUCCESS", "merchantTransactionId": "CMD-7"},
    )
    api.unavailable = 1
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=PAID_RULE,
        extra=fetch_source(api.url, delivery=RETRY_AT_ONCE),
    )
    gw = await start_gateway(conf)
    status, _ = await post(gw, notification("TRANSACTION_CAPTURED", {"transactionId": "tx-1"}))
    assert status == 202
    [paid] = await receiver.wait_for(1, timeout=20)
    assert paid.json()["type"] == "payment.succeeded"
    assert paid.json()["data"]["amount"] == 125000  # 125000.0 from the API: whole cents
    assert api.calls == ["GET /transaction/tx-1", "GET /transaction/tx-1"]
    # TRANSACTION_SUCCEEDED for the same transaction means the same thing: one event.
    status, answer = await post(
        gw, notification("TRANSACTION_SUCCEEDED", {"transactionId": "tx-1"})
    )
    assert (status, answer["duplicate"]) == (200, True)
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 1

    await gw.stop()
    bad = write_conf(
        tmp_path / "bad",
        redis_url=redis_url,
        hook_url=receiver.url,
        rules=PAID_RULE,
        extra=fetch_source(api.url).replace(CentralPayApiStandin.SECRET, "wrong-secret"),
    )
    gw = await start_gateway(bad)
    status, _ = await post(gw, notification("TRANSACTION_CAPTURED", {"transactionId": "tx-2"}))
    assert status == 202
    await until(lambda: dead_letters(redis_client))
    [dead] = dead_letters(redis_client)
    assert (
        dead[b"reason"]
        .decode()
        .startswith("CentralPay refused the API credentials (HTTP 401): fix [sources.NAME.api]")
    )


# -- parsing without fetch: names, floats, refs ------------------------------------------


@pytest.fixture
async def open_gw(tmp_path, redis_url, start_gateway) -> Any:
    """A source trusting its caller's address (loopback here), routing nothing: only the
    intake's answers and what it stores are looked at."""
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        rules="",
        extra="""
        [sources.centralpay]
        type = "centralpay"
        verify = "none"
        allow_from = ["127.0.0.0/8", "::1/128"]
        """,
    )
    return await start_gateway(conf, roles=("intake",))


def stored(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields[b"e"]) for _, fields in client.xrange("tocsin:events")]


async def test_names_amounts_and_refs_as_centralpay_writes_them(open_gw, redis_client):
    auth = {"transactionId": "tx-9", "amount": 4200.0, "currency": "EUR"}
    status, answer = await post(open_gw, notification("TRANSACTION_SUCCESS", auth))
    assert status == 202, answer
    status, answer = await post(
        open_gw,
        notification(
            "SUBSCRIPTION_CREATED",
            {
                "subscriptionId": "sub-1",
                "merchantSubscriptionId": "ABO-77",
                "amount": 1990,
                "currency": "EUR",
                "status": "ACTIVE",
                "currentPeriodEnd": "2026-12-31",
            },
        ),
    )
    assert status == 202, answer
    status, answer = await post(open_gw, notification("ONBOARDING_ENROLLMENT_CREATED", {"a": 1}))
    assert status == 202, answer  # unknown: accepted and stored, routed as its own type
    authorized, subscription, unknown = stored(redis_client)
    assert authorized["type"] == "payment.authorized", "SUCCESS is not paid: capture follows"
    assert authorized["data"]["amount"] == 4200
    assert authorized["id"] == "centralpay:tx-9:payment_authorized"
    assert subscription["refs"] == {"subscription_id": "sub-1", "subscription_ref": "ABO-77"}
    assert unknown["type"] == "centralpay.onboarding_enrollment_created"

    status, answer = await post(
        open_gw, notification("TRANSACTION_SUCCEEDED", {**auth, "amount": 42.5})
    )
    assert status == 400
    assert answer["path"] == "$.object.amount"
    assert answer["message"] == "42.5 is not a whole number of minor units (cents)"
    status, answer = await post(open_gw, json.dumps({"event": "X", "data": {}}).encode())
    assert (status, answer["path"]) == (400, "$.type")


async def test_each_attempt_at_an_installment_is_its_own_event(open_gw, redis_client):
    attempt = {"installmentPaymentId": "inst-1", "amount": 5000, "currency": "EUR"}
    statuses = []
    for number, tx in ((1, "tx-a"), (3, "tx-c"), (3, "tx-c")):  # the last: CentralPay's retry
        body = {**attempt, "attempt": number, "maxAttempts": 3, "transactionId": tx}
        statuses.append((await post(open_gw, notification("INSTALLMENT_FAILED", body)))[0])
    assert statuses == [202, 202, 200]
    first, final = stored(redis_client)
    assert (first["data"]["final_attempt"], final["data"]["final_attempt"]) == (False, True)
    assert final["id"] == "centralpay:inst-1:installment_failed:tx-c"


async def test_allow_from_refuses_other_addresses(tmp_path, redis_url, start_gateway):
    conf = write_conf(
        tmp_path,
        redis_url=redis_url,
        rules="",
        extra="""
        [sources.centralpay]
        type = "centralpay"
        verify = "none"
        allow_from = ["192.0.2.0/24"]
        """,
    )
    gw = await start_gateway(conf, roles=("intake",))
    status, answer = await post(gw, notification("TRANSACTION_SUCCEEDED", {"transactionId": "t"}))
    assert status == 403
    assert answer["message"] == "127.0.0.1 is not in this source's allow_from"


def test_the_trust_choice_is_explicit_in_conf(tmp_path):
    extra = """
    [sources.a]
    type = "centralpay"
    [sources.b]
    type = "centralpay"
    verify = "fetch"
    [sources.c]
    type = "centralpay"
    verify = "none"
    [sources.d]
    type = "centralpay"
    verify = "hmac"
    secrets = ["k"]
    [sources.e]
    type = "centralpay"
    verify = "none"
    allow_from = ["10.0.0.300/8"]
    """
    conf = write_conf(tmp_path, redis_url="redis://127.0.0.1:1/0", rules="", extra=extra)
    result = CliRunner().invoke(main, ["check", str(conf)])
    assert result.exit_code != 0
    out = result.output
    assert "sources.a: Object missing required field `verify`" in out
    assert 'sources.b: api: verify = "fetch" reads each object back from CentralPay' in out
    assert 'sources.c: allow_from: verify = "none" would take forged events from anywhere' in out
    assert "sources.d: signature_header: name the header your deployment signs in" in out
    assert "sources.e: allow_from: '10.0.0.300/8' is not an address or CIDR" in out


async def test_the_api_stand_in_refuses_what_the_real_api_refuses(api):
    api.put("transaction", {"transactionId": "t1", "transactionStatus": "SUCCESS"})
    async with aiohttp.ClientSession() as http:
        good = {"Authorization": basic_auth(api.LOGIN, api.SECRET)}
        async with http.get(f"{api.url}/transaction/t1") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
        async with http.get(f"{api.url}/transaction/t1", headers=good) as response:
            assert (await response.json())["transactionStatus"] == "SUCCESS"
        async with http.get(f"{api.url}/transaction/nope", headers=good) as response:
            assert response.status == 404


async def test_tocsin_events_lists_unknown_and_confirming_events(
    tmp_path, redis_url, api, start_gateway, redis_client
):
    conf = write_conf(tmp_path, redis_url=redis_url, rules="", extra=fetch_source(api.url))
    gw = await start_gateway(conf)
    api.put(
        "transaction",
        {"transactionId": "tx-5", "transactionStatus": "SUCCESS", "amount": 900, "currency": "EUR"},
    )
    status, _ = await post(gw, notification("ONBOARDING_ENROLLMENT_CREATED", {"x": 1}))
    assert status == 202
    status, _ = await post(gw, notification("TRANSACTION_SUCCESS", {"transactionId": "tx-5"}))
    assert status == 202
    # The confirmed event arrives as a third one once CentralPay has answered.
    await until(lambda: redis_client.xlen("tocsin:events") >= 3)

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--conf", str(conf)])
        assert result.exit_code == 0, result.output
        return result.output

    listed = await asyncio.to_thread(run, "events", "list")
    lines = listed.splitlines()
    assert lines[0].split() == ["ACCEPTED", "STATE", "TYPE", "FROM", "ID"]
    confirmed, posted, unknown = lines[1:4]
    assert "payment.authorized" in confirmed and "centralpay:tx-5:payment_authorized" in confirmed
    assert "confirmation by centralpay" in posted and "centralpay TRANSACTION_SUCCESS" in posted
    assert "centralpay.onboarding_enrollment_created" in unknown
    only = await asyncio.to_thread(run, "events", "list", "--type", "centralpay.*")
    assert len(only.splitlines()) == 2

    shown = await asyncio.to_thread(
        run, "events", "show", "centralpay:posted:tx-5:payment_authorized"
    )
    assert (
        "source.centralpay" in shown and "confirmed as centralpay:tx-5:payment_authorized" in shown
    )
